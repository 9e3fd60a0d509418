//! Workload 3, steady streaming under load, with an end-to-end latency probe.
//!
//! ```text
//!  source                                   replicator              target
//!  pgbench -c 4 -T S  ───────────────────────────►  ═══════════════►  pgbench tables
//!  probe writer: every 50 ms                                          probe reader: every 5 ms
//!    INSERT bench_probe (id) ── commit ack at t0 ──►  ═══════════════►  SELECT id > last → seen at t1
//! ```
//!
//! A probe's latency is t1 − t0: from the moment the source acknowledged its commit to the
//! moment a reader polling the target saw it, both on the harness's monotonic clock. The
//! reader polls every [`READER_POLL`], which adds up to that much (half on average) to every
//! contender alike. After the load, the reader keeps going until it has seen every probe,
//! and the time the replicator needs to catch up is reported as well.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::db::Db;
use crate::measurement::{LatencySummary, Measurement};
use crate::plan::{Contender, Plan, PGBENCH_CLIENTS, PGBENCH_THREADS};
use crate::replicator::{Replicator, CATCH_UP_TIMEOUT};
use crate::testbed::{Testbed, PGBENCH_TABLES, PROBE_TABLE};
use crate::workload::verify;

/// A probe row every 50 ms, as the issue asks.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How often the reader polls the target: the latency's resolution.
const READER_POLL: Duration = Duration::from_millis(5);
/// How long after the load the reader waits for the last probes.
const READER_GRACE: Duration = Duration::from_secs(600);
/// Not yet known: the writer is still writing.
const UNKNOWN_LAST_ID: i64 = -1;

/// Runs one latency window of `contender`.
pub(super) fn run(
    testbed: &Testbed,
    plan: &Plan,
    contender: Contender,
) -> anyhow::Result<Measurement> {
    testbed.prepare_run(&["public.pgbench_history", PROBE_TABLE])?;
    let mut tables = PGBENCH_TABLES.to_vec();
    tables.push(PROBE_TABLE);
    let replicator = Replicator::start(testbed, plan, contender, &tables)?;
    replicator.wait_caught_up(CATCH_UP_TIMEOUT)?;

    let source = testbed.source_db()?;
    let writer_db = testbed.source_db()?;
    let reader_db = testbed.target_db()?;
    let stop_writing = AtomicBool::new(false);
    let last_id = AtomicI64::new(UNKNOWN_LAST_ID);
    let (clients, threads, seconds) = (
        PGBENCH_CLIENTS.to_string(),
        PGBENCH_THREADS.to_string(),
        plan.latency_window.as_secs().to_string(),
    );

    let start = source.current_wal_lsn()?;
    let (pgbench, committed, seen, catch_up) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_probes(&reader_db, &last_id));
        let writer = scope.spawn(|| write_probes(&writer_db, &stop_writing));
        let pgbench = testbed.pgbench(&["-c", &clients, "-j", &threads, "-T", &seconds]);
        let load_end = Instant::now();
        stop_writing.store(true, Ordering::Relaxed);
        let committed = writer.join().expect("the probe writer does not panic");
        let written = committed.as_ref().map(|c| c.len()).unwrap_or(0);
        last_id.store(
            i64::try_from(written).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        let caught_up = replicator
            .wait_caught_up(CATCH_UP_TIMEOUT)
            .map(|()| load_end.elapsed());
        let seen = reader.join().expect("the probe reader does not panic");
        (pgbench, committed, seen, caught_up)
    });
    let (pgbench, committed, seen, catch_up) = (pgbench?, committed?, seen?, catch_up?);
    let end = source.current_wal_lsn()?;
    let usage = replicator.usage();
    verify::same_rows(testbed, &tables)?;
    replicator.finish()?;

    let mut latencies_ms: Vec<f64> = seen
        .iter()
        .filter_map(|(id, at)| {
            let index = usize::try_from(*id).ok()?.checked_sub(1)?;
            let committed_at = committed.get(index)?;
            Some(at.saturating_duration_since(*committed_at).as_secs_f64() * 1e3)
        })
        .collect();
    let probes_seen = latencies_ms.len();
    let [p50_ms, p95_ms, p99_ms, max_ms] = LatencySummary::percentiles(&mut latencies_ms)
        .context("no probe row reached the target")?;
    Ok(Measurement {
        wall: plan.latency_window,
        rows: pgbench.row_changes(),
        bytes: end.bytes_since(start),
        usage,
        latency: Some(LatencySummary {
            p50_ms,
            p95_ms,
            p99_ms,
            max_ms,
            probes_written: committed.len(),
            probes_seen,
            source_tps: pgbench.tps,
            catch_up,
        }),
    })
}

/// Inserts probe 1, 2, 3, … on a fixed 50 ms schedule until told to stop; returns when
/// each commit was acknowledged (index i is probe i + 1). A late insert does not shift the
/// schedule: the next one is due at its own slot.
fn write_probes(db: &Db, stop: &AtomicBool) -> anyhow::Result<Vec<Instant>> {
    let insert =
        format!("INSERT INTO {PROBE_TABLE} (id, written_at) VALUES ($1, clock_timestamp())");
    let started = Instant::now();
    let mut committed = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let due = started + PROBE_INTERVAL * u32::try_from(committed.len())?;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let id = i64::try_from(committed.len() + 1)?;
        db.query(&insert, &[&id])?;
        committed.push(Instant::now());
    }
    Ok(committed)
}

/// Polls the target for new probe rows, noting when each first appeared, until the last
/// probe (once the writer has published its id) has arrived or the grace time has passed.
fn read_probes(db: &Db, last_id: &AtomicI64) -> anyhow::Result<Vec<(i64, Instant)>> {
    let query = format!("SELECT id FROM {PROBE_TABLE} WHERE id > $1 ORDER BY id");
    let mut seen = Vec::new();
    let mut newest = 0_i64;
    let mut grace_ends: Option<Instant> = None;
    loop {
        let rows = db.query(&query, &[&newest])?;
        let now = Instant::now();
        for row in rows {
            newest = row.try_get(0)?;
            seen.push((newest, now));
        }
        let last = last_id.load(Ordering::Relaxed);
        if last != UNKNOWN_LAST_ID {
            if newest >= last {
                return Ok(seen);
            }
            let ends = *grace_ends.get_or_insert(now + READER_GRACE);
            if now >= ends {
                return Ok(seen);
            }
        }
        std::thread::sleep(READER_POLL);
    }
}
