//! The MariaDB suite (issue 12): Ferry from MariaDB, side by side with what MariaDB users
//! would pick, in one run on servers of its own.
//!
//! | workload | contenders | clock starts | clock stops |
//! |---|---|---|---|
//! | `mariadb-snapshot` | `ferry-maria`, `mydumper` (then myloader) | POST / the dump starts | `/synced` / myloader exits |
//! | `mariadb-pg-snapshot` | `ferry-maria-pg`, `pgloader` | POST / pgloader starts | `/synced` / pgloader exits |
//! | `mariadb-backlog` | `ferry-maria`, `maria-replica` | server restarted / `START SLAVE` | applied up to the source's `@@gtid_binlog_pos` |
//!
//! ```text
//! plan ─► MariaTestbed: source + target mariadbd, target PostgreSQL, `bench` loaded once
//!      ─► crate::run_all: workloads × runs × contenders, each run from prepare_run,
//!         checked by verify (row counts + checksums) ─► report (its own docs section)
//! ```
//!
//! - [`testbed`]: the servers, their settings, the data, the reset between runs.
//! - [`snapshot`], [`backlog`]: the workloads; [`replica`]: MariaDB's own replication.
//! - [`verify`]: the target holds what the source holds; [`crate::servers`]: the
//!   servers' CPU during each timed part; [`report`]: the section.

mod backlog;
mod replica;
pub(crate) mod report;
mod snapshot;
mod testbed;
mod verify;

use std::time::{Duration, Instant};

use crate::machine::{self, Machine};
use crate::measurement::Measurement;
use crate::plan::{Contender, Plan, Workload};
use crate::servers::ServerProcesses;
use crate::{command_line, run_all, wants};
use testbed::{MariaTestbed, PG_TARGET_DB};

/// How long a replicator may take to copy or catch up before the run counts as failed: at
/// scale 10 everything takes seconds, so a few minutes mean a hang, and a hung run should not
/// hold up the rest for the PostgreSQL suite's 30 minutes.
pub(crate) fn timeout(plan: &Plan) -> Duration {
    Duration::from_secs(120 + 15 * u64::from(plan.scale))
}

/// The servers whose CPU the suite samples in each timed part ([`crate::servers`]), as the
/// report names them.
pub(crate) const SERVERS: [&str; 3] = ["source mariadbd", "target mariadbd", "target postgres"];

/// CPU seconds of each server, in [`SERVERS`] order.
pub(crate) type ServersCpu = [f64; 3];

/// The suite's servers, in [`SERVERS`] order.
pub(crate) type Servers = ServerProcesses<3>;

/// Where a timed part's work happened, besides the contender's own CPU: the servers' CPU
/// and, for Ferry's snapshots, the copy's own seconds from its log (`snapshot done`); the
/// rest of Ferry's wall time is the stream's start and the wait until the source's position
/// is confirmed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Breakdown {
    pub(crate) cpu: ServersCpu,
    pub(crate) ferry_copy_seconds: Option<f64>,
}

/// Where a snapshot goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The target MariaDB server (database `bench`).
    Maria,
    /// The PostgreSQL cluster (schema `bench` of database `target`).
    Postgres,
}

/// Runs the MariaDB suite and returns its section of the report.
pub(crate) fn suite(plan: &Plan) -> anyhow::Result<String> {
    let tools = check_tools(plan)?;
    let started = Instant::now();
    let started_at = machine::utc_now();
    let load_before = machine::load_average();
    let machine = Machine::describe();
    let testbed = MariaTestbed::start(plan)?;
    let servers = testbed.server_processes()?;
    let mut breakdowns = Vec::new();
    let results = run_all(plan, |workload, contender| {
        let (measurement, breakdown) = run(&testbed, &servers, plan, workload, contender)?;
        breakdowns.push((workload, contender, breakdown));
        Ok(measurement)
    });
    let mut software = vec![
        format!(
            "MariaDB {}",
            testbed.source_session()?.query_text("SELECT VERSION()")?
        ),
        format!(
            "PostgreSQL {}",
            testbed.pg.psql("postgres", "SHOW server_version")
        ),
    ];
    software.extend(tools);
    software.push(format!(
        "ferry {} (release build)",
        machine::ferry_revision()
    ));
    let context = report::Context {
        plan,
        dataset: &testbed.dataset,
        machine: &machine,
        command: command_line(),
        started_at,
        minutes: started.elapsed().as_secs_f64() / 60.0,
        load_before,
        load_after: machine::load_average(),
        software,
        breakdowns: &breakdowns,
    };
    Ok(report::render(&context, &results))
}

/// Runs `contender` once on `workload`; also returns where the timed part's work happened.
fn run(
    testbed: &MariaTestbed,
    servers: &Servers,
    plan: &Plan,
    workload: Workload,
    contender: Contender,
) -> anyhow::Result<(Measurement, Breakdown)> {
    match workload {
        Workload::MariadbSnapshot => {
            snapshot::run(testbed, servers, plan, contender, Target::Maria)
        }
        Workload::MariadbPgSnapshot => {
            snapshot::run(testbed, servers, plan, contender, Target::Postgres)
        }
        Workload::MariadbBacklog => backlog::run(testbed, servers, plan, contender),
        other => anyhow::bail!("{other} is not in the MariaDB suite"),
    }
}

/// The changefeed's `sink_uri` for `target`.
pub(crate) fn ferry_uri(testbed: &MariaTestbed, target: Target) -> String {
    match target {
        Target::Maria => testbed.target.uri(""),
        Target::Postgres => testbed.pg.uri(PG_TARGET_DB),
    }
}

/// Checks that the peers the plan runs are installed; returns their versions.
fn check_tools(plan: &Plan) -> anyhow::Result<Vec<String>> {
    let mut versions = Vec::new();
    for (contender, programs, package) in [
        (
            Contender::Mydumper,
            &["mydumper", "myloader"][..],
            "mydumper",
        ),
        (Contender::Pgloader, &["pgloader"][..], "pgloader"),
    ] {
        if !wants(plan, contender) {
            continue;
        }
        for program in programs {
            let version = snapshot::version(program).ok_or_else(|| {
                anyhow::anyhow!(
                    "{program} is not installed: `apt-get install -y {package}` (bench/run \
                     does), or leave {contender} out with --contenders"
                )
            })?;
            versions.push(version);
        }
    }
    Ok(versions)
}
