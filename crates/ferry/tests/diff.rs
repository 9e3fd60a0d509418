//! Online diffs (Vitess's VDiff) against real PostgreSQL through the real server and CLI:
//! a diff under a concurrent load reports exactly the rows corrupted on the target behind
//! Ferry's back (a deleted row, an extra row, a changed value, in different tables),
//! `repair` fixes them so the next diff is clean, bad requests are refused with their
//! codes, and a diff survives a `kill -9` of the server and resumes from its last chunk.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Pair;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

/// Starts a diff of `id` with `body`; returns its id.
fn start_diff(pair: &Pair, id: &str, body: Value) -> String {
    let (code, diff) = pair
        .ferry
        .post(&format!("/api/v2/changefeeds/{id}/diffs"), &body);
    assert_eq!(code, 201, "{diff}\n{}", pair.ferry.log());
    assert_eq!(diff["state"], "running", "{diff}");
    diff["id"].as_str().unwrap().to_string()
}

/// Waits until diff `diff_id` of `id` is finished; returns it.
fn wait_finished(pair: &Pair, id: &str, diff_id: &str) -> Value {
    let deadline = Instant::now() + MINUTE;
    loop {
        let (code, diff) = pair
            .ferry
            .get(&format!("/api/v2/changefeeds/{id}/diffs/{diff_id}"));
        assert_eq!(code, 200, "{diff}");
        match diff["state"].as_str().unwrap() {
            "finished" => return diff,
            "running" => {}
            other => panic!("diff {other}: {diff}\n{}", pair.ferry.log()),
        }
        assert!(
            Instant::now() < deadline,
            "diff never finished: {diff}\n{}",
            pair.ferry.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `table` → (missing, extra, different, sample keys of each kind) of a finished diff.
fn found(diff: &Value, table: &str) -> (u64, u64, u64, Vec<String>) {
    let t = diff["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .unwrap_or_else(|| panic!("no {table} in {diff}"));
    let keys: Vec<String> = ["missing", "extra", "different"]
        .iter()
        .flat_map(|kind| t["sample_keys"][kind].as_array().unwrap().clone())
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    (
        t["missing"].as_u64().unwrap(),
        t["extra"].as_u64().unwrap(),
        t["different"].as_u64().unwrap(),
        keys,
    )
}

/// Clears its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

fn clean(diff: &Value) -> bool {
    diff["tables"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["missing"] == 0 && t["extra"] == 0 && t["different"] == 0)
}

#[test]
fn a_diff_under_load_reports_exactly_the_corrupted_rows_and_repair_fixes_them() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY, v text);
         CREATE TABLE c (id int PRIMARY KEY, v text, n numeric);
         CREATE TABLE k (v text);
         INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 2000) g;
         INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 2000) g;
         INSERT INTO c SELECT g, 'c' || g, g / 7.0 FROM generate_series(1, 2000) g;
         INSERT INTO k VALUES ('x'), ('y');
         ANALYZE;",
    );
    pair.create("cf", &["public.*"]);
    pair.wait_synced("cf", MINUTE);

    // Corrupted behind Ferry's back, on keys the load below never touches.
    pair.target.psql(
        "analytics",
        "DELETE FROM a WHERE id = 7;
         INSERT INTO b VALUES (-5, 'extra');
         UPDATE c SET n = 0 WHERE id = 42;",
    );
    let writing = AtomicBool::new(true);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while writing.load(Ordering::Relaxed) {
                i += 1;
                pair.source.psql(
                    "shop",
                    &format!(
                        "UPDATE a SET v = v || '.' WHERE id = {k};
                         UPDATE c SET n = n + 1 WHERE id = {k};
                         INSERT INTO b VALUES ({new}, 'new');
                         DELETE FROM b WHERE id = {k};",
                        k = 1000 + i % 1000,
                        new = 10_000 + i
                    ),
                );
            }
        });

        // Stops the load however this scope ends (a failed assertion too).
        let _stop = StopOnDrop(&writing);
        let first = start_diff(&pair, "cf", json!({"rows_per_chunk": 500}));
        assert_eq!(first, "1");
        let diff = wait_finished(&pair, "cf", &first);
        assert_eq!(
            found(&diff, "public.a"),
            (1, 0, 0, vec!["7".into()]),
            "{diff}"
        );
        assert_eq!(
            found(&diff, "public.b"),
            (0, 1, 0, vec!["-5".into()]),
            "{diff}"
        );
        assert_eq!(
            found(&diff, "public.c"),
            (0, 0, 1, vec!["42".into()]),
            "{diff}"
        );
        assert_eq!(found(&diff, "public.k"), (0, 0, 0, vec![]), "{diff}");
        let progress = &diff["progress"];
        assert_eq!(progress["chunks_done"], progress["chunks"], "{diff}");
        assert!(
            progress["chunks"].as_u64().unwrap() >= 10,
            "chunked: {diff}"
        );
        assert!(
            progress["rows_compared"].as_u64().unwrap() >= 6000,
            "{diff}"
        );
        assert_eq!(progress["tables_done"], 4, "{diff}");

        // Keyless tables are compared but cannot be repaired row by row.
        let (code, body) = pair
            .ferry
            .post("/api/v2/changefeeds/cf/diffs", &json!({"repair": true}));
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["error_code"], "DIFF_UNSUPPORTED", "{body}");
        assert!(
            body["error_msg"].as_str().unwrap().contains("public.k"),
            "{body}"
        );

        let out = pair.cli(&[
            "diff",
            "create",
            "cf",
            "--repair",
            "--table",
            "public.a",
            "--table",
            "public.b",
            "--table",
            "public.c",
            "--rows-per-chunk",
            "500",
        ]);
        assert!(
            out.contains("diff 2 of changefeed cf started (repairing)"),
            "{out}"
        );
        let repaired = wait_finished(&pair, "cf", "2");
        assert_eq!(found(&repaired, "public.a").0, 1, "{repaired}");
        for t in repaired["tables"].as_array().unwrap() {
            assert_eq!(t["repaired"], true, "{repaired}");
        }

        let again = start_diff(&pair, "cf", json!({}));
        let diff = wait_finished(&pair, "cf", &again);
        assert!(clean(&diff), "a diff after the repair is clean: {diff}");
    });
    pair.wait_synced("cf", MINUTE);
    for table in ["public.a", "public.b", "public.c", "public.k"] {
        pair.assert_same(table);
    }
    assert_eq!(pair.status("cf")["state"], "running");

    let listed = pair.cli(&["diff", "list", "cf"]);
    assert_eq!(
        listed.lines().count(),
        4,
        "a header and three diffs: {listed}"
    );
    let shown = pair.cli(&["diff", "show", "cf", "1"]);
    for needle in ["finished", "public.a missing: 7", "public.c different: 42"] {
        assert!(shown.contains(needle), "{needle} in {shown}");
    }
    let history = pair.ferry.get("/api/v2/changefeeds/cf/history").1;
    let actions: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "diffs").count(),
        4,
        "three diffs and the refused one: {history}"
    );
    let (code, _) = pair.ferry.delete("/api/v2/changefeeds/cf/diffs/1");
    assert_eq!(code, 204);
    let (code, body) = pair.ferry.get("/api/v2/changefeeds/cf/diffs/1");
    assert_eq!(
        (code, body["error_code"].as_str()),
        (404, Some("DIFF_NOT_FOUND"))
    );
}

#[test]
fn bad_diff_requests_are_refused_with_their_codes() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    pair.create("cf", &["public.t"]);
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "hole", "source_uri": pair.source.uri("shop"), "sink_uri": "blackhole://", "tables": ["public.t"]}),
    );
    assert_eq!(code, 201, "{body}");
    pair.wait_synced("cf", MINUTE);
    pair.wait_synced("hole", MINUTE);
    for (id, body, code, error_code) in [
        ("hole", json!({}), 400, "DIFF_UNSUPPORTED"),
        (
            "cf",
            json!({"tables": ["public.nope"]}),
            400,
            "TABLE_NOT_FOUND",
        ),
        ("cf", json!({"tables": ["nodot"]}), 400, "INVALID_PARAMETER"),
        ("cf", json!({"rows_per_chunk": 0}), 400, "INVALID_CONFIG"),
        ("cf", json!({"rate_limit": 0}), 400, "INVALID_CONFIG"),
        ("cf", json!({"colour": "red"}), 400, "INVALID_REQUEST_BODY"),
        ("nope", json!({}), 404, "CHANGEFEED_NOT_FOUND"),
    ] {
        let (got, answer) = pair
            .ferry
            .post(&format!("/api/v2/changefeeds/{id}/diffs"), &body);
        assert_eq!(
            (got, answer["error_code"].as_str()),
            (code, Some(error_code)),
            "{body}: {answer}"
        );
    }
    let diff = start_diff(&pair, "cf", json!({}));
    wait_finished(&pair, "cf", &diff);
    for (path, code, error_code) in [
        ("diffs/1/stop", 409, "DIFF_REFUSED"),
        ("diffs/1/resume", 409, "DIFF_REFUSED"),
        ("diffs/9/stop", 404, "DIFF_NOT_FOUND"),
    ] {
        let (got, answer) = pair
            .ferry
            .post(&format!("/api/v2/changefeeds/cf/{path}"), &json!({}));
        assert_eq!(
            (got, answer["error_code"].as_str()),
            (code, Some(error_code)),
            "{path}: {answer}"
        );
    }
    let history = pair.ferry.get("/api/v2/changefeeds/hole/history").1;
    let refused = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "diffs")
        .expect("the refused diff is in the history");
    assert!(
        refused["result"]
            .as_str()
            .unwrap()
            .starts_with("DIFF_UNSUPPORTED"),
        "{history}"
    );
}

#[test]
fn a_diff_survives_kill_9_and_resumes_from_its_last_chunk() {
    let mut pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY, v text);
         INSERT INTO a SELECT g, 'a' FROM generate_series(1, 3000) g;
         INSERT INTO b SELECT g, 'b' FROM generate_series(1, 3000) g;
         ANALYZE;",
    );
    pair.create("cf", &["public.*"]);
    pair.wait_synced("cf", MINUTE);
    pair.target
        .psql("analytics", "UPDATE b SET v = 'x' WHERE id = 2950");
    let diff = start_diff(
        &pair,
        "cf",
        json!({"rows_per_chunk": 300, "rate_limit": 1500}),
    );
    let deadline = Instant::now() + MINUTE;
    loop {
        let shown = pair
            .ferry
            .get(&format!("/api/v2/changefeeds/cf/diffs/{diff}"))
            .1;
        if shown["progress"]["chunks_done"].as_u64().unwrap() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{shown}");
        std::thread::sleep(Duration::from_millis(50));
    }
    pair.ferry.kill9();
    pair.ferry.restart();
    // Still seconds of chunks to go at 1500 rows/s: stopped, then resumed by the CLI.
    let (code, stopped) = pair.ferry.post(
        &format!("/api/v2/changefeeds/cf/diffs/{diff}/stop"),
        &json!({}),
    );
    assert_eq!(
        (code, stopped["state"].as_str()),
        (200, Some("stopped")),
        "{stopped}"
    );
    let out = pair.cli(&["diff", "resume", "cf", &diff]);
    assert!(out.contains("resumed"), "{out}");
    let done = wait_finished(&pair, "cf", &diff);
    assert_eq!(
        found(&done, "public.b"),
        (0, 0, 1, vec!["2950".into()]),
        "{done}"
    );
    assert_eq!(found(&done, "public.a"), (0, 0, 0, vec![]), "{done}");
    // Each row compared once: the chunks done before the kill were not compared again.
    assert_eq!(done["progress"]["rows_compared"], 6000, "{done}");
    assert_eq!(
        done["progress"]["chunks_done"], done["progress"]["chunks"],
        "{done}"
    );
    assert!(
        pair.ferry.log().contains("resuming diff"),
        "{}",
        pair.ferry.log()
    );
}
