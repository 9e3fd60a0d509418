//! Snapshot planning and reading.
//!
//! A table is copied in chunks. A table whose key is one integer column and whose estimate
//! exceeds [`CHUNK_ROWS`] rows or [`CHUNK_BYTES`] is split into key ranges between its
//! current min and max (so a wide table with few rows is spread over the workers too); the
//! first and last ranges are open-ended, so rows outside the planned bounds are still
//! covered. Every other table is one chunk. Chunks are read with
//! `COPY (SELECT …) TO STDOUT` inside the changefeed's exported snapshot, and the bytes go
//! to the sink untouched: no per-row work in Ferry. A worker's session takes them off the
//! wire with its [`crate::tap`], in large items, before the driver would parse a message per
//! row.
//!
//! The plan is persisted before the first chunk is copied, so a restart reuses the same
//! ranges and skips the chunks the sink already committed.
//!
//! # A source that stops answering
//! A cut network can leave a session waiting forever on a socket that never delivers again
//! (see [`crate::liveness`]: keepalives do not help behind a proxy or a NAT). A copy
//! therefore never waits unbounded on silence, and tells a dead session from a waiting one:
//!
//! - Before the COPY, the chunk's session takes the table's `ACCESS SHARE` lock itself,
//!   under a `lock_timeout` of half the read timeout, in a savepoint: a table another
//!   session holds (an `ALTER TABLE` rewriting it) is waited for as long as it takes, one
//!   bounded attempt after another, each answer proving the source alive; a source that
//!   answers nothing within the timeout is unreachable.
//! - The COPY itself then waits for nothing: a stream silent for the read timeout (counted
//!   only while the sink asks for more, never while the target is slow) is a dead session.
//!   The chunk fails as a transient error; the changefeed retries, and copies that chunk again
//!   (finished chunks never are).

use std::time::Duration;

use bytes::Bytes;
use ferry_core::{quote_ident, TableSchema};
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio_postgres::Client;

use crate::catalog::SelectedTable;
use crate::liveness::silent_source;
use crate::replication::DEFAULT_REPLICATION_TIMEOUT;
use crate::tap::Tap;
use crate::PgError;

/// Rows per chunk the planner aims for: large enough that per-chunk overhead (a
/// transaction, a marker row) is noise, small enough to spread a table over workers and
/// to lose little work on a restart.
pub const CHUNK_ROWS: u64 = 100_000;

/// Bytes (with TOAST) per chunk the planner aims for, for wide tables whose rows are few
/// but large.
pub const CHUNK_BYTES: u64 = 32 << 20;

/// Most chunks one table is split into.
pub const MAX_CHUNKS: u64 = 256;

pub use ferry_core::{ChunkSpec, TablePlan};

const INTEGER_TYPES: &[u32] = &[20, 21, 23]; // int8, int2, int4

/// Plans the copy of `table`, reading its key's bounds when it is worth chunking.
pub async fn plan_table(client: &Client, table: &SelectedTable) -> Result<TablePlan, PgError> {
    let estimated_rows = table.estimated_rows.unwrap_or(0);
    let count = estimated_rows
        .div_ceil(CHUNK_ROWS)
        .max(table.total_bytes.div_ceil(CHUNK_BYTES))
        .clamp(1, MAX_CHUNKS);
    plan_chunks(client, table, count).await
}

/// Most chunks a diff cuts one table into: its plan is stored with the diff.
const MAX_DIFF_CHUNKS: u64 = 65_536;

/// Plans a diff of `table` in chunks of about `rows_per_chunk` rows (by the row
/// estimate: a table never analyzed is one chunk).
pub async fn plan_diff(
    client: &Client,
    table: &SelectedTable,
    rows_per_chunk: u64,
) -> Result<TablePlan, PgError> {
    let count = table
        .estimated_rows
        .unwrap_or(0)
        .div_ceil(rows_per_chunk.max(1))
        .clamp(1, MAX_DIFF_CHUNKS);
    plan_chunks(client, table, count).await
}

/// Cuts `table` into `count` ranges of its integer key (evenly between its bounds), or
/// one chunk when it has no such key or `count` is 1.
async fn plan_chunks(
    client: &Client,
    table: &SelectedTable,
    count: u64,
) -> Result<TablePlan, PgError> {
    let schema = &table.schema;
    let estimated_rows = table.estimated_rows.unwrap_or(0);
    let single = |estimated_rows| TablePlan {
        table: schema.id.clone(),
        key_column: None,
        chunks: vec![ChunkSpec {
            index: 0,
            lower: None,
            upper: None,
        }],
        estimated_rows,
    };
    let key = match schema.key.as_slice() {
        [k] if INTEGER_TYPES.contains(&schema.columns[*k].type_oid) => &schema.columns[*k].name,
        _ => return Ok(single(estimated_rows)),
    };
    if count == 1 {
        return Ok(single(estimated_rows));
    }
    let row = client
        .query_one(
            &format!(
                "SELECT min({k})::int8, max({k})::int8 FROM {t}",
                k = quote_ident(key),
                t = schema.id.quoted()
            ),
            &[],
        )
        .await
        .map_err(|e| PgError::new(format!("read key bounds of {}", schema.id), e))?;
    let (Some(min), Some(max)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1))
    else {
        return Ok(single(estimated_rows));
    };
    let chunks = ChunkSpec::split(min, max, count);
    Ok(TablePlan {
        table: schema.id.clone(),
        key_column: Some(key.clone()),
        chunks,
        estimated_rows,
    })
}

/// The `COPY … TO STDOUT` statement for one chunk of `schema`.
/// A partitioned table is read whole (its partitions' rows, which the stream also sends
/// under its name); any other table `ONLY`, without inheritance children (selected, and
/// copied, on their own).
pub fn copy_out_sql(
    schema: &TableSchema,
    key_column: Option<&str>,
    chunk: &ChunkSpec,
    partitioned: bool,
) -> String {
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let mut filter = Vec::new();
    if let Some(key) = key_column {
        if let Some(lower) = chunk.lower {
            filter.push(format!("{} >= {lower}", quote_ident(key)));
        }
        if let Some(upper) = chunk.upper {
            filter.push(format!("{} < {upper}", quote_ident(key)));
        }
    }
    let select = format!(
        "SELECT {} FROM {}{}",
        columns.join(", "),
        if partitioned { "" } else { "ONLY " },
        schema.id.quoted()
    );
    if filter.is_empty() {
        format!("COPY ({select}) TO STDOUT")
    } else {
        format!("COPY ({select} WHERE {}) TO STDOUT", filter.join(" AND "))
    }
}

/// Opens a read-only transaction on `client` that sees the exported snapshot `name`.
/// Must be the first thing the session does.
pub async fn enter_snapshot(client: &Client, snapshot_name: &str) -> Result<(), PgError> {
    let name = snapshot_name.replace('\'', "''");
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{name}'"
        ))
        .await
        .map_err(|e| PgError::new("import the exported snapshot", e))
}

/// Streams one chunk as COPY text, with [`DEFAULT_REPLICATION_TIMEOUT`] as the read timeout
/// (see [`copy_out_within`]).
pub async fn copy_out(
    client: &Client,
    schema: &TableSchema,
    plan: &TablePlan,
    chunk: &ChunkSpec,
) -> Result<BoxStream<'static, Result<Bytes, PgError>>, PgError> {
    copy_out_within(
        client,
        None,
        schema,
        plan,
        chunk,
        CopyFormat::Text,
        DEFAULT_REPLICATION_TIMEOUT,
    )
    .await
}

/// How a chunk's rows are encoded, out of the source and into the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyFormat {
    /// COPY text: every value in its type's output form, one row per line.
    Text,
    /// COPY binary, whole (header, rows, trailer): every value in its type's send form.
    Binary,
}

impl CopyFormat {
    /// The encoding of a bulk format, `None` for one that is not PostgreSQL's COPY.
    pub fn of(format: ferry_core::BulkFormat) -> Option<CopyFormat> {
        match format {
            ferry_core::BulkFormat::PG_COPY_TEXT => Some(CopyFormat::Text),
            ferry_core::BulkFormat::PG_COPY_BINARY => Some(CopyFormat::Binary),
            _ => None,
        }
    }

    /// The option that follows `TO STDOUT` / `FROM STDIN` to name it.
    pub fn option(self) -> &'static str {
        match self {
            CopyFormat::Text => "",
            CopyFormat::Binary => " (FORMAT binary)",
        }
    }
}

/// Streams one chunk in `format`. Never waits on a silent source for more than `timeout`,
/// but waits as long as it takes for a table
/// another session has locked (see the module doc). A silent source ends the stream with a
/// transient error. With the session's `tap`, the rows come off the wire in large items
/// (see [`crate::tap`]).
pub async fn copy_out_within(
    client: &Client,
    tap: Option<&Tap>,
    schema: &TableSchema,
    plan: &TablePlan,
    chunk: &ChunkSpec,
    format: CopyFormat,
    timeout: Duration,
) -> Result<BoxStream<'static, Result<Bytes, PgError>>, PgError> {
    let partitioned: bool = answer(
        timeout,
        client.query_one(
            "SELECT COALESCE((SELECT relkind = 'p' FROM pg_catalog.pg_class
                              WHERE oid = pg_catalog.to_regclass($1)), false)",
            &[&schema.id.quoted()],
        ),
    )
    .await?
    .map_err(|e| PgError::new(format!("look up table {}", schema.id), e))?
    .get(0);
    lock_for_read(client, schema, timeout).await?;
    answer(
        timeout,
        unchanged_since_snapshot(client, schema, partitioned, format),
    )
    .await??;
    let sql =
        copy_out_sql(schema, plan.key_column.as_deref(), chunk, partitioned) + format.option();
    let what = format!("copy {} chunk {}", schema.id, chunk.index);
    let armed = tap.map(Tap::arm);
    let stream = answer(timeout, client.copy_out(&sql))
        .await?
        .map_err(|e| PgError::new(what.clone(), e))?;
    Ok(match armed {
        Some(armed) => progress_bounded(armed.rows(stream), timeout, what).boxed(),
        None => progress_bounded(stream, timeout, what).boxed(),
    })
}

/// Refuses to read a table the snapshot no longer shows as it is, once its lock is held:
/// - rewritten or truncated after the snapshot was taken (`ALTER TABLE` rewriting it,
///   `TRUNCATE`, `VACUUM FULL`, `CLUSTER`): such a table reads empty in older snapshots
///   (PostgreSQL's MVCC caveat), and no row event brings the rows back. The snapshot's
///   catalog still names the old file, the current one the new;
/// - for `format` binary, a column whose type is no longer the one `schema` was read with:
///   binary values carry no type, and the target's column has the old one.
///
/// Both fail as transient: the next attempt copies from a new snapshot and schema.
async fn unchanged_since_snapshot(
    client: &Client,
    schema: &TableSchema,
    partitioned: bool,
    format: CopyFormat,
) -> Result<(), PgError> {
    let table = schema.id.quoted();
    let rewritten = client
        .query(
            "WITH RECURSIVE tree(oid) AS (
               SELECT pg_catalog.to_regclass($1)::oid
               UNION ALL
               SELECT i.inhrelid FROM pg_catalog.pg_inherits i
               JOIN tree ON i.inhparent = tree.oid
               JOIN pg_catalog.pg_class p ON p.oid = tree.oid AND p.relkind = 'p')
             SELECT c.relname::text FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.oid
             WHERE c.relkind IN ('r', 'm')
               AND pg_catalog.pg_relation_filenode(c.oid) IS DISTINCT FROM c.relfilenode",
            &[&table],
        )
        .await
        .map_err(|e| PgError::new(format!("look up table {}", schema.id), e))?;
    if let Some(row) = rewritten.first() {
        let name: String = row.get(0);
        return Err(PgError::other(
            format!(
                "table {} ({name}) was rewritten or truncated on the source after the copy's \
                 snapshot was taken; that snapshot no longer shows its rows: copying again from \
                 a new snapshot",
                schema.id
            ),
            ferry_core::ErrorClass::Transient,
            "rewritten after the snapshot",
        ));
    }
    if format == CopyFormat::Binary {
        let columns: Vec<String> = schema
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        let only = if partitioned { "" } else { "ONLY " };
        let select = format!("SELECT {} FROM {only}{table}", columns.join(", "));
        let prepared = client
            .prepare(&select)
            .await
            .map_err(|e| PgError::new(format!("read column types of {}", schema.id), e))?;
        let same = prepared.columns().len() == schema.columns.len()
            && prepared
                .columns()
                .iter()
                .zip(&schema.columns)
                .all(|(now, then)| now.type_().oid() == then.type_oid);
        if !same {
            return Err(PgError::other(
                format!(
                    "a column of table {} changed type on the source since the copy began: \
                     copying again with its new shape",
                    schema.id
                ),
                ferry_core::ErrorClass::Transient,
                "column type changed",
            ));
        }
    }
    Ok(())
}

/// `future`'s output, or the silent-source error after `timeout`.
async fn answer<F: std::future::Future>(
    timeout: Duration,
    future: F,
) -> Result<F::Output, PgError> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| silent_source(timeout))
}

/// Takes `ACCESS SHARE` on the chunk's table (`ONLY` the table: a partitioned table's
/// partitions are locked by the COPY, and need no privilege of their own) in bounded attempts: each waits at most half
/// of `timeout` for the lock (`lock_timeout`, in a savepoint so that a timed-out attempt
/// leaves the snapshot's transaction usable) and must be answered within `timeout`.
async fn lock_for_read(
    client: &Client,
    schema: &TableSchema,
    timeout: Duration,
) -> Result<(), PgError> {
    let lock = format!(
        "SAVEPOINT ferry_lock; SET LOCAL lock_timeout = {}; \
         LOCK TABLE ONLY {} IN ACCESS SHARE MODE; RELEASE SAVEPOINT ferry_lock; \
         SET LOCAL lock_timeout = 0",
        (timeout.as_millis() / 2).max(1),
        schema.id.quoted()
    );
    loop {
        match answer(timeout, client.batch_execute(&lock)).await? {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                tracing::debug!(table = %schema.id, "table locked by another session; waiting on");
                answer(
                    timeout,
                    client.batch_execute(
                        "ROLLBACK TO SAVEPOINT ferry_lock; RELEASE SAVEPOINT ferry_lock",
                    ),
                )
                .await?
                .map_err(|e| PgError::new(format!("lock table {}", schema.id), e))?;
            }
            Err(e) => return Err(PgError::new(format!("lock table {}", schema.id), e)),
        }
    }
}

/// Bytes gathered into one item of a bulk chunk, at most (as many rows as are ready).
const GATHER_BYTES: usize = 256 << 10;

/// `stream`, ended by a transient error once it has been silent for `timeout` while asked
/// for its next item (time the consumer spends elsewhere does not count). The server sends
/// a message per row: the rows already received are gathered into items of up to
/// [`GATHER_BYTES`], so the timer, the metrics and the sink handle one item per few
/// thousand rows, not one per row. Bounded by bytes, not rows (as `ready_chunks` would be):
/// a wide table's rows ready at once must not make one item of hundreds of MB.
fn progress_bounded<S>(
    stream: S,
    timeout: Duration,
    what: String,
) -> impl Stream<Item = Result<Bytes, PgError>>
where
    S: Stream<Item = Result<Bytes, tokio_postgres::Error>>,
{
    /// The stream while it has more; the error that ended a gathered item, still to send.
    type State<S> = (Option<std::pin::Pin<Box<S>>>, Option<PgError>);
    let state: State<S> = (Some(Box::pin(stream)), None);
    futures::stream::unfold(state, move |(stream, failed)| {
        let what = what.clone();
        async move {
            if let Some(e) = failed {
                return Some((Err(e), (None, None)));
            }
            let mut stream = stream?;
            let first = match tokio::time::timeout(timeout, stream.next()).await {
                Ok(Some(Ok(bytes))) => bytes,
                Ok(Some(Err(e))) => return Some((Err(PgError::new(what, e)), (None, None))),
                Ok(None) => return None,
                Err(_) => return Some((Err(silent_source(timeout)), (None, None))),
            };
            let mut gathered: Option<bytes::BytesMut> = None;
            while gathered.as_ref().map_or(first.len(), |g| g.len()) < GATHER_BYTES {
                let next = match stream.next().now_or_never() {
                    None => break,
                    Some(next) => next,
                };
                let buffer = gathered.get_or_insert_with(|| {
                    // Grown as rows come: a few rows ready keep a small buffer alive.
                    let mut buffer = bytes::BytesMut::with_capacity(4 * first.len().max(64));
                    buffer.extend_from_slice(&first);
                    buffer
                });
                match next {
                    Some(Ok(bytes)) => buffer.extend_from_slice(&bytes),
                    Some(Err(e)) => {
                        let bytes = buffer.split().freeze();
                        return Some((Ok(bytes), (None, Some(PgError::new(what, e)))));
                    }
                    None => return Some((Ok(buffer.split().freeze()), (None, None))),
                }
            }
            let bytes = gathered.map_or(first, |mut g| g.split().freeze());
            Some((Ok(bytes), (Some(stream), None)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{ColumnSchema, ReplicaIdentity, TableId};

    fn row(i: usize) -> Bytes {
        Bytes::from(format!("{i}\t{}\n", "x".repeat(i % 200)))
    }

    #[tokio::test]
    async fn ready_rows_are_gathered_into_large_items_in_order() {
        let rows: Vec<Bytes> = (0..20_000).map(row).collect();
        let source = futures::stream::iter(rows.clone().into_iter().map(Ok));
        let items: Vec<Bytes> = progress_bounded(source, Duration::from_secs(5), "t".into())
            .map(|item| item.unwrap())
            .collect()
            .await;
        assert_eq!(items.concat(), rows.concat());
        assert!(items.len() < 20, "{} items", items.len());
        assert!(items.iter().all(|i| i.len() < GATHER_BYTES + 300));
    }

    #[tokio::test]
    async fn a_row_that_arrives_alone_is_passed_on_alone() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, tokio_postgres::Error>>();
        let mut items = Box::pin(progress_bounded(rx, Duration::from_secs(5), "t".into()));
        tx.unbounded_send(Ok(row(1))).unwrap();
        assert_eq!(items.next().await.unwrap().unwrap(), row(1));
        tx.unbounded_send(Ok(row(2))).unwrap();
        tx.unbounded_send(Ok(row(3))).unwrap();
        assert_eq!(
            items.next().await.unwrap().unwrap(),
            [row(2), row(3)].concat()
        );
        drop(tx);
        assert!(items.next().await.is_none());
    }

    #[test]
    fn chunk_sql_is_bounded() {
        let schema = TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![ColumnSchema {
                name: "id".into(),
                type_name: "bigint".into(),
                type_oid: 20,
                logical: ferry_core::LogicalType::Int { bits: 64 },
                nullable: false,
                missing_value: None,
                has_default: false,
            }],
            key: vec![0],
            identity: ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: Vec::new(),
            dialect: ferry_core::Dialect::Postgres,
        };
        let chunk = ChunkSpec {
            index: 1,
            lower: Some(10),
            upper: Some(20),
        };
        assert_eq!(
            copy_out_sql(&schema, Some("id"), &chunk, false),
            "COPY (SELECT \"id\" FROM ONLY \"public\".\"t\" WHERE \"id\" >= 10 AND \"id\" < 20) TO STDOUT"
        );
        let all = ChunkSpec {
            index: 0,
            lower: None,
            upper: None,
        };
        assert_eq!(
            copy_out_sql(&schema, None, &all, false),
            "COPY (SELECT \"id\" FROM ONLY \"public\".\"t\") TO STDOUT"
        );
        assert_eq!(
            copy_out_sql(&schema, None, &all, true),
            "COPY (SELECT \"id\" FROM \"public\".\"t\") TO STDOUT"
        );
    }
}
