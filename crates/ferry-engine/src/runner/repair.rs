//! Repairs a diff found, applied by the changefeed's own applier between source
//! transactions, so they never race the stream.
//!
//! The applier and the diff meet in three steps:
//! 1. The diff asks; the applier commits its open batch and holds still: its checkpoint
//!    `C` is what the target holds, and nothing is applied until the repair is done.
//! 2. The diff reads the source's current rows for the keys to repair in a snapshot at
//!    `P` (taken now, so `P` covers `C`) and hands them over as full-row upserts and
//!    deletes by key.
//! 3. The applier writes them in one target transaction, committed with `C` unchanged,
//!    and streams on. The source's changes after `C` are applied again; each is a full-row
//!    upsert or a delete by key, so every repaired key ends as the source has it at `P` or
//!    later: the target converges.
//!
//! Were the target past `P` (it cannot be while the applier holds, but the check costs
//! nothing), the rows would move keys back in time: the applier answers
//! [`RepairAnswer::Stale`] instead and the diff asks again. The stream waits while the
//! diff reads the rows (at most [`HOLD_LIMIT`]); its lag grows by that much.
//!
//! A repair the target refuses for good (a constraint) is rolled back and reported to the
//! diff; the changefeed streams on. A broken connection ends the attempt, as any batch's.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::{ErrorClass, Position, RowChange, TableSchema};
use tokio::sync::{mpsc, oneshot};

use super::apply::{Applier, Batch};
use super::RunError;

/// How many repair requests may wait for the applier.
pub(crate) const QUEUE: usize = 4;

/// Longest the applier holds still for a diff to read the rows it repairs.
const HOLD_LIMIT: Duration = Duration::from_secs(60);

/// A diff's request to repair rows: the applier says when it holds still, then takes the
/// rows.
pub(crate) struct RepairRequest {
    /// Told once the applier's open batch is committed and it waits for the rows.
    pub(crate) holding: oneshot::Sender<()>,
    /// The rows, read after `holding`.
    pub(crate) rows: oneshot::Receiver<RepairRows>,
}

/// Rows a diff asks the applier to write.
pub(crate) struct RepairRows {
    /// The position of the source snapshot the rows were read in.
    pub(crate) snapshot: Position,
    /// The table's shape the rows follow.
    pub(crate) schema: Arc<TableSchema>,
    /// Full-row inserts (upserts by key) and deletes by key.
    pub(crate) changes: Vec<RowChange>,
    /// Where the applier answers.
    pub(crate) answer: oneshot::Sender<RepairAnswer>,
}

/// What became of a [`RepairRequest`].
#[derive(Debug)]
pub(crate) enum RepairAnswer {
    /// Written and committed.
    Applied,
    /// The target is past the rows' snapshot: read them again.
    Stale,
    /// The target refused them (rolled back); why.
    Failed(String),
}

/// Where a diff sends repairs for a running changefeed.
pub(crate) type RepairSender = mpsc::Sender<RepairRequest>;

impl Applier {
    /// Applies one repair between source transactions (see the module docs).
    pub(super) async fn repair(
        &mut self,
        batch: &mut Batch,
        request: RepairRequest,
    ) -> Result<(), RunError> {
        self.commit_durable(batch).await?;
        if request.holding.send(()).is_err() {
            return Ok(());
        }
        // A diff that gave up (stopped, failed to read) drops its sender: stream on.
        let Ok(Ok(rows)) = tokio::time::timeout(HOLD_LIMIT, request.rows).await else {
            tracing::warn!("a diff asked for a repair and sent no rows; streaming on");
            return Ok(());
        };
        let RepairRows {
            snapshot,
            schema,
            changes,
            answer,
        } = rows;
        let checkpoint = match self.status.checkpoint() {
            Some(c) if snapshot.covers(&c) => c,
            _ => {
                let _ = answer.send(RepairAnswer::Stale);
                return Ok(());
            }
        };
        let written = async {
            self.sink.ensure_table(&schema).await?;
            for change in changes {
                self.sink.apply(change).await?;
            }
            self.sink.commit_batch(checkpoint.clone()).await
        };
        match written.await {
            Ok(()) => {
                tracing::info!(table = %schema.id, at = %checkpoint, "diff repair applied");
                let _ = answer.send(RepairAnswer::Applied);
                Ok(())
            }
            Err(e) => {
                self.sink.abort_batch().await;
                let _ = answer.send(RepairAnswer::Failed(ferry_core::error_chain(&e)));
                if e.class() == ErrorClass::Transient {
                    return Err(e.into());
                }
                Ok(())
            }
        }
    }
}
