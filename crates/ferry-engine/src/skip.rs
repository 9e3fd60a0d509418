//! Skipping a poison transaction: a source transaction the target refuses even alone stops
//! the changefeed with `last_error` naming it and `last_error_position` holding its commit
//! position. `skip` with exactly that position leaves the transaction out (all of it, or
//! only its changes to one table) and resumes; any other position is refused, so an
//! operator never skips what they did not see fail.

use ferry_core::TableId;
use ferry_meta::Collection;
use tracing::info;

use crate::engine::{feed_key, Engine};
use crate::error::EngineError;
use crate::lifecycle::{Action, LifecycleDoc, SkipTransaction};
use crate::runner::tables::{self, RuntimeState};
use crate::status::ChangefeedStatus;

impl Engine {
    /// Leaves out the source transaction committed at `position` (the changefeed's
    /// `last_error_position`), or only its changes to `table`, and resumes.
    pub async fn skip(
        &self,
        namespace: &str,
        id: &str,
        position: &str,
        table: Option<TableId>,
    ) -> Result<ChangefeedStatus, EngineError> {
        let ops = self.ops_lock(namespace, id)?;
        let _guard = ops.lock().await;
        let transition = self.transition(
            namespace,
            id,
            Action::Resume {
                with_position: true,
            },
        )?;
        let config = self.config(namespace, id)?;
        let position = self
            .parse_position(&config.source_uri, position)
            .map_err(EngineError::InvalidPosition)?;
        let (state, failed_at) = self.with_feed(namespace, id, |f| {
            f.status
                .update(|s| (s.state, s.last_error_position.clone()))
        })?;
        match failed_at {
            Some(failed) if failed == position => {}
            Some(failed) => {
                return Err(EngineError::InvalidPosition(format!(
                    "{position} is not the transaction the target refused; skip takes \
                     last_error_position ({failed})"
                )))
            }
            None => {
                return Err(EngineError::InvalidPosition(format!(
                    "the changefeed ({state}) has no refused transaction to skip \
                     (last_error_position is empty)"
                )))
            }
        }
        if let Some(table) = &table {
            let state: RuntimeState = self
                .meta
                .get(Collection::ChangefeedState, &feed_key(namespace, id))?
                .unwrap_or_default();
            if !tables::planned(&state, table) {
                return Err(EngineError::InvalidPosition(format!(
                    "the changefeed does not replicate {table}"
                )));
            }
        }
        let key = feed_key(namespace, id);
        let mut doc = LifecycleDoc::load(&self.meta, &key)?;
        doc.skip = Some(SkipTransaction {
            position: position.clone(),
            table: table.clone(),
        });
        doc.save(&self.meta, &key)?;
        info!(changefeed = %key, position = %position, table = ?table.map(|t| t.to_string()), "skipping a source transaction");
        self.apply(namespace, id, transition, None).await?;
        self.status(namespace, id)
    }
}
