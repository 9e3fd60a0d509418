//! The test bed of `mariadb_behind.rs`: a MariaDB source, a PostgreSQL target and a Ferry
//! server, with the changefeed `items` and what the tests ask of it.

use std::time::{Duration, Instant};

use ferry_testkit::{FerryServer, MariaDb, PgCluster};
use serde_json::{json, Value};

pub(crate) const MINUTE: Duration = Duration::from_secs(60);

pub(crate) struct Setup {
    pub(crate) source: MariaDb,
    pub(crate) target: PgCluster,
    pub(crate) ferry: FerryServer,
}

impl Setup {
    pub(crate) fn start() -> Setup {
        let (source, target) = std::thread::scope(|s| {
            let a = s.spawn(MariaDb::start);
            let b = s.spawn(PgCluster::start);
            (a.join().unwrap(), b.join().unwrap())
        });
        source.sql("CREATE DATABASE shop");
        target.create_database("analytics");
        let ferry = FerryServer::start(std::path::Path::new(env!("CARGO_BIN_EXE_ferry")));
        Setup {
            source,
            target,
            ferry,
        }
    }

    /// Creates changefeed `items` of every table of `shop` and waits until it is synced.
    pub(crate) fn create(&self) {
        self.create_with(json!({}));
    }

    /// [`Setup::create`] with changefeed `options`.
    pub(crate) fn create_with(&self, options: Value) {
        self.create_of("shop", json!(["shop.*"]), options);
    }

    /// [`Setup::create`] of `tables` with changefeed `options`, connecting to `database`.
    pub(crate) fn create_of(&self, database: &str, tables: Value, options: Value) {
        let (code, body) = self.ferry.post(
            "/api/v2/changefeeds",
            &json!({
                "id": "items",
                "source_uri": self.source.uri(database),
                "sink_uri": self.target.uri("analytics"),
                "tables": tables,
                "options": options,
            }),
        );
        assert_eq!(code, 201, "{body}");
        self.wait_synced();
    }

    /// `id|v` of every row of `table` on the source and on the target.
    pub(crate) fn rows(&self, table: &str) -> (String, String) {
        let query = format!("SELECT concat_ws('|', id, v) FROM {table} ORDER BY id");
        (
            self.source.sql(&query),
            self.target.psql("analytics", &query),
        )
    }

    pub(crate) fn assert_warned(&self, expected: &str) {
        let status = self.status();
        assert!(
            status["warnings"].to_string().contains(expected),
            "{expected:?} not in {status}\n{}",
            self.ferry.log()
        );
    }

    pub(crate) fn status(&self) -> Value {
        self.ferry.get("/api/v2/changefeeds/items/status").1
    }

    pub(crate) fn act(&self, action: &str) {
        let (code, body) = self
            .ferry
            .post(&format!("/api/v2/changefeeds/items/{action}"), &json!({}));
        assert_eq!(code, 200, "{action}: {body}");
    }

    /// Pauses the changefeed and waits until it is paused.
    pub(crate) fn pause(&self) {
        self.act("pause");
        self.wait_state("paused");
    }

    pub(crate) fn wait_state(&self, state: &str) {
        let deadline = Instant::now() + MINUTE;
        while self.status()["state"] != json!(state) {
            assert!(
                Instant::now() < deadline,
                "not {state}: {}\n{}",
                self.status(),
                self.ferry.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn wait_synced(&self) {
        let deadline = Instant::now() + MINUTE;
        loop {
            let (code, body) = self.ferry.get("/api/v2/changefeeds/items/synced");
            if code == 200 && body["synced"] == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not synced: {body}\nstatus: {}\n{}",
                self.status(),
                self.ferry.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `shop.items` on both sides, one line per row, NULL as `~`.
    pub(crate) fn assert_items_same(&self, columns: &[&str]) {
        let list = |cast: &str| {
            columns
                .iter()
                .map(|c| format!("COALESCE({c}{cast}, '~')"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let source = self.source.sql(&format!(
            "SET NAMES utf8mb4; SELECT CONCAT_WS('|', {}) FROM shop.items ORDER BY id",
            list("")
        ));
        let target = self.target.psql(
            "analytics",
            &format!(
                "SELECT concat_ws('|', {}) FROM shop.items ORDER BY id",
                list("::text")
            ),
        );
        assert_eq!(source, target, "source, then target\n{}", self.ferry.log());
    }

    /// What the target's trigger saw of column `column`: `id|value` for each row written
    /// with a value in it.
    pub(crate) fn seen(&self, column: &str) -> String {
        self.target.psql(
            "analytics",
            &format!(
                "SELECT id || '|' || v FROM (SELECT DISTINCT id, row->>'{column}' AS v \
                 FROM public.seen WHERE row->>'{column}' IS NOT NULL) s ORDER BY id"
            ),
        )
    }
}
