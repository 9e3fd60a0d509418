//! The blackhole sink: discards everything but keeps counts, to measure a source alone (as
//! TiCDC's blackhole sink).
//!
//! Its checkpoint and its snapshot chunk markers are the engine's to keep (the metadata
//! store's checkpoint and [`ferry_core::ChunkLedger`]), so a restarted changefeed resumes
//! where it was, snapshot done, as with any other sink.

use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::{
    BulkFormat, CheckpointStore, ChunkData, ChunkLedgerHandle, ErrorClass, FinishedChunk, Position,
    RowChange, Sink, SinkConnector, SinkError, SinkUri, TableId, TableSchema, TargetPolicy, Value,
};
use futures::StreamExt;

/// Connects blackhole sinks.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlackholeConnector;

#[async_trait]
impl SinkConnector for BlackholeConnector {
    async fn connect(
        &self,
        _uri: &SinkUri,
        _feed: &str,
        policy: TargetPolicy,
    ) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(BlackholeSink {
            ledger: policy.chunk_ledger,
            ..BlackholeSink::default()
        }))
    }
}

/// Counts rows and bytes. Its checkpoint is the engine's to keep
/// ([`CheckpointStore::External`]), and so are its chunk markers (in the ledger, when the
/// engine gives one), so a restarted changefeed resumes where it was.
#[derive(Debug, Default)]
pub struct BlackholeSink {
    /// Rows received.
    pub rows: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Where copied chunks are recorded; without one a restart copies the tables again.
    ledger: Option<ChunkLedgerHandle>,
}

#[async_trait]
impl Sink for BlackholeSink {
    fn checkpoint_store(&self) -> CheckpointStore {
        CheckpointStore::External
    }

    async fn load_checkpoint(&mut self) -> Result<Option<Position>, SinkError> {
        Ok(None)
    }

    async fn ensure_table(&mut self, _schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        Ok(())
    }

    async fn apply(&mut self, change: RowChange) -> Result<(), SinkError> {
        self.rows += 1;
        self.bytes += change.payload_bytes() as u64;
        Ok(())
    }

    async fn commit_batch(&mut self, _checkpoint: Position) -> Result<(), SinkError> {
        Ok(())
    }

    async fn abort_batch(&mut self) {}

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

    async fn reset_snapshot(&mut self) -> Result<(), SinkError> {
        match &self.ledger {
            Some(ledger) => ledger.0.clear().map_err(ledger_error),
            None => Ok(()),
        }
    }

    async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        match &self.ledger {
            Some(ledger) => ledger.0.finished().map_err(ledger_error),
            None => Ok(Vec::new()),
        }
    }

    async fn ensure_table_for_copy(&mut self, _schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        Ok(())
    }

    /// Takes PostgreSQL COPY text as it comes (it only counts lines), so it measures a
    /// PostgreSQL source's bulk path; with `snapshot_bulk` off it counts decoded rows.
    fn bulk_formats(&self, _schema: &TableSchema) -> &'static [BulkFormat] {
        &[BulkFormat::PG_COPY_TEXT]
    }

    async fn copy_chunk(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot: &Position,
        _replace: bool,
        data: ChunkData,
    ) -> Result<u64, SinkError> {
        let read_error = |e: ferry_core::SourceError| SinkError::Connect {
            what: "read a snapshot chunk".into(),
            class: e.class,
            source: Box::new(e),
        };
        let mut rows = 0u64;
        match data {
            ChunkData::Bulk { format, mut data } => {
                while let Some(item) = data.next().await {
                    let bytes = item.map_err(read_error)?;
                    // Row counts of the formats this build knows; bytes for any.
                    if format == BulkFormat::PG_COPY_TEXT {
                        rows += bytes.iter().filter(|&&c| c == b'\n').count() as u64;
                    }
                    self.bytes += bytes.len() as u64;
                }
            }
            ChunkData::Rows(mut data) => {
                while let Some(row) = data.next().await {
                    let row = row.map_err(read_error)?;
                    rows += 1;
                    self.bytes += row
                        .iter()
                        .map(|v| match v {
                            Value::Text(text) => text.len() as u64,
                            _ => 0,
                        })
                        .sum::<u64>();
                }
            }
        }
        self.rows += rows;
        if let Some(ledger) = &self.ledger {
            let finished = FinishedChunk {
                table: schema.id.clone(),
                chunk,
                rows,
                snapshot: snapshot.clone(),
            };
            ledger.0.record(&finished).map_err(ledger_error)?;
        }
        Ok(rows)
    }

    async fn finish_table(&mut self, _schema: &TableSchema) -> Result<(), SinkError> {
        Ok(())
    }
}

fn ledger_error(e: String) -> SinkError {
    SinkError::Statement {
        what: "keep snapshot chunk markers".into(),
        class: ErrorClass::Transient,
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ferry_core::{ChunkLedger, Lsn, ReplicaIdentity, TableId};
    use futures::stream;

    use super::*;

    /// The engine's ledger, in memory.
    #[derive(Default)]
    struct Ledger(Mutex<Vec<FinishedChunk>>);

    impl ChunkLedger for Ledger {
        fn finished(&self) -> Result<Vec<FinishedChunk>, String> {
            Ok(self.0.lock().unwrap().clone())
        }
        fn record(&self, chunk: &FinishedChunk) -> Result<(), String> {
            self.0.lock().unwrap().push(chunk.clone());
            Ok(())
        }
        fn clear(&self) -> Result<(), String> {
            self.0.lock().unwrap().clear();
            Ok(())
        }
    }

    #[tokio::test]
    async fn copied_chunks_outlive_the_sink_in_the_ledger() {
        let ledger = ChunkLedgerHandle(Arc::new(Ledger::default()));
        let connect = || async {
            let policy = TargetPolicy {
                chunk_ledger: Some(ledger.clone()),
                ..TargetPolicy::default()
            };
            BlackholeConnector
                .connect(&"blackhole://".parse().unwrap(), "ns/feed", policy)
                .await
                .unwrap()
        };
        let schema = TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![],
            key: vec![],
            identity: ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: vec![],
            dialect: ferry_core::Dialect::Postgres,
        };
        let copy_text = stream::iter([Ok(bytes::Bytes::from_static(b"1\n2\n"))]).boxed();
        let data = ChunkData::Bulk {
            format: BulkFormat::PG_COPY_TEXT,
            data: copy_text,
        };
        let snapshot = Position::PgLsn(Lsn(0x10));
        let mut sink = connect().await;
        assert_eq!(
            sink.copy_chunk(&schema, 3, &snapshot, false, data)
                .await
                .unwrap(),
            2
        );
        drop(sink);

        let mut restarted = connect().await;
        let finished = restarted.finished_chunks().await.unwrap();
        assert_eq!(finished.len(), 1);
        assert_eq!((finished[0].chunk, finished[0].rows), (3, 2));
        assert_eq!(finished[0].snapshot, snapshot);
        restarted.reset_snapshot().await.unwrap();
        assert!(restarted.finished_chunks().await.unwrap().is_empty());
    }
}
