//! Workload 4, one big transaction: with the replicator streaming an empty table, one
//! `INSERT … SELECT` adds N rows (1M by default) in a single transaction; the clock runs
//! from its commit until the replicator has caught up. The point is memory as much as time:
//! Ferry's peak RSS must stay bounded whatever the transaction's size.
//!
//! The decode limit follows the slot during the insert too, and is done when its walsender
//! has sent the commit (`sent_lsn` past the end of the transaction).

use crate::measurement::Measurement;
use crate::plan::{Contender, Plan};
use crate::replicator::{Replicator, CATCH_UP_TIMEOUT};
use crate::testbed::{Testbed, BIGTX_TABLE};
use crate::workload::decode_limit::DecodeLimit;
use crate::workload::verify;

/// Runs one big transaction past `contender`.
pub(super) fn run(
    testbed: &Testbed,
    plan: &Plan,
    contender: Contender,
) -> anyhow::Result<Measurement> {
    testbed.prepare_run(&[BIGTX_TABLE])?;
    let source = testbed.source_db()?;
    let insert = format!(
        "INSERT INTO {BIGTX_TABLE} SELECT g, repeat(md5(g::text), 2) \
         FROM generate_series(1, {}) g",
        plan.bigtx_rows
    );

    let (wall, servers_cpu, usage, start, end) = if contender == Contender::Recvlogical {
        let decoder = DecodeLimit::prepare(testbed, &[BIGTX_TABLE])?;
        let follower = decoder.follow(testbed)?;
        let start = source.current_wal_lsn()?;
        source.execute(&insert)?;
        let clock = testbed.clock();
        let end = source.current_wal_lsn()?;
        decoder.wait_sent(end, CATCH_UP_TIMEOUT)?;
        let (wall, cpu) = clock.stop();
        let usage = follower.interrupt()?;
        decoder.finish()?;
        (wall, cpu, Some(usage), start, end)
    } else {
        let replicator = Replicator::start(testbed, plan, contender, &[BIGTX_TABLE])?;
        replicator.wait_caught_up(CATCH_UP_TIMEOUT)?;
        let start = source.current_wal_lsn()?;
        source.execute(&insert)?;
        let clock = testbed.clock();
        let end = source.current_wal_lsn()?;
        replicator.wait_applied(end, CATCH_UP_TIMEOUT)?;
        let (wall, cpu) = clock.stop();
        let usage = replicator.usage();
        if contender != Contender::FerryBlackhole {
            verify::same_rows(testbed, &[BIGTX_TABLE])?;
        }
        replicator.finish()?;
        (wall, cpu, usage, start, end)
    };
    Ok(Measurement {
        wall,
        rows: plan.bigtx_rows,
        bytes: end.bytes_since(start),
        usage,
        servers_cpu: Some(servers_cpu),
        latency: None,
    })
}
