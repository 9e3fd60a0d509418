//! Repairs, against real PostgreSQL through the real server and CLI. Skipping a poison
//! transaction:
//! the target refuses one source transaction (a CHECK the user's target table has); the
//! changefeed fails naming it, with `last_error_position`; `skip` with any other position
//! is refused; with that position the transaction is left out (all of it, or with
//! `--table` only its changes to that table) and every other row arrives; so for one
//! the target refuses only at its COMMIT. Re-syncing: a
//! table corrupted on the target behind Ferry's back is copied again while writes go on,
//! and ends identical; so does every table, a keyless one too.

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

/// Runs each of `transactions` in a psql call of its own, waits for `cf` to fail on one of
/// them, and returns the error, which names an `INSERT public.t` of a source transaction,
/// and the position to skip.
fn fails_on_a_transaction(pair: &Pair, transactions: &[&str]) -> (String, String) {
    for sql in transactions {
        pair.source.psql("shop", sql);
    }
    let status = pair.wait_state("cf", "failed", MINUTE);
    let error = status["last_error"].as_str().unwrap().to_string();
    let position = status["last_error_position"].as_str().unwrap().to_string();
    assert!(error.contains("source transaction"), "{error}");
    assert!(error.contains("INSERT public.t"), "{error}");
    (error, position)
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
    let (error, position) = fails_on_a_transaction(
        &pair,
        &[
            "INSERT INTO t VALUES (1, 5)",
            "INSERT INTO t VALUES (2, 500); INSERT INTO u VALUES (1, 'with the poison')",
            "INSERT INTO t VALUES (3, 7); INSERT INTO u VALUES (2, 'after')",
        ],
    );
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
    let stdout = pair.cli(&["changefeed", "skip", "cf", position, "--table", "public.t"]);
    assert!(stdout.contains("skipped, resumed"), "{stdout}");
    pair.wait_synced("cf", MINUTE);
    assert_eq!(ids(&pair, "t"), "1,3,5");
    assert_eq!(ids(&pair, "u"), "2,3");

    // Every action is in the history, refused ones too, and stays after a delete.
    let (code, _) = pair.ferry.delete("/api/v2/changefeeds/cf");
    assert_eq!(code, 200);
    let (code, history) = pair.ferry.get("/api/v2/changefeeds/cf/history");
    assert_eq!(code, 200, "{history}");
    let actions: Vec<String> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let result = i["result"].as_str().unwrap();
            format!(
                "{} {}",
                i["action"].as_str().unwrap(),
                result.split(':').next().unwrap()
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "create ok",
            "skip CHANGEFEED_RUNNING",
            "skip INVALID_POSITION",
            "skip INVALID_POSITION",
            "skip ok",
            "skip ok",
            "delete ok",
        ],
        "{history}"
    );
    assert_eq!(
        history["items"][5]["parameters"]["body"]["table"],
        "public.t"
    );
}

/// The target refuses a transaction only at COMMIT (a deferred constraint trigger), whose
/// answer Ferry takes in while it fills the next batch: the changefeed still fails naming
/// that transaction, nothing after it is committed first, and skipping it works as for a
/// refused statement.
#[test]
fn a_transaction_refused_at_commit_is_named_and_skipped() {
    let pair = Pair::start();
    pair.source
        .psql("shop", "CREATE TABLE t (id int PRIMARY KEY, v int)");
    pair.target.psql(
        "analytics",
        "CREATE TABLE t (id int PRIMARY KEY, v int);
         CREATE FUNCTION public.refuse_large() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.v >= 100 THEN
             RAISE EXCEPTION 'v is too large' USING ERRCODE = '23514';
           END IF;
           RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER refuse_large AFTER INSERT OR UPDATE ON public.t
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.refuse_large();",
    );
    pair.create("cf", &["public.t"]);
    pair.wait_synced("cf", MINUTE);

    // The refused transaction is large enough that its batch sends segments while it
    // fills, whose COMMIT is answered while the next batch fills.
    let (error, position) = fails_on_a_transaction(
        &pair,
        &[
            "INSERT INTO t VALUES (1, 5)",
            "INSERT INTO t SELECT g, CASE WHEN g = 9000 THEN 500 ELSE 1 END
         FROM generate_series(2, 10001) g",
            "INSERT INTO t VALUES (20000, 7)",
        ],
    );
    assert!(error.contains("v is too large"), "{error}");
    assert_eq!(ids(&pair, "t"), "1");

    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds/cf/skip",
        &json!({"position": position}),
    );
    assert_eq!(code, 200, "{body}");
    pair.wait_synced("cf", MINUTE);
    assert_eq!(ids(&pair, "t"), "1,20000");
}

#[test]
fn a_corrupted_table_is_copied_again_while_writes_go_on() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY, v text);
         CREATE TABLE c (v int);
         INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 2000) g;
         INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 2000) g;
         INSERT INTO c SELECT g % 10 FROM generate_series(1, 100) g;",
    );
    pair.create("cf", &["public.*"]);
    pair.wait_synced("cf", MINUTE);
    // Behind Ferry's back: a row lost, one too many, one changed.
    pair.target.psql(
        "analytics",
        "DELETE FROM a WHERE id < 10; INSERT INTO a VALUES (100000, 'extra');
         UPDATE a SET v = 'wrong' WHERE id = 500; DELETE FROM c WHERE v = 3;",
    );

    for (path, code, error_code) in [
        ("tables/public.nope/resync", 400, "TABLE_NOT_FOUND"),
        ("tables/nodot/resync", 400, "INVALID_PARAMETER"),
        ("tables/public.a/resync", 200, ""),
    ] {
        let (got, body) = pair
            .ferry
            .post(&format!("/api/v2/changefeeds/cf/{path}"), &json!({}));
        assert_eq!(got, code, "{path}: {body}");
        if !error_code.is_empty() {
            assert_eq!(body["error_code"], error_code, "{path}: {body}");
        }
    }
    // Writes to both tables while the copy and the hand-over run.
    for round in 0..30 {
        pair.source.psql(
            "shop",
            &format!(
                "INSERT INTO a VALUES ({id}, 'new'); UPDATE a SET v = 'u{round}' WHERE id = {};
                 DELETE FROM a WHERE id = {}; INSERT INTO b VALUES ({id}, 'new');
                 UPDATE b SET v = 'u{round}' WHERE id = {}",
                100 + round,
                1000 + round,
                200 + round,
                id = 3000 + round
            ),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pair.wait_synced("cf", MINUTE);
    pair.assert_same("public.a");
    pair.assert_same("public.b");
    assert!(pair.ferry.log().contains("re-syncing tables"));

    // Every table, through the CLI: the keyless one comes back whole.
    pair.cli(&["changefeed", "resync", "cf"]);
    pair.source.psql("shop", "INSERT INTO c VALUES (42)");
    pair.wait_synced("cf", MINUTE);
    pair.compare(&["public.a", "public.b", "public.c"])
        .assert_identical();
}
