//! The file sink, `file:///DIR?format=debezium-json[&max_file_bytes=N]`: every change and
//! snapshot row as one line of Debezium JSON (see `ferry_events` and `docs/events.md`), in
//! numbered files of a directory ([`dir`]).
//!
//! # Durability
//! The checkpoint is the engine's ([`CheckpointStore::External`]): [`Sink::commit_batch`]
//! returns only once the batch's lines and the directory entries of new files are fsynced,
//! so a saved checkpoint never covers an event that is not on disk. Delivery is
//! at-least-once: after a crash the stream resends from the checkpoint, with the same
//! event ids. An aborted batch is cut back off the files.
//!
//! # Snapshots
//! Rows arrive on the row path and become `r` events; a chunk is recorded in the
//! directory's manifest once its lines are durable, so a restart copies only the rest. A
//! table copied again whole (`replace`: a copy restarted in a new snapshot, an added or
//! re-synced table) is preceded by a `t` event, so a consumer drops what it held of it;
//! so is every table already copied when a new first snapshot begins
//! ([`Sink::reset_snapshot`]).
//!
//! # Sharing
//! A changefeed's stream and its snapshot workers each connect a sink; they share one open
//! [`dir::EventDir`] per directory (a process-wide map), and a directory belongs to one
//! changefeed (its `.ferry-owner` file).

mod dir;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, OnceLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use ferry_core::{
    CheckpointStore, ChunkData, ErrorClass, FileSinkUri, FinishedChunk, Position, RowChange, Sink,
    SinkConnector, SinkError, SinkUri, TableId, TableSchema, TargetPolicy, TxMeta,
};
use ferry_events::{ChunkEvents, Event, Origin, TransactionEvents};
use futures::StreamExt;
use tokio::sync::Mutex;

use dir::{EventDir, Mark, OpenError};

/// Connects file sinks.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileConnector;

#[async_trait]
impl SinkConnector for FileConnector {
    async fn connect(
        &self,
        uri: &SinkUri,
        feed: &str,
        policy: TargetPolicy,
    ) -> Result<Box<dyn Sink>, SinkError> {
        let uri = file_uri(uri)?;
        let origin = Origin {
            name: feed.to_string(),
            db: policy.source.map(|s| s.database).unwrap_or_default(),
        };
        Ok(Box::new(FileSink {
            dir: shared_dir(uri, feed)?,
            origin,
            tx: None,
            batch_start: None,
        }))
    }

    async fn release(&self, uri: &SinkUri, feed: &str, _server_id: &str) -> Result<(), SinkError> {
        let uri = file_uri(uri)?;
        dir::release(uri.dir(), feed).map_err(|e| io_error("release the directory", e))
    }
}

fn file_uri(uri: &SinkUri) -> Result<&FileSinkUri, SinkError> {
    match uri {
        SinkUri::File(uri) => Ok(uri),
        other => Err(SinkError::Unsupported {
            message: format!("the file connector got a {} sink", other.masked()),
        }),
    }
}

/// Open directories of this process, so that a changefeed's sinks append to one file.
type OpenDirs = HashMap<PathBuf, (String, Weak<Mutex<EventDir>>)>;

fn shared_dir(uri: &FileSinkUri, feed: &str) -> Result<Arc<Mutex<EventDir>>, SinkError> {
    static OPEN: OnceLock<StdMutex<OpenDirs>> = OnceLock::new();
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .expect("open-directory map lock");
    if let Some((owner, dir)) = open.get(uri.dir()) {
        if let Some(dir) = dir.upgrade() {
            if owner != feed {
                return Err(owned(owner));
            }
            return Ok(dir);
        }
    }
    let dir = match EventDir::open(uri.dir(), uri.max_file_bytes(), feed) {
        Ok(dir) => Arc::new(Mutex::new(dir)),
        Err(OpenError::Owned(owner)) => return Err(owned(&owner)),
        Err(OpenError::Io(e)) => return Err(io_error("open the directory", e)),
    };
    open.insert(
        uri.dir().to_path_buf(),
        (feed.to_string(), Arc::downgrade(&dir)),
    );
    Ok(dir)
}

fn owned(owner: &str) -> SinkError {
    SinkError::Unsupported {
        message: format!(
            "the directory is written by changefeed {owner}; give each changefeed its own directory"
        ),
    }
}

/// A write or fsync failed: transient (a full disk may be freed), the batch is retried.
fn io_error(what: &str, e: std::io::Error) -> SinkError {
    SinkError::Statement {
        what: what.into(),
        class: ErrorClass::Transient,
        source: Box::new(e),
    }
}

/// A value that does not read as its type: definite, never written as a guess.
fn encode_error(e: ferry_events::EncodeError) -> SinkError {
    SinkError::Unsupported {
        message: format!("cannot encode an event: {e}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Writes one changefeed's events into a directory.
pub struct FileSink {
    dir: Arc<Mutex<EventDir>>,
    origin: Origin,
    /// The open source transaction, numbering its events.
    tx: Option<TransactionEvents>,
    /// Where the open batch began in the files.
    batch_start: Option<Mark>,
}

impl FileSink {
    async fn write(&mut self, events: Vec<Event>) -> Result<(), SinkError> {
        let mut dir = self.dir.lock().await;
        self.batch_start.get_or_insert_with(|| dir.mark());
        for event in events {
            let line = serde_json::to_vec(&event.json).expect("JSON values always serialize");
            dir.append(&line).map_err(|e| io_error("write events", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for FileSink {
    fn checkpoint_store(&self) -> CheckpointStore {
        CheckpointStore::External
    }

    async fn load_checkpoint(&mut self) -> Result<Option<Position>, SinkError> {
        Ok(None)
    }

    async fn begin_transaction(&mut self, tx: &TxMeta) -> Result<(), SinkError> {
        self.tx = Some(TransactionEvents::new(tx.clone()));
        Ok(())
    }

    async fn ensure_table(&mut self, _schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        Ok(())
    }

    async fn apply(&mut self, change: RowChange) -> Result<(), SinkError> {
        let tx = self.tx.as_mut().ok_or_else(|| SinkError::Unsupported {
            message: "a change arrived outside a source transaction".into(),
        })?;
        let events = tx
            .events(&self.origin, &change, now_ms())
            .map_err(encode_error)?;
        self.write(events).await
    }

    async fn commit_batch(&mut self, _checkpoint: Position) -> Result<(), SinkError> {
        let mut dir = self.dir.lock().await;
        dir.sync().map_err(|e| io_error("fsync events", e))?;
        self.batch_start = None;
        Ok(())
    }

    async fn abort_batch(&mut self) {
        self.tx = None;
        if let Some(mark) = self.batch_start.take() {
            if let Err(e) = self.dir.lock().await.rollback(mark) {
                // The events stay: a resent batch repeats them with the same ids.
                tracing::warn!(error = %e, "could not cut an aborted batch off the event files");
            }
        }
    }

    async fn rename_table(
        &mut self,
        _from: &TableId,
        _schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        Ok(())
    }

    async fn release_tables(&mut self, _tables: &[TableId]) -> Result<(), SinkError> {
        Ok(())
    }

    /// A new first snapshot: every table an earlier one copied gets a `t` event first, so
    /// a consumer drops rows the new copy may no longer have.
    async fn reset_snapshot(&mut self) -> Result<(), SinkError> {
        let mut dir = self.dir.lock().await;
        let copied = dir
            .finished_chunks()
            .map_err(|e| io_error("read the chunk manifest", e))?;
        for event in
            ferry_events::reset_events(&self.origin, &copied, now_ms()).map_err(encode_error)?
        {
            let line = serde_json::to_vec(&event.json).expect("JSON values always serialize");
            dir.append(&line).map_err(|e| io_error("write events", e))?;
        }
        dir.sync().map_err(|e| io_error("fsync events", e))?;
        dir.clear_chunks()
            .map_err(|e| io_error("clear the chunk manifest", e))
    }

    async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        let dir = self.dir.lock().await;
        dir.finished_chunks()
            .map_err(|e| io_error("read the chunk manifest", e))
    }

    async fn ensure_table_for_copy(&mut self, _schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        Ok(())
    }

    /// Holds the directory for the whole chunk, so a chunk's lines are contiguous.
    async fn copy_chunk(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot: &Position,
        replace: bool,
        data: ChunkData,
    ) -> Result<u64, SinkError> {
        let ChunkData::Rows(mut rows) = data else {
            return Err(SinkError::Unsupported {
                message: "the file sink loads snapshot rows only".into(),
            });
        };
        let read_error = |e: ferry_core::SourceError| SinkError::Connect {
            what: "read a snapshot chunk".into(),
            class: e.class,
            source: Box::new(e),
        };
        let mut dir = self.dir.lock().await;
        let mut append = |event: Event| {
            let line = serde_json::to_vec(&event.json).expect("JSON values always serialize");
            dir.append(&line).map_err(|e| io_error("write events", e))
        };
        let mut events = ChunkEvents::new(&self.origin, schema, snapshot, chunk);
        if replace {
            append(events.replace_event(now_ms()).map_err(encode_error)?)?;
        }
        while let Some(row) = rows.next().await.transpose().map_err(read_error)? {
            if let Some(event) = events.push(row, now_ms()).map_err(encode_error)? {
                append(event)?;
            }
        }
        let (last, count) = events.finish(now_ms()).map_err(encode_error)?;
        if let Some(event) = last {
            append(event)?;
        }
        dir.sync().map_err(|e| io_error("fsync events", e))?;
        dir.record_chunk(&FinishedChunk {
            table: schema.id.clone(),
            chunk,
            rows: count,
            snapshot: snapshot.clone(),
        })
        .map_err(|e| io_error("record a finished chunk", e))?;
        Ok(count)
    }

    async fn finish_table(&mut self, _schema: &TableSchema) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::{ColumnSchema, LogicalType, Lsn, ReplicaIdentity, Value};
    use futures::stream;
    use serde_json::Value as Json;

    use super::*;

    fn schema() -> TableSchema {
        TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![ColumnSchema {
                name: "id".into(),
                type_name: "integer".into(),
                type_oid: 23,
                logical: LogicalType::Int { bits: 32 },
                nullable: false,
                missing_value: None,
                has_default: false,
            }],
            key: vec![0],
            identity: ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: vec![],
            dialect: ferry_core::Dialect::Postgres,
        }
    }

    fn rows(n: u32) -> ChunkData {
        let rows: Vec<Result<ferry_core::Row, ferry_core::SourceError>> = (0..n)
            .map(|i| Ok(vec![Value::Text(i.to_string().into_bytes().into())]))
            .collect();
        ChunkData::Rows(stream::iter(rows).boxed())
    }

    fn events(dir: &std::path::Path) -> Vec<Json> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
            .iter()
            .flat_map(|n| {
                std::fs::read_to_string(dir.join(n))
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn chunks_are_recorded_and_recopies_start_with_a_truncate() {
        let tmp = tempfile::tempdir().unwrap();
        let uri: SinkUri = format!("file://{}", tmp.path().display()).parse().unwrap();
        let mut sink = FileConnector
            .connect(&uri, "ns/feed", TargetPolicy::default())
            .await
            .unwrap();
        let schema = schema();
        let s1 = Position::PgLsn(Lsn(0x10));
        assert_eq!(
            sink.copy_chunk(&schema, 0, &s1, false, rows(3))
                .await
                .unwrap(),
            3
        );
        let finished = sink.finished_chunks().await.unwrap();
        assert_eq!(finished.len(), 1);
        assert_eq!((finished[0].chunk, finished[0].rows), (0, 3));
        let s2 = Position::PgLsn(Lsn(0x20));
        sink.copy_chunk(&schema, 0, &s2, true, rows(1))
            .await
            .unwrap();
        sink.reset_snapshot().await.unwrap();
        assert!(sink.finished_chunks().await.unwrap().is_empty());

        let all = events(tmp.path());
        let ops: Vec<&str> = all.iter().map(|e| e["op"].as_str().unwrap()).collect();
        assert_eq!(ops, ["r", "r", "r", "t", "r", "t"]);
        let snapshot: Vec<&str> = all
            .iter()
            .map(|e| e["source"]["snapshot"].as_str().unwrap())
            .collect();
        assert_eq!(snapshot, ["true", "true", "last", "true", "last", "true"]);
        assert_eq!(all[1]["source"]["event_id"], "snapshot:0/10:public.t:0:1");
        assert_eq!(all[4]["after"]["id"], 0);
    }
}
