//! `ferry-bench`: Ferry and its peers on the same data, on the same machine, in the same run.
//!
//! `bench/run` builds Ferry and this harness in release mode and runs it. One invocation:
//!
//! ```text
//! plan (flags) ─► testbed: source + target servers of the suite, data loaded once
//!              ─► for each workload, for run 1..=N, for each contender:   (A B C, A B C, …)
//!                     prepare_run ─► the contender's timed part ─► verify the target
//!              ─► report: medians, min–max, Ferry's ratios, targets ─► stdout,
//!                 target/bench/results-<date>.md, the suite's section of docs/benchmarks.md
//! ```
//!
//! Two suites, one per invocation: PostgreSQL → PostgreSQL (the modules below) and MariaDB
//! → MariaDB / PostgreSQL ([`maria`], with servers, data and workloads of its own).
//!
//! - [`plan`]: flags, workloads, contenders, sizes (full and `--quick`).
//! - [`testbed`]: the clusters, their settings, the data, the reset between runs.
//! - [`replicator`]: native logical replication and Ferry behind one interface.
//! - [`workload`]: snapshot, backlog, latency, bigtx — what each times and how.
//! - [`peer_process`]: peers that are processes (pg_dump, pgcopydb, …) and their CPU/RSS.
//! - [`servers`]: the servers' CPU in each timed part.
//! - [`measurement`], [`report`], [`targets`], [`machine`]: numbers, tables, context.
//!
//! A run that fails (a contender errors out, times out or loses rows) is reported as failed
//! and the next run starts from a clean [`testbed::Testbed::prepare_run`]; one bad run does
//! not cost the whole benchmark.

mod db;
mod machine;
mod maria;
mod measurement;
mod peer_process;
mod plan;
mod replicator;
mod report;
mod servers;
mod targets;
mod testbed;
mod workload;

use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use crate::machine::Machine;
use crate::measurement::{Measurement, Results};
use crate::plan::{Args, Contender, Plan, Suite, Workload};
use crate::testbed::Testbed;

/// Where every run's report is kept, whatever `--docs` says.
const RESULTS_DIR: &str = "target/bench";

fn main() -> anyhow::Result<()> {
    let matches = Args::command().get_matches();
    let docs_given = matches.value_source("docs") == Some(ValueSource::CommandLine);
    let args = Args::from_arg_matches(&matches)?;
    let plan = Plan::from_args(args, docs_given)?;
    check_ferry(&plan)?;
    println!("plan: {plan:?}");
    let (section, markers) = match plan.suite {
        Suite::Postgres => (
            postgres_suite(&plan)?,
            (report::BEGIN_MARKER, report::END_MARKER),
        ),
        Suite::Mariadb => (maria::suite(&plan)?, maria::report::MARKERS),
    };
    println!("\n{section}");
    let saved = save_results(&section)?;
    println!("saved to {}", saved.display());
    if let Some(docs) = &plan.docs {
        report::write_docs(docs, &section, markers)?;
        println!("wrote the results into {}", docs.display());
    }
    Ok(())
}

/// The PostgreSQL suite: its clusters, every run, its section of the report.
fn postgres_suite(plan: &Plan) -> anyhow::Result<String> {
    let pgcopydb = check_pgcopydb(plan)?;
    let started = Instant::now();
    let started_at = machine::utc_now();
    let load_before = machine::load_average();
    // Read now, as the binary was built: the tree may change while the run goes on.
    let ferry_revision = machine::ferry_revision();
    let machine = Machine::describe();
    let testbed = Testbed::start(plan)?;
    let results = run_all(plan, |workload, contender| {
        workload::run(&testbed, plan, workload, contender)
    });
    let context = report::Context {
        plan,
        testbed: &testbed,
        machine: &machine,
        command: command_line(),
        started_at,
        minutes: started.elapsed().as_secs_f64() / 60.0,
        load_before,
        load_after: machine::load_average(),
        postgres: testbed.server_version(),
        pgcopydb,
        ferry_revision,
    };
    Ok(report::render(&context, &results))
}

/// Every workload of the plan, run by run, each contender once per run (A B C, A B C, …).
pub(crate) fn run_all(
    plan: &Plan,
    mut run: impl FnMut(Workload, Contender) -> anyhow::Result<Measurement>,
) -> Results {
    let mut results = Results::default();
    for &workload in &plan.workloads {
        let contenders = plan.contenders_for(workload);
        for number in 1..=plan.runs {
            for &contender in &contenders {
                print!("[{workload:<8} {number}/{}] {contender:<15} ", plan.runs);
                let _ = std::io::stdout().flush();
                let outcome = run_once(|| run(workload, contender));
                println!("{}", summary(&outcome));
                results.push(workload, contender, outcome);
            }
        }
    }
    results
}

/// How the benchmark was invoked: `bench/run`'s command line, else the harness's.
pub(crate) fn command_line() -> String {
    std::env::var("FERRY_BENCH_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "))
}

/// Runs one contender once, turning errors and panics (the testkit panics on failures)
/// into a failed run.
fn run_once(run: impl FnOnce() -> anyhow::Result<Measurement>) -> Result<Measurement, String> {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(measurement)) => Ok(measurement),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".to_owned())),
    }
}

/// One line about a run, for the progress output.
fn summary(outcome: &Result<Measurement, String>) -> String {
    match outcome {
        Ok(m) => {
            let mut text = format!(
                "{:8.2} s  {:>10.0} rows/s  {:7.1} MB/s",
                m.wall.as_secs_f64(),
                m.rows_per_second(),
                m.mb_per_second()
            );
            if let Some(usage) = m.usage {
                text.push_str(&format!(
                    "  cpu {:.2} s  rss {:.0} MB",
                    usage.cpu_seconds,
                    usage.peak_rss_kib as f64 * 1024.0 / 1e6
                ));
            }
            if let Some(l) = &m.latency {
                text.push_str(&format!(
                    "  p50 {:.1} p95 {:.1} p99 {:.1} max {:.1} ms  probes {}/{}  tps {:.0}  \
                     catch-up {:.2} s",
                    l.p50_ms,
                    l.p95_ms,
                    l.p99_ms,
                    l.max_ms,
                    l.probes_seen,
                    l.probes_written,
                    l.source_tps,
                    l.catch_up.as_secs_f64()
                ));
            }
            text
        }
        Err(error) => format!("FAILED: {error}"),
    }
}

/// Whether the plan runs `contender` on any of its workloads.
pub(crate) fn wants(plan: &Plan, contender: Contender) -> bool {
    plan.contenders.contains(&contender) && plan.workloads.iter().any(|w| contender.runs(*w))
}

/// Checks that the ferry binary is there when a Ferry contender runs.
fn check_ferry(plan: &Plan) -> anyhow::Result<()> {
    if Contender::ALL
        .iter()
        .any(|c| c.is_ferry() && wants(plan, *c))
    {
        anyhow::ensure!(
            plan.ferry_bin.is_file(),
            "no ferry binary at {}; build it with `cargo build --release -p ferry` (bench/run \
             does)",
            plan.ferry_bin.display()
        );
    }
    Ok(())
}

/// Checks that pgcopydb is there when it runs; returns its version.
fn check_pgcopydb(plan: &Plan) -> anyhow::Result<Option<String>> {
    if !wants(plan, Contender::Pgcopydb) {
        return Ok(None);
    }
    let version = machine::tool_version(Path::new("pgcopydb"), &["--version"]);
    anyhow::ensure!(
        version.is_some(),
        "pgcopydb is not installed: `apt-get install -y pgcopydb` (bench/run does), or leave \
         it out with --contenders"
    );
    Ok(version)
}

/// Keeps the report under `target/bench/`, named by the time it was written.
fn save_results(section: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(RESULTS_DIR).context("create target/bench")?;
    let stamp = machine::utc_now().replace([' ', ':'], "-");
    let path = Path::new(RESULTS_DIR).join(format!("results-{stamp}.md"));
    std::fs::write(&path, section).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}
