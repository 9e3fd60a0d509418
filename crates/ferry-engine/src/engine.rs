//! The engine: every changefeed of this process, each with its configuration, its live
//! status, an operation lock and — while `running` or `error` — its task. The operations on
//! it are `impl Engine` blocks, one concern per file:
//!
//! | file | operations |
//! |---|---|
//! | `registry.rs` | start (restore), check, create, list, get, status, synced, delete, shutdown |
//! | `control.rs` | pause, resume, update, parse a position |
//! | `validate.rs` | the checks asked of the connectors before anything is stored |
//! | `sources.rs` | named sources and their status |
//! | `cleanup.rs`, `guard.rs`, `monitor.rs` | pending clean-ups, the retained-log guard, backlog measurement |
//! | `sequences.rs` | target sequence sync |
//! | `diff/` | online diffs with repair: create, list, stop, resume, delete, restore |
//!
//! Operator actions on one changefeed hold its operation lock, so they apply one at a time;
//! the map lock itself is only held for short, non-blocking looks. A task is always stopped
//! (and awaited) before its state is persisted by an operation, so the task and the
//! operation never write the same lifecycle document at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::Connectors;
use ferry_meta::{Collection, MetaError, MetaStore};
use tokio::sync::watch;

use crate::config::ChangefeedConfig;
use crate::error::EngineError;
use crate::metrics::FeedMetrics;
use crate::options::EngineOptions;
use crate::runner::repair::RepairSender;
use crate::runner::Runner;
use crate::status::{FeedState, StatusCell};

/// How long a stopping task may take to finish its batch before it is cancelled.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running task.
pub(crate) struct Task {
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) handle: tokio::task::JoinHandle<()>,
    /// Where a diff hands its repairs to the changefeed's applier (none for a diff's own
    /// task).
    pub(crate) repairs: Option<RepairSender>,
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
    /// The tasks of running diffs, by `namespace/id/diff_id`.
    pub(crate) diffs: Mutex<BTreeMap<String, Task>>,
}

/// The metadata key of this server's id.
const SERVER_ID_KEY: &str = "instance";

/// This server's id: read from the store, or made up and stored on first start.
pub(crate) fn server_id(meta: &MetaStore) -> Result<String, MetaError> {
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
    /// The engine's settings.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Starts a task for `config`, reporting into `status`.
    pub(crate) fn spawn(&self, config: &ChangefeedConfig, status: &StatusCell) -> Task {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (repairs_tx, repairs) = tokio::sync::mpsc::channel(crate::runner::repair::QUEUE);
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
            repairs,
        };
        Task {
            stop: stop_tx,
            handle: tokio::spawn(runner.run()),
            repairs: Some(repairs_tx),
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
}

/// Asks a task to stop and waits for it (cancelling it after [`STOP_TIMEOUT`]).
pub(crate) async fn stop(task: Task) {
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
