//! The contract every sink keeps.
//!
//! # The checkpoint invariant
//! A sink makes a batch durable, *then* the checkpoint (the source position after the
//! batch's last transaction) is saved, *then* the source is told it may discard its log.
//! Never reorder. Database sinks save the checkpoint **in the target, in the same
//! transaction as the data**, so a crash can neither lose nor double-apply a transaction.
//! Stored positions never move backwards.
//!
//! # Batches
//! The engine opens a batch, feeds it whole source transactions (schema announcements and
//! row changes, in commit order), and commits it with the position after the last one.
//! A sink may write a batch's changes before the commit (memory stays bounded for a
//! transaction of any size) but nothing of it may become visible or durable before
//! [`Sink::commit_batch`] returns, and a batch that is never committed leaves no trace.

use std::sync::Arc;

use async_trait::async_trait;

use futures::stream::BoxStream;

use crate::snapshot::{BulkFormat, ChunkData, ChunkSpec, FinishedChunk};
use crate::{ErrorClass, Position, Row, RowChange, TableDefinition, TableId, TableSchema};

/// What a changefeed does with a target table that already holds rows when it first
/// writes it (a table the user created, or one a deleted changefeed left behind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExistingTarget {
    /// Refuse a table that is not empty (the default: nothing is written).
    #[default]
    Fail,
    /// Empty it before the copy.
    Truncate,
    /// Keep its rows; the copy and the stream upsert by key.
    Append,
}

/// What a changefeed does when a replicated table's shape changes on the source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DdlPolicy {
    /// Follow what can be followed exactly (columns, NOT NULL, enum labels, renamed and new
    /// tables); stop on the rest (the default).
    #[default]
    Apply,
    /// Change nothing on the target: stop when a table's shape there no longer matches the
    /// source's, until the operator makes it match (or switches to `apply`) and resumes.
    Stop,
}

impl std::fmt::Display for ExistingTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExistingTarget::Fail => "fail",
            ExistingTarget::Truncate => "truncate",
            ExistingTarget::Append => "append",
        })
    }
}

/// A sink failure.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The target could not be reached or the connection broke.
    #[error("cannot reach the target: {what}")]
    Connect {
        /// What was attempted.
        what: String,
        /// Transient for a network cut; definite for a refusal retrying cannot fix (a
        /// certificate not trusted, a wrong password).
        class: ErrorClass,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The target refused a statement.
    #[error("target refused {what}")]
    Statement {
        /// What was attempted (never row values).
        what: String,
        /// Whether to retry.
        class: ErrorClass,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The change cannot be applied safely; the changefeed must stop.
    #[error("{message}")]
    Unsupported {
        /// What and why, with a hint what to do.
        message: String,
    },
}

impl SinkError {
    /// Whether retrying can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            SinkError::Connect { class, .. } => *class,
            SinkError::Statement { class, .. } => *class,
            SinkError::Unsupported { .. } => ErrorClass::Definite,
        }
    }
}

/// What makes a sealed batch durable ([`Sink::seal_batch`]).
pub type Settle = futures::future::BoxFuture<'static, Result<(), SinkError>>;

/// Where a sink's checkpoint lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointStore {
    /// In the target, committed with the data: a crash can neither lose nor double a
    /// transaction (databases).
    InTarget,
    /// The target cannot hold it (streams): the engine saves it in its metadata store once
    /// [`Sink::commit_batch`] returned, before the source is told; delivery is then
    /// at-least-once, and [`TxMeta`] gives every change a stable identity to deduplicate by.
    External,
}

/// What a sink learns about each source transaction before its changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxMeta {
    /// Where the transaction commits in the source's log.
    pub commit: Position,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_time_us: i64,
    /// The source's id for the transaction.
    pub source_tx_id: u64,
}

/// A destination for changes. See the module docs for the invariants. Object-safe: the
/// engine holds `Box<dyn Sink>`.
#[async_trait]
pub trait Sink: Send {
    /// Where this sink's checkpoint lives; [`CheckpointStore::InTarget`] unless it says so.
    fn checkpoint_store(&self) -> CheckpointStore {
        CheckpointStore::InTarget
    }

    /// The position stored with the data by the last committed batch, if any (asked only
    /// of sinks that store it in the target).
    async fn load_checkpoint(&mut self) -> Result<Option<Position>, SinkError>;

    /// A source transaction begins in the open batch; its changes follow, in order (the
    /// n-th [`Sink::apply`] after it is its change number n, counting from 0).
    async fn begin_transaction(&mut self, _tx: &TxMeta) -> Result<(), SinkError> {
        Ok(())
    }

    /// Brings the target table in line with `schema` (create, or follow column changes).
    async fn ensure_table(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError>;

    /// Whether following `schema` ([`Sink::ensure_table`]) needs a batch of its own: the
    /// target table must change, and the sink cannot change it while the open batch holds
    /// changes of it (MariaDB's DDL commits implicitly, and waits for the batch's lock on
    /// the table). The engine then commits the batch before the source transaction that
    /// announced the shape, so the table changes between two batches and a crash in
    /// between re-delivers that transaction (the sink's change must find itself done).
    /// When that transaction already wrote into the batch, the engine replays it alone;
    /// when it wrote the table itself before the change, it stops. A sink whose DDL joins
    /// the batch's transaction never needs one (the default).
    async fn needs_own_batch(&mut self, _schema: &Arc<TableSchema>) -> Result<bool, SinkError> {
        Ok(false)
    }

    /// Adds one change to the open batch (opening one if needed).
    async fn apply(&mut self, change: RowChange) -> Result<(), SinkError>;

    /// With `true`, writes each following change as the source made it, in source order,
    /// instead of merging a batch's changes per key: slower, but a constraint the source
    /// satisfied change by change (rows trading a UNIQUE value) is satisfied on the target
    /// too. The engine asks for it when it replays a refused batch.
    fn set_in_order(&mut self, _in_order: bool) {}

    /// Whether a second session of this sink may hold one source transaction's changes
    /// ahead of its commit ([`crate::ahead`]) while this one goes on applying the
    /// transactions that commit before it. The engine then guarantees that the second
    /// session never writes a row this one holds uncommitted, and that this one changes no
    /// table the second session wrote while it is open; the sink makes sure the second
    /// session never holds its locks for long while idle (something outside Ferry's
    /// sessions, such as another client's DDL queued on a table, may still make the main
    /// session wait for it). Default: `false`.
    fn applies_ahead(&self) -> bool {
        false
    }

    /// Learns `schema`'s target table as another session of this changefeed shaped it, so
    /// [`Sink::apply`] can write it: reads, changes nothing on the target (no claim, no
    /// DDL). Asked only of a second session that applies ahead; fails when the table is not
    /// as `schema` describes it, or cannot be written ahead.
    async fn adopt_table(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        Err(SinkError::Unsupported {
            message: format!("this sink cannot write {} ahead of a commit", schema.id),
        })
    }

    /// Outside a batch, does now what the sink keeps for its next commit (completing tables
    /// with their definition), so the session neither holds nor queues work on the target:
    /// asked before a second session writes a table ahead ([`crate::ahead`]). Default:
    /// nothing is kept.
    async fn flush_deferred(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Makes the open batch durable together with `checkpoint`.
    async fn commit_batch(&mut self, checkpoint: Position) -> Result<(), SinkError>;

    /// Ends the open batch at `checkpoint` and returns what makes it durable, when that
    /// is still under way: `Some(settle)` resolves once the destination acknowledged the
    /// whole batch (resolving with an error, the batch is over and nothing of it stays).
    /// The engine fills the next batch while `settle` waits (acknowledgements then overlap
    /// the next batch's sending instead of stalling the stream at every batch end), runs
    /// `settle` on a task of its own, and saves the checkpoint of each batch once it and
    /// every batch before it settled. A sink whose checkpoint commits with the batch
    /// ([`CheckpointStore::InTarget`]) is asked to seal its next batch only once this one
    /// settled, so a later checkpoint never covers a batch that failed. `settle` must not
    /// need the sink to make progress. The default commits and returns `None`: durable on
    /// return.
    async fn seal_batch(&mut self, checkpoint: Position) -> Result<Option<Settle>, SinkError> {
        self.commit_batch(checkpoint).await.map(|()| None)
    }

    /// Discards the open batch, if any: nothing of it stays.
    async fn abort_batch(&mut self);

    /// Follows a table renamed on the source (`from`, now `schema.id`), inside the open
    /// batch.
    async fn rename_table(
        &mut self,
        from: &TableId,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError>;

    /// Releases target tables the changefeed no longer writes (another may claim them).
    async fn release_tables(&mut self, tables: &[TableId]) -> Result<(), SinkError>;

    /// Forgets every snapshot marker: a new first snapshot begins.
    async fn reset_snapshot(&mut self) -> Result<(), SinkError>;

    /// The snapshot chunks the target holds.
    async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError>;

    /// The source's definitions of tables this sink may create (see
    /// [`crate::TableDefinition`]); a sink that cannot use them ignores them.
    fn use_definitions(&mut self, _definitions: Vec<(TableId, TableDefinition)>) {}

    /// Follows a table's definition announced by the stream
    /// ([`crate::SourceEvent::Definition`]) at its position: what the source dropped goes
    /// at once, inside the open batch; what it added comes once the batch is committed. A
    /// sink that cannot use definitions ignores them.
    async fn follow_definition(
        &mut self,
        _table: &TableId,
        _definition: TableDefinition,
    ) -> Result<(), SinkError> {
        Ok(())
    }

    /// Creates or follows a table for a bulk copy (its key comes after the copy, in
    /// [`Sink::finish_table`]).
    async fn ensure_table_for_copy(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError>;

    /// The bulk formats [`Sink::copy_chunk`] loads into `schema`'s table besides rows
    /// (none: rows only), as [`Sink::ensure_table_for_copy`] left that table.
    fn bulk_formats(&self, _schema: &TableSchema) -> &'static [BulkFormat] {
        &[]
    }

    /// Loads one chunk of a snapshot taken at `snapshot` and commits it with its marker.
    /// `replace`: the chunk is the whole table, copied again; rows already there are
    /// replaced. Returns the rows loaded.
    async fn copy_chunk(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot: &Position,
        replace: bool,
        data: ChunkData,
    ) -> Result<u64, SinkError>;

    /// Completes a copied table (its key, then what the source's definition adds).
    async fn finish_table(&mut self, schema: &TableSchema) -> Result<(), SinkError>;
}

/// Rows read back from a target table, as a [`TargetReader`] streams them.
pub type TargetRows = BoxStream<'static, Result<Row, SinkError>>;

/// Reads a changefeed's target tables back, for a diff against the source. A sink that
/// can be read offers one through [`crate::SinkConnector::reader`]; streams and files
/// cannot.
///
/// Rows come in the same form a source's [`crate::ChunkReader`] gives them: each value in
/// its column's canonical text (see [`crate::logical`]), in the source schema's column
/// order. The diff compares that text, so a target of another database kind compares
/// with its source once its reader prints canonical text.
#[async_trait]
pub trait TargetReader: Send {
    /// The rows of `schema`'s target table whose `key_column` lies in `chunk`'s range (the
    /// whole table when `key_column` is `None`), in no particular order. Each call sees
    /// the target as committed when it starts.
    async fn read_chunk(
        &mut self,
        schema: &TableSchema,
        key_column: Option<&str>,
        chunk: &ChunkSpec,
    ) -> Result<TargetRows, SinkError>;
}
