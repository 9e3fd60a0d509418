//! The MariaDB suite's stage: a source and a target MariaDB server, a target PostgreSQL
//! cluster, the data, and the reset between two runs.
//!
//! ```text
//! source mariadbd (server_id 1, binlog)     target mariadbd (server_id 2, no binlog)
//!   database `bench`:                          database `bench` (and Ferry's `_ferry`)
//!     pgbench_accounts/branches/tellers/         dropped before every run; the replica,
//!     history, bench_wide (~3.2 KB text)         Ferry or myloader fills it
//!                                            target PostgreSQL cluster, database `target`
//!                                              schema `bench`, from Ferry or pgloader;
//!                                              dropped and created empty before every run
//! ```
//!
//! Both MariaDB servers come from `ferry-testkit` (ROW binlog with full row image and
//! metadata, GTIDs, `time_zone=+02:00`) with the same extra settings, [`SERVER_SETTINGS`];
//! the PostgreSQL cluster gets the PostgreSQL suite's settings. The data is loaded once,
//! without writing it to the binlog (nothing replicates the load: every contender copies
//! the tables itself), so the source's binlog holds only what the backlog workload writes.

use std::time::Instant;

use anyhow::Context as _;
use ferry_testkit::mariadb::{MARIADB_PASSWORD, MARIADB_USER};
use ferry_testkit::{MariaDb, PgCluster, PgOptions};
use mysql_async::prelude::{FromRow, Queryable};
use tokio::runtime::{Handle, Runtime};

use crate::db::Db;
use crate::plan::Plan;
use crate::servers::ServerProcesses;

/// The source database, and the database (MariaDB) or schema (PostgreSQL) it lands in.
pub(crate) const DATABASE: &str = "bench";
/// The PostgreSQL target database, recreated empty for every run.
pub(crate) const PG_TARGET_DB: &str = "target";
/// The pgbench-like tables: what the backlog workload writes and replicates.
pub(crate) const PGBENCH_TABLES: [&str; 4] = [
    "bench.pgbench_accounts",
    "bench.pgbench_branches",
    "bench.pgbench_tellers",
    "bench.pgbench_history",
];
/// The wide table of the snapshots: ~3.2 KB of text per row, stored off-page by InnoDB.
pub(crate) const WIDE_TABLE: &str = "bench.bench_wide";

/// The snapshot workloads' tables: the pgbench-like ones plus the wide one (all of `bench`).
pub(crate) fn snapshot_tables() -> Vec<&'static str> {
    PGBENCH_TABLES.iter().copied().chain([WIDE_TABLE]).collect()
}

/// Settings both MariaDB servers get on top of ferry-testkit's, with why.
pub(crate) const SERVER_SETTINGS: &[(&str, &str, &str)] = &[
    (
        "innodb_buffer_pool_size",
        "1G",
        "the tables stay cached (the kit's 128M would not hold them)",
    ),
    (
        "innodb_log_file_size",
        "1G",
        "no checkpoint is forced by redo volume inside a run",
    ),
    (
        "innodb_flush_log_at_trx_commit",
        "2",
        "a commit writes the redo log but does not fsync it: the nearest InnoDB gets to \
         PostgreSQL's fsync=off with synchronous_commit=on",
    ),
    (
        "innodb_doublewrite",
        "OFF",
        "as full_page_writes=off on the PostgreSQL clusters",
    ),
];

/// What only the target server gets, with why.
pub(crate) const TARGET_SETTINGS: &[(&str, &str, &str)] = &[(
    "skip_log_bin",
    "ON",
    "no binlog on the target: myloader turns it off for its sessions and a replica does not \
     log what it applies (log_slave_updates=OFF), so with one only Ferry's writes would pay \
     for it",
)];

/// ferry-testkit's own settings that bear on the numbers, for the record.
pub(crate) const TESTKIT_SETTINGS: &[(&str, &str)] = &[
    ("binlog_format", "ROW"),
    ("binlog_row_image", "FULL"),
    ("binlog_row_metadata", "FULL"),
    ("sync_binlog", "0 (default)"),
    ("time_zone", "+02:00"),
    ("character_set_server", "utf8mb4"),
];

/// Facts about the loaded data that the rates are computed from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dataset {
    /// Rows per snapshot table.
    pub(crate) table_rows: Vec<(String, u64)>,
    /// Rows in all snapshot tables.
    pub(crate) snapshot_rows: u64,
    /// InnoDB's data size of the snapshot tables on the source (`data_length`: the
    /// clustered index with the off-page text).
    pub(crate) snapshot_bytes: u64,
}

/// The servers, the runtime that drives their sessions, and a scratch directory.
pub(crate) struct MariaTestbed {
    pub(crate) source: MariaDb,
    pub(crate) target: MariaDb,
    pub(crate) pg: PgCluster,
    pub(crate) dataset: Dataset,
    /// Scratch space for logs and mydumper's and pgloader's files.
    pub(crate) scratch: tempfile::TempDir,
    runtime: Runtime,
}

impl MariaTestbed {
    /// Starts the three servers (in parallel) and loads the data.
    pub(crate) fn start(plan: &Plan) -> anyhow::Result<MariaTestbed> {
        let common: Vec<String> = SERVER_SETTINGS
            .iter()
            .map(|(name, value, _)| format!("--{}={value}", name.replace('_', "-")))
            .collect();
        let mut target_args = common.clone();
        target_args.push("--skip-log-bin".to_owned());
        let pg_options = PgOptions {
            extra_conf: crate::testbed::SERVER_SETTINGS
                .iter()
                .map(|(name, value, _)| (name.to_string(), value.to_string()))
                .collect(),
            password: None,
            tls: None,
        };
        let (common, target_args) = (as_strs(&common), as_strs(&target_args));
        let (source, target, pg) = std::thread::scope(|scope| {
            let source = scope.spawn(|| MariaDb::start_with(1, &common));
            let target = scope.spawn(|| MariaDb::start_with(2, &target_args));
            let pg = scope.spawn(|| PgCluster::start_with(pg_options.clone()));
            (source.join(), target.join(), pg.join())
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("start the runtime")?;
        let mut testbed = MariaTestbed {
            source: source.map_err(|_| anyhow::anyhow!("the source MariaDB did not start"))?,
            target: target.map_err(|_| anyhow::anyhow!("the target MariaDB did not start"))?,
            pg: pg.map_err(|_| anyhow::anyhow!("the PostgreSQL cluster did not start"))?,
            dataset: Dataset::default(),
            scratch: tempfile::Builder::new()
                .prefix("ferry-bench-maria-")
                .tempdir()
                .context("create the scratch directory")?,
            runtime,
        };
        testbed.load(plan)?;
        Ok(testbed)
    }

    /// The runtime handle sessions block on.
    pub(crate) fn handle(&self) -> &Handle {
        self.runtime.handle()
    }

    /// A new session on the source server.
    pub(crate) fn source_session(&self) -> anyhow::Result<Session> {
        Session::connect(self.handle(), self.source.port())
    }

    /// A new session on the target server.
    pub(crate) fn target_session(&self) -> anyhow::Result<Session> {
        Session::connect(self.handle(), self.target.port())
    }

    /// The suite's servers for [`crate::servers`]: each `mariadbd` from its `@@pid_file`,
    /// the PostgreSQL cluster's postmaster.
    pub(crate) fn server_processes(&self) -> anyhow::Result<crate::maria::Servers> {
        let pid_of = |mut session: Session| -> anyhow::Result<u32> {
            let file = session.query_text("SELECT @@pid_file")?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("read {file}"))?;
            text.trim()
                .parse()
                .with_context(|| format!("a pid in {file}"))
        };
        let db = Db::connect(self.handle(), &self.pg.uri("postgres"))?;
        Ok(ServerProcesses::new([
            pid_of(self.source_session()?)?,
            pid_of(self.target_session()?)?,
            crate::servers::postmaster_of(&db)?,
        ]))
    }

    /// A new session on the PostgreSQL target database.
    pub(crate) fn pg_target_db(&self) -> anyhow::Result<Db> {
        Db::connect(self.handle(), &self.pg.uri(PG_TARGET_DB))
    }

    /// A path in the scratch directory.
    pub(crate) fn scratch_path(&self, name: &str) -> std::path::PathBuf {
        self.scratch.path().join(name)
    }

    /// Gets the servers ready for a run: no replica configured and no `bench` or `_ferry`
    /// database on the target MariaDB, an empty PostgreSQL target database, and the
    /// source's history table emptied (outside the binlog).
    pub(crate) fn prepare_run(&self) -> anyhow::Result<()> {
        let mut target = self.target_session()?;
        let replicas: Vec<mysql_async::Row> = target.query("SHOW ALL SLAVES STATUS")?;
        if !replicas.is_empty() {
            target.execute("STOP ALL SLAVES; RESET SLAVE ALL")?;
        }
        target.execute(&format!(
            "DROP DATABASE IF EXISTS {DATABASE}; DROP DATABASE IF EXISTS _ferry"
        ))?;
        let admin = Db::connect(self.handle(), &self.pg.uri("postgres"))?;
        admin.execute(&format!(
            "DROP DATABASE IF EXISTS {PG_TARGET_DB} WITH (FORCE)"
        ))?;
        admin.execute(&format!("CREATE DATABASE {PG_TARGET_DB}"))?;
        admin.execute("CHECKPOINT")?;
        self.source_session()?.execute(&format!(
            "SET SESSION sql_log_bin = 0; TRUNCATE {DATABASE}.pgbench_history"
        ))
    }

    /// Creates and fills `bench` on the source: pgbench's tables at `plan.scale` (keys
    /// included; history gets an auto-increment key) and `plan.wide_rows` wide rows.
    fn load(&mut self, plan: &Plan) -> anyhow::Result<()> {
        let started = Instant::now();
        println!(
            "loading pgbench-like scale {} and {} wide rows into MariaDB…",
            plan.scale, plan.wide_rows
        );
        let scale = u64::from(plan.scale);
        let mut source = self.source_session()?;
        source.execute(&format!(
            "SET SESSION sql_log_bin = 0;
             CREATE DATABASE {DATABASE};
             USE {DATABASE};
             CREATE TABLE pgbench_branches (bid INT NOT NULL PRIMARY KEY,
                 bbalance INT NOT NULL, filler CHAR(88));
             CREATE TABLE pgbench_tellers (tid INT NOT NULL PRIMARY KEY, bid INT NOT NULL,
                 tbalance INT NOT NULL, filler CHAR(84));
             CREATE TABLE pgbench_accounts (aid INT NOT NULL PRIMARY KEY, bid INT NOT NULL,
                 abalance INT NOT NULL, filler CHAR(84));
             CREATE TABLE pgbench_history (hid BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
                 tid INT NOT NULL, bid INT NOT NULL, aid INT NOT NULL, delta INT NOT NULL,
                 mtime DATETIME(6) NOT NULL, filler CHAR(22));
             CREATE TABLE bench_wide (id BIGINT NOT NULL PRIMARY KEY,
                 title VARCHAR(64) NOT NULL, body TEXT NOT NULL,
                 updated_at DATETIME(6) NOT NULL);
             INSERT INTO pgbench_branches SELECT seq, 0, NULL FROM seq_1_to_{scale};
             INSERT INTO pgbench_tellers SELECT seq, (seq - 1) DIV 10 + 1, 0, NULL
                 FROM seq_1_to_{tellers};
             INSERT INTO pgbench_accounts SELECT seq, (seq - 1) DIV 100000 + 1, 0, ''
                 FROM seq_1_to_{accounts};
             INSERT INTO bench_wide
                 SELECT a.seq, CONCAT('row ', a.seq),
                        (SELECT GROUP_CONCAT(MD5(CONCAT(a.seq, ':', b.seq)) SEPARATOR '')
                         FROM seq_1_to_100 b),
                        TIMESTAMP '2026-01-01 00:00:00' + INTERVAL a.seq SECOND
                 FROM seq_1_to_{wide} a;
             ANALYZE TABLE pgbench_branches, pgbench_tellers, pgbench_accounts,
                 pgbench_history, bench_wide",
            tellers = 10 * scale,
            accounts = 100_000 * scale,
            wide = plan.wide_rows,
        ))?;
        let mut table_rows = Vec::new();
        for table in snapshot_tables() {
            let rows = source.query_i64(&format!("SELECT COUNT(*) FROM {table}"))?;
            table_rows.push((table.to_owned(), u64::try_from(rows)?));
        }
        let bytes = source.query_i64(&format!(
            "SELECT CAST(SUM(data_length) AS SIGNED) FROM information_schema.tables \
             WHERE table_schema = '{DATABASE}'"
        ))?;
        self.dataset = Dataset {
            snapshot_rows: table_rows.iter().map(|(_, rows)| rows).sum(),
            table_rows,
            snapshot_bytes: u64::try_from(bytes)?,
        };
        println!(
            "loaded {} rows, {:.0} MB (InnoDB data) in {:.0} s",
            self.dataset.snapshot_rows,
            self.dataset.snapshot_bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// One blocking connection to a MariaDB server as `ferry`, session time zone UTC; the
/// calls block on the testbed's runtime.
pub(crate) struct Session {
    /// Taken by `Drop`, which closes the connection on the runtime.
    conn: Option<mysql_async::Conn>,
    runtime: Handle,
}

impl Session {
    /// Connects to the server on `port` (no default database).
    pub(crate) fn connect(runtime: &Handle, port: u16) -> anyhow::Result<Session> {
        let url = format!("mysql://{MARIADB_USER}:{MARIADB_PASSWORD}@127.0.0.1:{port}/");
        let opts = mysql_async::Opts::from_url(&url).context("a MariaDB URL")?;
        let conn = runtime
            .block_on(mysql_async::Conn::new(opts))
            .with_context(|| format!("connect to MariaDB on port {port}"))?;
        let mut session = Session {
            conn: Some(conn),
            runtime: runtime.clone(),
        };
        session.execute("SET time_zone = '+00:00'")?;
        Ok(session)
    }

    /// Runs one or more statements, discarding their results.
    pub(crate) fn execute(&mut self, sql: &str) -> anyhow::Result<()> {
        let conn = self.conn.as_mut().expect("open until dropped");
        self.runtime
            .block_on(conn.query_drop(sql))
            .with_context(|| format!("run: {sql}"))
    }

    /// The rows of a query.
    pub(crate) fn query<T: FromRow + Send + 'static>(
        &mut self,
        sql: &str,
    ) -> anyhow::Result<Vec<T>> {
        let conn = self.conn.as_mut().expect("open until dropped");
        self.runtime
            .block_on(conn.query(sql))
            .with_context(|| format!("query: {sql}"))
    }

    /// The first column of a one-row query, as an integer.
    pub(crate) fn query_i64(&mut self, sql: &str) -> anyhow::Result<i64> {
        let rows: Vec<Option<i64>> = self.query(sql)?;
        rows.into_iter()
            .next()
            .flatten()
            .with_context(|| format!("no value from: {sql}"))
    }

    /// The first column of a one-row query, as text (NULL as empty).
    pub(crate) fn query_text(&mut self, sql: &str) -> anyhow::Result<String> {
        let rows: Vec<Option<String>> = self.query(sql)?;
        Ok(rows.into_iter().next().flatten().unwrap_or_default())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // The server ends the session either way; a failed goodbye changes nothing.
            let _ = self.runtime.block_on(conn.disconnect());
        }
    }
}
