//! Fault scenario 8: the source invalidates the changefeeds' slots (`max_slot_wal_keep_size`
//! exceeded) while one changefeed is paused and the Ferry server is down. Neither may ever
//! stream again from a later position: both go `failed` with a message that names the slot,
//! says the changes since the checkpoint are gone and how to re-sync. Also the retained-WAL
//! gauge and its warning.

mod common;

use std::time::Duration;

use common::Pair;
use ferry_testkit::{wait_for, FerryServer, PgOptions};
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

fn status(ferry: &FerryServer, id: &str) -> Value {
    ferry.get(&format!("/api/v2/changefeeds/{id}/status")).1
}

fn warnings(status: &Value) -> String {
    status["warnings"].to_string()
}

#[test]
fn invalidated_slots_fail_the_changefeeds_with_a_resync_hint() {
    let source_options = PgOptions {
        extra_conf: vec![("max_slot_wal_keep_size".into(), "1MB".into())],
        ..PgOptions::default()
    };
    let mut pair = Pair::start_with(source_options, PgOptions::default());
    // Warn at 1 byte: every slot holds more, so the warning shows at the first measurement.
    pair.ferry = FerryServer::start_with_args(
        std::path::Path::new(env!("CARGO_BIN_EXE_ferry")),
        "info,ferry_engine=debug",
        &["--retained-wal-warning-bytes", "1"],
    );
    pair.target.create_database("analytics2");
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g;
         CREATE TABLE filler (id serial PRIMARY KEY, pad text)",
    );
    pair.create("paused", &["public.t"]);
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "running",
            "source_uri": pair.source.uri("shop"),
            "sink_uri": pair.target.uri("analytics2"),
            "tables": ["public.t"],
        }),
    );
    assert_eq!(code, 201, "{body}");
    pair.wait_synced("paused", MINUTE);
    pair.wait_synced("running", MINUTE);

    // The retained-WAL gauge, under its new name and its old one, and the warning.
    wait_for("the retained-WAL warning", MINUTE, || {
        warnings(&status(&pair.ferry, "running")).contains("retained_wal_warning_bytes (1)")
    });
    let (_, metrics) = pair.ferry.get("/metrics");
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    for name in [
        "ferry_source_retained_bytes{",
        "ferry_slot_retained_wal_bytes{",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    pair.act("paused", "pause");
    pair.wait_state("paused", "paused", MINUTE);
    pair.ferry.stop();
    // Changes the slots must deliver, then enough WAL and checkpoints to invalidate them.
    pair.source
        .psql("shop", "UPDATE t SET v = 'after' WHERE id <= 10");
    let slots = pair.source.psql(
        "shop",
        "SELECT string_agg(slot_name, ' ' ORDER BY slot_name) FROM pg_replication_slots",
    );
    let mut rounds = 0;
    for round in 0.. {
        rounds = round;
        let lost = pair.source.psql(
            "shop",
            "SELECT count(*) FROM pg_replication_slots WHERE wal_status = 'lost'",
        );
        if lost == "2" {
            break;
        }
        assert!(round < 30, "slots not invalidated: {lost} of 2 lost");
        pair.source.psql(
            "shop",
            "INSERT INTO filler (pad) SELECT repeat('x', 1000) FROM generate_series(1, 2000)",
        );
        pair.source.psql("shop", "SELECT pg_switch_wal()");
        pair.source.psql("shop", "CHECKPOINT");
    }

    pair.ferry.restart();
    // The changefeed that was running fails at its first attempt, without applying anything.
    let failed = pair.wait_state("running", "failed", MINUTE);
    let error = failed["last_error"].as_str().unwrap().to_string();
    let slot = slots
        .split(' ')
        .find(|s| error.contains(*s))
        .unwrap_or_else(|| panic!("no slot of {slots} named in: {error}"));
    for expected in [
        "was invalidated by the source (wal_status lost)",
        "max_slot_wal_keep_size",
        "changes since the last checkpoint (",
        "are gone",
        "delete the changefeed and create it again",
        "resuming cannot recover the lost changes",
    ] {
        assert!(error.contains(expected), "{expected:?} not in: {error}");
    }
    assert_eq!(failed["rows_applied"], json!(0), "{failed}");
    eprintln!("scenario 8: {rounds} rounds of WAL switch + checkpoint invalidated both slots; last_error: {error}");
    assert_eq!(
        pair.target
            .psql("analytics2", "SELECT count(*) FROM t WHERE v = 'after'"),
        "0"
    );

    // The paused one says so while paused, and fails when resumed.
    wait_for("the paused changefeed's slot warning", MINUTE, || {
        warnings(&status(&pair.ferry, "paused")).contains("was invalidated")
    });
    pair.act("paused", "resume");
    let failed = pair.wait_state("paused", "failed", MINUTE);
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains("was invalidated") && !error.contains(slot),
        "the other slot is named: {error}"
    );
    assert_eq!(
        pair.target
            .psql("analytics", "SELECT count(*) FROM t WHERE v = 'after'"),
        "0"
    );
}
