//! The changefeeds of this process: create, look up, check, delete; restore on start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::Lsn;
use ferry_meta::{Collection, MetaError, MetaStore};
use ferry_postgres::slot::{self, SlotNames};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{ChangefeedConfig, ConfigError};
use crate::runner::Runner;
use crate::status::{ChangefeedStatus, FeedState, Phase, StatusCell};

/// An engine operation that was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration is invalid.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// A changefeed with that id exists in that namespace.
    #[error("changefeed {0} already exists")]
    AlreadyExists(String),
    /// No changefeed with that id in that namespace.
    #[error("changefeed {0} does not exist")]
    NotFound(String),
    /// The source cannot be used (unreachable, not configured for logical replication).
    #[error("source is not usable: {0}")]
    SourceUnusable(String),
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// The answer of `GET /changefeeds/{id}/synced`.
#[derive(Clone, Debug, Serialize)]
pub struct SyncedReport {
    /// Snapshot done and every change committed on the source before the request applied.
    pub synced: bool,
    /// The source's WAL position when asked.
    pub source_position: String,
    /// The changefeed's durable position.
    pub checkpoint_position: Option<String>,
    /// Snapshot or streaming.
    pub phase: Phase,
    /// Why not synced, when not.
    pub info: String,
}

struct Feed {
    config: ChangefeedConfig,
    status: StatusCell,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Owns every changefeed of this process.
pub struct Engine {
    meta: Arc<MetaStore>,
    feeds: Mutex<BTreeMap<String, Feed>>,
}

impl Engine {
    /// Opens the engine and starts every stored changefeed.
    pub fn start(meta: Arc<MetaStore>) -> Result<Arc<Self>, EngineError> {
        let engine = Arc::new(Engine {
            meta,
            feeds: Mutex::new(BTreeMap::new()),
        });
        let stored: Vec<(String, ChangefeedConfig)> = engine.meta.list(Collection::Changefeeds)?;
        for (key, config) in stored {
            info!(changefeed = %key, "restoring changefeed");
            engine.launch(config);
        }
        Ok(engine)
    }

    fn launch(&self, config: ChangefeedConfig) {
        let key = config.key();
        let status = StatusCell::new(Phase::Snapshot);
        let (stop_tx, stop_rx) = watch::channel(false);
        let runner = Runner {
            config: config.clone(),
            meta: self.meta.clone(),
            status: status.clone(),
            stop: stop_rx,
        };
        let task = tokio::spawn(runner.run());
        self.feeds.lock().expect("feeds lock").insert(
            key,
            Feed {
                config,
                status,
                stop: stop_tx,
                task,
            },
        );
    }

    /// Validates, stores and starts a changefeed.
    pub async fn create(&self, config: ChangefeedConfig) -> Result<(), EngineError> {
        config.validate()?;
        let key = config.key();
        if self.feeds.lock().expect("feeds lock").contains_key(&key) {
            return Err(EngineError::AlreadyExists(config.id.clone()));
        }
        check_source(&config).await?;
        if self.feeds.lock().expect("feeds lock").contains_key(&key) {
            return Err(EngineError::AlreadyExists(config.id.clone()));
        }
        self.meta.put(Collection::Changefeeds, &key, &config)?;
        self.meta.delete(Collection::ChangefeedState, &key)?;
        info!(changefeed = %key, source = %config.source_uri, sink = %config.sink_uri, "changefeed created");
        self.launch(config);
        Ok(())
    }

    /// Every changefeed's status, sorted by namespace and id.
    pub fn list(&self) -> Vec<ChangefeedStatus> {
        let feeds = self.feeds.lock().expect("feeds lock");
        feeds
            .values()
            .map(|f| f.status.snapshot(&f.config.id, &f.config.namespace))
            .collect()
    }

    /// A changefeed's configuration.
    pub fn config(&self, namespace: &str, id: &str) -> Result<ChangefeedConfig, EngineError> {
        let feeds = self.feeds.lock().expect("feeds lock");
        feeds
            .get(&format!("{namespace}/{id}"))
            .map(|f| f.config.clone())
            .ok_or_else(|| EngineError::NotFound(id.to_string()))
    }

    /// A changefeed's status.
    pub fn status(&self, namespace: &str, id: &str) -> Result<ChangefeedStatus, EngineError> {
        let feeds = self.feeds.lock().expect("feeds lock");
        feeds
            .get(&format!("{namespace}/{id}"))
            .map(|f| f.status.snapshot(id, namespace))
            .ok_or_else(|| EngineError::NotFound(id.to_string()))
    }

    /// Whether everything the source committed before now is applied and checkpointed.
    pub async fn synced(&self, namespace: &str, id: &str) -> Result<SyncedReport, EngineError> {
        let config = self.config(namespace, id)?;
        // Read the source's position first: anything committed before the request lies
        // before it.
        let client = ferry_postgres::connect::connect(&config.source_uri, "ferry-synced")
            .await
            .map_err(|e| EngineError::SourceUnusable(e.chain()))?;
        let row = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| EngineError::SourceUnusable(e.to_string()))?;
        let source: Lsn = row.get::<_, String>(0).parse().unwrap_or(Lsn::ZERO);
        let status = self.status(namespace, id)?;
        let checkpoint: Option<Lsn> = status
            .checkpoint_position
            .as_deref()
            .and_then(|p| p.parse().ok());
        let (synced, info) = if status.phase != Phase::Streaming {
            (false, "the snapshot is still running".to_string())
        } else if status.state != FeedState::Running {
            (
                false,
                format!("the changefeed is {:?}", status.state).to_lowercase(),
            )
        } else if checkpoint.is_some_and(|c| c >= source) {
            (
                true,
                "all changes committed before the request are applied".to_string(),
            )
        } else {
            (false, "changes are still being applied".to_string())
        };
        Ok(SyncedReport {
            synced,
            source_position: source.to_string(),
            checkpoint_position: status.checkpoint_position,
            phase: status.phase,
            info,
        })
    }

    /// Stops and removes a changefeed, dropping its slot and publications on the source.
    /// Target data stays. Returns whether it existed.
    pub async fn delete(&self, namespace: &str, id: &str) -> Result<bool, EngineError> {
        let key = format!("{namespace}/{id}");
        let feed = self.feeds.lock().expect("feeds lock").remove(&key);
        let Some(feed) = feed else {
            return Ok(false);
        };
        let _ = feed.stop.send(true);
        let mut task = feed.task;
        if tokio::time::timeout(Duration::from_secs(10), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        let names = SlotNames::for_changefeed(&key);
        match ferry_postgres::connect::connect(&feed.config.source_uri, "ferry-cleanup").await {
            Ok(client) => {
                if let Err(e) = slot::drop_all(&client, &names).await {
                    warn!(changefeed = %key, error = %e.chain(), "could not drop slot and publications");
                }
            }
            Err(e) => {
                warn!(changefeed = %key, error = %e.chain(), "source unreachable: slot left behind")
            }
        }
        self.meta.delete(Collection::Changefeeds, &key)?;
        self.meta.delete(Collection::ChangefeedState, &key)?;
        info!(changefeed = %key, slot = %names.slot, "changefeed deleted");
        Ok(true)
    }

    /// Stops every changefeed (server shutdown); they resume on the next start.
    pub async fn shutdown(&self) {
        let feeds: Vec<Feed> = std::mem::take(&mut *self.feeds.lock().expect("feeds lock"))
            .into_values()
            .collect();
        for feed in feeds {
            let _ = feed.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), feed.task).await;
        }
    }
}

/// Connects to the source and checks it can do logical replication.
async fn check_source(config: &ChangefeedConfig) -> Result<(), EngineError> {
    let client = ferry_postgres::connect::connect(&config.source_uri, "ferry-check")
        .await
        .map_err(|e| EngineError::SourceUnusable(e.chain()))?;
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'),
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .map_err(|e| EngineError::SourceUnusable(e.to_string()))?;
    let wal_level: String = row.get(0);
    if wal_level != "logical" {
        return Err(EngineError::SourceUnusable(format!(
            "wal_level is {wal_level}; set wal_level = logical on the source and restart it"
        )));
    }
    if !row.get::<_, bool>(1) {
        return Err(EngineError::SourceUnusable(
            "the source user lacks the REPLICATION attribute; ALTER ROLE … WITH REPLICATION".into(),
        ));
    }
    Ok(())
}
