//! What the stream sink tests share: a PostgreSQL source (database `shop`) and a Ferry
//! server; creating a changefeed by the API or the CLI and waiting on it; the tables and
//! changes of the every-op test; and the `kill -9` load whose events a consumer must rebuild
//! into the source's rows.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry_testkit::{FerryServer, PgCluster};
use serde_json::{json, Value};

use super::events::{Rebuilt, ITEMS_SELECT, PGBENCH};

/// `items` (every type the events encode), keyless `notes` with REPLICA IDENTITY FULL, and
/// `scratch` (truncated mid-transaction by [`CHANGES`]).
pub const TABLES: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags int[],
  doc jsonb, data bytea, at timestamptz, day date, ts timestamp, ok boolean);
CREATE TABLE notes (body text, n int);
ALTER TABLE notes REPLICA IDENTITY FULL;
CREATE TABLE scratch (id int PRIMARY KEY);
INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY[g, NULL, 3],
  jsonb_build_object('g', g), '\\x00ff'::bytea, '2024-02-29 13:05:00+02',
  DATE '2024-02-29' + g, TIMESTAMP '1999-12-31 23:59:59.5' + g * interval '1 hour', g % 2 = 0
  FROM generate_series(1, 500) g;
INSERT INTO notes VALUES ('a', 1), ('a', 1), ('b', 2);
INSERT INTO scratch SELECT generate_series(1, 10);";

/// Every op on [`TABLES`]: an insert, updates, a key change, deletes (one of two identical
/// keyless rows), and a TRUNCATE between inserts in one transaction.
pub const CHANGES: &str = "
INSERT INTO items (id, name, price) VALUES (1001, 'new', 9.99);
UPDATE items SET name = 'renamed', price = price + 1 WHERE id <= 20;
UPDATE items SET id = 2000 WHERE id = 21;
DELETE FROM items WHERE id BETWEEN 30 AND 39;
DELETE FROM notes WHERE ctid IN (SELECT ctid FROM notes WHERE body = 'a' LIMIT 1);
UPDATE notes SET n = 3 WHERE body = 'b';
BEGIN; INSERT INTO scratch VALUES (11); TRUNCATE scratch; INSERT INTO scratch VALUES (12); COMMIT;";

/// A source cluster with database `shop` and a Ferry server.
pub struct StreamSetup {
    pub source: PgCluster,
    pub ferry: FerryServer,
}

impl StreamSetup {
    pub fn start() -> StreamSetup {
        let source = PgCluster::start();
        source.create_database("shop");
        StreamSetup {
            source,
            ferry: FerryServer::start(Path::new(env!("CARGO_BIN_EXE_ferry"))),
        }
    }

    /// `POST /changefeeds` from `shop`; asserts 201.
    pub fn create(&self, id: &str, tables: &[&str], sink_uri: &str) {
        let (code, body) = self.ferry.post(
            "/api/v2/changefeeds",
            &json!({"id": id, "source_uri": self.source.uri("shop"),
                    "sink_uri": sink_uri, "tables": tables}),
        );
        assert_eq!(code, 201, "create failed: {body}\n{}", self.ferry.log());
    }

    /// `ferry changefeed create` from `shop`; asserts it succeeds.
    pub fn create_with_cli(&self, id: &str, tables: &[&str], sink_uri: &str) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .args(["changefeed", "create", "--id", id, "--source-uri"])
            .arg(self.source.uri("shop"))
            .args(["--sink-uri", sink_uri]);
        for table in tables {
            command.args(["--tables", table]);
        }
        let out = command
            .env("FERRY_SERVER", self.ferry.url())
            .env_remove("FERRY_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// `GET /changefeeds/{id}/status`.
    pub fn status(&self, id: &str) -> Value {
        self.ferry
            .get(&format!("/api/v2/changefeeds/{id}/status"))
            .1
    }

    /// Waits until `synced` is true; panics with the status and the log after two
    /// minutes, or at once when the changefeed failed.
    pub fn wait_synced(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, body) = self.ferry.get(&format!("/api/v2/changefeeds/{id}/synced"));
            if code == 200 && body["synced"] == json!(true) {
                return;
            }
            let status = self.status(id);
            assert!(
                Instant::now() < deadline && status["state"] != "failed",
                "not synced: {body}\nstatus: {status}\n{}",
                self.ferry.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the state is `state`; returns the status.
    pub fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(id);
            if status["state"] == state {
                return status;
            }
            assert!(Instant::now() < deadline, "not {state}: {status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// pgbench (scale 1, two clients for `seconds`) and a churn that deletes, updates and
    /// inserts `pgbench_churn` rows by key, while changefeed `bench` is created into
    /// `sink_uri` and the server is killed with -9 after each of `kills` (milliseconds;
    /// the first usually lands in the snapshot); returns once `bench` is synced.
    pub fn load_with_kills(&mut self, sink_uri: &str, seconds: u32, kills: &[u64]) {
        let init = self.source.pgbench("shop", &["-i", "-q", "-s", "1"]);
        assert!(init.status.success(), "{init:?}");
        // pgbench never deletes: the churn does, by key.
        self.source.psql(
            "shop",
            "CREATE TABLE pgbench_churn (id int PRIMARY KEY, v int);
             INSERT INTO pgbench_churn SELECT g, 0 FROM generate_series(1, 1000) g;",
        );
        let stop = AtomicBool::new(false);
        let seconds = seconds.to_string();
        std::thread::scope(|s| {
            let source = &self.source;
            let load =
                s.spawn(|| source.pgbench("shop", &["-n", "-c", "2", "-j", "2", "-T", &seconds]));
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
            let (code, body) = self.ferry.post(
                "/api/v2/changefeeds",
                &json!({"id": "bench", "source_uri": self.source.uri("shop"),
                        "sink_uri": sink_uri, "tables": ["public.pgbench_*"]}),
            );
            assert_eq!(code, 201, "create failed: {body}");
            for &delay_ms in kills {
                std::thread::sleep(Duration::from_millis(delay_ms));
                self.ferry.kill9();
                std::thread::sleep(Duration::from_millis(200));
                self.ferry.restart();
            }
            let out = load.join().unwrap();
            assert!(out.status.success(), "pgbench: {out:?}");
            stop.store(true, Ordering::Relaxed);
            assert!(churn.join().unwrap() > 20, "the churn ran");
        });
        self.wait_synced("bench");
    }

    /// Asserts what a consumer rebuilt from [`CHANGES`] on [`TABLES`] is the source's.
    pub fn assert_every_op_rebuilt(&self, rebuilt: &Rebuilt) {
        rebuilt.assert_table(&self.source, "items", &["id"], ITEMS_SELECT);
        rebuilt.assert_table(&self.source, "notes", &[], "'body', body, 'n', n");
        rebuilt.assert_table(&self.source, "scratch", &["id"], "'id', id");
        for op in ["r", "c", "u", "d", "t"] {
            assert!(
                rebuilt.ops.contains_key(op),
                "no {op} event: {:?}",
                rebuilt.ops
            );
        }
        assert_eq!(rebuilt.gaps(), 0);
    }

    /// Asserts what a consumer rebuilt from [`StreamSetup::load_with_kills`] is the
    /// source's, with deletes seen and no event lost.
    pub fn assert_load_rebuilt(&self, rebuilt: &Rebuilt, what: &str) {
        eprintln!(
            "{what}: {} events read, {} duplicates dropped, {} gaps, ops {:?}",
            rebuilt.events,
            rebuilt.duplicates,
            rebuilt.gaps(),
            rebuilt.ops
        );
        for (table, key, select) in PGBENCH {
            rebuilt.assert_table(&self.source, table, key, select);
        }
        assert_eq!(rebuilt.gaps(), 0, "an event was lost");
        assert!(rebuilt.ops.contains_key("d"), "{:?}", rebuilt.ops);
    }
}

/// The keys of [`TABLES`] by `schema.table` (none: keyless).
pub fn every_op_keys() -> HashMap<&'static str, &'static [&'static str]> {
    HashMap::from([
        ("public.items", &["id"][..]),
        ("public.scratch", &["id"][..]),
    ])
}

/// The keys of pgbench's tables and the churn by `schema.table` (none: keyless).
pub fn pgbench_keys() -> HashMap<&'static str, &'static [&'static str]> {
    HashMap::from([
        ("public.pgbench_churn", &["id"][..]),
        ("public.pgbench_accounts", &["aid"][..]),
        ("public.pgbench_branches", &["bid"][..]),
        ("public.pgbench_tellers", &["tid"][..]),
        ("public.pgbench_history", &[][..]),
    ])
}
