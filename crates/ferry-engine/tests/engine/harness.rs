//! One engine on a temporary metadata store, the in-memory database it replicates, and
//! the waits and checks the tests share.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::{Position, TableFilter, TableId};
use ferry_engine::config::Options;
use ferry_engine::{
    ChangefeedConfig, ChangefeedStatus, Engine, EngineOptions, FeedState, RetryPolicy,
};
use ferry_meta::MetaStore;
use ferry_testkit::mem::MemDb;

/// The changefeed every test runs: `namespace/id`.
pub(crate) const FEED: &str = "default/cf";

/// How long (on the paused clock) a wait lasts before the test fails.
const WAIT: Duration = Duration::from_secs(120);

/// An engine replicating `db`.
pub(crate) struct Harness {
    pub(crate) db: MemDb,
    pub(crate) engine: Arc<Engine>,
    meta: Arc<MetaStore>,
    _dir: tempfile::TempDir,
}

fn engine_options() -> EngineOptions {
    EngineOptions {
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            give_up_after: Duration::from_secs(600),
        },
        ..EngineOptions::default()
    }
}

impl Harness {
    /// An engine on a fresh store, replicating `db`.
    pub(crate) fn start(db: &MemDb) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let meta =
            Arc::new(MetaStore::open(&dir.path().join("data"), &dir.path().join("key")).unwrap());
        let engine = Engine::start(meta.clone(), engine_options(), db.connectors()).unwrap();
        Harness {
            db: db.clone(),
            engine,
            meta,
            _dir: dir,
        }
    }

    /// The changefeed's configuration: `tables` (every table when empty), into the
    /// in-memory target, with `options`.
    pub(crate) fn config(&self, tables: &[&str], options: Options) -> ChangefeedConfig {
        ChangefeedConfig {
            id: "cf".into(),
            namespace: "default".into(),
            source: None,
            source_uri: self.db.source_uri(),
            sink_uri: "blackhole://".parse().unwrap(),
            tables: TableFilter::new(tables).unwrap(),
            options,
            created_at_us: 0,
            target_position: None,
            snapshot_only: false,
        }
    }

    /// Creates and starts the changefeed.
    pub(crate) async fn create(&self, config: ChangefeedConfig) {
        self.engine.create(config, true).await.unwrap();
    }

    /// Shuts the engine down (a task mid-batch is cancelled, its batch discarded) and
    /// starts a new one on the same store, which resumes the changefeed.
    pub(crate) async fn restart(&mut self) {
        self.engine.shutdown().await;
        self.engine =
            Engine::start(self.meta.clone(), engine_options(), self.db.connectors()).unwrap();
    }

    pub(crate) fn status(&self) -> ChangefeedStatus {
        self.engine.status("default", "cf").unwrap()
    }

    /// Waits until `condition` holds, polling on the paused clock.
    pub(crate) async fn wait(&self, what: &str, mut condition: impl FnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !condition(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; status: {:?}",
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the changefeed runs and has applied everything the source committed.
    pub(crate) async fn wait_caught_up(&self) {
        self.wait("the changefeed to catch up", |h| {
            let status = h.status();
            status.state == FeedState::Running
                && status.checkpoint_position == Some(h.db.current_position().to_string())
        })
        .await;
    }

    /// Waits until the changefeed is in `state`.
    pub(crate) async fn wait_state(&self, state: FeedState) {
        self.wait(&format!("state {state}"), |h| h.status().state == state)
            .await;
    }

    /// Asserts the target holds exactly the source's rows of `tables`, that it saw nothing
    /// a target in step with its source never sees, and that the checkpoint rule held.
    pub(crate) fn assert_identical(&self, tables: &[&TableId]) {
        for table in tables {
            assert_eq!(
                self.db.target_rows(table),
                self.db.source_rows(table),
                "{table} differs"
            );
        }
        assert_eq!(self.db.anomalies(), Vec::<String>::new());
        self.assert_checkpoint_rule();
    }

    /// Asserts every confirmation kept the checkpoint rule, and none moved backwards.
    pub(crate) fn assert_checkpoint_rule(&self) {
        assert_eq!(self.db.checkpoint_violations(), Vec::<String>::new());
        let confirmed = self.db.confirmed(FEED);
        assert!(
            confirmed.windows(2).all(|w| w[1].covers(&w[0])),
            "confirmed positions moved backwards: {confirmed:?}"
        );
    }

    /// The status's checkpoint, parsed.
    pub(crate) fn checkpoint(&self) -> Option<Position> {
        self.status().checkpoint_position.map(|text| {
            self.engine
                .parse_position(&self.db.source_uri(), &text)
                .unwrap()
        })
    }
}

/// Commits `count` transactions inserting one row each into `table`, keys from `first`.
pub(crate) fn insert_each(db: &MemDb, table: &TableId, first: i64, count: i64) {
    for id in first..first + count {
        db.commit(|tx| tx.insert(table, id, &format!("v{id}")));
    }
}
