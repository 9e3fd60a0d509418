//! MariaDB → MariaDB backlog drain: the replicator copies the pgbench-like tables and catches
//! up, stops, 4 clients write a backlog of small transactions on the source, the replicator
//! starts again, and the clock runs from that start until it has applied everything up to
//! the source's `@@gtid_binlog_pos` after the writes.
//!
//! ```text
//! copy + caught up ─► stop ─► 4 clients × N transactions ─► start ══timed══► applied
//! ```
//!
//! - **maria-replica**: `STOP SLAVE` / `START SLAVE`; done when `@@gtid_slave_pos` reaches
//!   the end position ([`Replica`]).
//! - **ferry-maria**: the server is stopped / started again (as in the PostgreSQL suite);
//!   done when `/synced` is true, which compares with `@@gtid_binlog_pos` at each request.
//!
//! The backlog is written by the harness with `mysql_async` (pgbench has no MariaDB
//! driver): 4 connections, each running N TPC-B-like transactions (pgbench's script: update
//! an account, read it back, update a teller and a branch, insert a history row), each sent
//! as one multi-statement round trip. Row changes: 4 per transaction; MB/s counts the binlog
//! the writes added.

use anyhow::Context as _;
use mysql_async::prelude::Queryable;

use crate::maria::replica::{GtidList, Replica};
use crate::maria::testbed::{MariaTestbed, Session, PGBENCH_TABLES};
use crate::maria::{ferry_uri, timeout, verify, Breakdown, Servers, Target};
use crate::measurement::Measurement;
use crate::plan::{Contender, Plan, PGBENCH_CLIENTS};
use crate::replicator::FerryChangefeed;

/// Runs one backlog drain of `contender`; also returns the servers' CPU during the timed
/// part (the drain copies nothing).
pub(super) fn run(
    testbed: &MariaTestbed,
    servers: &Servers,
    plan: &Plan,
    contender: Contender,
) -> anyhow::Result<(Measurement, Breakdown)> {
    testbed.prepare_run()?;
    let mut source = testbed.source_session()?;
    let (wall, cpu, usage, backlog) = match contender {
        Contender::MariaReplica => {
            let mut replica = Replica::start(testbed, &PGBENCH_TABLES, timeout(plan))?;
            replica.pause()?;
            let backlog = write_backlog(testbed, plan, &mut source)?;
            let clock = servers.clock();
            replica.resume()?;
            replica.wait_applied(&backlog.end, timeout(plan))?;
            let (wall, cpu) = clock.stop();
            replica.finish()?;
            (wall, cpu, None, backlog)
        }
        Contender::FerryMaria => {
            let mut ferry = FerryChangefeed::start_bare(plan, Contender::FerryMaria)?;
            ferry.create_between(
                &testbed.source.uri(crate::maria::testbed::DATABASE),
                &ferry_uri(testbed, Target::Maria),
                &PGBENCH_TABLES,
            )?;
            ferry.wait_synced(timeout(plan))?;
            ferry.stop()?;
            let backlog = write_backlog(testbed, plan, &mut source)?;
            let clock = servers.clock();
            ferry.restart()?;
            ferry.wait_synced(timeout(plan))?;
            let (wall, cpu) = clock.stop();
            let usage = ferry.usage();
            ferry.finish()?;
            (wall, cpu, usage, backlog)
        }
        other => anyhow::bail!("{other} has no MariaDB backlog run"),
    };
    verify::same_rows(testbed, Target::Maria, &PGBENCH_TABLES)?;
    let measurement = Measurement {
        wall,
        rows: backlog.transactions * 4,
        bytes: backlog.binlog_bytes,
        usage,
        servers_cpu: None,
        latency: None,
    };
    let breakdown = Breakdown {
        cpu,
        ferry_copy_seconds: None,
    };
    Ok((measurement, breakdown))
}

/// What the writers left on the source.
struct Backlog {
    transactions: u64,
    /// Binlog bytes the writes added.
    binlog_bytes: u64,
    /// `@@gtid_binlog_pos` after the last commit.
    end: GtidList,
}

/// Runs [`PGBENCH_CLIENTS`] writers of `plan.backlog_transactions` transactions each.
fn write_backlog(
    testbed: &MariaTestbed,
    plan: &Plan,
    source: &mut Session,
) -> anyhow::Result<Backlog> {
    let before = binlog_bytes(source)?;
    let scale = u64::from(plan.scale);
    let transactions = plan.backlog_transactions;
    let port = testbed.source.port();
    testbed.handle().block_on(async move {
        let mut writers = Vec::new();
        for client in 0..PGBENCH_CLIENTS {
            writers.push(tokio::spawn(write_transactions(
                port,
                scale,
                transactions,
                u64::from(client),
            )));
        }
        for writer in writers {
            writer.await.context("a backlog writer panicked")??;
        }
        anyhow::Ok(())
    })?;
    let end = GtidList::parse(&source.query_text("SELECT @@gtid_binlog_pos")?)?;
    Ok(Backlog {
        transactions: u64::from(PGBENCH_CLIENTS) * u64::from(transactions),
        binlog_bytes: binlog_bytes(source)?.saturating_sub(before),
        end,
    })
}

/// One client: `count` TPC-B-like transactions with pgbench's random choices.
async fn write_transactions(port: u16, scale: u64, count: u32, client: u64) -> anyhow::Result<()> {
    let url = format!(
        "mysql://{}:{}@127.0.0.1:{port}/bench",
        ferry_testkit::mariadb::MARIADB_USER,
        ferry_testkit::mariadb::MARIADB_PASSWORD
    );
    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&url)?)
        .await
        .context("connect a backlog writer")?;
    let mut random = SplitMix64(0x5eed_0000 + client);
    for _ in 0..count {
        let aid = 1 + random.below(100_000 * scale);
        let tid = 1 + random.below(10 * scale);
        let bid = 1 + random.below(scale);
        let delta = random.below(10_001) as i64 - 5_000;
        conn.query_drop(format!(
            "START TRANSACTION;
             UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};
             SELECT abalance FROM pgbench_accounts WHERE aid = {aid};
             UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};
             UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};
             INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
                 VALUES ({tid}, {bid}, {aid}, {delta}, NOW(6));
             COMMIT"
        ))
        .await
        .context("a backlog transaction failed")?;
    }
    conn.disconnect().await?;
    Ok(())
}

/// The binlog's total size: `SHOW BINARY LOGS`, summed.
fn binlog_bytes(source: &mut Session) -> anyhow::Result<u64> {
    let logs: Vec<(String, u64)> = source.query("SHOW BINARY LOGS")?;
    Ok(logs.iter().map(|(_, size)| size).sum())
}

/// A small, seedable generator (SplitMix64): the writers need reproducible uniform choices,
/// not cryptographic ones.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (the modulo bias is below 2^-40 for the bounds used here).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_stay_in_range_and_repeat_per_seed() {
        let (mut a, mut b) = (SplitMix64(7), SplitMix64(7));
        for _ in 0..1000 {
            let x = a.below(10);
            assert!(x < 10);
            assert_eq!(x, b.below(10));
        }
    }
}
