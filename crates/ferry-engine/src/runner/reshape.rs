//! A table's new shape while streaming. The stream announces it (`SourceEvent::Schema`)
//! before the table's first change at that shape, and the sink follows it
//! ([`ferry_core::Sink::ensure_table`]) in the open batch, unless the sink changes tables
//! only between batches ([`ferry_core::Sink::needs_own_batch`]: MariaDB's DDL commits
//! implicitly). Then:
//!
//! ```text
//! batch: T1 T2 | T3 announces t's shape ─► commit T1 T2 ─► sink changes t ─► T3 …
//! T3 handed the batch changes already   ─► RunError::Isolate: replay from the checkpoint,
//!                                           each transaction up to T3 in its own batch
//! T3 alone wrote t, then changed it      ─► RunError::ReshapeInTransaction (definite)
//! ```
//!
//! A crash between the sink's change and the next commit re-delivers T3; the sink finds
//! its change done. A shape announced while the table's changes are still in its copy
//! (`skip_before`: a table added or re-synced) is handed over with the table's first
//! change applied, not before: the copy shaped the table as it was later, and an older
//! shape would undo that.

use std::sync::Arc;

use ferry_core::{Position, TableId, TableSchema};

use super::apply::{Applier, Batch, Cursor};
use super::RunError;
use crate::config::ChangefeedConfig;

impl Applier {
    /// Hands the sink a table's shape: in the open batch, or after ending it when the sink
    /// changes tables only between batches ([`ferry_core::Sink::needs_own_batch`]).
    pub(super) async fn follow_shape(
        &mut self,
        schema: &Arc<TableSchema>,
        batch: &mut Batch,
        cursor: &mut Cursor,
    ) -> Result<(), RunError> {
        if self.sink.needs_own_batch(schema).await? {
            self.end_batch_before(&schema.id, batch, cursor).await?;
        }
        self.sink.ensure_table(schema).await?;
        if self.ahead.is_some() {
            self.shaped.insert(schema.id.clone(), schema.clone());
        }
        Ok(())
    }

    /// Whether `table`'s changes committed at `commit` are in its copy already (taken
    /// later, at `skip_before`).
    pub(super) fn copied_later(&self, table: &TableId, commit: Option<&Position>) -> bool {
        self.skip_before
            .get(table)
            .is_some_and(|snapshot| commit.is_some_and(|c| !c.covers(snapshot)))
    }

    /// Ends the open batch before the current source transaction, so the sink can change
    /// `table` between two batches ([`ferry_core::Sink::needs_own_batch`]): the batch's
    /// earlier transactions commit with their checkpoint, and the current one begins a new
    /// batch. When the current transaction already handed the sink something, the batch
    /// cannot end before it: the attempt ends, to replay from the checkpoint with that
    /// transaction alone in its batch ([`RunError::Isolate`]); alone already, it wrote
    /// before the table changed, and no batch boundary can help
    /// ([`RunError::ReshapeInTransaction`]).
    async fn end_batch_before(
        &mut self,
        table: &TableId,
        batch: &mut Batch,
        cursor: &mut Cursor,
    ) -> Result<(), RunError> {
        let current = cursor
            .in_transaction
            .then(|| cursor.current.clone())
            .flatten();
        if cursor.handed == 0 || current.is_none() {
            self.commit(batch).await?;
            if let Some((xid, tx)) = current {
                batch.trail.begin(xid, &tx.commit);
                batch.opened = Some(tokio::time::Instant::now());
                self.sink.begin_transaction(&tx).await?;
            }
            tracing::info!(table = %table, "batch ended before a table's change of shape");
            return Ok(());
        }
        let (_, tx) = current.expect("checked above");
        let alone = self
            .isolate_until
            .as_ref()
            .is_some_and(|until| until.covers(&tx.commit));
        if alone {
            return Err(RunError::ReshapeInTransaction {
                table: table.clone(),
                position: Box::new(tx.commit),
            });
        }
        Err(RunError::Isolate {
            table: table.clone(),
            until: Box::new(tx.commit),
        })
    }
}

/// What a changefeed ends with when a source transaction changed a table's shape after
/// writing it, into a sink that changes tables only between batches: the table is copied
/// again, and the stream leaves out its changes made before the copy (that transaction's).
pub(super) fn hint(config: &ChangefeedConfig, table: &TableId) -> String {
    format!(
        "re-copy the table: `ferry changefeed table resync {id} {table}` (POST \
         /api/v2/changefeeds/{id}/tables/{table}/resync?namespace={ns}), then resume; it is \
         copied again at its new shape and the stream applies only what follows the copy",
        id = config.id,
        ns = config.namespace
    )
}
