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
//!
//! Running changefeeds past their `options.max_retained_wal_bytes` are handed to the
//! retained-WAL guard (`guard.rs`) after each round.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use ferry_core::{BacklogRisk, ConnectionUri, FeedBacklog};
use tracing::debug;

use crate::config::RetainedWalAction;
use crate::engine::Engine;
use crate::guard::{guard_warning, Exceeded};
use crate::status::{FeedState, Phase, StatusCell};

/// Time between measurements.
const INTERVAL: Duration = Duration::from_secs(10);
/// Longest one source may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the monitor; it ends when the engine is dropped.
pub(crate) fn spawn(engine: Weak<Engine>) {
    let engine_ref = engine.clone();
    tokio::spawn(async move {
        // The first round soon after start, so a restarted server shows the numbers early.
        tokio::time::sleep(Duration::from_secs(2)).await;
        loop {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let by_source = slots_by_source(&engine);
            let threshold = engine.options.retained_wal_warning_bytes;
            let connectors = engine.connectors.clone();
            drop(engine);
            let mut exceeded = Vec::new();
            for (uri, slots) in by_source.into_values() {
                let Ok(connector) = connectors.source(&uri) else {
                    continue;
                };
                let measured = measure(connector.as_ref(), &uri, &slots, threshold);
                match tokio::time::timeout(TIMEOUT, measured).await {
                    Ok(over) => exceeded.extend(over),
                    Err(_) => debug!(source = %uri, "slot measurement timed out"),
                }
            }
            if !exceeded.is_empty() {
                let Some(engine) = engine_ref.upgrade() else {
                    return;
                };
                for over in exceeded {
                    engine.enforce_retained_wal(over).await;
                }
            }
            tokio::time::sleep(INTERVAL).await;
        }
    });
}

/// One changefeed's slot to measure.
struct Watched {
    namespace: String,
    id: String,
    status: StatusCell,
    /// `options.max_retained_wal_bytes` and what to do past it.
    guard: Option<(u64, RetainedWalAction)>,
}

type Slots = Vec<Watched>;

/// Every changefeed that may hold a slot, grouped by source.
fn slots_by_source(engine: &Engine) -> BTreeMap<String, (ConnectionUri, Slots)> {
    let mut out: BTreeMap<String, (ConnectionUri, Slots)> = BTreeMap::new();
    let feeds = engine.feeds.lock().expect("feeds lock");
    for feed in feeds.values() {
        if feed.config.snapshot_only || feed.status.state() == FeedState::Finished {
            continue;
        }
        let options = &feed.config.options;
        out.entry(feed.config.source_uri.expose().to_string())
            .or_insert_with(|| (feed.config.source_uri.clone(), Vec::new()))
            .1
            .push(Watched {
                namespace: feed.config.namespace.clone(),
                id: feed.config.id.clone(),
                status: feed.status.clone(),
                guard: options
                    .max_retained_wal_bytes
                    .map(|limit| (limit, options.on_retained_wal_exceeded)),
            });
    }
    out
}

/// Measures the slots of one source, updates their statuses, and returns the running
/// changefeeds past their `max_retained_wal_bytes`.
async fn measure(
    connector: &dyn ferry_core::SourceConnector,
    uri: &ConnectionUri,
    slots: &Slots,
    threshold: u64,
) -> Vec<Exceeded> {
    let feeds: Vec<String> = slots
        .iter()
        .map(|w| crate::engine::feed_key(&w.namespace, &w.id))
        .collect();
    let backlogs = match connector.backlog(uri, &feeds).await {
        Ok(b) => b,
        Err(e) => {
            debug!(source = %uri, error = %e.chain(), "slot measurement failed");
            return Vec::new();
        }
    };
    let mut exceeded = Vec::new();
    for (w, backlog) in slots.iter().zip(backlogs) {
        let retained = backlog.retained_bytes;
        let state = w.status.update(|s| {
            s.retained_wal_bytes = retained;
            // A slot not created yet is no news; one gone after streaming began is.
            let streamed = s.phase == Phase::Streaming && s.checkpoint.is_some();
            s.slot_warning = guard_warning(&backlog.holder, retained, w.guard, s.state)
                .or_else(|| slot_warning(&backlog, streamed, threshold));
            s.state
        });
        if let (Some(retained), Some((limit, action))) = (retained, w.guard) {
            if retained > limit && matches!(state, FeedState::Running | FeedState::Error) {
                exceeded.push(Exceeded {
                    namespace: w.namespace.clone(),
                    id: w.id.clone(),
                    slot: backlog.holder.clone(),
                    retained,
                    limit,
                    action,
                });
            }
        }
    }
    exceeded
}

/// The warning a slot's measurement deserves, if any.
fn slot_warning(backlog: &FeedBacklog, streamed: bool, threshold: u64) -> Option<String> {
    const RESYNC: &str = "the changefeed fails when it next starts; delete and create it again \
                          to copy the tables anew";
    let slot = &backlog.holder;
    match (&backlog.risk, backlog.retained_bytes) {
        (Some(BacklogRisk::Lost(what)), None) => streamed.then(|| format!("{what}; {RESYNC}")),
        (Some(BacklogRisk::Lost(what)), Some(_)) => Some(format!("{what}; {RESYNC}")),
        (Some(BacklogRisk::AtRisk(what)), _) => Some(what.clone()),
        (None, Some(retained)) if retained > threshold => Some(format!(
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

    fn backlog(retained: Option<u64>, risk: Option<BacklogRisk>) -> FeedBacklog {
        FeedBacklog {
            feed: "ns/f".into(),
            holder: "s".into(),
            confirmed: None,
            retained_bytes: retained,
            risk,
        }
    }

    #[test]
    fn warns_past_the_threshold_and_for_slots_at_risk_lost_or_gone() {
        assert_eq!(slot_warning(&backlog(Some(10), None), true, 100), None);
        let warning = slot_warning(&backlog(Some(500), None), true, 100).unwrap();
        assert!(warning.contains("holds 500 bytes"), "{warning}");
        assert!(
            warning.contains("retained_wal_warning_bytes (100)"),
            "{warning}"
        );
        let risk = Some(BacklogRisk::AtRisk("past max_slot_wal_keep_size".into()));
        let at_risk = slot_warning(&backlog(Some(5), risk), true, 100);
        assert!(at_risk.unwrap().contains("max_slot_wal_keep_size"));
        let lost = Some(BacklogRisk::Lost(
            "replication slot s was invalidated".into(),
        ));
        let warning = slot_warning(&backlog(Some(0), lost.clone()), false, 100).unwrap();
        assert!(warning.contains("was invalidated"), "{warning}");
        let gone = Some(BacklogRisk::Lost("replication slot s is gone".into()));
        assert!(slot_warning(&backlog(None, gone.clone()), true, 100)
            .unwrap()
            .contains("gone"));
        assert_eq!(slot_warning(&backlog(None, gone), false, 100), None);
    }
}
