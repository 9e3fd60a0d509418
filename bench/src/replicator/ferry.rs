//! Ferry as a contender: a release-built `ferry server` process with one changefeed.
//!
//! The server is started (and healthy) before the clock starts; the timed part begins with
//! `POST /api/v2/changefeeds` and ends when `GET …/synced` says `true`. Ferry runs as in
//! production: log level `info`, default changefeed options. Its CPU time and peak RSS are
//! read from `/proc` before it stops, so they cover only the server process of this run (a
//! restarted server starts counting afresh).
//!
//! The stream contenders (`ferry-file`, `ferry-nats`, …) get their [`Destination`] with the
//! server, before the clock starts; it goes when the changefeed is finished. The MariaDB
//! suite starts a bare server ([`FerryChangefeed::start_bare`]) and names both ends itself
//! ([`FerryChangefeed::create_between`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_testkit::FerryServer;
use serde_json::{json, Value};

use crate::db::Db;
use crate::peer_process::ProcessUsage;
use crate::plan::{Contender, Plan};
use crate::replicator::destination::Destination;
use crate::replicator::{poll_until, wait_slots_idle};
use crate::testbed::{Testbed, SOURCE_DB, TARGET_DB};

/// Ferry servers started so far: numbers the kept logs in run order.
static SERVERS_STARTED: AtomicU32 = AtomicU32::new(0);

/// The changefeed's id.
const CHANGEFEED_ID: &str = "bench";
/// The server's log filter: production's default.
const LOG_FILTER: &str = "info";
/// How often the changefeed's state is checked for a definite failure while waiting.
const FAILURE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A ferry server with (after [`FerryChangefeed::create`]) the benchmark's changefeed.
pub(crate) struct FerryChangefeed {
    server: FerryServer,
    /// The PostgreSQL source, whose slot a stop waits to go idle; `None` for a MariaDB
    /// source, which keeps nothing for a reader (its binlog dump ends with the connection).
    source: Option<Db>,
    /// Where the server's log is copied when this is dropped (`--keep-logs`).
    keep_log: Option<PathBuf>,
    /// A stream contender's destination; declared last, so that it outlives the server.
    destination: Option<Destination>,
}

impl FerryChangefeed {
    /// Starts a ferry server with an empty data directory, and sets up the destination of a
    /// stream contender for `tables`; returns once both are ready.
    pub(crate) fn start_server(
        testbed: &Testbed,
        plan: &Plan,
        contender: Contender,
        tables: &[&str],
    ) -> anyhow::Result<Self> {
        let mut ferry = FerryChangefeed::start_bare(plan, contender)?;
        ferry.destination = Destination::set_up(testbed, contender, tables)?;
        ferry.source = Some(testbed.source_db()?);
        Ok(ferry)
    }

    /// Starts a ferry server with an empty data directory, for a changefeed whose ends
    /// [`FerryChangefeed::create_between`] names.
    pub(crate) fn start_bare(plan: &Plan, contender: Contender) -> anyhow::Result<Self> {
        let binary = &plan.ferry_bin;
        anyhow::ensure!(
            binary.is_file(),
            "no ferry binary at {} (bench/run builds it with cargo build --release)",
            binary.display()
        );
        let keep_log = plan.keep_logs.as_ref().map(|dir| {
            let run = SERVERS_STARTED.fetch_add(1, Ordering::Relaxed) + 1;
            dir.join(format!("{run:03}-{contender}.log"))
        });
        Ok(FerryChangefeed {
            server: FerryServer::start_with_log(binary, LOG_FILTER),
            source: None,
            keep_log,
            destination: None,
        })
    }

    /// Creates the changefeed for `tables` into the target database, the blackhole for
    /// `ferry-blackhole`, or the stream contender's destination; `ferry-rows` turns the
    /// snapshot's bulk path off.
    pub(crate) fn create(
        &self,
        testbed: &Testbed,
        contender: Contender,
        tables: &[&str],
    ) -> anyhow::Result<()> {
        let sink_uri = match (&self.destination, contender) {
            (Some(destination), _) => destination.sink_uri(),
            (None, Contender::FerryBlackhole) => "blackhole://".to_owned(),
            (None, _) => testbed.target.uri(TARGET_DB),
        };
        let snapshot_bulk = contender != Contender::FerryRows;
        self.post(&json!({
            "id": CHANGEFEED_ID,
            "source_uri": testbed.source.uri(SOURCE_DB),
            "sink_uri": sink_uri,
            "tables": tables,
            "options": {"snapshot_bulk": snapshot_bulk},
        }))
    }

    /// Creates the changefeed for `tables` from `source_uri` into `sink_uri`, with the
    /// default options.
    pub(crate) fn create_between(
        &self,
        source_uri: &str,
        sink_uri: &str,
        tables: &[&str],
    ) -> anyhow::Result<()> {
        self.post(&json!({
            "id": CHANGEFEED_ID,
            "source_uri": source_uri,
            "sink_uri": sink_uri,
            "tables": tables,
        }))
    }

    fn post(&self, changefeed: &Value) -> anyhow::Result<()> {
        let (code, body) = self.server.post("/api/v2/changefeeds", changefeed);
        anyhow::ensure!(
            code == 201,
            "creating the changefeed failed ({code}): {body}"
        );
        Ok(())
    }

    /// Polls `/synced` until it is `true`; fails early when the changefeed has failed.
    pub(crate) fn wait_synced(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut last_failure_check = Instant::now();
        poll_until("ferry's /synced to be true", timeout, || {
            let path = format!("/api/v2/changefeeds/{CHANGEFEED_ID}/synced");
            let (code, body) = self.server.get(&path);
            if code == 200 && body["synced"] == Value::Bool(true) {
                return Ok(true);
            }
            if last_failure_check.elapsed() >= FAILURE_CHECK_INTERVAL {
                last_failure_check = Instant::now();
                self.check_not_failed()?;
            }
            Ok(false)
        })
    }

    /// Stops the server gracefully and waits until its slot is idle; the slot keeps the WAL
    /// (a MariaDB source keeps its binlog anyway).
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        self.server.stop();
        match &self.source {
            Some(source) => wait_slots_idle(source),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same data directory; it resumes the changefeed.
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        self.server.restart();
        Ok(())
    }

    /// Everything the server logged so far (all its starts).
    pub(crate) fn log(&self) -> String {
        self.server.log()
    }

    /// The running server's CPU time and peak RSS.
    pub(crate) fn usage(&self) -> Option<ProcessUsage> {
        Some(ProcessUsage {
            cpu_seconds: self.server.cpu_seconds()?,
            peak_rss_kib: self.server.peak_rss_kib()?,
        })
    }

    /// Checks that the stream contender's destination got at least `expected` events (more
    /// is allowed: delivery is at least once, and a restarted server may send some again).
    pub(crate) fn check_events(&self, testbed: &Testbed, expected: u64) -> anyhow::Result<()> {
        let destination = self
            .destination
            .as_ref()
            .context("only stream contenders deliver events")?;
        let events = destination.events(testbed)?;
        anyhow::ensure!(
            events >= expected,
            "the destination got {events} events, expected at least {expected}"
        );
        Ok(())
    }

    /// Deletes the changefeed (dropping its slot and publications) and stops the server;
    /// the destination, if any, is removed with `self`.
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
        let (code, body) = self
            .server
            .delete(&format!("/api/v2/changefeeds/{CHANGEFEED_ID}"));
        anyhow::ensure!(
            code == 200,
            "deleting the changefeed failed ({code}): {body}"
        );
        self.server.stop();
        Ok(())
    }

    fn check_not_failed(&self) -> anyhow::Result<()> {
        let (code, status) = self
            .server
            .get(&format!("/api/v2/changefeeds/{CHANGEFEED_ID}/status"));
        if code == 200 && status["state"] == "failed" {
            return Err(anyhow::anyhow!("{}", status["last_error"]))
                .context("the changefeed failed");
        }
        Ok(())
    }
}

impl Drop for FerryChangefeed {
    /// Copies the server's log for `--keep-logs`, whether the run succeeded or not (a failed
    /// run's log is the one worth reading).
    fn drop(&mut self) {
        if let Some(path) = &self.keep_log {
            let written = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
                .and_then(|()| std::fs::write(path, self.server.log()));
            if let Err(error) = written {
                eprintln!(
                    "could not keep the ferry log at {}: {error}",
                    path.display()
                );
            }
        }
    }
}
