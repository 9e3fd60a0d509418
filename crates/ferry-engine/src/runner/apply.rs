//! The applier: groups source transactions into target batches and keeps the checkpoint
//! invariant (commit the batch with its checkpoint, *then* confirm it to the source).
//!
//! It also ends a changefeed at its `target_position`: every transaction whose commit lies
//! at or before the target is applied, the first one after it is not, and the run ends as
//! finished once nothing at or before the target is left.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{
    ErrorClass, Position, RowChange, Sink, SourceError, SourceEvent, TableFilter, TableId,
    TableSchema, TxMeta,
};
use futures::FutureExt;
use tokio::sync::{mpsc, watch};

use super::repair::RepairRequest;
use super::settle::SealedQueue;
use super::trail::Trail;
use super::RunError;
use crate::lifecycle::SkipTransaction;
use crate::metrics::{FeedMetrics, RowCounts};
use crate::status::StatusCell;

pub(crate) mod ahead;
mod tables;

/// Live (the batch's last transaction committed on the source less than [`BEHIND`] ago),
/// a batch commits as soon as nothing more is queued behind one of its transactions and no
/// earlier batch is still settling (a stream sink's): each transaction of a quiet or
/// moderate stream reaches a database target once the commit before it is answered. While
/// more is queued (under load), the batch takes it until this long has passed since the
/// previous commit, so a busy stream shares target commits and a slow target commit spaces
/// the next ones by itself. Measured under `pgbench -c 4` (docs/benchmarks.md): the median
/// went from 2.4–3.9 ms (a commit at most every 1 ms) to 1.1–1.3, for ~10% more of Ferry's
/// CPU and ~35% more of the target's under a saturating load (~65% at 2,000 tps, slightly
/// more than native replication's target uses there); on two shared cores the source ran
/// fewer transactions beside it (measured at scale 10).
const LIVE_COMMIT_INTERVAL: Duration = Duration::from_millis(1);

/// A batch whose last transaction is older than this (by the source's commit time, which
/// MariaDB's binlog gives to the second) is a backlog: it fills up to
/// `batch_max_rows` / `batch_max_wait_ms`, or until nothing is queued and it is
/// [`BACKLOG_IDLE_COMMIT`] old, for throughput.
const BEHIND: Duration = Duration::from_secs(2);

/// How long a backlog's batch stays open once nothing is queued.
const BACKLOG_IDLE_COMMIT: Duration = Duration::from_millis(10);

/// How a stream ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// Asked to stop.
    Stopped,
    /// The target position is reached and everything up to it is applied.
    Finished,
    /// A table the rules select was created on the source: start again, which copies it
    /// (the path of tables added by an update), then streams on.
    NewTable,
    /// A replicated table was dropped and created again on the source: start again, which
    /// copies it again (recorded as a re-sync), then streams on.
    Recreated,
}

/// Groups source transactions into target batches.
pub(crate) struct Applier {
    pub(crate) sink: Box<dyn Sink>,
    pub(crate) events: mpsc::Receiver<Result<SourceEvent, SourceError>>,
    /// Positions durable in the target, which the source may discard its log up to.
    pub(crate) confirm: watch::Sender<Option<Position>>,
    pub(crate) status: StatusCell,
    /// Per table: changes committed before this position are already in its snapshot.
    pub(crate) skip_before: HashMap<TableId, Position>,
    pub(crate) max_rows: usize,
    pub(crate) max_wait: Duration,
    /// Stop (finished) after the last transaction committed at or before this.
    pub(crate) target: Option<Position>,
    pub(crate) metrics: FeedMetrics,
    /// For a sink that cannot store its checkpoint: saves it in the metadata store, after
    /// the batch is durable and before the source is told.
    pub(crate) save_checkpoint: Option<SaveCheckpoint>,
    /// Called once after the first batch is durable (clears a requested resume position).
    pub(crate) on_first_commit: Option<Box<dyn FnOnce() + Send>>,
    /// Commit each source transaction committed at or before this in a batch of its own.
    pub(crate) isolate_until: Option<Position>,
    /// The changefeed's rules: a table the stream announces under a name they exclude
    /// (renamed out of them) is never written.
    pub(crate) filter: TableFilter,
    /// The tables this attempt replicates (selected when it started): written whatever
    /// the catalog says when the stream announces them (a partition detached since still
    /// gets the changes made while it was one).
    pub(crate) replicated: HashSet<TableId>,
    /// Tables announced under a name the rules exclude: their changes are dropped.
    pub(crate) excluded: HashSet<TableId>,
    /// Records a rename the target followed, once its batch is durable.
    pub(crate) on_renamed: OnRenamed,
    /// Records at once what the stream tells about a table (dropped, created again).
    pub(crate) on_table: OnTable,
    /// The changefeed copies tables (`snapshot: initial`): a table created again can be.
    pub(crate) copies: bool,
    /// When the last batch committed (see [`LIVE_COMMIT_INTERVAL`]).
    pub(crate) last_commit: tokio::time::Instant,
    /// Whether the sink follows tables' definitions (`schema: full`).
    pub(crate) follow_definitions: bool,
    /// A source transaction to leave out (an operator's `skip`), and what forgets it once
    /// a batch after it is durable.
    pub(crate) skip: Option<(SkipTransaction, Box<dyn FnOnce() + Send>)>,
    /// Changes left out by `skip` so far.
    pub(crate) skipped_changes: u64,
    /// Tables paused or parked: nothing of theirs is written.
    pub(crate) held: HashSet<TableId>,
    /// Batches sealed and not yet durable, oldest first (see [`super::settle`]).
    pub(crate) sealed: SealedQueue,
    /// Publishes each durable batch's row counts.
    pub(crate) counts: RowCounts,
    /// Tables whose shape the stream announced while their changes were still in their
    /// copy (`skip_before`): handed to the sink with the first change it gets, not before.
    /// The copy shaped the table as it was later; an older shape would undo that (drop a
    /// column the copy filled, add it back empty).
    pub(crate) deferred_shapes: HashSet<TableId>,
    /// The shape the sink last followed per table in this run (kept while `ahead`).
    pub(crate) shaped: HashMap<TableId, Arc<TableSchema>>,
    /// The definition the sink last followed per table in this run (kept while `ahead`).
    pub(crate) defined: HashMap<TableId, ferry_core::TableDefinition>,
    /// Applies a large transaction ahead of its commit, when the sink can.
    pub(crate) ahead: Option<ahead::AheadApply>,
}

/// Saves a checkpoint outside the target.
pub(crate) type SaveCheckpoint = Box<dyn Fn(&Position) -> Result<(), ferry_meta::MetaError> + Send>;

/// Records that target table `from` is now `to` in the changefeed's persisted state.
pub(crate) type OnRenamed =
    Box<dyn FnMut(&TableId, &TableId) -> Result<(), ferry_meta::MetaError> + Send>;

/// Records what the stream tells about a table in the changefeed's persisted state.
pub(crate) type OnTable =
    Box<dyn FnMut(super::tables::TableNote<'_>) -> Result<(), ferry_meta::MetaError> + Send>;

/// The open batch.
#[derive(Default)]
pub(super) struct Batch {
    transactions: u64,
    rows: u64,
    pub(super) opened: Option<tokio::time::Instant>,
    pub(super) end: Option<(Position, i64)>,
    /// A keepalive position (and server time) received after the batch's transactions,
    /// confirmed once the batch is durable.
    idle: Option<(Position, i64)>,
    counts: RowCounts,
    /// The batch's transactions and what they touch, to name them in an error.
    pub(super) trail: Trail,
    /// Tables it renamed on the target: `(from, to)`.
    renamed: Vec<(TableId, TableId)>,
}

/// What a batch applied, taken when it ends.
pub(super) struct BatchParts {
    pub(super) rows: u64,
    pub(super) transactions: u64,
    pub(super) counts: RowCounts,
    pub(super) renamed: Vec<(TableId, TableId)>,
    pub(super) idle: Option<(Position, i64)>,
    pub(super) trail: Trail,
}

impl Batch {
    /// Ends the batch: what it applied, and an empty batch in its place.
    pub(super) fn take(&mut self) -> BatchParts {
        let batch = std::mem::take(self);
        BatchParts {
            rows: batch.rows,
            transactions: batch.transactions,
            counts: batch.counts,
            renamed: batch.renamed,
            idle: batch.idle,
            trail: batch.trail,
        }
    }
}

/// Where the applier is in the stream.
#[derive(Default)]
pub(super) struct Cursor {
    pub(super) in_transaction: bool,
    pub(super) current_commit: Option<Position>,
    /// The current source transaction, to begin it again in a batch of its own.
    pub(super) current: Option<(u32, TxMeta)>,
    /// What the current transaction handed the sink so far (changes, renames): while
    /// nothing, the batch can end before it.
    pub(super) handed: u64,
}

impl Applier {
    /// Applies the stream until stopped, finished or an error; between source
    /// transactions, applies the repairs a diff hands over (see [`super::repair`]).
    pub(crate) async fn run(
        mut self,
        stop: &mut watch::Receiver<bool>,
        repairs: &mut mpsc::Receiver<RepairRequest>,
    ) -> Result<StreamEnd, RunError> {
        let mut batch = Batch::default();
        let mut cursor = Cursor::default();
        loop {
            // A batch commits only between transactions: no deadline (and no clock read)
            // for each change inside one.
            let deadline = if cursor.in_transaction {
                None
            } else {
                self.commit_due(&batch)
            };
            // Inside a transaction an event already queued is taken at once: the wait below
            // arms a wake-up for each of its branches, per change. Repairs and deadlines wait
            // for the transaction's end anyway; a batch whose answer is in goes through it.
            let queued = if cursor.in_transaction
                && matches!(stop.has_changed(), Ok(false))
                && !self.sealed.oldest_answered()
            {
                self.events.recv().now_or_never()
            } else {
                None
            };
            let next = if let Some(next) = queued {
                next
            } else {
                tokio::select! {
                    biased;
                    _ = stop.changed() => {
                        self.abort(&mut batch).await;
                        return Ok(StreamEnd::Stopped);
                    }
                    Some(request) = repairs.recv(), if !cursor.in_transaction => {
                        self.ahead_before_repair().await;
                        if let Err(e) = self.repair(&mut batch, request).await {
                            let e = named(e, &batch.trail);
                            self.abort(&mut batch).await;
                            return Err(e);
                        }
                        continue;
                    }
                    settled = self.sealed.oldest_settled() => {
                        if let Err(e) = settled.and_then(|()| self.finish_oldest()) {
                            self.abort(&mut batch).await;
                            return Err(e);
                        }
                        continue;
                    }
                    ev = self.events.recv() => ev,
                    _ = sleep_until(deadline), if deadline.is_some() && !cursor.in_transaction => {
                        if let Err(e) = self.commit(&mut batch).await {
                            let e = named(e, &batch.trail);
                            self.abort(&mut batch).await;
                            return Err(e);
                        }
                        continue;
                    }
                }
            };
            let Some(event) = next else {
                self.abort(&mut batch).await;
                return Err(RunError::Worker(
                    "the replication reader stopped without an error".into(),
                ));
            };
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    self.abort(&mut batch).await;
                    return Err(e.into());
                }
            };
            match self.on_event(event, &mut batch, &mut cursor).await {
                Ok(None) => {}
                Ok(Some(end)) => return Ok(end),
                Err(e) => {
                    let e = named(e, &batch.trail);
                    self.abort(&mut batch).await;
                    return Err(e);
                }
            }
        }
    }

    /// When the open batch is to commit (see [`LIVE_COMMIT_INTERVAL`] and [`BEHIND`]);
    /// `None` while no transaction of it has ended.
    fn commit_due(&self, batch: &Batch) -> Option<tokio::time::Instant> {
        let (_, commit_time_us) = batch.end.as_ref()?;
        let opened = batch.opened?;
        let behind_us = crate::status::now_us().saturating_sub(*commit_time_us);
        if behind_us < BEHIND.as_micros() as i64 {
            if self.events.is_empty() && self.sealed.is_empty() {
                // Nothing more waiting and no batch still settling: commit now.
                return Some(tokio::time::Instant::now());
            }
            return Some(self.last_commit + LIVE_COMMIT_INTERVAL.min(self.max_wait));
        }
        let wait = if self.events.is_empty() {
            self.max_wait.min(BACKLOG_IDLE_COMMIT)
        } else {
            self.max_wait
        };
        Some(opened + wait)
    }

    pub(super) async fn abort(&mut self, batch: &mut Batch) {
        self.ahead_abort().await;
        self.sink.abort_batch().await;
        if self.save_checkpoint.is_none() {
            // A COMMIT still on its way ends first, so the next attempt reads a checkpoint
            // in the target that no batch of this run can still move.
            self.sealed.answered().await;
        }
        batch.counts.discard();
    }

    fn past_target(&self, position: &Position) -> bool {
        self.target.as_ref().is_some_and(|t| !t.covers(position))
    }

    async fn on_event(
        &mut self,
        event: SourceEvent,
        batch: &mut Batch,
        cursor: &mut Cursor,
    ) -> Result<Option<StreamEnd>, RunError> {
        if self.ahead.is_some() {
            self.ahead_before(&event).await;
        }
        match event {
            SourceEvent::Ahead(ahead) => self.on_ahead(ahead, batch, cursor).await?,
            SourceEvent::Begin {
                commit,
                xid,
                commit_time_us,
            } => {
                if self.past_target(&commit) {
                    // Everything at or before the target is in the batch.
                    self.commit_durable(batch).await?;
                    return Ok(Some(StreamEnd::Finished));
                }
                cursor.in_transaction = true;
                batch.trail.begin(xid, &commit);
                let tx = TxMeta {
                    commit,
                    commit_time_us,
                    source_tx_id: u64::from(xid),
                };
                // A replay after a refused batch: one source transaction per batch, each
                // change in source order (see `Runner::run`).
                let isolated = self
                    .isolate_until
                    .as_ref()
                    .is_some_and(|t| t.covers(&tx.commit));
                self.sink.set_in_order(isolated);
                self.sink.begin_transaction(&tx).await?;
                cursor.current_commit = Some(tx.commit.clone());
                cursor.current = Some((xid, tx));
                cursor.handed = 0;
                batch.opened.get_or_insert_with(tokio::time::Instant::now);
                self.status.update(|s| s.caught_up = false);
            }
            SourceEvent::Schema(schema) if self.held.contains(&schema.id) => {}
            SourceEvent::Schema(schema) => {
                if self.selected(&schema.id, &schema.partition_of) {
                    self.excluded.remove(&schema.id);
                    if self.copied_later(&schema.id, cursor.current_commit.as_ref()) {
                        self.deferred_shapes.insert(schema.id.clone());
                    } else {
                        self.deferred_shapes.remove(&schema.id);
                        self.follow_shape(&schema, batch, cursor).await?;
                    }
                } else {
                    self.excluded.insert(schema.id.clone());
                }
            }
            SourceEvent::Definition { table, definition } => {
                // After the table's description, which decided whether it is written.
                if self.follow_definitions
                    && !self.excluded.contains(&table)
                    && !self.held.contains(&table)
                {
                    if self.ahead.is_some() {
                        self.defined.insert(table.clone(), definition.clone());
                    }
                    self.sink.follow_definition(&table, definition).await?;
                }
            }
            SourceEvent::Renamed { from, schema } => {
                if self.renamed(from, schema, batch).await? {
                    cursor.handed += 1;
                }
            }
            SourceEvent::Recreated { table, position } => {
                return self.recreated(table, position, batch, cursor).await;
            }
            SourceEvent::Dropped { table } => self.dropped(table)?,
            SourceEvent::Warning(message) => self.warn(message),
            SourceEvent::Change(change) => {
                self.metrics.bytes_read(change.payload_bytes() as u64);
                if let RowChange::Insert { table, .. }
                | RowChange::Update { table, .. }
                | RowChange::Delete { table, .. } = &change
                {
                    let commit = cursor.current_commit.as_ref();
                    if let (Some((skip, _)), Some(commit)) = (&self.skip, commit) {
                        if skip.leaves_out(commit, &table.id) {
                            self.skipped_changes += 1;
                        }
                    }
                }
                if let Some(change) = self.filter_skipped(change, cursor.current_commit.as_ref()) {
                    if !self.deferred_shapes.is_empty() {
                        let tables: Vec<Arc<TableSchema>> = match &change {
                            RowChange::Insert { table, .. }
                            | RowChange::Update { table, .. }
                            | RowChange::Delete { table, .. } => vec![table.clone()],
                            RowChange::Truncate { tables, .. } => tables.clone(),
                        };
                        for table in tables {
                            if self.deferred_shapes.remove(&table.id) {
                                self.follow_shape(&table, batch, cursor).await?;
                            }
                        }
                    }
                    batch.rows += 1;
                    batch.counts.count(&change);
                    batch.trail.change(&change);
                    cursor.handed += 1;
                    self.sink.apply(change).await?;
                }
            }
            SourceEvent::Commit {
                end,
                commit_time_us,
            } => {
                cursor.in_transaction = false;
                batch.transactions += 1;
                let at_target = self.at_target(&end);
                // By its commit position, as `isolate_until` is one (its end lies after it).
                let isolated = self.isolate_until.as_ref().is_some_and(|until| {
                    cursor
                        .current_commit
                        .as_ref()
                        .is_some_and(|commit| until.covers(commit))
                });
                batch.end = Some((end, commit_time_us));
                let due = self
                    .commit_due(batch)
                    .is_some_and(|due| due <= tokio::time::Instant::now());
                if batch.rows as usize >= self.max_rows || isolated || due || at_target {
                    self.commit(batch).await?;
                }
                if at_target {
                    self.settle_all().await?;
                    return Ok(Some(StreamEnd::Finished));
                }
            }
            SourceEvent::Idle {
                position,
                server_time_us,
            } => {
                if cursor.in_transaction {
                    return Ok(None);
                }
                let due = self
                    .commit_due(batch)
                    .is_none_or(|due| due <= tokio::time::Instant::now());
                if !due && !self.at_target(&position) {
                    // Confirmed with the batch, which the timer commits shortly.
                    batch.idle = Some((position, server_time_us));
                    return Ok(None);
                }
                self.commit_durable(batch).await?;
                // Everything up to `position` was sent and is applied: safe to confirm.
                let at_target = self.at_target(&position);
                self.confirm_idle(position, server_time_us);
                if at_target {
                    return Ok(Some(StreamEnd::Finished));
                }
            }
        }
        Ok(None)
    }

    fn at_target(&self, position: &Position) -> bool {
        self.target.as_ref().is_some_and(|t| position.covers(t))
    }

    /// Tells the source it may discard its log up to `position` (never backwards).
    pub(super) fn confirm(&self, position: &Position) {
        self.confirm.send_if_modified(|c| {
            let raise = c.as_ref().is_none_or(|c| !c.covers(position));
            if raise {
                *c = Some(position.clone());
            }
            raise
        });
    }

    /// Confirms a keepalive position received when everything before it was applied.
    pub(super) fn confirm_idle(&self, position: Position, server_time_us: i64) {
        self.confirm(&position);
        self.status.update(|s| {
            if s.checkpoint.as_ref().is_none_or(|c| !c.covers(&position)) {
                s.checkpoint = Some(position);
            }
            s.checkpoint_time_us = Some(server_time_us);
            s.caught_up = true;
        });
    }

    /// Whether the table `table` (a partition of `partition_of`) is written: one this
    /// attempt replicates, or one the rules select.
    fn selected(&self, table: &TableId, partition_of: &[TableId]) -> bool {
        self.replicated.contains(table) || self.filter.selects(table, partition_of)
    }

    /// Drops changes a table's snapshot already holds, and changes to tables the rules
    /// exclude.
    fn filter_skipped(&self, change: RowChange, commit: Option<&Position>) -> Option<RowChange> {
        if self.skip_before.is_empty()
            && self.excluded.is_empty()
            && self.skip.is_none()
            && self.held.is_empty()
        {
            return Some(change);
        }
        // Committed before the table's snapshot: the snapshot already holds it; or left out
        // by an operator's skip.
        let skipped = |id: &TableId| {
            self.skip
                .as_ref()
                .is_some_and(|(s, _)| commit.is_some_and(|c| s.leaves_out(c, id)))
                || self.excluded.contains(id)
                || self.held.contains(id)
                || self.copied_later(id, commit)
        };
        match change {
            RowChange::Insert { ref table, .. }
            | RowChange::Update { ref table, .. }
            | RowChange::Delete { ref table, .. } => (!skipped(&table.id)).then_some(change),
            RowChange::Truncate {
                tables,
                restart_identity,
            } => {
                let tables: Vec<_> = tables.into_iter().filter(|t| !skipped(&t.id)).collect();
                (!tables.is_empty()).then_some(RowChange::Truncate {
                    tables,
                    restart_identity,
                })
            }
        }
    }
}

/// A definite sink error, named by the batch it refused (transient ones stay as they are:
/// a broken connection is no fault of the data).
pub(super) fn named(err: RunError, trail: &Trail) -> RunError {
    match err {
        RunError::Sink(source) if source.class() == ErrorClass::Definite => RunError::Apply {
            context: trail.describe(),
            transactions: trail.transactions(),
            last_commit: trail.last_commit().map(Box::new),
            tables: trail.tables(),
            source,
        },
        other => other,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
