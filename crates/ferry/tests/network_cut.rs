//! Fault scenario 5: the network between Ferry and the source is cut silently (a proxy that
//! stops forwarding and closes nothing, so no FIN, no RST, and TCP keepalives still answered)
//! under a write load, once for less and once for more than the source's
//! `wal_sender_timeout`.
//!
//! Ferry must notice by its own timeout (`replication_timeout`: a silent stream is probed
//! over the catalog session, which does not answer either), go `error`, reconnect once the
//! network is back, take its slot back from the old walsender when that one has not timed out
//! yet ("replication slot … is active for PID …"), and end identical (the oracle: 0 / 0 / 0).
//!
//! `FERRY_CHAOS_FULL=1` runs the sizes (cuts of 30 s and 120 s, the source's default
//! `wal_sender_timeout` of 60 s, a replication timeout of 10 s); the fast subset shortens all
//! of them (cuts of 6 s and 15 s, `wal_sender_timeout` 10 s, replication timeout 2 s).

mod common;

use std::time::{Duration, Instant};

use common::Pair;
use ferry_testkit::{FerryServer, PgCluster, PgOptions, TcpProxy};

const TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

struct Plan {
    scale: &'static str,
    wal_sender_timeout: &'static str,
    wal_sender_timeout_secs: u64,
    replication_timeout: &'static str,
    cuts: [Duration; 2],
}

fn plan() -> Plan {
    if std::env::var_os("FERRY_CHAOS_FULL").is_some() {
        Plan {
            scale: "10",
            wal_sender_timeout: "60s",
            wal_sender_timeout_secs: 60,
            replication_timeout: "10s",
            cuts: [Duration::from_secs(30), Duration::from_secs(120)],
        }
    } else {
        Plan {
            scale: "1",
            wal_sender_timeout: "10s",
            wal_sender_timeout_secs: 10,
            replication_timeout: "2s",
            cuts: [Duration::from_secs(6), Duration::from_secs(15)],
        }
    }
}

#[test]
fn a_silent_network_cut_is_noticed_and_survived() {
    let plan = plan();
    let source_options = PgOptions {
        extra_conf: vec![("wal_sender_timeout".into(), plan.wal_sender_timeout.into())],
        ..PgOptions::default()
    };
    let (source, target) = std::thread::scope(|s| {
        let a = s.spawn(move || PgCluster::start_with(source_options));
        let b = s.spawn(PgCluster::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    source.create_database("shop");
    target.create_database("analytics");
    let ferry = FerryServer::start_with_args(
        std::path::Path::new(env!("CARGO_BIN_EXE_ferry")),
        "info,ferry_engine=debug",
        &[
            "--replication-timeout",
            plan.replication_timeout,
            "--retry-initial-backoff",
            "500ms",
            "--retry-max-backoff",
            "2s",
        ],
    );
    let pair = Pair::from_parts(source, target, ferry);
    let proxy = TcpProxy::start(pair.source.port());
    let init = pair.source.pgbench("shop", &["-i", "-q", "-s", plan.scale]);
    assert!(init.status.success(), "{init:?}");

    // The changefeed reaches the source only through the proxy.
    let source_uri = pair.source.uri("shop").replace(
        &format!(":{}/", pair.source.port()),
        &format!(":{}/", proxy.port()),
    );
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &serde_json::json!({
            "id": "cf",
            "source_uri": source_uri,
            "sink_uri": pair.target.uri("analytics"),
            "tables": ["public.pgbench_*"],
        }),
    );
    assert_eq!(code, 201, "{body}");
    pair.wait_synced("cf", Duration::from_secs(300));

    for cut in plan.cuts {
        let load_seconds = (cut.as_secs() + 4).to_string();
        let (noticed, recovered, error) = std::thread::scope(|s| {
            let source = &pair.source;
            let load = s.spawn(move || {
                source.pgbench(
                    "shop",
                    &["-n", "-c", "2", "-j", "2", "-R", "20", "-T", &load_seconds],
                )
            });
            std::thread::sleep(Duration::from_secs(2));
            proxy.cut();
            let cut_at = Instant::now();
            let status = pair.wait_state("cf", "error", cut + Duration::from_secs(60));
            let noticed = cut_at.elapsed();
            let error = status["last_warning"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            std::thread::sleep(cut.saturating_sub(cut_at.elapsed()));
            proxy.heal();
            let healed = Instant::now();
            let out = load.join().unwrap();
            assert!(out.status.success(), "{out:?}");
            pair.wait_synced("cf", Duration::from_secs(300));
            (noticed, healed.elapsed(), error)
        });
        let report = pair.compare(&TABLES);
        let ended = pair
            .ferry
            .log()
            .matches("ended the walsender of a dead replication session")
            .count();
        eprintln!(
            "scenario 5 ({} s cut, wal_sender_timeout {} s, replication_timeout {}): noticed \
             after {:.1} s ({error}); synced {:.1} s after the network came back; stale \
             walsenders ended so far: {ended}\n{report}",
            cut.as_secs(),
            plan.wal_sender_timeout_secs,
            plan.replication_timeout,
            noticed.as_secs_f64(),
            recovered.as_secs_f64()
        );
        assert!(
            noticed < cut,
            "the cut was not noticed before the network came back"
        );
        assert!(
            error.contains("replication_timeout"),
            "not noticed by Ferry's own timeout: {error}"
        );
        report.assert_identical();
    }
    let status = pair.wait_state("cf", "running", Duration::from_secs(30));
    assert_eq!(status["state"], "running");
}

/// The network is cut silently while the tables are copied: every copy session (and the slot's
/// session, which holds the exported snapshot) freezes mid-COPY. Each copy notices by its own
/// read timeout (today the default replication timeout, 30 s: the engine does not pass the
/// server's `replication_timeout` to the copy yet), the attempt fails as transient, and the
/// next one resumes the snapshot once the network is back; the oracle ends it.
///
/// Ignored in the normal suite (it takes about a minute with the 30 s read timeout);
/// `scripts/chaos` runs it. The fast checks of the same timeouts are in
/// `crates/ferry-postgres/tests/source_silence.rs`.
#[test]
#[ignore = "about a minute: scripts/chaos runs it"]
fn a_silent_network_cut_during_the_snapshot_is_noticed_and_survived() {
    let rows = if std::env::var_os("FERRY_CHAOS_FULL").is_some() {
        2_000_000
    } else {
        600_000
    };
    let pair = Pair::start();
    let proxy = TcpProxy::start(pair.source.port());
    pair.source.psql(
        "shop",
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, payload text);
             INSERT INTO big SELECT g, repeat(md5(g::text), 2) FROM generate_series(1, {rows}) g;
             ANALYZE big"
        ),
    );
    let source_uri = pair.source.uri("shop").replace(
        &format!(":{}/", pair.source.port()),
        &format!(":{}/", proxy.port()),
    );
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &serde_json::json!({
            "id": "cf",
            "source_uri": source_uri,
            "sink_uri": pair.target.uri("analytics"),
            "tables": ["public.big"],
        }),
    );
    assert_eq!(code, 201, "{body}");
    // Cut once the first chunk is in, while the others are being copied.
    ferry_testkit::wait_for("a finished chunk", Duration::from_secs(120), || {
        pair.status("cf")["tables"][0]["chunks_done"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    proxy.cut();
    let cut_at = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    // New connections pass again; the ones open at the cut stay frozen for good.
    proxy.heal();
    let status = pair.wait_state("cf", "error", Duration::from_secs(90));
    let noticed = cut_at.elapsed();
    let warning = status["last_warning"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    pair.wait_synced("cf", Duration::from_secs(300));
    let synced = cut_at.elapsed();
    let report = pair.compare(&["big"]);
    eprintln!(
        "scenario 5 (cut during the snapshot of {rows} rows, healed after 5 s): noticed after \
         {:.1} s ({warning}); synced {:.1} s after the cut\n{report}",
        noticed.as_secs_f64(),
        synced.as_secs_f64()
    );
    assert!(warning.contains("did not answer"), "{warning}");
    report.assert_identical();
}
