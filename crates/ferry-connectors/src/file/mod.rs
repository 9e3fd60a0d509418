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

mod compress;
mod dir;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, OnceLock, Weak};

use async_trait::async_trait;
use ferry_core::{
    ErrorClass, FileSinkUri, FinishedChunk, Sink, SinkConnector, SinkError, SinkUri, TargetPolicy,
};
use ferry_events::{Event, Origin};
use tokio::sync::Mutex;

use crate::event_sink::{EventSink, Transport};

use dir::{EventDir, Mark, OpenError, Rotation};

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
        let transport = FileTransport {
            dir: shared_dir(uri, feed)?,
            batch_start: None,
        };
        Ok(Box::new(EventSink::new(transport, origin, uri.options())))
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
    let rotation = Rotation {
        max_bytes: uri.max_file_bytes(),
        max_age: uri.max_file_seconds().map(std::time::Duration::from_secs),
        gzip: uri.gzip(),
    };
    let dir = match EventDir::open(uri.dir(), rotation, feed) {
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

/// Appends one changefeed's events to a directory.
pub(crate) struct FileTransport {
    dir: Arc<Mutex<EventDir>>,
    /// Where the events sent since the last flush began in the files.
    batch_start: Option<Mark>,
}

#[async_trait]
impl Transport for FileTransport {
    async fn send(&mut self, event: Event) -> Result<(), SinkError> {
        let mut dir = self.dir.lock().await;
        self.batch_start.get_or_insert_with(|| dir.mark());
        dir.append(&event.json)
            .map_err(|e| io_error("write events", e))
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        let mut dir = self.dir.lock().await;
        dir.sync().map_err(|e| io_error("fsync events", e))?;
        self.batch_start = None;
        Ok(())
    }

    /// Cuts what was sent since the last flush off the files.
    async fn discard(&mut self) {
        if let Some(mark) = self.batch_start.take() {
            if let Err(e) = self.dir.lock().await.rollback(mark) {
                // The events stay: a resent batch repeats them with the same ids.
                tracing::warn!(error = %e, "could not cut an aborted batch off the event files");
            }
        }
    }

    async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        let dir = self.dir.lock().await;
        dir.finished_chunks()
            .map_err(|e| io_error("read the chunk manifest", e))
    }

    async fn record_chunk(&mut self, chunk: &FinishedChunk) -> Result<(), SinkError> {
        let mut dir = self.dir.lock().await;
        dir.record_chunk(chunk)
            .map_err(|e| io_error("record a finished chunk", e))
    }

    async fn clear_chunks(&mut self) -> Result<(), SinkError> {
        let mut dir = self.dir.lock().await;
        dir.clear_chunks()
            .map_err(|e| io_error("clear the chunk manifest", e))
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::{
        ChunkData, ColumnSchema, LogicalType, Lsn, Position, ReplicaIdentity, TableId, TableSchema,
        Value,
    };
    use futures::{stream, StreamExt};
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
