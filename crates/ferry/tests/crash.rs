//! `kill -9` of the server during snapshot and streaming under a pgbench workload: the
//! target must end identical to the source, nothing lost and nothing doubled (the keyless
//! `pgbench_history` included).

mod common;

use std::time::Duration;

use common::Pair;

/// pgbench scale: 2 (200k accounts) by default; `FERRY_TEST_PGBENCH_SCALE=10` for the
/// issue's full-size run.
fn scale() -> String {
    std::env::var("FERRY_TEST_PGBENCH_SCALE").unwrap_or_else(|_| "2".into())
}

#[test]
fn kill_9_during_snapshot_and_stream_loses_and_doubles_nothing() {
    let mut pair = Pair::start();
    let init = pair.source.pgbench("shop", &["-i", "-q", "-s", &scale()]);
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );

    std::thread::scope(|s| {
        let source = &pair.source;
        let churn =
            s.spawn(move || source.pgbench("shop", &["-n", "-c", "4", "-j", "2", "-T", "25"]));

        std::thread::sleep(Duration::from_millis(500));
        pair.create("bench", &["public.pgbench_*"]);
        // The first kill lands early, usually inside the snapshot; the others in the stream.
        for delay_ms in [300, 3000, 4000, 5000] {
            std::thread::sleep(Duration::from_millis(delay_ms));
            pair.ferry.kill9();
            std::thread::sleep(Duration::from_millis(200));
            pair.ferry.restart();
        }
        let out = churn.join().unwrap();
        assert!(
            out.status.success(),
            "pgbench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });

    pair.wait_synced("bench", Duration::from_secs(300));
    let log = pair.ferry.log();
    for line in log
        .lines()
        .filter(|l| l.contains("snapshot done") || l.contains("snapshot resumed"))
    {
        eprintln!("{line}");
    }
    let report = pair.compare(&[
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_history",
    ]);
    eprintln!("scenario 1: 4 kill -9 of the server (the first during the snapshot) under pgbench, scale {}\n{report}", scale());
    report.assert_identical();
    let history = pair
        .target
        .psql("analytics", "SELECT count(*) FROM pgbench_history");
    assert!(
        history.parse::<u64>().unwrap() > 100,
        "the workload ran: {history} history rows"
    );
}
