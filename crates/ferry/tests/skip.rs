//! Skipping a poison transaction, against real PostgreSQL through the real server and CLI:
//! the target refuses one source transaction (a CHECK the user's target table has); the
//! changefeed fails naming it, with `last_error_position`; `skip` with any other position
//! is refused; with that position the transaction is left out (all of it, or with
//! `--table` only its changes to that table) and every other row arrives.

mod common;

use std::time::Duration;

use common::Pair;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn ids(pair: &Pair, table: &str) -> String {
    pair.target.psql(
        "analytics",
        &format!("SELECT string_agg(id::text, ',' ORDER BY id) FROM {table}"),
    )
}

#[test]
fn a_poison_transaction_is_skipped_by_its_position() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v int);
         CREATE TABLE u (id int PRIMARY KEY, note text);",
    );
    // The user's target table refuses what the source accepts.
    pair.target.psql(
        "analytics",
        "CREATE TABLE t (id int PRIMARY KEY, v int CHECK (v < 100))",
    );
    pair.create("cf", &["public.*"]);
    pair.wait_synced("cf", MINUTE);
    let (code, body) = pair
        .ferry
        .post("/api/v2/changefeeds/cf/skip", &json!({"position": "0/1"}));
    assert_eq!(code, 409, "running: {body}");

    // One psql call a transaction (statements sent together share one).
    for sql in [
        "INSERT INTO t VALUES (1, 5)",
        "INSERT INTO t VALUES (2, 500); INSERT INTO u VALUES (1, 'with the poison')",
        "INSERT INTO t VALUES (3, 7); INSERT INTO u VALUES (2, 'after')",
    ] {
        pair.source.psql("shop", sql);
    }
    let status = pair.wait_state("cf", "failed", MINUTE);
    let error = status["last_error"].as_str().unwrap();
    let position = status["last_error_position"].as_str().unwrap().to_string();
    assert!(error.contains("source transaction"), "{error}");
    assert!(error.contains("INSERT public.t"), "{error}");
    assert!(error.contains(&format!("skip cf {position}")), "{error}");

    for (wrong, why) in [
        (json!({"position": "0/1"}), "another position"),
        (json!({"position": "not a position"}), "malformed"),
    ] {
        let (code, body) = pair.ferry.post("/api/v2/changefeeds/cf/skip", &wrong);
        assert_eq!(code, 400, "{why}: {body}");
        assert_eq!(body["error_code"], "INVALID_POSITION", "{why}: {body}");
    }
    assert_eq!(pair.status("cf")["state"], "failed");

    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds/cf/skip",
        &json!({"position": position}),
    );
    assert_eq!(code, 200, "{body}");
    pair.wait_synced("cf", MINUTE);
    // All of the transaction is left out, nothing else.
    assert_eq!(ids(&pair, "t"), "1,3");
    assert_eq!(ids(&pair, "u"), "2");
    let status = pair.status("cf");
    assert_eq!(status["state"], "running");
    assert!(status.get("last_error_position").is_none(), "{status}");
    assert!(pair.ferry.log().contains("source transaction skipped"));

    // Only one table's changes, through the CLI.
    pair.source.psql(
        "shop",
        "INSERT INTO t VALUES (4, 600); INSERT INTO u VALUES (3, 'kept')",
    );
    pair.source.psql("shop", "INSERT INTO t VALUES (5, 1)");
    let status = pair.wait_state("cf", "failed", MINUTE);
    let position = status["last_error_position"].as_str().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["changefeed", "skip", "cf", position, "--table", "public.t"])
        .env("FERRY_SERVER", pair.ferry.url())
        .output()
        .expect("run ferry");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("skipped, resumed"), "{stdout}");
    pair.wait_synced("cf", MINUTE);
    assert_eq!(ids(&pair, "t"), "1,3,5");
    assert_eq!(ids(&pair, "u"), "2,3");
}
