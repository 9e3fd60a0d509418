//! Creating, finding and deleting changefeeds; restoring them when the server starts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ferry_core::Connectors;
use ferry_meta::{Collection, MetaStore};
use serde::Serialize;
use tracing::{info, warn};

use crate::config::ChangefeedConfig;
use crate::engine::{feed_key, server_id, stop, Engine, Feed, Task};
use crate::error::EngineError;
use crate::lifecycle::{self, LifecycleDoc};
use crate::options::EngineOptions;
use crate::runner::tables::RuntimeState;
use crate::status::{ChangefeedStatus, FeedState, Phase, StatusCell, TableState};

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
            diffs: Mutex::new(BTreeMap::new()),
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
                    s.last_error_position = doc.last_error_position.clone();
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
        engine.restore_diffs()?;
        crate::monitor::spawn(Arc::downgrade(&engine));
        crate::cleanup::spawn(Arc::downgrade(&engine));
        Ok(engine)
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
        self.check_tables(source.as_ref(), &config.source_uri, &config.filter())
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
        self.meta.delete(Collection::Checkpoints, &key)?;
        self.meta.delete(Collection::ChunkMarkers, &key)?;
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
        } else if let Some(t) = status
            .tables
            .iter()
            .find(|t| t.state != TableState::Streaming)
        {
            // A table waiting for its copy, paused or parked is not in step with the
            // source, whatever the checkpoint says.
            (false, format!("table {} is {}", t.table, t.state.as_str()))
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
        self.drop_diffs(namespace, id).await?;
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
        self.meta.delete(Collection::Checkpoints, &key)?;
        self.meta.delete(Collection::ChunkMarkers, &key)?;
        self.meta.delete(Collection::ChangefeedLifecycle, &key)?;
        info!(changefeed = %key, "changefeed deleted");
        Ok(true)
    }

    /// Stops every changefeed (server shutdown); those that ran resume on the next start.
    pub async fn shutdown(&self) {
        self.stop_diff_tasks().await;
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
