//! Consistent snapshots and chunked reads.
//!
//! # One snapshot, several readers, no global lock
//! MariaDB has no exported snapshots, but `START TRANSACTION WITH CONSISTENT SNAPSHOT`
//! reports the binlog position its read view matches exactly (`binlog_snapshot_file`,
//! `binlog_snapshot_position`; commits are serialized against it), which
//! `BINLOG_GTID_POS` turns into a GTID list. Two such transactions that report the same
//! position see the same committed data. An export therefore opens [`READERS`]
//! connections, starts their snapshots back to back, and keeps them when all report one
//! position; otherwise it tries again (a few times), then settles for one connection,
//! which is always consistent. No `FLUSH TABLES WITH READ LOCK`, no `RELOAD` privilege.
//! Workers share the connections: two workers on one connection take turns.
//!
//! # Chunks
//! Like the PostgreSQL source: a table whose key is one integer column and whose estimate
//! exceeds [`CHUNK_ROWS`] is cut into key ranges between its min and max, the first and
//! last open-ended; every other table is one chunk. Rows are read with the binary
//! protocol and printed in canonical text ([`super::values`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::gtid::MariaDbGtidList;
use ferry_core::{
    BulkFormat, ChunkData, ChunkReader, ChunkSpec, ConnectionUri, ErrorClass, LogicalType,
    Position, SnapshotExport, SourceError, TablePlan, TableSchema,
};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::Mutex;

use super::catalog::{quote_name, quote_table};
use super::types::{self, Kind};
use super::values::{canonical, Origin};
use crate::connect::{connect, source_error};

/// Rows per chunk the planner aims for (as for PostgreSQL).
const CHUNK_ROWS: u64 = 100_000;

/// Most chunks one table is split into.
const MAX_CHUNKS: u64 = 256;

/// Snapshot connections an export opens: the engine's default worker count.
const READERS: usize = 4;

/// Attempts at starting [`READERS`] snapshots at one position before settling for one.
const ATTEMPTS: usize = 5;

/// Rows read ahead of the sink per chunk.
const READ_AHEAD: usize = 1024;

/// Plans the copy of `schema`'s table (estimate `rows`).
pub(crate) async fn plan_table(
    conn: &mut Conn,
    schema: &TableSchema,
    rows: u64,
) -> Result<TablePlan, SourceError> {
    let single = TablePlan {
        table: schema.id.clone(),
        key_column: None,
        chunks: vec![ChunkSpec::whole()],
        estimated_rows: rows,
    };
    let key = match schema.key.as_slice() {
        [k] if matches!(schema.columns[*k].logical, LogicalType::Int { .. }) => {
            &schema.columns[*k].name
        }
        _ => return Ok(single),
    };
    let count = rows.div_ceil(CHUNK_ROWS).clamp(1, MAX_CHUNKS);
    if count == 1 {
        return Ok(single);
    }
    let bounds: Option<(Option<i64>, Option<i64>)> = conn
        .query_first(format!(
            "SELECT CAST(MIN({k}) AS SIGNED), CAST(MAX({k}) AS SIGNED) FROM {t}",
            k = quote_name(key),
            t = quote_table(&schema.id)
        ))
        .await
        .map_err(|e| source_error(format!("read key bounds of {}", schema.id), e))?;
    let Some((Some(min), Some(max))) = bounds else {
        return Ok(single);
    };
    let chunks = ChunkSpec::split(min, max, count);
    Ok(TablePlan {
        table: schema.id.clone(),
        key_column: Some(key.clone()),
        chunks,
        estimated_rows: rows,
    })
}

/// Starts a consistent snapshot on `conn`; returns the binlog file and offset it matches.
async fn start_snapshot(conn: &mut Conn) -> Result<(String, u64), mysql_async::Error> {
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await?;
    let rows: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let get = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let offset = get("binlog_snapshot_position").parse().unwrap_or(0);
    Ok((get("binlog_snapshot_file"), offset))
}

/// Snapshot connections at one binlog position, and that position.
pub(crate) async fn open_export(uri: &ConnectionUri) -> Result<MyExport, SourceError> {
    let what = "start a consistent snapshot";
    for attempt in 0..=ATTEMPTS {
        let readers = if attempt == ATTEMPTS { 1 } else { READERS };
        let mut conns = Vec::with_capacity(readers);
        for _ in 0..readers {
            conns.push(connect(uri).await.map_err(|e| source_error(what, e))?);
        }
        let started = futures::future::join_all(conns.iter_mut().map(start_snapshot)).await;
        let mut positions = Vec::with_capacity(readers);
        for s in started {
            positions.push(s.map_err(|e| source_error(what, e))?);
        }
        let (file, offset) = positions[0].clone();
        if file.is_empty() {
            return Err(SourceError::message(
                "the source reports no binlog position with its snapshot \
                 (binlog_snapshot_file is empty)",
                ErrorClass::Definite,
            )
            .with_hint(
                "enable the binary log (log_bin) on the source; Ferry reads \
                        MariaDB's consistent snapshots, which MySQL does not report",
            ));
        }
        if positions.iter().any(|p| *p != (file.clone(), offset)) {
            continue;
        }
        let gtid: Option<String> = conns[0]
            .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&file, offset))
            .await
            .map_err(|e| source_error(what, e))?;
        let gtid = gtid.ok_or_else(|| {
            SourceError::message(
                format!("the source cannot name the GTID position of {file}:{offset}"),
                ErrorClass::Transient,
            )
        })?;
        let list: MariaDbGtidList = gtid
            .parse()
            .map_err(|e| SourceError::new(what, ErrorClass::Definite, e))?;
        tracing::info!(readers, position = %list, "consistent snapshot started");
        return Ok(MyExport {
            position: Position::MariaDbGtid(list),
            conns: conns.into_iter().map(|c| Arc::new(Mutex::new(c))).collect(),
            next: AtomicUsize::new(0),
        });
    }
    unreachable!("the last attempt uses one connection, which always agrees with itself")
}

/// Snapshot transactions at one binlog position.
pub(crate) struct MyExport {
    position: Position,
    conns: Vec<Arc<Mutex<Conn>>>,
    next: AtomicUsize,
}

#[async_trait]
impl SnapshotExport for MyExport {
    fn position(&self) -> Position {
        self.position.clone()
    }

    async fn reader(&self) -> Result<Box<dyn ChunkReader>, SourceError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        Ok(Box::new(MyChunkReader {
            conn: self.conns[i].clone(),
        }))
    }
}

/// Reads chunks on one of the export's connections.
struct MyChunkReader {
    conn: Arc<Mutex<Conn>>,
}

/// The kinds of `schema`'s columns, from their types (snapshot values are UTF-8 whatever
/// the column's character set, so the charset does not matter here).
fn snapshot_kinds(schema: &TableSchema) -> Result<Vec<Kind>, SourceError> {
    schema
        .columns
        .iter()
        .map(|c| {
            types::classify(&c.type_name, None, c.logical == LogicalType::Json)
                .map(|(k, _)| k)
                .map_err(|u| {
                    SourceError::message(
                        format!("column {} of {} has {}", c.name, schema.id, u.0),
                        ErrorClass::Definite,
                    )
                })
        })
        .collect()
}

#[async_trait]
impl ChunkReader for MyChunkReader {
    async fn read(
        &mut self,
        schema: &TableSchema,
        plan: &TablePlan,
        chunk: &ChunkSpec,
        format: Option<BulkFormat>,
    ) -> Result<ChunkData, SourceError> {
        if let Some(format) = format {
            return Err(SourceError::message(
                format!("a MySQL source reads no bulk format ({})", format.0),
                ErrorClass::Definite,
            ));
        }
        let kinds = snapshot_kinds(schema)?;
        let columns: Vec<String> = schema.columns.iter().map(|c| quote_name(&c.name)).collect();
        let mut sql = format!(
            "SELECT {} FROM {}",
            columns.join(", "),
            quote_table(&schema.id)
        );
        let mut params: Vec<mysql_async::Value> = Vec::new();
        if let Some(key) = &plan.key_column {
            let mut conditions = Vec::new();
            if let Some(lower) = chunk.lower {
                conditions.push(format!("{} >= ?", quote_name(key)));
                params.push(lower.into());
            }
            if let Some(upper) = chunk.upper {
                conditions.push(format!("{} < ?", quote_name(key)));
                params.push(upper.into());
            }
            if !conditions.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conditions.join(" AND "));
            }
        }
        let what = format!("read {} chunk {}", schema.id, chunk.index);
        let table = schema.id.to_string();
        let names: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
        let mut conn = self.conn.clone().lock_owned().await;
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        tokio::spawn(async move {
            let read = async {
                let mut result = conn
                    .exec_iter(sql, params)
                    .await
                    .map_err(|e| source_error(what.clone(), e))?;
                while let Some(row) = result
                    .next()
                    .await
                    .map_err(|e| source_error(what.clone(), e))?
                {
                    let mut out = Vec::with_capacity(kinds.len());
                    for (i, value) in row.unwrap().into_iter().enumerate() {
                        let value = canonical(value, &kinds[i], Origin::Snapshot)
                            .map_err(|b| b.into_error(&table, &names[i]))?;
                        out.push(value);
                    }
                    if tx.send(Ok(out)).await.is_err() {
                        break;
                    }
                }
                Ok::<(), SourceError>(())
            };
            if let Err(e) = read.await {
                let _ = tx.send(Err(e)).await;
            }
        });
        let rows = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(ChunkData::Rows(rows.boxed()))
    }
}
