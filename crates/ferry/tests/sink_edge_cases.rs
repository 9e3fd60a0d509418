//! Edge cases of the sink: column types in set statements, keys whose texts are equal,
//! out-of-line TOAST values, keyless REPLICA IDENTITY FULL matching, identity indexes other
//! than the primary key, a key build that failed once, schema changes mid-batch, bulk inserts
//! meeting a key the target holds. Each must end exactly as applying the changes one by one
//! would.

mod common;

use std::time::Duration;

use common::Pair;
use ferry_testkit::wait_for;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

/// Big values stored out of line (never compressed inline), so updates that leave them
/// alone really arrive as `Value::Unchanged`.
const EXTERNAL: &str = "SET STORAGE EXTERNAL";

fn status(pair: &Pair, id: &str) -> Value {
    pair.ferry
        .get(&format!("/api/v2/changefeeds/{id}/status"))
        .1
}

#[test]
fn arrays_enums_domains_padded_and_numeric_columns_in_set_statements() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        &format!(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN posint AS int CHECK (VALUE > 0);
         CREATE TABLE ty (
           id int PRIMARY KEY, arr int[], tarr text[], earr mood[], m mood, d posint,
           c char(5), vc varchar(10), n numeric(8,3), b bool, ip inet, j jsonb,
           ts timestamptz, iv interval, big text);
         ALTER TABLE ty ALTER COLUMN big {EXTERNAL};
         CREATE TABLE uo (id int PRIMARY KEY, arr int[], n numeric(8,3), c char(5), v text);
         ALTER TABLE uo ALTER COLUMN v {EXTERNAL};
         CREATE TABLE lg (arr int[], m mood, c char(5), n numeric(8,3), b bool);
         INSERT INTO ty SELECT g, ARRAY[g, NULL], ARRAY['a,b', '\"q\"', NULL, ''],
           ARRAY['ok']::mood[], 'happy', g, 'ab', 'x', 1.5, true, '10.0.0.1',
           '{{\"a\": [1, null]}}', '2024-01-01 00:00+02', '1 day', repeat('big', 10000)
           FROM generate_series(1, 20) g;
         INSERT INTO uo SELECT g, '{{}}', g / 3.0, 'c', repeat('t', 9000)
           FROM generate_series(1, 20) g;"
        ),
    );
    // A user-created target table with another column order.
    pair.target.psql(
        "analytics",
        "CREATE TABLE public.uo (v text, c character(5), n numeric(8,3), id integer PRIMARY KEY,
                                 arr integer[]);",
    );
    pair.create("shop", &["public.*"]);
    pair.wait_synced("shop", MINUTE);

    pair.source.psql(
        "shop",
        "BEGIN;
         INSERT INTO ty VALUES (100, '{}', '{}', '{}', 'sad', 1, 'a', '', 0, false, '::1', '[]',
                                'infinity', '-1 mon', 'small');
         INSERT INTO ty (id) VALUES (101);
         UPDATE ty SET arr = '{}', m = 'sad', c = 'zz', vc = NULL WHERE id BETWEEN 1 AND 5;
         UPDATE ty SET earr = ARRAY[NULL, 'sad']::mood[], n = 99999.999 WHERE id BETWEEN 4 AND 8;
         UPDATE ty SET id = id + 1000 WHERE id IN (9, 10);
         UPDATE ty SET b = NULL, big = 'now small' WHERE id = 11;
         DELETE FROM ty WHERE id = 12;
         UPDATE ty SET d = 7 WHERE id = 100;
         UPDATE ty SET id = 200 WHERE id = 100;
         INSERT INTO uo VALUES (100, '{1,NULL}', NULL, NULL, NULL);
         UPDATE uo SET n = n + 1, arr = '{7}' WHERE id <= 10;
         UPDATE uo SET id = -id WHERE id BETWEEN 15 AND 16;
         DELETE FROM uo WHERE id = 20;
         INSERT INTO lg VALUES ('{}', 'ok', 'a', 1.1, true), (NULL, NULL, NULL, NULL, NULL),
                               ('{NULL}', 'sad', 'abcde', -0.001, false);
         COMMIT;",
    );
    pair.wait_synced("shop", MINUTE);
    for t in ["ty", "lg"] {
        pair.assert_same(t);
    }
    // uo's columns differ in order: compare them by name.
    let q = "COPY (SELECT id, arr, n, c, v FROM uo ORDER BY id) TO STDOUT";
    assert_eq!(
        pair.source.psql("shop", q),
        pair.target.psql("analytics", q)
    );
}

/// The existing compaction scenario, with the big column stored out of line so the
/// `Value::Unchanged` paths (UpdateSet, overlay, hand-back) actually run.
#[test]
fn unchanged_toast_paths_with_out_of_line_values() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        &format!(
            "CREATE TABLE kv (id int PRIMARY KEY, v text, big text);
         ALTER TABLE kv ALTER COLUMN big {EXTERNAL};
         CREATE TABLE nk (n numeric PRIMARY KEY, v text, big text);
         ALTER TABLE nk ALTER COLUMN big {EXTERNAL};
         CREATE TABLE kf (id int PRIMARY KEY, v text, big text);
         ALTER TABLE kf REPLICA IDENTITY FULL;
         ALTER TABLE kf ALTER COLUMN big {EXTERNAL};
         INSERT INTO kv SELECT g, 'v' || g, repeat('big', 10000) FROM generate_series(1, 100) g;
         INSERT INTO kf SELECT g, 'v' || g, repeat('big', 10000) FROM generate_series(1, 10) g;
         INSERT INTO nk VALUES (1.0, 'one', repeat('n', 9000));"
        ),
    );
    pair.create("shop", &["public.*"]);
    pair.wait_synced("shop", MINUTE);
    pair.source.psql(
        "shop",
        "BEGIN;
         INSERT INTO kv VALUES (1000, 'a', 'x');
         UPDATE kv SET v = 'b' WHERE id = 1000;
         DELETE FROM kv WHERE id = 1000;
         INSERT INTO kv VALUES (1000, 'c', repeat('fresh', 5000));
         UPDATE kv SET v = 'c2' WHERE id = 1000;
         UPDATE kv SET id = 1001 WHERE id = 1000;
         UPDATE kv SET v = 'c3' WHERE id = 1001;
         UPDATE kv SET v = 'toast kept' WHERE id = 1;
         UPDATE kv SET v = 'toast kept twice' WHERE id = 1;
         UPDATE kv SET id = 2001 WHERE id = 2;
         UPDATE kv SET id = 2002 WHERE id = 2001;
         UPDATE kv SET id = 2003 WHERE id = 2002;
         UPDATE kv SET v = 'after chain' WHERE id = 2003;
         DELETE FROM kv WHERE id BETWEEN 10 AND 20;
         UPDATE kv SET id = id + 1000 WHERE id BETWEEN 30 AND 40;
         UPDATE kv SET v = 'u1' WHERE id = 50;
         UPDATE kv SET id = 5000 WHERE id = 50;
         UPDATE kv SET v = 'u2' WHERE id = 5000;
         UPDATE nk SET n = 1.00 WHERE n = 1.0;
         UPDATE nk SET v = 'mid' WHERE n = 1.00;
         UPDATE nk SET n = 1.0, v = 'back' WHERE n = 1.00;
         UPDATE kf SET v = 'f' WHERE id <= 3;
         UPDATE kf SET id = id + 100 WHERE id BETWEEN 2 AND 4;
         UPDATE kf SET v = 'g' WHERE id = 102;
         DELETE FROM kf WHERE id = 103;
         COMMIT;",
    );
    pair.wait_synced("shop", MINUTE);
    for t in ["kv", "nk", "kf"] {
        pair.assert_same(t);
    }
}

/// Keys whose text is not unique: `1 day` = `24:00:00`, `0` = `-0`.
#[test]
fn interval_and_float_keys_whose_texts_are_equal() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE ik (k interval PRIMARY KEY, v text);
         CREATE TABLE fk (k float8 PRIMARY KEY, v text);
         INSERT INTO ik VALUES ('1 day', 'a'), ('2 days', 'b');
         INSERT INTO fk VALUES (0, 'zero'), (1, 'one');",
    );
    pair.create("shop", &["public.*"]);
    pair.wait_synced("shop", MINUTE);
    pair.source.psql(
        "shop",
        "BEGIN;
         UPDATE ik SET k = '24:00:00' WHERE k = '1 day';
         UPDATE ik SET v = 'a2' WHERE k = '24:00:00';
         UPDATE ik SET k = '48:00:00', v = 'b2' WHERE k = '2 days';
         DELETE FROM ik WHERE k = '48:00:00';
         INSERT INTO ik VALUES ('2 days', 'b3');
         UPDATE fk SET k = '-0' WHERE k = 0;
         UPDATE fk SET v = 'neg' WHERE k = 0;
         DELETE FROM fk WHERE k = 0;
         INSERT INTO fk VALUES (0, 'again');
         COMMIT;",
    );
    pair.wait_synced("shop", MINUTE);
    for t in ["ik", "fk"] {
        pair.assert_same(t);
    }
}

/// Keyless REPLICA IDENTITY FULL tables match rows by `col::text = <source text>`. For
/// boolean (`true` vs `t`), inet (`10.0.0.1/32` vs `10.0.0.1`) and char(n) (trailing blanks
/// trimmed by the cast) the two never agree, so updates and deletes match nothing.
#[test]
fn keyless_full_identity_rows_with_bool_inet_char_columns_are_matched() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE kb (flag bool, n int);
         CREATE TABLE ki (ip inet, n int);
         CREATE TABLE kc (c char(4), n int);
         ALTER TABLE kb REPLICA IDENTITY FULL;
         ALTER TABLE ki REPLICA IDENTITY FULL;
         ALTER TABLE kc REPLICA IDENTITY FULL;
         INSERT INTO kb VALUES (true, 1), (false, 2);
         INSERT INTO ki VALUES ('10.0.0.1', 1), ('10.0.0.2', 2);
         INSERT INTO kc VALUES ('ab', 1), ('cd', 2);",
    );
    pair.create("shop", &["public.*"]);
    pair.wait_synced("shop", MINUTE);
    pair.source.psql(
        "shop",
        "UPDATE kb SET n = 10 WHERE n = 1; DELETE FROM kb WHERE n = 2;
         UPDATE ki SET n = 10 WHERE n = 1; DELETE FROM ki WHERE n = 2;
         UPDATE kc SET n = 10 WHERE n = 1; DELETE FROM kc WHERE n = 2;",
    );
    pair.wait_synced("shop", MINUTE);
    let mut failures = Vec::new();
    for t in ["kb", "ki", "kc"] {
        if let Err(e) = std::panic::catch_unwind(|| pair.assert_same(t)) {
            failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| format!("{t} differs")),
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A DEFERRABLE primary key (usable with REPLICA IDENTITY FULL) lets one statement shift
/// keys onto each other. The compacted `Delete(old key)` then overwrites the `Upsert` of the
/// row that just moved into that key.
#[test]
fn added_table_whose_key_build_failed_once_still_gets_its_key() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a VALUES (1, 'a');",
    );
    pair.create("cf", &["public.a"]);
    pair.wait_synced("cf", MINUTE);
    let (code, body) = pair.ferry.post("/api/v2/changefeeds/cf/pause", &json!({}));
    assert_eq!(code, 200, "{body}");
    pair.source.psql(
        "shop",
        "CREATE TABLE b (id int PRIMARY KEY, v text);
         INSERT INTO b SELECT g, 'b' FROM generate_series(1, 10) g;",
    );
    // Fail the first ADD PRIMARY KEY with lock_not_available (what lock_timeout raises).
    pair.target.psql(
        "analytics",
        "CREATE SEQUENCE public.key_builds;
         CREATE FUNCTION public.fail_first_key_build() RETURNS event_trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF current_query() ILIKE '%ADD PRIMARY KEY%' AND nextval('public.key_builds') = 1 THEN
             RAISE EXCEPTION 'canceling statement due to lock timeout' USING ERRCODE = '55P03';
           END IF;
         END $$;
         CREATE EVENT TRIGGER fail_first_key_build ON ddl_command_start
           EXECUTE FUNCTION public.fail_first_key_build();",
    );
    let (code, body) = pair.ferry.request(
        "PUT",
        "/api/v2/changefeeds/cf",
        Some(
            json!({"tables": ["public.a", "public.b"]})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = pair.ferry.post("/api/v2/changefeeds/cf/resume", &json!({}));
    assert_eq!(code, 200, "{body}");
    wait_for("the injected key build failure", MINUTE, || {
        pair.target
            .psql("analytics", "SELECT last_value FROM public.key_builds")
            == "1"
            && pair
                .target
                .psql("analytics", "SELECT is_called FROM public.key_builds")
                == "t"
    });
    std::thread::sleep(Duration::from_secs(2));
    let after_failure = status(&pair, "cf");
    // A lock timeout is transient: the changefeed should retry ("error"), not fail.
    let state = after_failure["state"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if state == "failed" {
        let (code, body) = pair.ferry.post("/api/v2/changefeeds/cf/resume", &json!({}));
        assert_eq!(code, 200, "{body}");
    }
    pair.source.psql(
        "shop",
        "UPDATE b SET v = 'changed' WHERE id = 1; INSERT INTO b VALUES (11, 'new');",
    );
    let synced = std::panic::catch_unwind(|| pair.wait_synced("cf", Duration::from_secs(20)));
    let keys = pair.target.psql(
        "analytics",
        "SELECT count(*) FROM pg_index WHERE indrelid = 'public.b'::regclass AND indisunique",
    );
    let final_status = status(&pair, "cf");
    assert!(
        synced.is_ok() && keys == "1" && state != "failed",
        "state after a 55P03 key build: {state} ({after_failure})\n\
         unique indexes on target b: {keys}\nstatus now: {final_status}"
    );
    pair.assert_same("b");
}

/// Schema changes, TRUNCATE, key-only tables and a composite key in another order than the
/// columns, all inside one source transaction.
#[test]
fn schema_changes_truncate_and_composite_keys_mid_batch() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        &format!(
            "CREATE TABLE kv (id int PRIMARY KEY, v text, big text);
         ALTER TABLE kv ALTER COLUMN big {EXTERNAL};
         CREATE TABLE ko (a int, b int, PRIMARY KEY (b, a));
         CREATE TABLE ck (a int, b text, v text, big text, PRIMARY KEY (b, a));
         ALTER TABLE ck ALTER COLUMN big {EXTERNAL};
         INSERT INTO kv SELECT g, 'v' || g, repeat('big', 10000) FROM generate_series(1, 10) g;
         INSERT INTO ko SELECT g, -g FROM generate_series(1, 10) g;
         INSERT INTO ck SELECT g, 'k' || g, 'v', repeat('c', 9000) FROM generate_series(1, 10) g;"
        ),
    );
    pair.create("shop", &["public.*"]);
    pair.wait_synced("shop", MINUTE);
    pair.source.psql(
        "shop",
        "BEGIN;
         UPDATE kv SET v = 'before add' WHERE id <= 3;
         INSERT INTO kv VALUES (100, 'new', repeat('n', 9000));
         UPDATE kv SET id = 101 WHERE id = 100;
         ALTER TABLE kv ADD COLUMN w int;
         UPDATE kv SET v = 'after add', w = 1 WHERE id BETWEEN 2 AND 4;
         UPDATE kv SET id = 102 WHERE id = 101;
         ALTER TABLE kv ALTER COLUMN w TYPE bigint;
         UPDATE kv SET w = 9999999999 WHERE id = 3;
         ALTER TABLE kv DROP COLUMN v;
         UPDATE kv SET w = 5 WHERE id = 5;
         DELETE FROM kv WHERE id = 6;
         INSERT INTO ko VALUES (100, 100);
         UPDATE ko SET a = a + 1000 WHERE a <= 3;
         DELETE FROM ko WHERE a = 5;
         UPDATE ck SET v = 'x' WHERE a <= 3;
         UPDATE ck SET a = a + 100 WHERE a BETWEEN 2 AND 5;
         UPDATE ck SET b = 'moved' WHERE a = 102;
         TRUNCATE ck;
         INSERT INTO ck VALUES (1, 'k1', 'after truncate', 'small');
         UPDATE ck SET v = 'again' WHERE a = 1;
         COMMIT;",
    );
    pair.wait_synced("shop", MINUTE);
    for t in ["kv", "ko", "ck"] {
        pair.assert_same(t);
    }
}

/// Not a correctness test: how long 20k handed-back changes (key change with unsent TOAST
/// values) take. `compact()` flushes the row-statement queue before every change, so each
/// handed-back change is its own round trip instead of being pipelined 4096 at a time.
#[test]
fn primary_key_with_replica_identity_using_another_index() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE ri (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text);
         ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_code_key;
         INSERT INTO ri SELECT g, 'c' || g, 'v' FROM generate_series(1, 5) g;",
    );
    pair.create("shop", &["public.*"]);
    pair.wait_synced("shop", MINUTE);
    pair.source.psql(
        "shop",
        "DELETE FROM ri WHERE id = 1; UPDATE ri SET id = 20 WHERE id = 2;
         UPDATE ri SET code = 'c30' WHERE id = 3;",
    );
    pair.wait_synced("shop", MINUTE);
    pair.assert_same("ri");
}

/// Rows trading a UNIQUE value within one source transaction: the source met the
/// constraint change by change, a batch merged per key would not (its first upsert takes a
/// value another row still holds). The refused batch is replayed in source order and the
/// changefeed runs on, with the target identical.
#[test]
fn rows_trading_a_unique_value_replay_in_source_order() {
    let pair = Pair::start();
    pair.expect_refused_batches();
    pair.source.psql(
        "shop",
        "CREATE TABLE sw (id int PRIMARY KEY, u int NOT NULL UNIQUE, note text);
         INSERT INTO sw SELECT g, g * 10, 'n' FROM generate_series(1, 5) g;",
    );
    pair.create("shop", &["public.sw"]);
    pair.wait_synced("shop", MINUTE);
    // Ferry created the table, so it has the source's UNIQUE constraint.
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.sw'::regclass
               AND contype = 'u'",
        ),
        "1"
    );
    pair.source.psql(
        "shop",
        "BEGIN;
         UPDATE sw SET u = 999 WHERE id = 1;
         UPDATE sw SET u = 10 WHERE id = 2;
         UPDATE sw SET u = 20 WHERE id = 1;
         COMMIT;
         INSERT INTO sw VALUES (6, 60, 'after');",
    );
    pair.wait_synced("shop", MINUTE);
    pair.assert_same("public.sw");
    let status = status(&pair, "shop");
    assert_eq!(status["state"], json!("running"), "{status}");
    assert!(status["last_error"].is_null(), "{status}");
    // The merged batch was refused and replayed (the path this test is about).
    assert!(
        pair.ferry.log().contains("in source order"),
        "{}",
        pair.ferry.log()
    );
}

/// Rows a batch inserts under new keys are written with a plain INSERT (cheaper than an
/// upsert); when the target already holds one of those keys (here: a row written on the
/// target by hand), the segment is rolled back to its savepoint and upserted, ending as
/// upserting from the start would.
#[test]
fn bulk_inserts_fall_back_to_upserts_when_the_target_holds_a_key() {
    let pair = Pair::start();
    pair.source
        .psql("shop", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.create("cf", &[]);
    pair.wait_synced("cf", MINUTE);
    // `psql -c` runs both inserts in one transaction: one batch of 20,000 inserts. Its
    // first segment (4,096 changes, key 1500) and its second (8,192, key 6000) go to the
    // target while the batch fills, each awaited before the next statement; the rest
    // (key 15000) goes with the commit. Each meets a key the target holds.
    pair.target.psql(
        "analytics",
        "INSERT INTO t VALUES (1500, 'written on the target'), (6000, 'written on the target'),
                              (15000, 'written on the target')",
    );

    pair.source.psql(
        "shop",
        "INSERT INTO t SELECT g, 'from the source ' || g FROM generate_series(1, 3000) g;
         INSERT INTO t SELECT g, 'fresh ' || g FROM generate_series(3001, 20000) g",
    );
    pair.wait_synced("cf", MINUTE);
    pair.compare(&["t"]).assert_identical();
    for (id, value) in [
        (1500, "from the source 1500"),
        (6000, "fresh 6000"),
        (15000, "fresh 15000"),
    ] {
        assert_eq!(
            pair.target
                .psql("analytics", &format!("SELECT v FROM t WHERE id = {id}")),
            value
        );
    }
    // The plain insert ran and was rolled back: the rows it wrote before meeting the key
    // (in the arrays' order) and that key's own new row are dead tuples; an upsert alone
    // leaves one, the version it replaced.
    wait_for("the target's statistics", MINUTE, || {
        let dead: i64 = pair
            .target
            .psql(
                "analytics",
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 't'",
            )
            .parse()
            .unwrap();
        dead >= 2
    });
}
