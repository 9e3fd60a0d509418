//! The heartbeat option: a source whose writes all go to tables the changefeed does not
//! replicate still lets its WAL go when the changefeed has `heartbeat_interval_ms`.

mod common;

use std::time::{Duration, Instant};

use common::Pair;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// Bytes of WAL between the source's position and what the changefeed's slot confirmed.
fn unconfirmed(pair: &Pair, changefeed: &str) -> u64 {
    pair.source
        .psql(
            "shop",
            &format!(
                "SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots
                 WHERE slot_name LIKE 'ferry_default_{changefeed}%'"
            ),
        )
        .parse::<f64>()
        .unwrap_or(f64::MAX) as u64
}

#[test]
fn heartbeat_moves_the_slot_of_a_changefeed_whose_tables_are_idle() {
    let pair = Pair::start();
    pair.target.create_database("analytics2");
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t VALUES (1, 'a');
         CREATE TABLE noise (id serial PRIMARY KEY, pad text)",
    );
    for (id, db, options) in [
        ("beat", "analytics", json!({"heartbeat_interval_ms": 200})),
        ("quiet", "analytics2", json!({})),
    ] {
        let (code, body) = pair.ferry.post(
            "/api/v2/changefeeds",
            &json!({
                "id": id,
                "source_uri": pair.source.uri("shop"),
                "sink_uri": pair.target.uri(db),
                "tables": ["public.t"],
                "options": options,
            }),
        );
        assert_eq!(code, 201, "{body}");
    }
    pair.wait_synced("beat", MINUTE);
    pair.wait_synced("quiet", MINUTE);
    let (_, config) = pair.ferry.get("/api/v2/changefeeds/beat");
    assert_eq!(
        config["config"]["options"]["heartbeat_interval_ms"],
        json!(200),
        "{config}"
    );

    // About 40 MB of WAL, none of it published.
    for _ in 0..20 {
        pair.source.psql(
            "shop",
            "INSERT INTO noise (pad) SELECT repeat('x', 1000) FROM generate_series(1, 2000)",
        );
    }
    let written = Instant::now();
    let mut caught_up = None;
    while written.elapsed() < Duration::from_secs(20) {
        if unconfirmed(&pair, "beat") < 1_000_000 {
            caught_up = Some(written.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let beat = unconfirmed(&pair, "beat");
    let quiet = unconfirmed(&pair, "quiet");
    eprintln!(
        "heartbeat: unconfirmed WAL with heartbeat {beat} bytes (under 1 MB after {caught_up:?}), \
         without {quiet} bytes"
    );
    assert!(
        caught_up.is_some(),
        "the slot kept {beat} bytes unconfirmed"
    );
    pair.wait_synced("beat", MINUTE);

    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "bad", "source_uri": pair.source.uri("shop"),
                "sink_uri": pair.target.uri("analytics2"),
                "options": {"heartbeat_interval_ms": 5}}),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.to_string().contains("options.heartbeat_interval_ms"),
        "{body}"
    );
}
