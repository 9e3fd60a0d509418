//! Shared fixtures of the end-to-end tests: a source and a target cluster, a Ferry server,
//! and row-by-row table comparison.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

pub mod events;
pub mod mariadb;
pub mod stream;
pub mod workloads;

use ferry_testkit::{FerryServer, PgCluster, PgOptions};
use serde_json::{json, Value};

/// A source cluster, a target cluster and a server.
pub struct Pair {
    pub source: PgCluster,
    pub target: PgCluster,
    pub ferry: FerryServer,
    /// Whether the test makes the target refuse a batch (see [`Pair::expect_refused_batches`]).
    refusals_expected: std::sync::atomic::AtomicBool,
}

impl Pair {
    /// Starts both clusters (databases `shop` and `analytics`) and a server.
    pub fn start() -> Pair {
        Pair::start_with(PgOptions::default(), PgOptions::default())
    }

    /// Like [`Pair::start`], with each cluster's options (settings, password).
    pub fn start_with(source: PgOptions, target: PgOptions) -> Pair {
        let (source, target) = std::thread::scope(|s| {
            let a = s.spawn(move || PgCluster::start_with(source));
            let b = s.spawn(move || PgCluster::start_with(target));
            (a.join().unwrap(), b.join().unwrap())
        });
        source.create_database("shop");
        target.create_database("analytics");
        let ferry = FerryServer::start(std::path::Path::new(env!("CARGO_BIN_EXE_ferry")));
        Pair::from_parts(source, target, ferry)
    }

    /// A pair of clusters and a server started by the caller.
    pub fn from_parts(source: PgCluster, target: PgCluster, ferry: FerryServer) -> Pair {
        Pair {
            source,
            target,
            ferry,
            refusals_expected: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Lets [`Pair::assert_same`] pass after the target refused a batch: for the tests of
    /// what happens then.
    pub fn expect_refused_batches(&self) {
        self.refusals_expected
            .store(true, std::sync::atomic::Ordering::Relaxed);
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

    /// Creates changefeed `id` from `shop` to `analytics` with `tables` rules.
    pub fn create(&self, id: &str, tables: &[&str]) -> Value {
        self.create_with(id, tables, json!({}))
    }

    /// [`Pair::create`] with changefeed `options` (`{}`: the defaults).
    pub fn create_with(&self, id: &str, tables: &[&str], options: Value) -> Value {
        let (code, body) = self.ferry.post(
            "/api/v2/changefeeds",
            &json!({
                "id": id,
                "source_uri": self.source.uri("shop"),
                "sink_uri": self.target.uri("analytics"),
                "tables": tables,
                "options": options,
            }),
        );
        assert_eq!(code, 201, "create failed: {body}\n{}", self.ferry.log());
        body
    }

    /// Waits until `synced` is true; panics (with the status and log) after `timeout`.
    pub fn wait_synced(&self, id: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, body) = self.ferry.get(&format!("/api/v2/changefeeds/{id}/synced"));
            if code == 200 && body["synced"] == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let (_, status) = self.ferry.get(&format!("/api/v2/changefeeds/{id}/status"));
                panic!(
                    "not synced after {timeout:?}: {body}\nstatus: {status}\n{}",
                    self.ferry.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET /changefeeds/{id}/status`.
    pub fn status(&self, id: &str) -> Value {
        self.ferry
            .get(&format!("/api/v2/changefeeds/{id}/status"))
            .1
    }

    /// Waits until the changefeed's state is `state`; panics with the status after `timeout`.
    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id);
            if status["state"] == json!(state) {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "state not {state} after {timeout:?}: {status}\n{}",
                    self.ferry.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `POST /changefeeds/{id}/{action}` (pause, resume), asserting success.
    pub fn act(&self, id: &str, action: &str) -> Value {
        let (code, body) = self
            .ferry
            .post(&format!("/api/v2/changefeeds/{id}/{action}"), &json!({}));
        assert_eq!(code, 200, "{action} failed: {body}");
        body
    }

    /// The oracle: `tables` compared row by row (by key; whole rows when keyless).
    pub fn compare(&self, tables: &[&str]) -> ferry_testkit::Comparison {
        ferry_testkit::compare_tables(&self.source, "shop", &self.target, "analytics", tables)
    }

    /// The replication slot of the changefeed (Ferry's only slot on the source).
    pub fn slot_confirmed_flush(&self) -> String {
        self.source.psql(
            "shop",
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name LIKE 'ferry%'",
        )
    }

    /// Asserts the target refused no batch, unless the test expects it
    /// ([`assert_no_refused_batch_in`]).
    fn assert_no_refused_batch(&self) {
        if !self
            .refusals_expected
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            assert_no_refused_batch_in(&self.ferry);
        }
    }

    /// Asserts `table` has the same rows on both sides (sorted COPY text), and that the
    /// target refused no batch ([`Pair::assert_no_refused_batch`]).
    pub fn assert_same(&self, table: &str) {
        self.assert_no_refused_batch();
        let source = dump(&self.source, "shop", table);
        let target = dump(&self.target, "analytics", table);
        if source != target {
            let s: Vec<&str> = source.lines().collect();
            let t: Vec<&str> = target.lines().collect();
            let short = |l: &&&str| {
                let c: Vec<char> = l.chars().collect();
                let n = c.len();
                format!(
                    "{}…{}",
                    c[..n.min(80)].iter().collect::<String>(),
                    c[n.saturating_sub(120)..].iter().collect::<String>()
                )
            };
            let missing: Vec<String> = s
                .iter()
                .filter(|l| !t.contains(l))
                .take(5)
                .map(|l| short(&l))
                .collect();
            let extra: Vec<String> = t
                .iter()
                .filter(|l| !s.contains(l))
                .take(5)
                .map(|l| short(&l))
                .collect();
            panic!(
                "{table} differs: source {} rows, target {} rows\nmissing on target: {missing:#?}\nextra on target: {extra:#?}",
                s.len(),
                t.len()
            );
        }
    }
}

/// `COPY (SELECT * FROM table ORDER BY row text) TO STDOUT`.
pub fn dump(cluster: &PgCluster, db: &str, table: &str) -> String {
    cluster.psql(
        db,
        &format!("COPY (SELECT * FROM {table} t ORDER BY t::text COLLATE \"C\") TO STDOUT"),
    )
}

/// Asserts `ferry`'s log shows no batch the target refused. A refused batch is replayed
/// change by change, which ends as the compacted batch would: without this, a test comparing
/// both sides passes even when a set statement is broken.
pub fn assert_no_refused_batch_in(ferry: &FerryServer) {
    let log = ferry.log();
    assert!(
        !log.contains("target refused a batch"),
        "the target refused a batch:\n{log}"
    );
}

/// Everything the catalog says about `table` beyond its rows, one object a line.
pub fn definition(cluster: &PgCluster, db: &str, table: &str) -> String {
    cluster.psql(
        db,
        &format!(
            "SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
               SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index
               WHERE indrelid = '{table}'::regclass
               UNION ALL
               SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid)
               FROM pg_constraint WHERE conrelid = '{table}'::regclass
               UNION ALL
               SELECT 'column ' || a.attnum || ' ' || attname || ' '
                      || format_type(atttypid, atttypmod) || ' notnull=' || attnotnull
                      || ' identity=' || attidentity::text || ' generated=' || attgenerated::text
                      || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
               FROM pg_attribute a LEFT JOIN pg_attrdef d
                 ON d.adrelid = a.attrelid AND d.adnum = a.attnum
               WHERE attrelid = '{table}'::regclass AND a.attnum > 0 AND NOT attisdropped
               UNION ALL
               SELECT 'comment ' || objsubid || ' ' || description FROM pg_description
               WHERE objoid = '{table}'::regclass AND classoid = 'pg_class'::regclass
               UNION ALL
               SELECT 'sequence ' || s.seqrelid::regclass || ' ' || seqstart || ' '
                      || seqincrement || ' ' || seqmax || ' ' || d.deptype::text
               FROM pg_depend d JOIN pg_sequence s ON s.seqrelid = d.objid
               WHERE d.refobjid = '{table}'::regclass AND d.deptype IN ('a', 'i')
             ) s(x)"
        ),
    )
}
