//! Measures, every [`INTERVAL`], how much WAL each changefeed's slot holds back on its
//! source: the number that grows while a changefeed is paused, failed or lagging, and that
//! fills a source's disk if nobody looks. One connection per source and round, with a
//! timeout, so an unreachable source delays nothing else.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use ferry_core::ConnectionUri;
use ferry_postgres::slot::{self, SlotNames};
use tracing::debug;

use crate::registry::Engine;
use crate::status::{FeedState, StatusCell};

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
            drop(engine);
            for (uri, slots) in by_source.into_values() {
                if tokio::time::timeout(TIMEOUT, measure(&uri, &slots))
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

async fn measure(uri: &ConnectionUri, slots: &Slots) {
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
        let retained = positions
            .iter()
            .find(|(name, _)| name == slot)
            .map(|(_, p)| p.retained_wal_bytes());
        status.update(|s| s.retained_wal_bytes = retained);
    }
}
