//! Workload 1, snapshot: copy pgbench's tables and the wide TOASTed table into an empty
//! target.
//!
//! - **native**: schema copied (untimed); timed from `CREATE SUBSCRIPTION` until every table
//!   is in state `r`.
//! - **pg-dump**: `pg_dump -t … | psql`, schema, data and indexes, timed whole.
//! - **pgcopydb**: `pgcopydb clone` of the same tables (its `--filters`), timed whole,
//!   default jobs; it also vacuums the copied tables, as it always does.
//! - **copy-out** (read limit): `COPY t TO STDOUT` of each table in turn through `psql` into
//!   /dev/null.
//! - **copy-in** (write limit): the same COPY text, dumped to files beforehand (untimed),
//!   loaded with `COPY t FROM STDIN` into tables without keys or indexes, one after another.
//! - **ferry**, **ferry-rows**, **ferry-blackhole**: server started (untimed); timed from
//!   `POST` until `/synced` is true. `ferry-rows` sets `snapshot_bulk: false`: the chunks go
//!   the row path (decoded from COPY text, encoded again by the sink), what a source of
//!   another kind costs.
//! - **ferry-file**, **ferry-nats**, **ferry-kafka**, **ferry-webhook**: the same, into a
//!   stream sink whose destination is set up with the server (untimed); checked by counting
//!   the events the destination got (one per row at least) instead of comparing rows.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::measurement::Measurement;
use crate::peer_process::{self, ProcessUsage};
use crate::plan::{Contender, Plan};
use crate::replicator::{FerryChangefeed, NativeSubscription, CATCH_UP_TIMEOUT};
use crate::testbed::{snapshot_tables, Testbed, SOURCE_DB, TARGET_DB};
use crate::workload::verify;

/// Runs one snapshot of `contender`.
pub(super) fn run(
    testbed: &Testbed,
    plan: &Plan,
    contender: Contender,
) -> anyhow::Result<Measurement> {
    testbed.prepare_run(&["public.pgbench_history"])?;
    let tables = snapshot_tables();
    let (wall, servers_cpu, usage) = match contender {
        Contender::Native => native(testbed, &tables)?,
        Contender::PgDump => pg_dump(testbed, &tables)?,
        Contender::Pgcopydb => pgcopydb(testbed, &tables)?,
        Contender::CopyOut => copy_out(testbed, &tables)?,
        Contender::CopyIn => copy_in(testbed, &tables)?,
        contender if contender.is_ferry() => ferry(testbed, plan, contender, &tables)?,
        _ => anyhow::bail!("{contender} has no snapshot"),
    };
    if !contender.is_stream()
        && !matches!(contender, Contender::CopyOut | Contender::FerryBlackhole)
    {
        verify::same_rows(testbed, &tables)?;
    }
    Ok(Measurement {
        wall,
        rows: testbed.dataset.snapshot_rows,
        bytes: testbed.dataset.snapshot_bytes,
        usage,
        servers_cpu: Some(servers_cpu),
        latency: None,
    })
}

/// The timed part's wall time, the servers' CPU in it, the contender's own usage.
type Timed = (Duration, [f64; 2], Option<ProcessUsage>);

fn native(testbed: &Testbed, tables: &[&str]) -> anyhow::Result<Timed> {
    let native = NativeSubscription::prepare(testbed, tables)?;
    let clock = testbed.clock();
    native.subscribe()?;
    native.wait_tables_ready(CATCH_UP_TIMEOUT)?;
    let (wall, cpu) = clock.stop();
    native.finish()?;
    Ok((wall, cpu, None))
}

fn pg_dump(testbed: &Testbed, tables: &[&str]) -> anyhow::Result<Timed> {
    let mut dump = testbed.client_command(&testbed.source, "pg_dump");
    for table in tables {
        dump.args(["-t", table]);
    }
    dump.arg(SOURCE_DB);
    let restore = testbed.psql(&testbed.target, TARGET_DB);
    let log = testbed.scratch_path("pg_dump.log");
    let clock = testbed.clock();
    let usage = peer_process::run_pipeline(dump, restore, "pg_dump | psql", &log)?;
    let (wall, cpu) = clock.stop();
    Ok((wall, cpu, Some(usage)))
}

fn pgcopydb(testbed: &Testbed, tables: &[&str]) -> anyhow::Result<Timed> {
    let work_dir = testbed.scratch_path("pgcopydb");
    if work_dir.exists() {
        std::fs::remove_dir_all(&work_dir).context("remove pgcopydb's old work directory")?;
    }
    let filters = testbed.scratch_path("pgcopydb-filters.ini");
    std::fs::write(
        &filters,
        format!("[include-only-table]\n{}\n", tables.join("\n")),
    )
    .context("write pgcopydb's filters")?;
    let mut clone = Command::new("pgcopydb");
    clone
        .arg("clone")
        .arg("--source")
        .arg(testbed.source.uri(SOURCE_DB))
        .arg("--target")
        .arg(testbed.target.uri(TARGET_DB))
        .arg("--dir")
        .arg(&work_dir)
        .arg("--filters")
        .arg(&filters)
        .env("PATH", path_with(testbed.bin_dir().to_path_buf()))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let log = testbed.scratch_path("pgcopydb.log");
    let clock = testbed.clock();
    let usage = peer_process::run(clone, "pgcopydb clone", &log)?;
    let (wall, cpu) = clock.stop();
    Ok((wall, cpu, Some(usage)))
}

fn copy_out(testbed: &Testbed, tables: &[&str]) -> anyhow::Result<Timed> {
    let log = testbed.scratch_path("copy-out.log");
    let clock = testbed.clock();
    let mut usage = ProcessUsage::default();
    for table in tables {
        let mut copy = testbed.psql(&testbed.source, SOURCE_DB);
        copy.args(["-c", &format!("COPY {table} TO STDOUT")]);
        usage = usage.plus(peer_process::run(copy, "COPY TO STDOUT", &log)?);
    }
    let (wall, cpu) = clock.stop();
    Ok((wall, cpu, Some(usage)))
}

fn copy_in(testbed: &Testbed, tables: &[&str]) -> anyhow::Result<Timed> {
    let log = testbed.scratch_path("copy-in.log");
    let mut files = Vec::new();
    for table in tables {
        let file = testbed.scratch_path(&format!("copy-{table}.txt"));
        if !file.exists() {
            let mut dump = testbed.psql(&testbed.source, SOURCE_DB);
            dump.args(["-c", &format!("COPY {table} TO STDOUT")]);
            let partial = file.with_extension("partial");
            peer_process::stdout_to(&mut dump, &partial)?;
            peer_process::run(dump, "COPY TO a file", &log)?;
            std::fs::rename(&partial, &file).context("keep the COPY file")?;
        }
        files.push(file);
    }
    testbed.copy_schema(tables, true)?;
    testbed.checkpoint()?;
    let clock = testbed.clock();
    let mut usage = ProcessUsage::default();
    for (table, file) in tables.iter().zip(&files) {
        let mut load = testbed.psql(&testbed.target, TARGET_DB);
        load.args(["-c", &format!("COPY {table} FROM STDIN")]);
        load.stdin(std::fs::File::open(file).context("open a COPY file")?);
        usage = usage.plus(peer_process::run(load, "COPY FROM STDIN", &log)?);
    }
    let (wall, cpu) = clock.stop();
    Ok((wall, cpu, Some(usage)))
}

fn ferry(
    testbed: &Testbed,
    plan: &Plan,
    contender: Contender,
    tables: &[&str],
) -> anyhow::Result<Timed> {
    let ferry = FerryChangefeed::start_server(testbed, plan, contender, tables)?;
    let clock = testbed.clock();
    ferry.create(testbed, contender, tables)?;
    ferry.wait_synced(CATCH_UP_TIMEOUT)?;
    let (wall, cpu) = clock.stop();
    let usage = ferry.usage();
    if contender.is_stream() {
        ferry.check_events(testbed, testbed.dataset.snapshot_rows)?;
    }
    ferry.finish()?;
    Ok((wall, cpu, usage))
}

/// `PATH` with `first` in front, so that tools which run `pg_dump` themselves find the
/// server's own version.
fn path_with(first: PathBuf) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(first).chain(std::env::split_paths(&rest))).unwrap_or(rest)
}
