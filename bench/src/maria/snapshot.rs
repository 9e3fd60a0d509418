//! The MariaDB snapshots: the pgbench-like tables and the wide table (all of `bench`) into an
//! empty MariaDB target (`mariadb-snapshot`) or an empty PostgreSQL database
//! (`mariadb-pg-snapshot`).
//!
//! - **ferry-maria**, **ferry-maria-pg**: server started (untimed); timed from `POST` until
//!   `/synced` is true. Default options (4 snapshot workers).
//! - **mydumper**: `mydumper -B bench -o DIR`, then `myloader -d DIR`, timed whole (Debian's
//!   0.10 cannot stream one into the other), both at their defaults: 4 threads each, no
//!   chunking by rows (one file per table), myloader 1,000 statements per transaction and no
//!   binlog for its sessions.
//! - **pgloader**: `pgloader mysql://…/bench postgresql://…/target`, timed whole, at its
//!   defaults (4 workers, 25,000-row batches; schema `bench` created with the tables, keys
//!   and indexes built after the data, sequences reset).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use ferry_testkit::mariadb::{MARIADB_PASSWORD, MARIADB_USER};

use crate::maria::testbed::{snapshot_tables, MariaTestbed, DATABASE, PG_TARGET_DB};
use crate::maria::{ferry_uri, timeout, verify, Breakdown, Servers, Target};
use crate::measurement::Measurement;
use crate::peer_process::{self, ProcessUsage};
use crate::plan::{Contender, Plan};
use crate::replicator::FerryChangefeed;

/// Runs one snapshot of `contender` into `target`; also returns where the timed part's
/// work happened.
pub(super) fn run(
    testbed: &MariaTestbed,
    servers: &Servers,
    plan: &Plan,
    contender: Contender,
    target: Target,
) -> anyhow::Result<(Measurement, Breakdown)> {
    testbed.prepare_run()?;
    let tables = snapshot_tables();
    let (wall, usage, breakdown) = match contender {
        Contender::FerryMaria | Contender::FerryMariaPg => {
            ferry(testbed, servers, plan, target, &tables)?
        }
        Contender::Mydumper => mydumper(testbed, servers, plan)?,
        Contender::Pgloader => pgloader(testbed, servers, plan)?,
        other => anyhow::bail!("{other} has no MariaDB snapshot"),
    };
    verify::same_rows(testbed, target, &tables)?;
    let measurement = Measurement {
        wall,
        rows: testbed.dataset.snapshot_rows,
        bytes: testbed.dataset.snapshot_bytes,
        usage,
        servers_cpu: None,
        latency: None,
    };
    Ok((measurement, breakdown))
}

type Timed = (Duration, Option<ProcessUsage>, Breakdown);

fn ferry(
    testbed: &MariaTestbed,
    servers: &Servers,
    plan: &Plan,
    target: Target,
    tables: &[&str],
) -> anyhow::Result<Timed> {
    let contender = match target {
        Target::Maria => Contender::FerryMaria,
        Target::Postgres => Contender::FerryMariaPg,
    };
    let ferry = FerryChangefeed::start_bare(plan, contender)?;
    let clock = servers.clock();
    ferry.create_between(
        &testbed.source.uri(DATABASE),
        &ferry_uri(testbed, target),
        tables,
    )?;
    ferry.wait_synced(timeout(plan))?;
    let (wall, cpu) = clock.stop();
    let usage = ferry.usage();
    let breakdown = Breakdown {
        cpu,
        ferry_copy_seconds: copy_seconds(&ferry.log()),
    };
    ferry.finish()?;
    Ok((wall, usage, breakdown))
}

fn mydumper(testbed: &MariaTestbed, servers: &Servers, plan: &Plan) -> anyhow::Result<Timed> {
    let dir = testbed.scratch_path("mydumper");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).context("remove mydumper's old directory")?;
    }
    let log = testbed.scratch_path("mydumper.log");
    let mut dump = tool(plan, "mydumper", testbed.source.port(), &log)?;
    dump.args(["--database", DATABASE, "--outputdir"]).arg(&dir);
    let mut load = tool(plan, "myloader", testbed.target.port(), &log)?;
    load.arg("--directory").arg(&dir);
    let clock = servers.clock();
    let dumped = peer_process::run(dump, &bounded_name(plan, "mydumper"), &log)?;
    let loaded = peer_process::run(load, &bounded_name(plan, "myloader"), &log)?;
    let (wall, cpu) = clock.stop();
    let breakdown = Breakdown {
        cpu,
        ferry_copy_seconds: None,
    };
    Ok((wall, Some(dumped.plus(loaded)), breakdown))
}

fn pgloader(testbed: &MariaTestbed, servers: &Servers, plan: &Plan) -> anyhow::Result<Timed> {
    let root = testbed.scratch_path("pgloader");
    let log = testbed.scratch_path("pgloader.log");
    let mut load = bounded(plan, "pgloader");
    load.arg("--root-dir")
        .arg(&root)
        .arg(format!(
            "mysql://{MARIADB_USER}:{MARIADB_PASSWORD}@127.0.0.1:{}/{DATABASE}",
            testbed.source.port()
        ))
        .arg(format!(
            "postgresql://ferry@127.0.0.1:{}/{PG_TARGET_DB}",
            testbed.pg.port()
        ))
        .stdin(Stdio::null())
        // A fresh log per run: a failure is told by what this run printed.
        .stdout(std::fs::File::create(&log).context("create pgloader's log")?);
    let clock = servers.clock();
    let usage =
        peer_process::run(load, &bounded_name(plan, "pgloader"), &log).map_err(|error| {
            // Its last lines are SBCL's heap dump and debugger prompt; say what happened.
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            if log_text.contains("Heap exhausted") {
                error.context("pgloader ran out of its Lisp heap (SBCL: \"Heap exhausted\")")
            } else {
                error
            }
        })?;
    let (wall, cpu) = clock.stop();
    let breakdown = Breakdown {
        cpu,
        ferry_copy_seconds: None,
    };
    Ok((wall, Some(usage), breakdown))
}

/// mydumper or myloader on `127.0.0.1:port` as `ferry`, at its defaults otherwise, its
/// output going to `log` (where a failure's message is read from).
fn tool(plan: &Plan, program: &str, port: u16, log: &Path) -> anyhow::Result<Command> {
    let mut command = bounded(plan, program);
    command
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--user", MARIADB_USER, "--password", MARIADB_PASSWORD])
        .stdin(Stdio::null())
        .stdout(append(log)?);
    Ok(command)
}

/// The copy's seconds from the engine's `snapshot done … seconds=S` log line: the snapshot
/// from its consistent read to the last chunk, without the stream's start or the wait for
/// `synced`.
fn copy_seconds(log: &str) -> Option<f64> {
    let line = log.lines().rev().find(|l| l.contains("snapshot done"))?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("seconds="))?
        .parse()
        .ok()
}

/// `program` under coreutils' `timeout`, killed when it runs longer than the suite's
/// [`timeout`]: a hung peer fails its run instead of the benchmark. `timeout` waits for it,
/// so `wait4` still reports the program's CPU and peak RSS.
fn bounded(plan: &Plan, program: &str) -> Command {
    let mut command = Command::new("timeout");
    command
        .arg("--signal=KILL")
        .arg(timeout(plan).as_secs().to_string())
        .arg(program);
    command
}

/// How a [`bounded`] program is named in errors (exit status 137: the limit killed it).
fn bounded_name(plan: &Plan, program: &str) -> String {
    format!("{program} (limit {} s)", timeout(plan).as_secs())
}

/// `path` opened for appending: the tools print their progress and errors on stdout.
fn append(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}

/// The first line `program --version` prints, if it runs.
pub(crate) fn version(program: &str) -> Option<String> {
    crate::machine::tool_version(Path::new(program), &["--version"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_time_comes_from_the_snapshot_done_line() {
        let log = "2026-12-01T06:42:35Z  INFO x: consistent snapshot started readers=4\n\
                   2026-12-01T06:42:36Z  INFO ferry_engine::runner::snapshot: snapshot done \
                   changefeed=default/bench rows=202022 chunks=6 path=\"rows\" \
                   seconds=0.865930772 rows_per_sec=233300.4\n";
        assert_eq!(copy_seconds(log), Some(0.865930772));
        assert_eq!(copy_seconds("streaming"), None);
    }
}
