//! The blackhole sink: discards everything but keeps counts, to measure a source alone (as
//! TiCDC's blackhole sink).

use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::{
    BulkFormat, CheckpointStore, ChunkData, FinishedChunk, Position, RowChange, Sink,
    SinkConnector, SinkError, SinkUri, TableId, TableSchema, TargetPolicy, Value,
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
        _policy: TargetPolicy,
    ) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(BlackholeSink::default()))
    }
}

/// Counts rows and bytes. Its checkpoint is the engine's to keep
/// ([`CheckpointStore::External`]), so a restarted changefeed resumes where it was.
#[derive(Debug, Default)]
pub struct BlackholeSink {
    /// Rows received.
    pub rows: u64,
    /// Bytes received.
    pub bytes: u64,
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
        Ok(())
    }

    async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        Ok(Vec::new())
    }

    async fn ensure_table_for_copy(&mut self, _schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        Ok(())
    }

    /// Takes PostgreSQL COPY text as it comes (it only counts lines), so it measures a
    /// PostgreSQL source's bulk path; with `snapshot_bulk` off it counts decoded rows.
    fn bulk_formats(&self) -> &'static [BulkFormat] {
        &[BulkFormat::PG_COPY_TEXT]
    }

    async fn copy_chunk(
        &mut self,
        _schema: &TableSchema,
        _chunk: u32,
        _snapshot: &Position,
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
        Ok(rows)
    }

    async fn finish_table(&mut self, _schema: &TableSchema) -> Result<(), SinkError> {
        Ok(())
    }
}
