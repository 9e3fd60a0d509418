//! The PostgreSQL sink.
//!
//! - Tables: created from the source's shape when missing (types, `NOT NULL`, primary
//!   key), altered when the source's columns change ([`ddl`]).
//! - Snapshot: each chunk's COPY text is streamed into `COPY … FROM STDIN` in its own
//!   transaction, which also records the chunk in `_ferry.snapshot_chunks`, so a restart
//!   knows exactly which chunks are in.
//! - Stream: a batch is one target transaction. Changes become prepared statements with
//!   text parameters ([`statements`]), queued and sent **pipelined** (no round trip per
//!   row); the queue is flushed at a row or byte bound, so memory stays bounded whatever a
//!   transaction's size. [`PgSink::commit_batch`] writes the checkpoint into
//!   `_ferry.checkpoints` in the same transaction and commits.

mod ddl;
mod statements;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ferry_core::{
    ConnectionUri, ErrorClass, Lsn, Position, RowChange, Sink, SinkError, TableId, TableSchema,
};
use futures::{Stream, StreamExt};
use tokio_postgres::{Client, Statement};

use statements::{Op, Shape};

/// Queued statements are sent when this many are waiting…
const FLUSH_OPS: usize = 4096;
/// …or when their values reach this many bytes (bounds memory for huge transactions).
const FLUSH_BYTES: usize = 16 << 20;

/// A target table as this sink last made it, with its prepared statements.
struct TargetTable {
    schema: Arc<TableSchema>,
    statements: HashMap<Shape, Statement>,
}

/// Writes into a PostgreSQL database.
pub struct PgSink {
    client: Client,
    changefeed: String,
    tables: HashMap<TableId, TargetTable>,
    in_batch: bool,
    queue: Vec<(Statement, Vec<statements::TextParam>)>,
    queued_bytes: usize,
}

/// A chunk the target already holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedChunk {
    /// Its table.
    pub table: TableId,
    /// Its number within the table.
    pub chunk: u32,
    /// Rows it copied.
    pub rows: u64,
    /// The snapshot it was read in.
    pub snapshot_lsn: Lsn,
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
    /// `changefeed` is the key its checkpoint is stored under.
    pub async fn connect(uri: &ConnectionUri, changefeed: &str) -> Result<Self, SinkError> {
        let client = crate::connect::connect(uri, &format!("ferry-sink {changefeed}"))
            .await
            .map_err(|e| SinkError::Connect {
                what: e.what.clone(),
                source: e.source,
            })?;
        client
            .batch_execute("SET search_path TO ''")
            .await
            .map_err(|e| statement_error("set search_path", e))?;
        // Concurrent sinks (snapshot workers) may race to create the schema: retry once.
        if client.batch_execute(ddl::BOOKKEEPING).await.is_err() {
            client
                .batch_execute(ddl::BOOKKEEPING)
                .await
                .map_err(|e| statement_error("create _ferry bookkeeping tables", e))?;
        }
        Ok(PgSink {
            client,
            changefeed: changefeed.to_string(),
            tables: HashMap::new(),
            in_batch: false,
            queue: Vec::new(),
            queued_bytes: 0,
        })
    }

    /// Forgets this changefeed's checkpoint and snapshot progress (a fresh start).
    pub async fn reset_state(&mut self) -> Result<(), SinkError> {
        for table in ["_ferry.checkpoints", "_ferry.snapshot_chunks"] {
            self.client
                .execute(
                    &format!("DELETE FROM {table} WHERE changefeed = $1"),
                    &[&self.changefeed],
                )
                .await
                .map_err(|e| statement_error(format!("reset {table}"), e))?;
        }
        Ok(())
    }

    /// The snapshot chunks already copied for this changefeed.
    pub async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        let rows = self
            .client
            .query(
                "SELECT table_schema, table_name, chunk, rows, snapshot_lsn
                 FROM _ferry.snapshot_chunks WHERE changefeed = $1",
                &[&self.changefeed],
            )
            .await
            .map_err(|e| statement_error("read snapshot progress", e))?;
        Ok(rows
            .iter()
            .map(|r| FinishedChunk {
                table: TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                chunk: r.get::<_, i32>(2) as u32,
                rows: r.get::<_, i64>(3) as u64,
                snapshot_lsn: r.get::<_, String>(4).parse().unwrap_or(Lsn::ZERO),
            })
            .collect())
    }

    /// Copies one snapshot chunk (COPY text) in its own transaction, recording it as
    /// finished in the same transaction. With `replace`, the table is emptied first (a
    /// table re-copied whole after a restart). Returns the rows copied.
    pub async fn copy_chunk<S, E>(
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
        let what = format!("copy {} chunk {chunk}", schema.id);
        let fail = |e| statement_error(what.clone(), e);
        self.client.batch_execute("BEGIN").await.map_err(fail)?;
        if replace {
            self.client
                .batch_execute(&format!("TRUNCATE {}", schema.id.quoted()))
                .await
                .map_err(fail)?;
        }
        let columns: Vec<String> = schema
            .columns
            .iter()
            .map(|c| ferry_core::quote_ident(&c.name))
            .collect();
        let sink = self
            .client
            .copy_in::<_, Bytes>(&format!(
                "COPY {} ({}) FROM STDIN",
                schema.id.quoted(),
                columns.join(", ")
            ))
            .await
            .map_err(fail)?;
        futures::pin_mut!(sink);
        let mut data = std::pin::pin!(data);
        while let Some(item) = data.next().await {
            let sent = match item {
                Ok(bytes) => futures::SinkExt::feed(&mut sink, bytes).await.map_err(fail),
                Err(e) => Err(SinkError::Statement {
                    what: format!("{what}: read from the source"),
                    class: ErrorClass::Transient,
                    source: Box::new(e),
                }),
            };
            if let Err(e) = sent {
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        }
        let rows = sink.finish().await.map_err(fail)?;
        self.client
            .execute(
                "INSERT INTO _ferry.snapshot_chunks
                 (changefeed, table_schema, table_name, chunk, rows, snapshot_lsn)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (changefeed, table_schema, table_name, chunk)
                 DO UPDATE SET rows = EXCLUDED.rows, snapshot_lsn = EXCLUDED.snapshot_lsn",
                &[
                    &self.changefeed,
                    &schema.id.schema,
                    &schema.id.name,
                    &(chunk as i32),
                    &(rows as i64),
                    &snapshot_lsn.to_string(),
                ],
            )
            .await
            .map_err(fail)?;
        self.client.batch_execute("COMMIT").await.map_err(fail)?;
        Ok(rows)
    }

    async fn begin_if_needed(&mut self) -> Result<(), SinkError> {
        if !self.in_batch {
            self.client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| statement_error("begin a batch", e))?;
            self.in_batch = true;
        }
        Ok(())
    }

    /// Sends every queued statement, pipelined, and waits for all of them.
    async fn flush(&mut self) -> Result<(), SinkError> {
        if self.queue.is_empty() {
            return Ok(());
        }
        let queue = std::mem::take(&mut self.queue);
        self.queued_bytes = 0;
        let client = &self.client;
        let results = futures::future::join_all(
            queue
                .iter()
                .map(|(stmt, params)| client.execute_raw(stmt, params.iter())),
        )
        .await;
        for result in results {
            result.map_err(|e| statement_error("apply a change", e))?;
        }
        Ok(())
    }

    async fn queue(&mut self, table: &Arc<TableSchema>, op: Op) -> Result<(), SinkError> {
        let target = self
            .tables
            .get_mut(&table.id)
            .ok_or_else(|| SinkError::Unsupported {
                message: format!("a change for {} arrived before its schema", table.id),
            })?;
        let statement = match target.statements.get(&op.shape) {
            Some(s) => s.clone(),
            None => {
                let sql = statements::sql(&target.schema, &op.shape);
                let prepared = self.client.prepare(&sql).await.map_err(|e| {
                    statement_error(format!("prepare a statement on {}", table.id), e)
                })?;
                target.statements.insert(op.shape.clone(), prepared.clone());
                prepared
            }
        };
        self.queued_bytes += op
            .params
            .iter()
            .map(|p| p.0.as_ref().map_or(4, |b| b.len() + 4))
            .sum::<usize>();
        self.queue.push((statement, op.params));
        if self.queue.len() >= FLUSH_OPS || self.queued_bytes >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Rolls back an open batch (after a failure), leaving no trace of it.
    pub async fn abort_batch(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
        if self.in_batch {
            let _ = self.client.batch_execute("ROLLBACK").await;
            self.in_batch = false;
        }
    }
}

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
        if let Some(t) = self.tables.get_mut(&schema.id) {
            if t.schema.columns == schema.columns {
                t.schema = schema.clone();
                return Ok(());
            }
        }
        // DDL joins the open batch's transaction, after the changes queued before it.
        self.flush().await?;
        let sql = match ddl::target_columns(&self.client, schema).await? {
            None => vec![ddl::create_table_sql(schema)],
            Some(current) => ddl::alter_table_sql(schema, &current)?,
        };
        for statement in sql {
            self.client.batch_execute(&statement).await.map_err(|e| {
                let mut err = statement_error(format!("change target table {}", schema.id), e);
                if let SinkError::Statement { class, .. } = &mut err {
                    *class = ErrorClass::Definite;
                }
                err
            })?;
        }
        self.tables.insert(
            schema.id.clone(),
            TargetTable {
                schema: schema.clone(),
                statements: HashMap::new(),
            },
        );
        Ok(())
    }

    async fn apply(&mut self, change: RowChange) -> Result<(), SinkError> {
        self.begin_if_needed().await?;
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
            RowChange::Truncate {
                tables,
                restart_identity,
            } => {
                self.flush().await?;
                let names: Vec<String> = tables.iter().map(|t| t.id.quoted()).collect();
                let sql = format!(
                    "TRUNCATE {}{}",
                    names.join(", "),
                    if *restart_identity {
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
        self.begin_if_needed().await?;
        self.flush().await?;
        let position = serde_json::to_string(&checkpoint).expect("a position serializes");
        self.client
            .execute(
                "INSERT INTO _ferry.checkpoints (changefeed, position, updated_at)
                 VALUES ($1, $2, now())
                 ON CONFLICT (changefeed) DO UPDATE
                 SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
                &[&self.changefeed, &position],
            )
            .await
            .map_err(|e| statement_error("store the checkpoint", e))?;
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| statement_error("commit a batch", e))?;
        self.in_batch = false;
        Ok(())
    }
}
