//! The stage every contender runs on: a source and a target PostgreSQL cluster, the data,
//! and the reset between two runs.
//!
//! ```text
//! source cluster, database `bench`                 target cluster, database `target`
//!   pgbench_accounts/branches/tellers/history        dropped and created empty before
//!   bench_wide   (TOASTed text + jsonb)              every run; each contender fills it
//!   bench_probe  (latency probe rows)                (or, for the limits, reads nothing
//!   bench_bigtx  (the one big transaction)            from it / writes files into it)
//! ```
//!
//! Both clusters come from `ferry-testkit` (`wal_level=logical`, `fsync=off`,
//! `full_page_writes=off`) with the same extra settings, [`SERVER_SETTINGS`]; the report
//! records them. The data is loaded once; a run then gets a source without slots,
//! publications or leftover rows from the previous run, a vacuumed and checkpointed source,
//! and an empty target database, so runs are independent and their order does not matter.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_testkit::{PgCluster, PgOptions};
use tokio::runtime::{Handle, Runtime};

use crate::db::Db;
use crate::peer_process;
use crate::plan::Plan;
use crate::servers::{postmaster_of, Clock, ServerProcesses};

/// The source database.
pub(crate) const SOURCE_DB: &str = "bench";
/// The target database, recreated empty for every run.
pub(crate) const TARGET_DB: &str = "target";

/// pgbench's tables: what the backlog and latency workloads replicate.
pub(crate) const PGBENCH_TABLES: [&str; 4] = [
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_tellers",
    "public.pgbench_history",
];
/// The wide table of the snapshot: big TOASTed text and jsonb values.
pub(crate) const WIDE_TABLE: &str = "public.bench_wide";
/// The latency probe's table.
pub(crate) const PROBE_TABLE: &str = "public.bench_probe";
/// The big transaction's table.
pub(crate) const BIGTX_TABLE: &str = "public.bench_bigtx";

/// The snapshot workload's tables: pgbench's plus the wide one.
pub(crate) fn snapshot_tables() -> Vec<&'static str> {
    PGBENCH_TABLES.iter().copied().chain([WIDE_TABLE]).collect()
}

/// Settings both clusters get on top of ferry-testkit's, with why.
pub(crate) const SERVER_SETTINGS: &[(&str, &str, &str)] = &[
    (
        "shared_buffers",
        "1GB",
        "the 5M-row tables stay cached on a 24 GiB machine",
    ),
    (
        "max_wal_size",
        "16GB",
        "no checkpoint is forced by WAL volume inside a run",
    ),
    (
        "checkpoint_timeout",
        "1h",
        "checkpoints happen only where the harness asks",
    ),
    (
        "maintenance_work_mem",
        "512MB",
        "index builds (pg_dump, pgcopydb) sort in memory",
    ),
    (
        "autovacuum",
        "off",
        "the harness vacuums between runs; no vacuum lands inside one",
    ),
    (
        "synchronous_commit",
        "on",
        "the default; with fsync off a commit waits only for write",
    ),
    (
        "wal_init_zero",
        "off",
        "with no checkpoint inside a run every 16 MB of WAL is a new segment, and zero-filling \
         one held the target's commits for 65-133 ms in the latency workload",
    ),
];

/// ferry-testkit's own settings that bear on the numbers, for the record.
pub(crate) const TESTKIT_SETTINGS: &[(&str, &str)] = &[
    ("wal_level", "logical"),
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("max_wal_senders / max_replication_slots", "20 / 20"),
];

/// How long old walsenders may take to go away before a run.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Facts about the loaded data that the rates are computed from.
#[derive(Debug, Clone)]
pub(crate) struct Dataset {
    /// Rows per snapshot table.
    pub(crate) table_rows: Vec<(String, u64)>,
    /// Rows in all snapshot tables.
    pub(crate) snapshot_rows: u64,
    /// Heap + TOAST bytes of all snapshot tables on the source (`pg_table_size`).
    pub(crate) snapshot_bytes: u64,
    /// Bytes of the wide table's TOAST relation: its values really are stored out of line.
    pub(crate) wide_toast_bytes: u64,
}

/// The two clusters, the runtime that drives their sessions, and a scratch directory.
pub(crate) struct Testbed {
    pub(crate) source: PgCluster,
    pub(crate) target: PgCluster,
    pub(crate) dataset: Dataset,
    /// Scratch space for logs, COPY files and pgcopydb's work directories.
    pub(crate) scratch: tempfile::TempDir,
    /// The source's and the target's postmaster, for the servers' CPU in a timed part.
    servers: ServerProcesses<2>,
    runtime: Runtime,
}

impl Testbed {
    /// Starts both clusters (in parallel) and loads the data.
    pub(crate) fn start(plan: &Plan) -> anyhow::Result<Testbed> {
        let options = PgOptions {
            extra_conf: SERVER_SETTINGS
                .iter()
                .map(|(name, value, _)| (name.to_string(), value.to_string()))
                .collect(),
            password: None,
            tls: None,
        };
        let (source, target) = std::thread::scope(|scope| {
            let source = scope.spawn(|| PgCluster::start_with(options.clone()));
            let target = scope.spawn(|| PgCluster::start_with(options.clone()));
            (source.join(), target.join())
        });
        let (source, target) = (
            source.map_err(|_| anyhow::anyhow!("the source cluster did not start"))?,
            target.map_err(|_| anyhow::anyhow!("the target cluster did not start"))?,
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("start the runtime")?;
        let scratch = tempfile::Builder::new()
            .prefix("ferry-bench-")
            .tempdir()
            .context("create the scratch directory")?;
        let postmaster = |cluster: &PgCluster| -> anyhow::Result<u32> {
            postmaster_of(&Db::connect(runtime.handle(), &cluster.uri("postgres"))?)
        };
        let servers = ServerProcesses::new([postmaster(&source)?, postmaster(&target)?]);
        let mut testbed = Testbed {
            source,
            target,
            dataset: Dataset {
                table_rows: Vec::new(),
                snapshot_rows: 0,
                snapshot_bytes: 0,
                wide_toast_bytes: 0,
            },
            scratch,
            servers,
            runtime,
        };
        testbed.load(plan)?;
        Ok(testbed)
    }

    /// Samples the source's and the target's server CPU, then starts a timed part's clock;
    /// its `stop` gives the wall time and each server's CPU seconds in between.
    pub(crate) fn clock(&self) -> Clock<'_, 2> {
        self.servers.clock()
    }

    /// The runtime handle sessions block on.
    pub(crate) fn handle(&self) -> &Handle {
        self.runtime.handle()
    }

    /// A new session on the source database.
    pub(crate) fn source_db(&self) -> anyhow::Result<Db> {
        Db::connect(self.handle(), &self.source.uri(SOURCE_DB))
    }

    /// A new session on the target database.
    pub(crate) fn target_db(&self) -> anyhow::Result<Db> {
        Db::connect(self.handle(), &self.target.uri(TARGET_DB))
    }

    /// A path in the scratch directory.
    pub(crate) fn scratch_path(&self, name: &str) -> std::path::PathBuf {
        self.scratch.path().join(name)
    }

    /// A PostgreSQL client tool (`psql`, `pg_dump`, `pg_recvlogical`) pointed at `cluster`
    /// as the `ferry` superuser; stdin and stdout are null until the caller sets them.
    pub(crate) fn client_command(&self, cluster: &PgCluster, tool: &str) -> Command {
        let mut command = Command::new(cluster.bin_dir().join(tool));
        command
            .args(["-h", "127.0.0.1", "-p", &cluster.port().to_string()])
            .args(["-U", "ferry"])
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// `psql` on `db` of `cluster`, quiet and stopping at the first error.
    pub(crate) fn psql(&self, cluster: &PgCluster, db: &str) -> Command {
        let mut command = self.client_command(cluster, "psql");
        command.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db]);
        command
    }

    /// Copies the definitions of `tables` from the source to the target database with
    /// `pg_dump --schema-only`; `pre_data_only` leaves out keys and indexes.
    pub(crate) fn copy_schema(&self, tables: &[&str], pre_data_only: bool) -> anyhow::Result<()> {
        let mut dump = self.client_command(&self.source, "pg_dump");
        dump.args(["--no-publications", "--no-subscriptions"]);
        // pre-data: the tables, without their keys and indexes (those are post-data).
        dump.arg(if pre_data_only {
            "--section=pre-data"
        } else {
            "--schema-only"
        });
        for table in tables {
            dump.args(["-t", table]);
        }
        dump.arg(SOURCE_DB);
        let restore = self.psql(&self.target, TARGET_DB);
        peer_process::run_pipeline(
            dump,
            restore,
            "schema copy",
            &self.scratch_path("schema.log"),
        )?;
        Ok(())
    }

    /// Gets both clusters ready for a run: no slots, publications or subscriptions left,
    /// `truncate` emptied, the source vacuumed, an empty target database, both checkpointed.
    pub(crate) fn prepare_run(&self, truncate: &[&str]) -> anyhow::Result<()> {
        self.drop_subscriptions()?;
        let admin = Db::connect(self.handle(), &self.target.uri("postgres"))?;
        admin.execute(&format!("DROP DATABASE IF EXISTS {TARGET_DB} WITH (FORCE)"))?;
        admin.execute(&format!("CREATE DATABASE {TARGET_DB}"))?;

        let source = self.source_db()?;
        let deadline = Instant::now() + SWEEP_TIMEOUT;
        while source.query_i64("SELECT count(*) FROM pg_replication_slots WHERE active")? > 0 {
            source.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE active AND active_pid IS NOT NULL",
            )?;
            anyhow::ensure!(Instant::now() < deadline, "replication slots stay active");
            std::thread::sleep(Duration::from_millis(100));
        }
        source.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")?;
        for publication in source.query_texts("SELECT pubname::text FROM pg_publication")? {
            source.execute(&format!("DROP PUBLICATION \"{publication}\""))?;
        }
        if !truncate.is_empty() {
            source.execute(&format!("TRUNCATE {}", truncate.join(", ")))?;
        }
        source.execute("VACUUM ANALYZE")?;
        self.checkpoint()
    }

    /// `CHECKPOINT` on both clusters, so that no run pays for an earlier run's dirty pages.
    pub(crate) fn checkpoint(&self) -> anyhow::Result<()> {
        self.source_db()?.execute("CHECKPOINT")?;
        Db::connect(self.handle(), &self.target.uri("postgres"))?.execute("CHECKPOINT")
    }

    /// Runs `pgbench` on the source database (always `-n`: the harness vacuums itself).
    pub(crate) fn pgbench(&self, args: &[&str]) -> anyhow::Result<PgbenchRun> {
        let mut all = vec!["-n"];
        all.extend_from_slice(args);
        let output = self.source.pgbench(SOURCE_DB, &all);
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "pgbench {all:?} failed: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        PgbenchRun::parse(&stdout)
    }

    /// Drops subscriptions a failed run left in the target database (keeping their slots,
    /// which [`Testbed::prepare_run`] drops on the source).
    fn drop_subscriptions(&self) -> anyhow::Result<()> {
        let admin = Db::connect(self.handle(), &self.target.uri("postgres"))?;
        let exists = admin.query_i64(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{TARGET_DB}'"
        ))?;
        if exists == 0 {
            return Ok(());
        }
        let target = self.target_db()?;
        let names = target.query_texts(
            "SELECT subname::text FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid \
             WHERE d.datname = current_database()",
        )?;
        for name in names {
            target.execute(&format!("ALTER SUBSCRIPTION \"{name}\" DISABLE"))?;
            target.execute(&format!(
                "ALTER SUBSCRIPTION \"{name}\" SET (slot_name = NONE)"
            ))?;
            target.execute(&format!("DROP SUBSCRIPTION \"{name}\""))?;
        }
        Ok(())
    }

    /// Loads pgbench's tables, the wide table and the empty probe and big-transaction tables.
    fn load(&mut self, plan: &Plan) -> anyhow::Result<()> {
        self.source.create_database(SOURCE_DB);
        let scale = plan.scale.to_string();
        let started = Instant::now();
        println!(
            "loading pgbench scale {scale} and {} wide rows…",
            plan.wide_rows
        );
        let init = self.source.pgbench(SOURCE_DB, &["-i", "-q", "-s", &scale]);
        anyhow::ensure!(
            init.status.success(),
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let source = self.source_db()?;
        source.execute(&format!(
            "CREATE TABLE {WIDE_TABLE} (
                 id bigint PRIMARY KEY,
                 title text NOT NULL,
                 body text NOT NULL,
                 doc jsonb NOT NULL,
                 updated_at timestamptz NOT NULL
             );
             INSERT INTO {WIDE_TABLE}
             SELECT i,
                    'row ' || i,
                    (SELECT string_agg(md5(i || ':' || j), '') FROM generate_series(1, 100) j),
                    jsonb_build_object(
                        'id', i,
                        'tags', jsonb_build_array('a', 'b', i % 7),
                        'attrs', (SELECT jsonb_object_agg('k' || j, md5(j || '/' || i))
                                  FROM generate_series(1, 64) j)),
                    timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second'
             FROM generate_series(1, {}) i;
             CREATE TABLE {PROBE_TABLE} (id bigint PRIMARY KEY, written_at timestamptz NOT NULL);
             CREATE TABLE {BIGTX_TABLE} (id bigint PRIMARY KEY, payload text NOT NULL);",
            plan.wide_rows
        ))?;
        source.execute("VACUUM ANALYZE")?;
        let mut table_rows = Vec::new();
        for table in snapshot_tables() {
            let rows = source.query_i64(&format!("SELECT count(*) FROM {table}"))?;
            table_rows.push((table.to_owned(), u64::try_from(rows)?));
        }
        let bytes = source.query_i64(&format!(
            "SELECT sum(pg_table_size(t::regclass))::bigint FROM unnest(ARRAY[{}]) t",
            snapshot_tables()
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
        let wide_toast_bytes = source.query_i64(&format!(
            "SELECT pg_relation_size(reltoastrelid)::bigint FROM pg_class \
             WHERE oid = '{WIDE_TABLE}'::regclass"
        ))?;
        self.dataset = Dataset {
            snapshot_rows: table_rows.iter().map(|(_, rows)| rows).sum(),
            table_rows,
            snapshot_bytes: u64::try_from(bytes)?,
            wide_toast_bytes: u64::try_from(wide_toast_bytes)?,
        };
        println!(
            "loaded {} rows, {:.0} MB (heap + TOAST, {:.0} MB of it bench_wide's TOAST) in {:.0} s",
            self.dataset.snapshot_rows,
            self.dataset.snapshot_bytes as f64 / 1e6,
            self.dataset.wide_toast_bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The PostgreSQL server version, for the record.
    pub(crate) fn server_version(&self) -> String {
        self.source.psql("postgres", "SHOW server_version")
    }

    /// Where the server binaries are.
    pub(crate) fn bin_dir(&self) -> &Path {
        self.source.bin_dir()
    }
}

/// What pgbench reported about a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PgbenchRun {
    /// Transactions committed.
    pub(crate) transactions: u64,
    /// Transactions per second (without connection time).
    pub(crate) tps: f64,
}

impl PgbenchRun {
    /// Row changes written: each TPC-B-like transaction updates three rows (accounts,
    /// tellers, branches) and inserts one (history).
    pub(crate) fn row_changes(&self) -> u64 {
        self.transactions * 4
    }

    fn parse(stdout: &str) -> anyhow::Result<PgbenchRun> {
        let transactions = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed:"))
            .and_then(|rest| rest.trim().split('/').next()?.trim().parse().ok())
            .with_context(|| format!("no transaction count in pgbench output:\n{stdout}"))?;
        let tps = stdout
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no tps in pgbench output:\n{stdout}"))?;
        Ok(PgbenchRun { transactions, tps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_output_gives_transactions_and_tps() {
        let out = "transaction type: <builtin: TPC-B (sort of)>\n\
                   number of clients: 4\n\
                   number of transactions actually processed: 80000/80000\n\
                   number of failed transactions: 0 (0.000%)\n\
                   latency average = 1.234 ms\n\
                   initial connection time = 5.1 ms\n\
                   tps = 3241.5 (without initial connection time)\n";
        let run = PgbenchRun::parse(out).expect("parses");
        assert_eq!(run.transactions, 80_000);
        assert_eq!(run.row_changes(), 320_000);
        assert!((run.tps - 3241.5).abs() < 1e-9);
        let timed = "number of transactions actually processed: 123456\ntps = 2057.6 (without)\n";
        assert_eq!(
            PgbenchRun::parse(timed).expect("parses").transactions,
            123_456
        );
        assert!(PgbenchRun::parse("nothing").is_err());
    }
}
