//! What every stream sink shares: turning changes and snapshot chunks into Debezium events
//! ([`ferry_events`]), numbering them within their transaction, preceding re-copies with
//! `t` events, and the order of durability. A [`Transport`] only moves events and keeps
//! the chunk markers; [`EventSink`] is the [`Sink`] over any of them.
//!
//! ```text
//! apply(change) ─► TransactionEvents ─► Transport::send ┐
//! copy_chunk    ─► ChunkEvents ───────► Transport::send ┼─► flush ─► (commit_batch returns)
//!                                         record_chunk ◄┘   (chunk: after its flush)
//! ```
//!
//! # Durability
//! The checkpoint is the engine's ([`CheckpointStore::External`]): [`Sink::seal_batch`]
//! hands the engine what makes every event of the batch durable at the destination
//! ([`Transport::seal`]: the acknowledgements still to come, or nothing after a flush), and
//! the engine saves the checkpoint only once that settled, so a saved checkpoint never
//! covers an event the destination lacks; a chunk is recorded only after its events are
//! flushed. Delivery is at-least-once, with stable event ids.
//!
//! # Options
//! With `transactions=true` each source transaction is framed by a `BEGIN` and an `END`
//! event ([`ferry_events::EventKind::Transaction`], routed by the transport); with
//! `tombstones=true` each delete is followed by a tombstone.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use ferry_core::{
    CheckpointStore, ChunkData, EventOptions, FinishedChunk, Position, RowChange, Settle, Sink,
    SinkError, TableId, TableSchema, TxMeta,
};
use ferry_events::{ChunkEvents, Event, Origin, SchemaCache, TransactionEvents};
use futures::StreamExt;

/// Moves events to one kind of destination.
#[async_trait]
pub(crate) trait Transport: Send {
    /// Sends one event of the open batch or chunk; it may stay buffered until
    /// [`Transport::flush`].
    async fn send(&mut self, event: Event) -> Result<(), SinkError>;

    /// Returns once every event sent so far is durable at the destination.
    async fn flush(&mut self) -> Result<(), SinkError>;

    /// Ends a batch: returns what makes every event sent so far durable when that is
    /// still under way (acknowledgements to wait for, needing nothing of the transport), or
    /// flushes and returns `None`.
    async fn seal(&mut self) -> Result<Option<Settle>, SinkError> {
        self.flush().await.map(|()| None)
    }

    /// Forgets the events sent since the last flush, taking back what the destination
    /// allows (what stays comes again with the same ids).
    async fn discard(&mut self);

    /// The snapshot chunks recorded.
    async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError>;

    /// Records a chunk whose events are flushed.
    async fn record_chunk(&mut self, chunk: &FinishedChunk) -> Result<(), SinkError>;

    /// Forgets every recorded chunk.
    async fn clear_chunks(&mut self) -> Result<(), SinkError>;
}

/// A [`Sink`] that writes Debezium events through a [`Transport`].
pub(crate) struct EventSink<T> {
    transport: T,
    origin: Origin,
    options: EventOptions,
    /// The open source transaction, numbering its events.
    tx: Option<TransactionEvents>,
    /// Schemas written once per table shape (`schemas=true`).
    schemas: SchemaCache,
}

impl<T: Transport> EventSink<T> {
    /// Events of changefeed `origin` through `transport`.
    pub(crate) fn new(transport: T, origin: Origin, options: EventOptions) -> Self {
        EventSink {
            transport,
            origin,
            options,
            tx: None,
            schemas: SchemaCache::default(),
        }
    }

    /// Sends the open transaction's `END` (with `transactions=true`); a batch holds whole
    /// transactions, so one ends where the next begins or the batch commits.
    async fn end_transaction(&mut self) -> Result<(), SinkError> {
        if let Some(tx) = self.tx.take() {
            if self.options.transactions {
                self.send(tx.end_event(), None).await?;
            }
        }
        Ok(())
    }

    /// Sends `event` of `table` (`None`: a table whose shape is not at hand, or none), in
    /// the schema form with `schemas=true`.
    async fn send(
        &mut self,
        mut event: Event,
        table: Option<&TableSchema>,
    ) -> Result<(), SinkError> {
        if self.options.schemas {
            match table {
                Some(table) => self.schemas.attach(&mut event, table, &self.origin),
                None => {
                    let bare = TableSchema {
                        id: event.table.clone(),
                        columns: Vec::new(),
                        key: Vec::new(),
                        identity: ferry_core::ReplicaIdentity::Default,
                        user_types: Vec::new(),
                        partition_of: Vec::new(),
                        dialect: ferry_core::Dialect::Postgres,
                    };
                    self.schemas.attach(&mut event, &bare, &self.origin)
                }
            }
        }
        self.transport.send(event).await
    }
}

/// A chunk marker as stream sinks store it (JSON, the position in its own notation).
pub(crate) fn marker_json(chunk: &FinishedChunk) -> serde_json::Value {
    serde_json::json!({
        "schema": chunk.table.schema,
        "table": chunk.table.name,
        "chunk": chunk.chunk,
        "rows": chunk.rows,
        "snapshot": chunk.snapshot,
    })
}

/// A chunk marker read back; `None` when it is not one Ferry wrote.
pub(crate) fn parse_marker(payload: &[u8]) -> Option<FinishedChunk> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(FinishedChunk {
        table: TableId::new(v["schema"].as_str()?, v["table"].as_str()?),
        chunk: u32::try_from(v["chunk"].as_u64()?).ok()?,
        rows: v["rows"].as_u64()?,
        snapshot: serde_json::from_value::<Position>(v["snapshot"].clone()).ok()?,
    })
}

/// The shape of the table `id` that `change` touches.
fn change_table<'a>(change: &'a RowChange, id: &TableId) -> Option<&'a TableSchema> {
    match change {
        RowChange::Insert { table, .. }
        | RowChange::Update { table, .. }
        | RowChange::Delete { table, .. } => Some(table),
        RowChange::Truncate { tables, .. } => tables.iter().find(|t| &t.id == id).map(|t| &**t),
    }
}

/// A value that does not read as its type: definite, never sent as a guess.
fn encode_error(e: ferry_events::EncodeError) -> SinkError {
    SinkError::Unsupported {
        message: format!("cannot encode an event: {e}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[async_trait]
impl<T: Transport> Sink for EventSink<T> {
    fn checkpoint_store(&self) -> CheckpointStore {
        CheckpointStore::External
    }

    async fn load_checkpoint(&mut self) -> Result<Option<Position>, SinkError> {
        Ok(None)
    }

    async fn begin_transaction(&mut self, tx: &TxMeta) -> Result<(), SinkError> {
        self.end_transaction().await?;
        let events = TransactionEvents::new(tx.clone());
        if self.options.transactions {
            self.send(events.begin_event(), None).await?;
        }
        self.tx = Some(events);
        Ok(())
    }

    async fn ensure_table(&mut self, _schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        Ok(())
    }

    async fn apply(&mut self, change: RowChange) -> Result<(), SinkError> {
        let tx = self.tx.as_mut().ok_or_else(|| SinkError::Unsupported {
            message: "a change arrived outside a source transaction".into(),
        })?;
        let events = tx
            .events(&self.origin, &change, now_ms())
            .map_err(encode_error)?;
        for event in events {
            let tombstone = self
                .options
                .tombstones
                .then(|| ferry_events::tombstone(&event))
                .flatten();
            let table = change_table(&change, &event.table);
            self.send(event, table).await?;
            if let Some(tombstone) = tombstone {
                self.send(tombstone, table).await?;
            }
        }
        Ok(())
    }

    async fn commit_batch(&mut self, _checkpoint: Position) -> Result<(), SinkError> {
        self.end_transaction().await?;
        self.transport.flush().await
    }

    async fn seal_batch(&mut self, _checkpoint: Position) -> Result<Option<Settle>, SinkError> {
        self.end_transaction().await?;
        self.transport.seal().await
    }

    async fn abort_batch(&mut self) {
        self.tx = None;
        self.transport.discard().await;
    }

    async fn rename_table(
        &mut self,
        _from: &TableId,
        _schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        Ok(())
    }

    async fn release_tables(&mut self, _tables: &[TableId]) -> Result<(), SinkError> {
        Ok(())
    }

    /// A new first snapshot: every table an earlier one copied gets a `t` event first, so
    /// a consumer drops rows the new copy may no longer have.
    async fn reset_snapshot(&mut self) -> Result<(), SinkError> {
        let finished = self.transport.finished_chunks().await?;
        for event in
            ferry_events::reset_events(&self.origin, &finished, now_ms()).map_err(encode_error)?
        {
            self.send(event, None).await?;
        }
        self.transport.flush().await?;
        self.transport.clear_chunks().await
    }

    async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        self.transport.finished_chunks().await
    }

    async fn ensure_table_for_copy(&mut self, _schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        Ok(())
    }

    /// Sends the chunk's `r` events (after a `t` when the table is copied again whole),
    /// flushes them, then records the chunk.
    async fn copy_chunk(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot: &Position,
        replace: bool,
        data: ChunkData,
    ) -> Result<u64, SinkError> {
        let ChunkData::Rows(mut rows) = data else {
            return Err(SinkError::Unsupported {
                message: "stream sinks load snapshot rows only".into(),
            });
        };
        let read_error = |e: ferry_core::SourceError| SinkError::Connect {
            what: "read a snapshot chunk".into(),
            class: e.class,
            source: Box::new(e),
        };
        let origin = self.origin.clone();
        let mut events = ChunkEvents::new(&origin, schema, snapshot, chunk);
        if replace {
            let truncate = events.replace_event(now_ms()).map_err(encode_error)?;
            self.send(truncate, Some(schema)).await?;
        }
        while let Some(row) = rows.next().await.transpose().map_err(read_error)? {
            if let Some(event) = events.push(row, now_ms()).map_err(encode_error)? {
                self.send(event, Some(schema)).await?;
            }
        }
        let (last, count) = events.finish(now_ms()).map_err(encode_error)?;
        if let Some(event) = last {
            self.send(event, Some(schema)).await?;
        }
        self.transport.flush().await?;
        self.transport
            .record_chunk(&FinishedChunk {
                table: schema.id.clone(),
                chunk,
                rows: count,
                snapshot: snapshot.clone(),
            })
            .await?;
        Ok(count)
    }

    async fn finish_table(&mut self, _schema: &TableSchema) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::{ColumnSchema, Dialect, LogicalType, Lsn, ReplicaIdentity, Value};
    use ferry_events::EventKind;

    use super::*;

    /// Keeps what it is sent; "durable" is what was flushed.
    #[derive(Default)]
    struct Memory {
        sent: Vec<Event>,
        durable: usize,
    }

    #[async_trait]
    impl Transport for Memory {
        async fn send(&mut self, event: Event) -> Result<(), SinkError> {
            self.sent.push(event);
            Ok(())
        }
        async fn flush(&mut self) -> Result<(), SinkError> {
            self.durable = self.sent.len();
            Ok(())
        }
        async fn discard(&mut self) {
            self.sent.truncate(self.durable);
        }
        async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
            Ok(Vec::new())
        }
        async fn record_chunk(&mut self, _chunk: &FinishedChunk) -> Result<(), SinkError> {
            Ok(())
        }
        async fn clear_chunks(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn table() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![ColumnSchema {
                name: "id".into(),
                type_name: "integer".into(),
                type_oid: 23,
                logical: LogicalType::Int { bits: 32 },
                nullable: false,
                missing_value: None,
                has_default: false,
            }],
            key: vec![0],
            identity: ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: vec![],
            dialect: Dialect::Postgres,
        })
    }

    fn tx(lsn: u64) -> TxMeta {
        TxMeta {
            commit: Position::PgLsn(Lsn(lsn)),
            commit_time_us: 0,
            source_tx_id: lsn,
        }
    }

    #[tokio::test]
    async fn transactions_are_framed_and_deletes_followed_by_tombstones() {
        let options = EventOptions {
            transactions: true,
            tombstones: true,
            schemas: false,
        };
        let origin = Origin {
            name: "ns/f".into(),
            db: "shop".into(),
        };
        let mut sink = EventSink::new(Memory::default(), origin, options);
        let row = vec![Value::Text("7".into())];
        sink.begin_transaction(&tx(0x10)).await.unwrap();
        sink.apply(RowChange::Insert {
            table: table(),
            new: row.clone(),
        })
        .await
        .unwrap();
        sink.begin_transaction(&tx(0x20)).await.unwrap();
        sink.apply(RowChange::Delete {
            table: table(),
            old: row,
        })
        .await
        .unwrap();
        sink.commit_batch(Position::PgLsn(Lsn(0x20))).await.unwrap();
        let shape: Vec<(EventKind, String)> = sink
            .transport
            .sent
            .iter()
            .map(|e| (e.kind, e.id.clone()))
            .collect();
        use EventKind::*;
        assert_eq!(
            shape,
            [
                (Transaction, "0/10:begin".to_string()),
                (Change, "0/10:0".to_string()),
                (Transaction, "0/10:end".to_string()),
                (Transaction, "0/20:begin".to_string()),
                (Change, "0/20:0".to_string()),
                (Tombstone, "0/20:0:tombstone".to_string()),
                (Transaction, "0/20:end".to_string()),
            ]
        );
        assert_eq!(sink.transport.durable, 7);
    }
}
