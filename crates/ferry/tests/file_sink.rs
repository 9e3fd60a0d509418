//! The file sink end to end: PostgreSQL → `file://` through the API, then a consumer that
//! rebuilds every table from the event files (upsert on r/c/u, delete on d, clear on t,
//! repeats dropped by event id) must hold exactly the source's rows, also after `kill -9`s
//! of the server during a load.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::events::{Rebuilt, ITEMS_SELECT, PGBENCH};
use ferry_testkit::{FerryServer, PgCluster};
use serde_json::{json, Value};

/// One source cluster (database `shop`), a server, and the sink's directory.
struct Setup {
    source: PgCluster,
    ferry: FerryServer,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let source = PgCluster::start();
        source.create_database("shop");
        Setup {
            source,
            ferry: FerryServer::start(Path::new(env!("CARGO_BIN_EXE_ferry"))),
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    fn sink_uri(&self, options: &str) -> String {
        format!(
            "file://{}?format=debezium-json{options}",
            self.dir.path().display()
        )
    }

    fn create(&self, id: &str, tables: &[&str], options: &str) {
        let (code, body) = self.ferry.post(
            "/api/v2/changefeeds",
            &json!({"id": id, "source_uri": self.source.uri("shop"),
                    "sink_uri": self.sink_uri(options), "tables": tables}),
        );
        assert_eq!(code, 201, "create failed: {body}\n{}", self.ferry.log());
    }

    fn wait_synced(&self, id: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            let (code, body) = self.ferry.get(&format!("/api/v2/changefeeds/{id}/synced"));
            if code == 200 && body["synced"] == json!(true) {
                return;
            }
            let (_, status) = self.ferry.get(&format!("/api/v2/changefeeds/{id}/status"));
            assert!(
                std::time::Instant::now() < deadline,
                "not synced: {body}\nstatus: {status}\n{}",
                self.ferry.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Reads every event file in name order and applies the events.
fn rebuild(dir: &Path, keys: &HashMap<&str, &[&str]>) -> Rebuilt {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jsonl") && !n.starts_with('.'))
        .collect();
    names.sort();
    let mut out = Rebuilt::default();
    for name in names {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends mid-line"
        );
        for line in text.lines() {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            out.apply(event, keys);
        }
    }
    out
}

#[test]
fn snapshot_and_changes_rebuild_the_source() {
    let setup = Setup::start();
    setup.source.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags int[], \
           doc jsonb, data bytea, at timestamptz, day date, ts timestamp, ok boolean);
         CREATE TABLE notes (body text, n int);
         ALTER TABLE notes REPLICA IDENTITY FULL;
         CREATE TABLE scratch (id int PRIMARY KEY);
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY[g, NULL, 3], \
           jsonb_build_object('g', g), '\\x00ff'::bytea, '2024-02-29 13:05:00+02', \
           DATE '2024-02-29' + g, TIMESTAMP '1999-12-31 23:59:59.5' + g * interval '1 hour', g % 2 = 0 \
           FROM generate_series(1, 500) g;
         INSERT INTO notes VALUES ('a', 1), ('a', 1), ('b', 2);
         INSERT INTO scratch SELECT generate_series(1, 10);",
    );
    setup.create("events", &["public.*"], "&max_file_bytes=20000");
    setup.wait_synced("events");
    setup.source.psql(
        "shop",
        "INSERT INTO items (id, name, price) VALUES (1001, 'new', 9.99);
         UPDATE items SET name = 'renamed', price = price + 1 WHERE id <= 20;
         UPDATE items SET id = 2000 WHERE id = 21;
         DELETE FROM items WHERE id BETWEEN 30 AND 39;
         DELETE FROM notes WHERE ctid IN (SELECT ctid FROM notes WHERE body = 'a' LIMIT 1);
         UPDATE notes SET n = 3 WHERE body = 'b';
         BEGIN; INSERT INTO scratch VALUES (11); TRUNCATE scratch; INSERT INTO scratch VALUES (12); COMMIT;",
    );
    setup.wait_synced("events");

    let keys: HashMap<&str, &[&str]> = HashMap::from([
        ("public.items", &["id"][..]),
        ("public.scratch", &["id"][..]),
    ]);
    let rebuilt = rebuild(setup.dir.path(), &keys);
    rebuilt.assert_table(&setup.source, "items", &["id"], ITEMS_SELECT);
    rebuilt.assert_table(&setup.source, "notes", &[], "'body', body, 'n', n");
    rebuilt.assert_table(&setup.source, "scratch", &["id"], "'id', id");
    for op in ["r", "c", "u", "d", "t"] {
        assert!(
            rebuilt.ops.contains_key(op),
            "no {op} event: {:?}",
            rebuilt.ops
        );
    }
    assert_eq!(rebuilt.duplicates, 0, "a clean run repeats nothing");
    assert_eq!(rebuilt.gaps(), 0);
    let files = std::fs::read_dir(setup.dir.path()).unwrap().count();
    assert!(files > 3, "rotated by size: {files} entries");

    // The envelope's fields, as consumers rely on them.
    let delete = rebuilt
        .lines
        .iter()
        .find(|e| e["op"] == "d" && e["source"]["table"] == "items")
        .unwrap();
    assert!(
        delete["after"].is_null() && delete["before"]["id"].is_i64(),
        "{delete}"
    );
    assert!(
        delete["source"]["lsn"].is_u64() && delete["source"]["txId"].is_u64(),
        "{delete}"
    );
    assert_eq!(delete["source"]["snapshot"], "false");
    assert_eq!(delete["source"]["connector"], "postgresql");
    assert_eq!(delete["source"]["db"], "shop");
    assert!(delete["transaction"]["total_order"].is_u64(), "{delete}");
    let reads: Vec<&Value> = rebuilt.lines.iter().filter(|e| e["op"] == "r").collect();
    assert!(reads.iter().all(|e| e["transaction"].is_null()));
    assert!(reads.iter().any(|e| e["source"]["snapshot"] == "last"));
    let full_delete = rebuilt
        .lines
        .iter()
        .find(|e| e["op"] == "d" && e["source"]["table"] == "notes")
        .unwrap();
    assert_eq!(full_delete["before"], json!({"body": "a", "n": 1}));
    let first = reads
        .iter()
        .find(|e| e["source"]["table"] == "items" && e["after"]["id"] == 2)
        .unwrap();
    assert_eq!(first["after"]["price"], "2.50");
    assert_eq!(first["after"]["tags"], json!([2, null, 3]));
    assert_eq!(first["after"]["data"], "AP8=");
    assert_eq!(first["after"]["at"], "2024-02-29T11:05:00Z");
    assert_eq!(first["after"]["day"], 19784);
    assert_eq!(first["after"]["ok"], true);
    let truncates = rebuilt
        .lines
        .iter()
        .filter(|e| e["op"] == "t" && e["source"]["table"] == "scratch")
        .count();
    assert_eq!(truncates, 1);

    // Another changefeed may not write the same directory.
    let (code, body) = setup.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "second", "source_uri": setup.source.uri("shop"),
                "sink_uri": setup.sink_uri(""), "tables": ["public.*"]}),
    );
    if code == 201 {
        let (_, status) = setup.ferry.get("/api/v2/changefeeds/second/status");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut status = status;
        while status["state"] != "failed" && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            status = setup.ferry.get("/api/v2/changefeeds/second/status").1;
        }
        assert_eq!(status["state"], "failed", "{status}");
        assert!(
            status.to_string().contains("written by changefeed"),
            "{status}"
        );
    } else {
        assert!(body.to_string().contains("written by changefeed"), "{body}");
    }
}

#[test]
fn a_bad_file_uri_is_refused_by_the_api_and_the_cli_accepts_a_good_one() {
    let setup = Setup::start();
    let (code, body) = setup.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "bad", "source_uri": setup.source.uri("shop"),
                "sink_uri": "file:///tmp/x?format=avro", "tables": ["public.*"]}),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("format"), "{body}");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "changefeed",
            "create",
            "--id",
            "via-cli",
            "--source-uri",
            &setup.source.uri("shop"),
            "--sink-uri",
            &setup.sink_uri(""),
            "--tables",
            "public.*",
            "--start=false",
        ])
        .env("FERRY_SERVER", setup.ferry.url())
        .env_remove("FERRY_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (_, shown) = setup.ferry.get("/api/v2/changefeeds/via-cli");
    assert!(
        shown["config"]["sink_uri"]
            .as_str()
            .unwrap()
            .starts_with("file:///"),
        "{shown}"
    );
}

#[test]
fn kill_9_during_a_load_loses_nothing() {
    let mut setup = Setup::start();
    let init = setup.source.pgbench("shop", &["-i", "-q", "-s", "1"]);
    assert!(init.status.success(), "{init:?}");
    // pgbench never deletes: a second load inserts, updates and deletes by key.
    setup.source.psql(
        "shop",
        "CREATE TABLE pgbench_churn (id int PRIMARY KEY, v int);
         INSERT INTO pgbench_churn SELECT g, 0 FROM generate_series(1, 1000) g;",
    );
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let source = &setup.source;
        let load =
            s.spawn(move || source.pgbench("shop", &["-n", "-c", "2", "-j", "2", "-T", "20"]));
        let stop = &stop;
        let churn = s.spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let (m, n) = (round % 7, round % 5);
                source.psql(
                    "shop",
                    &format!(
                        "BEGIN;
                         DELETE FROM pgbench_churn WHERE id % 7 = {m};
                         UPDATE pgbench_churn SET v = v + 1 WHERE id % 5 = {n};
                         INSERT INTO pgbench_churn SELECT g, {round} FROM generate_series(1, 1000) g
                           WHERE g % 7 = {m} ON CONFLICT (id) DO NOTHING;
                         COMMIT;"
                    ),
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            round
        });
        std::thread::sleep(Duration::from_millis(300));
        setup.create("bench", &["public.pgbench_*"], "&max_file_bytes=1000000");
        // The first kill usually lands in the snapshot, the others in the stream.
        for delay_ms in [400, 3000, 4000, 4000] {
            std::thread::sleep(Duration::from_millis(delay_ms));
            setup.ferry.kill9();
            std::thread::sleep(Duration::from_millis(200));
            setup.ferry.restart();
        }
        let out = load.join().unwrap();
        assert!(out.status.success(), "pgbench: {out:?}");
        stop.store(true, Ordering::Relaxed);
        assert!(churn.join().unwrap() > 50, "the churn ran");
    });
    setup.wait_synced("bench");
    let names: Vec<String> = PGBENCH
        .iter()
        .map(|(t, _, _)| format!("public.{t}"))
        .collect();
    let keys: HashMap<&str, &[&str]> = names
        .iter()
        .zip(PGBENCH)
        .map(|(name, (_, key, _))| (name.as_str(), key))
        .collect();
    let rebuilt = rebuild(setup.dir.path(), &keys);
    eprintln!(
        "4 kill -9 under pgbench and a delete churn: {} events read, {} duplicates dropped, {} gaps, ops {:?}",
        rebuilt.events,
        rebuilt.duplicates,
        rebuilt.gaps(),
        rebuilt.ops
    );
    for (table, key, select) in PGBENCH {
        rebuilt.assert_table(&setup.source, table, key, select);
    }
    assert_eq!(rebuilt.gaps(), 0, "an event was lost");
    assert!(rebuilt.ops.contains_key("d"), "{:?}", rebuilt.ops);
    let history = setup
        .source
        .psql("shop", "SELECT count(*) FROM pgbench_history");
    assert!(
        history.parse::<u64>().unwrap() > 100,
        "the load ran: {history}"
    );
}
