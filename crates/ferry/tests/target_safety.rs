//! The target is the user's, against real PostgreSQL through the real server: a sink that
//! is the source is refused, one changefeed writes each target table, a table the user
//! made keeps its own columns and rows, `existing_target` decides about rows already
//! there, and `snapshot: never` copies nothing.

mod common;

use std::time::Duration;

use common::Pair;
use ferry_testkit::wait_for;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

/// Asserts a refusal (status and code) and returns the message.
#[track_caller]
fn refused(reply: (u16, Value), status: u16, code: &str) -> String {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["error_code"], json!(code), "{}", reply.1);
    reply.1["error_msg"].as_str().unwrap().to_string()
}

/// Asserts success and returns the body.
#[track_caller]
fn ok(reply: (u16, Value)) -> Value {
    assert!(reply.0 == 200 || reply.0 == 201, "{}: {}", reply.0, reply.1);
    reply.1
}

/// A create body from `shop` to `analytics` for `tables`, with `options`.
fn spec(pair: &Pair, id: &str, tables: &[&str], options: Value) -> Value {
    json!({
        "id": id,
        "source_uri": pair.source.uri("shop"),
        "sink_uri": pair.target.uri("analytics"),
        "tables": tables,
        "options": options,
    })
}

fn create(pair: &Pair, body: &Value) -> (u16, Value) {
    pair.ferry.post("/api/v2/changefeeds", body)
}

fn dry_run(pair: &Pair, body: &Value) -> (u16, Value) {
    pair.ferry.post("/api/v2/changefeeds?dry_run=true", body)
}

fn state(pair: &Pair, id: &str) -> Value {
    pair.ferry
        .get(&format!("/api/v2/changefeeds/{id}/status"))
        .1
}

#[test]
fn a_sink_that_is_the_source_is_refused_whatever_its_host_name() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10);",
    );
    // The same database through another host name: the URI text differs.
    let same = pair.source.uri("shop").replace("127.0.0.1", "localhost");
    assert_ne!(same, pair.source.uri("shop"));
    let mut body = spec(&pair, "loop", &["public.t"], json!({}));
    body["sink_uri"] = json!(same);
    let message = refused(dry_run(&pair, &body), 400, "SINK_IS_SOURCE");
    assert!(message.contains("database shop"), "{message}");
    refused(create(&pair, &body), 400, "SINK_IS_SOURCE");
    // Another database of the same cluster is another database.
    pair.source.create_database("copy");
    let mut other = body.clone();
    other["sink_uri"] = json!(pair.source.uri("copy").replace("127.0.0.1", "localhost"));
    ok(dry_run(&pair, &other));

    // Update while stopped: changing the sink to the source is refused too.
    let mut stopped = spec(&pair, "later", &["public.t"], json!({}));
    stopped["start"] = json!(false);
    ok(create(&pair, &stopped));
    let reply = pair.ferry.request(
        "PUT",
        "/api/v2/changefeeds/later",
        Some(json!({ "sink_uri": same }).to_string().as_bytes()),
    );
    refused(reply, 400, "SINK_IS_SOURCE");

    // Nothing was created in the source, and the table was not replicated into itself.
    let ferry_schema = "SELECT count(*) FROM pg_namespace WHERE nspname = '_ferry'";
    assert_eq!(pair.source.psql("shop", ferry_schema), "0");
    assert_eq!(pair.source.psql("shop", "SELECT count(*) FROM t"), "10");
}

#[test]
fn one_changefeed_writes_a_table_until_it_is_deleted() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY);
         CREATE TABLE x (id int PRIMARY KEY);
         INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i;",
    );
    ok(create(
        &pair,
        &spec(&pair, "first", &["public.t"], json!({})),
    ));
    pair.wait_synced("first", MINUTE);

    // Another changefeed, of another namespace, on the owned table: refused, naming both.
    let second = spec(
        &pair,
        "second",
        &["public.*"],
        json!({"existing_target": "append"}),
    );
    for reply in [
        pair.ferry
            .post("/api/v2/changefeeds?namespace=other&dry_run=true", &second),
        pair.ferry
            .post("/api/v2/changefeeds?namespace=other", &second),
    ] {
        let message = refused(reply, 409, "TARGET_TABLE_OWNED");
        assert!(message.contains("public.t"), "{message}");
        assert!(message.contains("default/first"), "{message}");
    }
    // An update that would add the owned table is refused as well.
    ok(create(
        &pair,
        &spec(&pair, "third", &["public.u"], json!({})),
    ));
    pair.wait_synced("third", MINUTE);
    ok(pair
        .ferry
        .post("/api/v2/changefeeds/third/pause", &json!({})));
    let reply = pair.ferry.request(
        "PUT",
        "/api/v2/changefeeds/third",
        Some(
            json!({"tables": ["public.u", "public.t"]})
                .to_string()
                .as_bytes(),
        ),
    );
    refused(reply, 409, "TARGET_TABLE_OWNED");
    // A table an update removes is released when the changefeed runs again.
    let owner_of = |table: &str| {
        pair.target.psql(
            "analytics",
            &format!("SELECT changefeed FROM _ferry.table_owners WHERE table_name = '{table}'"),
        )
    };
    assert_eq!(owner_of("u"), "default/third");
    let reply = pair.ferry.request(
        "PUT",
        "/api/v2/changefeeds/third",
        Some(json!({"tables": ["public.x"]}).to_string().as_bytes()),
    );
    ok(reply);
    ok(pair
        .ferry
        .post("/api/v2/changefeeds/third/resume", &json!({})));
    wait_for("u released, x claimed", MINUTE, || {
        owner_of("u").is_empty() && owner_of("x") == "default/third"
    });
    ok(pair.ferry.delete("/api/v2/changefeeds/third"));

    // Deleting the owner releases the table and removes its checkpoint and markers.
    let owner = pair.target.psql(
        "analytics",
        "SELECT changefeed FROM _ferry.table_owners WHERE table_name = 't'",
    );
    assert_eq!(owner, "default/first");
    ok(pair.ferry.delete("/api/v2/changefeeds/first"));
    for table in ["checkpoints", "snapshot_chunks", "table_owners"] {
        let left = pair.target.psql(
            "analytics",
            &format!("SELECT count(*) FROM _ferry.{table} WHERE changefeed = 'default/first'"),
        );
        assert_eq!(left, "0", "_ferry.{table}");
    }
    // Now the second may write it (keeping the rows the first copied).
    let second = spec(
        &pair,
        "second",
        &["public.t"],
        json!({"existing_target": "append"}),
    );
    ok(create(&pair, &second));
    pair.wait_synced("second", MINUTE);
    pair.source.psql(
        "shop",
        "INSERT INTO t VALUES (101, 'new'); DELETE FROM t WHERE id = 1",
    );
    pair.wait_synced("second", MINUTE);
    pair.assert_same("t");
}

#[test]
fn a_table_the_user_made_keeps_its_columns_and_rows() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int);
         INSERT INTO t SELECT i, 'v' || i, i FROM generate_series(1, 50) i;",
    );
    // The user's table: no column n, a column of its own holding data, a generated column.
    pair.target.psql(
        "analytics",
        "CREATE TABLE t (id int PRIMARY KEY, v text, note text DEFAULT 'mine',
                         g int GENERATED ALWAYS AS (id * 10) STORED);
         INSERT INTO t (id, v, note) VALUES (1000, 'old', 'kept'), (1, 'stale', 'kept too');",
    );

    // fail (the default): refused, nothing written.
    let message = refused(
        create(&pair, &spec(&pair, "feed", &["public.t"], json!({}))),
        409,
        "TARGET_TABLE_NOT_EMPTY",
    );
    assert!(message.contains("public.t"), "{message}");
    assert!(message.contains("existing_target"), "{message}");

    // append: the copy and the stream upsert; the user's column and rows stay.
    ok(create(
        &pair,
        &spec(
            &pair,
            "feed",
            &["public.t"],
            json!({"existing_target": "append"}),
        ),
    ));
    pair.wait_synced("feed", MINUTE);
    pair.source.psql(
        "shop",
        "INSERT INTO t VALUES (51, 'v51', 51); UPDATE t SET v = 'changed' WHERE id = 2;
         DELETE FROM t WHERE id = 3;",
    );
    pair.wait_synced("feed", MINUTE);
    let target = |sql: &str| pair.target.psql("analytics", sql);
    assert_eq!(
        target("SELECT id, v, note, g FROM t WHERE id IN (1, 2, 51, 1000) ORDER BY id"),
        "1|v1|kept too|10\n2|changed|mine|20\n51|v51|mine|510\n1000|old|kept|10000"
    );
    assert_eq!(target("SELECT count(*) FROM t"), "51");
    assert_eq!(target("SELECT count(*) FROM t WHERE n IS NULL"), "1");

    // DROP COLUMN on the source drops the column Ferry created, and only that one.
    pair.source.psql(
        "shop",
        "ALTER TABLE t DROP COLUMN n; INSERT INTO t VALUES (52, 'v52');",
    );
    pair.wait_synced("feed", MINUTE);
    assert_eq!(
        target(
            "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
             WHERE attrelid = 't'::regclass AND attnum > 0 AND NOT attisdropped"
        ),
        "id,v,note,g"
    );
    assert_eq!(target("SELECT note, g FROM t WHERE id = 52"), "mine|520");
    let log = pair.ferry.log();
    assert!(log.contains("existing target rows kept"), "{log}");
}

#[test]
fn truncate_empties_and_a_type_conflict_stops_before_writing() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 20) i;
         CREATE TABLE w (id int PRIMARY KEY, d date);
         INSERT INTO w VALUES (1, '2026-11-30');",
    );
    pair.target.psql(
        "analytics",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1000, 'gone');",
    );
    ok(create(
        &pair,
        &spec(
            &pair,
            "t",
            &["public.t"],
            json!({"existing_target": "truncate"}),
        ),
    ));
    pair.wait_synced("t", MINUTE);
    pair.assert_same("t");

    // A column whose type does not cast: refused at check, naming table and column.
    pair.target
        .psql("analytics", "CREATE TABLE w (id int PRIMARY KEY, d int)");
    let body = spec(&pair, "w", &["public.w"], json!({}));
    let message = refused(dry_run(&pair, &body), 409, "TARGET_SCHEMA_CONFLICT");
    assert!(message.contains("public.w column d"), "{message}");
    assert!(message.contains("date"), "{message}");

    // The same conflict arising after create stops the changefeed before it writes.
    pair.target.psql("analytics", "DROP TABLE w");
    let mut stopped = body.clone();
    stopped["start"] = json!(false);
    ok(create(&pair, &stopped));
    pair.target
        .psql("analytics", "CREATE TABLE w (id int PRIMARY KEY, d int)");
    ok(pair.ferry.post("/api/v2/changefeeds/w/resume", &json!({})));
    wait_for("w failed", MINUTE, || {
        state(&pair, "w")["state"] == json!("failed")
    });
    let error = state(&pair, "w")["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("public.w column d"), "{error}");
    assert_eq!(pair.target.psql("analytics", "SELECT count(*) FROM w"), "0");
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT count(*) FROM _ferry.table_owners WHERE table_name = 'w'"
        ),
        "0"
    );
}

#[test]
fn snapshot_never_streams_only_later_changes() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 3) i;",
    );
    // The user copied the rows before (two of them, to show nothing is copied).
    pair.target.psql(
        "analytics",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'v1'), (2, 'v2');",
    );
    let body = spec(&pair, "feed", &["public.t"], json!({"snapshot": "never"}));
    ok(dry_run(&pair, &body));
    ok(create(&pair, &body));
    wait_for("slot", MINUTE, || {
        pair.source
            .psql("shop", "SELECT count(*) FROM pg_replication_slots")
            == "1"
    });
    pair.source.psql(
        "shop",
        "INSERT INTO t VALUES (4, 'v4'); UPDATE t SET v = 'new' WHERE id = 1",
    );
    pair.wait_synced("feed", MINUTE);
    assert_eq!(
        pair.target
            .psql("analytics", "SELECT id, v FROM t ORDER BY id"),
        "1|new\n2|v2\n4|v4"
    );
    // snapshot: never with truncate would empty the target and copy nothing.
    let mut bad = spec(
        &pair,
        "bad",
        &["public.t"],
        json!({"snapshot": "never", "existing_target": "truncate"}),
    );
    bad["id"] = json!("bad");
    refused(create(&pair, &bad), 400, "INVALID_CONFIG");
}

#[test]
fn of_two_changefeeds_racing_for_a_table_one_writes_it() {
    let pair = Pair::start();
    // No key: had both written it, every row would be there twice.
    pair.source.psql(
        "shop",
        "CREATE TABLE v (n int); INSERT INTO v SELECT generate_series(1, 1000);",
    );
    // Both pass create's checks: nothing owns the table yet.
    for id in ["a", "b"] {
        let mut body = spec(&pair, id, &["public.v"], json!({}));
        body["start"] = json!(false);
        ok(create(&pair, &body));
    }
    std::thread::scope(|s| {
        for id in ["a", "b"] {
            let pair = &pair;
            s.spawn(move || {
                ok(pair
                    .ferry
                    .post(&format!("/api/v2/changefeeds/{id}/resume"), &json!({})))
            });
        }
    });
    wait_for("one failed", MINUTE, || {
        ["a", "b"]
            .iter()
            .any(|id| state(&pair, id)["state"] == json!("failed"))
    });
    let (loser, winner) = if state(&pair, "a")["state"] == json!("failed") {
        ("a", "b")
    } else {
        ("b", "a")
    };
    let error = state(&pair, loser)["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!(
            "public.v is written by changefeed default/{winner}"
        )),
        "{error}"
    );
    pair.wait_synced(winner, MINUTE);
    pair.source
        .psql("shop", "INSERT INTO v SELECT generate_series(1001, 1010)");
    pair.wait_synced(winner, MINUTE);
    pair.assert_same("v");
}
