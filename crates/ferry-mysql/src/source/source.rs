//! One attempt's MySQL source ([`MySource`]): a catalog connection, snapshots and the
//! binlog stream.
//!
//! # The changefeed's place is its checkpoint
//! A binlog reader leaves nothing on the server (no slot): the position a changefeed
//! resumes from is the checkpoint its sink stores, which the engine hands to
//! [`Source::start_stream`]. So [`Source::stream_state`] is always usable here (whether
//! the binlog still holds the checkpoint is found when the stream starts, and fails
//! definitely if not), and `create_stream` is a snapshot like any other:
//! [`Source::keeps_position`] tells the engine to start from its own records.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::gtid::MariaDbGtidList;
use ferry_core::source::{ChangeStream, Confirmed, EventSender};
use ferry_core::{
    ConnectionUri, ErrorClass, Position, ServerIdentity, SnapshotExport, Source, SourceError,
    SourceTable, StreamState, TableDefinition, TableFilter, TableId, TablePlan,
};
use futures::future::BoxFuture;
use mysql_async::Conn;

use super::stream::{self, MyStream};
use super::{catalog, current_gtid_pos, mariadb_list, snapshot};
use crate::connect::{connect, server_identity, source_error};

/// A MySQL/MariaDB source for one attempt of a changefeed.
pub struct MySource {
    uri: ConnectionUri,
    feed: String,
    timeout: Duration,
    catalog: Conn,
    /// The earliest snapshot position this attempt exported: where a stream with no
    /// checkpoint starts.
    exported: Option<MariaDbGtidList>,
}

impl MySource {
    pub(super) async fn open(
        uri: &ConnectionUri,
        feed: &str,
        timeout: Duration,
    ) -> Result<Self, SourceError> {
        let catalog = connect(uri)
            .await
            .map_err(|e| source_error("connect to the source", e))?;
        Ok(MySource {
            uri: uri.clone(),
            feed: feed.to_string(),
            timeout,
            catalog,
            exported: None,
        })
    }

    async fn export(&mut self) -> Result<Box<dyn SnapshotExport>, SourceError> {
        let export = snapshot::open_export(&self.uri).await?;
        if self.exported.is_none() {
            self.exported = Some(mariadb_list(&export.position())?);
        }
        Ok(Box::new(export))
    }
}

/// Keyless tables replicate as multisets (rows carry every column); none selected is
/// worth a warning.
fn table_warnings(tables: &[SourceTable]) -> Vec<String> {
    if tables.is_empty() {
        return vec![
            "the table rules select no table of the source; update `tables` or \
                     create the tables, then resume the changefeed"
                .to_string(),
        ];
    }
    Vec::new()
}

#[async_trait]
impl Source for MySource {
    async fn identity(&mut self) -> Result<Option<ServerIdentity>, SourceError> {
        let database = self.uri.database();
        Ok(Some(
            server_identity(&mut self.catalog, &database)
                .await
                .map_err(|e| source_error("read the source's identity", e))?,
        ))
    }

    async fn stream_state(&mut self) -> Result<StreamState, SourceError> {
        Ok(StreamState::Usable)
    }

    fn keeps_position(&self) -> bool {
        false
    }

    /// InnoDB gives a table a new id when an `ALTER TABLE` rebuilds it: the stream reports
    /// tables dropped and created again.
    fn ids_identify_tables(&self) -> bool {
        false
    }

    /// The binlog holds each `RENAME` the DDL reader recognizes at its position.
    fn renames_in_order(&self) -> bool {
        true
    }

    async fn select_tables(
        &mut self,
        filter: &TableFilter,
    ) -> Result<Vec<SourceTable>, SourceError> {
        let database = self.uri.database();
        Ok(catalog::selected_tables(&mut self.catalog, &database, filter).await?)
    }

    fn table_warnings(&self, tables: &[SourceTable]) -> Vec<String> {
        table_warnings(tables)
    }

    async fn table_names(&mut self, ids: &[u32]) -> Result<HashMap<u32, TableId>, SourceError> {
        let database = self.uri.database();
        catalog::table_names(&mut self.catalog, &database, ids).await
    }

    async fn current_position(&mut self) -> Result<Position, SourceError> {
        current_gtid_pos(&mut self.catalog).await
    }

    /// Nothing to publish: the binlog carries every table.
    async fn prepare(&mut self, _tables: &[SourceTable]) -> Result<Vec<TableId>, SourceError> {
        Ok(Vec::new())
    }

    async fn plan_table(&mut self, table: &SourceTable) -> Result<TablePlan, SourceError> {
        snapshot::plan_table(
            &mut self.catalog,
            &table.schema,
            table.estimated_rows.unwrap_or(0),
        )
        .await
    }

    /// No definitions: a sink of another kind creates tables from logical types.
    async fn definitions(
        &mut self,
        _tables: &[&SourceTable],
    ) -> Result<Vec<(TableId, TableDefinition)>, SourceError> {
        Ok(Vec::new())
    }

    async fn create_stream(&mut self) -> Result<Box<dyn SnapshotExport>, SourceError> {
        self.export().await
    }

    async fn export_snapshot(&mut self) -> Result<Box<dyn SnapshotExport>, SourceError> {
        self.export().await
    }

    async fn start_stream(
        &mut self,
        from: Option<Position>,
        tables: HashMap<u32, TableId>,
    ) -> Result<Box<dyn ChangeStream>, SourceError> {
        let from = match (&from, &self.exported) {
            (Some(position), _) => mariadb_list(position)?,
            (None, Some(exported)) => exported.clone(),
            (None, None) => {
                // Nothing copied and nothing applied yet (`snapshot: never`, or no table
                // selected): the stream starts now.
                let now = current_gtid_pos(&mut self.catalog).await?;
                tracing::info!(changefeed = %self.feed, position = %now, "no checkpoint: streaming from the source's current position");
                mariadb_list(&now)?
            }
        };
        let stream = stream::start(&self.uri, &self.feed, from, tables, self.timeout).await?;
        Ok(Box::new(stream))
    }
}

impl ChangeStream for MyStream {
    /// Nothing to acknowledge: the server keeps binlogs by its own expiry, not by readers.
    fn run(self: Box<Self>, events: EventSender, _confirmed: Confirmed) -> BoxFuture<'static, ()> {
        Box::pin(MyStream::run(*self, events))
    }
}

/// A position that is no MariaDB GTID list, refused.
pub(super) fn not_a_gtid_list(position: &Position) -> SourceError {
    SourceError::message(
        format!(
            "position {position} is a {} position; a MariaDB source streams from a GTID list \
             such as 0-1-42",
            position.kind()
        ),
        ErrorClass::Definite,
    )
}
