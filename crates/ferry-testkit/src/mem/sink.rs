//! The in-memory sink: a batch is held by its [`MemSink`] and reaches the target only at
//! `commit_batch`, together with the checkpoint; a snapshot chunk commits with its marker.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::{
    CheckpointStore, ChunkData, ErrorClass, FinishedChunk, Position, RowChange, Settle, Sink,
    SinkError, TableId, TableSchema,
};
use futures::StreamExt;

use super::{apply_change, key_of, CommittedBatch, MemDb, SinkFault, SinkStep};

/// One connection to the in-memory target, for changefeed `feed`. Dropping it discards
/// its open batch, as a closed connection rolls back.
pub struct MemSink {
    pub(super) db: MemDb,
    pub(super) feed: String,
    /// The open batch.
    pub(super) pending: Vec<Pending>,
    /// Acting as a stream: batches are durable this long after they are sealed, and the
    /// engine keeps the checkpoint ([`MemDb::settle_after`]).
    pub(super) settle_after: Option<Duration>,
    /// With `settle_after`: acting as a database sink that sends its COMMIT without waiting
    /// for the answer ([`MemDb::commit_settles_after`]).
    pub(super) commit_settles: bool,
    /// Whether the batch sealed last landed, once it settled.
    pub(super) settled: Option<tokio::sync::oneshot::Receiver<bool>>,
}

/// What the open batch holds.
pub(super) enum Pending {
    Change(RowChange),
    Rename { from: TableId, to: TableId },
}

fn injected(step: SinkStep, class: ErrorClass) -> SinkError {
    SinkError::Statement {
        what: format!("{step:?}"),
        class,
        source: format!("injected {class:?} failure").into(),
    }
}

impl MemSink {
    /// Does the armed fault of `step`, if any. `Ok(Some(class))`: commit, then fail.
    async fn disturb(&self, step: SinkStep) -> Result<Option<ErrorClass>, SinkError> {
        match self.db.take_sink_fault(step) {
            None => Ok(None),
            Some(SinkFault::Hang) => std::future::pending().await,
            Some(SinkFault::Panic) => panic!("injected panic at {step:?}"),
            Some(SinkFault::Fail(class)) => Err(injected(step, class)),
            Some(SinkFault::FailAfterCommit(class)) => Ok(Some(class)),
        }
    }

    /// Creates the target table when missing, or follows its new shape (at once, outside
    /// the batch, as MariaDB's DDL): recorded, and an anomaly when the sink changes tables
    /// only between batches and the open batch holds the table's changes.
    fn create_table(&self, schema: &Arc<TableSchema>) {
        let held = self.holds(&schema.id);
        let mut state = self.db.lock();
        let state = &mut *state;
        state.target.tables.entry(schema.id.clone()).or_default();
        let known = state
            .target
            .shapes
            .insert(schema.id.clone(), schema.clone());
        if known.is_some_and(|known| known.columns != schema.columns) {
            if state.reshape_between_batches && held {
                let anomaly = format!(
                    "{} reshaped while the open batch held its changes",
                    schema.id
                );
                state.target.anomalies.push(anomaly);
            }
            state.reshapes.push(schema.id.clone());
        }
    }

    /// Whether the open batch holds changes of `table`.
    fn holds(&self, table: &TableId) -> bool {
        self.pending.iter().any(|p| match p {
            Pending::Change(
                RowChange::Insert { table: t, .. }
                | RowChange::Update { table: t, .. }
                | RowChange::Delete { table: t, .. },
            ) => t.id == *table,
            Pending::Change(RowChange::Truncate { tables, .. }) => {
                tables.iter().any(|t| t.id == *table)
            }
            Pending::Rename { from, to } => from == table || to == table,
        })
    }
}

#[async_trait]
impl Sink for MemSink {
    fn checkpoint_store(&self) -> CheckpointStore {
        match self.settle_after {
            Some(_) if !self.commit_settles => CheckpointStore::External,
            _ => CheckpointStore::InTarget,
        }
    }

    async fn load_checkpoint(&mut self) -> Result<Option<Position>, SinkError> {
        Ok(self.db.target_checkpoint(&self.feed))
    }

    async fn ensure_table(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        self.create_table(schema);
        Ok(())
    }

    async fn needs_own_batch(&mut self, schema: &Arc<TableSchema>) -> Result<bool, SinkError> {
        let held = self.holds(&schema.id);
        let state = self.db.lock();
        let reshapes = (state.target.shapes.get(&schema.id))
            .is_some_and(|known| known.columns != schema.columns);
        Ok(state.reshape_between_batches && reshapes && held)
    }

    async fn apply(&mut self, change: RowChange) -> Result<(), SinkError> {
        if let Some(class) = self.disturb(SinkStep::Apply).await? {
            return Err(injected(SinkStep::Apply, class));
        }
        self.pending.push(Pending::Change(change));
        Ok(())
    }

    async fn commit_batch(&mut self, checkpoint: Position) -> Result<(), SinkError> {
        let fail_after = self.disturb(SinkStep::CommitBatch).await?;
        land(
            &self.db,
            &self.feed,
            std::mem::take(&mut self.pending),
            checkpoint,
        );
        match fail_after {
            Some(class) => Err(injected(SinkStep::CommitBatch, class)),
            None => Ok(()),
        }
    }

    async fn seal_batch(&mut self, checkpoint: Position) -> Result<Option<Settle>, SinkError> {
        let Some(delay) = self.settle_after else {
            return self.commit_batch(checkpoint).await.map(|()| None);
        };
        // The batch lands when it settled, after every batch sealed before it, and not at
        // all when one before it failed (as a stream's acknowledgements come in order).
        // A database sink's COMMIT lands on its own: the engine must not seal a batch
        // before the one before it is durable.
        let fault = self.db.take_sink_fault(SinkStep::CommitBatch);
        let (db, feed) = (self.db.clone(), self.feed.clone());
        let pending = std::mem::take(&mut self.pending);
        let mut before = self.settled.take();
        if self.commit_settles
            && before.take().is_some_and(|mut before| {
                before.try_recv() == Err(tokio::sync::oneshot::error::TryRecvError::Empty)
            })
        {
            let anomaly = "a batch was sealed while the one before it was settling";
            self.db.lock().target.anomalies.push(anomaly.into());
        }
        let (done, settled) = tokio::sync::oneshot::channel();
        self.settled = Some(settled);
        Ok(Some(Box::pin(async move {
            tokio::time::sleep(delay).await;
            let landed_before = match before {
                Some(before) => before.await.unwrap_or(false),
                None => true,
            };
            let failed = match fault {
                Some(SinkFault::Fail(class) | SinkFault::FailAfterCommit(class)) => Some(class),
                _ if !landed_before => Some(ErrorClass::Transient),
                _ => None,
            };
            if let Some(class) = failed {
                let _ = done.send(false);
                return Err(injected(SinkStep::CommitBatch, class));
            }
            land(&db, &feed, pending, checkpoint);
            let _ = done.send(true);
            Ok(())
        })))
    }

    async fn abort_batch(&mut self) {
        self.pending.clear();
    }

    async fn rename_table(
        &mut self,
        from: &TableId,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        self.pending.push(Pending::Rename {
            from: from.clone(),
            to: schema.id.clone(),
        });
        Ok(())
    }

    async fn release_tables(&mut self, _tables: &[TableId]) -> Result<(), SinkError> {
        Ok(())
    }

    async fn reset_snapshot(&mut self) -> Result<(), SinkError> {
        self.db.lock().target.markers.remove(&self.feed);
        Ok(())
    }

    async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        Ok(self.db.target_markers(&self.feed))
    }

    async fn ensure_table_for_copy(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        self.create_table(schema);
        Ok(())
    }

    async fn copy_chunk(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot: &Position,
        replace: bool,
        data: ChunkData,
    ) -> Result<u64, SinkError> {
        let fail_after = self.disturb(SinkStep::CopyChunk).await?;
        let ChunkData::Rows(mut data) = data else {
            return Err(SinkError::Unsupported {
                message: "the in-memory sink loads rows only".into(),
            });
        };
        let mut rows = Vec::new();
        while let Some(row) = data.next().await {
            rows.push(row.map_err(|e| SinkError::Statement {
                what: format!("reading chunk {chunk} of {}", schema.id),
                class: e.class,
                source: Box::new(e),
            })?);
        }
        let mut state = self.db.lock();
        let target = &mut state.target;
        let table = target.tables.entry(schema.id.clone()).or_default();
        if replace {
            table.clear();
        }
        for row in &rows {
            let id = key_of(row);
            if table.insert(id, row.clone()).is_some() {
                let anomaly = format!("copy of key {id} that {} holds", schema.id);
                target.anomalies.push(anomaly);
            }
        }
        let markers = target.markers.entry(self.feed.clone()).or_default();
        markers.retain(|m| !(m.table == schema.id && m.chunk == chunk));
        markers.push(FinishedChunk {
            table: schema.id.clone(),
            chunk,
            rows: rows.len() as u64,
            snapshot: snapshot.clone(),
        });
        drop(state);
        match fail_after {
            Some(class) => Err(injected(SinkStep::CopyChunk, class)),
            None => Ok(rows.len() as u64),
        }
    }

    async fn finish_table(&mut self, _schema: &TableSchema) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Applies a batch to the target with its checkpoint, as one commit.
fn land(db: &MemDb, feed: &str, pending: Vec<Pending>, checkpoint: Position) {
    let mut rows = 0;
    {
        let mut state = db.lock();
        let target = &mut state.target;
        for item in &pending {
            match item {
                Pending::Change(change) => {
                    rows += 1;
                    let tables: Vec<TableId> = match change {
                        RowChange::Insert { table, .. }
                        | RowChange::Update { table, .. }
                        | RowChange::Delete { table, .. } => vec![table.id.clone()],
                        RowChange::Truncate { tables, .. } => {
                            tables.iter().map(|t| t.id.clone()).collect()
                        }
                    };
                    for table in tables {
                        let rows = target.tables.entry(table.clone()).or_default();
                        apply_change(rows, &table, change, &mut target.anomalies);
                    }
                }
                Pending::Rename { from, to } => {
                    let rows = target.tables.remove(from).unwrap_or_default();
                    target.tables.insert(to.clone(), rows);
                    if let Some(shape) = target.shapes.remove(from) {
                        target.shapes.insert(to.clone(), shape);
                    }
                }
            }
        }
        let before = target.checkpoints.get(feed);
        if let Some(before) = before.filter(|b| !checkpoint.covers(b)) {
            let anomaly = format!("{}: checkpoint {checkpoint} after {before}", feed);
            target.anomalies.push(anomaly);
        }
        target
            .checkpoints
            .insert(feed.to_string(), checkpoint.clone());
        target.batches.push(CommittedBatch {
            feed: feed.to_string(),
            checkpoint,
            rows,
        });
    }
}
