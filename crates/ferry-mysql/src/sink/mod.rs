//! The MySQL/MariaDB sink.
//!
//! ```text
//! schema ──► shape (claim, CREATE DATABASE/TABLE on a side connection)
//! changes ──► compact per key ──► multi-row statements ──┐
//!                                  row statements ───────┼─► one InnoDB transaction
//! commit_batch(position) ──► _ferry.checkpoints upsert ──┘   … COMMIT (one round trip)
//! copy_chunk ──► LOAD DATA LOCAL + _ferry.snapshot_chunks marker, one transaction
//! ```
//!
//! - Tables ([`shape`]): a table's schema is a database on the target, created when
//!   missing, and its column names are exactly the source's. Tables are created from the
//!   source's shape ([`types`]) with the key up front (InnoDB clusters rows by it, so a
//!   key built after a load would rebuild the table). A table is claimed by one changefeed
//!   ([`ownership`]); one that existed before it is checked and handled by
//!   `existing_target`. MariaDB commits DDL implicitly, so shaping runs on a connection
//!   of its own, never inside a batch's transaction.
//! - Column changes ([`reshape`]): on a table the changefeed owns, columns added and
//!   dropped on the source (only those Ferry created are dropped) and widened types are
//!   followed with one `ALTER TABLE`, between two batches: the sink tells the engine
//!   ([`Sink::needs_own_batch`]) when the open batch holds changes of the table, and the
//!   engine commits it first.
//! - Stream ([`apply`]): a batch is one transaction. Its changes are compacted per table
//!   and key into a **segment** ([`ferry_core::compact`]) that becomes a few multi-row
//!   statements ([`statements`]); a change that cannot be compacted ends the segment and queues row
//!   statements of its own, so the two never run out of order. Segment and queue are
//!   flushed at a row or byte bound: memory stays bounded whatever a transaction's size.
//!   [`Sink::commit_batch`] sends the last statements, the checkpoint and `COMMIT` as one
//!   multi-statement query.
//! - A TRUNCATE is a `DELETE` (MariaDB's TRUNCATE would commit the batch); a rename runs
//!   on the side connection, refused when the open batch wrote the table already (the
//!   engine then replays one source transaction per batch).
//! - Snapshot ([`copy`]): each chunk's rows are streamed into `LOAD DATA LOCAL INFILE`
//!   (or multi-row INSERTs) in one transaction together with its marker.

mod apply;
mod array;
mod copy;
mod ownership;
mod reshape;
mod shape;
mod statements;
mod types;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::compact::SegmentMap;
use ferry_core::{
    ConnectionUri, ErrorClass, Position, RowChange, Sink, SinkConnector, SinkError, SinkUri,
    TableId, TableSchema, TargetPolicy, TargetProblem,
};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::connect::sink_error;
use apply::Work;
use statements::Target;

/// Writes changefeeds into a MySQL or MariaDB server.
#[derive(Clone, Copy, Debug, Default)]
pub struct MySqlSinkConnector;

fn connection(uri: &SinkUri) -> Result<&ConnectionUri, SinkError> {
    match uri {
        SinkUri::Mysql(uri) => Ok(uri),
        other => Err(SinkError::Unsupported {
            message: format!("the MySQL sink was handed a {} URI", other.masked()),
        }),
    }
}

/// Opens a sink connection: Ferry's session settings, and `affected_rows` counting rows
/// matched (not only changed), so a keyless row's update that changes nothing still
/// shows it was found.
pub(crate) async fn open(uri: &ConnectionUri) -> Result<Conn, SinkError> {
    let opts = crate::connect::opts(uri).map_err(|e| SinkError::Connect {
        what: "read the sink URI".into(),
        class: ErrorClass::Definite,
        source: Box::new(e),
    })?;
    let opts = mysql_async::OptsBuilder::from_opts(opts).client_found_rows(true);
    Conn::new(opts).await.map_err(|e| SinkError::Connect {
        what: format!(
            "connect to {}:{}",
            uri.host(),
            uri.port_or(crate::connect::DEFAULT_PORT)
        ),
        class: crate::connect::error_class(&e),
        source: Box::new(e),
    })
}

#[async_trait]
impl SinkConnector for MySqlSinkConnector {
    async fn connect(
        &self,
        uri: &SinkUri,
        feed: &str,
        policy: TargetPolicy,
    ) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(
            MySqlSink::connect(connection(uri)?, feed, policy).await?,
        ))
    }

    async fn preflight(
        &self,
        uri: &SinkUri,
        feed: &str,
        policy: &TargetPolicy,
        tables: &[TableSchema],
        copies: bool,
    ) -> Result<Option<TargetProblem>, SinkError> {
        let mut conn = open(connection(uri)?).await?;
        if let Some(message) = sink_is_source(&mut conn, policy).await? {
            return Ok(Some(TargetProblem::SinkIsSource(message)));
        }
        ownership::preflight(
            &mut conn,
            feed,
            &policy.server_id,
            tables,
            policy.existing_target,
            copies,
        )
        .await
    }

    async fn release(&self, uri: &SinkUri, feed: &str, server_id: &str) -> Result<(), SinkError> {
        let mut conn = open(connection(uri)?).await?;
        ownership::release(&mut conn, feed, server_id).await
    }
}

/// Why the target is the policy's source server, if it is.
async fn sink_is_source(
    conn: &mut Conn,
    policy: &TargetPolicy,
) -> Result<Option<String>, SinkError> {
    let Some(source) = &policy.source else {
        return Ok(None);
    };
    let target = crate::connect::server_identity(conn, "")
        .await
        .map_err(|e| sink_error("read the target's identity", e))?;
    Ok(
        (target.system_identifier == source.system_identifier).then(|| {
            format!(
                "the sink is the source's own server ({}): Ferry would write into what it reads. \
             Choose another server as the sink",
                target.system_identifier
            )
        }),
    )
}

/// Warns when the target does not flush its log at each commit: the engine tells the
/// source it may discard its log once `commit_batch` returns, so a target crash could
/// then lose transactions the source no longer has. The setting is global only (no session
/// can pin it, as the PostgreSQL sink pins `synchronous_commit`).
async fn warn_if_commits_not_durable(conn: &mut Conn, changefeed: &str) {
    let flush: Option<u8> = conn
        .query_first("SELECT @@innodb_flush_log_at_trx_commit")
        .await
        .ok()
        .flatten();
    if flush.is_some_and(|f| f != 1) {
        tracing::warn!(
            changefeed,
            innodb_flush_log_at_trx_commit = flush,
            "the target does not flush its log at each commit: a crash of the target may lose \
             committed batches the source has discarded; set innodb_flush_log_at_trx_commit = 1"
        );
    }
}

/// Longest a statement of the side connection (DDL, claims) waits for a table's lock.
const SIDE_LOCK_WAIT_SECONDS: u32 = 60;

/// Writes into a MySQL/MariaDB server.
pub struct MySqlSink {
    conn: Conn,
    /// For DDL, which MariaDB would commit implicitly on `conn` (opened when first needed).
    side: Option<Conn>,
    uri: ConnectionUri,
    changefeed: String,
    policy: TargetPolicy,
    tables: HashMap<TableId, Target>,
    in_batch: bool,
    /// Tables the open batch holds changes of (their shape changes between batches only).
    touched: HashSet<TableId>,
    /// Target tables renamed on the source in the open batch: still named the key, to be
    /// named the value once it commits (see [`shape`]).
    renames: HashMap<TableId, TableId>,
    queue: Vec<Work>,
    queued_bytes: usize,
    segment: SegmentMap,
    segment_rows: usize,
    segment_bytes: usize,
    in_order: bool,
    /// The target's `max_allowed_packet`: no query may be longer.
    max_packet: usize,
    /// The target accepts `LOAD DATA LOCAL INFILE` (snapshot chunks load that way).
    local_infile: bool,
}

/// An error unless a statement of `len` bytes fits in the target's `max_allowed_packet`:
/// a longer one would break the connection, and retrying would never help.
pub(crate) fn check_packet(len: usize, max_packet: usize, what: &str) -> Result<(), SinkError> {
    if len + 1024 > max_packet {
        return Err(SinkError::Unsupported {
            message: format!(
                "{what} needs a statement of {len} bytes (a large value), more than the target's \
                 max_allowed_packet ({max_packet}); raise max_allowed_packet on the target \
                 (SET GLOBAL max_allowed_packet = …, up to 1 GB), then resume"
            ),
        });
    }
    Ok(())
}

impl MySqlSink {
    /// Connects for `changefeed`, refusing (before creating anything) a target that is the
    /// policy's source server, and makes sure Ferry's bookkeeping exists.
    pub async fn connect(
        uri: &ConnectionUri,
        changefeed: &str,
        policy: TargetPolicy,
    ) -> Result<Self, SinkError> {
        let mut conn = open(uri).await?;
        if let Some(message) = sink_is_source(&mut conn, &policy).await? {
            return Err(SinkError::Unsupported { message });
        }
        warn_if_commits_not_durable(&mut conn, changefeed).await;
        let (max_packet, local_infile): (u64, bool) = conn
            .query_first("SELECT @@max_allowed_packet, @@local_infile")
            .await
            .map_err(|e| sink_error("read the target's settings", e))?
            .unwrap_or((u64::MAX, false));
        for statement in ownership::BOOKKEEPING {
            conn.query_drop(statement)
                .await
                .map_err(|e| sink_error("create Ferry's bookkeeping in database _ferry", e))?;
        }
        let mut sink = MySqlSink {
            conn,
            side: None,
            uri: uri.clone(),
            changefeed: changefeed.to_string(),
            policy,
            tables: HashMap::new(),
            in_batch: false,
            touched: HashSet::new(),
            renames: HashMap::new(),
            queue: Vec::new(),
            queued_bytes: 0,
            segment: SegmentMap::default(),
            segment_rows: 0,
            segment_bytes: 0,
            in_order: false,
            max_packet: usize::try_from(max_packet).unwrap_or(usize::MAX),
            local_infile,
        };
        // Renames a crash left between a batch's commit and the rename itself.
        sink.finish_renames().await?;
        Ok(sink)
    }

    /// The connection for DDL. Its statements wait for a table's lock at most
    /// [`SIDE_LOCK_WAIT_SECONDS`]: a lock held elsewhere (a transaction of the user's, a
    /// foreign key from a table the open batch wrote) then fails the attempt, naming the
    /// table, instead of hanging for MariaDB's default of a day.
    async fn side(&mut self) -> Result<&mut Conn, SinkError> {
        if self.side.is_none() {
            let mut conn = open(&self.uri).await?;
            conn.query_drop(format!(
                "SET SESSION lock_wait_timeout = {SIDE_LOCK_WAIT_SECONDS}"
            ))
            .await
            .map_err(|e| sink_error("bound the wait for table locks", e))?;
            self.side = Some(conn);
        }
        Ok(self.side.as_mut().expect("opened above"))
    }

    async fn begin_if_needed(&mut self) -> Result<(), SinkError> {
        if !self.in_batch {
            self.conn
                .query_drop("START TRANSACTION")
                .await
                .map_err(|e| sink_error("begin a batch", e))?;
            self.in_batch = true;
        }
        Ok(())
    }

    fn target(&self, id: &TableId) -> Result<&Target, SinkError> {
        self.tables.get(id).ok_or_else(|| SinkError::Unsupported {
            message: format!("a change for {id} arrived before its schema"),
        })
    }
}

#[async_trait]
impl Sink for MySqlSink {
    async fn load_checkpoint(&mut self) -> Result<Option<Position>, SinkError> {
        let stored: Option<String> = self
            .conn
            .exec_first(
                "SELECT position FROM `_ferry`.`checkpoints` WHERE changefeed = ?",
                (&self.changefeed,),
            )
            .await
            .map_err(|e| sink_error("read the checkpoint", e))?;
        stored
            .map(|text| {
                serde_json::from_str(&text).map_err(|e| SinkError::Unsupported {
                    message: format!("the checkpoint in _ferry.checkpoints is unreadable: {e}"),
                })
            })
            .transpose()
    }

    async fn ensure_table(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        self.shape_table(schema).await
    }

    /// A table the open batch holds changes of cannot change: its `ALTER` would wait for
    /// the batch's lock on it (it runs on the side connection, as MariaDB would commit the
    /// batch otherwise), and rows made at the old shape would follow it.
    async fn needs_own_batch(&mut self, schema: &Arc<TableSchema>) -> Result<bool, SinkError> {
        Ok(self.touched.contains(&schema.id)
            && self
                .tables
                .get(&schema.id)
                .is_some_and(|t| reshape::changes_columns(&t.schema, schema)))
    }

    async fn apply(&mut self, change: RowChange) -> Result<(), SinkError> {
        self.begin_if_needed().await?;
        match change {
            RowChange::Insert { ref table, .. }
            | RowChange::Update { ref table, .. }
            | RowChange::Delete { ref table, .. } => {
                let table = table.clone();
                if !self.touched.contains(&table.id) {
                    self.touched.insert(table.id.clone());
                }
                if self.in_order {
                    return self.apply_alone(change).await;
                }
                self.compact(&table, change).await
            }
            RowChange::Truncate { tables, .. } => {
                // MariaDB's TRUNCATE commits implicitly: a DELETE stays in the batch.
                for table in &tables {
                    self.touched.insert(table.id.clone());
                    let name = self
                        .tables
                        .get(&table.id)
                        .map_or_else(|| types::quote_table(&table.id), |t| t.table.clone());
                    let sql = format!("DELETE FROM {name}");
                    self.queue(Work::Sql(sql.into_bytes())).await?;
                }
                Ok(())
            }
        }
    }

    fn set_in_order(&mut self, in_order: bool) {
        self.in_order = in_order;
    }

    async fn commit_batch(&mut self, checkpoint: Position) -> Result<(), SinkError> {
        self.begin_if_needed().await?;
        self.segment_to_queue()?;
        let work = std::mem::take(&mut self.queue);
        self.queued_bytes = 0;
        let position = serde_json::to_string(&checkpoint).expect("a position serializes");
        let mut finish =
            b"INSERT INTO `_ferry`.`checkpoints` (changefeed, position, updated_at) VALUES ("
                .to_vec();
        types::write_string(&mut finish, self.changefeed.as_bytes());
        finish.push(b',');
        types::write_string(&mut finish, position.as_bytes());
        finish.extend_from_slice(
            b", UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE position = VALUES(position), \
              updated_at = VALUES(updated_at);COMMIT",
        );
        let result = self.run(work, Some(finish)).await;
        if result.is_err() {
            self.rollback().await;
        }
        self.in_batch = false;
        self.touched.clear();
        if result.is_ok() {
            self.finish_renames().await?;
        }
        result
    }

    async fn abort_batch(&mut self) {
        self.rollback().await
    }

    async fn rename_table(
        &mut self,
        from: &TableId,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        self.rename(from, schema).await
    }

    async fn release_tables(&mut self, tables: &[TableId]) -> Result<(), SinkError> {
        let (changefeed, server_id) = (self.changefeed.clone(), self.policy.server_id.clone());
        ownership::release_tables(self.side().await?, &changefeed, &server_id, tables).await
    }

    async fn reset_snapshot(&mut self) -> Result<(), SinkError> {
        self.reset_state().await
    }

    async fn finished_chunks(&mut self) -> Result<Vec<ferry_core::FinishedChunk>, SinkError> {
        self.read_finished_chunks().await
    }

    async fn ensure_table_for_copy(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        self.shape_table(schema).await
    }

    async fn copy_chunk(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot: &Position,
        replace: bool,
        data: ferry_core::ChunkData,
    ) -> Result<u64, SinkError> {
        self.copy(schema, chunk, snapshot, replace, data).await
    }

    /// The key was created with the table: nothing is left to do.
    async fn finish_table(&mut self, _schema: &TableSchema) -> Result<(), SinkError> {
        Ok(())
    }
}
