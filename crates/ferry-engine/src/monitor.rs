//! Measures, every [`INTERVAL`], how much WAL each changefeed's slot holds back on its
//! source: the number that grows while a changefeed is paused, failed or lagging, and that
//! fills a source's disk if nobody looks. One connection per source and round, with a
//! timeout, so an unreachable source delays nothing else.
//!
//! It also watches the slot's health and says so in the status's `warnings`: more WAL held
//! than `retained_wal_warning_bytes`, `wal_status` `unreserved` (the source removes the WAL
//! at its next checkpoint unless the changefeed catches up), the slot invalidated or gone.
//! A paused or stopped changefeed shows it here; a running one fails as soon as its next
//! attempt checks the slot (`runner::Runner::ensure_slot`).

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use ferry_core::ConnectionUri;
use ferry_postgres::slot::{self, SlotLoss, SlotNames, SlotPositions, WalStatus};
use tracing::debug;

use crate::registry::Engine;
use crate::status::{FeedState, Phase, StatusCell};

/// Time between measurements.
const INTERVAL: Duration = Duration::from_secs(10);
/// Longest one source may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the monitor; it ends when the engine is dropped.
pub(crate) fn spawn(engine: Weak<Engine>) {
    tokio::spawn(async move {
        // The first round soon after start, so a restarted server shows the numbers early.
        tokio::time::sleep(Duration::from_secs(2)).await;
        loop {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let by_source = slots_by_source(&engine);
            let threshold = engine.options.retained_wal_warning_bytes;
            drop(engine);
            for (uri, slots) in by_source.into_values() {
                if tokio::time::timeout(TIMEOUT, measure(&uri, &slots, threshold))
                    .await
                    .is_err()
                {
                    debug!(source = %uri, "slot measurement timed out");
                }
            }
            tokio::time::sleep(INTERVAL).await;
        }
    });
}

type Slots = Vec<(String, StatusCell)>;

/// Every changefeed that may hold a slot, grouped by source.
fn slots_by_source(engine: &Engine) -> BTreeMap<String, (ConnectionUri, Slots)> {
    let mut out: BTreeMap<String, (ConnectionUri, Slots)> = BTreeMap::new();
    let feeds = engine.feeds.lock().expect("feeds lock");
    for feed in feeds.values() {
        if feed.config.snapshot_only || feed.status.state() == FeedState::Finished {
            continue;
        }
        let slot = SlotNames::for_changefeed(&feed.config.key()).slot;
        out.entry(feed.config.source_uri.expose().to_string())
            .or_insert_with(|| (feed.config.source_uri.clone(), Vec::new()))
            .1
            .push((slot, feed.status.clone()));
    }
    out
}

async fn measure(uri: &ConnectionUri, slots: &Slots, threshold: u64) {
    let client = match ferry_postgres::connect::connect(uri, "ferry-monitor").await {
        Ok(c) => c,
        Err(e) => {
            debug!(source = %uri, error = %e.chain(), "slot measurement failed");
            return;
        }
    };
    let names: Vec<String> = slots.iter().map(|(s, _)| s.clone()).collect();
    let positions = match slot::slot_positions(&client, &names).await {
        Ok(p) => p,
        Err(e) => {
            debug!(source = %uri, error = %e.chain(), "slot measurement failed");
            return;
        }
    };
    for (slot, status) in slots {
        let found = positions
            .iter()
            .find(|(name, _)| name == slot)
            .map(|(_, p)| p);
        status.update(|s| {
            s.retained_wal_bytes = found.map(SlotPositions::retained_wal_bytes);
            // A slot not created yet is no news; one gone after streaming began is.
            let streamed = s.phase == Phase::Streaming && s.checkpoint.is_some();
            s.slot_warning = slot_warning(slot, found, streamed, threshold);
        });
    }
}

/// The warning a slot's measurement deserves, if any.
fn slot_warning(
    slot: &str,
    found: Option<&SlotPositions>,
    streamed: bool,
    threshold: u64,
) -> Option<String> {
    const RESYNC: &str = "the changefeed fails when it next starts; delete and create it again \
                          to copy the tables anew";
    let Some(positions) = found else {
        return streamed.then(|| format!("{}; {RESYNC}", SlotLoss::Missing.describe(slot)));
    };
    let retained = positions.retained_wal_bytes();
    match positions.wal_status {
        WalStatus::Lost => Some(format!(
            "{}; {RESYNC}",
            SlotLoss::Invalidated.describe(slot)
        )),
        WalStatus::Unreserved => Some(format!(
            "replication slot {slot} holds {retained} bytes of WAL, past the source's \
             max_slot_wal_keep_size: the source removes WAL the slot still needs at its next \
             checkpoint unless the changefeed catches up first (resume it if paused)"
        )),
        _ if retained > threshold => Some(format!(
            "replication slot {slot} holds {retained} bytes of WAL on the source, more than \
             retained_wal_warning_bytes ({threshold}); the WAL stays until the changefeed \
             confirms it: resume the changefeed or fix its error, or delete it if it is no \
             longer needed"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::Lsn;

    fn positions(retained: u64, wal_status: WalStatus) -> SlotPositions {
        SlotPositions {
            restart_lsn: Lsn(1_000),
            confirmed_flush: Lsn(1_000),
            current_wal: Lsn(1_000 + retained),
            wal_status,
        }
    }

    #[test]
    fn warns_past_the_threshold_and_for_unreserved_lost_or_gone_slots() {
        let ok = positions(10, WalStatus::Reserved);
        assert_eq!(slot_warning("s", Some(&ok), true, 100), None);
        let big = positions(500, WalStatus::Extended);
        let warning = slot_warning("s", Some(&big), true, 100).unwrap();
        assert!(warning.contains("holds 500 bytes"), "{warning}");
        assert!(
            warning.contains("retained_wal_warning_bytes (100)"),
            "{warning}"
        );
        let unreserved = slot_warning("s", Some(&positions(5, WalStatus::Unreserved)), true, 100);
        assert!(unreserved.unwrap().contains("max_slot_wal_keep_size"));
        let lost = slot_warning("s", Some(&positions(0, WalStatus::Lost)), true, 100).unwrap();
        assert!(
            lost.contains("replication slot s was invalidated"),
            "{lost}"
        );
        assert!(slot_warning("s", None, true, 100).unwrap().contains("gone"));
        assert_eq!(slot_warning("s", None, false, 100), None);
    }
}
