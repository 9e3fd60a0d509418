//! Blocking database sessions for the harness, and WAL positions.
//!
//! The harness is sequential code with a few threads (the latency probe's writer and reader
//! run beside pgbench), so it talks to PostgreSQL through [`Db`]: a `tokio-postgres` client
//! whose calls block on a shared runtime. The runtime's worker drives every connection, so
//! any thread may call any session. Polling loops keep one session open instead of starting
//! a `psql` per check, which would cost the CPU the contenders need.

use std::fmt;

use anyhow::Context;
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// One connection to one database.
pub(crate) struct Db {
    client: tokio_postgres::Client,
    runtime: Handle,
}

impl Db {
    /// Connects to `uri`; the connection task runs on `runtime`.
    pub(crate) fn connect(runtime: &Handle, uri: &str) -> anyhow::Result<Db> {
        let (client, connection) = runtime
            .block_on(tokio_postgres::connect(uri, NoTls))
            .with_context(|| format!("connect to {uri}"))?;
        runtime.spawn(async move {
            // The harness notices a lost connection at its next query.
            let _ = connection.await;
        });
        Ok(Db {
            client,
            runtime: runtime.clone(),
        })
    }

    /// Runs one or more statements, discarding their results.
    pub(crate) fn execute(&self, sql: &str) -> anyhow::Result<()> {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .with_context(|| format!("run: {sql}"))
    }

    /// Runs a query with parameters and returns its rows.
    pub(crate) fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> anyhow::Result<Vec<Row>> {
        self.runtime
            .block_on(self.client.query(sql, params))
            .with_context(|| format!("query: {sql}"))
    }

    /// The first column of a one-row query, as a `bigint` (cast in the SQL).
    pub(crate) fn query_i64(&self, sql: &str) -> anyhow::Result<i64> {
        let row = self
            .runtime
            .block_on(self.client.query_one(sql, &[]))
            .with_context(|| format!("query: {sql}"))?;
        row.try_get(0).with_context(|| format!("read: {sql}"))
    }

    /// The first column of each row, as text (cast in the SQL).
    pub(crate) fn query_texts(&self, sql: &str) -> anyhow::Result<Vec<String>> {
        self.query(sql, &[])?
            .iter()
            .map(|row| row.try_get(0).with_context(|| format!("read: {sql}")))
            .collect()
    }

    /// `pg_current_wal_lsn()`: where the server's WAL ends now.
    pub(crate) fn current_wal_lsn(&self) -> anyhow::Result<Lsn> {
        let text = self.query_texts("SELECT pg_current_wal_lsn()::text")?;
        text.first()
            .context("pg_current_wal_lsn returned no row")?
            .parse()
    }
}

/// A WAL position (`pg_lsn`), ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Lsn(pub(crate) u64);

impl Lsn {
    /// Bytes of WAL from `earlier` to `self` (0 if `earlier` is not earlier).
    pub(crate) fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::str::FromStr for Lsn {
    type Err = anyhow::Error;

    /// Parses PostgreSQL's `XXX/YYYYYYYY` text form.
    fn from_str(text: &str) -> anyhow::Result<Lsn> {
        let (high, low) = text
            .split_once('/')
            .with_context(|| format!("not an LSN: {text:?}"))?;
        let high = u64::from_str_radix(high, 16).with_context(|| format!("LSN {text:?}"))?;
        let low = u64::from_str_radix(low, 16).with_context(|| format!("LSN {text:?}"))?;
        anyhow::ensure!(low <= u64::from(u32::MAX), "LSN {text:?} out of range");
        Ok(Lsn(high << 32 | low))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Quotes an SQL string literal.
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_and_orders() {
        let lsn: Lsn = "16/B374D848".parse().expect("valid");
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        let later: Lsn = "17/0".parse().expect("valid");
        assert!(later > lsn);
        assert_eq!(later.bytes_since(lsn), 0x17_0000_0000 - 0x16_B374_D848);
        assert_eq!(lsn.bytes_since(later), 0);
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("1/100000000".parse::<Lsn>().is_err());
    }

    #[test]
    fn literals_double_quotes() {
        assert_eq!(quote_literal("host=x user='a'"), "'host=x user=''a'''");
    }
}
