//! MariaDB → PostgreSQL with the changefeed behind its source's DDL: paused (and in a second
//! round with Ferry stopped) while a column is added, used and dropped, ENUM labels are
//! reordered, types change (INT → BIGINT, VARCHAR(10) → VARCHAR(50), INT → VARCHAR) and a
//! column is added for good. On resume every row decodes with the shape in force at its
//! position (its TABLE_MAP event), never the catalog's current one: the target ends equal to
//! the source, and a trigger on the target shows that the rows written while the dropped
//! column existed arrived with its values. A table renamed (twice) while paused keeps the
//! rows written under each of its names. A table dropped while paused keeps its last
//! changes; one dropped and created again is copied anew; and while streaming, a rename the
//! DDL reader does not recognize is followed and a re-created table copied again. A swap
//! made while paused (`RENAME TABLE a TO a_old, a_new TO a`) is followed when the rules
//! select every name, and stops the changefeed when they exclude `a_new`.

use std::time::{Duration, Instant};

use serde_json::json;

#[path = "mariadb_behind/setup.rs"]
mod setup;

use setup::{Setup, MINUTE};

#[test]
fn rows_written_while_behind_decode_with_the_shape_at_their_position() {
    let mut setup = Setup::start();
    setup.source.sql(
        "CREATE TABLE shop.items (
             id int PRIMARY KEY,
             qty int NOT NULL,
             note varchar(10),
             size enum('s','m','l'),
             code int
         );
         INSERT INTO shop.items VALUES (1, 1, 'one', 's', 10), (2, 2, 'two', 'm', 20),
                                       (3, 3, 'three', 'l', 30);",
    );
    let (code, body) = setup.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "items",
            "source_uri": setup.source.uri("shop"),
            "sink_uri": setup.target.uri("analytics"),
            "tables": ["shop.items"],
        }),
    );
    assert_eq!(code, 201, "{body}");
    setup.wait_synced();
    // Every row the sink writes, as the target table had it then.
    setup.target.psql(
        "analytics",
        "CREATE TABLE public.seen (id bigint, row jsonb);
         CREATE FUNCTION public.remember() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO public.seen VALUES (NEW.id, to_jsonb(NEW)); RETURN NEW; END $$;
         CREATE TRIGGER remember AFTER INSERT OR UPDATE ON shop.items
             FOR EACH ROW EXECUTE FUNCTION public.remember();",
    );

    // Paused: the stream stops reading the binlog.
    setup.pause();
    setup.source.sql(
        "SET NAMES utf8mb4;
         ALTER TABLE shop.items ADD COLUMN tmp int NULL;
         INSERT INTO shop.items (id, qty, note, size, code, tmp)
             VALUES (10, 10, 'ten', 'l', 100, 1000);
         UPDATE shop.items SET tmp = 1001 WHERE id = 1;
         ALTER TABLE shop.items DROP COLUMN tmp;
         INSERT INTO shop.items (id, qty, note, size, code) VALUES (11, 11, 'eleven', 'm', 110);
         ALTER TABLE shop.items MODIFY size enum('l','m','s','xl');
         INSERT INTO shop.items VALUES (12, 12, 'twelve', 'xl', 120);
         ALTER TABLE shop.items MODIFY qty bigint NOT NULL, MODIFY note varchar(50),
                                MODIFY code varchar(20);
         INSERT INTO shop.items VALUES (13, 5000000000, 'longer than ten characters', 's', 'A-13');
         UPDATE shop.items SET code = CONCAT('C', code) WHERE id = 2;
         ALTER TABLE shop.items ADD COLUMN kept varchar(5) CHARACTER SET latin1;
         INSERT INTO shop.items VALUES (14, 14, 'fourteen', 'm', 'B', 'café');",
    );
    setup.act("resume");
    setup.wait_synced();
    setup.assert_items_same(&["id", "qty", "note", "size", "code", "kept"]);
    assert_eq!(
        setup.seen("tmp"),
        "1|1001\n10|1000",
        "{}",
        setup.ferry.log()
    );
    assert_eq!(setup.status()["state"], json!("running"));
    // The column type that changed for good changed on the target too.
    let types = setup.target.psql(
        "analytics",
        "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
         FROM information_schema.columns
         WHERE table_schema = 'shop' AND table_name = 'items' AND column_name <> 'tmp'",
    );
    assert_eq!(
        types,
        "id integer, qty bigint, note text, size text, code text, kept text"
    );

    // Ferry stopped: a column added, used and dropped, of a type the table never had.
    setup.ferry.stop();
    setup.source.sql(
        "ALTER TABLE shop.items ADD COLUMN tmp2 decimal(8,2) unsigned NULL AFTER qty;
         INSERT INTO shop.items (id, qty, note, size, code, tmp2)
             VALUES (20, 20, 'twenty', 'l', 'D', 12.5);
         UPDATE shop.items SET tmp2 = 0.25, qty = qty + 1 WHERE id = 3;
         ALTER TABLE shop.items DROP COLUMN tmp2;
         UPDATE shop.items SET qty = qty + 1 WHERE id = 20;",
    );
    setup.ferry.restart();
    setup.wait_synced();
    setup.assert_items_same(&["id", "qty", "note", "size", "code", "kept"]);
    assert_eq!(setup.seen("tmp2"), "3|0.25\n20|12.50");
    assert_eq!(setup.status()["state"], json!("running"));
}

/// Renamed twice while paused, the second time by a statement the stream's DDL reader does
/// not recognize (inside an executable comment): rows keep going to the table under each of
/// its names, and the target ends with the last.
#[test]
fn a_table_renamed_while_behind_keeps_the_rows_written_under_its_old_name() {
    let setup = Setup::start();
    setup.source.sql(
        "CREATE TABLE shop.items (id int PRIMARY KEY, v int);
         INSERT INTO shop.items VALUES (1, 1), (2, 2);",
    );
    let (code, body) = setup.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "items",
            "source_uri": setup.source.uri("shop"),
            "sink_uri": setup.target.uri("analytics"),
            "tables": ["shop.*"],
        }),
    );
    assert_eq!(code, 201, "{body}");
    setup.wait_synced();
    setup.pause();
    setup.source.sql(
        "INSERT INTO shop.items VALUES (3, 3);
         UPDATE shop.items SET v = 10 WHERE id = 1;
         RENAME TABLE shop.items TO shop.goods;
         INSERT INTO shop.goods VALUES (4, 4);
         ALTER TABLE shop.goods ADD COLUMN w int;
         INSERT INTO shop.goods VALUES (5, 5, 5);
         /*!RENAME TABLE shop.goods TO shop.wares*/;
         INSERT INTO shop.wares VALUES (6, 6, 6);",
    );
    setup.act("resume");
    setup.wait_synced();
    assert_eq!(
        setup.target.psql(
            "analytics",
            "SELECT string_agg(concat_ws('|', id, v, w), ',' ORDER BY id) FROM shop.wares"
        ),
        "1|10,2|2,3|3,4|4,5|5|5,6|6|6",
        "{}",
        setup.ferry.log()
    );
    assert_eq!(
        setup.target.psql(
            "analytics",
            "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'shop'"
        ),
        "wares"
    );
}

/// Paused: a table gets rows (one with a JSON value) and is dropped; another is dropped and
/// created again with other rows. On resume the first keeps every change made before its
/// drop, the second holds the new table's rows only, and the status says what happened.
#[test]
fn a_table_dropped_while_behind_keeps_its_last_changes() {
    let setup = Setup::start();
    setup.source.sql(
        "CREATE TABLE shop.gone (id int PRIMARY KEY, v varchar(20), j JSON);
         CREATE TABLE shop.again (id int PRIMARY KEY, v varchar(20));
         CREATE TABLE shop.kept (id int PRIMARY KEY, v varchar(20));
         INSERT INTO shop.gone VALUES (1, 'copied', NULL);
         INSERT INTO shop.again VALUES (1, 'old'), (2, 'old');",
    );
    setup.create();
    setup.pause();
    setup.source.sql(
        r#"INSERT INTO shop.gone VALUES (2, 'last', '{"a": [1, 2]}'), (3, 'words', NULL);
           UPDATE shop.gone SET v = 'updated' WHERE id = 1;
           DROP TABLE shop.gone;
           DROP TABLE shop.again;
           CREATE TABLE shop.again (id int PRIMARY KEY, v varchar(20));
           INSERT INTO shop.again VALUES (7, 'new');
           INSERT INTO shop.kept VALUES (1, 'after');"#,
    );
    setup.act("resume");
    setup.wait_synced();
    assert_eq!(
        setup.target.psql(
            "analytics",
            "SELECT string_agg(concat_ws('|', id, v, j), ',' ORDER BY id) FROM shop.gone"
        ),
        r#"1|updated,2|last|{"a": [1, 2]},3|words"#,
        "{}",
        setup.ferry.log()
    );
    let (source, target) = setup.rows("shop.again");
    assert_eq!(source, "7|new");
    assert_eq!(target, source, "{}", setup.ferry.log());
    let (source, target) = setup.rows("shop.kept");
    assert_eq!(target, source);
    setup.assert_warned("table shop.gone was dropped on the source");
    setup.assert_warned("table shop.again was dropped and created again on the source");
    assert_eq!(setup.status()["state"], json!("running"));

    // The dropped table stays claimed while its last changes may still be unwritten, and is
    // released (another changefeed may claim it) at the first start past its drop.
    let owner = || {
        setup.target.psql(
            "analytics",
            "SELECT changefeed FROM _ferry.table_owners WHERE table_name = 'gone'",
        )
    };
    assert_eq!(owner(), "default/items");
    setup
        .source
        .sql("INSERT INTO shop.kept VALUES (2, 'later');");
    setup.wait_synced();
    setup.pause();
    setup.act("resume");
    setup.wait_synced();
    ferry_testkit::wait_for("shop.gone released", Duration::from_secs(60), || {
        owner().is_empty()
    });
}

/// Streaming: a rename inside an executable comment (which the DDL reader skips) is
/// followed at the table's next rows; a table dropped and created again is copied anew
/// (its old rows leave the target); a dropped table is reported.
#[test]
fn while_streaming_renames_and_drops_are_followed() {
    let setup = Setup::start();
    setup.source.sql(
        "CREATE TABLE shop.items (id int PRIMARY KEY, v int);
         CREATE TABLE shop.again (id int PRIMARY KEY, v int);
         CREATE TABLE shop.gone (id int PRIMARY KEY, v int);
         INSERT INTO shop.items VALUES (1, 1);
         INSERT INTO shop.again VALUES (1, 1), (2, 2);
         INSERT INTO shop.gone VALUES (1, 1);",
    );
    setup.create();
    setup.source.sql(
        "/*!RENAME TABLE shop.items TO shop.goods*/;
         INSERT INTO shop.goods VALUES (2, 2);
         UPDATE shop.goods SET v = 10 WHERE id = 1;",
    );
    setup.wait_synced();
    let (source, target) = setup.rows("shop.goods");
    assert_eq!(source, "1|10\n2|2");
    assert_eq!(target, source, "{}", setup.ferry.log());

    setup.source.sql(
        "INSERT INTO shop.gone VALUES (2, 2);
         DROP TABLE shop.gone;
         DROP TABLE shop.again;
         CREATE TABLE shop.again (id int PRIMARY KEY, v int);
         INSERT INTO shop.again VALUES (5, 5);",
    );
    // Copied again when the stream reaches the CREATE.
    let deadline = Instant::now() + MINUTE;
    while setup.rows("shop.again").1 != "5|5" {
        assert!(Instant::now() < deadline, "{}", setup.ferry.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    setup.source.sql("INSERT INTO shop.again VALUES (6, 6)");
    setup.wait_synced();
    let (source, target) = setup.rows("shop.again");
    assert_eq!(target, source, "{}", setup.ferry.log());
    let gone = setup.target.psql(
        "analytics",
        "SELECT string_agg(concat_ws('|', id, v), ',' ORDER BY id) FROM shop.gone",
    );
    assert_eq!(gone, "1|1,2|2");
    setup.assert_warned("table shop.gone was dropped on the source");
    setup.assert_warned("table shop.again was dropped and created again on the source");
    assert_eq!(setup.status()["state"], json!("running"));

    // A rename under ANSI_QUOTES is read with the session's sql_mode, which the binlog
    // keeps with it: recognized, not left to the InnoDB-id net.
    setup.source.sql(
        r#"SET SESSION sql_mode = 'ANSI_QUOTES';
           RENAME TABLE "shop"."goods" TO "shop"."wares";
           SET SESSION sql_mode = DEFAULT;
           INSERT INTO shop.wares VALUES (3, 3);"#,
    );
    setup.wait_synced();
    let (source, target) = setup.rows("shop.wares");
    assert_eq!(source, "1|10\n2|2\n3|3");
    assert_eq!(target, source, "{}", setup.ferry.log());
    let log = setup.ferry.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("did not recognize") && l.contains("to=shop.wares")),
        "{log}"
    );
}

/// A changefeed that copies nothing (`snapshot: never`) cannot replace a target table's rows
/// when its source table is dropped and created again: it stops and names the table, rather
/// than mix the new table's rows into the old one's (or restart forever).
#[test]
fn a_table_created_again_stops_a_changefeed_that_copies_nothing() {
    let setup = Setup::start();
    setup
        .source
        .sql("CREATE TABLE shop.again (id int PRIMARY KEY, v varchar(20));");
    setup.create_with(json!({"snapshot": "never"}));
    setup.source.sql(
        "INSERT INTO shop.again VALUES (1, 'old');
         DROP TABLE shop.again;
         CREATE TABLE shop.again (id int PRIMARY KEY, v varchar(20));
         INSERT INTO shop.again VALUES (7, 'new');",
    );
    setup.wait_state("failed");
    let error = setup.status()["last_error"].to_string();
    assert!(
        error.contains("shop.again was dropped and created again")
            && error.contains("snapshot: never"),
        "{error}"
    );
    assert_eq!(
        setup.target.psql(
            "analytics",
            "SELECT string_agg(id || '|' || v, ',') FROM shop.again"
        ),
        "1|old"
    );
}

/// The stream reads a table's `DROP`, and the checkpoint passes it; then, the changefeed
/// paused, the table is created again with other rows. On resume the table is copied anew:
/// its old rows leave the target. The same after a `DROP DATABASE` with Ferry stopped.
#[test]
fn a_table_dropped_before_a_pause_and_created_during_it_is_copied_again() {
    let mut setup = Setup::start();
    setup.source.sql(
        "CREATE TABLE shop.again (id int PRIMARY KEY, v varchar(20));
         CREATE TABLE shop.other (id int PRIMARY KEY, v varchar(20));
         INSERT INTO shop.again VALUES (1, 'old'), (2, 'old');
         INSERT INTO shop.other VALUES (1, 'old');",
    );
    setup.create();
    // A change after the drop: the checkpoint passes it.
    setup
        .source
        .sql("DROP TABLE shop.again; INSERT INTO shop.other VALUES (2, 'after');");
    setup.wait_synced();
    setup.assert_warned("table shop.again was dropped on the source");
    setup.pause();
    setup.source.sql(
        "CREATE TABLE shop.again (id int PRIMARY KEY, v varchar(20));
         INSERT INTO shop.again VALUES (7, 'new');",
    );
    setup.act("resume");
    setup.wait_synced();
    let (source, target) = setup.rows("shop.again");
    assert_eq!(source, "7|new");
    assert_eq!(target, source, "{}", setup.ferry.log());

    // The whole database, and Ferry stopped rather than paused.
    setup.source.sql("DROP DATABASE shop;");
    ferry_testkit::wait_for("the drop read", MINUTE, || {
        setup.status()["warnings"]
            .to_string()
            .contains("table shop.other was dropped on the source")
    });
    setup.ferry.stop();
    setup.source.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.other (id int PRIMARY KEY, v varchar(20));
         INSERT INTO shop.other VALUES (9, 'new');",
    );
    setup.ferry.restart();
    setup.wait_synced();
    let (source, target) = setup.rows("shop.other");
    assert_eq!(source, "9|new");
    assert_eq!(target, source, "{}", setup.ferry.log());
    // Copied once: a later start finds nothing more to copy again.
    setup.pause();
    setup.act("resume");
    setup.wait_synced();
    assert_eq!(setup.rows("shop.other").1, "9|new");
    assert_eq!(setup.status()["state"], json!("running"));
}

/// A table renamed and then dropped (an online schema change's cut-over: `RENAME a TO t;
/// DROP TABLE t`) and created again while paused is copied anew; a changefeed that copies
/// nothing stops at the start instead, naming the table.
#[test]
fn a_table_renamed_then_dropped_and_created_while_paused_is_copied_again() {
    for copies in [true, false] {
        let setup = Setup::start();
        setup.source.sql(
            "CREATE TABLE shop.a (id int PRIMARY KEY, v varchar(20));
             CREATE TABLE shop.other (id int PRIMARY KEY, v varchar(20));
             INSERT INTO shop.a VALUES (1, 'old'), (2, 'old');",
        );
        let snapshot = if copies { "initial" } else { "never" };
        setup.create_with(json!({ "snapshot": snapshot }));
        setup.source.sql(
            "RENAME TABLE shop.a TO shop.t; DROP TABLE shop.t;
             INSERT INTO shop.other VALUES (1, 'after');",
        );
        setup.wait_synced();
        setup.assert_warned("table shop.t was dropped on the source");
        setup.pause();
        setup.source.sql(
            "CREATE TABLE shop.t (id int PRIMARY KEY, v varchar(20));
             INSERT INTO shop.t VALUES (7, 'new');",
        );
        setup.act("resume");
        if copies {
            setup.wait_synced();
            let (source, target) = setup.rows("shop.t");
            assert_eq!(source, "7|new");
            assert_eq!(target, source, "{}", setup.ferry.log());
        } else {
            setup.wait_state("failed");
            let error = setup.status()["last_error"].to_string();
            assert!(
                error.contains("shop.t was dropped and created again"),
                "{error}"
            );
            // Nothing of the new table was written over the old one's rows.
            assert_eq!(setup.rows("shop.t").1, "");
        }
    }
}

/// The stream reads a table's `DROP` and the changefeed is paused before the checkpoint
/// passes it; while paused, another table is renamed to the dropped one's name. On resume
/// the table is copied anew, and the stream, reading the `DROP` and the `RENAME` again,
/// keeps writing its changes (it takes the rename for the table created again).
#[test]
fn a_table_renamed_into_a_dropped_name_keeps_receiving_changes() {
    let setup = Setup::start();
    setup.source.sql(
        "CREATE TABLE shop.a (id int PRIMARY KEY, v varchar(20));
         CREATE TABLE shop.other (id int PRIMARY KEY, v varchar(20));
         INSERT INTO shop.a VALUES (1, 'old'), (2, 'old');",
    );
    // shop.other's copy keeps the stream's start at the checkpoint, before the DROP.
    setup.create();
    setup.source.sql("DROP TABLE shop.a;");
    ferry_testkit::wait_for("the drop read", MINUTE, || {
        setup.status()["warnings"]
            .to_string()
            .contains("table shop.a was dropped on the source")
    });
    setup.pause();
    setup.source.sql(
        "CREATE TABLE shop.x (id int PRIMARY KEY, v varchar(20));
         INSERT INTO shop.x VALUES (7, 'new');
         RENAME TABLE shop.x TO shop.a;",
    );
    setup.act("resume");
    setup.wait_synced();
    setup.source.sql("INSERT INTO shop.a VALUES (8, 'later');");
    setup.wait_synced();
    let (source, target) = setup.rows("shop.a");
    assert_eq!(source, "7|new\n8|later");

    assert_eq!(target, source, "{}", setup.ferry.log());
}

/// The target's tables of `shop` with their rows, `table:id|v;…` per table.
fn swap_contents(setup: &Setup) -> String {
    let names = setup.target.psql(
        "analytics",
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables \
         WHERE schemaname = 'shop'",
    );
    let mut out = Vec::new();
    for table in names.split(',').filter(|t| !t.is_empty()) {
        let rows = setup.target.psql(
            "analytics",
            &format!("SELECT string_agg(id || '|' || v, ';' ORDER BY id) FROM shop.{table}"),
        );
        out.push(format!("{table}:{rows}"));
    }
    out.join("\n")
}

/// A swap while paused, `RENAME TABLE a TO a_old, a_new TO a` with rows before and after,
/// with the rules selecting `tables`, then resumed. Returns the target's tables as they
/// were before the resume.
fn swap_while_paused(tables: &[&str]) -> (Setup, String) {
    let setup = Setup::start();
    setup.source.sql(
        "CREATE TABLE shop.a (id int PRIMARY KEY, v varchar(20));
         CREATE TABLE shop.a_new (id int PRIMARY KEY, v varchar(20));
         INSERT INTO shop.a VALUES (1, 'old'), (2, 'old'), (3, 'old');
         INSERT INTO shop.a_new VALUES (1, 'new'), (2, 'new');",
    );
    let (code, body) = setup.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "items",
            "source_uri": setup.source.uri("shop"),
            "sink_uri": setup.target.uri("analytics"),
            "tables": tables,
        }),
    );
    assert_eq!(code, 201, "{body}");
    setup.wait_synced();
    setup.pause();
    setup.source.sql(
        "INSERT INTO shop.a VALUES (4, 'old, paused');
         INSERT INTO shop.a_new VALUES (3, 'new, paused');
         RENAME TABLE shop.a TO shop.a_old, shop.a_new TO shop.a;
         INSERT INTO shop.a VALUES (10, 'new, swapped');
         INSERT INTO shop.a_old VALUES (5, 'old, swapped');",
    );
    let before = swap_contents(&setup);
    setup.act("resume");
    (setup, before)
}

/// Every name selected: the stream reads the `RENAME` at its position and the target
/// follows both renames in order, each table with its rows.
#[test]
fn a_swap_while_paused_is_followed() {
    let (setup, _) = swap_while_paused(&["shop.*"]);
    setup.wait_synced();
    assert_eq!(
        swap_contents(&setup),
        "a:1|new;2|new;3|new, paused;10|new, swapped\n\
         a_old:1|old;2|old;3|old;4|old, paused;5|old, swapped",
        "{}",
        setup.ferry.log()
    );
    assert_eq!(setup.status()["state"], "running");
}

/// `a_new` excluded by the rules: the new `a` has the name the target keeps for the old
/// table until the stream reaches the `RENAME` (before, its rows went into the old table's
/// target table and the old table's later rows were lost, the changefeed running on). The
/// changefeed stops at the start, naming both tables, with nothing written.
#[test]
fn a_swap_with_an_unreplicated_table_while_paused_stops() {
    let (setup, before) = swap_while_paused(&["shop.a*", "!shop.a_new"]);
    assert_eq!(before, "a:1|old;2|old;3|old");
    setup.wait_state("failed");
    let error = setup.status()["last_error"].to_string();
    eprintln!("MariaDB swap while paused, a_new excluded: stopped: {error}");
    assert!(
        error.contains("shop.a was renamed to shop.a_old")
            && error.contains("another table took the name shop.a"),
        "{error}"
    );
    assert_eq!(swap_contents(&setup), before, "{}", setup.ferry.log());
}
