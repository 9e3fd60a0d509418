//! The chunk ledger the engine keeps for sinks whose destination cannot hold snapshot
//! chunk markers (webhooks): one document per changefeed in the metadata store.

use std::sync::{Arc, Mutex};

use ferry_core::{ChunkLedger, ChunkLedgerHandle, FinishedChunk};
use ferry_meta::{Collection, MetaStore};

/// Serializes read-modify-write of the documents. Process-wide, not per ledger: each sink
/// a changefeed connects (one per snapshot worker) gets a ledger of its own, and workers
/// record in parallel; a lock per ledger let two of them read the same document and the
/// last write drop the other's marker (a restarted changefeed then waited forever for a
/// chunk it had copied). Markers are written once per chunk: one lock costs nothing.
static RECORDING: Mutex<()> = Mutex::new(());

/// Changefeed `key`'s markers in `meta`.
pub(crate) fn ledger(meta: &Arc<MetaStore>, key: &str) -> ChunkLedgerHandle {
    ChunkLedgerHandle(Arc::new(MetaLedger {
        meta: meta.clone(),
        key: key.to_string(),
    }))
}

struct MetaLedger {
    meta: Arc<MetaStore>,
    key: String,
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
        let _guard = RECORDING.lock().expect("ledger lock");
        self.read()
    }

    fn record(&self, chunk: &FinishedChunk) -> Result<(), String> {
        let _guard = RECORDING.lock().expect("ledger lock");
        let mut chunks = self.read()?;
        chunks.retain(|c| !(c.table == chunk.table && c.chunk == chunk.chunk));
        chunks.push(chunk.clone());
        self.meta
            .put(Collection::ChunkMarkers, &self.key, &chunks)
            .map_err(|e| e.to_string())
    }

    fn clear(&self) -> Result<(), String> {
        let _guard = RECORDING.lock().expect("ledger lock");
        self.meta
            .delete(Collection::ChunkMarkers, &self.key)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
