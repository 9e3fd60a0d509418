//! One table of a changefeed, against real PostgreSQL through the real server and CLI:
//! paused while the others stream, resumed (copied again, no gap), removed (its target
//! table stays); and under `on_table_error: park`, a table the target refuses is parked
//! with its error while the others go on, then brought back once the target is fixed.

mod common;

use std::time::Duration;

use common::Pair;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

/// `table` → `state` of `GET …/tables`.
fn states(pair: &Pair, id: &str) -> Vec<(String, String)> {
    let (code, body) = pair.ferry.get(&format!("/api/v2/changefeeds/{id}/tables"));
    assert_eq!(code, 200, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(t, s)| (t.to_string(), s.to_string()))
        .collect()
}

fn count(pair: &Pair, table: &str) -> String {
    pair.target
        .psql("analytics", &format!("SELECT count(*) FROM {table}"))
}

/// Waits until `sql` on the target answers `want`.
fn wait_target(pair: &Pair, sql: &str, want: &str) {
    let deadline = std::time::Instant::now() + MINUTE;
    while pair.target.psql("analytics", sql) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "{sql} never gave {want}\n{}",
            pair.ferry.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `synced`'s answer.
fn synced(pair: &Pair, id: &str) -> Value {
    pair.ferry
        .get(&format!("/api/v2/changefeeds/{id}/synced"))
        .1
}

#[test]
fn one_table_paused_resumed_and_removed_while_the_others_stream() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY, v text);
         INSERT INTO a SELECT g, 'a' FROM generate_series(1, 500) g;
         INSERT INTO b SELECT g, 'b' FROM generate_series(1, 500) g;",
    );
    pair.create("cf", &["public.*"]);
    pair.wait_synced("cf", MINUTE);
    assert_eq!(
        states(&pair, "cf"),
        pairs(&[("public.a", "streaming"), ("public.b", "streaming")])
    );

    for (path, code, error_code) in [
        ("tables/public.nope/pause", 400, "TABLE_NOT_FOUND"),
        ("tables/public.a/resume", 400, "INVALID_CONFIG"),
        ("tables/public.a/pause", 200, ""),
    ] {
        let (got, body) = pair
            .ferry
            .post(&format!("/api/v2/changefeeds/cf/{path}"), &json!({}));
        assert_eq!(got, code, "{path}: {body}");
        if !error_code.is_empty() {
            assert_eq!(body["error_code"], error_code, "{path}: {body}");
        }
    }
    assert_eq!(
        states(&pair, "cf"),
        pairs(&[("public.a", "paused"), ("public.b", "streaming")])
    );
    pair.source.psql(
        "shop",
        "INSERT INTO a VALUES (501, 'while paused'); UPDATE a SET v = 'changed' WHERE id < 50;
         INSERT INTO b VALUES (501, 'flows');",
    );
    wait_target(&pair, "SELECT count(*) FROM b", "501");
    assert_eq!(count(&pair, "a"), "500", "the paused table gets nothing");
    let (_, tables) = pair.ferry.get("/api/v2/changefeeds/cf/tables");
    assert_eq!(tables["items"][1]["rows_applied"], 1, "{tables}");
    assert_eq!(tables["items"][0]["rows_applied"], 0, "{tables}");
    assert!(tables["items"][0].get("lag_seconds").is_none(), "{tables}");
    assert!(tables["items"][1]["lag_seconds"].is_number(), "{tables}");
    // A paused table is not in step with the source.
    let answer = synced(&pair, "cf");
    assert_eq!(answer["synced"], false, "{answer}");
    assert!(
        answer["info"]
            .as_str()
            .unwrap()
            .contains("public.a is paused"),
        "{answer}"
    );

    let out = pair.cli(&["changefeed", "table", "resume", "cf", "public.a"]);
    assert!(out.contains("copied again"), "{out}");
    pair.source
        .psql("shop", "INSERT INTO a VALUES (502, 'after resume')");
    pair.wait_synced("cf", MINUTE);
    pair.assert_same("public.a");
    pair.assert_same("public.b");

    // Removed: no longer replicated, its target table kept with its rows.
    let (code, body) = pair.ferry.delete("/api/v2/changefeeds/cf/tables/public.b");
    assert_eq!(code, 200, "{body}");
    pair.source
        .psql("shop", "INSERT INTO b VALUES (502, 'gone')");
    pair.source
        .psql("shop", "INSERT INTO a VALUES (503, 'still')");
    pair.wait_synced("cf", MINUTE);
    assert_eq!(count(&pair, "b"), "501");
    pair.assert_same("public.a");
    assert_eq!(states(&pair, "cf"), pairs(&[("public.a", "streaming")]));
    let config = pair.ferry.get("/api/v2/changefeeds/cf").1;
    assert_eq!(config["config"]["tables"], json!(["public.*", "!public.b"]));
    let listed = pair.cli(&["changefeed", "tables", "cf"]);
    assert!(
        listed.contains("public.a") && !listed.contains("public.b"),
        "{listed}"
    );
}

#[test]
fn a_table_the_target_refuses_is_parked_while_the_others_go_on() {
    let pair = Pair::start();
    pair.expect_refused_batches();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v int);
         CREATE TABLE u (id int PRIMARY KEY, note text);
         INSERT INTO t VALUES (1, 1);",
    );
    pair.target.psql(
        "analytics",
        "CREATE TABLE t (id int PRIMARY KEY, v int CHECK (v < 100))",
    );
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "park",
            "source_uri": pair.source.uri("shop"),
            "sink_uri": pair.target.uri("analytics"),
            "tables": ["public.*"],
            "options": {"on_table_error": "park"},
        }),
    );
    assert_eq!(code, 201, "{body}");
    pair.wait_synced("park", MINUTE);
    for sql in [
        "INSERT INTO t VALUES (2, 500)",
        "INSERT INTO u VALUES (1, 'flows')",
        "INSERT INTO t VALUES (3, 3)",
        "INSERT INTO u VALUES (2, 'still flows')",
    ] {
        pair.source.psql("shop", sql);
    }
    wait_target(&pair, "SELECT count(*) FROM u", "2");
    assert_eq!(synced(&pair, "park")["synced"], false);
    let (_, tables) = pair.ferry.get("/api/v2/changefeeds/park/tables");
    let t: &Value = &tables["items"][0];
    assert_eq!(t["table"], "public.t", "{tables}");
    assert_eq!(t["state"], "failed", "{tables}");
    assert!(
        t["error"].as_str().unwrap().contains("check constraint"),
        "{tables}"
    );
    assert_eq!(pair.status("park")["state"], "running");
    pair.assert_same("public.u");
    let metrics = pair.ferry.get("/metrics").1;
    let metrics = metrics.as_str().unwrap();
    for needle in [
        "ferry_changefeed_tables{namespace=\"default\",changefeed=\"park\",state=\"failed\"} 1",
        "ferry_changefeed_tables{namespace=\"default\",changefeed=\"park\",state=\"streaming\"} 1",
    ] {
        assert!(metrics.contains(needle), "no {needle} in\n{metrics}");
    }

    // Fixed on the target, the table comes back whole.
    pair.target
        .psql("analytics", "ALTER TABLE t DROP CONSTRAINT t_v_check");
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds/park/tables/public.t/resume",
        &json!({}),
    );
    assert_eq!(code, 200, "{body}");
    pair.wait_synced("park", MINUTE);
    pair.assert_same("public.t");
    pair.assert_same("public.u");

    // A changefeed that never copies cannot copy a table again: no re-sync, no pause.
    pair.source
        .psql("shop", "CREATE TABLE c (id int PRIMARY KEY)");
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "never",
            "source_uri": pair.source.uri("shop"),
            "sink_uri": pair.target.uri("analytics"),
            "tables": ["public.c"],
            "options": {"snapshot": "never"},
        }),
    );
    assert_eq!(code, 201, "{body}");
    pair.wait_synced("never", MINUTE);
    for path in ["tables/public.c/pause", "tables/public.c/resync", "resync"] {
        let (code, body) = pair
            .ferry
            .post(&format!("/api/v2/changefeeds/never/{path}"), &json!({}));
        assert_eq!(code, 400, "{path}: {body}");
        assert_eq!(body["error_code"], "INVALID_CONFIG", "{path}: {body}");
    }
}
