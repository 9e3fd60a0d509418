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
//!
//! # Secrets at rest
//! Every document is sealed (see [`seal`]) with the key in a separate key file, so the
//! data directory alone reveals no password. [`MetaStore::open`] checks the key against a
//! sealed check value before anything else, generates the key file on first start, and
//! rewrites a store from before encryption (plaintext documents) into a new, sealed file
//! that replaces the old one, so no plaintext page survives in it. The data directory is
//! `0700`, the store `0600` (see [`files`]).

mod files;
pub mod seal;

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

pub use seal::{KeyFileError, SecretKey};

/// The store's file in the data directory.
const STORE_FILE: &str = "meta.redb";
/// Facts about the store itself: the key check.
const STORE_TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("ferry_store");
/// The key of the sealed check value in [`STORE_TABLE`].
const KEY_CHECK: &str = "key_check";
/// What the check value seals.
const KEY_CHECK_PLAINTEXT: &[u8] = b"ferry metadata store";

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
    /// Source objects (slot, publications) of deleted changefeeds still to be dropped,
    /// because the source was unreachable at the delete.
    PendingCleanups,
    /// The checkpoints of changefeeds whose sink cannot store one with the data (streams):
    /// saved after the sink made the batch durable, before the source is told.
    Checkpoints,
    /// Per changefeed, the operator actions taken on it, newest last (capped).
    History,
    /// Per changefeed, the snapshot chunks a sink without a store of its own (webhooks)
    /// delivered.
    ChunkMarkers,
    /// Diffs of changefeeds (key `namespace/id/diff_id`): what was asked, the chunks done
    /// and what they found, so a diff resumes after a restart from its last finished chunk.
    Diffs,
}

impl Collection {
    /// Every collection.
    const ALL: [Collection; 10] = [
        Collection::Changefeeds,
        Collection::ChangefeedState,
        Collection::ChangefeedLifecycle,
        Collection::Sources,
        Collection::Server,
        Collection::PendingCleanups,
        Collection::Checkpoints,
        Collection::History,
        Collection::ChunkMarkers,
        Collection::Diffs,
    ];

    fn name(self) -> &'static str {
        match self {
            Collection::Changefeeds => "changefeeds",
            Collection::ChangefeedState => "changefeed_state",
            Collection::ChangefeedLifecycle => "changefeed_lifecycle",
            Collection::Sources => "sources",
            Collection::Server => "server",
            Collection::PendingCleanups => "pending_cleanups",
            Collection::Checkpoints => "checkpoints",
            Collection::History => "changefeed_history",
            Collection::ChunkMarkers => "chunk_markers",
            Collection::Diffs => "changefeed_diffs",
        }
    }

    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }

    /// The associated data a document is sealed with: its place.
    fn aad(self, key: &str) -> String {
        format!("{}/{key}", self.name())
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
    /// A stored document is not sealed with the store's key (or was altered).
    #[error("stored document {key} does not decrypt with the secret key")]
    Unsealable {
        /// Its key.
        key: String,
    },
    /// The key file cannot be read, created or used.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The key is not the one the store was sealed with.
    #[error(
        "the secret key in {key_file} does not decrypt the metadata store {path}: it was \
         written with another key; point --secret-key-file at that key"
    )]
    WrongKey {
        /// The key file.
        key_file: PathBuf,
        /// The store's file.
        path: PathBuf,
    },
    /// The store is sealed, and the key file is gone.
    #[error(
        "the metadata store {path} is encrypted, and its secret key file {key_file} does not \
         exist; restore the key file from your backup (or point --secret-key-file at it)"
    )]
    KeyMissing {
        /// The key file.
        key_file: PathBuf,
        /// The store's file.
        path: PathBuf,
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
    key: SecretKey,
}

impl MetaStore {
    /// Opens (or creates) the store in `dir`, sealed with the key in `key_file` (generated,
    /// mode 0600, when neither the file nor a sealed store exists). Refuses a key that is
    /// not the store's. Rewrites a store with plaintext documents into a sealed one.
    pub fn open(dir: &Path, key_file: &Path) -> Result<Self, MetaError> {
        let path = dir.join(STORE_FILE);
        let open_err = |e: std::io::Error| MetaError::Open {
            path: path.clone(),
            source: Box::new(e),
        };
        files::private_dir(dir).map_err(open_err)?;
        files::private_file(&path).map_err(open_err)?;
        let db = create_db(&path)?;
        let check = read_raw(&db, STORE_TABLE, KEY_CHECK)?;
        let key = if key_file.exists() {
            SecretKey::load(key_file)?
        } else if check.is_some() {
            return Err(MetaError::KeyMissing {
                key_file: key_file.to_path_buf(),
                path,
            });
        } else {
            SecretKey::generate(key_file)?
        };
        match check {
            Some(sealed)
                if key.open(KEY_CHECK, &sealed).as_deref() == Some(KEY_CHECK_PLAINTEXT) => {}
            Some(_) => {
                return Err(MetaError::WrongKey {
                    key_file: key_file.to_path_buf(),
                    path,
                })
            }
            None => write_raw(
                &db,
                STORE_TABLE,
                KEY_CHECK,
                &key.seal(KEY_CHECK, KEY_CHECK_PLAINTEXT),
            )?,
        }
        let db = if has_plaintext(&db)? {
            rewrite_sealed(db, &path, &key)?
        } else {
            db
        };
        Ok(MetaStore { db, key })
    }

    /// The key the store is sealed with (its path, and whether this start generated it).
    pub fn secret_key(&self) -> &SecretKey {
        &self.key
    }

    /// Stores `value` under `key`, durably.
    pub fn put<T: Serialize>(
        &self,
        collection: Collection,
        key: &str,
        value: &T,
    ) -> Result<(), MetaError> {
        let json = serde_json::to_vec(value).expect("metadata documents serialize");
        let bytes = self.key.seal(&collection.aad(key), &json);
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
        self.decode(collection, key, value.value()).map(Some)
    }

    /// A sealed document's value.
    fn decode<T: DeserializeOwned>(
        &self,
        collection: Collection,
        key: &str,
        sealed: &[u8],
    ) -> Result<T, MetaError> {
        let json =
            self.key
                .open(&collection.aad(key), sealed)
                .ok_or_else(|| MetaError::Unsealable {
                    key: key.to_string(),
                })?;
        serde_json::from_slice(&json).map_err(|source| MetaError::Corrupt {
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
            let doc = self.decode(collection, &key, v.value())?;
            out.push((key, doc));
        }
        Ok(out)
    }
}

fn create_db(path: &Path) -> Result<Database, MetaError> {
    Database::create(path).map_err(|e| MetaError::Open {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// The raw value under `key` in `table`.
fn read_raw(
    db: &Database,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, MetaError> {
    let txn = db.begin_read().map_err(io("read"))?;
    let table = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(io("read")(e)),
    };
    Ok(table
        .get(key)
        .map_err(io("read"))?
        .map(|v| v.value().to_vec()))
}

fn write_raw(
    db: &Database,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
    key: &str,
    value: &[u8],
) -> Result<(), MetaError> {
    let txn = db.begin_write().map_err(io("write"))?;
    txn.open_table(table)
        .map_err(io("write"))?
        .insert(key, value)
        .map_err(io("write"))?;
    txn.commit().map_err(io("commit"))
}

/// Every raw `(key, value)` of `collection`.
fn raw_documents(
    db: &Database,
    collection: Collection,
) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
    let txn = db.begin_read().map_err(io("read"))?;
    let table = match txn.open_table(collection.table()) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(io("read")(e)),
    };
    let mut out = Vec::new();
    for entry in table.iter().map_err(io("read"))? {
        let (k, v) = entry.map_err(io("read"))?;
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}

/// Whether a document of a store written before encryption is still in plaintext.
fn has_plaintext(db: &Database) -> Result<bool, MetaError> {
    for collection in Collection::ALL {
        if raw_documents(db, collection)?
            .iter()
            .any(|(_, v)| !seal::is_sealed(v))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Copies every document of `db` (at `path`), sealed, into a new file that then replaces
/// `path`: redb reuses freed pages without erasing them, so sealing in place could leave
/// plaintext passwords in the file.
fn rewrite_sealed(db: Database, path: &Path, key: &SecretKey) -> Result<Database, MetaError> {
    let fresh_path = path.with_extension("redb.sealing");
    let open_err = |e: std::io::Error| MetaError::Open {
        path: fresh_path.clone(),
        source: Box::new(e),
    };
    match std::fs::remove_file(&fresh_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(open_err(e)),
    }
    files::private_file(&fresh_path).map_err(open_err)?;
    let fresh = create_db(&fresh_path)?;
    let check = read_raw(&db, STORE_TABLE, KEY_CHECK)?.expect("open() wrote the key check");
    write_raw(&fresh, STORE_TABLE, KEY_CHECK, &check)?;
    let txn = fresh.begin_write().map_err(io("write"))?;
    for collection in Collection::ALL {
        let mut table = txn.open_table(collection.table()).map_err(io("write"))?;
        for (k, v) in raw_documents(&db, collection)? {
            let sealed = if seal::is_sealed(&v) {
                v
            } else {
                key.seal(&collection.aad(&k), &v)
            };
            table
                .insert(k.as_str(), sealed.as_slice())
                .map_err(io("write"))?;
        }
    }
    txn.commit().map_err(io("commit"))?;
    drop(fresh);
    drop(db);
    std::fs::rename(&fresh_path, path).map_err(open_err)?;
    if let Some(dir) = path.parent() {
        files::sync_dir(dir).map_err(open_err)?;
    }
    create_db(path)
}

#[cfg(test)]
mod tests;
