//! The in-memory source's data plane: one attempt ([`MemSource`]), its snapshots (a copy
//! of the tables taken at a position) and its stream (the log after a position).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::source::{Confirmed, EventSender};
use ferry_core::{
    ChangeStream, ChunkData, ChunkReader, ChunkSpec, ErrorClass, Lsn, Position, Row, RowChange,
    ServerIdentity, SnapshotExport, Source, SourceError, SourceEvent, SourceTable, StreamState,
    TableDefinition, TableFilter, TableId, TablePlan, TableSchema,
};
use futures::future::BoxFuture;
use futures::StreamExt;

use super::{lsn_of, MemDb, Slot, SourceStep};

/// One attempt's connection to the in-memory source, for changefeed `feed`.
pub struct MemSource {
    pub(super) db: MemDb,
    pub(super) feed: String,
}

/// The identity of every in-memory source.
pub(super) fn identity() -> ServerIdentity {
    ServerIdentity {
        system_identifier: "mem".into(),
        database: "source".into(),
    }
}

impl MemDb {
    /// The tables `filter` selects.
    pub(super) fn select_tables(&self, filter: &TableFilter) -> Vec<SourceTable> {
        let state = self.lock();
        let tables = state.source.tables.values();
        tables
            .filter(|t| filter.matches(&t.schema.id))
            .map(|t| SourceTable {
                schema: (*t.schema).clone(),
                source_id: t.source_id,
                estimated_rows: Some(t.rows.len() as u64),
                total_bytes: 0,
            })
            .collect()
    }

    /// A snapshot of the tables now.
    fn export(&self) -> MemExport {
        let state = self.lock();
        let tables = state.source.tables.iter();
        MemExport {
            db: self.clone(),
            position: state.source.current(),
            tables: Arc::new(tables.map(|(id, t)| (id.clone(), t.rows.clone())).collect()),
        }
    }

    /// Drops changefeed `feed`'s slot and publication.
    pub(super) fn release(&self, feed: &str) {
        let mut state = self.lock();
        state.source.slots.remove(feed);
        state.source.publications.remove(feed);
    }
}

#[async_trait]
impl Source for MemSource {
    async fn identity(&mut self) -> Result<Option<ServerIdentity>, SourceError> {
        Ok(Some(identity()))
    }

    async fn stream_state(&mut self) -> Result<StreamState, SourceError> {
        Ok(match self.db.lock().source.slots.get(&self.feed) {
            Some(_) => StreamState::Usable,
            None => StreamState::Absent {
                description: format!("the slot of {} is gone from the source", self.feed),
            },
        })
    }

    async fn select_tables(
        &mut self,
        filter: &TableFilter,
    ) -> Result<Vec<SourceTable>, SourceError> {
        Ok(self.db.select_tables(filter))
    }

    fn table_warnings(&self, _tables: &[SourceTable]) -> Vec<String> {
        Vec::new()
    }

    async fn table_names(&mut self, ids: &[u32]) -> Result<HashMap<u32, TableId>, SourceError> {
        let state = self.db.lock();
        let tables = state.source.tables.values();
        Ok(tables
            .filter(|t| ids.contains(&t.source_id))
            .map(|t| (t.source_id, t.schema.id.clone()))
            .collect())
    }

    async fn current_position(&mut self) -> Result<Position, SourceError> {
        Ok(self.db.current_position())
    }

    async fn prepare(&mut self, tables: &[SourceTable]) -> Result<Vec<TableId>, SourceError> {
        self.db.take_source_fault(SourceStep::Prepare)?;
        let ids = tables.iter().map(|t| t.source_id).collect();
        let mut state = self.db.lock();
        state.source.publications.insert(self.feed.clone(), ids);
        Ok(Vec::new())
    }

    async fn plan_table(&mut self, table: &SourceTable) -> Result<TablePlan, SourceError> {
        let state = self.db.lock();
        let id = &table.schema.id;
        let keys: Vec<i64> = state.source.tables[id].rows.keys().copied().collect();
        let estimated_rows = keys.len() as u64;
        let per_chunk = match state.source.chunk_rows {
            Some(n) if keys.len() > n => n,
            _ => {
                return Ok(TablePlan {
                    table: id.clone(),
                    key_column: None,
                    chunks: vec![ChunkSpec::whole()],
                    estimated_rows,
                })
            }
        };
        // Cut at every `per_chunk`-th key; the outer chunks are unbounded.
        let cuts: Vec<i64> = keys.iter().step_by(per_chunk).skip(1).copied().collect();
        let bounds = |i: usize| (i.checked_sub(1).map(|j| cuts[j]), cuts.get(i).copied());
        let chunks = (0..=cuts.len())
            .map(|i| {
                let (lower, upper) = bounds(i);
                ChunkSpec {
                    index: i as u32,
                    lower,
                    upper,
                }
            })
            .collect();
        Ok(TablePlan {
            table: id.clone(),
            key_column: Some("id".into()),
            chunks,
            estimated_rows,
        })
    }

    async fn definitions(
        &mut self,
        _tables: &[&SourceTable],
    ) -> Result<Vec<(TableId, TableDefinition)>, SourceError> {
        Ok(Vec::new())
    }

    async fn create_stream(&mut self) -> Result<Box<dyn SnapshotExport>, SourceError> {
        self.db.take_source_fault(SourceStep::CreateStream)?;
        let export = self.db.export();
        let mut state = self.db.lock();
        if state.source.slots.contains_key(&self.feed) {
            return Err(SourceError::message(
                format!("the slot of {} exists already", self.feed),
                ErrorClass::Definite,
            ));
        }
        let slot = Slot {
            confirmed: export.position,
            history: Vec::new(),
        };
        state.source.slots.insert(self.feed.clone(), slot);
        Ok(Box::new(export))
    }

    async fn export_snapshot(&mut self) -> Result<Box<dyn SnapshotExport>, SourceError> {
        self.db.take_source_fault(SourceStep::ExportSnapshot)?;
        Ok(Box::new(self.db.export()))
    }

    async fn start_stream(
        &mut self,
        from: Option<Position>,
        tables: HashMap<u32, TableId>,
    ) -> Result<Box<dyn ChangeStream>, SourceError> {
        self.db.take_source_fault(SourceStep::StartStream)?;
        let state = self.db.lock();
        let Some(slot) = state.source.slots.get(&self.feed) else {
            return Err(SourceError::message(
                format!("the slot of {} does not exist", self.feed),
                ErrorClass::Definite,
            ));
        };
        // As PostgreSQL: never before what the slot has confirmed.
        let from = from
            .as_ref()
            .and_then(lsn_of)
            .map_or(slot.confirmed, |lsn| lsn.max(slot.confirmed));
        Ok(Box::new(MemStream {
            db: self.db.clone(),
            feed: self.feed.clone(),
            from,
            names: tables,
        }))
    }
}

/// A copy of the source's tables at a position.
struct MemExport {
    db: MemDb,
    position: Lsn,
    tables: Arc<BTreeMap<TableId, BTreeMap<i64, Row>>>,
}

#[async_trait]
impl SnapshotExport for MemExport {
    fn position(&self) -> Position {
        Position::PgLsn(self.position)
    }

    async fn reader(&self) -> Result<Box<dyn ChunkReader>, SourceError> {
        Ok(Box::new(MemChunkReader {
            db: self.db.clone(),
            tables: self.tables.clone(),
        }))
    }
}

struct MemChunkReader {
    db: MemDb,
    tables: Arc<BTreeMap<TableId, BTreeMap<i64, Row>>>,
}

#[async_trait]
impl ChunkReader for MemChunkReader {
    async fn read(
        &mut self,
        schema: &TableSchema,
        _plan: &TablePlan,
        chunk: &ChunkSpec,
        _format: Option<ferry_core::BulkFormat>,
    ) -> Result<ChunkData, SourceError> {
        self.db.take_source_fault(SourceStep::ReadChunk)?;
        let rows = self.tables.get(&schema.id).ok_or_else(|| {
            SourceError::message(
                format!("table {} is not in the snapshot", schema.id),
                ErrorClass::Definite,
            )
        })?;
        let in_chunk =
            |id: &i64| chunk.lower.is_none_or(|l| *id >= l) && chunk.upper.is_none_or(|u| *id < u);
        let chunk_rows: Vec<Result<Row, SourceError>> = rows
            .iter()
            .filter(|(id, _)| in_chunk(id))
            .map(|(_, r)| Ok(r.clone()))
            .collect();
        // The row path: the in-memory source offers no bulk format.
        Ok(ChunkData::Rows(futures::stream::iter(chunk_rows).boxed()))
    }
}

/// The log after `from`, for one changefeed.
struct MemStream {
    db: MemDb,
    feed: String,
    from: Lsn,
    /// The replicated tables' target names, by source id.
    names: HashMap<u32, TableId>,
}

/// One transaction as the stream sends it.
struct Outgoing {
    xid: u32,
    commit_time_us: i64,
    commit: Lsn,
    end: Lsn,
    changes: Vec<RowChange>,
}

impl MemStream {
    /// The transactions after `self.from` with changes to published tables, and the
    /// source's current position; or the armed failure of [`SourceStep::Stream`].
    fn unread(&self) -> Result<(Vec<Outgoing>, Lsn), SourceError> {
        self.db.take_source_fault(SourceStep::Stream)?;
        assert!(
            !self.db.take_stream_panic(),
            "injected panic in the stream reader"
        );
        let state = self.db.lock();
        let source = &state.source;
        let published = source.publications.get(&self.feed);
        // Published tables' names on the source, with their names on the target.
        let names: HashMap<&TableId, TableId> = source
            .tables
            .values()
            .filter(|t| published.is_some_and(|p| p.contains(&t.source_id)))
            .map(|t| {
                let target = self.names.get(&t.source_id).unwrap_or(&t.schema.id);
                (&t.schema.id, target.clone())
            })
            .collect();
        let unread = source.log.iter().filter(|tx| tx.commit >= self.from);
        let outgoing = unread
            .map(|tx| Outgoing {
                xid: tx.xid,
                commit_time_us: tx.commit_time_us,
                commit: tx.commit,
                end: tx.end,
                changes: tx
                    .changes
                    .iter()
                    .filter_map(|c| published_change(c, &names))
                    .collect(),
            })
            .filter(|tx| !tx.changes.is_empty())
            .collect();
        Ok((outgoing, source.current()))
    }

    async fn run(mut self, events: EventSender, confirmed: Confirmed) {
        let mut ack = Acknowledger {
            db: self.db.clone(),
            feed: self.feed.clone(),
            confirmed,
            last: None,
        };
        let mut changed = self.db.shared.changed.subscribe();
        let mut announced: HashMap<TableId, Arc<TableSchema>> = HashMap::new();
        loop {
            changed.borrow_and_update();
            let (outgoing, current) = match self.unread() {
                Ok(read) => read,
                Err(e) => {
                    let _ = events.send(Err(e)).await;
                    return;
                }
            };
            for tx in outgoing {
                self.db
                    .lock()
                    .source
                    .sent
                    .entry(self.feed.clone())
                    .or_default()
                    .push((tx.commit, tx.end));
                if send_transaction(&events, tx, &mut announced).await.is_err() {
                    return;
                }
            }
            self.from = current;
            let idle = SourceEvent::Idle {
                position: Position::PgLsn(current),
                server_time_us: 0,
            };
            if events.send(Ok(idle)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    woke = changed.changed() => {
                        if woke.is_err() {
                            return;
                        }
                        break;
                    }
                    acked = ack.confirmed.changed() => {
                        if acked.is_err() {
                            return;
                        }
                        ack.record_latest();
                    }
                    _ = events.closed() => return,
                }
            }
        }
    }
}

/// Takes in the positions the engine confirms to a stream.
struct Acknowledger {
    db: MemDb,
    feed: String,
    confirmed: Confirmed,
    /// The last position recorded.
    last: Option<Position>,
}

impl Acknowledger {
    /// Records the latest confirmed position, if new.
    fn record_latest(&mut self) {
        let latest = self.confirmed.borrow_and_update().clone();
        if let Some(position) = latest.filter(|p| self.last.as_ref() != Some(p)) {
            self.record(&position);
            self.last = Some(position);
        }
    }

    /// Records a position the engine confirmed, checking it against the target.
    fn record(&self, position: &Position) {
        let Some(lsn) = lsn_of(position) else {
            let mut state = self.db.lock();
            let violation = format!("{}: confirmed {position}, not an LSN", self.feed);
            state.checkpoint_violations.push(violation);
            return;
        };
        let mut state = self.db.lock();
        let durable = state.target.checkpoints.get(&self.feed).cloned();
        let mut violations = Vec::new();
        let sent = state.source.sent.get(&self.feed).into_iter().flatten();
        for (commit, end) in sent.filter(|(commit, _)| *commit < lsn) {
            let end = Position::PgLsn(*end);
            if durable.as_ref().is_none_or(|d| !d.covers(&end)) {
                violations.push(format!(
                    "{}: confirmed {position} while the transaction committed at {commit} \
                     was not durable (target checkpoint {durable:?})",
                    self.feed
                ));
            }
        }
        if let Some(slot) = state.source.slots.get_mut(&self.feed) {
            if let Some(last) = slot.history.last().filter(|last| **last > lsn) {
                violations.push(format!("{}: confirmed {position} after {last}", self.feed));
            }
            slot.history.push(lsn);
            slot.confirmed = slot.confirmed.max(lsn);
        }
        state.checkpoint_violations.extend(violations);
    }
}

/// A source acts on every position it was handed, even one confirmed just before its
/// stream ended: the engine must not hand out a position before it is durable.
impl Drop for Acknowledger {
    fn drop(&mut self) {
        self.record_latest();
    }
}

impl ChangeStream for MemStream {
    fn run(self: Box<Self>, events: EventSender, confirmed: Confirmed) -> BoxFuture<'static, ()> {
        Box::pin((*self).run(events, confirmed))
    }
}

/// Sends one transaction: begin, each table's shape before its first change in the
/// session and again before its first change after the shape changed, the changes,
/// commit.
async fn send_transaction(
    events: &EventSender,
    tx: Outgoing,
    announced: &mut HashMap<TableId, Arc<TableSchema>>,
) -> Result<(), ()> {
    let send = |event| async { events.send(Ok(event)).await.map_err(drop) };
    let commit_time_us = tx.commit_time_us;
    send(SourceEvent::Begin {
        commit: Position::PgLsn(tx.commit),
        xid: tx.xid,
        commit_time_us,
    })
    .await?;
    for change in tx.changes {
        let tables: Vec<&Arc<TableSchema>> = match &change {
            RowChange::Insert { table, .. }
            | RowChange::Update { table, .. }
            | RowChange::Delete { table, .. } => vec![table],
            RowChange::Truncate { tables, .. } => tables.iter().collect(),
        };
        for table in tables {
            if announced.get(&table.id) != Some(table) {
                announced.insert(table.id.clone(), table.clone());
                send(SourceEvent::Schema(table.clone())).await?;
            }
        }
        send(SourceEvent::Change(change)).await?;
    }
    send(SourceEvent::Commit {
        end: Position::PgLsn(tx.end),
        commit_time_us,
    })
    .await
}

/// `change` restricted to the published tables (`names`: source name → target name), under
/// their target names; `None` when it touches none.
fn published_change(change: &RowChange, names: &HashMap<&TableId, TableId>) -> Option<RowChange> {
    let renamed = |table: &Arc<TableSchema>| {
        let target = names.get(&table.id)?;
        Some(if *target == table.id {
            table.clone()
        } else {
            Arc::new(TableSchema {
                id: target.clone(),
                ..(**table).clone()
            })
        })
    };
    match change {
        RowChange::Insert { table, new } => Some(RowChange::Insert {
            table: renamed(table)?,
            new: new.clone(),
        }),
        RowChange::Update { table, old, new } => Some(RowChange::Update {
            table: renamed(table)?,
            old: old.clone(),
            new: new.clone(),
        }),
        RowChange::Delete { table, old } => Some(RowChange::Delete {
            table: renamed(table)?,
            old: old.clone(),
        }),
        RowChange::Truncate {
            tables,
            restart_identity,
        } => {
            let tables: Vec<_> = tables.iter().filter_map(renamed).collect();
            (!tables.is_empty()).then_some(RowChange::Truncate {
                tables,
                restart_identity: *restart_identity,
            })
        }
    }
}
