//! The changefeeds of this process: create, look up, delete; restore on start.
//!
//! Each changefeed has an entry with its configuration, its live status, an operation
//! lock, and — while `running` or `error` — its task. Operator actions on one changefeed
//! (pause, resume, update, delete; see [`crate::lifecycle`]) hold its operation lock, so
//! they apply one at a time; the map lock itself is only held for short, non-blocking
//! looks. A task is always stopped (and awaited) before its state is persisted by the
//! registry, so the task and the registry never write the same lifecycle document at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::{Connectors, SourceError};
use ferry_meta::{Collection, MetaError, MetaStore};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{ChangefeedConfig, ConfigError};
use crate::lifecycle::{self, LifecycleDoc, Refusal};
use crate::metrics::FeedMetrics;
use crate::options::EngineOptions;
use crate::runner::tables::RuntimeState;
use crate::runner::Runner;
use crate::status::{ChangefeedStatus, FeedState, Phase, StatusCell};

/// How long a stopping task may take to finish its batch before it is cancelled.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

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
    /// The server runs as many changefeeds as it is configured for.
    #[error("this server already has {0} changefeeds, its configured maximum")]
    TooManyChangefeeds(usize),
    /// The action is not possible in the changefeed's state.
    #[error("changefeed {id}: {refusal}")]
    Refused {
        /// The changefeed.
        id: String,
        /// Why.
        refusal: Refusal,
    },
    /// The source cannot be used (unreachable, not configured for logical replication).
    #[error("source is not usable: {0}")]
    SourceUnusable(String),
    /// A URI's `password_file` cannot be read or its `password_env` variable is not set
    /// on the server (the message names the file or variable, never a value).
    #[error("{0}")]
    SecretUnavailable(String),
    /// A table rule names a table the source does not have.
    #[error("the source has no table {0}")]
    TableNotFound(String),
    /// A resume position is malformed or cannot be served.
    #[error("invalid position: {0}")]
    InvalidPosition(String),
    /// No named source with that name in that namespace.
    #[error("source {0} does not exist")]
    SourceNotFound(String),
    /// A changefeed names a source that does not exist.
    #[error("source {0} does not exist; create it first (POST /api/v2/sources)")]
    UnknownSource(String),
    /// A source with that name exists in that namespace.
    #[error("source {0} already exists")]
    SourceAlreadyExists(String),
    /// Changefeeds use the source.
    #[error("source {name} is used by changefeeds {changefeeds}; {hint}")]
    SourceInUse {
        /// The source.
        name: String,
        /// The changefeeds, comma-separated.
        changefeeds: String,
        /// What to do.
        hint: &'static str,
    },
    /// The sink refused in a way retrying cannot fix (a wrong password, a certificate not
    /// trusted, missing privileges).
    #[error("sink is not usable: {0}")]
    SinkUnusable(String),
    /// The sink is the source database itself (same cluster and database).
    #[error("{0}")]
    SinkIsSource(String),
    /// Another changefeed owns a target table this one would write.
    #[error("{0}")]
    TargetTableOwned(String),
    /// A target table holds rows and `options.existing_target` is `fail`.
    #[error("{0}")]
    TargetNotEmpty(String),
    /// The source's columns cannot be written into an existing target table as it is.
    #[error("{0}")]
    TargetConflict(String),
    /// Syncing the target's sequences failed (source or target unreachable or refusing).
    #[error("sequence sync failed: {0}")]
    SequenceSync(String),
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl EngineError {
    /// A source failure during a check: the source is not usable, with the connector's
    /// hint when it has one.
    pub(crate) fn source(e: SourceError) -> Self {
        let mut text = e.chain();
        if let Some(hint) = &e.hint {
            text.push_str(". Hint: ");
            text.push_str(hint);
        }
        EngineError::SourceUnusable(text)
    }
}

/// The answer of `GET /changefeeds/{id}/synced`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
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

/// A running task.
pub(crate) struct Task {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

pub(crate) struct Feed {
    pub(crate) config: ChangefeedConfig,
    pub(crate) status: StatusCell,
    /// Serializes operator actions on this changefeed.
    pub(crate) ops: Arc<tokio::sync::Mutex<()>>,
    pub(crate) task: Option<Task>,
}

/// Owns every changefeed of this process.
pub struct Engine {
    pub(crate) meta: Arc<MetaStore>,
    pub(crate) options: EngineOptions,
    pub(crate) feeds: Mutex<BTreeMap<String, Feed>>,
    /// Serializes changes to named sources.
    pub(crate) sources_lock: tokio::sync::Mutex<()>,
    /// This server's id, stored in its metadata: with a changefeed's `namespace/id` it
    /// names the owner of the target tables the changefeed writes.
    pub(crate) server_id: String,
    /// Every connector of the process, by URI scheme.
    pub(crate) connectors: Arc<dyn Connectors>,
}

/// The metadata key of this server's id.
const SERVER_ID_KEY: &str = "instance";

/// This server's id: read from the store, or made up and stored on first start.
fn server_id(meta: &MetaStore) -> Result<String, MetaError> {
    if let Some(id) = meta.get::<String>(Collection::Server, SERVER_ID_KEY)? {
        return Ok(id);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut id = String::new();
    for part in 0..2u8 {
        // Randomly seeded SipHash of the time and process: unique enough to tell servers
        // apart, with no dependency on a random number crate.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(part);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.write_u32(std::process::id());
        id.push_str(&format!("{:016x}", h.finish()));
    }
    meta.put(Collection::Server, SERVER_ID_KEY, &id)?;
    Ok(id)
}

/// `namespace/id`.
pub(crate) fn feed_key(namespace: &str, id: &str) -> String {
    format!("{namespace}/{id}")
}

impl Engine {
    /// Opens the engine: restores every stored changefeed, starting those that ran.
    pub fn start(
        meta: Arc<MetaStore>,
        options: EngineOptions,
        connectors: Arc<dyn Connectors>,
    ) -> Result<Arc<Self>, EngineError> {
        let server_id = server_id(&meta)?;
        info!(server_id = %server_id, "server id");
        let engine = Arc::new(Engine {
            meta,
            options,
            feeds: Mutex::new(BTreeMap::new()),
            sources_lock: tokio::sync::Mutex::new(()),
            server_id,
            connectors,
        });
        let stored: Vec<(String, ChangefeedConfig)> = engine.meta.list(Collection::Changefeeds)?;
        for (key, config) in stored {
            let doc = LifecycleDoc::load(&engine.meta, &key)?;
            info!(changefeed = %key, state = %doc.state, "restoring changefeed");
            let status = if lifecycle::runs(doc.state) {
                let phase = engine
                    .meta
                    .get::<RuntimeState>(Collection::ChangefeedState, &key)?
                    .and_then(|s| s.phase)
                    .unwrap_or(Phase::Snapshot);
                let status = StatusCell::new(FeedState::Running, phase);
                status.update(|s| {
                    s.last_error = doc.last_error.clone();
                    s.last_warning = doc.last_warning.clone();
                });
                status
            } else {
                doc.status()
            };
            let task = lifecycle::runs(doc.state).then(|| engine.spawn(&config, &status));
            engine.feeds.lock().expect("feeds lock").insert(
                key,
                Feed {
                    config,
                    status,
                    ops: Arc::default(),
                    task,
                },
            );
        }
        crate::monitor::spawn(Arc::downgrade(&engine));
        crate::cleanup::spawn(Arc::downgrade(&engine));
        Ok(engine)
    }

    /// The engine's settings.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Starts a task for `config`, reporting into `status`.
    pub(crate) fn spawn(&self, config: &ChangefeedConfig, status: &StatusCell) -> Task {
        let (stop_tx, stop_rx) = watch::channel(false);
        status.update(|s| {
            s.state = FeedState::Running;
            // Until the task has seen the source again, nothing says it is caught up.
            s.caught_up = false;
        });
        let runner = Runner {
            config: config.clone(),
            meta: self.meta.clone(),
            status: status.clone(),
            stop: stop_rx,
            retry: self.options.retry,
            replication_timeout: self.options.replication_timeout,
            metrics: FeedMetrics::new(&config.namespace, &config.id),
            server_id: self.server_id.clone(),
            connectors: self.connectors.clone(),
            source_identity: None,
            isolate_until: None,
        };
        Task {
            stop: stop_tx,
            handle: tokio::spawn(runner.run()),
        }
    }

    /// Stops the task of `key`, if it has one, and waits for it to end.
    pub(crate) async fn stop_task(&self, key: &str) {
        let task = self
            .feeds
            .lock()
            .expect("feeds lock")
            .get_mut(key)
            .and_then(|f| f.task.take());
        if let Some(task) = task {
            stop(task).await;
        }
    }

    /// The operation lock of `key`.
    pub(crate) fn ops_lock(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Arc<tokio::sync::Mutex<()>>, EngineError> {
        self.feeds
            .lock()
            .expect("feeds lock")
            .get(&feed_key(namespace, id))
            .map(|f| f.ops.clone())
            .ok_or_else(|| EngineError::NotFound(id.to_string()))
    }

    /// Runs `f` on the entry of `namespace/id`.
    pub(crate) fn with_feed<R>(
        &self,
        namespace: &str,
        id: &str,
        f: impl FnOnce(&mut Feed) -> R,
    ) -> Result<R, EngineError> {
        self.feeds
            .lock()
            .expect("feeds lock")
            .get_mut(&feed_key(namespace, id))
            .map(f)
            .ok_or_else(|| EngineError::NotFound(id.to_string()))
    }

    /// Runs every check `create` runs, without creating anything (in the source, the
    /// target or the store): the configuration, the id, the source and its tables, and
    /// the target (not the source itself; no table owned by another changefeed; existing
    /// tables writable and, under `existing_target: fail`, empty). Returns the
    /// configuration with a named source resolved.
    pub async fn check(
        &self,
        mut config: ChangefeedConfig,
    ) -> Result<ChangefeedConfig, EngineError> {
        config.validate(self.options.max_name_length)?;
        let key = config.key();
        if self.feeds.lock().expect("feeds lock").contains_key(&key) {
            return Err(EngineError::AlreadyExists(config.id.clone()));
        }
        if let Some(name) = &config.source {
            config.source_uri = self
                .source_config(&config.namespace, name)
                .map_err(|_| EngineError::UnknownSource(name.clone()))?
                .uri;
        }
        crate::validate::check_passwords(&config)?;
        let source = self.check_source(&config.source_uri).await?;
        self.check_tables(source.as_ref(), &config.source_uri, &config.tables)
            .await?;
        self.check_target(&config, source.as_ref()).await?;
        Ok(config)
    }

    /// Validates and stores a changefeed, then starts it unless `start` is false (then it
    /// is `stopped`). Nothing is stored when a check fails (see [`Engine::check`]).
    /// Returns the stored configuration and its first status, taken with the creation (a
    /// concurrent delete may remove it right after).
    pub async fn create(
        &self,
        config: ChangefeedConfig,
        start: bool,
    ) -> Result<(ChangefeedConfig, ChangefeedStatus), EngineError> {
        let config = self.check(config).await?;
        let key = config.key();
        let state = if start {
            FeedState::Running
        } else {
            FeedState::Stopped
        };
        let mut feeds = self.feeds.lock().expect("feeds lock");
        if feeds.contains_key(&key) {
            return Err(EngineError::AlreadyExists(config.id.clone()));
        }
        if feeds.len() >= self.options.max_changefeeds {
            return Err(EngineError::TooManyChangefeeds(
                self.options.max_changefeeds,
            ));
        }
        self.meta.put(Collection::Changefeeds, &key, &config)?;
        self.meta.delete(Collection::ChangefeedState, &key)?;
        // Its slot's name is this changefeed's again: never drop it as a leftover.
        self.forget_cleanup(&key);
        LifecycleDoc::new(state).save(&self.meta, &key)?;
        let status = StatusCell::new(state, Phase::Snapshot);
        let task = start.then(|| self.spawn(&config, &status));
        info!(changefeed = %key, source = %config.source_uri, sink = %config.sink_uri, state = %state, "changefeed created");
        let created = (
            config.clone(),
            status.snapshot(&config.id, &config.namespace, config.created_at_us),
        );
        feeds.insert(
            key,
            Feed {
                config,
                status,
                ops: Arc::default(),
                task,
            },
        );
        Ok(created)
    }

    /// The status of every changefeed of `namespace` (of every namespace when `None`) in
    /// `state` (any when `None`), sorted by id.
    pub fn list(&self, namespace: Option<&str>, state: Option<FeedState>) -> Vec<ChangefeedStatus> {
        let feeds = self.feeds.lock().expect("feeds lock");
        feeds
            .values()
            .filter(|f| namespace.is_none_or(|ns| f.config.namespace == ns))
            .map(|f| {
                f.status
                    .snapshot(&f.config.id, &f.config.namespace, f.config.created_at_us)
            })
            .filter(|s| state.is_none_or(|want| s.state == want))
            .collect()
    }

    /// A changefeed's configuration.
    pub fn config(&self, namespace: &str, id: &str) -> Result<ChangefeedConfig, EngineError> {
        self.with_feed(namespace, id, |f| f.config.clone())
    }

    /// A changefeed's status.
    pub fn status(&self, namespace: &str, id: &str) -> Result<ChangefeedStatus, EngineError> {
        self.with_feed(namespace, id, |f| {
            f.status.snapshot(id, namespace, f.config.created_at_us)
        })
    }

    /// Whether everything the source committed before now is applied and checkpointed.
    pub async fn synced(&self, namespace: &str, id: &str) -> Result<SyncedReport, EngineError> {
        let config = self.config(namespace, id)?;
        // Read the source's position first: anything committed before the request lies
        // before it.
        // A position that cannot be read is an error, never a "synced" by default.
        let connector = self.source_connector(&config.source_uri)?;
        let source = connector
            .current_position(&config.source_uri)
            .await
            .map_err(EngineError::source)?;
        let status = self.status(namespace, id)?;
        let checkpoint = self.with_feed(namespace, id, |f| f.status.checkpoint())?;
        let (synced, info) = if status.state == FeedState::Finished {
            (false, "the changefeed is finished".to_string())
        } else if status.phase != Phase::Streaming {
            (false, "the snapshot is still running".to_string())
        } else if status.state != FeedState::Running {
            (false, format!("the changefeed is {}", status.state))
        } else if checkpoint.is_some_and(|c| c.covers(&source)) {
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

    /// Stops and removes a changefeed, dropping its slot and publications on the source and
    /// releasing its target tables (its checkpoint and copy markers go too). Target data
    /// stays. Returns whether it existed.
    pub async fn delete(&self, namespace: &str, id: &str) -> Result<bool, EngineError> {
        let Ok(ops) = self.ops_lock(namespace, id) else {
            return Ok(false);
        };
        let _guard = ops.lock().await;
        let key = feed_key(namespace, id);
        let feed = self.feeds.lock().expect("feeds lock").remove(&key);
        let Some(mut feed) = feed else {
            return Ok(false);
        };
        if let Some(task) = feed.task.take() {
            stop(task).await;
        }
        if let Err(e) = self.release_source(&feed.config.source_uri, &key).await {
            warn!(changefeed = %key, error = %e, "could not drop slot and publications: recorded as a pending clean-up, retried until the source answers");
            let mut pending = self.pending_cleanup(
                namespace,
                id,
                feed.config.source.clone(),
                feed.config.source_uri.clone(),
            );
            pending.last_error = Some(e);
            self.record_cleanup(&key, &pending);
        }
        let sink = self.connectors.sink(&feed.config.sink_uri);
        match sink
            .release(&feed.config.sink_uri, &key, &self.server_id)
            .await
        {
            Ok(()) => info!(changefeed = %key, "target tables released"),
            Err(e) => {
                warn!(changefeed = %key, error = %ferry_core::error_chain(&e), "target unreachable: its tables stay claimed (delete the changefeed's rows in _ferry.table_owners to release them)")
            }
        }
        self.meta.delete(Collection::Changefeeds, &key)?;
        self.meta.delete(Collection::ChangefeedState, &key)?;
        self.meta.delete(Collection::ChangefeedLifecycle, &key)?;
        info!(changefeed = %key, "changefeed deleted");
        Ok(true)
    }

    /// Stops every changefeed (server shutdown); those that ran resume on the next start.
    pub async fn shutdown(&self) {
        let tasks: Vec<Task> = self
            .feeds
            .lock()
            .expect("feeds lock")
            .values_mut()
            .filter_map(|f| f.task.take())
            .collect();
        futures::future::join_all(tasks.into_iter().map(stop)).await;
    }
}

/// Asks a task to stop and waits for it (cancelling it after [`STOP_TIMEOUT`]).
async fn stop(task: Task) {
    let _ = task.stop.send(true);
    let mut handle = task.handle;
    if tokio::time::timeout(STOP_TIMEOUT, &mut handle)
        .await
        .is_err()
    {
        handle.abort();
        let _ = handle.await;
    }
}
