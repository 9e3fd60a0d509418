//! Ending batches: commit (or seal) a batch, then, once it is durable, save and confirm its
//! checkpoint and publish what it applied.
//!
//! A sink may return a batch still settling from
//! [`Sink::seal_batch`](ferry_core::Sink::seal_batch): a stream sink's destination has not
//! acknowledged every event yet, a database sink's COMMIT (the checkpoint is in its
//! transaction) is not answered yet. The applier then fills the next batch while the
//! answers come, and finishes sealed batches strictly in order:
//!
//! ```text
//! batch n ─ seal ─► settling ─────────────► durable ─► save checkpoint n ─► confirm n
//! batch n+1 ──────── fill ── seal ─► settling ──────────────► durable ─► …
//! ```
//!
//! A checkpoint is saved only once its batch and every batch before it are durable, so a
//! crash resends what may be missing (with the same event ids), never skips it. At most
//! [`MAX_SEALED`] batches settle at once: past it, the oldest is waited for. A sink whose
//! checkpoint commits with its batch settles one at a time: its next batch is sealed only
//! once the one before is durable, since that one's checkpoint would otherwise cover a
//! batch whose COMMIT failed.

use std::collections::VecDeque;

use ferry_core::{Position, Settle, SinkError, TableId};

use super::apply::{named, Applier, Batch};
use super::trail::Trail;
use super::RunError;
use crate::metrics::RowCounts;

/// Why 4: enough that a destination's acknowledgement round trip overlaps the next batches'
/// sending; few enough that what a crash resends stays small.
pub(super) const MAX_SEALED: usize = 4;

/// A batch the sink sealed, waiting to be durable.
pub(super) struct Sealed {
    /// What makes it durable, running on a task of its own (`None`: durable already).
    settle: Option<Settling>,
    end: Position,
    commit_time_us: i64,
    rows: u64,
    transactions: u64,
    counts: RowCounts,
    renamed: Vec<(TableId, TableId)>,
    /// A keepalive position received after the batch, confirmed with it.
    idle: Option<(Position, i64)>,
    /// What the batch holds, to name it when it fails to settle.
    trail: Trail,
}

/// A settle future on its own task, so the destination's acknowledgements are taken in
/// while the applier waits on the sink for the next batch; aborted when dropped (a run that
/// ends drops what it could not save).
struct Settling(tokio::task::JoinHandle<Result<(), SinkError>>);

impl Settling {
    fn spawn(settle: Settle) -> Self {
        Settling(tokio::spawn(settle))
    }

    async fn wait(&mut self) -> Result<(), RunError> {
        match (&mut self.0).await {
            Ok(settled) => settled.map_err(RunError::from),
            Err(e) => Err(RunError::Worker(format!(
                "waiting for the destination to acknowledge a batch failed: {e}"
            ))),
        }
    }
}

impl Drop for Settling {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sealed batches, oldest first.
#[derive(Default)]
pub(super) struct SealedQueue(VecDeque<Sealed>);

impl SealedQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Waits until every sealed batch is answered, whatever the answer, and forgets them:
    /// their checkpoints are neither saved nor confirmed.
    pub(super) async fn answered(&mut self) {
        for sealed in &mut self.0 {
            // A finished one may have been awaited already (its failure ended the run).
            if let Some(settling) = sealed.settle.as_mut().filter(|s| !s.0.is_finished()) {
                let _ = settling.wait().await;
            }
        }
        self.0.clear();
    }

    /// Whether the oldest sealed batch has its answer (to be taken by [`Self::oldest_settled`]).
    pub(super) fn oldest_answered(&self) -> bool {
        self.0.front().is_some_and(|oldest| {
            oldest
                .settle
                .as_ref()
                .is_none_or(|settling| settling.0.is_finished())
        })
    }

    /// Resolves once the oldest sealed batch is durable (pending while there is none).
    pub(super) async fn oldest_settled(&mut self) -> Result<(), RunError> {
        match self.0.front_mut() {
            Some(Sealed {
                settle: Some(settling),
                trail,
                ..
            }) => settling.wait().await.map_err(|e| named(e, trail)),
            Some(_) => Ok(()),
            None => std::future::pending().await,
        }
    }
}

impl Applier {
    /// Ends the open batch: commits it with its checkpoint (or seals it), then finishes
    /// every sealed batch that is durable, waiting for the oldest while more than
    /// [`MAX_SEALED`] settle.
    pub(super) async fn commit(&mut self, batch: &mut Batch) -> Result<(), RunError> {
        let Some((end, commit_time_us)) = batch.end.clone() else {
            return Ok(());
        };
        if self.save_checkpoint.is_none() {
            // The checkpoint is in the sink's transaction (see the module docs).
            self.settle_all().await?;
        }
        let settle = self.sink.seal_batch(end.clone()).await?;
        self.last_commit = tokio::time::Instant::now();
        let parts = batch.take();
        self.sealed.0.push_back(Sealed {
            settle: settle.map(Settling::spawn),
            end,
            commit_time_us,
            rows: parts.rows,
            transactions: parts.transactions,
            counts: parts.counts,
            renamed: parts.renamed,
            idle: parts.idle,
            trail: parts.trail,
        });
        while !self.sealed.is_empty() {
            if !self.sealed.oldest_answered() && self.sealed.0.len() <= MAX_SEALED {
                break;
            }
            self.sealed.oldest_settled().await?;
            self.finish_oldest()?;
        }
        Ok(())
    }

    /// Ends the open batch and waits until it and every batch before it are durable and
    /// finished: before anything that must see the target as the stream left it.
    pub(super) async fn commit_durable(&mut self, batch: &mut Batch) -> Result<(), RunError> {
        self.commit(batch).await?;
        self.settle_all().await
    }

    /// A transaction another session of the sink made durable with checkpoint `end` (see
    /// [`super::apply::ahead`]), after every batch before it: finished as a batch.
    pub(super) fn finished_elsewhere(
        &mut self,
        end: Position,
        commit_time_us: i64,
        rows: u64,
        counts: &mut RowCounts,
    ) -> Result<(), RunError> {
        debug_assert!(
            self.sealed.is_empty(),
            "a database sink's batches are durable"
        );
        self.sealed.0.push_back(Sealed {
            settle: None,
            end,
            commit_time_us,
            rows,
            transactions: 1,
            counts: std::mem::take(counts),
            renamed: Vec::new(),
            idle: None,
            trail: Trail::default(),
        });
        self.finish_oldest()
    }

    /// Waits until every sealed batch is durable and finished: before the stream ends at
    /// its target, before confirming a keepalive position, before a repair.
    pub(super) async fn settle_all(&mut self) -> Result<(), RunError> {
        while !self.sealed.is_empty() {
            self.sealed.oldest_settled().await?;
            self.finish_oldest()?;
        }
        Ok(())
    }

    /// The oldest sealed batch is durable: saves its checkpoint, then confirms it to the
    /// source, then records what it applied.
    pub(super) fn finish_oldest(&mut self) -> Result<(), RunError> {
        let Some(mut sealed) = self.sealed.0.pop_front() else {
            return Ok(());
        };
        let end = &sealed.end;
        for (from, to) in std::mem::take(&mut sealed.renamed) {
            // Durable on the target, and recorded before a checkpoint Ferry saves itself
            // passes the rename: a crash in between reads the rename again (a plain rename
            // then renames nothing again; a swap read again is not covered).
            (self.on_renamed)(&from, &to)?;
        }
        // Durable, then saved, then acknowledged: never reorder.
        if let Some(save) = &self.save_checkpoint {
            save(end)?;
        }
        if self
            .skip
            .as_ref()
            .is_some_and(|(s, _)| end.covers(&s.position))
        {
            let (skip, forget) = self.skip.take().expect("checked above");
            tracing::info!(position = %skip.position, changes = self.skipped_changes, "source transaction skipped");
            forget();
        }
        self.confirm(end);
        if let Some(first) = self.on_first_commit.take() {
            first();
        }
        let caught_up = self.events.is_empty() && self.sealed.is_empty();
        let per_table = sealed.counts.per_table();
        self.status.update(|s| {
            for (table, rows) in &per_table {
                let name = table.to_string();
                if let Some(t) = s.tables.iter_mut().find(|t| t.table == name) {
                    t.rows_applied += rows;
                }
            }
            if s.checkpoint.as_ref().is_none_or(|c| !c.covers(end)) {
                s.checkpoint = Some(end.clone());
            }
            s.checkpoint_time_us = Some(sealed.commit_time_us);
            if s.last_error_position
                .as_ref()
                .is_some_and(|p| end.covers(p))
            {
                s.last_error_position = None;
            }
            s.rows_applied += sealed.rows;
            s.transactions_applied += sealed.transactions;
            s.caught_up = caught_up;
        });
        if let Some((position, server_time_us)) = sealed.idle.take().filter(|(p, _)| !end.covers(p))
        {
            self.confirm_idle(position, server_time_us);
        }
        self.metrics.transactions(sealed.transactions);
        self.counts.absorb(&mut sealed.counts, &self.metrics);
        Ok(())
    }
}
