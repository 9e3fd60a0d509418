//! The replicators: contenders that keep a target in step with the source through a
//! replication slot — PostgreSQL's own logical replication and Ferry.
//!
//! The streaming workloads drive both through one interface, [`Replicator`]:
//!
//! ```text
//! start(tables) ──► wait_caught_up ──► pause ─► (backlog written) ─► resume ──► wait_caught_up
//!   native:  publication + schema copy + CREATE SUBSCRIPTION     DISABLE / ENABLE
//!   ferry:   ferry server + POST /changefeeds                     stop / restart the process
//! ```
//!
//! Pausing never drops the slot: the backlog must stay in it (a changefeed DELETE would drop
//! the slot, so Ferry is paused by stopping its server). "Caught up to `end`" (a WAL position
//! read on the source when the writes were done) means, for Ferry, its `/synced` endpoint
//! (which compares with the source's position at each request); for native replication,
//! every table in state `r` and either the slot's `confirmed_flush_lsn` or the target's
//! replication origin at or past `end` (see [`NativeSubscription::wait_confirmed`] for why
//! both).

mod destination;
mod ferry;
mod native;
mod receiver;

use std::time::{Duration, Instant};

pub(crate) use ferry::FerryChangefeed;
pub(crate) use native::NativeSubscription;

use crate::db::{Db, Lsn};
use crate::peer_process::ProcessUsage;
use crate::plan::{Contender, Plan};
use crate::testbed::Testbed;

/// How long any replicator may take to catch up before the run counts as failed.
pub(crate) const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How often completion is checked: fine enough for timings of a few seconds, cheap enough
/// (one indexed catalog query or HTTP GET) not to steal CPU from the contenders.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A replicator under test.
pub(crate) enum Replicator {
    Native(NativeSubscription),
    Ferry(FerryChangefeed),
}

impl Replicator {
    /// Starts `contender` replicating `tables` into the target (Ferry's blackhole discards,
    /// its stream sinks write to a destination of their own).
    pub(crate) fn start(
        testbed: &Testbed,
        plan: &Plan,
        contender: Contender,
        tables: &[&str],
    ) -> anyhow::Result<Replicator> {
        match contender {
            Contender::Native => {
                let native = NativeSubscription::prepare(testbed, tables)?;
                native.subscribe()?;
                Ok(Replicator::Native(native))
            }
            contender if contender.is_ferry() => {
                let ferry = FerryChangefeed::start_server(testbed, plan, contender, tables)?;
                ferry.create(testbed, contender, tables)?;
                Ok(Replicator::Ferry(ferry))
            }
            other => anyhow::bail!("{other} is not a replicator"),
        }
    }

    /// Waits until everything the source committed so far is applied.
    pub(crate) fn wait_caught_up(&self, timeout: Duration) -> anyhow::Result<()> {
        match self {
            Replicator::Native(native) => native.wait_caught_up(timeout),
            Replicator::Ferry(ferry) => ferry.wait_synced(timeout),
        }
    }

    /// Waits until everything the source committed up to `end` is applied. Ferry's
    /// `/synced` takes no position: it compares with the source's WAL position at each
    /// request, which is `end` or later.
    pub(crate) fn wait_applied(&self, end: Lsn, timeout: Duration) -> anyhow::Result<()> {
        match self {
            Replicator::Native(native) => {
                native.wait_tables_ready(timeout)?;
                native.wait_confirmed(end, timeout)
            }
            Replicator::Ferry(ferry) => ferry.wait_synced(timeout),
        }
    }

    /// Stops consuming the slot, keeping it, and waits until its walsender is gone.
    pub(crate) fn pause(&mut self) -> anyhow::Result<()> {
        match self {
            Replicator::Native(native) => native.disable(),
            Replicator::Ferry(ferry) => ferry.stop(),
        }
    }

    /// Starts consuming the slot again.
    pub(crate) fn resume(&mut self) -> anyhow::Result<()> {
        match self {
            Replicator::Native(native) => native.enable(),
            Replicator::Ferry(ferry) => ferry.restart(),
        }
    }

    /// CPU and peak RSS of the replicator's own process; native replication has none (its
    /// workers are backends of the two servers).
    pub(crate) fn usage(&self) -> Option<ProcessUsage> {
        match self {
            Replicator::Native(_) => None,
            Replicator::Ferry(ferry) => ferry.usage(),
        }
    }

    /// Checks that a stream contender delivered at least `expected` events.
    pub(crate) fn check_events(&self, testbed: &Testbed, expected: u64) -> anyhow::Result<()> {
        match self {
            Replicator::Native(_) => anyhow::bail!("native replication delivers no events"),
            Replicator::Ferry(ferry) => ferry.check_events(testbed, expected),
        }
    }

    /// Removes the subscription or changefeed, with its slot and publications.
    pub(crate) fn finish(self) -> anyhow::Result<()> {
        match self {
            Replicator::Native(native) => native.finish(),
            Replicator::Ferry(ferry) => ferry.finish(),
        }
    }
}

/// Calls `done` every [`POLL_INTERVAL`] until it returns `true`; an error naming `what`
/// after `timeout`, or as soon as `done` fails.
pub(crate) fn poll_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Waits until no walsender serves any slot of the source: a paused replicator's slot then
/// keeps everything written from now on.
pub(crate) fn wait_slots_idle(source: &Db) -> anyhow::Result<()> {
    poll_until(
        "the replication slots to go idle",
        Duration::from_secs(60),
        || Ok(source.query_i64("SELECT count(*) FROM pg_replication_slots WHERE active")? == 0),
    )
}
