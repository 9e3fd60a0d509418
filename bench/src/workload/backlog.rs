//! Workload 2, backlog drain: the replicator is stopped, pgbench writes
//! `-c 4 -t N` transactions on the source, the replicator starts again, and the clock runs
//! from that start until it has caught up.
//!
//! ```text
//! start + snapshot ─► caught up ─► pause ─► pgbench -c 4 -t N ─► resume ══timed══► caught up
//! ```
//!
//! Native replication pauses with `ALTER SUBSCRIPTION … DISABLE`; Ferry by stopping its
//! server (deleting the changefeed would drop the slot and the backlog with it). The decode
//! limit has no snapshot: its slot is created before pgbench and drained with `--endpos`.
//! Row changes are pgbench's: 3 updates and 1 insert per transaction; bytes are the WAL the
//! run wrote. A stream contender's destination must hold at least one event per row copied
//! by the snapshot plus one per change.

use crate::measurement::Measurement;
use crate::plan::{Contender, Plan, PGBENCH_CLIENTS, PGBENCH_THREADS};
use crate::replicator::{Replicator, CATCH_UP_TIMEOUT};
use crate::testbed::{Testbed, PGBENCH_TABLES};
use crate::workload::decode_limit::DecodeLimit;
use crate::workload::verify;

/// Runs one backlog drain of `contender`.
pub(super) fn run(
    testbed: &Testbed,
    plan: &Plan,
    contender: Contender,
) -> anyhow::Result<Measurement> {
    testbed.prepare_run(&["public.pgbench_history"])?;
    let source = testbed.source_db()?;
    let (clients, threads, transactions) = (
        PGBENCH_CLIENTS.to_string(),
        PGBENCH_THREADS.to_string(),
        plan.backlog_transactions.to_string(),
    );
    let pgbench_args = ["-c", &clients, "-j", &threads, "-t", &transactions];

    if contender == Contender::Recvlogical {
        let decoder = DecodeLimit::prepare(testbed, &PGBENCH_TABLES)?;
        let start = source.current_wal_lsn()?;
        let pgbench = testbed.pgbench(&pgbench_args)?;
        let end = source.current_wal_lsn()?;
        let clock = testbed.clock();
        let usage = decoder.drain(testbed, end)?;
        let (wall, servers_cpu) = clock.stop();
        decoder.finish()?;
        return Ok(Measurement {
            wall,
            rows: pgbench.row_changes(),
            bytes: end.bytes_since(start),
            usage: Some(usage),
            servers_cpu: Some(servers_cpu),
            latency: None,
        });
    }

    let copied = verify::source_rows(testbed, &PGBENCH_TABLES)?;
    let mut replicator = Replicator::start(testbed, plan, contender, &PGBENCH_TABLES)?;
    replicator.wait_caught_up(CATCH_UP_TIMEOUT)?;
    replicator.pause()?;
    let start = source.current_wal_lsn()?;
    let pgbench = testbed.pgbench(&pgbench_args)?;
    let end = source.current_wal_lsn()?;
    let clock = testbed.clock();
    replicator.resume()?;
    replicator.wait_applied(end, CATCH_UP_TIMEOUT)?;
    let (wall, servers_cpu) = clock.stop();
    let usage = replicator.usage();
    if contender.is_stream() {
        replicator.check_events(testbed, copied + pgbench.row_changes())?;
    } else if contender != Contender::FerryBlackhole {
        verify::same_rows(testbed, &PGBENCH_TABLES)?;
    }
    replicator.finish()?;
    Ok(Measurement {
        wall,
        rows: pgbench.row_changes(),
        bytes: end.bytes_since(start),
        usage,
        servers_cpu: Some(servers_cpu),
        latency: None,
    })
}
