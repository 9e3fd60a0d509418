//! PostgreSQL → MariaDB end to end: a pgbench snapshot and stream with `kill -9`s of the
//! Ferry server (API), row semantics through the CLI (a keyless multiset, key changes,
//! unchanged TOAST values, TRUNCATE), and the `existing_target` policies and table claims.
//! Every check compares normalized row dumps of both sides.

mod common;

use std::time::{Duration, Instant};

use common::mariadb::{hex_text, micros, same, ToMariaDb};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn pgbench_columns(table: &str) -> Vec<(String, String)> {
    match table {
        "pgbench_accounts" => vec![
            same("aid"),
            same("bid"),
            same("abalance"),
            hex_text("filler"),
        ],
        "pgbench_branches" => vec![same("bid"), same("bbalance"), hex_text("filler")],
        "pgbench_tellers" => vec![
            same("tid"),
            same("bid"),
            same("tbalance"),
            hex_text("filler"),
        ],
        _ => vec![
            same("tid"),
            same("bid"),
            same("aid"),
            same("delta"),
            micros("mtime", false),
            hex_text("filler"),
        ],
    }
}

const PGBENCH_TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

/// pgbench scale: 2 (200,000 accounts) by default; `FERRY_TEST_PGBENCH_SCALE` for more.
fn scale() -> u32 {
    std::env::var("FERRY_TEST_PGBENCH_SCALE").map_or(2, |s| s.parse().expect("a scale"))
}

#[test]
fn pgbench_snapshot_and_stream_with_kill_9_end_identical() {
    let mut setup = ToMariaDb::start();
    let scale = scale();
    let init = setup
        .source
        .pgbench("shop", &["-i", "-q", "-s", &scale.to_string()]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    // The snapshot alone first, timed.
    let started = Instant::now();
    let (code, body) = setup.create("bench", &["public.pgbench_*"], json!({}));
    assert_eq!(code, 201, "{body}");
    setup.wait_synced("bench", MINUTE);
    let snapshot = started.elapsed();
    let rows = f64::from(scale) * 100_000.0;
    eprintln!(
        "snapshot of {rows} pgbench accounts (and synced): {:.1} s, {:.0} rows/s",
        snapshot.as_secs_f64(),
        rows / snapshot.as_secs_f64()
    );

    // The stream under load, with two `kill -9`s.
    let churn = std::thread::scope(|s| {
        let source = &setup.source;
        let churn =
            s.spawn(move || source.pgbench("shop", &["-n", "-c", "3", "-j", "2", "-T", "15"]));
        for delay_ms in [3000, 4000] {
            std::thread::sleep(Duration::from_millis(delay_ms));
            setup.ferry.kill9();
            std::thread::sleep(Duration::from_millis(200));
            setup.ferry.restart();
        }
        churn.join().unwrap()
    });
    assert!(
        churn.status.success(),
        "{}",
        String::from_utf8_lossy(&churn.stderr)
    );
    let started = Instant::now();
    setup.wait_synced("bench", 2 * MINUTE);
    let history: f64 = setup
        .source
        .psql("shop", "SELECT count(*) FROM pgbench_history")
        .parse()
        .unwrap();
    eprintln!(
        "stream: {history} pgbench transactions (5 statements each); caught up {:.1} s after the load ended",
        started.elapsed().as_secs_f64()
    );
    // A backlog drained, timed: paused while pgbench runs, then resumed.
    let paused = setup
        .ferry
        .post("/api/v2/changefeeds/bench/pause", &json!({}));
    assert_eq!(paused.0, 200, "{}", paused.1);
    let load = setup
        .source
        .pgbench("shop", &["-n", "-c", "3", "-j", "2", "-T", "6"]);
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let backlog: f64 = setup
        .source
        .psql("shop", "SELECT count(*) FROM pgbench_history")
        .parse::<f64>()
        .unwrap()
        - history;
    let started = Instant::now();
    let resumed = setup
        .ferry
        .post("/api/v2/changefeeds/bench/resume", &json!({}));
    assert_eq!(resumed.0, 200, "{}", resumed.1);
    setup.wait_synced("bench", 2 * MINUTE);
    let drained = started.elapsed().as_secs_f64();
    // Each pgbench transaction changes four rows (three updates, one insert).
    eprintln!(
        "backlog of {backlog} pgbench transactions ({} row changes) drained in {drained:.1} s: \
         {:.0} row changes/s",
        backlog * 4.0,
        backlog * 4.0 / drained
    );
    for table in PGBENCH_TABLES {
        setup.assert_same("public", table, &pgbench_columns(table));
    }
    // The checkpoint is in the target, with the data.
    let checkpoints = setup
        .target
        .sql("SELECT count(*) FROM `_ferry`.`checkpoints` WHERE changefeed = 'default/bench'");
    assert_eq!(checkpoints, "1");
}

#[test]
fn keyless_multisets_key_changes_toast_and_truncate_through_the_cli() {
    let setup = ToMariaDb::start();
    setup.source.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text, doc text, price numeric);
         ALTER TABLE items ALTER COLUMN doc SET STORAGE EXTERNAL;
         INSERT INTO items SELECT i, 'item ' || i,
                (SELECT string_agg(md5(i::text || g::text), '') FROM generate_series(1, 200) g),
                i * 1.5 FROM generate_series(1, 50) i;
         CREATE TABLE bag (a int, b text);
         ALTER TABLE bag REPLICA IDENTITY FULL;
         INSERT INTO bag VALUES (1, 'x'), (1, 'x'), (2, NULL);",
    );
    let created = setup.cli(&[
        "changefeed",
        "create",
        "--id",
        "rows",
        "--source-uri",
        &setup.source.uri("shop"),
        "--sink-uri",
        &setup.sink_uri(),
        "--tables",
        "public.*",
    ]);
    assert!(created.contains("rows"), "{created}");
    setup.wait_synced("rows", MINUTE);

    setup.source.psql(
        "shop",
        // Two identical rows, then one of them (and one of the older pair) goes.
        "INSERT INTO bag VALUES (3, 'y'), (3, 'y');
         DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE a = 3 LIMIT 1);
         DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE a = 1 LIMIT 1);
         UPDATE bag SET b = 'z' WHERE a = 2;
         -- Unchanged TOAST values: only name is sent.
         UPDATE items SET name = name || ' renamed' WHERE id <= 10;
         -- Key changes, with and without the TOASTed column sent.
         UPDATE items SET id = id + 1000 WHERE id BETWEEN 11 AND 20;
         UPDATE items SET id = id + 1000, doc = 'short' WHERE id BETWEEN 21 AND 25;
         DELETE FROM items WHERE id BETWEEN 26 AND 30;",
    );
    // The same in one transaction: compacted per key within the batch.
    setup.source.psql(
        "shop",
        "BEGIN;
         UPDATE items SET name = 'twice' WHERE id = 31;
         UPDATE items SET id = 2031 WHERE id = 31;
         UPDATE items SET name = 'thrice' WHERE id = 2031;
         INSERT INTO items VALUES (31, 'new 31', 'doc', 0.1);
         COMMIT;",
    );
    // One transaction far larger than a segment: flushed in parts, committed once.
    let started = Instant::now();
    setup.source.psql(
        "shop",
        "BEGIN;
         INSERT INTO items SELECT i, 'bulk', 'd', i FROM generate_series(100000, 160000) i;
         UPDATE items SET price = price + 1 WHERE id >= 100000 AND id % 3 = 0;
         DELETE FROM items WHERE id >= 100000 AND id % 5 = 0;
         COMMIT;",
    );
    setup.wait_synced("rows", MINUTE);
    eprintln!(
        "one transaction of 60,001 inserts, 20,001 updates, 12,001 deletes: committed and \
         applied in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let items = [
        same("id"),
        hex_text("name"),
        hex_text("doc"),
        (
            "price::numeric(40,10)".to_string(),
            "cast(`price` as decimal(40,10))".to_string(),
        ),
    ];
    setup.assert_same("public", "items", &items);
    let bag = [same("a"), hex_text("b")];
    setup.assert_same("public", "bag", &bag);
    assert_eq!(
        setup
            .target
            .sql("SELECT count(*) FROM public.bag WHERE a = 3"),
        "1"
    );

    setup
        .source
        .psql("shop", "TRUNCATE bag; INSERT INTO bag VALUES (9, 'after');");
    setup.wait_synced("rows", MINUTE);
    setup.assert_same("public", "bag", &bag);

    // A table renamed on the source, with changes before and after in one transaction.
    setup.source.psql(
        "shop",
        "BEGIN;
         UPDATE items SET name = 'before rename' WHERE id = 1;
         ALTER TABLE items RENAME TO goods;
         UPDATE goods SET name = 'after rename' WHERE id = 2;
         COMMIT;
         INSERT INTO goods VALUES (3000, 'new', 'doc', 1);",
    );
    setup.wait_synced("rows", MINUTE);
    setup.assert_same("public", "goods", &items);
    let items_left = setup
        .target
        .sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'items'");
    assert_eq!(items_left, "0");

    // A crash never doubles a keyless row: kill, restart, add more.
    let mut setup = setup;
    setup.ferry.kill9();
    setup
        .source
        .psql("shop", "INSERT INTO bag VALUES (9, 'after'), (10, NULL);");
    setup.ferry.restart();
    setup.wait_synced("rows", MINUTE);
    setup.assert_same("public", "bag", &bag);
}

#[test]
fn existing_target_policies_and_claims() {
    let setup = ToMariaDb::start();
    setup.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 20) i;",
    );
    // The user's table, with rows and a column of its own.
    setup.target.sql(
        "CREATE DATABASE public;
         CREATE TABLE public.t (id int PRIMARY KEY, v text, note varchar(10) DEFAULT 'mine');
         INSERT INTO public.t (id, v) VALUES (1000, 'old'), (1, 'stale');",
    );
    // fail (the default): refused before anything is written.
    let (code, body) = setup.create("feed", &["public.t"], json!({}));
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        body["error_code"],
        json!("TARGET_TABLE_NOT_EMPTY"),
        "{body}"
    );
    assert!(
        body["error_msg"].as_str().unwrap().contains("public.t"),
        "{body}"
    );

    // append: rows upserted by key; the user's row and column stay.
    let (code, body) = setup.create("feed", &["public.t"], json!({"existing_target": "append"}));
    assert_eq!(code, 201, "{body}");
    setup.wait_synced("feed", MINUTE);
    assert_eq!(setup.target.sql("SELECT count(*) FROM public.t"), "21");
    assert_eq!(
        setup.target.sql("SELECT v FROM public.t WHERE id = 1"),
        "v1"
    );
    assert_eq!(
        setup
            .target
            .sql("SELECT note FROM public.t WHERE id = 1000"),
        "mine"
    );

    // Another changefeed on the owned table: refused, naming the owner.
    let (code, body) = setup.create(
        "second",
        &["public.t"],
        json!({"existing_target": "truncate"}),
    );
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error_code"], json!("TARGET_TABLE_OWNED"), "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("default/feed"),
        "{body}"
    );

    // Deleting the first releases the table; truncate then empties it before the copy.
    let (code, body) = setup.ferry.delete("/api/v2/changefeeds/feed");
    assert!(code == 200 || code == 204, "{body}");
    let (code, body) = setup.create(
        "second",
        &["public.t"],
        json!({"existing_target": "truncate"}),
    );
    assert_eq!(code, 201, "{body}");
    setup.wait_synced("second", MINUTE);
    setup.assert_same("public", "t", &[same("id"), hex_text("v")]);

    // A value MariaDB cannot hold stops the changefeed, naming the column.
    setup.source.psql(
        "shop",
        "CREATE TABLE n (id int PRIMARY KEY, x numeric);
         INSERT INTO n VALUES (1, 0.1), (2, 1e-40);",
    );
    let (code, body) = setup.create("numbers", &["public.n"], json!({}));
    assert_eq!(code, 201, "{body}");
    let status = setup.wait_state("numbers", "failed", MINUTE);
    let error = status.to_string();
    assert!(error.contains("column x of public.n"), "{status}");

    // A text key longer than the target's VARCHAR key: the bulk load's warning stops it.
    setup.source.psql(
        "shop",
        "CREATE TABLE long_keys (k text PRIMARY KEY);
         INSERT INTO long_keys VALUES ('short'), (repeat('k', 800));",
    );
    let (code, body) = setup.create("long-keys", &["public.long_keys"], json!({}));
    assert_eq!(code, 201, "{body}");
    let status = setup.wait_state("long-keys", "failed", MINUTE);
    assert!(status.to_string().contains("public.long_keys"), "{status}");
    assert_eq!(
        setup.target.sql("SELECT count(*) FROM public.long_keys"),
        "0"
    );

    // A row longer than the target's max_allowed_packet (16 MiB): stopped, saying so.
    setup.source.psql(
        "shop",
        "CREATE TABLE big (id int PRIMARY KEY, body text);
         INSERT INTO big VALUES (1, repeat('x', 17000000));",
    );
    let (code, body) = setup.create("big", &["public.big"], json!({}));
    assert_eq!(code, 201, "{body}");
    let status = setup.wait_state("big", "failed", MINUTE);
    assert!(
        status.to_string().contains("max_allowed_packet"),
        "{status}"
    );
}

/// The target's columns of `public.{table}`: `name type`, in order.
fn target_columns(setup: &ToMariaDb, table: &str) -> String {
    setup.target.sql(&format!(
        "SELECT CONCAT(column_name, ' ', column_type) FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY ordinal_position"
    ))
}

#[test]
fn columns_added_dropped_and_widened_mid_stream_are_followed() {
    let mut setup = ToMariaDb::start();
    setup.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, a text, old int NOT NULL DEFAULT 0);
         INSERT INTO t SELECT i, 'a' || i, i FROM generate_series(1, 100) i;
         CREATE TABLE bag (x int, y text);
         ALTER TABLE bag REPLICA IDENTITY FULL;
         INSERT INTO bag VALUES (1, 'p'), (1, 'p'), (2, 'q');",
    );
    let (code, body) = setup.create("cols", &["public.t", "public.bag"], json!({}));
    assert_eq!(code, 201, "{body}");
    setup.wait_synced("cols", MINUTE);

    // Columns change under a running changefeed while rows keep coming, some of them in
    // transactions that write the other table first.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let source = &setup.source;
        let stop = &stop;
        s.spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                source.psql(
                    "shop",
                    &format!(
                        "INSERT INTO t (id, a) VALUES ({id}, 'w{i}');
                         UPDATE t SET a = a || '.' WHERE id = {k};
                         BEGIN;
                         INSERT INTO bag (x, y) VALUES ({x}, 'w');
                         UPDATE t SET a = a || '+' WHERE id = {k};
                         COMMIT;
                         DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE x = {x} LIMIT 1);
                         INSERT INTO bag (x, y) VALUES ({x}, 'w'), ({x}, 'w');",
                        id = 1000 + i,
                        k = i % 100 + 1,
                        x = i % 5,
                    ),
                );
            }
        });
        let step = |sql: &str| {
            std::thread::sleep(Duration::from_millis(700));
            setup.source.psql("shop", sql);
        };
        step("ALTER TABLE t ADD COLUMN c int");
        step("UPDATE t SET c = id WHERE id % 4 = 0");
        // Existing rows get 7 without a row event: the target column's default gives it.
        step("ALTER TABLE t ADD COLUMN d int DEFAULT 7");
        step("ALTER TABLE bag ALTER COLUMN x TYPE bigint");
        step("INSERT INTO bag VALUES (5000000000, 'big')");
        step("ALTER TABLE t DROP COLUMN old");
        step("ALTER TABLE bag ADD COLUMN z text");
        step("INSERT INTO bag VALUES (9, 'z', 'zz'), (9, 'z', 'zz')");
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    setup.wait_synced("cols", MINUTE);
    let t_columns = [same("id"), hex_text("a"), same("c"), same("d")];
    setup.assert_same("public", "t", &t_columns);
    let bag_columns = [same("x"), hex_text("y"), hex_text("z")];
    setup.assert_same("public", "bag", &bag_columns);
    assert_eq!(
        target_columns(&setup, "t"),
        "id int(11)\na longtext\nc int(11)\nd int(11)"
    );
    assert_eq!(
        target_columns(&setup, "bag"),
        "x bigint(20)\ny longtext\nz longtext"
    );

    // A crash between the ALTER and the batch holding the rows after it: the target has
    // the column (and Ferry's record of it), the checkpoint is before those rows. The
    // transaction comes again, and the ALTER finds itself done.
    setup.ferry.kill9();
    setup.source.psql(
        "shop",
        "ALTER TABLE t ADD COLUMN e text;
         INSERT INTO t (id, a, e) VALUES (5000, 'e', 'ee');
         UPDATE t SET e = 'u' WHERE id = 1;
         ALTER TABLE bag ADD COLUMN w int;
         INSERT INTO bag VALUES (9, 'z', 'zz', 1), (9, 'z', 'zz', 1);",
    );
    setup.target.sql(
        "INSERT INTO _ferry.created_columns VALUES ('public', 't', 'e'), ('public', 'bag', 'w');
         ALTER TABLE public.t ADD COLUMN e LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin;
         ALTER TABLE public.bag ADD COLUMN w int;",
    );
    setup.ferry.restart();
    setup.wait_synced("cols", MINUTE);
    let t_columns = [
        same("id"),
        hex_text("a"),
        same("c"),
        same("d"),
        hex_text("e"),
    ];
    setup.assert_same("public", "t", &t_columns);
    let bag_columns = [same("x"), hex_text("y"), hex_text("z"), same("w")];
    setup.assert_same("public", "bag", &bag_columns);

    // One transaction writes t, changes its shape and writes it again: MariaDB cannot
    // change the table inside the batch holding the first rows, and committing them alone
    // would split the transaction. The changefeed stops, naming the table.
    setup.source.psql(
        "shop",
        "BEGIN;
         INSERT INTO t (id, a) VALUES (6000, 'x');
         ALTER TABLE t ADD COLUMN f int;
         INSERT INTO t (id, a, f) VALUES (6001, 'y', 1);
         COMMIT;",
    );
    let status = setup.wait_state("cols", "failed", MINUTE);
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("table public.t changed shape in the middle of source transaction")
            && error.contains("table resync"),
        "{status}"
    );
    assert_eq!(
        setup
            .target
            .sql("SELECT count(*) FROM public.t WHERE id >= 6000"),
        "0"
    );
    // What the hint says: re-copy the table, then resume.
    let (code, body) = setup.ferry.post(
        "/api/v2/changefeeds/cols/tables/public.t/resync",
        &json!({}),
    );
    assert!(code < 300, "{code} {body}");
    let (code, body) = setup
        .ferry
        .post("/api/v2/changefeeds/cols/resume", &json!({}));
    assert_eq!(code, 200, "{body}");
    setup.wait_synced("cols", MINUTE);
    let t_columns = [
        same("id"),
        hex_text("a"),
        same("c"),
        same("d"),
        hex_text("e"),
        same("f"),
    ];
    setup.assert_same("public", "t", &t_columns);
    setup.assert_same("public", "bag", &bag_columns);
}

#[test]
fn ddl_stop_changes_nothing_and_says_what_would() {
    let setup = ToMariaDb::start();
    // The sink refuses the batch holding the schema change (replayed, refused again).
    setup.expect_refused_batches();
    setup.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, a text);
         INSERT INTO t VALUES (1, 'one');",
    );
    let (code, body) = setup.create("strict", &["public.t"], json!({"ddl": "stop"}));
    assert_eq!(code, 201, "{body}");
    setup.wait_synced("strict", MINUTE);
    setup.source.psql(
        "shop",
        "ALTER TABLE t ADD COLUMN c int;
         INSERT INTO t VALUES (2, 'two', 2);",
    );
    let status = setup.wait_state("strict", "failed", MINUTE);
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("options.ddl is stop") && error.contains("ADD COLUMN `c` INT"),
        "{status}"
    );
    assert_eq!(target_columns(&setup, "t"), "id int(11)\na longtext");
    // The operator makes the target match, then resumes.
    setup.target.sql("ALTER TABLE public.t ADD COLUMN c int");
    let (code, body) = setup
        .ferry
        .post("/api/v2/changefeeds/strict/resume", &json!({}));
    assert_eq!(code, 200, "{body}");
    setup.wait_synced("strict", MINUTE);
    setup.assert_same("public", "t", &[same("id"), hex_text("a"), same("c")]);
}
