//! The demo behind the README's first command: two throwaway PostgreSQL clusters, a
//! `ferry server`, a live pgbench workload on the source, and a changefeed that copies and
//! then streams it to the target while the lag is printed falling to zero.
//!
//! Run with `scripts/demo` (it builds the server first). `--keep-running` leaves everything
//! up after the demo, for trying the API by hand.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferry_testkit::{FerryServer, PgCluster};
use serde_json::{json, Value};

fn main() {
    let keep_running = std::env::args().any(|a| a == "--keep-running");
    let scale = std::env::var("FERRY_DEMO_SCALE").unwrap_or_else(|_| "10".into());
    let seconds = std::env::var("FERRY_DEMO_SECONDS").unwrap_or_else(|_| "20".into());
    let binary = server_binary();

    println!("starting a source and a target PostgreSQL cluster…");
    let source = PgCluster::start();
    let target = PgCluster::start();
    source.create_database("shop");
    target.create_database("analytics");
    println!("loading pgbench scale {scale} into the source…");
    let init = source.pgbench("shop", &["-i", "-q", "-s", &scale]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let ferry = FerryServer::start(&binary);
    println!(
        "ferry server at {} (log: {})",
        ferry.url(),
        ferry.log_path().display()
    );

    std::thread::scope(|s| {
        let workload =
            s.spawn(|| source.pgbench("shop", &["-n", "-c", "4", "-j", "2", "-T", &seconds]));
        std::thread::sleep(Duration::from_millis(300));
        println!("pgbench is writing to the source for {seconds}s; creating changefeed 'demo'…");
        let (code, body) = ferry.post(
            "/api/v2/changefeeds",
            &json!({
                "id": "demo",
                "source_uri": source.uri("shop"),
                "sink_uri": target.uri("analytics"),
                "tables": ["public.pgbench_*"],
            }),
        );
        assert_eq!(code, 201, "create failed: {body}");
        let started = Instant::now();
        let mut workload = Some(workload);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let (_, status) = ferry.get("/api/v2/changefeeds/demo/status");
            let (_, synced) = ferry.get("/api/v2/changefeeds/demo/synced");
            print_status(started.elapsed(), &status, &synced);
            if workload.as_ref().is_some_and(|w| w.is_finished()) {
                let out = workload.take().unwrap().join().unwrap();
                println!("workload finished: {}", summary(&out.stdout));
            }
            if workload.is_none() && synced["synced"] == json!(true) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "not synced after 10 minutes"
            );
        }
    });

    for table in [
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_history",
    ] {
        let sql =
            format!("COPY (SELECT * FROM {table} t ORDER BY t::text COLLATE \"C\") TO STDOUT");
        let same = source.psql("shop", &sql) == target.psql("analytics", &sql);
        let rows = target.psql("analytics", &format!("SELECT count(*) FROM {table}"));
        println!(
            "{table:<18} {rows:>9} rows  {}",
            if same { "identical" } else { "DIFFERENT" }
        );
        assert!(same, "{table} differs");
    }
    println!("lag is zero and every table is identical.");
    if let Some(kib) = ferry.peak_rss_kib() {
        println!(
            "ferry server peak memory (RSS): {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    if keep_running {
        println!("\nstill running. try:\n  curl -s {}/api/v2/changefeeds/demo/status\n  psql {}\nCtrl-C to stop.", ferry.url(), source.uri("shop"));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

fn print_status(elapsed: Duration, status: &Value, synced: &Value) {
    let copied = status["snapshot_rows_copied"].as_u64().unwrap_or(0);
    let lag = status["lag_seconds"]
        .as_f64()
        .map_or("-".to_string(), |l| format!("{l:.2}s"));
    println!(
        "[{:>4.0}s] state={} phase={} snapshot_rows={} rows_applied={} lag={} checkpoint={} synced={}",
        elapsed.as_secs_f64(),
        status["state"].as_str().unwrap_or("?"),
        status["phase"].as_str().unwrap_or("?"),
        copied,
        status["rows_applied"],
        lag,
        status["checkpoint_position"].as_str().unwrap_or("-"),
        synced["synced"],
    );
}

fn summary(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| {
            l.starts_with("number of transactions actually processed") || l.starts_with("tps")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The `ferry` binary next to this example's directory (`target/<profile>/ferry`).
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the example's path");
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>/examples");
    let binary = profile_dir.join("ferry");
    assert!(
        binary.exists(),
        "build the server first: cargo build -p ferry ({} missing)",
        binary.display()
    );
    binary
}
