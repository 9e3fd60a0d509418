//! Pending clean-ups: the slot and publications of a changefeed deleted while its source was
//! unreachable (or refused the drop). The delete records them in the metadata store
//! (`PendingCleanups`, keyed by the changefeed's key) instead of leaving them behind with a
//! log line; a background loop retries every [`RETRY_INTERVAL`] until the source answers
//! and drops them, then forgets the record. Until then `GET /sources/{name}/status` lists
//! them, so an operator sees why the source still holds WAL.
//!
//! A changefeed created again under the same key before the clean-up ran shares the slot's
//! name: creating it removes the pending record, so the loop never drops a slot a
//! changefeed owns.

use std::sync::Weak;
use std::time::Duration;

use ferry_core::ConnectionUri;
use ferry_meta::Collection;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::engine::Engine;
use crate::status::now_us;

/// Time between retries of the pending clean-ups.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// Longest one source may take to answer a retry.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Source objects of a deleted changefeed still to be dropped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PendingCleanup {
    /// The deleted changefeed's namespace.
    pub namespace: String,
    /// Its id.
    pub changefeed: String,
    /// The named source it used, if any.
    pub source: Option<String>,
    /// The source (password inside; stored sealed like a changefeed's configuration).
    pub source_uri: ConnectionUri,
    /// The slot to drop.
    pub slot: String,
    /// The publications to drop.
    pub publications: Vec<String>,
    /// When the delete happened, microseconds since the Unix epoch.
    pub since_us: i64,
    /// Why the last try failed.
    pub last_error: Option<String>,
}

impl PendingCleanup {
    /// Whether it concerns the named source `namespace/name` whose URI is `uri`.
    pub(crate) fn concerns(&self, namespace: &str, name: &str, uri: &ConnectionUri) -> bool {
        (self.namespace == namespace && self.source.as_deref() == Some(name))
            || self.source_uri.expose() == uri.expose()
    }
}

impl Engine {
    /// The record of what deleted changefeed `namespace/changefeed` leaves on its source.
    pub(crate) fn pending_cleanup(
        &self,
        namespace: &str,
        changefeed: &str,
        source: Option<String>,
        source_uri: ConnectionUri,
    ) -> PendingCleanup {
        let key = crate::engine::feed_key(namespace, changefeed);
        let objects = self
            .connectors
            .source(&source_uri)
            .map(|c| c.objects(&key))
            .unwrap_or_default();
        let names = |kind: &str| {
            objects
                .iter()
                .filter(|o| o.kind == kind)
                .map(|o| o.name.clone())
                .collect::<Vec<_>>()
        };
        PendingCleanup {
            namespace: namespace.to_string(),
            changefeed: changefeed.to_string(),
            source,
            source_uri,
            slot: names("slot").into_iter().next().unwrap_or_default(),
            publications: names("publication"),
            since_us: now_us(),
            last_error: None,
        }
    }

    /// Drops what changefeed `key` keeps on its source now; returns the error's text when
    /// the source cannot be reached or refuses.
    pub(crate) async fn release_source(
        &self,
        uri: &ConnectionUri,
        key: &str,
    ) -> Result<(), String> {
        let connector = self.connectors.source(uri).map_err(|e| e.chain())?;
        connector.release(uri, key).await.map_err(|e| e.chain())
    }

    /// Records a clean-up the delete could not do.
    pub(crate) fn record_cleanup(&self, key: &str, pending: &PendingCleanup) {
        if let Err(e) = self.meta.put(Collection::PendingCleanups, key, pending) {
            warn!(changefeed = %key, error = %ferry_core::error_chain(&e), "could not record the pending clean-up; slot left behind");
        }
    }

    /// Forgets a pending clean-up (its changefeed key is used again).
    pub(crate) fn forget_cleanup(&self, key: &str) {
        if let Err(e) = self.meta.delete(Collection::PendingCleanups, key) {
            warn!(changefeed = %key, error = %ferry_core::error_chain(&e), "could not forget a pending clean-up");
        }
    }

    /// Every pending clean-up, by changefeed key.
    pub(crate) fn pending_cleanups(&self) -> Vec<(String, PendingCleanup)> {
        self.meta
            .list(Collection::PendingCleanups)
            .unwrap_or_default()
    }

    /// Tries every pending clean-up once.
    async fn retry_cleanups(&self) {
        for (key, mut pending) in self.pending_cleanups() {
            if self.feeds.lock().expect("feeds lock").contains_key(&key) {
                // Created again under the same key: the slot is the new changefeed's.
                self.forget_cleanup(&key);
                continue;
            }
            let tried =
                tokio::time::timeout(TIMEOUT, self.release_source(&pending.source_uri, &key))
                    .await
                    .unwrap_or_else(|_| Err("the source did not answer in time".into()));
            match tried {
                Ok(()) => {
                    info!(changefeed = %key, slot = %pending.slot, "pending clean-up done: slot and publications dropped");
                    self.forget_cleanup(&key);
                }
                Err(e) => {
                    debug!(changefeed = %key, error = %e, "pending clean-up failed; retrying later");
                    if pending.last_error.as_deref() != Some(e.as_str()) {
                        pending.last_error = Some(e);
                        // Only if still pending (not forgotten meanwhile by a re-create).
                        if self
                            .meta
                            .get::<PendingCleanup>(Collection::PendingCleanups, &key)
                            .ok()
                            .flatten()
                            .is_some()
                        {
                            self.record_cleanup(&key, &pending);
                        }
                    }
                }
            }
        }
    }
}

/// Starts the retry loop; it ends when the engine is dropped.
pub(crate) fn spawn(engine: Weak<Engine>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RETRY_INTERVAL).await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            engine.retry_cleanups().await;
        }
    });
}
