//! The command line, and the plan it resolves to: which workloads, which contenders, how much
//! data, how many runs.
//!
//! Two suites: PostgreSQL → PostgreSQL (issues 4 and 13, the default) and MariaDB (issue 12:
//! MariaDB → MariaDB and MariaDB → PostgreSQL), each on servers of its own, each with its own
//! section in the docs. Every size has a full default and a `--quick` default for developing
//! the harness; a flag given explicitly wins over both.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// pgbench clients in the backlog and latency workloads (`pgbench -c 4`).
pub(crate) const PGBENCH_CLIENTS: u32 = 4;
/// pgbench worker threads: one per core of the 2-core machine the targets were set on.
pub(crate) const PGBENCH_THREADS: u32 = 2;

/// Full run: `pgbench -i -s 50` is 5,000,000 pgbench_accounts rows.
const FULL_SCALE: u32 = 50;
/// Full run: three runs per contender, so a median means something.
const FULL_RUNS: u32 = 3;
/// Full run: `pgbench -c 4 -t 20000`.
const FULL_BACKLOG_TRANSACTIONS: u32 = 20_000;
/// Full run: `pgbench -c 4 -T 60`.
const FULL_LATENCY_SECONDS: u64 = 60;
/// Full run: one 1,000,000-row transaction.
const FULL_BIGTX_ROWS: u64 = 1_000_000;
/// Rows of the wide (TOASTed) table per pgbench scale unit: 50,000 rows (~300 MB) at scale 50.
const WIDE_ROWS_PER_SCALE: u64 = 1_000;

/// Full MariaDB suite: scale 30 is 3,000,000 pgbench_accounts rows (~500 MB of InnoDB data);
/// the suite's three runs of every contender take about 5 minutes on 2 cores, and the
/// snapshots run long enough (5–12 s) that Ferry's fixed second of `synced` confirmation
/// does not decide them.
const MARIADB_FULL_SCALE: u32 = 30;
/// Full MariaDB suite: 4 clients × 20,000 transactions (as the PostgreSQL suite's pgbench)
/// written while the replicators stop.
const MARIADB_FULL_BACKLOG_TRANSACTIONS: u32 = 20_000;

/// Quick run: small enough that the whole matrix finishes in a few minutes on 2 cores.
const QUICK_SCALE: u32 = 2;
const QUICK_RUNS: u32 = 1;
const QUICK_BACKLOG_TRANSACTIONS: u32 = 1_000;
const QUICK_LATENCY_SECONDS: u64 = 10;
const QUICK_BIGTX_ROWS: u64 = 100_000;

/// Ferry and its peers on the same data, on throwaway database servers, in one run.
///
/// Runs every selected contender on every selected workload, alternating contenders run by
/// run (A B C, A B C, …) so drift on a shared machine hits them all alike, then prints
/// medians, min–max and Ferry's ratio to each peer, and writes them to docs/benchmarks.md.
#[derive(Parser, Debug)]
#[command(name = "ferry-bench")]
pub(crate) struct Args {
    /// Which servers: PostgreSQL → PostgreSQL, or MariaDB → MariaDB and MariaDB → PostgreSQL
    /// [default: the suite of the workloads given, else postgres].
    #[arg(long)]
    suite: Option<Suite>,
    /// pgbench scale of the source data (100,000 pgbench_accounts rows each)
    /// [full: 50, mariadb suite 30; quick: 2].
    #[arg(long)]
    scale: Option<u32>,
    /// Runs per contender and workload; the table shows medians [full: 3, quick: 1].
    #[arg(long)]
    runs: Option<u32>,
    /// Workloads to run, comma-separated [default: all of the suite's].
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Contenders to run, comma-separated; each runs the workloads it supports [default: all].
    #[arg(long, value_delimiter = ',')]
    contenders: Vec<Contender>,
    /// Backlog workloads: transactions per client (`-t`) [full: 20000; quick: 1000].
    #[arg(long)]
    backlog_transactions: Option<u32>,
    /// Latency workload: seconds of pgbench load (`-T`) [full: 60, quick: 10].
    #[arg(long)]
    latency_seconds: Option<u64>,
    /// Latency workload: hold pgbench to this many transactions a second (`-R`) instead of
    /// as many as the machine runs [default: unthrottled]. Unthrottled, the load takes every
    /// core and every process on the way waits for one. Does not write the docs unless
    /// --docs is given.
    #[arg(long)]
    latency_rate: Option<u32>,
    /// Big-transaction workload: rows inserted by the one transaction [full: 1M, quick: 100k].
    #[arg(long)]
    bigtx_rows: Option<u64>,
    /// Rows of the wide TOASTed table in the snapshot [default: 1000 × scale].
    #[arg(long)]
    wide_rows: Option<u64>,
    /// Development mode: small data, one run, short windows; does not write the docs.
    #[arg(long)]
    quick: bool,
    /// The ferry binary to run (a release build; `bench/run` builds it).
    #[arg(long, default_value = "target/release/ferry")]
    ferry_bin: PathBuf,
    /// Markdown file whose results section is replaced with this run's results.
    #[arg(long, default_value = "docs/benchmarks.md")]
    docs: PathBuf,
    /// Do not write the docs file (implied by --quick and --latency-rate unless --docs is given
    /// explicitly).
    #[arg(long)]
    no_docs: bool,
    /// Copy each Ferry server's log into this directory, numbered in run order
    /// (`007-ferry-maria.log`): where a run's time went, or why it failed.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
}

/// One benchmark scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Workload {
    /// Initial copy of pgbench's tables plus a wide TOASTed table into an empty target.
    Snapshot,
    /// Replicator stopped, pgbench writes a backlog, replicator restarted: time to drain.
    Backlog,
    /// Steady streaming under pgbench load, with an end-to-end latency probe.
    Latency,
    /// One transaction inserting many rows: time from its commit until synced.
    Bigtx,
    /// MariaDB → MariaDB: the pgbench-like tables plus a wide table into an empty target.
    MariadbSnapshot,
    /// MariaDB → PostgreSQL: the same tables into an empty PostgreSQL database.
    MariadbPgSnapshot,
    /// MariaDB → MariaDB: replicator stopped, 4 clients write a backlog, time to drain.
    MariadbBacklog,
}

impl Workload {
    /// The PostgreSQL suite's workloads.
    pub(crate) const POSTGRES: [Workload; 4] = [
        Workload::Snapshot,
        Workload::Backlog,
        Workload::Latency,
        Workload::Bigtx,
    ];

    /// The MariaDB suite's workloads.
    pub(crate) const MARIADB: [Workload; 3] = [
        Workload::MariadbSnapshot,
        Workload::MariadbPgSnapshot,
        Workload::MariadbBacklog,
    ];

    /// The suite this workload belongs to.
    pub(crate) fn suite(self) -> Suite {
        if Workload::MARIADB.contains(&self) {
            Suite::Mariadb
        } else {
            Suite::Postgres
        }
    }
}

/// The servers a run starts and the workloads it may run; one docs section each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Suite {
    /// PostgreSQL → PostgreSQL and the stream sinks (issues 4 and 13).
    Postgres,
    /// MariaDB → MariaDB and MariaDB → PostgreSQL (issue 12).
    Mariadb,
}

impl Suite {
    /// The suite's workloads, all of which run when `--workloads` is not given.
    pub(crate) fn workloads(self) -> &'static [Workload] {
        match self {
            Suite::Postgres => &Workload::POSTGRES,
            Suite::Mariadb => &Workload::MARIADB,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Workload::Snapshot => "snapshot",
            Workload::Backlog => "backlog",
            Workload::Latency => "latency",
            Workload::Bigtx => "bigtx",
            Workload::MariadbSnapshot => "mariadb-snapshot",
            Workload::MariadbPgSnapshot => "mariadb-pg-snapshot",
            Workload::MariadbBacklog => "mariadb-backlog",
        })
    }
}

/// A tool that moves the data, or a limit that bounds what any tool can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Contender {
    /// PostgreSQL's own logical replication: publication + subscription (`copy_data`).
    Native,
    /// `pg_dump | psql`: schema, data, then indexes, one stream.
    PgDump,
    /// `pgcopydb clone`: parallel COPY, then parallel index builds.
    Pgcopydb,
    /// Read limit: `COPY … TO STDOUT` of every table into /dev/null.
    CopyOut,
    /// Write limit: `COPY … FROM STDIN` into a target without indexes, from files.
    CopyIn,
    /// Decode limit: `pg_recvlogical` with pgoutput writing the stream to /dev/null.
    Recvlogical,
    /// Ferry into a PostgreSQL target.
    Ferry,
    /// The same with `snapshot_bulk: false`: chunks decoded into rows and encoded again.
    FerryRows,
    /// Ferry into its `blackhole://` sink: the source side alone.
    FerryBlackhole,
    /// Ferry into `file://` (Debezium JSON lines) in a temp dir.
    FerryFile,
    /// Ferry into `nats://` (JetStream) on a throwaway `nats-server -js`.
    FerryNats,
    /// Ferry into `kafka://` on librdkafka's mock cluster, hosted in the harness.
    FerryKafka,
    /// Ferry into an `http://` webhook: a receiver in the harness that answers 200.
    FerryWebhook,
    /// Ferry from MariaDB into MariaDB.
    FerryMaria,
    /// Ferry from MariaDB into PostgreSQL.
    FerryMariaPg,
    /// MariaDB's own replication: a replica with `MASTER_USE_GTID=slave_pos`.
    MariaReplica,
    /// `mydumper`, then `myloader`: parallel dump to files, parallel load.
    Mydumper,
    /// `pgloader mysql://… postgresql://…`.
    Pgloader,
}

impl Contender {
    pub(crate) const ALL: [Contender; 18] = [
        Contender::Native,
        Contender::PgDump,
        Contender::Pgcopydb,
        Contender::CopyOut,
        Contender::CopyIn,
        Contender::Recvlogical,
        Contender::Ferry,
        Contender::FerryRows,
        Contender::FerryBlackhole,
        Contender::FerryFile,
        Contender::FerryNats,
        Contender::FerryKafka,
        Contender::FerryWebhook,
        Contender::FerryMaria,
        Contender::FerryMariaPg,
        Contender::MariaReplica,
        Contender::Mydumper,
        Contender::Pgloader,
    ];

    /// The stream sinks (issue 13), measured against the blackhole.
    pub(crate) const STREAMS: [Contender; 4] = [
        Contender::FerryFile,
        Contender::FerryNats,
        Contender::FerryKafka,
        Contender::FerryWebhook,
    ];

    /// Whether this contender is a `ferry server` with a changefeed.
    pub(crate) fn is_ferry(self) -> bool {
        matches!(
            self,
            Contender::Ferry
                | Contender::FerryRows
                | Contender::FerryBlackhole
                | Contender::FerryMaria
                | Contender::FerryMariaPg
        ) || self.is_stream()
    }

    /// Whether this contender is Ferry into a stream sink: one event per row (change), a
    /// destination the harness sets up per run, and a count of events instead of rows.
    pub(crate) fn is_stream(self) -> bool {
        Contender::STREAMS.contains(&self)
    }

    /// Whether this contender has something to say about `workload`.
    pub(crate) fn runs(self, workload: Workload) -> bool {
        use Contender::*;
        match workload {
            Workload::Snapshot => {
                self.is_stream()
                    || matches!(
                        self,
                        Native
                            | PgDump
                            | Pgcopydb
                            | CopyOut
                            | CopyIn
                            | Ferry
                            | FerryRows
                            | FerryBlackhole
                    )
            }
            Workload::Backlog => {
                self.is_stream() || matches!(self, Native | Recvlogical | Ferry | FerryBlackhole)
            }
            Workload::Bigtx => matches!(self, Native | Recvlogical | Ferry | FerryBlackhole),
            Workload::Latency => matches!(self, Native | Ferry),
            Workload::MariadbSnapshot => matches!(self, FerryMaria | Mydumper),
            Workload::MariadbPgSnapshot => matches!(self, FerryMariaPg | Pgloader),
            Workload::MariadbBacklog => matches!(self, FerryMaria | MariaReplica),
        }
    }

    /// How the contender is named in the results tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Contender::Native => "native logical replication",
            Contender::PgDump => "pg_dump \\| psql",
            Contender::Pgcopydb => "pgcopydb clone",
            Contender::CopyOut => "limit: COPY TO /dev/null (read)",
            Contender::CopyIn => "limit: COPY FROM, no indexes (write)",
            Contender::Recvlogical => "limit: pg_recvlogical pgoutput (decode)",
            Contender::Ferry => "**Ferry → postgres**",
            Contender::FerryRows => "Ferry → postgres (rows path)",
            Contender::FerryBlackhole => "Ferry → blackhole",
            Contender::FerryFile => "Ferry → file (JSON lines, fsynced)",
            Contender::FerryNats => "Ferry → NATS JetStream (nats-server, file store)",
            Contender::FerryKafka => "Ferry → Kafka (librdkafka mock broker)",
            Contender::FerryWebhook => "Ferry → webhook (local receiver, 200s)",
            Contender::FerryMaria => "**Ferry → mariadb**",
            Contender::FerryMariaPg => "**Ferry → postgres**",
            Contender::MariaReplica => "MariaDB replica (GTID, defaults)",
            Contender::Mydumper => "mydumper, then myloader",
            Contender::Pgloader => "pgloader",
        }
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .to_possible_value()
            .expect("no contender is skipped by clap");
        f.pad(name.get_name())
    }
}

/// What one invocation will do, with every default resolved.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) suite: Suite,
    pub(crate) scale: u32,
    pub(crate) runs: u32,
    pub(crate) workloads: Vec<Workload>,
    pub(crate) contenders: Vec<Contender>,
    pub(crate) backlog_transactions: u32,
    pub(crate) latency_window: Duration,
    /// pgbench's rate in the latency workload (`-R`); `None`: unthrottled.
    pub(crate) latency_rate: Option<u32>,
    pub(crate) bigtx_rows: u64,
    pub(crate) wide_rows: u64,
    pub(crate) quick: bool,
    pub(crate) ferry_bin: PathBuf,
    /// Where each Ferry server's log is copied (`--keep-logs`).
    pub(crate) keep_logs: Option<PathBuf>,
    /// Where to write the results section; `None` for quick, throttled (`--latency-rate`)
    /// or `--no-docs` runs unless `--docs` is given.
    pub(crate) docs: Option<PathBuf>,
}

impl Plan {
    /// Resolves the flags: explicit values, else the quick or full defaults.
    pub(crate) fn from_args(args: Args, docs_given: bool) -> anyhow::Result<Plan> {
        let quick = args.quick;
        let suite = suite_of(args.suite, &args.workloads)?;
        let pick = |full, fast| if quick { fast } else { full };
        let pick_u64 = |full, fast| if quick { fast } else { full };
        let (full_scale, full_backlog) = match suite {
            Suite::Postgres => (FULL_SCALE, FULL_BACKLOG_TRANSACTIONS),
            Suite::Mariadb => (MARIADB_FULL_SCALE, MARIADB_FULL_BACKLOG_TRANSACTIONS),
        };
        let scale = args.scale.unwrap_or(pick(full_scale, QUICK_SCALE));
        anyhow::ensure!(scale > 0, "--scale must be > 0");
        let runs = args.runs.unwrap_or(pick(FULL_RUNS, QUICK_RUNS));
        anyhow::ensure!(runs > 0, "--runs must be > 0");
        anyhow::ensure!(args.latency_rate != Some(0), "--latency-rate must be > 0");
        // A throttled latency load is not the issues' workload: not written as the record.
        let partial = quick || args.latency_rate.is_some();
        let docs = if args.no_docs || (partial && !docs_given) {
            None
        } else {
            Some(args.docs)
        };
        Ok(Plan {
            suite,
            scale,
            runs,
            workloads: dedup(args.workloads, suite.workloads()),
            contenders: dedup(args.contenders, &Contender::ALL),
            backlog_transactions: args
                .backlog_transactions
                .unwrap_or(pick(full_backlog, QUICK_BACKLOG_TRANSACTIONS)),
            latency_window: Duration::from_secs(
                args.latency_seconds
                    .unwrap_or(pick_u64(FULL_LATENCY_SECONDS, QUICK_LATENCY_SECONDS)),
            ),
            latency_rate: args.latency_rate,
            bigtx_rows: args
                .bigtx_rows
                .unwrap_or(pick_u64(FULL_BIGTX_ROWS, QUICK_BIGTX_ROWS)),
            wide_rows: args
                .wide_rows
                .unwrap_or(WIDE_ROWS_PER_SCALE * u64::from(scale)),
            quick,
            ferry_bin: args.ferry_bin,
            keep_logs: args.keep_logs,
            docs,
        })
    }

    /// The contenders that run `workload`, in the order given.
    pub(crate) fn contenders_for(&self, workload: Workload) -> Vec<Contender> {
        self.contenders
            .iter()
            .copied()
            .filter(|c| c.runs(workload))
            .collect()
    }
}

/// The suite asked for, or the one `workloads` belong to; an error when they mix suites or
/// do not belong to the one asked for (each suite starts servers of its own).
fn suite_of(asked: Option<Suite>, workloads: &[Workload]) -> anyhow::Result<Suite> {
    let suite = asked
        .or_else(|| workloads.first().map(|w| w.suite()))
        .unwrap_or(Suite::Postgres);
    if let Some(other) = workloads.iter().find(|w| w.suite() != suite) {
        anyhow::bail!(
            "workload {other} is not in the {suite:?} suite: run the PostgreSQL and the MariaDB \
             workloads in separate invocations (--suite postgres / --suite mariadb)"
        );
    }
    Ok(suite)
}

/// `list` without repeats, in order; `all` when `list` is empty.
fn dedup<T: Copy + PartialEq>(list: Vec<T>, all: &[T]) -> Vec<T> {
    let list = if list.is_empty() { all.to_vec() } else { list };
    let mut unique = Vec::with_capacity(list.len());
    for item in list {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(argv: &[&str]) -> Plan {
        let args = Args::try_parse_from(std::iter::once("ferry-bench").chain(argv.iter().copied()))
            .expect("valid flags");
        Plan::from_args(args, argv.iter().any(|a| a.starts_with("--docs"))).expect("valid plan")
    }

    #[test]
    fn quick_shrinks_everything_but_explicit_flags_win() {
        let quick = plan(&["--quick", "--runs", "2"]);
        assert_eq!((quick.scale, quick.runs, quick.wide_rows), (2, 2, 2_000));
        assert!(quick.docs.is_none());
        let full = plan(&[]);
        assert_eq!((full.scale, full.runs, full.bigtx_rows), (50, 3, 1_000_000));
        assert_eq!(full.docs, Some(PathBuf::from("docs/benchmarks.md")));
        assert!(plan(&["--quick", "--docs", "x.md"]).docs.is_some());
        let throttled = plan(&["--latency-rate", "2000"]);
        assert_eq!(throttled.latency_rate, Some(2000));
        assert!(throttled.docs.is_none());
        assert!(plan(&["--latency-rate", "2000", "--docs", "x.md"])
            .docs
            .is_some());
        let zero = Args::try_parse_from(["ferry-bench", "--latency-rate", "0"]).expect("parses");
        assert!(Plan::from_args(zero, false).is_err());
    }

    #[test]
    fn lists_default_to_all_and_drop_repeats() {
        let p = plan(&[
            "--workloads",
            "bigtx,snapshot,bigtx",
            "--contenders",
            "ferry,native",
        ]);
        assert_eq!(p.workloads, vec![Workload::Bigtx, Workload::Snapshot]);
        assert_eq!(p.contenders_for(Workload::Latency).len(), 2);
        assert_eq!(plan(&[]).contenders_for(Workload::Snapshot).len(), 12);
        assert_eq!(plan(&[]).contenders_for(Workload::Backlog).len(), 8);
        assert_eq!(plan(&[]).contenders_for(Workload::Bigtx).len(), 4);
        assert_eq!(Contender::FerryKafka.to_string(), "ferry-kafka");
        assert!(Contender::FerryWebhook.is_ferry() && !Contender::FerryBlackhole.is_stream());
        assert_eq!(Contender::FerryBlackhole.to_string(), "ferry-blackhole");
        assert_eq!(Contender::FerryRows.to_string(), "ferry-rows");
        assert_eq!(Contender::PgDump.to_string(), "pg-dump");
    }

    #[test]
    fn the_mariadb_suite_has_its_own_workloads_and_sizes() {
        let p = plan(&["--suite", "mariadb"]);
        assert_eq!(p.workloads, Workload::MARIADB);
        assert_eq!((p.scale, p.backlog_transactions), (30, 20_000));
        let names: Vec<String> = Workload::MARIADB
            .iter()
            .flat_map(|w| p.contenders_for(*w))
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "ferry-maria",
                "mydumper",
                "ferry-maria-pg",
                "pgloader",
                "ferry-maria",
                "maria-replica"
            ]
        );
        let implied = plan(&["--quick", "--workloads", "mariadb-backlog"]);
        assert_eq!((implied.suite, implied.scale), (Suite::Mariadb, 2));
        assert_eq!(
            Workload::MariadbPgSnapshot.to_string(),
            "mariadb-pg-snapshot"
        );
        let mixed =
            Args::try_parse_from(["ferry-bench", "--workloads", "snapshot,mariadb-backlog"])
                .expect("valid flags");
        assert!(Plan::from_args(mixed, false).is_err());
        assert_eq!(plan(&[]).suite, Suite::Postgres);
    }
}
