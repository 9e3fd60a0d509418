//! Reading target tables back for a diff ([`ferry_core::TargetReader`]): one
//! `COPY (SELECT …) TO STDOUT` per chunk on a connection of its own, decoded as a source's
//! snapshot rows are. The session's settings (see [`crate::connect::config`]) print every
//! value in its canonical text, so the target's rows compare with the source's as text.
//!
//! The target table is read without `ONLY`: a user's target table may be partitioned even
//! where the source's is not. Columns are read by the source's names, so columns the user
//! added on the target are not compared.

use async_trait::async_trait;
use ferry_core::{
    ChunkSpec, ConnectionUri, SinkError, SourceError, TableSchema, TargetReader, TargetRows,
};
use futures::{StreamExt, TryStreamExt};
use tokio_postgres::Client;

use super::{connect_error, statement_error};

/// Reads a PostgreSQL target.
pub(crate) struct PgTargetReader {
    client: Client,
}

impl PgTargetReader {
    /// Connects to the target for changefeed `feed`'s diff.
    pub(crate) async fn connect(uri: &ConnectionUri, feed: &str) -> Result<Self, SinkError> {
        let client = crate::connect::connect(uri, &format!("ferry-diff {feed}"))
            .await
            .map_err(connect_error)?;
        crate::catalog::prepare_session(&client)
            .await
            .map_err(connect_error)?;
        Ok(PgTargetReader { client })
    }
}

#[async_trait]
impl TargetReader for PgTargetReader {
    async fn read_chunk(
        &mut self,
        schema: &TableSchema,
        key_column: Option<&str>,
        chunk: &ChunkSpec,
    ) -> Result<TargetRows, SinkError> {
        let sql = crate::snapshot::copy_out_sql(schema, key_column, chunk, true);
        let what = format!("read back target {} chunk {}", schema.id, chunk.index);
        let data = self
            .client
            .copy_out(&sql)
            .await
            .map_err(|e| statement_error(what.clone(), e))?
            .map_err(move |e| SourceError::from(crate::PgError::new("read back target rows", e)))
            .boxed();
        let rows = crate::copy_text::decode_rows(data, schema.columns.len(), what.clone());
        Ok(rows
            .map_err(move |e| SinkError::Statement {
                what: what.clone(),
                class: e.class,
                source: Box::new(e),
            })
            .boxed())
    }
}
