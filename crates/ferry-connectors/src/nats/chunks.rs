//! Snapshot chunk markers in a JetStream stream of their own, [`CHUNK_STREAM`]: a stream
//! of events cannot answer "which chunks are in you", so each finished chunk is the last
//! message of its own subject, `ferry_chunks.<stream>.<feed>.<schema>.<table>.<chunk>`
//! (names hex-encoded), published once the chunk's events are acknowledged. (A key-value
//! bucket would be the natural store, but async-nats 0.51 cannot create one on the
//! nats-server 2.9 of Debian 12.)

use async_nats::jetstream::{self, stream};
use ferry_core::{ErrorClass, FinishedChunk, SinkError};
use futures::TryStreamExt;

use super::transient;
use crate::event_sink::{marker_json, parse_marker};

/// One stream for every changefeed writing this server; subjects name the stream and feed.
pub(crate) const CHUNK_STREAM: &str = "FERRY_CHUNKS";

/// The chunk markers of one changefeed into one stream.
pub(crate) struct ChunkMarkers {
    js: jetstream::Context,
    markers: stream::Stream,
    /// `ferry_chunks.<stream>.<feed>`, names hex-encoded.
    prefix: String,
}

impl ChunkMarkers {
    /// Opens the marker stream, creating it when missing.
    pub(crate) async fn open(
        js: &jetstream::Context,
        stream: &str,
        feed: &str,
    ) -> Result<Self, SinkError> {
        let config = stream::Config {
            name: CHUNK_STREAM.into(),
            description: Some("Ferry: snapshot chunks published to NATS streams".into()),
            subjects: vec!["ferry_chunks.>".into()],
            max_messages_per_subject: 1,
            ..Default::default()
        };
        let markers = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| SinkError::Connect {
                what: format!("find or create the JetStream stream {CHUNK_STREAM}"),
                class: ErrorClass::Transient,
                source: Box::new(e),
            })?;
        Ok(ChunkMarkers {
            js: js.clone(),
            markers,
            prefix: format!("ferry_chunks.{}.{}", hex(stream), hex(feed)),
        })
    }

    /// Records a chunk whose events are acknowledged.
    pub(crate) async fn record(&self, chunk: &FinishedChunk) -> Result<(), SinkError> {
        let subject = format!(
            "{}.{}.{}.{}",
            self.prefix,
            hex(&chunk.table.schema),
            hex(&chunk.table.name),
            chunk.chunk
        );
        let value = marker_json(chunk);
        self.js
            .publish(subject, value.to_string().into())
            .await
            .map_err(|e| transient("record a finished chunk", e))?
            .await
            .map_err(|e| transient("record a finished chunk", e))?;
        Ok(())
    }

    /// The chunks recorded.
    pub(crate) async fn finished(&self) -> Result<Vec<FinishedChunk>, SinkError> {
        let subjects: Vec<(String, usize)> = self
            .markers
            .info_with_subjects(format!("{}.>", self.prefix))
            .await
            .map_err(|e| transient("list chunk markers", e))?
            .try_collect()
            .await
            .map_err(|e| transient("list chunk markers", e))?;
        let mut chunks = Vec::new();
        for (subject, _) in subjects {
            let message = self
                .markers
                .get_last_raw_message_by_subject(&subject)
                .await
                .map_err(|e| transient("read a chunk marker", e))?;
            chunks.push(parse_marker(&message.payload).ok_or_else(|| corrupt(&subject))?);
        }
        Ok(chunks)
    }

    /// Forgets every chunk of the changefeed.
    pub(crate) async fn clear(&self) -> Result<(), SinkError> {
        self.markers
            .purge()
            .filter(format!("{}.>", self.prefix))
            .await
            .map_err(|e| transient("clear chunk markers", e))?;
        Ok(())
    }
}

/// A marker Ferry did not write: stop rather than guess what was copied.
fn corrupt(key: &str) -> SinkError {
    SinkError::Unsupported {
        message: format!(
            "the chunk marker {key} in stream {CHUNK_STREAM} does not read; purge the \
             subject and re-sync the changefeed"
        ),
    }
}

fn hex(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}
