//! The changefeed lifecycle over HTTP against real PostgreSQL: every allowed and refused
//! transition (see `ferry_engine::lifecycle`), tables added by an update, resuming from
//! another position, target positions, snapshot-only changefeeds, failures and restarts.

mod common;

use std::time::Duration;

use common::Pair;
use ferry_testkit::wait_for;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

fn path(id: &str, action: &str) -> String {
    if action.is_empty() {
        format!("/api/v2/changefeeds/{id}")
    } else {
        format!("/api/v2/changefeeds/{id}/{action}")
    }
}

/// Asserts a refusal: status and error code.
#[track_caller]
fn refused(reply: (u16, Value), status: u16, code: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["error_code"], json!(code), "{}", reply.1);
}

/// Asserts success and returns the body.
#[track_caller]
fn ok(reply: (u16, Value)) -> Value {
    assert!(reply.0 == 200 || reply.0 == 201, "{}: {}", reply.0, reply.1);
    reply.1
}

fn state(pair: &Pair, id: &str) -> String {
    let (_, status) = pair.ferry.get(&path(id, "status"));
    status["state"].as_str().unwrap_or_default().to_string()
}

fn wait_state(pair: &Pair, id: &str, want: &str) {
    wait_for(&format!("{id} {want}"), MINUTE, || state(pair, id) == want);
}

fn put(pair: &Pair, id: &str, body: Value) -> (u16, Value) {
    pair.ferry
        .request("PUT", &path(id, ""), Some(body.to_string().as_bytes()))
}

fn resume_at(pair: &Pair, id: &str, position: &str) -> (u16, Value) {
    pair.ferry.post(
        &path(id, "resume"),
        &json!({ "overwrite_checkpoint_position": position }),
    )
}

fn slots(pair: &Pair) -> String {
    pair.source.psql(
        "shop",
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'ferry\\_%'",
    )
}

fn count(pair: &Pair, table: &str) -> String {
    pair.target
        .psql("analytics", &format!("SELECT count(*) FROM {table}"))
}

#[test]
fn stopped_running_paused_with_an_added_table() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a SELECT g, 'a' FROM generate_series(1, 100) g;
         CREATE TABLE b (id int PRIMARY KEY, v text); INSERT INTO b SELECT g, 'b' FROM generate_series(1, 50) g;",
    );
    let created = ok(pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "cf", "start": false, "tables": ["public.a"],
            "source_uri": pair.source.uri("shop"), "sink_uri": pair.target.uri("analytics"),
        }),
    ));
    assert_eq!(created["state"], json!("stopped"), "{created}");
    assert!(created["created_at"].is_string(), "{created}");
    assert_eq!(
        slots(&pair),
        "0",
        "a stopped changefeed creates nothing on the source"
    );

    // stopped: pause refused, update allowed, resume starts it.
    refused(
        pair.ferry.post(&path("cf", "pause"), &json!({})),
        409,
        "CHANGEFEED_NOT_RUNNING",
    );
    ok(put(
        &pair,
        "cf",
        json!({"options": {"batch_max_rows": 500}}),
    ));
    assert_eq!(state(&pair, "cf"), "stopped");
    let resumed = ok(pair.ferry.post(&path("cf", "resume"), &json!({})));
    assert_eq!(resumed["state"], json!("running"));
    pair.wait_synced("cf", MINUTE);
    pair.assert_same("a");

    // running: resume is a no-op, moving the position or updating is refused.
    assert_eq!(
        ok(pair.ferry.post(&path("cf", "resume"), &json!({})))["state"],
        json!("running")
    );
    refused(resume_at(&pair, "cf", "0/1"), 409, "CHANGEFEED_RUNNING");
    refused(
        put(&pair, "cf", json!({"tables": ["public.*"]})),
        409,
        "CHANGEFEED_RUNNING",
    );

    // running → paused; the slot stays, changes wait in it.
    let paused = ok(pair.ferry.post(&path("cf", "pause"), &json!({})));
    assert_eq!(paused["state"], json!("paused"), "{paused}");
    assert_eq!(
        ok(pair.ferry.post(&path("cf", "pause"), &json!({})))["state"],
        json!("paused")
    );
    assert_eq!(slots(&pair), "1");
    pair.source.psql(
        "shop",
        "INSERT INTO a VALUES (101, 'while paused'); UPDATE b SET v = 'b2' WHERE id <= 10;",
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        count(&pair, "a"),
        "100",
        "a paused changefeed applies nothing"
    );

    // paused: add table b. A row only the target has proves a is not copied again.
    pair.target
        .psql("analytics", "INSERT INTO a VALUES (-1, 'target only')");
    let updated = ok(put(
        &pair,
        "cf",
        json!({"tables": ["public.a", "public.b"]}),
    ));
    assert_eq!(
        updated["config"]["tables"],
        json!(["public.a", "public.b"]),
        "{updated}"
    );
    assert_eq!(updated["state"], json!("paused"));
    ok(pair.ferry.post(&path("cf", "resume"), &Value::Null));
    pair.wait_synced("cf", MINUTE);
    assert_eq!(
        pair.target
            .psql("analytics", "SELECT v FROM a WHERE id = -1"),
        "target only",
        "table a was copied again"
    );
    pair.target.psql("analytics", "DELETE FROM a WHERE id = -1");
    pair.source.psql("shop", "INSERT INTO b VALUES (51, 'new'); DELETE FROM b WHERE id = 1; UPDATE a SET v = 'x' WHERE id = 5;");
    pair.wait_synced("cf", MINUTE);
    pair.assert_same("a");
    pair.assert_same("b");

    // The full view: masked config, per-table progress, times.
    let view = ok(pair.ferry.get(&path("cf", "")));
    let tables: Vec<(String, String)> = view["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().into(),
                t["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        tables,
        vec![
            ("public.a".into(), "streaming".into()),
            ("public.b".into(), "streaming".into())
        ],
        "{view}"
    );
    assert_eq!(view["config"]["options"]["batch_max_rows"], json!(500));
    assert!(view["checkpoint_position"].is_string(), "{view}");

    // Lists filter by state.
    let listed = |q: &str| ok(pair.ferry.get(&format!("/api/v2/changefeeds{q}")))["total"].clone();
    assert_eq!(listed("?state=running"), json!(1));
    assert_eq!(listed("?state=paused"), json!(0));
    assert_eq!(listed("?state=all"), json!(1));
    refused(
        pair.ferry.get("/api/v2/changefeeds?state=sleeping"),
        400,
        "INVALID_PARAMETER",
    );

    // Removing a table stops its changes; its target rows stay.
    ok(pair.ferry.post(&path("cf", "pause"), &json!({})));
    ok(put(&pair, "cf", json!({"tables": ["public.a"]})));
    ok(pair.ferry.post(&path("cf", "resume"), &json!({})));
    // Row 102 arriving shows the changefeed streams again (publications are changed first).
    pair.source.psql("shop", "INSERT INTO a VALUES (102, 'x')");
    wait_for("row 102", MINUTE, || {
        count(&pair, "a WHERE id = 102") == "1"
    });
    pair.source.psql(
        "shop",
        "INSERT INTO b VALUES (52, 'not replicated'); INSERT INTO a VALUES (103, 'x');",
    );
    wait_for("row 103", MINUTE, || {
        count(&pair, "a WHERE id = 103") == "1"
    });
    pair.assert_same("a");
    assert_eq!(count(&pair, "b"), "50");

    // Delete is idempotent and drops the slot.
    let deleted = ok(pair.ferry.delete(&path("cf", "")));
    assert_eq!(deleted, json!({"id": "cf", "deleted": true}));
    assert_eq!(slots(&pair), "0");
    assert_eq!(
        ok(pair.ferry.delete(&path("cf", ""))),
        json!({"id": "cf", "deleted": false})
    );
    refused(
        pair.ferry.get(&path("cf", "status")),
        404,
        "CHANGEFEED_NOT_FOUND",
    );
}

#[test]
fn resume_from_another_position() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    pair.create("cf", &["public.t"]);
    pair.wait_synced("cf", MINUTE);
    ok(pair.ferry.post(&path("cf", "pause"), &json!({})));

    refused(
        resume_at(&pair, "cf", "not-a-position"),
        400,
        "INVALID_POSITION",
    );
    refused(resume_at(&pair, "cf", "0/1"), 400, "INVALID_POSITION");
    refused(
        resume_at(&pair, "cf", "FFFFFFFF/0"),
        400,
        "INVALID_POSITION",
    );
    refused(
        pair.ferry.request(
            "POST",
            &path("cf", "resume"),
            Some(br#"{"overwrite_checkpoint_position": 5}"#),
        ),
        400,
        "INVALID_REQUEST_BODY",
    );
    assert_eq!(state(&pair, "cf"), "paused", "refusals change nothing");

    // Skip what was written while paused: start at the source's current position.
    pair.source.psql("shop", "INSERT INTO t VALUES (2)");
    let now = pair.source.psql("shop", "SELECT pg_current_wal_lsn()");
    let resumed = ok(resume_at(&pair, "cf", &now));
    assert_eq!(resumed["checkpoint_position"], json!(now), "{resumed}");
    pair.source.psql("shop", "INSERT INTO t VALUES (3)");
    wait_for("row 3", MINUTE, || count(&pair, "t WHERE id = 3") == "1");
    assert_eq!(
        count(&pair, "t WHERE id = 2"),
        "0",
        "row 2 lies before the new position"
    );
    pair.wait_synced("cf", MINUTE);
}

#[test]
fn target_position_and_snapshot_only_finish() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    pair.create("cf", &["public.t"]);
    pair.wait_synced("cf", MINUTE);
    ok(pair.ferry.post(&path("cf", "pause"), &json!({})));
    pair.source.psql("shop", "INSERT INTO t VALUES (2)");
    let target = pair.source.psql("shop", "SELECT pg_current_wal_lsn()");
    pair.source.psql("shop", "INSERT INTO t VALUES (3)");
    refused(
        put(&pair, "cf", json!({"target_position": "nope"})),
        400,
        "INVALID_CONFIG",
    );
    ok(put(&pair, "cf", json!({"target_position": target})));
    ok(pair.ferry.post(&path("cf", "resume"), &json!({})));
    wait_state(&pair, "cf", "finished");
    assert_eq!(
        count(&pair, "t"),
        "2",
        "row 3 lies after the target position"
    );
    wait_for("slot dropped", MINUTE, || slots(&pair) == "0");
    // finished: everything but reading and deleting is refused.
    refused(
        pair.ferry.post(&path("cf", "pause"), &json!({})),
        409,
        "CHANGEFEED_FINISHED",
    );
    refused(
        pair.ferry.post(&path("cf", "resume"), &json!({})),
        409,
        "CHANGEFEED_FINISHED",
    );
    refused(
        put(&pair, "cf", json!({"tables": []})),
        409,
        "CHANGEFEED_FINISHED",
    );
    assert_eq!(
        ok(pair.ferry.get(&path("cf", "synced")))["synced"],
        json!(false)
    );
    ok(pair.ferry.delete(&path("cf", "")));

    let snapshot_only = |extra: Value| {
        let mut body = json!({
            "id": "copy", "tables": ["public.t"], "snapshot_only": true,
            "source_uri": pair.source.uri("shop"), "sink_uri": pair.target.uri("analytics"),
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        pair.ferry.post("/api/v2/changefeeds", &body)
    };
    refused(
        snapshot_only(json!({"target_position": "0/1"})),
        400,
        "INVALID_CONFIG",
    );
    pair.target.psql("analytics", "TRUNCATE t");
    ok(snapshot_only(json!({})));
    wait_state(&pair, "copy", "finished");
    pair.assert_same("t");
    assert_eq!(
        slots(&pair),
        "0",
        "a snapshot-only changefeed keeps no slot"
    );
    let view = ok(pair.ferry.get(&path("copy", "")));
    assert_eq!(view["snapshot_rows_copied"], json!(3), "{view}");
}

#[test]
fn errors_retry_failures_need_an_operator_and_states_survive_restarts() {
    let mut pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );

    // A sink that refuses connections: transient, retried with backoff, shown as a warning.
    ok(pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "retrying", "tables": ["public.t"],
            "source_uri": pair.source.uri("shop"),
            "sink_uri": "postgres://nobody:pw@127.0.0.1:1/nowhere",
        }),
    ));
    wait_state(&pair, "retrying", "error");
    let status = ok(pair.ferry.get(&path("retrying", "status")));
    let warning = status["last_warning"].as_str().unwrap();
    assert!(warning.contains("retry"), "{status}");
    assert!(!warning.contains(":pw@"), "{status}");
    assert!(status["last_warning_time"].is_string(), "{status}");
    let listed = ok(pair.ferry.get("/api/v2/changefeeds?state=error"));
    assert!(
        listed["items"][0]["error"]
            .as_str()
            .unwrap()
            .contains("retry"),
        "{listed}"
    );
    // error: update refused, pause and resume allowed.
    refused(
        put(&pair, "retrying", json!({"tables": []})),
        409,
        "CHANGEFEED_RUNNING",
    );
    ok(pair.ferry.post(&path("retrying", "resume"), &json!({})));
    assert_eq!(
        ok(pair.ferry.post(&path("retrying", "pause"), &json!({})))["state"],
        json!("paused")
    );
    // Fix the sink while paused; resume replicates.
    ok(put(
        &pair,
        "retrying",
        json!({"sink_uri": pair.target.uri("analytics")}),
    ));
    ok(pair.ferry.post(&path("retrying", "resume"), &json!({})));
    pair.wait_synced("retrying", MINUTE);
    pair.assert_same("t");

    // A definite failure: the slot is gone. failed, with a hint, until an operator acts.
    ok(pair.ferry.post(&path("retrying", "pause"), &json!({})));
    pair.source.psql(
        "shop",
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'ferry\\_%'",
    );
    ok(pair.ferry.post(&path("retrying", "resume"), &json!({})));
    wait_state(&pair, "retrying", "failed");
    let failed = ok(pair.ferry.get(&path("retrying", "status")));
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains("slot") && error.contains("Hint:"),
        "{failed}"
    );
    assert!(failed["last_error_time"].is_string());
    // failed: pause refused; update and resume allowed.
    refused(
        pair.ferry.post(&path("retrying", "pause"), &json!({})),
        409,
        "CHANGEFEED_NOT_RUNNING",
    );
    ok(put(
        &pair,
        "retrying",
        json!({"options": {"snapshot_workers": 2}}),
    ));
    assert_eq!(state(&pair, "retrying"), "failed");
    // failed → running on resume; the slot is still gone, so it fails again.
    let resumed = ok(pair.ferry.post(&path("retrying", "resume"), &json!({})));
    assert_eq!(resumed["state"], json!("running"), "{resumed}");
    wait_state(&pair, "retrying", "failed");

    // Settled states survive a crash; a running changefeed runs again.
    ok(pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "idle", "start": false,
            "source_uri": pair.source.uri("shop"), "sink_uri": "blackhole://",
        }),
    ));
    pair.source.psql(
        "shop",
        "CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u VALUES (1);",
    );
    pair.create("live", &["public.u"]);
    pair.wait_synced("live", MINUTE);
    ok(pair.ferry.post(&path("live", "pause"), &json!({})));
    let checkpoint = ok(pair.ferry.get(&path("live", "status")))["checkpoint_position"].clone();
    pair.ferry.kill9();
    pair.ferry.restart();
    assert_eq!(state(&pair, "retrying"), "failed");
    assert_eq!(state(&pair, "idle"), "stopped");
    let live = ok(pair.ferry.get(&path("live", "")));
    assert_eq!(live["state"], json!("paused"), "{live}");
    assert_eq!(live["checkpoint_position"], checkpoint, "{live}");
    pair.source.psql("shop", "INSERT INTO u VALUES (2)");
    ok(pair.ferry.post(&path("live", "resume"), &json!({})));
    pair.wait_synced("live", MINUTE);
    pair.assert_same("u");
}

#[test]
fn pause_during_the_snapshot_then_resume_copies_everything_once() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE big (id bigint PRIMARY KEY, pad text);
         INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 400000) g;
         ANALYZE big;",
    );
    ok(pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "cf", "tables": ["public.big"], "options": {"snapshot_workers": 1},
            "source_uri": pair.source.uri("shop"), "sink_uri": pair.target.uri("analytics"),
        }),
    ));
    wait_for("copy started", MINUTE, || {
        let (_, status) = pair.ferry.get(&path("cf", "status"));
        status["tables"][0]["state"] != json!("pending") || status["phase"] == json!("streaming")
    });
    let paused = ok(pair.ferry.post(&path("cf", "pause"), &json!({})));
    assert_eq!(paused["state"], json!("paused"), "{paused}");
    eprintln!("paused in phase {}", paused["phase"]);
    // Paused means stopped: the copy's sessions (on threads of their own) end too.
    wait_for("the copy's target sessions closed", MINUTE, || {
        pair.target.psql(
            "analytics",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'ferry%'",
        ) == "0"
    });
    pair.source.psql(
        "shop",
        "UPDATE big SET pad = 'changed' WHERE id % 1000 = 0; DELETE FROM big WHERE id <= 10;",
    );
    ok(pair.ferry.post(&path("cf", "resume"), &json!({})));
    pair.wait_synced("cf", Duration::from_secs(180));
    pair.assert_same("big");
}
