//! Snapshot chunk markers in topic [`CHUNK_TOPIC`]: a topic of events cannot answer "which
//! chunks are in you", so each finished chunk is a message keyed by changefeed, table and
//! chunk, produced once the chunk's events are acknowledged. Reading them back means
//! reading the topic from its start to its end; the last message of a key wins, and an
//! empty one (a tombstone, what [`ChunkMarkers::clear`] writes) removes the marker, so the
//! topic may be compacted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_core::{ErrorClass, FinishedChunk, SinkError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::event_sink::{marker_json, parse_marker};

/// One topic for every changefeed producing to these brokers; keys name the changefeed.
pub(crate) const CHUNK_TOPIC: &str = "ferry_chunks";

/// Why 30 s: reading a topic of markers takes well under a second on a live cluster.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The chunk markers of one changefeed.
pub(crate) struct ChunkMarkers {
    bootstrap: String,
    producer: FutureProducer,
    feed: String,
}

impl ChunkMarkers {
    pub(crate) fn new(bootstrap: String, producer: FutureProducer, feed: &str) -> Self {
        ChunkMarkers {
            bootstrap,
            producer,
            feed: feed.to_string(),
        }
    }

    fn key(&self, chunk: &FinishedChunk) -> String {
        serde_json::json!([self.feed, chunk.table.schema, chunk.table.name, chunk.chunk])
            .to_string()
    }

    async fn produce(&self, key: &str, payload: Option<&[u8]>) -> Result<(), SinkError> {
        let mut record = FutureRecord::<str, [u8]>::to(CHUNK_TOPIC).key(key);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        match self.producer.send(record, READ_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(transient("record a chunk marker", e)),
        }
    }

    /// Records a chunk whose events are acknowledged.
    pub(crate) async fn record(&self, chunk: &FinishedChunk) -> Result<(), SinkError> {
        let value = marker_json(chunk).to_string();
        self.produce(&self.key(chunk), Some(value.as_bytes())).await
    }

    /// The chunks recorded.
    pub(crate) async fn finished(&self) -> Result<Vec<FinishedChunk>, SinkError> {
        let bootstrap = self.bootstrap.clone();
        let prefix = format!("[{}", serde_json::json!(self.feed));
        let markers = tokio::task::spawn_blocking(move || read_markers(&bootstrap, &prefix))
            .await
            .map_err(|e| SinkError::Unsupported {
                message: format!("reading chunk markers panicked: {e}"),
            })??;
        Ok(markers.into_values().collect())
    }

    /// Forgets every chunk of the changefeed (a tombstone for each).
    pub(crate) async fn clear(&self) -> Result<(), SinkError> {
        for chunk in self.finished().await? {
            self.produce(&self.key(&chunk), None).await?;
        }
        Ok(())
    }
}

fn transient(what: &str, e: KafkaError) -> SinkError {
    SinkError::Statement {
        what: what.into(),
        class: ErrorClass::Transient,
        source: Box::new(e),
    }
}

/// Reads [`CHUNK_TOPIC`] from start to end: the live markers whose key starts with
/// `prefix`, by key. A missing topic holds none.
fn read_markers(
    bootstrap: &str,
    prefix: &str,
) -> Result<BTreeMap<String, FinishedChunk>, SinkError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "ferry-chunk-markers")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // The end of a partition shows when a fetch comes back empty, which the broker
        // holds up to this long: librdkafka's 500 ms default made every changefeed start
        // (and every backlog drain in the benchmark) half a second slower per partition.
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|e| transient("create a Kafka consumer", e))?;
    let metadata = consumer
        .fetch_metadata(Some(CHUNK_TOPIC), READ_TIMEOUT)
        .map_err(|e| transient("read the chunk topic's metadata", e))?;
    let Some(topic) = metadata.topics().iter().find(|t| t.name() == CHUNK_TOPIC) else {
        return Ok(BTreeMap::new());
    };
    if topic.error().is_some() || topic.partitions().is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0usize;
    for partition in topic.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(CHUNK_TOPIC, partition.id(), READ_TIMEOUT)
            .map_err(|e| transient("read the chunk topic's offsets", e))?;
        if high > low {
            assignment
                .add_partition_offset(CHUNK_TOPIC, partition.id(), Offset::Offset(low))
                .map_err(|e| transient("assign the chunk topic", e))?;
            remaining += 1;
        }
    }
    let mut markers = BTreeMap::new();
    if remaining == 0 {
        return Ok(markers);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| transient("assign the chunk topic", e))?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while remaining > 0 {
        if Instant::now() > deadline {
            return Err(transient(
                "read the chunk markers",
                KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
            ));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        match message {
            Err(KafkaError::PartitionEOF(_)) => remaining -= 1,
            Err(e) => return Err(transient("read the chunk markers", e)),
            Ok(message) => {
                let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    continue;
                };
                if !key.starts_with(prefix) {
                    continue;
                }
                match message.payload() {
                    None | Some([]) => {
                        markers.remove(key);
                    }
                    Some(payload) => {
                        let chunk = parse_marker(payload).ok_or_else(|| corrupt(key))?;
                        markers.insert(key.to_string(), chunk);
                    }
                }
            }
        }
    }
    Ok(markers)
}

/// A marker Ferry did not write: stop rather than guess what was copied.
fn corrupt(key: &str) -> SinkError {
    SinkError::Unsupported {
        message: format!(
            "the chunk marker {key} in topic {CHUNK_TOPIC} does not read; delete it (a \
             tombstone) and re-sync the changefeed"
        ),
    }
}
