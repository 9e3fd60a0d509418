//! After a run: does the target (MariaDB or PostgreSQL) hold what the MariaDB source holds?
//!
//! As in the PostgreSQL suite: per table, the row count and a sum over a column the
//! workloads change (the balances, history's deltas, the wide table's text lengths; the
//! text is ASCII, so MariaDB's bytes and PostgreSQL's characters agree).

use crate::db::Db;
use crate::maria::testbed::{MariaTestbed, Session, PG_TARGET_DB};
use crate::maria::Target;

/// Fails with the first table whose count or checksum differs between source and target.
pub(crate) fn same_rows(
    testbed: &MariaTestbed,
    target: Target,
    tables: &[&str],
) -> anyhow::Result<()> {
    let mut source = testbed.source_session()?;
    let mut on = match target {
        Target::Maria => Connected::Maria(testbed.target_session()?),
        Target::Postgres => Connected::Postgres(testbed.pg_target_db()?),
    };
    for table in tables {
        let column = checksum_column(table);
        let mariadb_query = format!(
            "SELECT CAST(COUNT(*) AS SIGNED), CAST(COALESCE(SUM({column}), 0) AS SIGNED) \
             FROM {table}"
        );
        let read = |rows: Vec<(i64, i64)>| {
            rows.into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("no row from {mariadb_query}"))
        };
        let on_source = read(source.query(&mariadb_query)?)?;
        let on_target = match &mut on {
            Connected::Maria(session) => read(session.query(&mariadb_query)?)?,
            Connected::Postgres(db) => {
                let query = format!(
                    "SELECT count(*)::bigint, coalesce(sum({column}), 0)::bigint FROM {table}"
                );
                let row = db
                    .query(&query, &[])?
                    .into_iter()
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("no row from {query} in {PG_TARGET_DB}"))?;
                (row.try_get(0)?, row.try_get(1)?)
            }
        };
        anyhow::ensure!(
            on_source == on_target,
            "{table} differs: source has (rows, checksum) {on_source:?}, target {on_target:?}"
        );
    }
    Ok(())
}

/// A session on the run's target.
enum Connected {
    Maria(Session),
    Postgres(Db),
}

/// The column summed for `table`'s checksum.
fn checksum_column(table: &str) -> &'static str {
    match table.rsplit('.').next().unwrap_or(table) {
        "pgbench_accounts" => "abalance",
        "pgbench_tellers" => "tbalance",
        "pgbench_branches" => "bbalance",
        "pgbench_history" => "delta",
        "bench_wide" => "length(body)",
        _ => "id",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_follow_the_table() {
        assert_eq!(checksum_column("bench.pgbench_history"), "delta");
        assert_eq!(checksum_column("bench.bench_wide"), "length(body)");
    }
}
