//! One changefeed's task: attempts, retries with backoff, and how a run ends.
//!
//! ```text
//! run ─► attempt ─► snapshot (first start) ─► reconcile tables ─► copy added ─► stream
//!   ▲        │ transient failure: state error, last_warning, backoff (retry.rs)
//!   └────────┘ definite failure / retries exhausted: state failed, last_error with a hint
//!              target position reached / snapshot-only copy done: state finished
//! ```
//!
//! - [`snapshot`]: the first copy, and the copy of tables added later.
//! - [`tables`]: the persisted plan, reconciling it with the filter, per-table progress.
//! - [`stream`]: where streaming starts, the replication session and its reader task.
//! - [`apply`]: batches, the checkpoint invariant, the target position.
//! - [`repair`]: rows a diff repairs, written by the applier between source transactions.
//! - [`trail`]: what the open batch holds (source transactions, tables, operations, key
//!   columns), to name it when the target refuses it. A refused batch is replayed once
//!   with one source transaction per batch, each change in source order: what a merged
//!   batch tripped (rows trading a UNIQUE value) then applies, and otherwise `last_error`
//!   names the transaction the target refuses.
//!
//! Schema changes the stream reveals: a table renamed on the source is renamed on the
//! target in the batch (tables are tracked by the source's OID in [`tables::RuntimeState`]);
//! renamed to a name the rules exclude, the attempt fails ([`RunError::RenamedOut`]), and so
//! does a start after a swap the stream cannot follow in order ([`RunError::Swapped`]). While
//! streaming, tables created on the source that the rules select end the attempt
//! ([`StreamEnd::NewTable`]) so the next one copies them, as it copies tables added by an
//! update. A table's new shape goes to the sink in the batch, or between two batches for
//! a sink whose DDL commits implicitly ([`reshape`]).
//!
//! Before each attempt that streams, the slot is checked: missing or invalidated
//! (`wal_status` `lost`) is a definite failure whose hint is to re-sync, never a stream
//! from a later position.
//!
//! A stop request (pause, delete, shutdown) cancels the attempt wherever it is: snapshot
//! chunks and batches are target transactions, so a cancelled one leaves no trace, and the
//! next run resumes from the last durable chunk or checkpoint. The task never decides the
//! state after a stop; the registry does.

mod apply;
mod checks;
mod park;
pub(crate) mod repair;
mod reshape;
mod settle;
mod snapshot;
mod stream;
pub(crate) mod tables;
mod trail;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{
    Connectors, ErrorClass, Position, ServerIdentity, Sink, SinkError, SourceError, SourceOptions,
    TableId, TargetPolicy,
};
use ferry_meta::{Collection, MetaStore};
use futures::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::ChangefeedConfig;
use crate::lifecycle::{on_event, Event, LifecycleDoc};
use crate::metrics::FeedMetrics;
use crate::options::RetryPolicy;
use crate::retry::{Backoff, Decision};
use crate::status::Timed;
use crate::status::{now_us, Phase, StatusCell};
use apply::StreamEnd;
use checks::source_ids;
use tables::RuntimeState;

/// Why one attempt ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Meta(#[from] ferry_meta::MetaError),
    /// The target refused a batch; `context` names its source transactions, tables,
    /// operations and key columns (never values).
    #[error("applying {context}")]
    Apply {
        context: String,
        /// How many source transactions the batch held.
        transactions: u64,
        /// The batch's last commit position.
        last_commit: Option<Box<Position>>,
        /// The tables the batch changed (those noted; see `Trail`).
        tables: Vec<TableId>,
        #[source]
        source: SinkError,
    },
    /// The stream (PostgreSQL: the slot) can no longer serve what follows the checkpoint:
    /// definite, and resuming cannot help (see [`slot_lost_hint`]).
    #[error(
        "{description}, so the source's changes since the last checkpoint ({checkpoint}) are gone"
    )]
    SlotLost {
        description: String,
        checkpoint: String,
    },
    /// A replicated table was renamed on the source to a name the rules exclude: following
    /// it would write a table the rules leave out, dropping it would leave the target stale.
    #[error(
        "table {from} was renamed to {to} on the source, and the rules in `tables` exclude \
         the new name; Ferry stops rather than let the target diverge. Add {to} to `tables` \
         (the target table is renamed and followed) or exclude {from} too (its target table \
         is kept and gets no further changes), then resume"
    )]
    RenamedOut { from: TableId, to: TableId },
    /// While the changefeed was not streaming, a replicated table was renamed and another
    /// took its name (a swap) that the stream cannot follow in order: it announces a rename
    /// only with the table's next change, or the new table was not replicated before
    /// ([`checks`]), so the new table's changes could reach the old one's target table.
    #[error(
        "table {table} was renamed to {renamed_to} on the source and {other} took the name \
         {table} while the changefeed was not streaming (a swap). The target table {table} \
         holds the old table's rows until the stream reaches their rename, and the new \
         table's changes could reach it first; Ferry stops before writing either table. \
         Delete the changefeed and create it again with `snapshot: initial` and \
         `options.existing_target: truncate` (every table is copied anew), or exclude \
         {exclude} in `tables` (their target tables are kept as they are and get no further \
         changes) and resume",
        table = .names.0,
        renamed_to = .names.1
    )]
    Swapped {
        /// The old table's target name, and its name now.
        names: Box<(TableId, TableId)>,
        /// The table that took the name, as the message says it.
        other: Box<str>,
        /// The names to exclude to go on without them.
        exclude: Box<str>,
    },
    /// A replicated table was dropped and created again on the source, and the changefeed
    /// copies nothing (`snapshot: never`), so it cannot replace the target table's rows.
    #[error(
        "table {table} was dropped and created again on the source, and this changefeed \
         copies no tables (`snapshot: never`): its target table holds the dropped table's \
         rows, and the new table's changes on top of them would mix the two. Exclude {table} \
         in `tables` (its target table is kept as it is) and resume, or create the changefeed \
         again with `snapshot: initial`"
    )]
    RecreatedUncopied { table: TableId },
    /// A task of the engine's own failed (a snapshot worker panicked, the stream reader
    /// ended without saying why).
    #[error("{0}")]
    Worker(String),
    /// Table `table` changed shape in source transaction `until`, which had already
    /// handed the open batch changes, and the sink changes tables only between batches
    /// ([`ferry_core::Sink::needs_own_batch`]): the next attempt replays from the
    /// checkpoint with every transaction up to `until` in a batch of its own.
    #[error("table {table} changed shape inside source transaction {until}, which the open batch holds in part")]
    Isolate {
        table: TableId,
        until: Box<Position>,
    },
    /// Alone in its batch, a source transaction wrote `table` and then changed its shape:
    /// the sink cannot change the table inside the batch, and committing the rows before
    /// the change would commit part of a transaction.
    #[error(
        "table {table} changed shape in the middle of source transaction {position}, after \
         that transaction had written it; the sink changes a table only between batches (its \
         DDL commits implicitly: MariaDB/MySQL), so applying the transaction would commit part \
         of it, and Ferry stops rather than split it"
    )]
    ReshapeInTransaction {
        table: TableId,
        position: Box<Position>,
    },
}

impl RunError {
    fn class(&self) -> ErrorClass {
        match self {
            RunError::Source(e) => e.class,
            RunError::Worker(_) | RunError::Isolate { .. } => ErrorClass::Transient,
            RunError::Sink(e) | RunError::Apply { source: e, .. } => e.class(),
            RunError::Meta(_)
            | RunError::SlotLost { .. }
            | RunError::RenamedOut { .. }
            | RunError::Swapped { .. }
            | RunError::RecreatedUncopied { .. }
            | RunError::ReshapeInTransaction { .. } => ErrorClass::Definite,
        }
    }

    /// The error and its causes on one line (no secrets: URIs are always masked).
    fn chain(&self) -> String {
        ferry_core::error_chain(self)
    }
}

/// What a failed changefeed's `last_error` ends with.
fn resume_hint(config: &ChangefeedConfig) -> String {
    format!(
        "fix the cause, then resume the changefeed (`ferry changefeed resume {id}` or \
         POST /api/v2/changefeeds/{id}/resume?namespace={ns})",
        id = config.id,
        ns = config.namespace
    )
}

/// What a changefeed whose slot was lost ends with: resuming cannot bring the changes back.
fn slot_lost_hint(config: &ChangefeedConfig) -> String {
    format!(
        "re-sync: delete the changefeed and create it again (`ferry changefeed delete {id}`, \
         then `ferry changefeed create`), which copies the tables anew; resuming cannot \
         recover the lost changes. To keep a slot from being lost, raise the source's \
         max_slot_wal_keep_size or watch ferry_source_retained_bytes",
        id = config.id
    )
}

pub(crate) struct Runner {
    pub(crate) config: ChangefeedConfig,
    pub(crate) meta: Arc<MetaStore>,
    pub(crate) status: StatusCell,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) retry: RetryPolicy,
    /// See [`crate::options::EngineOptions::replication_timeout`].
    pub(crate) replication_timeout: Duration,
    pub(crate) metrics: FeedMetrics,
    /// This server's id (with the changefeed's key, the owner of its target tables).
    pub(crate) server_id: String,
    /// Every connector, by URI scheme.
    pub(crate) connectors: Arc<dyn Connectors>,
    /// The source database's identity, read by each attempt: its sinks refuse to connect
    /// to the same database.
    pub(crate) source_identity: Option<ServerIdentity>,
    /// Commit every source transaction up to here in a batch of its own, its changes in
    /// source order: set after the target refused a batch, so the next attempt applies
    /// what order-sensitive constraints refused merged, or names the transaction refused.
    pub(crate) isolate_until: Option<Position>,
    /// Repairs a diff hands over, applied between source transactions.
    pub(crate) repairs: tokio::sync::mpsc::Receiver<repair::RepairRequest>,
}

impl Runner {
    /// Runs until stopped, failed or finished.
    pub(crate) async fn run(mut self) {
        let key = self.config.key();
        let mut backoff = Backoff::new(self.retry);
        let mut stop = self.stop.clone();
        loop {
            if *stop.borrow() {
                return;
            }
            let attempt_started = Instant::now();
            let result = tokio::select! {
                // A panic (a bug in the engine or a connector) fails the attempt like a
                // crashed snapshot worker, instead of ending the task with the changefeed
                // still shown `running`. The panic's text goes to the log only.
                result = AssertUnwindSafe(self.run_once()).catch_unwind() => {
                    result.unwrap_or_else(|_| Err(RunError::Worker(
                        "the changefeed's task crashed (a bug; the server log has the details)"
                            .into(),
                    )))
                }
                _ = stop.changed() => return,
            };
            if *stop.borrow() {
                return;
            }
            let err = match result {
                Ok(StreamEnd::Stopped) => return,
                Ok(StreamEnd::NewTable | StreamEnd::Recreated) => continue,
                Ok(StreamEnd::Finished) => {
                    info!(changefeed = %key, "changefeed finished");
                    // The target is complete: its sequences and foreign keys too, before
                    // anyone writes it.
                    if let Err(e) =
                        crate::sequences::sync(self.connectors.as_ref(), &self.config).await
                    {
                        warn!(changefeed = %key, error = %e, "could not sync the target's sequences; run sync-sequences");
                    }
                    if let Err(e) =
                        crate::foreign_keys::create(self.connectors.as_ref(), &self.config).await
                    {
                        warn!(changefeed = %key, error = %e, "could not create the target's foreign keys; run create-foreign-keys");
                    }
                    self.settle(Event::Done, None);
                    if !self.config.snapshot_only {
                        self.drop_slot().await;
                    }
                    return;
                }
                Err(err) => err,
            };
            if let RunError::Isolate { table, until } = &err {
                // Not a failure: the sink follows the table between two batches once the
                // transaction is alone in its own.
                info!(changefeed = %key, table = %table, until = %until, "a table changed shape inside a source transaction the batch held in part; replaying it in a batch of its own");
                self.isolate_until = Some(Position::clone(until));
                continue;
            }
            if let RunError::Apply {
                last_commit: Some(last),
                ..
            } = &err
            {
                // Once per refused batch: replayed one source transaction per batch, each
                // change in source order. A batch merged per key can trip a constraint the
                // source met change by change (rows trading a UNIQUE value); the replay
                // cannot, and when the target still refuses, it names the transaction.
                if err.class() == ErrorClass::Definite
                    && self
                        .isolate_until
                        .as_ref()
                        .is_none_or(|until| !until.covers(last))
                {
                    info!(changefeed = %key, until = %last, error = %err.chain(), "target refused a batch; replaying it one source transaction per batch, in source order");
                    self.isolate_until = Some(Position::clone(last));
                    continue;
                }
            }
            if let Some(table) = self.parkable(&err) {
                // The target refuses this table alone: it waits, parked, for an operator;
                // the others go on (the transaction held nothing else).
                let message = err.chain();
                warn!(changefeed = %key, table = %table, error = %message, "target refused a table's changes; parked it, the other tables go on");
                if let Err(e) = self.park(&table, &message) {
                    warn!(changefeed = %key, error = %ferry_core::error_chain(&e), "could not park the table");
                } else {
                    self.isolate_until = None;
                    continue;
                }
            }
            let message = err.chain();
            // Not caught up while nothing is read: the lag grows from the checkpoint's time
            // until a new attempt applies or confirms something again.
            self.status.update(|s| s.caught_up = false);
            if err.class() == ErrorClass::Definite {
                warn!(changefeed = %key, error = %message, "changefeed failed");
                self.metrics.error("definite");
                // One refused source transaction: named, so `skip` can leave it out.
                let position = match &err {
                    RunError::Apply {
                        transactions: 1,
                        last_commit,
                        ..
                    } => last_commit.as_deref().cloned(),
                    _ => None,
                };
                let hint = match (&err, &position) {
                    (RunError::SlotLost { .. }, _) => slot_lost_hint(&self.config),
                    (RunError::ReshapeInTransaction { table, .. }, _) => {
                        reshape::hint(&self.config, table)
                    }
                    (_, Some(position)) => format!(
                        "{}; or leave that one transaction out with `ferry changefeed skip {} \
                         {position}` (POST /api/v2/changefeeds/{}/skip)",
                        resume_hint(&self.config),
                        self.config.id,
                        self.config.id
                    ),
                    _ => resume_hint(&self.config),
                };
                self.status.update(|s| s.last_error_position = position);
                self.settle(Event::Definite, Some(format!("{message}. Hint: {hint}")));
                return;
            }
            self.metrics.error("transient");
            match backoff.on_failure(attempt_started, Instant::now()) {
                Decision::Retry { delay, attempt } => {
                    let delay_text = humantime::format_duration(delay);
                    warn!(changefeed = %key, error = %message, attempt, retry_in = %delay_text, "changefeed error, retrying");
                    self.metrics.retry();
                    self.status.update(|s| {
                        s.state = on_event(s.state, Event::Transient);
                        s.last_warning = Some(Timed {
                            message: format!("{message} (retry {attempt} in {delay_text})"),
                            at_us: now_us(),
                        });
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return,
                    }
                }
                Decision::GiveUp { retried_for } => {
                    // Whole seconds: the limit is configured in seconds or more.
                    let retried_for = Duration::from_secs(retried_for.as_secs());
                    let text = format!(
                        "gave up after retrying for {}: {message}. Hint: {}",
                        humantime::format_duration(retried_for),
                        resume_hint(&self.config)
                    );
                    warn!(changefeed = %key, error = %message, "changefeed failed: retries exhausted");
                    self.settle(Event::Definite, Some(text));
                    return;
                }
            }
        }
    }

    /// Records how the task ended (failed or finished) in the status and the store.
    fn settle(&self, event: Event, error: Option<String>) {
        let key = self.config.key();
        let state = self.status.update(|s| {
            s.state = on_event(s.state, event);
            if let Some(message) = error {
                s.last_error = Some(Timed {
                    message,
                    at_us: now_us(),
                });
            }
            s.state
        });
        let saved = LifecycleDoc::load(&self.meta, &key).and_then(|mut doc| {
            doc.state = state;
            doc.capture(&self.status);
            doc.save(&self.meta, &key)
        });
        if let Err(e) = saved {
            warn!(changefeed = %key, error = %ferry_core::error_chain(&e), "could not store the changefeed state");
        }
    }

    /// An attempt is copying or streaming again: `error` becomes `running`.
    fn progressing(&self) {
        self.status
            .update(|s| s.state = on_event(s.state, Event::Progressing));
    }

    /// A finished changefeed streams no more: release its place in the source's log, so
    /// the source keeps nothing for it.
    async fn drop_slot(&self) {
        let key = self.config.key();
        let released = async {
            let connector = self.connectors.source(&self.config.source_uri)?;
            connector.release(&self.config.source_uri, &key).await
        };
        if let Err(e) = released.await {
            warn!(changefeed = %key, error = %e.chain(), "could not drop the finished changefeed's slot");
        }
    }

    /// Connects a sink for this changefeed.
    pub(super) async fn connect_sink(&self) -> Result<Box<dyn Sink>, SinkError> {
        let uri = &self.config.sink_uri;
        self.connectors
            .sink(uri)
            .connect(uri, &self.config.key(), self.target_policy())
            .await
    }

    async fn run_once(&mut self) -> Result<StreamEnd, RunError> {
        let key = self.config.key();
        let uri = &self.config.source_uri;
        let connector = self.connectors.source(uri)?;
        let options = SourceOptions {
            replication_timeout: self.replication_timeout,
            partitions: self.config.options.partitions,
        };
        let mut source = connector.open(uri, &key, &options).await?;
        self.source_identity = source.identity().await?;
        let mut state: RuntimeState = self
            .meta
            .get(Collection::ChangefeedState, &key)?
            .unwrap_or_default();
        if state.phase == Some(Phase::Streaming) {
            // Before the target is even reached: a lost slot is definite whatever else fails.
            self.ensure_stream(source.as_mut()).await?;
        }
        let mut sink = self.connect_sink().await?;
        let selected = source.select_tables(&self.config.filter()).await?;
        let warnings = source.table_warnings(&selected);
        self.status.update(|s| s.warnings = warnings);
        if self.config.snapshot_only {
            self.status.update(|s| s.phase = Phase::Snapshot);
            if state.phase != Some(Phase::Streaming) {
                self.snapshot(source.as_mut(), sink.as_mut(), state, &selected)
                    .await?;
            }
            return Ok(StreamEnd::Finished);
        }
        if state.phase == Some(Phase::Streaming) {
            self.status.update(|s| s.phase = Phase::Streaming);
            let since = source.current_position().await?;
            let ids: Vec<u32> = selected.iter().map(|t| t.source_id).collect();
            let gone = tables::unselected_ids(&state, &ids);
            self.check_renamed_out(source.as_mut(), &gone).await?;
            let selected_ids = source_ids(&selected);
            Self::check_swapped(&state, &selected_ids, source.renames_in_order())?;
            for table in tables::created_again(&mut state, &selected_ids) {
                if !self.config.copies() {
                    return Err(RunError::RecreatedUncopied { table });
                }
                tables::note(&mut state, tables::TableNote::Recreated(&table));
            }
            let ids_identify = source.ids_identify_tables();
            let recreated =
                tables::sort_gone(&mut state, &gone, &selected_ids, &since, ids_identify);
            state.recreated.extend(recreated);
            let wanted = tables::track_renames(&mut state, &selected_ids);
            let resync = tables::take_resync(&mut state);
            if !resync.is_empty() {
                info!(changefeed = %key, tables = ?resync.iter().map(ToString::to_string).collect::<Vec<_>>(), "re-syncing tables: copying them again");
            }
            for table in std::mem::take(&mut state.recreated) {
                self.status.update(|s| {
                    s.warnings.push(format!(
                        "table {table} was dropped and created again on the source: its \
                         target table held the dropped table's rows, which a copy of the new \
                         table replaces"
                    ))
                });
            }
            let changed = tables::reconcile(&mut state, &wanted, &since);
            if !self.config.copies() {
                // Nothing to copy: added tables stream from when they were added.
                for added in &mut state.added {
                    added.plan.chunks.clear();
                }
            }
            if !changed.is_empty() {
                let list = |v: &[TableId]| {
                    v.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                info!(changefeed = %key, added = %list(&changed.added), removed = %list(&changed.removed), "tables changed");
                // Tables no longer written: another changefeed may claim them. A table the
                // rules still select was dropped on the source, and its last changes are
                // still to be written: it is released once the stream is past its drop.
                let filter = self.config.filter();
                let released: Vec<TableId> = changed
                    .removed
                    .iter()
                    .filter(|t| {
                        !(filter.selects(t, &[]) && state.dropped.iter().any(|d| &d.table == *t))
                    })
                    .cloned()
                    .collect();
                sink.release_tables(&released).await?;
                if !changed.removed.is_empty() {
                    let removed = list(&changed.removed);
                    self.status.update(|s| {
                        s.warnings.push(format!(
                            "tables no longer replicated (dropped on the source, or excluded \
                             by the rules): {removed}; their target tables are kept and get no \
                             further changes"
                        ))
                    });
                }
            }
            self.meta.put(Collection::ChangefeedState, &key, &state)?;
            let upgraded = source.prepare(&selected).await?;
            let newly: Vec<TableId> = upgraded
                .into_iter()
                .filter(|t| !state.divergent.contains(t))
                .collect();
            if !newly.is_empty() {
                warn!(changefeed = %key, tables = ?newly.iter().map(ToString::to_string).collect::<Vec<_>>(), "tables streamed insert-only now replicate every operation: marked divergent");
                state.divergent.extend(newly);
                self.meta.put(Collection::ChangefeedState, &key, &state)?;
            }
            self.note_divergent(&state.divergent);
            self.progressing();
            self.copy_added(source.as_mut(), sink.as_mut(), &state, &selected)
                .await?;
        } else {
            self.status.update(|s| s.phase = Phase::Snapshot);
            self.snapshot(source.as_mut(), sink.as_mut(), state, &selected)
                .await?;
            state = self
                .meta
                .get(Collection::ChangefeedState, &key)?
                .unwrap_or_default();
            tables::track_renames(&mut state, &source_ids(&selected));
            self.meta.put(Collection::ChangefeedState, &key, &state)?;
        }
        self.status.update(|s| s.phase = Phase::Streaming);
        self.stream(connector.as_ref(), source, sink, &state).await
    }

    /// How this changefeed's sinks treat target tables.
    pub(super) fn target_policy(&self) -> TargetPolicy {
        TargetPolicy {
            server_id: self.server_id.clone(),
            existing_target: self.config.existing_target(),
            source: self.source_identity.clone(),
            ddl: self.config.options.ddl,
            chunk_ledger: Some(crate::ledger::ledger(&self.meta, &self.config.key())),
        }
    }
}
