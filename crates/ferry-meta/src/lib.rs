//! The metadata store: changefeed definitions and their runtime state.
//!
//! One process runs with the embedded store here: a `redb` file in the server's data
//! directory (ACID, fsync on commit, survives `kill -9`). Values are JSON documents keyed by
//! `namespace/id`, in named collections, so an etcd-backed store for a cluster can keep the
//! same keys and documents. What the store holds is the *desired* configuration, the
//! lifecycle state an operator or a failure left a changefeed in, named sources, and the
//! facts a restart needs (phase, snapshot plan); the replication checkpoint itself lives in
//! the sink, next to the data it covers.
//!
//! | collection | key | document |
//! |---|---|---|
//! | `changefeeds` | `namespace/id` | configuration (secrets included) |
//! | `changefeed_state` | `namespace/id` | phase and snapshot plan |
//! | `changefeed_lifecycle` | `namespace/id` | state, last error, resume position |
//! | `sources` | `namespace/name` | a named source connection (secrets included) |
//! | `server` | `instance` | this server's id (names it as the owner of target tables) |

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

/// A group of documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collection {
    /// Changefeed configurations (what the operator asked for).
    Changefeeds,
    /// Changefeed runtime state (phase, snapshot plan, source positions).
    ChangefeedState,
    /// Changefeed lifecycle: the state an operator or a failure left it in (stopped,
    /// paused, failed, finished), its last error, and a requested resume position.
    ChangefeedLifecycle,
    /// Named source connections that changefeeds refer to.
    Sources,
    /// Facts about this server itself (its instance id).
    Server,
}

impl Collection {
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Collection::Changefeeds => TableDefinition::new("changefeeds"),
            Collection::ChangefeedState => TableDefinition::new("changefeed_state"),
            Collection::ChangefeedLifecycle => TableDefinition::new("changefeed_lifecycle"),
            Collection::Sources => TableDefinition::new("sources"),
            Collection::Server => TableDefinition::new("server"),
        }
    }
}

/// A metadata store failure.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The store could not be opened.
    #[error("cannot open the metadata store at {path}")]
    Open {
        /// The store's file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A read or write failed.
    #[error("metadata store {operation} failed")]
    Io {
        /// What was attempted.
        operation: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored document does not decode.
    #[error("stored document {key} is unreadable")]
    Corrupt {
        /// Its key.
        key: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

fn io<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
) -> impl Fn(E) -> MetaError {
    move |e| MetaError::Io {
        operation,
        source: Box::new(e),
    }
}

/// The embedded store.
pub struct MetaStore {
    db: Database,
}

impl MetaStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        let path = dir.join("meta.redb");
        std::fs::create_dir_all(dir).map_err(|e| MetaError::Open {
            path: path.clone(),
            source: Box::new(e),
        })?;
        let db = Database::create(&path).map_err(|e| MetaError::Open {
            path: path.clone(),
            source: Box::new(e),
        })?;
        Ok(MetaStore { db })
    }

    /// Stores `value` under `key`, durably.
    pub fn put<T: Serialize>(
        &self,
        collection: Collection,
        key: &str,
        value: &T,
    ) -> Result<(), MetaError> {
        let bytes = serde_json::to_vec(value).expect("metadata documents serialize");
        let txn = self.db.begin_write().map_err(io("write"))?;
        {
            let mut table = txn.open_table(collection.table()).map_err(io("write"))?;
            table.insert(key, bytes.as_slice()).map_err(io("write"))?;
        }
        txn.commit().map_err(io("commit"))
    }

    /// The document under `key`.
    pub fn get<T: DeserializeOwned>(
        &self,
        collection: Collection,
        key: &str,
    ) -> Result<Option<T>, MetaError> {
        let txn = self.db.begin_read().map_err(io("read"))?;
        let table = match txn.open_table(collection.table()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io("read")(e)),
        };
        let Some(value) = table.get(key).map_err(io("read"))? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|source| MetaError::Corrupt {
                key: key.to_string(),
                source,
            })
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&self, collection: Collection, key: &str) -> Result<bool, MetaError> {
        let txn = self.db.begin_write().map_err(io("write"))?;
        let existed = {
            let mut table = txn.open_table(collection.table()).map_err(io("write"))?;
            let removed = table.remove(key).map_err(io("write"))?;
            removed.is_some()
        };
        txn.commit().map_err(io("commit"))?;
        Ok(existed)
    }

    /// Every document of `collection`, by key.
    pub fn list<T: DeserializeOwned>(
        &self,
        collection: Collection,
    ) -> Result<Vec<(String, T)>, MetaError> {
        let txn = self.db.begin_read().map_err(io("read"))?;
        let table = match txn.open_table(collection.table()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(io("read")(e)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(io("read"))? {
            let (k, v) = entry.map_err(io("read"))?;
            let key = k.value().to_string();
            let doc = serde_json::from_slice(v.value()).map_err(|source| MetaError::Corrupt {
                key: key.clone(),
                source,
            })?;
            out.push((key, doc));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = MetaStore::open(dir.path()).unwrap();
            assert_eq!(
                store.get::<String>(Collection::Changefeeds, "a").unwrap(),
                None
            );
            store
                .put(Collection::Changefeeds, "default/a", &"x".to_string())
                .unwrap();
            store
                .put(Collection::Changefeeds, "default/b", &"y".to_string())
                .unwrap();
            assert!(store.delete(Collection::Changefeeds, "default/b").unwrap());
            assert!(!store.delete(Collection::Changefeeds, "default/b").unwrap());
        }
        let store = MetaStore::open(dir.path()).unwrap();
        let all: Vec<(String, String)> = store.list(Collection::Changefeeds).unwrap();
        assert_eq!(all, vec![("default/a".to_string(), "x".to_string())]);
        assert!(store
            .list::<String>(Collection::ChangefeedState)
            .unwrap()
            .is_empty());
    }
}
