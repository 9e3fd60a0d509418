//! Workload 3, steady streaming under load, with an end-to-end latency probe.
//!
//! ```text
//!  source                                   replicator              target
//!  pgbench -c 4 -T S  ───────────────────────────►  ═══════════════►  pgbench tables
//!  probe writer: every 50 ms                                          bench_probe
//!    INSERT bench_probe (id) ── commit ack at t0 ──►  ═══════════════►    deferred trigger at
//!                                                                         its commit: t1
//! ```
//!
//! A probe's latency is t1 − t0: from the moment the source acknowledged its commit (the
//! harness's wall clock) to the moment the transaction that wrote it on the target commits
//! (`clock_timestamp()` in a deferred constraint trigger, which fires at commit; `ENABLE
//! ALWAYS`, so replication sessions fire it too), one clock on one machine. No polling
//! delay is added. A reader polls the target until every probe has arrived, and the time
//! the replicator needs to catch up after the load is reported as well.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::db::Db;
use crate::measurement::{LatencySummary, Measurement};
use crate::plan::{Contender, Plan, PGBENCH_CLIENTS, PGBENCH_THREADS};
use crate::replicator::{Replicator, CATCH_UP_TIMEOUT};
use crate::testbed::{Testbed, PGBENCH_TABLES, PROBE_TABLE};
use crate::workload::verify;

/// A probe row every 50 ms, as the issue asks.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How often the reader polls the target for the probes' arrival.
const READER_POLL: Duration = Duration::from_millis(20);
/// Where the target's trigger notes when each probe's transaction committed.
const SEEN_TABLE: &str = "public.bench_probe_seen";
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
    let reader_db = testbed.target_db()?;
    note_commits(&reader_db)?;

    let source = testbed.source_db()?;
    let writer_db = testbed.source_db()?;
    let stop_writing = AtomicBool::new(false);
    let last_id = AtomicI64::new(UNKNOWN_LAST_ID);
    let (clients, threads, seconds) = (
        PGBENCH_CLIENTS.to_string(),
        PGBENCH_THREADS.to_string(),
        plan.latency_window.as_secs().to_string(),
    );
    let rate = plan.latency_rate.map(|r| r.to_string());
    let mut load = vec!["-c", &clients, "-j", &threads, "-T", &seconds];
    if let Some(rate) = &rate {
        load.extend(["-R", rate]);
    }

    let start = source.current_wal_lsn()?;
    let clock = testbed.clock();
    let (pgbench, committed, seen, catch_up, servers_cpu) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_probes(&reader_db, &last_id));
        let writer = scope.spawn(|| write_probes(&writer_db, &stop_writing));
        let pgbench = testbed.pgbench(&load);
        let load_end = Instant::now();
        // The servers' CPU in the load's window (the catch-up after it is not timed).
        let (_, servers_cpu) = clock.stop();
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
        (pgbench, committed, seen, caught_up, servers_cpu)
    });
    let (pgbench, committed, catch_up) = (pgbench?, committed?, catch_up?);
    seen?;
    let seen = commit_times(&reader_db)?;
    let end = source.current_wal_lsn()?;
    let usage = replicator.usage();
    verify::same_rows(testbed, &tables)?;
    replicator.finish()?;

    let mut latencies_ms: Vec<f64> = committed
        .iter()
        .enumerate()
        .filter_map(|(index, committed_us)| {
            let seen_us = seen.get(&i64::try_from(index + 1).ok()?)?;
            Some((seen_us - committed_us) as f64 / 1e3)
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
        servers_cpu: Some(servers_cpu),
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

/// Makes the target note when each probe row's transaction commits, in [`SEEN_TABLE`]:
/// a deferred constraint trigger fires at commit. Schema-qualified, since native apply runs
/// with an empty `search_path`.
fn note_commits(target: &Db) -> anyhow::Result<()> {
    target.execute(&format!(
        "CREATE TABLE {SEEN_TABLE} (id bigint NOT NULL, seen_at timestamptz NOT NULL);
         CREATE FUNCTION public.bench_probe_seen() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO {SEEN_TABLE} VALUES (NEW.id, clock_timestamp());
             RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER bench_probe_seen AFTER INSERT ON {PROBE_TABLE}
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
             EXECUTE FUNCTION public.bench_probe_seen();
         ALTER TABLE {PROBE_TABLE} ENABLE ALWAYS TRIGGER bench_probe_seen;"
    ))
}

/// When each probe's transaction committed on the target, µs since the Unix epoch, by id
/// (the first time, should a probe be written twice).
fn commit_times(target: &Db) -> anyhow::Result<HashMap<i64, i64>> {
    let rows = target.query(
        &format!(
            "SELECT id, min((extract(epoch FROM seen_at) * 1000000)::bigint) \
             FROM {SEEN_TABLE} GROUP BY id"
        ),
        &[],
    )?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// Microseconds since the Unix epoch.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Inserts probe 1, 2, 3, … on a fixed 50 ms schedule until told to stop; returns when
/// each commit was acknowledged, µs since the Unix epoch (index i is probe i + 1). A late
/// insert does not shift the schedule: the next one is due at its own slot.
fn write_probes(db: &Db, stop: &AtomicBool) -> anyhow::Result<Vec<i64>> {
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
        committed.push(now_us());
    }
    Ok(committed)
}

/// Polls the target for new probe rows until the last probe (once the writer has published
/// its id) has arrived or the grace time has passed.
fn read_probes(db: &Db, last_id: &AtomicI64) -> anyhow::Result<()> {
    let query = format!("SELECT id FROM {PROBE_TABLE} WHERE id > $1 ORDER BY id");
    let mut newest = 0_i64;
    let mut grace_ends: Option<Instant> = None;
    loop {
        let rows = db.query(&query, &[&newest])?;
        let now = Instant::now();
        for row in rows {
            newest = row.try_get(0)?;
        }
        let last = last_id.load(Ordering::Relaxed);
        if last != UNKNOWN_LAST_ID {
            if newest >= last {
                return Ok(());
            }
            let ends = *grace_ends.get_or_insert(now + READER_GRACE);
            if now >= ends {
                return Ok(());
            }
        }
        std::thread::sleep(READER_POLL);
    }
}
