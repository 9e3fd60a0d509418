//! The status tells the truth when things go wrong: the lag keeps growing while the source
//! is down (fault scenario 3's fast subset: the changefeed reconnects by itself once the
//! source is back), and a change the target refuses is named by its source transaction,
//! table, operation and key columns, never by its values.

mod common;

use std::time::Duration;

use common::workloads::{self, Workloads};
use common::Pair;
use ferry_testkit::wait_for;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn lag(pair: &Pair) -> f64 {
    pair.status("cf")["lag_seconds"].as_f64().unwrap_or(-1.0)
}

#[test]
fn lag_grows_while_the_source_is_down_and_the_changefeed_reconnects() {
    let mut pair = Pair::start();
    pair.source
        .psql("shop", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let workloads = Workloads::create(&pair);
    pair.create("cf", &["public.t", "public.bank_*", "public.toast_docs"]);
    pair.source.psql(
        "shop",
        "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g",
    );
    pair.wait_synced("cf", MINUTE);
    assert_eq!(lag(&pair), 0.0);

    let mut summaries = Vec::new();
    for (round, crash) in [(1, true), (2, false)] {
        // The bank and TOAST writers run into the stop and on after the restart; the
        // bank's total is read on the target every second throughout.
        let mut running = workloads.start(&pair, "0/0", Duration::from_millis(5));
        std::thread::sleep(Duration::from_secs(1));
        if crash {
            pair.source.stop_immediate();
        } else {
            pair.source.stop_fast();
        }
        pair.wait_state("cf", "error", MINUTE);
        wait_for("a lag above 1 s", MINUTE, || lag(&pair) > 1.0);
        let first = lag(&pair);
        std::thread::sleep(Duration::from_millis(1500));
        let second = lag(&pair);
        assert!(
            second >= first + 1.0,
            "round {round}: lag did not grow while the source was down: {first} then {second}"
        );
        let (_, synced) = pair.ferry.get("/api/v2/changefeeds/cf/synced");
        assert_ne!(synced["synced"], json!(true), "{synced}");

        pair.source.restart();
        pair.source.psql(
            "shop",
            &format!("INSERT INTO t VALUES ({}, 'after restart')", 1000 + round),
        );
        // The writers reconnect by themselves; let them write a while after the restart.
        std::thread::sleep(Duration::from_secs(2));
        running.stop_writers();
        pair.wait_synced("cf", MINUTE);
        summaries.push(running.finish(&pair));
        let status = pair.wait_state("cf", "running", MINUTE);
        assert_eq!(status["lag_seconds"], json!(0.0), "{status}");
        eprintln!(
            "scenario 3 ({}): lag {first:.1} s then {second:.1} s while down; running and \
             synced again after the restart; {}",
            if crash { "immediate" } else { "fast" },
            summaries.last().expect("this round's")
        );
    }
    let mut tables = vec!["t"];
    tables.extend(workloads::TABLES);
    let report = pair.compare(&tables);
    eprintln!("{report}");
    report.assert_identical();
}

#[test]
fn a_refused_change_is_named_by_its_source_transaction_without_values() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE xids (x text)",
    );
    pair.create("cf", &["public.t"]);
    pair.wait_synced("cf", MINUTE);
    // The target refuses what the source allows: a second row with the same `v`.
    pair.target
        .psql("analytics", "CREATE UNIQUE INDEX t_v_unique ON t (v)");
    // Three transactions sent at once, so they usually share a batch; the third is refused.
    pair.source.psql(
        "shop",
        "BEGIN; INSERT INTO t VALUES (1, 'secret-value'); COMMIT;
         BEGIN; INSERT INTO t VALUES (2, 'other'); COMMIT;
         BEGIN; INSERT INTO t VALUES (3, 'secret-value');
                INSERT INTO xids SELECT pg_current_xact_id()::text; COMMIT;",
    );
    let xid = pair.source.psql("shop", "SELECT x FROM xids");
    let failed = pair.wait_state("cf", "failed", MINUTE);
    let error = failed["last_error"].as_str().unwrap();
    eprintln!(
        "scenario errors: batch retried one transaction at a time: {}; last_error: {error}",
        pair.ferry
            .log()
            .contains("one source transaction per batch")
    );
    let named = format!("applying source transaction {xid} (commit ");
    assert!(error.contains(&named), "{named:?} not in: {error}");
    assert!(error.contains("INSERT public.t (key id)"), "{error}");
    assert!(error.contains("t_v_unique"), "{error}");
    assert!(
        !error.contains("secret-value"),
        "a row value leaked: {error}"
    );
    // Everything before the refused transaction is applied.
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"
        ),
        "1,2"
    );
    assert!(
        !pair.ferry.log().contains("secret-value"),
        "a row value leaked into the log"
    );
}
