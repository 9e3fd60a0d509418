//! The status tells the truth when things go wrong: the lag keeps growing while the source
//! is down (fault scenario 3's fast subset: the changefeed reconnects by itself once the
//! source is back), and a change the target refuses is named by its source transaction,
//! table, operation and key columns, never by its values.

mod common;

use std::time::Duration;

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
    pair.create("cf", &["public.t"]);
    pair.source.psql(
        "shop",
        "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g",
    );
    pair.wait_synced("cf", MINUTE);
    assert_eq!(lag(&pair), 0.0);

    for (round, crash) in [(1, true), (2, false)] {
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
        pair.wait_synced("cf", MINUTE);
        let status = pair.wait_state("cf", "running", MINUTE);
        assert_eq!(status["lag_seconds"], json!(0.0), "{status}");
        eprintln!(
            "scenario 3 ({}): lag {first:.1} s then {second:.1} s while down; running and \
             synced again after the restart",
            if crash { "immediate" } else { "fast" }
        );
    }
    pair.compare(&["t"]).assert_identical();
}
