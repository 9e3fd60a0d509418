//! The MySQL/MariaDB sink.
//!
//! ```text
//! schema ──► shape (claim, CREATE DATABASE/TABLE on a side connection)
//! changes ──► compact per key ──► multi-row statements ──┐
//!                                  row statements ───────┼─► one InnoDB transaction
//! commit_batch(position) ──► _ferry.checkpoints upsert ──┘   … COMMIT (one round trip)
//! copy_chunk ──► multi-row INSERTs + _ferry.snapshot_chunks marker, one transaction
//! ```
//!
//! - Tables ([`shape`]): a table's schema is a database on the target, created when
//!   missing, and its column names are exactly the source's. Tables are created from the
//!   source's shape ([`types`]) with the key up front (InnoDB clusters rows by it, so a
//!   key built after a load would rebuild the table). A table is claimed by one changefeed
//!   ([`ownership`]); one that existed before it is checked and handled by
//!   `existing_target`. MariaDB commits DDL implicitly, so shaping runs on a connection
//!   of its own, never inside a batch's transaction. Column changes are not followed: a
//!   target lacking a source column stops the changefeed with what to add.
//! - Stream: a batch is one transaction. Its changes are compacted per table and key into
//!   a **segment** ([`ferry_core::compact`]) that becomes a few multi-row statements
//!   ([`statements`]); a change that cannot be compacted ends the segment and queues row
//!   statements of its own, so the two never run out of order. Segment and queue are
//!   flushed at a row or byte bound: memory stays bounded whatever a transaction's size.
//!   [`Sink::commit_batch`] sends the last statements, the checkpoint and `COMMIT` as one
//!   multi-statement query.
//! - A TRUNCATE is a `DELETE` (MariaDB's TRUNCATE would commit the batch); a rename runs
//!   on the side connection, refused when the open batch wrote the table already (the
//!   engine then replays one source transaction per batch).
//! - Snapshot ([`copy`]): each chunk's rows go in as multi-row INSERTs in one transaction
//!   together with its marker.

mod array;
mod copy;
mod ownership;
mod shape;
mod statements;
mod types;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::compact::TableChanges;
use ferry_core::{
    ConnectionUri, ErrorClass, Position, RowChange, Sink, SinkConnector, SinkError, SinkUri,
    TableId, TableSchema, TargetPolicy, TargetProblem, Value,
};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::connect::sink_error;
use statements::Target;

/// Row statements are sent when this many bytes of SQL are waiting…
const FLUSH_BYTES: usize = 4 << 20;
/// …and a segment is applied when it holds this many changes or bytes of values.
const SEGMENT_ROWS: usize = 20_000;
const SEGMENT_BYTES: usize = 16 << 20;

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

fn sql_work(statements: Vec<Vec<u8>>) -> Vec<Work> {
    statements.into_iter().map(Work::Sql).collect()
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

/// One piece of queued work.
enum Work {
    /// Statements that may travel together.
    Sql(Vec<u8>),
    /// A statement that must change exactly one row (a row of a table without a key).
    OneRow(Vec<u8>, TableId),
}

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
    /// Tables the open batch wrote.
    written: HashSet<TableId>,
    queue: Vec<Work>,
    queued_bytes: usize,
    segment: HashMap<TableId, TableChanges>,
    segment_rows: usize,
    segment_bytes: usize,
    in_order: bool,
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
        for statement in ownership::BOOKKEEPING {
            conn.query_drop(statement)
                .await
                .map_err(|e| sink_error("create Ferry's bookkeeping in database _ferry", e))?;
        }
        Ok(MySqlSink {
            conn,
            side: None,
            uri: uri.clone(),
            changefeed: changefeed.to_string(),
            policy,
            tables: HashMap::new(),
            in_batch: false,
            written: HashSet::new(),
            queue: Vec::new(),
            queued_bytes: 0,
            segment: HashMap::new(),
            segment_rows: 0,
            segment_bytes: 0,
            in_order: false,
        })
    }

    /// The connection for DDL.
    async fn side(&mut self) -> Result<&mut Conn, SinkError> {
        if self.side.is_none() {
            self.side = Some(open(&self.uri).await?);
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

    /// Turns the segment into queued statements and sends everything queued.
    async fn flush(&mut self) -> Result<(), SinkError> {
        self.segment_to_queue()?;
        let work = std::mem::take(&mut self.queue);
        self.queued_bytes = 0;
        self.run(work, None).await
    }

    /// Queues the segment's statements: per table its deletes, its upserts, its updates.
    fn segment_to_queue(&mut self) -> Result<(), SinkError> {
        let segment = std::mem::take(&mut self.segment);
        self.segment_rows = 0;
        self.segment_bytes = 0;
        for (id, changes) in segment {
            let target = self.target(&id)?;
            let sets = changes.into_sets();
            let mut statements = target.deletes(&sets.deletes)?;
            statements.extend(target.inserts(&sets.upserts, true)?);
            for rows in sets.updates.values() {
                for row in rows {
                    statements.extend(target.update(row, row, false)?);
                }
            }
            for sql in statements {
                self.queued_bytes += sql.len();
                self.queue.push(Work::Sql(sql));
            }
        }
        Ok(())
    }

    /// Sends `work` in order (then `finish`): statements that may travel together as
    /// multi-statement queries, a one-row statement alone, checking it changed one row.
    async fn run(&mut self, work: Vec<Work>, finish: Option<Vec<u8>>) -> Result<(), SinkError> {
        let mut query: Vec<u8> = Vec::new();
        let fail = |e| sink_error("apply a batch of changes", e);
        for item in work.into_iter().chain(finish.map(Work::Sql)) {
            match item {
                Work::Sql(sql) => {
                    if !query.is_empty() && query.len() + sql.len() > FLUSH_BYTES {
                        self.conn
                            .query_drop(std::mem::take(&mut query))
                            .await
                            .map_err(fail)?;
                    }
                    if !query.is_empty() {
                        query.push(b';');
                    }
                    query.extend_from_slice(&sql);
                }
                Work::OneRow(sql, table) => {
                    if !query.is_empty() {
                        self.conn
                            .query_drop(std::mem::take(&mut query))
                            .await
                            .map_err(fail)?;
                    }
                    self.conn.query_drop(sql).await.map_err(fail)?;
                    if self.conn.affected_rows() != 1 {
                        return Err(SinkError::Unsupported {
                            message: format!(
                                "a row of {table} (a table without a key) that the source \
                                 changed is not on the target: the target diverged from the \
                                 source. Re-sync the table"
                            ),
                        });
                    }
                }
            }
        }
        if !query.is_empty() {
            self.conn.query_drop(query).await.map_err(fail)?;
        }
        Ok(())
    }

    async fn queue(&mut self, work: Work) -> Result<(), SinkError> {
        if !self.segment.is_empty() {
            self.segment_to_queue()?;
        }
        self.queued_bytes += match &work {
            Work::Sql(s) | Work::OneRow(s, _) => s.len(),
        };
        self.queue.push(work);
        if self.queued_bytes >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Adds a change to the segment, or queues its own statements when it cannot be merged.
    async fn compact(
        &mut self,
        table: &Arc<TableSchema>,
        change: RowChange,
    ) -> Result<(), SinkError> {
        let bytes = change.payload_bytes();
        if self
            .segment
            .get(&table.id)
            .is_some_and(|c| c.schema.columns != table.columns || c.schema.key != table.key)
        {
            self.segment_to_queue()?;
        }
        if !self.segment.contains_key(&table.id) {
            self.segment
                .insert(table.id.clone(), TableChanges::new(table.clone()));
        }
        let changes = self
            .segment
            .get_mut(&table.id)
            .expect("the entry was inserted above");
        match changes.absorb(change) {
            Ok(()) => {
                self.segment_rows += 1;
                self.segment_bytes += bytes;
                if self.segment_rows >= SEGMENT_ROWS || self.segment_bytes >= SEGMENT_BYTES {
                    self.flush().await?;
                }
                Ok(())
            }
            Err(change) => self.apply_alone(change).await,
        }
    }

    /// Queues the statements of one change, as the source made it.
    async fn apply_alone(&mut self, change: RowChange) -> Result<(), SinkError> {
        let work: Vec<Work> = match &change {
            RowChange::Insert { table, new } => sql_work(
                self.target(&table.id)?
                    .inserts(std::slice::from_ref(new), true)?,
            ),
            RowChange::Update { table, old, new } => self.update_work(table, old.as_ref(), new)?,
            RowChange::Delete { table, old } => {
                let target = self.target(&table.id)?;
                if table.has_key() {
                    let key: Vec<Value> = table.key.iter().map(|&k| old[k].clone()).collect();
                    sql_work(target.deletes(&[key])?)
                } else {
                    vec![Work::OneRow(target.delete_row(old)?, table.id.clone())]
                }
            }
            RowChange::Truncate { .. } => unreachable!("truncates are applied by `apply`"),
        };
        for w in work {
            self.queue(w).await?;
        }
        Ok(())
    }

    /// The statements of an update applied on its own.
    fn update_work(
        &self,
        table: &TableSchema,
        old: Option<&ferry_core::Row>,
        new: &ferry_core::Row,
    ) -> Result<Vec<Work>, SinkError> {
        let target = self.target(&table.id)?;
        if !table.has_key() {
            let old = old
                .filter(|o| !o.contains(&Value::Unchanged))
                .ok_or_else(|| SinkError::Unsupported {
                    message: format!(
                        "an update of {} (a table without a key) came without the whole old row; \
                     set REPLICA IDENTITY FULL on the source table",
                        table.id
                    ),
                })?;
            return Ok(target
                .update(old, new, true)?
                .map(|sql| Work::OneRow(sql, table.id.clone()))
                .into_iter()
                .collect());
        }
        let complete = !new.contains(&Value::Unchanged);
        let key_of = |row: &ferry_core::Row| -> Vec<Value> {
            table.key.iter().map(|&k| row[k].clone()).collect()
        };
        let old_key = old.map(key_of).filter(|k| *k != key_of(new));
        Ok(match (old_key, complete) {
            (Some(old_key), true) => {
                let mut work: Vec<Work> = target
                    .deletes(&[old_key])?
                    .into_iter()
                    .map(Work::Sql)
                    .collect();
                work.extend(
                    target
                        .inserts(std::slice::from_ref(new), true)?
                        .into_iter()
                        .map(Work::Sql),
                );
                work
            }
            // The key moves and unsent values stay with the row.
            (Some(_), false) => target
                .update(old.expect("an old key came from it"), new, true)?
                .map(Work::Sql)
                .into_iter()
                .collect(),
            (None, true) => target
                .inserts(std::slice::from_ref(new), true)?
                .into_iter()
                .map(Work::Sql)
                .collect(),
            (None, false) => target
                .update(new, new, false)?
                .map(Work::Sql)
                .into_iter()
                .collect(),
        })
    }

    /// Discards the open batch: nothing of it stays.
    async fn rollback(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
        self.segment.clear();
        self.segment_rows = 0;
        self.segment_bytes = 0;
        self.written.clear();
        if self.in_batch {
            let _ = self.conn.query_drop("ROLLBACK").await;
            self.in_batch = false;
        }
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

    async fn apply(&mut self, change: RowChange) -> Result<(), SinkError> {
        self.begin_if_needed().await?;
        match change {
            RowChange::Insert { ref table, .. }
            | RowChange::Update { ref table, .. }
            | RowChange::Delete { ref table, .. } => {
                let table = table.clone();
                if !self.written.contains(&table.id) {
                    self.written.insert(table.id.clone());
                }
                if self.in_order {
                    return self.apply_alone(change).await;
                }
                self.compact(&table, change).await
            }
            RowChange::Truncate { tables, .. } => {
                // MariaDB's TRUNCATE commits implicitly: a DELETE stays in the batch.
                for table in &tables {
                    self.written.insert(table.id.clone());
                    let sql = format!("DELETE FROM {}", types::quote_table(&table.id));
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
        self.written.clear();
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
