//! The history of operator actions on a changefeed: each create, update, pause, resume,
//! skip, re-sync, … with its time, its parameters (secrets masked by the caller) and its
//! result, kept in the metadata store (the newest [`KEPT`]). It outlives a delete, so what
//! was done to a changefeed can still be read after it is gone.

use ferry_meta::Collection;
use serde::{Deserialize, Serialize};

use crate::engine::{feed_key, Engine};
use crate::error::EngineError;
use crate::status::{now_us, rfc3339};

/// How many actions a changefeed's history keeps.
pub(crate) const KEPT: usize = 500;

/// One operator action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// When it was asked (RFC 3339).
    pub at: String,
    /// What: `create`, `update`, `delete`, `pause`, `resume`, `skip`, `resync`,
    /// `tables/public.t/resync`, `sequences/sync`, `foreign-keys/create`.
    pub action: String,
    /// The request's parameters (its query and body), secrets masked.
    pub parameters: serde_json::Value,
    /// `ok`, or the error's code and message.
    pub result: String,
}

/// The answer of `GET /changefeeds/{id}/history`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct History {
    /// Oldest first.
    pub items: Vec<HistoryEntry>,
}

impl Engine {
    /// Records an action on changefeed `namespace/id` (the caller masks its parameters).
    pub fn record_action(
        &self,
        namespace: &str,
        id: &str,
        action: String,
        parameters: serde_json::Value,
        result: String,
    ) -> Result<(), EngineError> {
        let key = feed_key(namespace, id);
        let mut history: History = self
            .meta
            .get(Collection::History, &key)?
            .unwrap_or_default();
        history.items.push(HistoryEntry {
            at: rfc3339(now_us()),
            action,
            parameters,
            result,
        });
        let excess = history.items.len().saturating_sub(KEPT);
        history.items.drain(..excess);
        self.meta.put(Collection::History, &key, &history)?;
        Ok(())
    }

    /// The actions taken on changefeed `namespace/id`, also after it was deleted.
    pub fn history(&self, namespace: &str, id: &str) -> Result<History, EngineError> {
        match self
            .meta
            .get(Collection::History, &feed_key(namespace, id))?
        {
            Some(history) => Ok(history),
            None => {
                self.config(namespace, id)?;
                Ok(History::default())
            }
        }
    }
}
