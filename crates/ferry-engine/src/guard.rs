//! The retained-WAL guard (`options.max_retained_wal_bytes`, off by default): when the
//! monitor measures a running changefeed's slot holding more WAL than that, the guard acts
//! before the source's disk fills up, as `options.on_retained_wal_exceeded` says:
//!
//! - `pause`: the changefeed is paused. Its slot stays, and so does the WAL it holds: this
//!   stops a changefeed that cannot keep up from doing work, not the WAL growing; the status
//!   warns and says so. Resuming continues exactly after the checkpoint.
//! - `drop_slot`: the changefeed is stopped, its slot and publications are dropped (the
//!   source frees the WAL at its next checkpoint), and it goes `failed` with a message that
//!   says the changes since the checkpoint are lost to it and how to re-sync.

use tracing::warn;

use crate::config::RetainedWalAction;
use crate::engine::{feed_key, Engine};
use crate::lifecycle::LifecycleDoc;
use crate::status::{now_us, FeedState, Timed};

/// One changefeed past its limit, as the monitor measured it.
#[derive(Clone, Debug)]
pub(crate) struct Exceeded {
    pub namespace: String,
    pub id: String,
    pub slot: String,
    pub retained: u64,
    pub limit: u64,
    pub action: RetainedWalAction,
}

impl Engine {
    /// Acts on a changefeed past its `max_retained_wal_bytes`.
    pub(crate) async fn enforce_retained_wal(&self, over: Exceeded) {
        let key = feed_key(&over.namespace, &over.id);
        warn!(changefeed = %key, slot = %over.slot, retained = over.retained, limit = over.limit, action = ?over.action, "slot past max_retained_wal_bytes");
        match over.action {
            RetainedWalAction::Pause => {
                // Say why now, not at the next measurement: before the pause too, so no
                // status read finds the changefeed paused without the reason.
                let say_why = |state: Option<FeedState>| {
                    let _ = self.with_feed(&over.namespace, &over.id, |f| {
                        f.status.update(|s| {
                            s.slot_warning = guard_warning(
                                &over.slot,
                                Some(over.retained),
                                Some((over.limit, over.action)),
                                state.unwrap_or(s.state),
                            )
                        })
                    });
                };
                say_why(Some(FeedState::Paused));
                match self.pause(&over.namespace, &over.id).await {
                    Ok(_) => say_why(None),
                    Err(e) => {
                        say_why(None);
                        warn!(changefeed = %key, error = %ferry_core::error_chain(&e), "could not pause the changefeed past max_retained_wal_bytes");
                    }
                }
            }
            RetainedWalAction::DropSlot => self.drop_slot_and_fail(&over).await,
        }
    }

    async fn drop_slot_and_fail(&self, over: &Exceeded) {
        let key = feed_key(&over.namespace, &over.id);
        let Ok(ops) = self.ops_lock(&over.namespace, &over.id) else {
            return;
        };
        let _guard = ops.lock().await;
        let Ok((config, status)) = self.with_feed(&over.namespace, &over.id, |f| {
            (f.config.clone(), f.status.clone())
        }) else {
            return;
        };
        if !matches!(status.state(), FeedState::Running | FeedState::Error) {
            return; // paused, failed or deleted meanwhile
        }
        self.stop_task(&key).await;
        let dropped = self.release_source(&config.source_uri, &key).await;
        let checkpoint = status
            .checkpoint()
            .map_or_else(|| "unknown".to_string(), |p| p.to_string());
        let message = match &dropped {
            Ok(()) => format!(
                "replication slot {} held {} bytes of WAL on the source, more than \
                 options.max_retained_wal_bytes ({}): Ferry dropped it \
                 (options.on_retained_wal_exceeded is drop_slot) so the source can free its \
                 WAL, and the source's changes since the last checkpoint ({checkpoint}) are \
                 lost to this changefeed. Hint: re-sync: delete the changefeed and create it \
                 again (`ferry changefeed delete {id}`, then `ferry changefeed create`), which \
                 copies the tables anew; resuming cannot recover the lost changes",
                over.slot,
                over.retained,
                over.limit,
                id = over.id,
            ),
            Err(e) => format!(
                "replication slot {} held {} bytes of WAL on the source, more than \
                 options.max_retained_wal_bytes ({}), and Ferry could not drop it ({e}); the \
                 changefeed is stopped and the slot still holds the WAL. Hint: drop the slot \
                 by deleting the changefeed, then create it again to re-sync",
                over.slot, over.retained, over.limit,
            ),
        };
        warn!(changefeed = %key, error = %message, "changefeed failed: retained WAL guard");
        status.update(|s| {
            s.state = FeedState::Failed;
            s.caught_up = false;
            s.last_error = Some(Timed {
                message,
                at_us: now_us(),
            });
        });
        let saved = LifecycleDoc::load(&self.meta, &key).and_then(|mut doc| {
            doc.state = FeedState::Failed;
            doc.capture(&status);
            doc.save(&self.meta, &key)
        });
        if let Err(e) = saved {
            warn!(changefeed = %key, error = %ferry_core::error_chain(&e), "could not store the changefeed state");
        }
    }
}

/// The warning of a changefeed the retained-WAL guard paused (its slot still past the limit).
pub(crate) fn guard_warning(
    slot: &str,
    retained: Option<u64>,
    guard: Option<(u64, RetainedWalAction)>,
    state: FeedState,
) -> Option<String> {
    let (Some(retained), Some((limit, RetainedWalAction::Pause))) = (retained, guard) else {
        return None;
    };
    (retained > limit && state == FeedState::Paused).then(|| {
        format!(
            "replication slot {slot} holds {retained} bytes of WAL on the source, more than \
             options.max_retained_wal_bytes ({limit}): the changefeed is paused \
             (on_retained_wal_exceeded is pause). The slot is kept and still holds the WAL, \
             which keeps growing: resume the changefeed to let it catch up (raise the limit \
             first, or it pauses again), or delete it to free the WAL"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_warns_only_for_a_changefeed_it_paused_while_still_past_the_limit() {
        let pause = Some((100, RetainedWalAction::Pause));
        let warning = guard_warning("s", Some(150), pause, FeedState::Paused).unwrap();
        assert!(
            warning.contains("max_retained_wal_bytes (100)"),
            "{warning}"
        );
        assert!(warning.contains("still holds the WAL"), "{warning}");
        assert_eq!(guard_warning("s", Some(50), pause, FeedState::Paused), None);
        assert_eq!(
            guard_warning("s", Some(150), pause, FeedState::Running),
            None
        );
        let drop = Some((100, RetainedWalAction::DropSlot));
        assert_eq!(guard_warning("s", Some(150), drop, FeedState::Paused), None);
        assert_eq!(guard_warning("s", Some(150), None, FeedState::Paused), None);
    }
}
