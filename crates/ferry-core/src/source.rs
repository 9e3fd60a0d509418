//! The data plane of a source: what one attempt of a changefeed asks of it.
//!
//! ```text
//! SourceConnector::open ─► Source ─┬─ select_tables, prepare, plan_table, definitions
//!                                  ├─ create_stream / export_snapshot ─► SnapshotExport
//!                                  │     └─ reader() ─► ChunkReader::read ─► ChunkData
//!                                  └─ start_stream ─► ChangeStream::run ─► SourceEvent…
//!                                                       ◄── confirmed positions
//! ```
//!
//! A source keeps the changefeed's place in its log (PostgreSQL: a replication slot), so
//! "stream" below means that place. [`Source::create_stream`] creates it together with a
//! snapshot of the data at exactly its start: chunks read in that snapshot and the stream
//! that follows meet without gap or overlap. [`Source::export_snapshot`] takes a snapshot at
//! a later position, for tables copied after the stream began.
//!
//! Tables are tracked by the source's id for them ([`SourceTable::source_id`]), so a table
//! renamed on the source is recognized as the same table.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use crate::snapshot::{BulkFormat, ChunkData, ChunkSpec, TablePlan};
use crate::{Position, SourceError, SourceEvent, TableFilter, TableId, TableSchema};

/// A table the rules select, with what planning its copy needs.
#[derive(Clone, Debug)]
pub struct SourceTable {
    /// The table's shape.
    pub schema: TableSchema,
    /// The source's id for the table (PostgreSQL: its OID); stable across renames.
    pub source_id: u32,
    /// The source's row estimate, `None` when unknown.
    pub estimated_rows: Option<u64>,
    /// The table's size on disk, in bytes.
    pub total_bytes: u64,
}

/// A database's identity: a sink refuses to write into the database it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerIdentity {
    /// The server's (cluster's) unique id.
    pub system_identifier: String,
    /// The database within it.
    pub database: String,
}

impl std::fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "database {} of cluster {}",
            self.database, self.system_identifier
        )
    }
}

/// Whether the changefeed's place in the source's log exists and still serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Not created yet, or dropped: `description` says so in the source's terms, for a
    /// changefeed that had streamed from it.
    Absent {
        /// What is missing (`replication slot … is gone from the source`).
        description: String,
    },
    /// Exists and can stream on from its confirmed position.
    Usable,
    /// Exists but the log after its confirmed position is gone, or vanished after it was
    /// used: streaming on would skip changes.
    Lost {
        /// What happened, naming the object (`replication slot … was invalidated`).
        description: String,
        /// What it had confirmed, when known.
        confirmed: Option<Position>,
    },
}

/// Source-specific table definitions (indexes, constraints, defaults …) a sink of the
/// same database kind uses to complete the tables it creates. Opaque to the engine.
#[derive(Clone)]
pub struct TableDefinition(pub Arc<dyn std::any::Any + Send + Sync>);

/// The same definition: one read, handed on (definitions are compared by the source that
/// reads them, which knows what they hold).
impl PartialEq for TableDefinition {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for TableDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TableDefinition(..)")
    }
}

/// One attempt's connection to the source. Dropping it releases everything it holds.
#[async_trait]
pub trait Source: Send {
    /// The source database's identity, `None` when the source hides it (a restricted
    /// managed service): then it cannot be compared with the sink's.
    async fn identity(&mut self) -> Result<Option<ServerIdentity>, SourceError>;

    /// The state of the changefeed's stream.
    async fn stream_state(&mut self) -> Result<StreamState, SourceError>;

    /// Whether the source keeps the changefeed's place in its log (PostgreSQL: a slot), so
    /// [`Source::start_stream`] with no position resumes there. A source that does not (a
    /// MySQL binlog reader) is handed the checkpoint, else the earliest snapshot its copied
    /// chunks were read in.
    fn keeps_position(&self) -> bool {
        true
    }

    /// Whether a table keeps its source id for as long as it exists (PostgreSQL: its OID),
    /// so a planned table's name under a new id is a table dropped and created again, which
    /// the engine copies anew. A source whose ids change when a table is rebuilt (InnoDB's,
    /// on a copying `ALTER TABLE`) reports re-created tables in its stream instead
    /// ([`crate::SourceEvent::Recreated`]).
    fn ids_identify_tables(&self) -> bool {
        true
    }

    /// Whether the stream announces each rename at its position, whether or not the table
    /// changes after it (a binlog's `RENAME` statement), so two renames are followed in the
    /// source's order: a swap (`a` to `a_old`, `a_new` to `a`) made while the changefeed
    /// was not streaming is followed. PostgreSQL's stream announces a rename only with the
    /// table's next change, so the engine stops at such a swap instead.
    fn renames_in_order(&self) -> bool {
        false
    }

    /// The tables `filter` selects.
    async fn select_tables(
        &mut self,
        filter: &TableFilter,
    ) -> Result<Vec<SourceTable>, SourceError>;

    /// What the operator should know about the selected tables (a table whose updates
    /// cannot replicate, or none selected at all), for the status's warnings.
    fn table_warnings(&self, tables: &[SourceTable]) -> Vec<String>;

    /// The current names of the tables with these source ids (absent: dropped).
    async fn table_names(&mut self, ids: &[u32]) -> Result<HashMap<u32, TableId>, SourceError>;

    /// The source's current position.
    async fn current_position(&mut self) -> Result<Position, SourceError>;

    /// Makes the source publish exactly `tables`. Returns the tables that were streamed
    /// insert-only and now replicate every operation (a key or full row identity was set
    /// meanwhile): their updates and deletes before were lost.
    async fn prepare(&mut self, tables: &[SourceTable]) -> Result<Vec<TableId>, SourceError>;

    /// Plans the copy of `table` (chunks of its key's range when worth it).
    async fn plan_table(&mut self, table: &SourceTable) -> Result<TablePlan, SourceError>;

    /// Plans a diff of `table`: chunks of its key's range of about `rows_per_chunk` rows
    /// each where the source can cut them, so a diff holds one chunk's keys at a time and
    /// resumes from its last finished chunk. By default the copy's plan.
    async fn plan_diff(
        &mut self,
        table: &SourceTable,
        _rows_per_chunk: u64,
    ) -> Result<TablePlan, SourceError> {
        self.plan_table(table).await
    }

    /// The definitions of `tables` for the sink to complete the tables it creates.
    async fn definitions(
        &mut self,
        tables: &[&SourceTable],
    ) -> Result<Vec<(TableId, TableDefinition)>, SourceError>;

    /// Creates the changefeed's stream, and a snapshot exactly at its start. The stream
    /// must be started by this same `Source` (the snapshot lives until then).
    async fn create_stream(&mut self) -> Result<Box<dyn SnapshotExport>, SourceError>;

    /// A snapshot at the current position, independent of the stream; it lives as long
    /// as the returned value.
    async fn export_snapshot(&mut self) -> Result<Box<dyn SnapshotExport>, SourceError>;

    /// Asks the stream started next to send the changes of transactions still in progress
    /// ahead of their commit ([`crate::Ahead`]), where the source learns them before the
    /// commit; a source that does not ignores it (the default).
    fn stream_ahead(&mut self, _on: bool) {}

    /// Starts streaming after `from` (`None`: from the stream's confirmed position).
    /// `tables` maps the source ids of the replicated tables to their target names.
    async fn start_stream(
        &mut self,
        from: Option<Position>,
        tables: HashMap<u32, TableId>,
    ) -> Result<Box<dyn ChangeStream>, SourceError>;
}

/// A consistent snapshot of the source that parallel readers share.
#[async_trait]
pub trait SnapshotExport: Send + Sync {
    /// The position the snapshot shows the data at.
    fn position(&self) -> Position;

    /// The bulk formats the readers can produce for `schema`'s table, preferred first
    /// (none: rows only).
    fn bulk_formats(&self, _schema: &TableSchema) -> &'static [BulkFormat] {
        &[]
    }

    /// A new reader inside the snapshot (one connection; one per parallel worker).
    async fn reader(&self) -> Result<Box<dyn ChunkReader>, SourceError>;
}

/// Reads chunks inside a snapshot.
#[async_trait]
pub trait ChunkReader: Send {
    /// Starts reading one chunk of `schema`'s table: encoded in `format` (one of
    /// [`SnapshotExport::bulk_formats`]), or as rows when `None`.
    async fn read(
        &mut self,
        schema: &TableSchema,
        plan: &TablePlan,
        chunk: &ChunkSpec,
        format: Option<BulkFormat>,
    ) -> Result<ChunkData, SourceError>;
}

/// Where a stream sends its events.
pub type EventSender = mpsc::Sender<Result<SourceEvent, SourceError>>;

/// The positions the engine confirms: everything up to one is durable in the target, so
/// the source may discard its log up to there.
pub type Confirmed = watch::Receiver<Option<Position>>;

/// A started stream of committed transactions.
pub trait ChangeStream: Send {
    /// Reads until the receiver of `events` is dropped or an error (sent, then the end);
    /// acknowledges every position `confirmed` reports.
    fn run(self: Box<Self>, events: EventSender, confirmed: Confirmed) -> BoxFuture<'static, ()>;
}
