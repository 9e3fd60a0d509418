//! Foreign keys on the target, against real PostgreSQL through the real server: never
//! created with the tables; created on request while the changefeed does not run (refused
//! while it runs), only between replicated tables Ferry created; a changefeed resumed with
//! them on the target streams parent and child changes to identical tables; a finished
//! changefeed creates them by itself.

mod common;

use std::time::Duration;

use common::Pair;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

const SOURCE: &str = "
CREATE TABLE parent (id int PRIMARY KEY, name text);
CREATE TABLE child (
    id int PRIMARY KEY,
    pid int NOT NULL REFERENCES parent ON DELETE CASCADE,
    note text
);
CREATE TABLE ext (id int PRIMARY KEY);
CREATE TABLE uses_ext (id int PRIMARY KEY, eid int REFERENCES ext);
CREATE TABLE mine (id int PRIMARY KEY, pid int CONSTRAINT mine_parent REFERENCES parent);
INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 100) g;
INSERT INTO child SELECT g, 1 + g % 100, 'c' || g FROM generate_series(1, 500) g;
INSERT INTO ext VALUES (1);
INSERT INTO uses_ext VALUES (1, 1);
";

/// The target's foreign keys, `table name definition` a line.
fn target_keys(pair: &Pair) -> String {
    pair.target.psql(
        "analytics",
        "SELECT string_agg(conrelid::regclass || ' ' || conname || ' '
                           || pg_get_constraintdef(oid), E'\\n' ORDER BY conname)
         FROM pg_constraint WHERE contype = 'f'",
    )
}

/// `(table.name, outcome)` of each key in a report.
fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["foreign_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                format!(
                    "{}.{}",
                    k["table"].as_str().unwrap(),
                    k["name"].as_str().unwrap()
                ),
                k["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn foreign_keys_on_request_then_the_stream_meets_them() {
    let pair = Pair::start();
    pair.source.psql("shop", SOURCE);
    // A table the user made: Ferry writes its rows but gives it no constraint.
    pair.target.psql(
        "analytics",
        "CREATE TABLE mine (id int PRIMARY KEY, pid int)",
    );
    pair.create("fk", &["public.*", "!public.ext"]);
    pair.wait_synced("fk", MINUTE);
    assert_eq!(target_keys(&pair), "", "no foreign key while copying");

    let path = "/api/v2/changefeeds/fk/foreign-keys/create";
    let (code, body) = pair.ferry.post(path, &json!({}));
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error_code"], "CHANGEFEED_RUNNING", "{body}");

    pair.act("fk", "pause");
    pair.wait_state("fk", "paused", MINUTE);
    let (code, body) = pair.ferry.post(path, &json!({}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        outcomes(&body),
        [
            ("public.child.child_pid_fkey".into(), "created".into()),
            ("public.mine.mine_parent".into(), "skipped".into()),
            ("public.uses_ext.uses_ext_eid_fkey".into(), "skipped".into()),
        ],
        "{body}"
    );
    let reasons: Vec<&str> = body["foreign_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["reason"].as_str())
        .collect();
    assert!(reasons[0].contains("not created by Ferry"), "{body}");
    assert!(reasons[1].contains("public.ext"), "{body}");
    assert_eq!(
        target_keys(&pair),
        "child child_pid_fkey FOREIGN KEY (pid) REFERENCES parent(id) ON DELETE CASCADE"
    );
    // Asked again: nothing new.
    let (_, again) = pair.ferry.post(path, &json!({}));
    assert_eq!(outcomes(&again)[0].1, "exists", "{again}");

    // Resumed with the key on the target: parents and children written together, children
    // deleted before their parents, parents deleted with cascades, in batches the target
    // must take as the source did.
    pair.act("fk", "resume");
    for round in 0..20 {
        let p = 1000 + round;
        pair.source.psql(
            "shop",
            &format!(
                "BEGIN;
                 INSERT INTO child VALUES ({}, 50, 'child first');
                 INSERT INTO parent VALUES ({p}, 'new');
                 INSERT INTO child VALUES ({p}, {p}, 'new child'), ({}, {p}, 'second');
                 UPDATE child SET pid = {p} WHERE id = {};
                 COMMIT;
                 DELETE FROM child WHERE pid = {};
                 DELETE FROM parent WHERE id = {};
                 BEGIN;
                 DELETE FROM parent WHERE id = {};
                 INSERT INTO parent VALUES ({}, 'again');
                 INSERT INTO child VALUES ({}, {}, 'reborn');
                 COMMIT;",
                p + 7000,
                p + 5000,
                round + 1,
                round + 2,
                round + 2,
                round + 40,
                round + 40,
                p + 9000,
                round + 40,
            ),
        );
    }
    pair.wait_synced("fk", MINUTE);
    assert_eq!(pair.status("fk")["state"], "running");
    // Written in source order from the start, never refused and replayed.
    let log = pair.ferry.log();
    assert!(log.contains("written one by one, in source order"), "{log}");
    common::assert_no_refused_batch_in(&pair.ferry);
    for table in ["public.parent", "public.child", "public.mine"] {
        pair.assert_same(table);
    }
}

#[test]
fn a_finished_changefeed_creates_its_foreign_keys() {
    let pair = Pair::start();
    pair.source.psql("shop", SOURCE);
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "copy",
            "source_uri": pair.source.uri("shop"),
            "sink_uri": pair.target.uri("analytics"),
            "tables": ["public.parent", "public.child"],
            "snapshot_only": true,
        }),
    );
    assert_eq!(code, 201, "{body}");
    pair.wait_state("copy", "finished", MINUTE);
    assert_eq!(
        target_keys(&pair),
        "child child_pid_fkey FOREIGN KEY (pid) REFERENCES parent(id) ON DELETE CASCADE",
        "{}",
        pair.ferry.log()
    );
    // The CLI asks too, and finds it there.
    let stdout = pair.cli(&["changefeed", "create-foreign-keys", "copy"]);
    assert!(
        stdout.contains("public.child.child_pid_fkey → public.parent: exists"),
        "{stdout}"
    );
}
