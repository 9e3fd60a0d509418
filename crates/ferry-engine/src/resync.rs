//! Re-syncing: copying tables again from a fresh snapshot while the slot stays, as a
//! table added by an update is copied (see [`crate::runner::tables`]): each table is
//! emptied on the target and copied whole in one snapshot taken at a position L, and the
//! stream skips its changes committed before L, so the hand-over has no gap and applies
//! nothing twice. A running changefeed restarts its task for it: the other tables' changes
//! wait during the copy (their lag grows) and then flow again.

use ferry_core::TableId;
use ferry_meta::Collection;
use tracing::info;

use crate::engine::{feed_key, Engine};
use crate::error::EngineError;
use crate::lifecycle::Refusal;
use crate::runner::tables::{self, RuntimeState};
use crate::status::{ChangefeedStatus, FeedState, Phase};

/// Refused for a changefeed that never copies: its tables cannot be copied again, so a
/// re-sync, or a pause (whose resume re-copies), would leave a gap no one sees.
pub(crate) fn copies_or_refuse(config: &crate::ChangefeedConfig) -> Result<(), EngineError> {
    if config.copies() {
        return Ok(());
    }
    Err(EngineError::InvalidConfig(
        crate::ConfigError::InvalidOption {
            field: "options.snapshot",
            problem: "is never: this changefeed copies no table, so none can be re-synced, \
                      or paused and resumed (a resume copies the table again)",
        },
    ))
}

impl Engine {
    /// Copies `tables` of the changefeed again (every table it replicates when `None`),
    /// then streams on from each copy's position.
    pub async fn resync(
        &self,
        namespace: &str,
        id: &str,
        tables: Option<Vec<TableId>>,
    ) -> Result<ChangefeedStatus, EngineError> {
        let ops = self.ops_lock(namespace, id)?;
        let _guard = ops.lock().await;
        let state = self.with_feed(namespace, id, |f| f.status.state())?;
        if state == FeedState::Finished {
            return Err(EngineError::Refused {
                id: id.to_string(),
                refusal: Refusal::Finished,
            });
        }
        let key = feed_key(namespace, id);
        let mut runtime: RuntimeState = self
            .meta
            .get(Collection::ChangefeedState, &key)?
            .unwrap_or_default();
        if runtime.phase != Some(Phase::Streaming) {
            return Err(EngineError::Refused {
                id: id.to_string(),
                refusal: Refusal::Copying,
            });
        }
        copies_or_refuse(&self.config(namespace, id)?)?;
        let all = tables.is_none();
        let tables = match tables {
            Some(tables) => tables,
            None => tables::planned_tables(&runtime),
        };
        if let Some(unknown) = tables.iter().find(|t| !tables::planned(&runtime, t)) {
            return Err(EngineError::TableNotFound(format!(
                "{unknown} in changefeed {id} (it replicates: {})",
                tables::planned_tables(&runtime)
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        // The task reads and writes this state: it stops first, and starts again after.
        let running = self.with_feed(namespace, id, |f| f.task.is_some())?;
        let before = runtime.clone();
        if running {
            self.stop_task(&key).await;
            // What the task recorded until it stopped (renames, drops it read) is kept.
            runtime = self
                .meta
                .get(Collection::ChangefeedState, &key)?
                .unwrap_or_default();
        }
        // A table the task followed to a new name as it stopped: re-synced under that name.
        let tables = if all {
            tables::planned_tables(&runtime)
        } else {
            tables
                .into_iter()
                .map(|t| tables::renamed_to(&before, &runtime, t))
                .collect()
        };
        for table in &tables {
            if !runtime.resync.contains(table) {
                runtime.resync.push(table.clone());
            }
        }
        self.meta.put(Collection::ChangefeedState, &key, &runtime)?;
        // Not synced from now until the copies are done.
        self.with_feed(namespace, id, |f| {
            f.status.update(|s| tables::mark(&runtime, &mut s.tables))
        })?;
        info!(changefeed = %key, tables = ?tables.iter().map(ToString::to_string).collect::<Vec<_>>(), restarted = running, "tables to re-sync");
        if running {
            self.with_feed(namespace, id, |f| {
                f.task = Some(self.spawn(&f.config, &f.status));
            })?;
        }
        self.status(namespace, id)
    }
}
