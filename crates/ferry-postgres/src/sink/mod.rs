//! The PostgreSQL sink.
//!
//! - Tables: created from the source's shape when missing (types, `NOT NULL`, primary
//!   key), altered when the source's columns change ([`ddl`]); claimed by one changefeed
//!   each, and checked before anything is written when they existed before it
//!   ([`ownership`]). Columns Ferry did not create are never dropped or retyped. Tables
//!   Ferry created get the source's generated columns, defaults, identity, sequences,
//!   indexes, constraints and comments once copied ([`complete`]). A table renamed on the
//!   source is renamed here in the batch ([`rename`]); new enum labels ([`enums`]) and NOT
//!   NULL changes ([`nullability`]) follow.
//! - Tables of a MySQL source are created from their columns' logical types
//!   ([`foreign`]).
//! - Snapshot ([`copy`]): each chunk's COPY text is streamed into `COPY … FROM STDIN` in
//!   its own transaction together with its record in `_ferry.snapshot_chunks`; tables
//!   created for the copy get their primary key after it.
//! - Stream: a batch is one target transaction. Its changes are compacted per table and
//!   key into a **segment** ([`ferry_core::compact`]) that becomes a few set statements per table
//!   ([`statements`]), sent **pipelined**. A change that cannot be compacted ends the
//!   segment and is queued as a row statement of its own; the two never interleave out of
//!   order. Segments and queues are flushed at a row or byte bound, so memory stays
//!   bounded whatever a transaction's size. [`PgSink::commit_batch`] writes the checkpoint
//!   into `_ferry.checkpoints` in the same transaction and commits.
//! - Diff ([`readback`]): target tables read back per key range, in canonical text.

mod complete;
mod copy;
mod ddl;
mod enums;
mod follow;
mod foreign;
mod nullability;
mod ownership;
mod pipeline;
mod readback;
mod rename;
mod segment;
mod shape;
mod statements;

pub use copy::FinishedChunk;
pub use ownership::{preflight, release, TargetPolicy, TargetProblem};
pub(crate) use readback::PgTargetReader;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_core::{
    ConnectionUri, Position, RowChange, Settle, Sink, SinkError, TableId, TableSchema,
};
use tokio_postgres::{Client, Statement};

use ferry_core::compact::{self, SegmentMap};
use pipeline::{answered, run_pipelined, run_segment, InFlight};
use statements::{Op, Param, Shape};

/// Queued row statements are sent when this many are waiting…
const FLUSH_OPS: usize = 4096;
/// …and a segment is applied when it holds this many changes (a set statement's size), sent
/// without waiting so that the target applies it while the next one is compacted. A batch's
/// first segment closes at [`FIRST_SEGMENT_ROWS`], each next one at twice the one before, up
/// to this: a backlog batch (1,000–20,000 changes) reaches the target while it fills instead
/// of all at its commit, and a huge transaction still takes few segments (each with plain
/// inserts takes a savepoint, and past 64 subtransactions PostgreSQL's snapshots of every
/// session on the target slow down). Measured in docs/benchmarks.md.
const SEGMENT_ROWS: usize = 50_000;
/// The size at which a batch's first segment is applied (see [`SEGMENT_ROWS`]).
const FIRST_SEGMENT_ROWS: usize = 4_096;
/// …or when either holds this many bytes of values (bounds memory for huge transactions).
const FLUSH_BYTES: usize = 16 << 20;

/// A target table as this sink last made it, with its prepared statements.
struct TargetTable {
    schema: Arc<TableSchema>,
    /// The target's type of each source column, which set statements cast to.
    casts: Vec<String>,
    statements: HashMap<Shape, Statement>,
    /// Its chunks load in COPY binary ([`shape::loads_binary`]).
    binary: bool,
}

/// Writes into a PostgreSQL database.
pub struct PgSink {
    client: Arc<Client>,
    /// A segment's statements sent but not yet answered ([`pipeline`]).
    /// (In a mutex only to make the sink `Sync`; it is never locked while shared.)
    in_flight: Option<std::sync::Mutex<InFlight>>,
    /// The open batch's `BEGIN`, sent but not yet answered (see `begin_if_needed`).
    begin: Option<std::sync::Mutex<InFlight>>,
    changefeed: String,
    tables: HashMap<TableId, TargetTable>,
    in_batch: bool,
    /// Row statements waiting to be sent (empty while `segment` is not).
    queue: Vec<(Statement, Vec<Param>)>,
    queued_bytes: usize,
    /// Compacted changes per table (empty while `queue` is not).
    segment: SegmentMap,
    segment_rows: usize,
    segment_bytes: usize,
    /// The size at which the open segment is applied: grows within a batch.
    segment_limit: usize,
    /// The prepared checkpoint upsert.
    checkpoint_statement: Option<Statement>,
    /// Ownership and the handling of existing tables.
    policy: TargetPolicy,
    /// The source's definitions of tables this sink may create ([`complete`]).
    definitions: HashMap<TableId, crate::definition::TableDefinition>,
    /// Tables completed with their definition in this session.
    completed: HashSet<TableId>,
    /// Tables whose definition the stream announced changed: completed after the batch
    /// commits ([`follow`]).
    complete_after_commit: HashSet<TableId>,
    /// Write each change as its own statements, in source order (see
    /// [`Sink::set_in_order`]).
    in_order: bool,
    /// A table this sink writes has a foreign key on the target (or is referenced by one):
    /// every change is written in source order, always (see [`shape`]).
    foreign_keys: bool,
    /// Where the target is: enum labels are added on a connection of their own.
    uri: ConnectionUri,
    /// Whether the target compresses TOASTed values with lz4 ([`copy`]); asked once.
    lz4: Option<bool>,
    /// Whether the target's version is one binary COPY is known for ([`copy`]); asked once.
    binary_server: Option<bool>,
    /// This session writes ahead of commits ([`ferry_core::Sink::adopt_table`]).
    ahead_session: bool,
}

/// A failed connection to the target, keeping the class it was given where it was born.
pub(crate) fn connect_error(err: crate::PgError) -> SinkError {
    SinkError::Connect {
        what: err.what,
        class: err.class,
        source: err.source,
    }
}

pub(crate) fn statement_error(what: impl Into<String>, err: tokio_postgres::Error) -> SinkError {
    let err = crate::PgError::new(what, err);
    let class = err.class;
    SinkError::Statement {
        what: err.what.clone(),
        class,
        source: err.source,
    }
}

impl PgSink {
    /// Connects to the target and makes sure Ferry's bookkeeping tables exist.
    /// `changefeed` is the key its checkpoint and table claims are stored under. Refuses
    /// (before creating anything) a target that is the policy's source database.
    pub async fn connect(
        uri: &ConnectionUri,
        changefeed: &str,
        policy: TargetPolicy,
    ) -> Result<Self, SinkError> {
        let client = crate::connect::connect(uri, &format!("ferry-sink {changefeed}"))
            .await
            .map_err(connect_error)?;
        session_settings(&client).await?;
        if let Some(source) = &policy.source {
            // A target that hides its identity (a restricted managed service) cannot be
            // compared: say so, and carry on.
            match crate::identity::server_identity(&client).await {
                Ok(target) if &target == source => {
                    return Err(SinkError::Unsupported {
                        message: crate::identity::sink_is_source_message(&target),
                    })
                }
                Ok(_) => {}
                Err(e) if e.class == ferry_core::ErrorClass::Transient => {
                    return Err(connect_error(e))
                }
                Err(e) => {
                    tracing::warn!(changefeed, error = %e.chain(), "cannot compare the target with the source")
                }
            }
        }
        // Concurrent sinks (snapshot workers) may race to create the schema: retry once.
        if client.batch_execute(ddl::BOOKKEEPING).await.is_err() {
            client
                .batch_execute(ddl::BOOKKEEPING)
                .await
                .map_err(|e| statement_error("create _ferry bookkeeping tables", e))?;
        }
        Ok(PgSink {
            client: Arc::new(client),
            in_flight: None,
            begin: None,
            changefeed: changefeed.to_string(),
            tables: HashMap::new(),
            in_batch: false,
            queue: Vec::new(),
            queued_bytes: 0,
            segment: SegmentMap::default(),
            segment_rows: 0,
            segment_limit: FIRST_SEGMENT_ROWS,
            segment_bytes: 0,
            checkpoint_statement: None,
            policy,
            definitions: HashMap::new(),
            completed: HashSet::new(),
            complete_after_commit: HashSet::new(),
            in_order: false,
            foreign_keys: false,
            uri: uri.clone(),
            lz4: None,
            binary_server: None,
            ahead_session: false,
        })
    }

    fn begin_if_needed(&mut self) {
        if !self.in_batch {
            self.segment_limit = FIRST_SEGMENT_ROWS;
            // Not awaited: a live batch's BEGIN, statements and COMMIT cost one round trip
            // to the target, not two. A failed BEGIN fails the batch at its next `settle`.
            self.begin = pipeline::launch_begin(&self.client).map(std::sync::Mutex::new);
            self.in_batch = true;
        }
    }

    /// Sends everything pending, in order.
    async fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_segment().await?;
        self.flush_queue().await
    }

    /// Waits for the batch's `BEGIN` and the segment in flight, if any: their failure is
    /// the batch's.
    async fn settle(&mut self) -> Result<(), SinkError> {
        answered(self.begin.take()).await?;
        answered(self.in_flight.take()).await
    }

    /// Sends every queued row statement, pipelined, and waits for all of them.
    async fn flush_queue(&mut self) -> Result<(), SinkError> {
        if self.queue.is_empty() {
            return Ok(());
        }
        self.settle().await?;
        let queue = std::mem::take(&mut self.queue);
        self.queued_bytes = 0;
        run_pipelined(&self.client, &queue).await
    }

    /// Applies the segment: per table its deletes, then its upserts, then its partial
    /// updates, all pipelined.
    async fn flush_segment(&mut self) -> Result<(), SinkError> {
        self.settle().await?;
        let segment = self.segment_statements().await?;
        run_segment(&self.client, segment).await
    }

    /// Sends the segment (once the one before it is done) without waiting for it, so the
    /// next segment is compacted while the target applies this one.
    async fn launch_segment(&mut self) -> Result<(), SinkError> {
        self.settle().await?;
        let segment = self.segment_statements().await?;
        self.in_flight = pipeline::launch(&self.client, segment).map(std::sync::Mutex::new);
        Ok(())
    }

    /// The prepared statement of `shape` for `table`, prepared on first use.
    async fn statement(
        &mut self,
        table: &TableSchema,
        shape: Shape,
    ) -> Result<Statement, SinkError> {
        let target = self
            .tables
            .get_mut(&table.id)
            .ok_or_else(|| SinkError::Unsupported {
                message: format!("a change for {} arrived before its schema", table.id),
            })?;
        if let Some(s) = target.statements.get(&shape) {
            return Ok(s.clone());
        }
        let sql = statements::sql(&target.schema, &target.casts, &shape);
        let prepared = self
            .client
            .prepare(&sql)
            .await
            .map_err(|e| statement_error(format!("prepare a statement on {}", table.id), e))?;
        target.statements.insert(shape, prepared.clone());
        Ok(prepared)
    }

    /// Queues a row statement (after applying the segment, which came first).
    async fn queue(&mut self, table: &Arc<TableSchema>, op: Op) -> Result<(), SinkError> {
        self.flush_segment().await?;
        let statement = self.statement(table, op.shape).await?;
        self.queued_bytes += op.params.iter().map(Param::size).sum::<usize>();
        self.queue.push((statement, op.params));
        if self.queue.len() >= FLUSH_OPS || self.queued_bytes >= FLUSH_BYTES {
            self.flush_queue().await?;
        }
        Ok(())
    }

    /// Adds a change to the segment, or queues it as a row statement when it cannot be
    /// compacted.
    async fn compact(
        &mut self,
        table: &Arc<TableSchema>,
        change: RowChange,
    ) -> Result<(), SinkError> {
        let bytes = change.payload_bytes();
        // A table whose shape changed since its segment entry: apply the segment first.
        if compact::shape_changed(&self.segment, table) {
            self.flush_segment().await?;
        }
        let changes = compact::entry(&mut self.segment, table);
        match changes.absorb(change) {
            Ok(()) => {
                // Row statements queued before this change run before the segment (which
                // was empty while they queued).
                self.flush_queue().await?;
                self.segment_rows += 1;
                self.segment_bytes += bytes;
                if self.segment_rows >= self.segment_limit || self.segment_bytes >= FLUSH_BYTES {
                    self.segment_limit = (self.segment_limit * 2).min(SEGMENT_ROWS);
                    self.launch_segment().await?;
                }
                Ok(())
            }
            Err(change) => self.apply_alone(change).await,
        }
    }

    /// Queues the row statements of one change.
    async fn apply_alone(&mut self, change: RowChange) -> Result<(), SinkError> {
        match &change {
            RowChange::Insert { table, new } => {
                let op = statements::insert(table, new);
                self.queue(table, op).await
            }
            RowChange::Update { table, old, new } => {
                for op in statements::update(table, old.as_ref(), new) {
                    self.queue(table, op).await?;
                }
                Ok(())
            }
            RowChange::Delete { table, old } => {
                let op = statements::delete(table, old);
                self.queue(table, op).await
            }
            RowChange::Truncate { .. } => unreachable!("truncates are applied by `apply`"),
        }
    }

    /// Rolls back an open batch (after a failure), leaving no trace of it.
    pub async fn abort_batch(&mut self) {
        // Their answers no longer matter: the ROLLBACK below runs after them.
        self.in_flight = None;
        self.begin = None;
        self.queue.clear();
        self.queued_bytes = 0;
        self.segment.clear();
        self.segment_rows = 0;
        self.segment_bytes = 0;
        if self.in_batch {
            let _ = self.client.batch_execute("ROLLBACK").await;
            self.in_batch = false;
        }
    }
}

/// The settings of every session Ferry opens on the target. `synchronous_commit = on`
/// whatever the target's default: the engine tells the source's slot it may discard WAL
/// once `commit_batch` returns, so a commit the target has acknowledged must already be
/// flushed. With the target at `off`, a target crash would otherwise lose transactions the
/// source has already forgotten. Notices ("schema … already exists, skipping" for every
/// session's bookkeeping) stay out of the log.
pub(crate) async fn session_settings(client: &Client) -> Result<(), SinkError> {
    client
        .batch_execute(
            "SET search_path TO ''; SET synchronous_commit TO on; \
             SET client_min_messages TO warning",
        )
        .await
        .map_err(|e| statement_error("set session settings", e))
}

#[async_trait::async_trait]
impl Sink for PgSink {
    async fn load_checkpoint(&mut self) -> Result<Option<Position>, SinkError> {
        let row = self
            .client
            .query_opt(
                "SELECT position FROM _ferry.checkpoints WHERE changefeed = $1",
                &[&self.changefeed],
            )
            .await
            .map_err(|e| statement_error("read the checkpoint", e))?;
        row.map(|r| {
            serde_json::from_str(&r.get::<_, String>(0)).map_err(|e| SinkError::Unsupported {
                message: format!("the checkpoint in _ferry.checkpoints is unreadable: {e}"),
            })
        })
        .transpose()
    }

    async fn ensure_table(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        self.settle().await?;
        self.shape_table(schema, true).await
    }

    async fn apply(&mut self, change: RowChange) -> Result<(), SinkError> {
        self.begin_if_needed();
        match change {
            RowChange::Insert { ref table, .. }
            | RowChange::Update { ref table, .. }
            | RowChange::Delete { ref table, .. } => {
                if self.in_order {
                    if !self.segment.is_empty() {
                        self.flush_segment().await?;
                    }
                    return self.apply_alone(change).await;
                }
                let table = table.clone();
                self.compact(&table, change).await
            }
            RowChange::Truncate {
                tables,
                restart_identity,
            } => {
                self.flush().await?;
                let names: Vec<String> = tables.iter().map(|t| t.id.quoted()).collect();
                let sql = format!(
                    "TRUNCATE {}{}",
                    names.join(", "),
                    if restart_identity {
                        " RESTART IDENTITY"
                    } else {
                        ""
                    }
                );
                self.client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| statement_error("truncate", e))
            }
        }
    }

    async fn commit_batch(&mut self, checkpoint: Position) -> Result<(), SinkError> {
        let result = self.launch_commit(&checkpoint).await?.await;
        if result.is_ok() && !self.complete_after_commit.is_empty() {
            self.complete_changed_tables().await;
        }
        result
    }

    /// A batch that sent a segment while it filled (a backlog's, a large transaction's)
    /// sends its last statements and COMMIT, and is answered while the engine fills the
    /// next batch on this session (whose statements run after them on the target): the
    /// target applies the end of one batch while Ferry compacts the next. The engine seals
    /// no other batch before this one settles, so a batch whose COMMIT fails is never
    /// followed by a later one's. A smaller batch (a live stream's: one round trip) commits
    /// at once, as does one after which tables are completed: when live batches were
    /// answered on a task of their own too, the latency tail was longer (docs/benchmarks.md).
    async fn seal_batch(&mut self, checkpoint: Position) -> Result<Option<Settle>, SinkError> {
        if self.segment_limit == FIRST_SEGMENT_ROWS || !self.complete_after_commit.is_empty() {
            return self.commit_batch(checkpoint).await.map(|()| None);
        }
        self.launch_commit(&checkpoint).await.map(Some)
    }

    async fn abort_batch(&mut self) {
        PgSink::abort_batch(self).await
    }

    async fn follow_definition(
        &mut self,
        table: &TableId,
        definition: ferry_core::TableDefinition,
    ) -> Result<(), SinkError> {
        self.settle().await?;
        PgSink::follow_definition(self, table, definition).await
    }

    fn applies_ahead(&self) -> bool {
        !self.foreign_keys
    }

    async fn adopt_table(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        // The batch's changes so far go first, at the shape they were compacted for: the
        // table's statements are prepared anew for the adopted one. (A segment in flight
        // also fails as itself, not as the adoption's queries behind it.)
        self.flush().await?;
        self.adopt_shaped(schema).await
    }

    async fn flush_deferred(&mut self) -> Result<(), SinkError> {
        if !self.in_batch {
            self.complete_changed_tables().await;
        }
        Ok(())
    }

    fn set_in_order(&mut self, in_order: bool) {
        self.in_order = in_order || self.foreign_keys;
    }

    async fn rename_table(
        &mut self,
        from: &TableId,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        self.settle().await?;
        PgSink::rename_table(self, from, schema).await
    }

    async fn release_tables(&mut self, tables: &[TableId]) -> Result<(), SinkError> {
        self.settle().await?;
        PgSink::release_tables(self, tables).await
    }

    async fn reset_snapshot(&mut self) -> Result<(), SinkError> {
        self.reset_state().await
    }

    async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        PgSink::finished_chunks(self).await
    }

    fn use_definitions(&mut self, definitions: Vec<(TableId, ferry_core::TableDefinition)>) {
        self.use_source_definitions(definitions)
    }

    async fn ensure_table_for_copy(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        PgSink::ensure_table_for_copy(self, schema).await
    }

    fn bulk_formats(&self, schema: &TableSchema) -> &'static [ferry_core::BulkFormat] {
        self.copy_formats(schema)
    }

    async fn copy_chunk(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot: &Position,
        replace: bool,
        data: ferry_core::ChunkData,
    ) -> Result<u64, SinkError> {
        PgSink::copy_chunk(self, schema, chunk, snapshot, replace, data).await
    }

    async fn finish_table(&mut self, schema: &TableSchema) -> Result<(), SinkError> {
        self.ensure_key(schema).await
    }
}

/// Fixtures shared by the sink's unit tests.
#[cfg(test)]
mod fixtures {
    use bytes::Bytes;
    use ferry_core::{ColumnSchema, ReplicaIdentity, TableId, TableSchema, Value};

    /// `s.t (id, a, b)`, all text, keyed on the columns in `key`.
    pub(super) fn table(key: Vec<usize>) -> TableSchema {
        TableSchema {
            id: TableId::new("s", "t"),
            columns: ["id", "a", "b"]
                .iter()
                .map(|n| ColumnSchema {
                    name: n.to_string(),
                    type_name: "text".into(),
                    type_oid: 25,
                    logical: ferry_core::LogicalType::Text,
                    nullable: true,
                    missing_value: None,
                    has_default: false,
                })
                .collect(),
            key,
            identity: ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: Vec::new(),
            dialect: ferry_core::Dialect::Postgres,
        }
    }

    /// A text value.
    pub(super) fn text(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}
