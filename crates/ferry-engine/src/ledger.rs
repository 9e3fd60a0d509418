//! The chunk ledger the engine keeps for sinks whose destination cannot hold snapshot
//! chunk markers (webhooks): one document per changefeed in the metadata store.

use std::sync::{Arc, Mutex};

use ferry_core::{ChunkLedger, ChunkLedgerHandle, FinishedChunk};
use ferry_meta::{Collection, MetaStore};

/// Changefeed `key`'s markers in `meta`.
pub(crate) fn ledger(meta: &Arc<MetaStore>, key: &str) -> ChunkLedgerHandle {
    ChunkLedgerHandle(Arc::new(MetaLedger {
        meta: meta.clone(),
        key: key.to_string(),
        lock: Mutex::new(()),
    }))
}

struct MetaLedger {
    meta: Arc<MetaStore>,
    key: String,
    /// Serializes read-modify-write of the document (snapshot workers record in parallel;
    /// one process runs a changefeed).
    lock: Mutex<()>,
}

impl MetaLedger {
    fn read(&self) -> Result<Vec<FinishedChunk>, String> {
        self.meta
            .get(Collection::ChunkMarkers, &self.key)
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string())
    }
}

impl ChunkLedger for MetaLedger {
    fn finished(&self) -> Result<Vec<FinishedChunk>, String> {
        let _guard = self.lock.lock().expect("ledger lock");
        self.read()
    }

    fn record(&self, chunk: &FinishedChunk) -> Result<(), String> {
        let _guard = self.lock.lock().expect("ledger lock");
        let mut chunks = self.read()?;
        chunks.retain(|c| !(c.table == chunk.table && c.chunk == chunk.chunk));
        chunks.push(chunk.clone());
        self.meta
            .put(Collection::ChunkMarkers, &self.key, &chunks)
            .map_err(|e| e.to_string())
    }

    fn clear(&self) -> Result<(), String> {
        let _guard = self.lock.lock().expect("ledger lock");
        self.meta
            .delete(Collection::ChunkMarkers, &self.key)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
