//! In-memory connectors, for tests of the engine without a database (cargo feature `mem`).
//!
//! A [`MemDb`] is one shared handle on a tiny "database" the test drives, with a source
//! half and a target half:
//!
//! ```text
//!  test ──commit──► source tables + log of transactions (positions 0/…)
//!                     │ snapshot (a copy of the tables)   │ stream (the log, from a slot)
//!                     ▼                                   ▼
//!                 MemSource ──────── engine ────────► MemSink ──► target tables,
//!                     ▲                                        checkpoint, chunk markers
//!                     └── confirmed positions (checked against the target's checkpoint)
//! ```
//!
//! [`MemConnectors`] implements [`ferry_core::Connectors`]: a source URI of scheme `mem`
//! ([`MemDb::source_uri`]) reads the source half, and any sink URI (`blackhole://` in
//! configurations) writes the target half.
//!
//! # The model
//! Every table has two columns, `id bigint` (the key) and `value text`. A transaction
//! ([`MemDb::commit`]) changes the source tables at once and is appended to the log with a
//! commit position and an end position (`Position::PgLsn`); the current position is the
//! last end. The changefeed's place in the log is a *slot* per changefeed: streaming
//! resumes after the later of the requested position and what the slot has confirmed, as
//! PostgreSQL does, so a position confirmed too early loses data visibly. A stream sends
//! the changes of the tables its changefeed published ([`ferry_core::Source::prepare`]) at
//! the time it reads them, and skips transactions without such changes.
//!
//! The target applies a batch only at `commit_batch`, together with the checkpoint; a
//! batch aborted or dropped (a crashed task) leaves nothing. A snapshot chunk commits with
//! its marker. Changes are applied as upserts, like the PostgreSQL sink, but what a target
//! in step with its source never sees is recorded as an anomaly ([`MemDb::anomalies`]): an
//! insert of a key the table holds, an update or delete of a key it lacks, a checkpoint
//! moving backwards. Every position the engine confirms to a stream is checked against the
//! target's checkpoint ([`MemDb::checkpoint_violations`]).
//!
//! # Faults
//! [`MemDb::fail_source`] makes a step of the source fail once with an error of a class;
//! [`MemDb::fail_sink`] makes a step of the sink fail, hang or panic once (a hang lasts
//! until the engine drops the call, as a dead connection would).
//!
//! # Shapes
//! [`MemTransaction::add_column`] changes a table's shape mid-stream. With
//! [`MemDb::reshape_between_batches`] the sink behaves as MariaDB's: it changes a target
//! table only while the open batch holds none of its changes (it says so in
//! [`ferry_core::Sink::needs_own_batch`]), and records an anomaly when asked otherwise. The
//! target keeps each table's shape, as a database does: a new connection compares with it.
//!
//! ```no_run
//! use ferry_testkit::mem::MemDb;
//!
//! let db = MemDb::new();
//! let t = db.create_table("public", "t");
//! db.commit(|tx| tx.insert(&t, 1, "one"));
//! // `Engine::start(meta, options, db.connectors())`, a changefeed from `db.source_uri()`
//! // to `blackhole://`, wait until its checkpoint is `db.current_position()`, then:
//! assert_eq!(db.target_rows(&t), db.source_rows(&t));
//! assert!(db.anomalies().is_empty() && db.checkpoint_violations().is_empty());
//! ```

mod connectors;
mod sink;
mod source;
mod table;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ferry_core::{
    ConnectionUri, ErrorClass, FinishedChunk, Lsn, Position, Row, RowChange, SourceError, TableId,
    TableSchema,
};
use tokio::sync::watch;

pub use connectors::{MemConnectors, MemSinkConnector, MemSourceConnector};
pub use sink::MemSink;
pub use source::MemSource;
use table::{apply_change, key_of, lsn_of, table_schema};
pub use table::{row, MemTransaction};

/// The position of an empty log; transactions follow at steps of [`LSN_STEP`].
const FIRST_LSN: u64 = 0x100;
/// The distance between two transactions' commit positions; a transaction ends one after
/// its commit.
const LSN_STEP: u64 = 0x10;

/// A step of the source that [`MemDb::fail_source`] can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceStep {
    /// Connecting for an attempt ([`ferry_core::SourceConnector::open`]).
    Open,
    /// Publishing the tables ([`ferry_core::Source::prepare`]).
    Prepare,
    /// Creating the changefeed's stream with its snapshot.
    CreateStream,
    /// Taking a snapshot at a later position.
    ExportSnapshot,
    /// Reading a snapshot chunk.
    ReadChunk,
    /// Starting the stream.
    StartStream,
    /// While streaming: a running stream fails at once, else the next one once started.
    Stream,
}

/// A step of the sink that [`MemDb::fail_sink`] can disturb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkStep {
    /// Adding a change to the open batch.
    Apply,
    /// Committing a batch.
    CommitBatch,
    /// Loading a snapshot chunk.
    CopyChunk,
}

/// What a disturbed sink step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkFault {
    /// Never returns: the call hangs until the engine drops it.
    Hang,
    /// Panics, as a crashing process would.
    Panic,
    /// Fails with an error of this class, changing nothing.
    Fail(ErrorClass),
    /// Commits (a batch, a chunk), then fails as if the answer was lost; at
    /// [`SinkStep::Apply`], fails as [`SinkFault::Fail`].
    FailAfterCommit(ErrorClass),
}

/// A batch the target committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedBatch {
    /// The changefeed (`namespace/id`).
    pub feed: String,
    /// The checkpoint stored with it.
    pub checkpoint: Position,
    /// Row changes it held.
    pub rows: usize,
}

/// Where a committed transaction lies in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Its commit position (`SourceEvent::Begin::commit`).
    pub commit: Position,
    /// Its end position (`SourceEvent::Commit::end`): the checkpoint after it.
    pub end: Position,
}

/// A shared handle on an in-memory source and target. Clones share the same data.
#[derive(Clone)]
pub struct MemDb {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change a stream may wait for (a commit, a new table, a fault).
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    source: SourceState,
    target: TargetState,
    /// Armed source failures, fired in order of arming per step.
    source_faults: Vec<(SourceStep, ErrorClass)>,
    /// The stream reader panics at its next read (a bug in a connector or driver).
    stream_panic: bool,
    /// Armed sink faults: the step, calls of it to let pass first, and the fault.
    sink_faults: Vec<(SinkStep, u32, SinkFault)>,
    /// The sink changes a table only between batches (see [`MemDb::reshape_between_batches`]).
    reshape_between_batches: bool,
    /// Target tables whose shape the sink changed, in order.
    reshapes: Vec<TableId>,
    faults_fired: usize,
    checkpoint_violations: Vec<String>,
    /// Sinks act as streams: see [`MemDb::settle_after`].
    settle_after: Option<Duration>,
    /// With `settle_after`, sinks act as databases: see [`MemDb::commit_settles_after`].
    commit_settles: bool,
}

#[derive(Default)]
struct SourceState {
    tables: BTreeMap<TableId, SourceTable>,
    next_source_id: u32,
    log: Vec<LoggedTransaction>,
    /// Per changefeed: its place in the log.
    slots: HashMap<String, Slot>,
    /// Per changefeed: the source ids of the tables it publishes.
    publications: HashMap<String, BTreeSet<u32>>,
    /// Per changefeed: the transactions its streams sent, `(commit, end)`.
    sent: HashMap<String, Vec<(Lsn, Lsn)>>,
    /// Plans cut tables into chunks of at most this many rows; `None`: one chunk.
    chunk_rows: Option<usize>,
    /// Transactions carry the wall clock's time as their commit time (a live source), not
    /// a made-up one long past.
    live_commit_times: bool,
}

struct SourceTable {
    schema: Arc<TableSchema>,
    source_id: u32,
    rows: BTreeMap<i64, Row>,
}

struct LoggedTransaction {
    xid: u32,
    commit_time_us: i64,
    commit: Lsn,
    end: Lsn,
    changes: Vec<RowChange>,
}

#[derive(Clone, Debug)]
struct Slot {
    /// Streaming resumes after this at the earliest.
    confirmed: Lsn,
    /// Every position confirmed to it, in order.
    history: Vec<Lsn>,
}

#[derive(Default)]
struct TargetState {
    tables: BTreeMap<TableId, BTreeMap<i64, Row>>,
    /// Each target table's shape, as the sink last followed it.
    shapes: HashMap<TableId, Arc<TableSchema>>,
    checkpoints: HashMap<String, Position>,
    markers: HashMap<String, Vec<FinishedChunk>>,
    batches: Vec<CommittedBatch>,
    anomalies: Vec<String>,
}

impl Default for MemDb {
    fn default() -> Self {
        Self::new()
    }
}

impl MemDb {
    /// An empty source and target.
    pub fn new() -> Self {
        MemDb {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: watch::channel(0).0,
            }),
        }
    }

    /// The source URI [`MemConnectors`] maps to this source.
    pub fn source_uri(&self) -> ConnectionUri {
        "mem://memdb/source".parse().expect("a constant URI parses")
    }

    /// The registry of this database's connectors, for `Engine::start`.
    pub fn connectors(&self) -> Arc<MemConnectors> {
        Arc::new(MemConnectors::new(self.clone()))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while building a transaction has failed already: later
        // users (a stream ending as the runtime drops it) go on, rather than panic again.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the streams and watchers.
    fn touch(&self) {
        self.shared.changed.send_modify(|v| *v += 1);
    }

    /// Creates source table `schema.name` (`id bigint` key, `value text`).
    pub fn create_table(&self, schema: &str, name: &str) -> TableId {
        let id = TableId::new(schema, name);
        {
            let mut state = self.lock();
            let source = &mut state.source;
            source.next_source_id += 1;
            let table = SourceTable {
                schema: Arc::new(table_schema(id.clone())),
                source_id: 16_384 + source.next_source_id,
                rows: BTreeMap::new(),
            };
            assert!(
                source.tables.insert(id.clone(), table).is_none(),
                "table {id} exists"
            );
        }
        self.touch();
        id
    }

    /// Commits one source transaction built by `build`; returns where it lies in the log.
    pub fn commit(&self, build: impl FnOnce(&mut MemTransaction<'_>)) -> Committed {
        let committed = {
            let mut state = self.lock();
            let source = &mut state.source;
            let mut tx = MemTransaction {
                tables: &mut source.tables,
                changes: Vec::new(),
            };
            build(&mut tx);
            let changes = tx.changes;
            // As `upcoming(1)`.
            let commit = Lsn(source.current().0 + LSN_STEP - 1);
            let end = Lsn(commit.0 + 1);
            let xid = 1000 + source.log.len() as u32;
            let commit_time_us = if source.live_commit_times {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64)
            } else {
                1_000_000 * i64::from(xid)
            };
            source.log.push(LoggedTransaction {
                xid,
                commit_time_us,
                commit,
                end,
                changes,
            });
            Committed {
                commit: Position::PgLsn(commit),
                end: Position::PgLsn(end),
            }
        };
        self.touch();
        committed
    }

    /// From now on, transactions commit at the wall clock's time, as on a live source (by
    /// default their commit times lie long past, as in a backlog).
    pub fn live_commit_times(&self) {
        self.lock().source.live_commit_times = true;
    }

    /// Where the `n`-th transaction from now (1: the next one) will lie in the log.
    pub fn upcoming(&self, n: u64) -> Committed {
        let commit = self.lock().source.current().0 + n * LSN_STEP - 1;
        Committed {
            commit: Position::PgLsn(Lsn(commit)),
            end: Position::PgLsn(Lsn(commit + 1)),
        }
    }

    /// The source's current position (the end of its last transaction).
    pub fn current_position(&self) -> Position {
        Position::PgLsn(self.lock().source.current())
    }

    /// Plans tables cut into chunks of at most `rows` rows (default: one chunk per table).
    pub fn set_chunk_rows(&self, rows: usize) {
        self.lock().source.chunk_rows = Some(rows.max(1));
    }

    /// The source table's rows now.
    pub fn source_rows(&self, table: &TableId) -> BTreeMap<i64, Row> {
        self.lock()
            .source
            .tables
            .get(table)
            .map(|t| t.rows.clone())
            .unwrap_or_default()
    }

    /// The source table's rows after every transaction committed at or before `position`.
    pub fn source_rows_through(&self, table: &TableId, position: &Position) -> BTreeMap<i64, Row> {
        let state = self.lock();
        let mut rows = BTreeMap::new();
        let mut ignored = Vec::new();
        for tx in &state.source.log {
            if position.covers(&Position::PgLsn(tx.commit)) {
                for change in &tx.changes {
                    apply_change(&mut rows, table, change, &mut ignored);
                }
            }
        }
        rows
    }

    /// The target table's rows (empty when the target has no such table).
    pub fn target_rows(&self, table: &TableId) -> BTreeMap<i64, Row> {
        self.lock()
            .target
            .tables
            .get(table)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the target has the table.
    pub fn target_has_table(&self, table: &TableId) -> bool {
        self.lock().target.tables.contains_key(table)
    }

    /// The checkpoint the target holds for changefeed `feed` (`namespace/id`).
    pub fn target_checkpoint(&self, feed: &str) -> Option<Position> {
        self.lock().target.checkpoints.get(feed).cloned()
    }

    /// The snapshot chunks the target holds for `feed`.
    pub fn target_markers(&self, feed: &str) -> Vec<FinishedChunk> {
        self.lock()
            .target
            .markers
            .get(feed)
            .cloned()
            .unwrap_or_default()
    }

    /// Every batch the target committed, in order.
    pub fn batches(&self, feed: &str) -> Vec<CommittedBatch> {
        let state = self.lock();
        let batches = state.target.batches.iter();
        batches.filter(|b| b.feed == feed).cloned().collect()
    }

    /// Every position the engine confirmed to `feed`'s slot, in order.
    pub fn confirmed(&self, feed: &str) -> Vec<Position> {
        let state = self.lock();
        let slot = state.source.slots.get(feed);
        let history = slot.map(|s| s.history.clone()).unwrap_or_default();
        history.into_iter().map(Position::PgLsn).collect()
    }

    /// Whether `feed` has a slot on the source.
    pub fn has_slot(&self, feed: &str) -> bool {
        self.lock().source.slots.contains_key(feed)
    }

    /// What the target saw that a target in step with its source never sees.
    pub fn anomalies(&self) -> Vec<String> {
        self.lock().target.anomalies.clone()
    }

    /// Confirmations that broke the checkpoint rule: a position confirmed before every
    /// transaction sent before it was durable in the target, or lower than one before.
    pub fn checkpoint_violations(&self) -> Vec<String> {
        self.lock().checkpoint_violations.clone()
    }

    /// Makes `step` of the source fail once, with an error of `class`.
    pub fn fail_source(&self, step: SourceStep, class: ErrorClass) {
        self.lock().source_faults.push((step, class));
        self.touch();
    }

    /// Makes the running stream's reader panic at its next read, once (a bug in a
    /// connector or its driver).
    pub fn panic_stream(&self) {
        self.lock().stream_panic = true;
        self.touch();
    }

    /// Whether the stream reader must panic now (the armed panic is used up).
    pub(crate) fn take_stream_panic(&self) -> bool {
        std::mem::take(&mut self.lock().stream_panic)
    }

    /// Makes the next call of `step` of the sink do `fault`.
    pub fn fail_sink(&self, step: SinkStep, fault: SinkFault) {
        self.fail_sink_after(step, 0, fault);
    }

    /// Lets `calls` calls of `step` pass, then makes the next one do `fault`.
    pub fn fail_sink_after(&self, step: SinkStep, calls: u32, fault: SinkFault) {
        self.lock().sink_faults.push((step, calls, fault));
    }

    /// Makes the sinks connected from now on act as stream sinks: the engine keeps their
    /// checkpoint, and each sealed batch lands on the target `delay` after it was sealed
    /// (its acknowledgements), in order; a [`SinkStep::CommitBatch`] fault fails it then,
    /// and every batch sealed after it fails too, landing nothing.
    pub fn settle_after(&self, delay: Duration) {
        self.lock().settle_after = Some(delay);
    }

    /// Makes the sinks connected from now on act as database sinks that send a batch's
    /// COMMIT without waiting for its answer: the checkpoint commits with the batch, which
    /// lands on the target `delay` after it was sealed, whether or not a batch before it
    /// failed (so the engine must not seal a batch while the one before it settles; one
    /// sealed then is recorded as an anomaly); a [`SinkStep::CommitBatch`] fault fails it.
    pub fn commit_settles_after(&self, delay: Duration) {
        let mut state = self.lock();
        state.settle_after = Some(delay);
        state.commit_settles = true;
    }

    /// Makes the sink change a target table's shape only while the open batch holds none
    /// of its changes, as MariaDB's DDL (which commits implicitly) demands.
    pub fn reshape_between_batches(&self) {
        self.lock().reshape_between_batches = true;
    }

    /// The tables whose shape the sink changed (a new shape announced after another), in
    /// order.
    pub fn reshapes(&self) -> Vec<TableId> {
        self.lock().reshapes.clone()
    }

    /// How many armed faults (source and sink) have fired.
    pub fn faults_fired(&self) -> usize {
        self.lock().faults_fired
    }

    /// How many armed faults (source and sink) have not fired yet.
    pub fn faults_armed(&self) -> usize {
        let state = self.lock();
        state.source_faults.len() + state.sink_faults.len()
    }

    /// The armed failure of `step`, if any: taken, so it fires once.
    fn take_source_fault(&self, step: SourceStep) -> Result<(), SourceError> {
        let mut state = self.lock();
        let Some(i) = state.source_faults.iter().position(|(s, _)| *s == step) else {
            return Ok(());
        };
        let (_, class) = state.source_faults.remove(i);
        state.faults_fired += 1;
        Err(SourceError::message(
            format!("injected {class:?} failure at {step:?}"),
            class,
        ))
    }

    /// The armed fault of `step` whose turn it is, if any.
    fn take_sink_fault(&self, step: SinkStep) -> Option<SinkFault> {
        let mut state = self.lock();
        let i = state.sink_faults.iter().position(|(s, _, _)| *s == step)?;
        let (_, calls, fault) = &mut state.sink_faults[i];
        if *calls > 0 {
            *calls -= 1;
            return None;
        }
        let fault = *fault;
        state.sink_faults.remove(i);
        state.faults_fired += 1;
        Some(fault)
    }
}

impl SourceState {
    /// The end of the last transaction.
    fn current(&self) -> Lsn {
        self.log.last().map_or(Lsn(FIRST_LSN), |tx| tx.end)
    }
}
