//! One table of a changefeed: pause, resume, remove, while the others go on.
//!
//! - **pause**: the table's changes are no longer applied (its target table keeps what it
//!   has); the others stream on.
//! - **resume** (of a paused or parked table): the changes skipped meanwhile are gone from
//!   the stream, so the table is copied again from a fresh snapshot and handed over to the
//!   stream without a gap ([`crate::resync`]).
//! - **remove**: the table is excluded from the changefeed's rules (`!schema.table`): it
//!   leaves the publication, its target table stays and is released.
//!
//! Each one stops the changefeed's task, changes the persisted state, and starts it again
//! (a paused or failed changefeed keeps the change for its next resume).

use ferry_core::{TableFilter, TableId};
use ferry_meta::Collection;
use tracing::info;

use crate::engine::{feed_key, Engine};
use crate::error::EngineError;
use crate::lifecycle::Refusal;
use crate::runner::tables::{self, HeldTable, RuntimeState};
use crate::status::{ChangefeedStatus, FeedState, Phase};

/// What to do with one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableAction {
    /// Stop applying its changes.
    Pause,
    /// Copy it again and stream it.
    Resume,
    /// Stop replicating it; its target table stays.
    Remove,
}

impl Engine {
    /// Applies `action` to `table` of the changefeed.
    pub async fn table_action(
        &self,
        namespace: &str,
        id: &str,
        table: &TableId,
        action: TableAction,
    ) -> Result<ChangefeedStatus, EngineError> {
        let ops = self.ops_lock(namespace, id)?;
        let _guard = ops.lock().await;
        let refused = |refusal| EngineError::Refused {
            id: id.to_string(),
            refusal,
        };
        if self.with_feed(namespace, id, |f| f.status.state())? == FeedState::Finished {
            return Err(refused(Refusal::Finished));
        }
        let key = feed_key(namespace, id);
        let mut state: RuntimeState = self
            .meta
            .get(Collection::ChangefeedState, &key)?
            .unwrap_or_default();
        if state.phase != Some(Phase::Streaming) {
            return Err(refused(Refusal::Copying));
        }
        if !tables::planned(&state, table) {
            return Err(EngineError::TableNotFound(format!(
                "{table} in changefeed {id}"
            )));
        }
        let mut config = self.config(namespace, id)?;
        if action != TableAction::Remove {
            crate::resync::copies_or_refuse(&config)?;
        }
        match action {
            TableAction::Pause if state.is_held(table) => return self.status(namespace, id),
            TableAction::Resume if !state.is_held(table) => {
                return Err(EngineError::InvalidConfig(
                    crate::ConfigError::InvalidOption {
                        field: "table",
                        problem: "is neither paused nor failed: nothing to resume",
                    },
                ))
            }
            TableAction::Remove => {
                let mut rules = config.tables.rules().to_vec();
                rules.push(format!("!{}.{}", exact(&table.schema), exact(&table.name)));
                config.tables = TableFilter::new(&rules).map_err(|e| {
                    EngineError::TableNotFound(format!("{table} cannot be excluded by a rule: {e}"))
                })?;
            }
            _ => {}
        }
        let running = self.with_feed(namespace, id, |f| f.task.is_some())?;
        if running {
            self.stop_task(&key).await;
            // What the task recorded until it stopped (renames, drops it read) is kept.
            state = self
                .meta
                .get(Collection::ChangefeedState, &key)?
                .unwrap_or_default();
            if !tables::planned(&state, table) {
                // Renamed on the source as the task stopped: nothing done, it runs on.
                self.with_feed(namespace, id, |f| {
                    f.task = Some(self.spawn(&f.config, &f.status));
                })?;
                return Err(EngineError::TableNotFound(format!(
                    "{table} in changefeed {id}: renamed on the source just now (list the \
                     changefeed's tables again)"
                )));
            }
        }
        match action {
            TableAction::Pause if state.is_held(table) => {}
            TableAction::Pause => state.held.push(HeldTable {
                table: table.clone(),
                error: None,
            }),
            TableAction::Resume => {
                state.held.retain(|h| &h.table != table);
                state.resync.push(table.clone());
            }
            TableAction::Remove => {
                state.held.retain(|h| &h.table != table);
                self.meta.put(Collection::Changefeeds, &key, &config)?;
            }
        }
        self.meta.put(Collection::ChangefeedState, &key, &state)?;
        info!(changefeed = %key, table = %table, action = ?action, "table action");
        self.with_feed(namespace, id, |f| {
            f.status.update(|s| {
                tables::mark(&state, &mut s.tables);
                if action == TableAction::Remove {
                    let name = table.to_string();
                    s.tables.retain(|t| t.table != name);
                }
            });
            f.config = config;
            if running {
                f.task = Some(self.spawn(&f.config, &f.status));
            }
        })?;
        self.status(namespace, id)
    }
}

/// `name` as a rule part matching only itself: glob characters in a class of their own.
fn exact(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '*' | '?' | '[' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_excludes_exactly_one_table() {
        let odd = TableId::new("public", "t*[x]?");
        let rules = [
            "public.*".to_string(),
            format!("!public.{}", exact(&odd.name)),
        ];
        let filter = TableFilter::new(&rules).unwrap();
        assert!(!filter.matches(&odd));
        assert!(filter.matches(&TableId::new("public", "t1[x]?")));
        assert!(filter.matches(&TableId::new("public", "other")));
    }
}
