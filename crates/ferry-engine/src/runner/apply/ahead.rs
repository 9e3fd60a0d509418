//! Applying a transaction ahead of its commit ([`ferry_core::ahead`]), on a second session
//! of the sink, so a large transaction's rows are written while the source still produces
//! them and its commit leaves only the last ones.
//!
//! One transaction is held at a time; the changes of any other go unused (it comes whole at
//! its commit). Ferry's two sessions do not wait on each other:
//!
//! - Before the second session writes, the main session commits what it holds (and, before
//!   the second session's first write to a table, does what it kept for its next commit).
//!   The rows the held transaction writes next were changed, if at all, by transactions
//!   committed on the source before it wrote them: those are committed on the target by
//!   then.
//! - The main session then writes only rows of transactions that commit before the held one
//!   and run beside it on the source, where the held transaction's row locks kept them off
//!   its rows.
//! - Anything of the main session's that changes a table (a new shape, a definition, a
//!   rename, a TRUNCATE, a repair) on a table the held transaction wrote drops the held
//!   transaction first: it comes whole at its commit.
//!
//! What Ferry does not control (another client's DDL queued behind the second session's
//! lock) can still hold the main session up; the sink's second session ends itself when left
//! idle inside its transaction for long ([`ferry_core::Sink::applies_ahead`]).
//!
//! At the held transaction's commit the main session commits everything before it, then
//! the second session commits it with its checkpoint: the target sees the source's commit
//! order, and a crash anywhere rolls the held transaction back, to be streamed again. A
//! failed commit ends the run: only the target's checkpoint, read by the next attempt, can
//! tell whether it happened.
//!
//! Anything unusual only costs the speed: a change the engine would not write the same way
//! ahead (a table still in its copy, a shape the main session did not follow, an update of
//! a keyless table, a skip or a target position set), a failure of the second session, or
//! the source's [`Ahead::Discard`], drops the held transaction, and it is applied at its
//! commit as any other.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_core::{Ahead, AheadReply, Position, RowChange, Sink, SinkError, SourceEvent};
use ferry_core::{TableId, TableSchema};
use futures::future::BoxFuture;

use super::{Applier, Batch, Cursor};
use crate::metrics::RowCounts;
use crate::runner::RunError;

/// Opens a second session of the changefeed's sink.
pub(crate) type OpenSink =
    Box<dyn Fn() -> BoxFuture<'static, Result<Box<dyn Sink>, SinkError>> + Send + Sync>;

/// The second session and the transaction it holds.
pub(crate) struct AheadApply {
    open: OpenSink,
    sink: Option<Box<dyn Sink>>,
    /// Tables the second session learned ([`Sink::adopt_table`]), at the shape it learned.
    adopted: HashMap<TableId, Arc<TableSchema>>,
    held: Option<Held>,
    /// Transactions whose changes go unused, until their commit or discard.
    passed: HashSet<u32>,
    /// The furthest position the stream reached (a commit's end, a keepalive's): a
    /// transaction still in progress commits after it.
    reached: Option<Position>,
}

/// The transaction the second session holds.
struct Held {
    xid: u32,
    /// The tables it wrote.
    tables: HashSet<TableId>,
    rows: u64,
    /// Value bytes of its changes, counted as read once it is applied.
    bytes: u64,
    counts: RowCounts,
}

impl AheadApply {
    pub(crate) fn new(open: OpenSink) -> Self {
        AheadApply {
            open,
            sink: None,
            adopted: HashMap::new(),
            held: None,
            passed: HashSet::new(),
            reached: None,
        }
    }

    /// Rolls the held transaction back, if any; its later changes go unused.
    async fn drop_held(&mut self, why: &str) {
        if let Some(held) = self.held.take() {
            tracing::info!(xid = held.xid, rows = held.rows, why, "source transaction no longer applied ahead of its commit; it is applied at its commit");
            self.passed.insert(held.xid);
            if let Some(sink) = &mut self.sink {
                sink.abort_batch().await;
            }
        }
    }

    /// Closes the second session after a failure (the next transaction connects anew).
    fn reset(&mut self) {
        self.sink = None;
        self.adopted.clear();
    }

    /// Whether the held transaction wrote `table`.
    fn wrote(&self, table: &TableId) -> bool {
        self.held.as_ref().is_some_and(|h| h.tables.contains(table))
    }
}

impl Applier {
    /// Drops the held transaction before the main session handles `event`, when the event
    /// may change a table the held transaction wrote (see the module docs).
    pub(super) async fn ahead_before(&mut self, event: &SourceEvent) {
        let Some(ahead) = &mut self.ahead else {
            return;
        };
        if let SourceEvent::Commit { end: p, .. } | SourceEvent::Idle { position: p, .. } = event {
            ahead.reached = Some(p.clone());
        }
        if ahead.held.is_none() {
            return;
        }
        let changes_table = match event {
            SourceEvent::Schema(schema) => {
                ahead.wrote(&schema.id) && !same_shape(self.shaped.get(&schema.id), schema)
            }
            SourceEvent::Definition { table, definition } => {
                self.follow_definitions
                    && ahead.wrote(table)
                    && self.defined.get(table) != Some(definition)
            }
            SourceEvent::Recreated { table, .. } | SourceEvent::Dropped { table } => {
                ahead.wrote(table)
            }
            SourceEvent::Renamed { from, schema } => ahead.wrote(from) || ahead.wrote(&schema.id),
            SourceEvent::Change(RowChange::Truncate { tables, .. }) => {
                tables.iter().any(|t| ahead.wrote(&t.id))
            }
            _ => false,
        };
        if changes_table {
            ahead
                .drop_held("the main session changes a table it wrote")
                .await;
        }
    }

    /// Drops the held transaction before a repair writes the target.
    pub(super) async fn ahead_before_repair(&mut self) {
        if let Some(ahead) = &mut self.ahead {
            ahead.drop_held("a repair writes the target").await;
        }
    }

    /// Rolls back the held transaction when the run ends.
    pub(super) async fn ahead_abort(&mut self) {
        if let Some(ahead) = &mut self.ahead {
            ahead.drop_held("the stream ends").await;
        }
    }

    pub(super) async fn on_ahead(
        &mut self,
        event: Ahead,
        batch: &mut Batch,
        cursor: &Cursor,
    ) -> Result<(), RunError> {
        match event {
            Ahead::Change { xid, change } => self.ahead_change(xid, change, batch, cursor).await,
            Ahead::Discard { xid } => {
                if let Some(ahead) = &mut self.ahead {
                    if ahead.held.as_ref().is_some_and(|h| h.xid == xid) {
                        ahead.drop_held("the source discarded it").await;
                    }
                    ahead.passed.remove(&xid);
                }
                Ok(())
            }
            Ahead::Commit {
                xid,
                commit,
                end,
                commit_time_us,
                reply,
            } => {
                self.ahead_commit(xid, commit, end, commit_time_us, reply, batch)
                    .await
            }
        }
    }

    /// Whether the changes of a transaction can be applied ahead at all in this run.
    fn ahead_allowed(&self) -> bool {
        self.skip.is_none()
            && self.isolate_until.is_none()
            && self.target.is_none()
            && self.save_checkpoint.is_none()
            && self.sink.applies_ahead()
    }

    async fn ahead_change(
        &mut self,
        xid: u32,
        change: RowChange,
        batch: &mut Batch,
        cursor: &Cursor,
    ) -> Result<(), RunError> {
        let allowed = !cursor.in_transaction && self.ahead_allowed();
        let Some(ahead) = &mut self.ahead else {
            return Ok(());
        };
        if ahead.passed.contains(&xid) {
            return Ok(());
        }
        match &ahead.held {
            Some(held) if held.xid != xid => {
                // One at a time: this one comes whole at its commit.
                ahead.passed.insert(xid);
                return Ok(());
            }
            Some(_) => {}
            None if allowed => {
                ahead.held = Some(Held {
                    xid,
                    tables: HashSet::new(),
                    rows: 0,
                    bytes: 0,
                    counts: RowCounts::default(),
                });
            }
            None => {
                ahead.passed.insert(xid);
                return Ok(());
            }
        }
        let table = match &change {
            RowChange::Insert { table, .. }
            | RowChange::Update { table, .. }
            | RowChange::Delete { table, .. } => table.clone(),
            RowChange::Truncate { .. } => {
                ahead.drop_held("it truncates").await;
                return Ok(());
            }
        };
        let id = &table.id;
        if self.excluded.contains(id) || self.held.contains(id) {
            // Left out at its commit too.
            return Ok(());
        }
        // Changes committed before a table's copy are left out; this one commits after
        // `reached`.
        let in_copy = self.skip_before.get(id).is_some_and(|snapshot| {
            ahead
                .reached
                .as_ref()
                .is_none_or(|reached| !reached.covers(snapshot))
        });
        let why = if in_copy || self.deferred_shapes.contains(id) {
            Some("it writes a table whose copy is more recent than the stream")
        } else if !same_shape(self.shaped.get(id), &table) {
            Some("it writes a table at a shape the main session did not follow")
        } else if table.key.is_empty() && !matches!(change, RowChange::Insert { .. }) {
            Some("it updates or deletes rows of a table without a key")
        } else {
            None
        };
        if let Some(why) = why {
            ahead.drop_held(why).await;
            return Ok(());
        }
        // The second session writes only once the main one holds nothing uncommitted, nor
        // keeps anything for its next commit that would lock the table.
        self.commit_durable(batch).await?;
        let first = self
            .ahead
            .as_ref()
            .and_then(|a| a.held.as_ref())
            .is_some_and(|h| !h.tables.contains(id));
        if first {
            self.sink.flush_deferred().await?;
        }
        let ahead = self.ahead.as_mut().expect("checked above");
        if let Err(e) = ahead.write(table, change).await {
            tracing::info!(error = %ferry_core::error_chain(&e), "the second session could not write ahead");
            ahead.drop_held("the second session failed").await;
            ahead.reset();
        }
        Ok(())
    }

    async fn ahead_commit(
        &mut self,
        xid: u32,
        commit: Position,
        end: Position,
        commit_time_us: i64,
        reply: AheadReply,
        batch: &mut Batch,
    ) -> Result<(), RunError> {
        let Some(ahead) = &mut self.ahead else {
            reply.answer(false);
            return Ok(());
        };
        ahead.passed.remove(&xid);
        if ahead.held.as_ref().is_none_or(|h| h.xid != xid) {
            reply.answer(false);
            return Ok(());
        }
        let written = ahead.held.as_ref().is_some_and(|h| h.rows > 0) && ahead.sink.is_some();
        if !written {
            // Nothing of it was written (its tables are left out): applied at its commit.
            ahead.drop_held("nothing of it was written").await;
            ahead.passed.remove(&xid);
            reply.answer(false);
            return Ok(());
        }
        // Everything committed before it first: the target sees the source's order.
        self.commit_durable(batch).await?;
        let ahead = self.ahead.as_mut().expect("checked above");
        let mut held = ahead.held.take().expect("checked above");
        let sink = ahead.sink.as_mut().expect("checked above");
        // A failure ends the run: whether a lost answer hid a commit only the target's
        // checkpoint can tell, and the next attempt reads it.
        sink.commit_batch(end.clone()).await?;
        tracing::debug!(xid, commit = %commit, rows = held.rows, "source transaction applied ahead of its commit");
        self.metrics.applied_ahead();
        self.metrics.bytes_read(held.bytes);
        self.last_commit = tokio::time::Instant::now();
        self.finished_elsewhere(end, commit_time_us, held.rows, &mut held.counts)?;
        reply.answer(true);
        Ok(())
    }
}

impl AheadApply {
    /// Writes `change` of the held transaction on the second session (connected, and the
    /// table learned, on first use).
    async fn write(&mut self, table: Arc<TableSchema>, change: RowChange) -> Result<(), SinkError> {
        let sink = match &mut self.sink {
            Some(sink) => sink,
            None => self.sink.insert((self.open)().await?),
        };
        if !same_shape(self.adopted.get(&table.id), &table) {
            self.adopted.remove(&table.id);
            sink.adopt_table(&table).await?;
            self.adopted.insert(table.id.clone(), table.clone());
        }
        let held = self
            .held
            .as_mut()
            .expect("a change is written for the held transaction");
        if !held.tables.contains(&table.id) {
            held.tables.insert(table.id.clone());
        }
        held.rows += 1;
        held.bytes += change.payload_bytes() as u64;
        held.counts.count(&change);
        sink.apply(change).await
    }
}

/// Whether `known` is `table`'s shape (the same announcement, mostly: compared by address
/// first, as this runs for every change).
fn same_shape(known: Option<&Arc<TableSchema>>, table: &Arc<TableSchema>) -> bool {
    known.is_some_and(|k| Arc::ptr_eq(k, table) || k == table)
}
