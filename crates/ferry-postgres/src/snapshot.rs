//! Snapshot planning and reading.
//!
//! A table is copied in chunks. A table whose key is one integer column and whose estimate
//! exceeds [`CHUNK_ROWS`] rows or [`CHUNK_BYTES`] is split into key ranges between its
//! current min and max (so a wide table with few rows is spread over the workers too); the
//! first and last ranges are open-ended, so rows outside the planned bounds are still
//! covered. Every other table is one chunk. Chunks are read with
//! `COPY (SELECT …) TO STDOUT` inside the changefeed's exported snapshot, and the bytes go
//! to the sink untouched: no per-row work in Ferry.
//!
//! The plan is persisted before the first chunk is copied, so a restart reuses the same
//! ranges and skips the chunks the sink already committed.

use ferry_core::{quote_ident, TableSchema};
use tokio_postgres::Client;

use crate::catalog::SelectedTable;
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
    let count = estimated_rows
        .div_ceil(CHUNK_ROWS)
        .max(table.total_bytes.div_ceil(CHUNK_BYTES))
        .clamp(1, MAX_CHUNKS);
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
    let span = (i128::from(max) - i128::from(min) + 1).max(1);
    let step = (span / i128::from(count)).max(1);
    let mut bounds: Vec<i64> = (1..count)
        .map(|i| (i128::from(min) + step * i128::from(i)) as i64)
        .filter(|b| *b > min && *b <= max)
        .collect();
    bounds.dedup();
    let mut chunks = Vec::with_capacity(bounds.len() + 1);
    let mut lower = None;
    for (i, b) in bounds.iter().enumerate() {
        chunks.push(ChunkSpec {
            index: i as u32,
            lower,
            upper: Some(*b),
        });
        lower = Some(*b);
    }
    chunks.push(ChunkSpec {
        index: chunks.len() as u32,
        lower,
        upper: None,
    });
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

/// Streams one chunk as COPY text.
pub async fn copy_out(
    client: &Client,
    schema: &TableSchema,
    plan: &TablePlan,
    chunk: &ChunkSpec,
) -> Result<tokio_postgres::CopyOutStream, PgError> {
    let partitioned = client
        .query_one(
            "SELECT COALESCE((SELECT relkind = 'p' FROM pg_catalog.pg_class
                              WHERE oid = pg_catalog.to_regclass($1)), false)",
            &[&schema.id.quoted()],
        )
        .await
        .map_err(|e| PgError::new(format!("look up table {}", schema.id), e))?
        .get(0);
    client
        .copy_out(&copy_out_sql(
            schema,
            plan.key_column.as_deref(),
            chunk,
            partitioned,
        ))
        .await
        .map_err(|e| PgError::new(format!("copy {} chunk {}", schema.id, chunk.index), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{ColumnSchema, ReplicaIdentity, TableId};

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
