//! Fault scenario 4: the target crashes (`pg_ctl -m immediate stop`) under a write load on the
//! source, with `synchronous_commit=off` in the target's configuration, stays down a while,
//! and comes back.
//!
//! The invariant: the source's slot never confirms a transaction the target does not hold
//! durably. A commit the target acknowledged with `synchronous_commit=off` may still sit in
//! its WAL buffers; a crash then loses it, and had the slot already confirmed it, the source
//! would never send it again. The test checks the invariant directly (no transaction on the
//! source committed between the target's durable checkpoint and the slot's
//! `confirmed_flush_lsn`, read from a second, never-consumed `test_decoding` slot) and by its
//! consequence (the row-by-row oracle: 0 missing, 0 extra, 0 different).
//!
//! `FERRY_CHAOS_FULL=1` runs the full version (60 s outage, longer load, scale 10);
//! the default is the fast subset of the normal suite.

mod common;

use std::time::{Duration, Instant};

use common::workloads::{self, Workloads};
use common::Pair;
use ferry_testkit::{wait_for, PgOptions};
use serde_json::json;

const TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

/// Sizes of one run: fast in the normal suite, the numbers with `FERRY_CHAOS_FULL=1`.
struct Plan {
    scale: &'static str,
    load_seconds: u64,
    /// pgbench's `--rate` (transactions per second). A light load is the hard case: the
    /// target's last, partly filled WAL page then holds more than the second it takes the
    /// slot to hear of a commit, so an unflushed acknowledged commit is also a confirmed one.
    rate: &'static str,
    crash_after: Duration,
    outage: Duration,
}

fn plan() -> Plan {
    if std::env::var_os("FERRY_CHAOS_FULL").is_some() {
        Plan {
            scale: "10",
            load_seconds: 90,
            rate: "10",
            crash_after: Duration::from_secs(10),
            outage: Duration::from_secs(60),
        }
    } else {
        Plan {
            scale: "1",
            load_seconds: 6,
            rate: "5",
            crash_after: Duration::from_secs(3),
            outage: Duration::from_secs(5),
        }
    }
}

#[test]
fn target_crash_with_async_commit_loses_nothing_the_slot_confirmed() {
    let plan = plan();
    // `synchronous_commit=off` is the setting under test. A slow WAL writer (10 s, the
    // maximum) writes the last, partly filled WAL page later, so a sink that relied on the
    // target's default loses acknowledged commits on every run instead of on some (3 runs
    // out of 3 lost 2 to 6 transactions with the sink's `synchronous_commit=on` removed).
    let target_options = PgOptions {
        extra_conf: vec![
            ("synchronous_commit".into(), "off".into()),
            ("wal_writer_delay".into(), "10s".into()),
        ],
        ..PgOptions::default()
    };
    let mut pair = Pair::start_with(PgOptions::default(), target_options);
    let init = pair.source.pgbench("shop", &["-i", "-q", "-s", plan.scale]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let workloads = Workloads::create(&pair);
    pair.create(
        "cf",
        &["public.pgbench_*", "public.bank_*", "public.toast_docs"],
    );
    pair.wait_synced("cf", Duration::from_secs(120));
    // A witness of every transaction from here on, with its commit position.
    pair.source.psql(
        "shop",
        "SELECT pg_create_logical_replication_slot('witness', 'test_decoding')",
    );

    let load_seconds = plan.load_seconds.to_string();
    let rate = plan.rate;
    // The bank and TOAST writers run alongside pgbench (throttled too: a transaction every
    // 50 ms each); the bank's total is read on the target every second, across the crash.
    let mut running = workloads.start(&pair, "0/0", Duration::from_millis(50));
    let (confirmed_at_crash, durable, outage, drain) = std::thread::scope(|s| {
        let source = &pair.source;
        let load = s.spawn(move || {
            source.pgbench(
                "shop",
                &["-n", "-c", "2", "-j", "2", "-R", rate, "-T", &load_seconds],
            )
        });
        std::thread::sleep(plan.crash_after);
        pair.target.stop_immediate();
        let down_since = Instant::now();
        // Whatever Ferry confirmed before the crash has reached the slot after a moment;
        // nothing after it can be confirmed (no batch can commit).
        std::thread::sleep(Duration::from_secs(1));
        let confirmed_at_crash = pair.slot_confirmed_flush();
        // Pause, so the target's checkpoint can be read as recovery left it, before Ferry
        // writes again.
        pair.act("cf", "pause");
        pair.wait_state("cf", "paused", Duration::from_secs(30));
        let outage = plan.outage.saturating_sub(down_since.elapsed());
        std::thread::sleep(outage);
        pair.target.restart();
        let outage = down_since.elapsed();
        let durable = pair.target.psql(
            "analytics",
            "SELECT (position::jsonb->>'value')::pg_lsn FROM _ferry.checkpoints",
        );
        assert_eq!(
            pair.slot_confirmed_flush(),
            confirmed_at_crash,
            "the slot moved while the changefeed was paused"
        );
        // The backlog: everything the source wrote up to now, applied after the resume.
        let backlog_end = pair.source.psql("shop", "SELECT pg_current_wal_lsn()");
        let resumed = Instant::now();
        pair.act("cf", "resume");
        // Drained: the target's checkpoint passed the backlog's end, or (when the load
        // ended before the backlog's end was read, so that no later commit moves the
        // target's checkpoint past it) the changefeed is synced.
        wait_for("the backlog to drain", Duration::from_secs(120), || {
            pair.target.psql(
                "analytics",
                &format!(
                    "SELECT (position::jsonb->>'value')::pg_lsn >= '{backlog_end}' \
                     FROM _ferry.checkpoints"
                ),
            ) == "t"
                || pair.ferry.get("/api/v2/changefeeds/cf/synced").1["synced"] == json!(true)
        });
        let drain = resumed.elapsed();
        let out = load.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        running.stop_writers();
        (confirmed_at_crash, durable, outage, drain)
    });

    // Transactions the slot confirmed that the target lost: committed after the target's
    // durable checkpoint and at or before the slot's confirmed position.
    let lost = pair.source.psql(
        "shop",
        &format!(
            "SELECT count(*) FROM pg_logical_slot_peek_changes('witness', NULL, NULL,
                 'skip-empty-xacts', '1')
             WHERE data LIKE 'COMMIT%' AND lsn > '{durable}' AND lsn <= '{confirmed_at_crash}'"
        ),
    );
    pair.source
        .psql("shop", "SELECT pg_drop_replication_slot('witness')");
    pair.wait_synced("cf", Duration::from_secs(120));
    let workloads = running.finish(&pair);
    let mut tables = TABLES.to_vec();
    tables.extend(workloads::TABLES);
    let report = pair.compare(&tables);
    let peak_mib = pair.ferry.peak_rss_kib().unwrap_or(0) / 1024;
    eprintln!(
        "scenario 4: target down {:.1} s; slot confirmed {confirmed_at_crash} at the crash, \
         target durable at {durable}; {lost} confirmed transactions lost; backlog drained {:.1} \
         s after the target came back; server peak RSS {peak_mib} MiB; {workloads}\n{report}",
        outage.as_secs_f64(),
        drain.as_secs_f64()
    );
    assert_eq!(
        lost, "0",
        "the slot confirmed {lost} transactions past the target's durable checkpoint \
         ({confirmed_at_crash} > {durable})"
    );
    report.assert_identical();
    let history: u64 = pair
        .target
        .psql("analytics", "SELECT count(*) FROM pgbench_history")
        .parse()
        .unwrap();
    let expected = plan.rate.parse::<u64>().unwrap() * plan.load_seconds;
    assert!(
        history >= expected / 2,
        "the load ran: {history} history rows, about {expected} expected"
    );
}
