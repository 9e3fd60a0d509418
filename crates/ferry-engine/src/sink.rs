//! The sink a changefeed's configuration picks, and the blackhole sink.

use std::sync::Arc;

use bytes::Bytes;
use ferry_core::{Lsn, Position, RowChange, Sink, SinkError, SinkUri, TableId, TableSchema};
use ferry_postgres::sink::{FinishedChunk, PgSink, TargetPolicy};
use futures::{Stream, StreamExt};

/// Discards everything but keeps counts, to measure a source alone (as TiCDC's blackhole).
#[derive(Debug, Default)]
pub(crate) struct BlackholeSink {
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    checkpoint: Option<Position>,
}

/// A configured sink.
pub(crate) enum AnySink {
    Postgres(Box<PgSink>),
    Blackhole(BlackholeSink),
}

impl AnySink {
    pub(crate) async fn connect(
        uri: &SinkUri,
        changefeed: &str,
        policy: TargetPolicy,
    ) -> Result<Self, SinkError> {
        Ok(match uri {
            SinkUri::Postgres(uri) => {
                AnySink::Postgres(Box::new(PgSink::connect(uri, changefeed, policy).await?))
            }
            SinkUri::Blackhole => AnySink::Blackhole(BlackholeSink::default()),
        })
    }

    pub(crate) async fn reset_state(&mut self) -> Result<(), SinkError> {
        match self {
            AnySink::Postgres(s) => s.reset_state().await,
            AnySink::Blackhole(_) => Ok(()),
        }
    }

    pub(crate) async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        match self {
            AnySink::Postgres(s) => s.finished_chunks().await,
            AnySink::Blackhole(_) => Ok(Vec::new()),
        }
    }

    pub(crate) async fn copy_chunk<S, E>(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot_lsn: Lsn,
        replace: bool,
        data: S,
    ) -> Result<u64, SinkError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::error::Error + Send + Sync + 'static,
    {
        match self {
            AnySink::Postgres(s) => {
                s.copy_chunk(schema, chunk, snapshot_lsn, replace, data)
                    .await
            }
            AnySink::Blackhole(b) => {
                let mut data = std::pin::pin!(data);
                let mut rows = 0u64;
                while let Some(item) = data.next().await {
                    let bytes = item.map_err(|e| SinkError::Connect {
                        what: "read a snapshot chunk".into(),
                        class: ferry_core::ErrorClass::Transient,
                        source: Box::new(e),
                    })?;
                    rows += bytes.iter().filter(|&&c| c == b'\n').count() as u64;
                    b.bytes += bytes.len() as u64;
                }
                b.rows += rows;
                Ok(rows)
            }
        }
    }

    /// Creates or follows a table for a bulk copy (the key comes after it).
    pub(crate) async fn ensure_table_for_copy(
        &mut self,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        match self {
            AnySink::Postgres(s) => s.ensure_table_for_copy(schema).await,
            AnySink::Blackhole(_) => Ok(()),
        }
    }

    /// Gives a bulk-copied table its key.
    pub(crate) async fn ensure_key(&mut self, schema: &TableSchema) -> Result<(), SinkError> {
        match self {
            AnySink::Postgres(s) => s.ensure_key(schema).await,
            AnySink::Blackhole(_) => Ok(()),
        }
    }

    /// The source's definitions of the tables the sink may create.
    pub(crate) fn use_definitions(
        &mut self,
        definitions: Vec<(TableId, ferry_postgres::definition::TableDefinition)>,
    ) {
        if let AnySink::Postgres(s) = self {
            s.use_definitions(definitions);
        }
    }

    /// Releases target tables the changefeed no longer writes.
    pub(crate) async fn release_tables(&mut self, tables: &[TableId]) -> Result<(), SinkError> {
        match self {
            AnySink::Postgres(s) => s.release_tables(tables).await,
            AnySink::Blackhole(_) => Ok(()),
        }
    }

    /// Follows a table renamed on the source, inside the open batch.
    pub(crate) async fn rename_table(
        &mut self,
        from: &TableId,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        match self {
            AnySink::Postgres(s) => s.rename_table(from, schema).await,
            AnySink::Blackhole(_) => Ok(()),
        }
    }

    pub(crate) async fn abort_batch(&mut self) {
        if let AnySink::Postgres(s) = self {
            s.abort_batch().await;
        }
    }
}

impl Sink for AnySink {
    async fn load_checkpoint(&mut self) -> Result<Option<Position>, SinkError> {
        match self {
            AnySink::Postgres(s) => s.load_checkpoint().await,
            AnySink::Blackhole(b) => Ok(b.checkpoint),
        }
    }

    async fn ensure_table(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        match self {
            AnySink::Postgres(s) => s.ensure_table(schema).await,
            AnySink::Blackhole(_) => Ok(()),
        }
    }

    async fn apply(&mut self, change: RowChange) -> Result<(), SinkError> {
        match self {
            AnySink::Postgres(s) => s.apply(change).await,
            AnySink::Blackhole(b) => {
                b.rows += 1;
                b.bytes += change.payload_bytes() as u64;
                Ok(())
            }
        }
    }

    async fn commit_batch(&mut self, checkpoint: Position) -> Result<(), SinkError> {
        match self {
            AnySink::Postgres(s) => s.commit_batch(checkpoint).await,
            AnySink::Blackhole(b) => {
                b.checkpoint = Some(checkpoint);
                Ok(())
            }
        }
    }
}
