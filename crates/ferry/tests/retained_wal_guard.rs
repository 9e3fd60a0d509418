//! The retained-WAL guard: past `options.max_retained_wal_bytes` a changefeed is paused
//! (keeping its slot) or, with `on_retained_wal_exceeded: drop_slot`, its slot is dropped
//! and it fails with a re-sync hint.

mod common;

use std::time::{Duration, Instant};

use common::Pair;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);
const LIMIT: u64 = 5_000_000;

fn slots(pair: &Pair, like: &str) -> String {
    pair.source.psql(
        "shop",
        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '{like}'"),
    )
}

#[test]
fn past_the_limit_the_changefeed_is_paused_or_its_slot_dropped() {
    let pair = Pair::start();
    pair.target.create_database("analytics2");
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t VALUES (1, 'a');
         CREATE TABLE noise (id serial PRIMARY KEY, pad text)",
    );
    for (id, db, options) in [
        (
            "keep",
            "analytics",
            json!({"max_retained_wal_bytes": LIMIT}),
        ),
        (
            "drop",
            "analytics2",
            json!({"max_retained_wal_bytes": LIMIT, "on_retained_wal_exceeded": "drop_slot"}),
        ),
    ] {
        let (code, body) = pair.ferry.post(
            "/api/v2/changefeeds",
            &json!({"id": id, "source_uri": pair.source.uri("shop"),
                    "sink_uri": pair.target.uri(db), "tables": ["public.t"],
                    "options": options}),
        );
        assert_eq!(code, 201, "{body}");
    }
    pair.wait_synced("keep", MINUTE);
    pair.wait_synced("drop", MINUTE);

    // About 20 MB of WAL the slots hold (unpublished writes, no heartbeat).
    for _ in 0..10 {
        pair.source.psql(
            "shop",
            "INSERT INTO noise (pad) SELECT repeat('x', 1000) FROM generate_series(1, 2000)",
        );
    }
    let written = Instant::now();
    let paused = pair.wait_state("keep", "paused", MINUTE);
    let paused_after = written.elapsed();
    let warnings = paused["warnings"].to_string();
    for expected in [
        "options.max_retained_wal_bytes (5000000)",
        "the changefeed is paused",
        "The slot is kept and still holds the WAL",
    ] {
        assert!(
            warnings.contains(expected),
            "{expected:?} not in {warnings}"
        );
    }
    assert_eq!(slots(&pair, "ferry_default_keep_%"), "1");

    let failed = pair.wait_state("drop", "failed", MINUTE);
    let failed_after = written.elapsed();
    let error = failed["last_error"].as_str().unwrap().to_string();
    for expected in [
        "more than options.max_retained_wal_bytes (5000000)",
        "Ferry dropped it",
        "changes since the last checkpoint (",
        "re-sync: delete the changefeed and create it again",
    ] {
        assert!(error.contains(expected), "{expected:?} not in {error}");
    }
    assert_eq!(slots(&pair, "ferry_default_drop_%"), "0");
    eprintln!(
        "retained-WAL guard: paused after {paused_after:?}, slot dropped after {failed_after:?}; \
         last_error: {error}"
    );

    // Resuming the paused one works (it pauses again while the slot stays past the limit,
    // so raise the limit first); the failed one fails again: its slot is gone.
    pair.act("drop", "resume");
    let again = pair.wait_state("drop", "failed", MINUTE);
    assert!(
        again["last_error"]
            .to_string()
            .contains("is gone from the source"),
        "{again}"
    );

    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "bad", "source_uri": pair.source.uri("shop"),
                "sink_uri": pair.target.uri("analytics2"),
                "options": {"max_retained_wal_bytes": 0}}),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.to_string().contains("options.max_retained_wal_bytes"),
        "{body}"
    );
}
