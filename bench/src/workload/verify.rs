//! After a run: does the target hold what the source holds?
//!
//! Compares, table by table, the row count and a sum over a column the workloads change
//! (pgbench's balances, the wide table's body lengths, the ids elsewhere). Cheap enough to
//! run after every run on 5M rows, strict enough to catch lost, doubled or stale rows.

use crate::testbed::Testbed;

/// Fails with the first table whose count or checksum differs between source and target.
pub(crate) fn same_rows(testbed: &Testbed, tables: &[&str]) -> anyhow::Result<()> {
    let source = testbed.source_db()?;
    let target = testbed.target_db()?;
    for table in tables {
        let query = checksum_query(table);
        let (on_source, on_target) = (source.query(&query, &[])?, target.query(&query, &[])?);
        let read = |rows: &[tokio_postgres::Row]| -> anyhow::Result<(i64, i64)> {
            let row = rows
                .first()
                .ok_or_else(|| anyhow::anyhow!("no row from {query}"))?;
            Ok((row.try_get(0)?, row.try_get(1)?))
        };
        let (on_source, on_target) = (read(&on_source)?, read(&on_target)?);
        anyhow::ensure!(
            on_source == on_target,
            "{table} differs: source has (rows, checksum) {on_source:?}, target {on_target:?}"
        );
    }
    Ok(())
}

/// Rows in `tables` on the source now: the events a snapshot of them sends.
pub(crate) fn source_rows(testbed: &Testbed, tables: &[&str]) -> anyhow::Result<u64> {
    let source = testbed.source_db()?;
    let mut rows = 0;
    for table in tables {
        let count = source.query_i64(&format!("SELECT count(*) FROM {table}"))?;
        rows += u64::try_from(count)?;
    }
    Ok(rows)
}

/// `SELECT count, checksum` for `table`.
fn checksum_query(table: &str) -> String {
    let checksum = match table.rsplit('.').next().unwrap_or(table) {
        "pgbench_accounts" => "sum(abalance)",
        "pgbench_tellers" => "sum(tbalance)",
        "pgbench_branches" => "sum(bbalance)",
        "pgbench_history" => "sum(delta)",
        "bench_wide" => "sum(length(body) + length(doc::text))",
        _ => "sum(id)",
    };
    format!("SELECT count(*)::bigint, coalesce({checksum}, 0)::bigint FROM {table}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_follow_the_table() {
        assert_eq!(
            checksum_query("public.pgbench_accounts"),
            "SELECT count(*)::bigint, coalesce(sum(abalance), 0)::bigint FROM public.pgbench_accounts"
        );
        assert!(checksum_query("public.bench_bigtx").contains("sum(id)"));
    }
}
