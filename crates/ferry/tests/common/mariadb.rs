//! PostgreSQL → MariaDB fixtures: a source cluster (database `shop`), a throwaway MariaDB
//! target, a Ferry server, and normalized row dumps of both sides.

use std::time::{Duration, Instant};

use ferry_testkit::{FerryServer, MariaDb, PgCluster};
use serde_json::{json, Value};

/// A PostgreSQL source, a MariaDB target and a server.
pub struct ToMariaDb {
    pub source: PgCluster,
    pub target: MariaDb,
    pub ferry: FerryServer,
    /// Whether the test makes the target refuse a batch (see
    /// [`ToMariaDb::expect_refused_batches`]).
    refusals_expected: std::sync::atomic::AtomicBool,
}

impl ToMariaDb {
    /// Starts both databases (in parallel) and a server.
    pub fn start() -> ToMariaDb {
        let (source, target) = std::thread::scope(|s| {
            let a = s.spawn(PgCluster::start);
            let b = s.spawn(MariaDb::start);
            (a.join().unwrap(), b.join().unwrap())
        });
        source.create_database("shop");
        let ferry = FerryServer::start(std::path::Path::new(env!("CARGO_BIN_EXE_ferry")));
        ToMariaDb {
            source,
            target,
            ferry,
            refusals_expected: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Lets [`ToMariaDb::assert_same`] pass after the target refused a batch: for the tests
    /// of what happens then.
    pub fn expect_refused_batches(&self) {
        self.refusals_expected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The sink URI: the server, no database (tables land in the database named by their
    /// schema).
    pub fn sink_uri(&self) -> String {
        self.target.uri("")
    }

    /// `POST /changefeeds` from `shop` to the MariaDB target.
    pub fn create(&self, id: &str, tables: &[&str], options: Value) -> (u16, Value) {
        self.ferry.post(
            "/api/v2/changefeeds",
            &json!({
                "id": id,
                "source_uri": self.source.uri("shop"),
                "sink_uri": self.sink_uri(),
                "tables": tables,
                "options": options,
            }),
        )
    }

    /// Runs the CLI against this server; asserts it succeeds and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env("FERRY_SERVER", self.ferry.url())
            .env_remove("FERRY_NAMESPACE")
            .output()
            .expect("run ferry");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `GET /changefeeds/{id}/status`.
    pub fn status(&self, id: &str) -> Value {
        self.ferry
            .get(&format!("/api/v2/changefeeds/{id}/status"))
            .1
    }

    /// Waits until `synced` is true; panics with the status and log after `timeout`.
    pub fn wait_synced(&self, id: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, body) = self.ferry.get(&format!("/api/v2/changefeeds/{id}/synced"));
            if code == 200 && body["synced"] == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not synced after {timeout:?}: {body}\nstatus: {}\n{}",
                self.status(id),
                self.ferry.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the state is `state`; returns the status.
    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id);
            if status["state"] == json!(state) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "state not {state} after {timeout:?}: {status}\n{}",
                self.ferry.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts the target refused no batch, unless the test expects it
    /// ([`super::assert_no_refused_batch_in`]).
    fn assert_no_refused_batch(&self) {
        if !self
            .refusals_expected
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            super::assert_no_refused_batch_in(&self.ferry);
        }
    }

    /// Asserts that `table` holds the same rows on both sides, each column normalized by
    /// its pair of expressions (PostgreSQL's, MariaDB's), rows sorted, NULL spelled out; and
    /// that the target refused no batch ([`ToMariaDb::assert_no_refused_batch`]).
    pub fn assert_same(&self, schema: &str, table: &str, columns: &[(String, String)]) {
        self.assert_no_refused_batch();
        let pg: Vec<String> = columns
            .iter()
            .map(|(pg, _)| format!("coalesce(({pg})::text, 'NULL')"))
            .collect();
        let my: Vec<String> = columns
            .iter()
            .map(|(_, my)| {
                format!("coalesce(convert({my} using utf8mb4) collate utf8mb4_bin, 'NULL')")
            })
            .collect();
        let source = sorted(&self.source.psql(
            "shop",
            &format!(
                "SELECT concat_ws('|', {}) FROM \"{schema}\".\"{table}\"",
                pg.join(", ")
            ),
        ));
        let target = sorted(&self.target.sql(&format!(
            "SET NAMES utf8mb4; SELECT concat_ws('|', {}) FROM `{schema}`.`{table}`",
            my.join(", ")
        )));
        if source != target {
            let counts = |rows: &[String]| {
                let mut counts = std::collections::BTreeMap::new();
                for r in rows {
                    *counts.entry(r.clone()).or_insert(0i64) += 1;
                }
                counts
            };
            let (s, t) = (counts(&source), counts(&target));
            let diff = |a: &std::collections::BTreeMap<String, i64>,
                        b: &std::collections::BTreeMap<String, i64>| {
                a.iter()
                    .filter(|&(r, n)| b.get(r.as_str()).copied() != Some(*n))
                    .map(|(r, n)| format!("{n} × {r}"))
                    .take(5)
                    .collect::<Vec<_>>()
            };
            panic!(
                "{schema}.{table} differs: {} rows on the source, {} on the target\n\
                 source: {:#?}\ntarget: {:#?}",
                source.len(),
                target.len(),
                diff(&s, &t),
                diff(&t, &s)
            );
        }
    }
}

fn sorted(out: &str) -> Vec<String> {
    let mut rows: Vec<String> = out.lines().map(str::to_string).collect();
    rows.sort();
    rows
}

/// An integer column: the same text on both sides.
pub fn same(column: &str) -> (String, String) {
    (format!("\"{column}\""), format!("`{column}`"))
}

/// A text column compared by its UTF-8 bytes in hex (exact whatever it holds). PostgreSQL's
/// side prints it with the type's output function (`format`): a cast to text would drop a
/// `char(n)`'s padding, which the target keeps.
pub fn hex_text(column: &str) -> (String, String) {
    (
        format!(
            "CASE WHEN \"{column}\" IS NOT NULL \
             THEN encode(convert_to(format('%s', \"{column}\"), 'UTF8'), 'hex') END"
        ),
        format!("lower(hex(`{column}`))"),
    )
}

/// A timestamp(tz) column to the microsecond, in UTC.
pub fn micros(column: &str, tz: bool) -> (String, String) {
    let utc = if tz { " AT TIME ZONE 'UTC'" } else { "" };
    (
        format!("to_char(\"{column}\"{utc}, 'YYYY-MM-DD HH24:MI:SS.US')"),
        format!("date_format(`{column}`, '%Y-%m-%d %H:%i:%s.%f')"),
    )
}
