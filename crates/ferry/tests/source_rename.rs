//! A table renamed on the source while replicating (issue 8, scenario 7): the target table
//! is renamed at the rename's position in the stream (same table, same rows; no new empty
//! table, no stale one), while running and while paused (changes under the old name read
//! after the rename still go to it first). A rename into a name the rules exclude stops the
//! changefeed with an error naming both names, before anything reaches a table the rules
//! leave out; excluding the old name too and resuming keeps the target table, unwritten.
//! A swap made while paused (`a` to `a_old`, another table to `a`) stops the changefeed at
//! the start, naming both tables, with nothing written.

mod common;

use std::time::Duration;

use common::Pair;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn tables(pair: &Pair) -> String {
    pair.target.psql(
        "analytics",
        "SELECT string_agg(table_schema || '.' || table_name, ','
           ORDER BY table_schema || '.' || table_name COLLATE \"C\")
         FROM information_schema.tables WHERE table_schema IN ('public', 'arch')",
    )
}

#[test]
fn renamed_tables_are_followed_or_stop_the_changefeed() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, v text);
         CREATE TABLE other (id int PRIMARY KEY);
         INSERT INTO orders SELECT g, 'snapshot' FROM generate_series(1, 100) g",
    );
    pair.create("cf", &["public.*", "arch.*", "!public.secret_*"]);
    pair.wait_synced("cf", MINUTE);

    // While running: rows, the rename, rows under the new name, in one transaction and after.
    pair.source.psql(
        "shop",
        "BEGIN;
         INSERT INTO orders SELECT g, 'before' FROM generate_series(101, 150) g;
         ALTER TABLE orders RENAME TO orders_v2;
         UPDATE orders_v2 SET v = 'after' WHERE id <= 10;
         COMMIT;
         INSERT INTO orders_v2 SELECT g, 'later' FROM generate_series(151, 200) g",
    );
    pair.wait_synced("cf", MINUTE);
    assert_eq!(tables(&pair), "public.orders_v2,public.other");
    pair.compare(&["orders_v2"]).assert_identical();

    // While paused: changes under the old name, the rename (and a move to another schema),
    // changes under the new one.
    pair.act("cf", "pause");
    pair.wait_state("cf", "paused", MINUTE);
    pair.source.psql(
        "shop",
        "DELETE FROM orders_v2 WHERE id > 190;
         CREATE SCHEMA arch;
         ALTER TABLE orders_v2 SET SCHEMA arch;
         ALTER TABLE arch.orders_v2 RENAME TO orders_v3;
         UPDATE arch.orders_v3 SET v = 'paused' WHERE id BETWEEN 11 AND 20;
         INSERT INTO other VALUES (1)",
    );
    pair.act("cf", "resume");
    pair.wait_synced("cf", MINUTE);
    assert_eq!(tables(&pair), "arch.orders_v3,public.other");
    pair.compare(&["arch.orders_v3", "other"])
        .assert_identical();
    // Ferry's bookkeeping moved with it: the table is owned under its new name.
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT string_agg(table_schema || '.' || table_name, ','
           ORDER BY table_schema || '.' || table_name COLLATE \"C\")
             FROM _ferry.table_owners"
        ),
        "arch.orders_v3,public.other"
    );

    // Renamed while paused with no change after: the stream renames it at its next change.
    pair.act("cf", "pause");
    pair.wait_state("cf", "paused", MINUTE);
    pair.source
        .psql("shop", "ALTER TABLE arch.orders_v3 RENAME TO orders_v4");
    pair.act("cf", "resume");
    pair.wait_synced("cf", MINUTE);
    pair.source
        .psql("shop", "INSERT INTO arch.orders_v4 VALUES (1000, 'v4')");
    pair.wait_synced("cf", MINUTE);
    assert_eq!(tables(&pair), "arch.orders_v4,public.other");
    pair.compare(&["arch.orders_v4"]).assert_identical();
    let status = pair.status("cf");
    assert_eq!(status["state"], "running", "{status}");

    // Renamed into a name the rules exclude: stop, naming both, with nothing written there.
    pair.source.psql(
        "shop",
        "ALTER TABLE arch.orders_v4 SET SCHEMA public;
         ALTER TABLE public.orders_v4 RENAME TO secret_orders;
         INSERT INTO secret_orders VALUES (2000, 'secret')",
    );
    let status = pair.wait_state("cf", "failed", MINUTE);
    let error = status["last_error"].to_string();
    eprintln!("scenario 7 (renamed into an excluded name): stopped: {error}");
    assert!(
        error.contains("renamed to public.secret_orders on the source")
            && error.contains("exclude"),
        "{error}"
    );
    assert_eq!(tables(&pair), "arch.orders_v4,public.other");

    // Excluding the old name too: the target table is kept as it was, the rest streams.
    update(
        &pair,
        json!({"tables": ["public.*", "arch.*", "!public.secret_*", "!arch.orders_v4"]}),
    );
    pair.act("cf", "resume");
    pair.source.psql("shop", "INSERT INTO other VALUES (2)");
    pair.wait_synced("cf", MINUTE);
    let status = pair.status("cf");
    assert_eq!(status["state"], "running", "{status}\n{}", pair.ferry.log());
    assert_eq!(tables(&pair), "arch.orders_v4,public.other");
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT count(*) FROM arch.orders_v4 WHERE id >= 2000"
        ),
        "0"
    );
    let report = pair.compare(&["other"]);
    eprintln!(
        "scenario 7 (rename while running, in one transaction with changes; rename and SET \
         SCHEMA while paused; rename with no change after): followed, then\n{report}"
    );
    report.assert_identical();
    let log = pair.ferry.log();
    assert_eq!(
        log.matches("snapshot done").count(),
        1,
        "tables were copied again:\n{log}"
    );
}

/// The target's tables of `public` with their rows, `table:id|v;…` per table.
fn contents(pair: &Pair) -> String {
    let mut out = Vec::new();
    for table in tables(pair).split(',').filter(|t| !t.is_empty()) {
        let rows = pair.target.psql(
            "analytics",
            &format!("SELECT string_agg(id || '|' || v, ';' ORDER BY id) FROM {table}"),
        );
        out.push(format!("{table}:{rows}"));
    }
    out.join("\n")
}

/// `a` and `a_new` replicated; while paused `a` is renamed to `a_old` and `a_new` to `a`
/// (a swap), then rows go to each. The stream announces a rename only with the table's
/// next change, so it cannot follow the two in order (the new `a` would be renamed onto
/// the old one's target table): the changefeed stops at the start, naming both tables,
/// with nothing written. Created again as the error says, it copies both as they are.
#[test]
fn a_swap_while_paused_stops_before_writing_either_table() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE a_new (id int PRIMARY KEY, v text);
         INSERT INTO a SELECT g, 'old' FROM generate_series(1, 3) g;
         INSERT INTO a_new SELECT g, 'new' FROM generate_series(1, 2) g",
    );
    pair.create("cf", &["public.*"]);
    pair.wait_synced("cf", MINUTE);
    let before = contents(&pair);
    pair.act("cf", "pause");
    pair.wait_state("cf", "paused", MINUTE);
    pair.source.psql(
        "shop",
        "INSERT INTO a VALUES (4, 'old, paused');
         ALTER TABLE a RENAME TO a_old;
         ALTER TABLE a_new RENAME TO a;
         INSERT INTO a VALUES (10, 'new, swapped');
         INSERT INTO a_old VALUES (5, 'old, swapped')",
    );
    pair.act("cf", "resume");
    let status = pair.wait_state("cf", "failed", MINUTE);
    let error = status["last_error"].to_string();
    eprintln!("swap while paused, every name selected: stopped: {error}");
    assert!(
        error.contains("public.a was renamed to public.a_old")
            && error.contains("table public.a_new took the name public.a"),
        "{error}"
    );
    assert_eq!(contents(&pair), before, "{}", pair.ferry.log());

    // What the error says to do: copy the tables anew.
    let (code, body) = pair.ferry.delete("/api/v2/changefeeds/cf");
    assert_eq!(code, 200, "{body}");
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "cf",
            "source_uri": pair.source.uri("shop"),
            "sink_uri": pair.target.uri("analytics"),
            "tables": ["public.*"],
            "options": {"existing_target": "truncate"},
        }),
    );
    assert_eq!(code, 201, "{body}");
    pair.wait_synced("cf", MINUTE);
    pair.compare(&["a", "a_old"]).assert_identical();
}

/// The same swap with `a_new` excluded by the rules: the new `a` has the name the target
/// keeps for the old one until the stream reaches its rename (before, the changefeed ran
/// on with the new table never copied and its rows never written). The changefeed stops
/// at the start instead, with nothing written; excluding both names as the error says, the
/// target table is kept and the other tables stream on.
#[test]
fn a_swap_with_an_unreplicated_table_stops_before_writing() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE a_new (id int PRIMARY KEY, v text);
         INSERT INTO a SELECT g, 'old' FROM generate_series(1, 3) g;
         INSERT INTO a_new SELECT g, 'new' FROM generate_series(1, 2) g;
         CREATE TABLE ab (id int PRIMARY KEY, v text)",
    );
    pair.create("cf", &["public.a*", "!public.a_new"]);
    pair.wait_synced("cf", MINUTE);
    let before = contents(&pair);
    assert_eq!(before, "public.a:1|old;2|old;3|old\npublic.ab:");
    pair.act("cf", "pause");
    pair.wait_state("cf", "paused", MINUTE);
    pair.source.psql(
        "shop",
        "ALTER TABLE a RENAME TO a_old;
         ALTER TABLE a_new RENAME TO a;
         INSERT INTO a VALUES (10, 'new, swapped')",
    );
    pair.act("cf", "resume");
    let status = pair.wait_state("cf", "failed", MINUTE);
    let error = status["last_error"].to_string();
    eprintln!("swap while paused, a_new excluded: stopped: {error}");
    assert!(
        error.contains("public.a was renamed to public.a_old")
            && error.contains("another table took the name public.a"),
        "{error}"
    );
    assert_eq!(contents(&pair), before, "{}", pair.ferry.log());

    update(
        &pair,
        json!({"tables": ["public.a*", "!public.a_new", "!public.a", "!public.a_old"]}),
    );
    pair.act("cf", "resume");
    pair.source.psql("shop", "INSERT INTO ab VALUES (1, 'ab')");
    pair.wait_synced("cf", MINUTE);
    assert_eq!(pair.status("cf")["state"], "running");
    assert_eq!(
        contents(&pair),
        "public.a:1|old;2|old;3|old\npublic.ab:1|ab",
        "{}",
        pair.ferry.log()
    );
}

/// Updates changefeed `cf` (paused or failed) with `body`.
fn update(pair: &Pair, body: serde_json::Value) {
    let (code, body) = pair.ferry.request(
        "PUT",
        "/api/v2/changefeeds/cf",
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(code, 200, "{body}");
}
