//! The file sink end to end: PostgreSQL → `file://` through the API, then a consumer that
//! rebuilds every table from the event files (upsert on r/c/u, delete on d, clear on t,
//! repeats dropped by event id) must hold exactly the source's rows, also after `kill -9`s
//! of the server during a load.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::events::Rebuilt;
use common::stream::{every_op_keys, pgbench_keys, StreamSetup, CHANGES, TABLES};
use serde_json::{json, Value};

/// The shared source and server, and the sink's directory.
struct Setup {
    base: StreamSetup,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        Setup {
            base: StreamSetup::start(),
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
        self.base.create(id, tables, &self.sink_uri(options));
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
    setup.base.source.psql("shop", TABLES);
    setup.create("events", &["public.*"], "&max_file_bytes=20000");
    setup.base.wait_synced("events");
    setup.base.source.psql("shop", CHANGES);
    setup.base.wait_synced("events");

    let rebuilt = rebuild(setup.dir.path(), &every_op_keys());
    setup.base.assert_every_op_rebuilt(&rebuilt);
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
    let (code, body) = setup.base.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "second", "source_uri": setup.base.source.uri("shop"),
                "sink_uri": setup.sink_uri(""), "tables": ["public.*"]}),
    );
    if code == 201 {
        let (_, status) = setup.base.ferry.get("/api/v2/changefeeds/second/status");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut status = status;
        while status["state"] != "failed" && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            status = setup.base.ferry.get("/api/v2/changefeeds/second/status").1;
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
    let (code, body) = setup.base.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "bad", "source_uri": setup.base.source.uri("shop"),
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
            &setup.base.source.uri("shop"),
            "--sink-uri",
            &setup.sink_uri(""),
            "--tables",
            "public.*",
            "--start=false",
        ])
        .env("FERRY_SERVER", setup.base.ferry.url())
        .env_remove("FERRY_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (_, shown) = setup.base.ferry.get("/api/v2/changefeeds/via-cli");
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
    let sink_uri = setup.sink_uri("&max_file_bytes=1000000");
    setup
        .base
        .load_with_kills(&sink_uri, 20, &[400, 3000, 4000, 4000]);
    let rebuilt = rebuild(setup.dir.path(), &pgbench_keys());
    setup
        .base
        .assert_load_rebuilt(&rebuilt, "4 kill -9 under pgbench and a delete churn");
    let history = setup
        .base
        .source
        .psql("shop", "SELECT count(*) FROM pgbench_history");
    assert!(
        history.parse::<u64>().unwrap() > 100,
        "the load ran: {history}"
    );
}
