//! Ferry's objects left on a source: `ferry_*` slots and publications that no changefeed
//! owns appear in the source's status, and deleting a changefeed while its source is down
//! records a pending clean-up that is done once the source is back; the session `/synced`
//! reads the source's position on is kept, one per source, and closed with the changefeed.

mod common;

use std::time::{Duration, Instant};

use common::Pair;
use ferry_testkit::wait_for;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

fn source_status(pair: &Pair) -> Value {
    let (code, body) = pair.ferry.get("/api/v2/sources/shop-db/status");
    assert_eq!(code, 200, "{body}");
    body
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|o| {
                    o["name"]
                        .as_str()
                        .or(o["slot"].as_str())
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn orphans_are_listed_and_a_delete_while_the_source_is_down_finishes_when_it_is_back() {
    let mut pair = Pair::start();
    let (code, body) = pair.ferry.post(
        "/api/v2/sources",
        &json!({"name": "shop-db", "uri": pair.source.uri("shop")}),
    );
    assert_eq!(code, 201, "{body}");
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY);
         INSERT INTO t VALUES (1);
         CREATE PUBLICATION ferry_left_by_hand",
    );
    pair.source.psql(
        "shop",
        "SELECT pg_create_logical_replication_slot('ferry_left_by_hand', 'pgoutput')",
    );
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "cf", "source": "shop-db", "sink_uri": pair.target.uri("analytics"),
                "tables": ["public.t"]}),
    );
    assert_eq!(code, 201, "{body}");
    pair.wait_synced("cf", MINUTE);
    let ferry_objects = "SELECT (SELECT count(*) FROM pg_replication_slots
                                 WHERE slot_name LIKE 'ferry_default_cf_%')
                             + (SELECT count(*) FROM pg_publication
                                WHERE pubname LIKE 'ferry_default_cf_%')";
    assert_eq!(pair.source.psql("shop", ferry_objects), "3");

    // The changefeed's own objects are not orphans; the ones made by hand are.
    let status = source_status(&pair);
    let orphans = names(&status["orphans"]);
    assert_eq!(
        orphans,
        ["ferry_left_by_hand", "ferry_left_by_hand"],
        "{status}"
    );
    assert_eq!(status["orphans"][0]["kind"], json!("slot"), "{status}");
    assert_eq!(status["pending_cleanups"], json!([]), "{status}");

    // Deleted while the source is down: recorded, shown, and done once it is back.
    pair.source.stop_fast();
    let (code, body) = pair.ferry.delete("/api/v2/changefeeds/cf");
    assert!(code == 200 || code == 204, "{code} {body}");
    let status = source_status(&pair);
    assert_eq!(status["reachable"], json!(false), "{status}");
    let pending = &status["pending_cleanups"];
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(pending[0]["changefeed"], json!("default/cf"), "{status}");
    assert!(
        pending[0]["slot"]
            .as_str()
            .unwrap()
            .starts_with("ferry_default_cf_"),
        "{status}"
    );
    assert!(pending[0]["last_error"].is_string(), "{status}");
    let (_, text) = pair.ferry.get("/api/v2/sources/shop-db/status");
    assert!(!text.to_string().contains("secret"), "{text}");

    pair.source.restart();
    let back = Instant::now();
    wait_for("the pending clean-up", MINUTE, || {
        pair.source.psql("shop", ferry_objects) == "0"
    });
    let took = back.elapsed();
    wait_for("the status without the pending clean-up", MINUTE, || {
        source_status(&pair)["pending_cleanups"] == json!([])
    });
    let status = source_status(&pair);
    assert_eq!(
        names(&status["orphans"]),
        ["ferry_left_by_hand", "ferry_left_by_hand"],
        "{status}"
    );
    eprintln!("pending clean-up done {took:?} after the source came back");
}

/// `/synced` reads the source's position on one kept session: polling it does not open a
/// connection (a forked backend) per request, and deleting the changefeed closes the
/// session at once.
#[test]
fn polling_synced_keeps_one_session_on_the_source_and_delete_closes_it() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "cf", "source_uri": pair.source.uri("shop"),
                "sink_uri": pair.target.uri("analytics"), "tables": ["public.t"]}),
    );
    assert_eq!(code, 201, "{body}");
    pair.wait_synced("cf", MINUTE);
    let sessions = "SELECT count(*) || ' ' || coalesce(min(pid), 0) || ' ' || coalesce(max(pid), 0)
                    FROM pg_stat_activity WHERE application_name = 'ferry-position'";
    let before = pair.source.psql("shop", sessions);
    for _ in 0..50 {
        let (code, body) = pair.ferry.get("/api/v2/changefeeds/cf/synced");
        assert_eq!((code, &body["synced"]), (200, &json!(true)), "{body}");
    }
    let after = pair.source.psql("shop", sessions);
    assert!(after.starts_with("1 "), "one kept session: {after}");
    assert_eq!(before, after, "the same backend answered every request");

    let (code, body) = pair.ferry.delete("/api/v2/changefeeds/cf");
    assert!(code == 200 || code == 204, "{code} {body}");
    wait_for("the position session to close", MINUTE, || {
        pair.source.psql("shop", sessions).starts_with("0 ")
    });
}
