//! The NATS JetStream sink, `nats://host:port?stream=NAME&subject_prefix=PFX`: every
//! change and snapshot row as one Debezium JSON message (see `ferry_events` and
//! `docs/events.md`) on subject `PFX.<schema>.<table>` ([`subject`]), in stream `NAME`.
//!
//! ```text
//! apply / copy_chunk ──► ferry_events ──► send_publish (Nats-Msg-Id = event id) ──► acks
//!                                                      commit_batch awaits them ─┘
//! ```
//!
//! # Durability
//! The checkpoint is the engine's ([`CheckpointStore::External`]): events are published
//! asynchronously as they come, and a batch is durable (its checkpoint saved) only once
//! JetStream acknowledged every one of them (stored in the stream), so a saved checkpoint
//! never covers an event the stream lacks; the next batch publishes meanwhile. At least once: after a crash the stream resends from
//! the checkpoint with the same event ids; every message carries its id as `Nats-Msg-Id`,
//! so JetStream drops re-sends inside the stream's duplicate window, and as the
//! `ferry-event-id` header, for consumers that deduplicate themselves. An aborted batch
//! cannot be taken back: its events stay and come again with the same ids.
//!
//! # The stream
//! An existing stream must take `PFX.>` among its subjects (Ferry never changes a stream
//! it did not create); a missing one is created with subjects `PFX.>` and the server's
//! defaults. Snapshot chunks are recorded in a stream of Ferry's own ([`chunks`]).
//!
//! # Errors
//! A server that cannot be reached, a publish not acknowledged in time: transient (the
//! engine retries; the batch is resent). A stream that does not take the subjects, a
//! message over the server's `max_payload`: definite, with what to change.

mod chunks;
mod subject;

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamErrorKind, PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use ferry_core::{
    ErrorClass, FinishedChunk, NatsSinkUri, Settle, Sink, SinkConnector, SinkError, SinkUri,
    TargetPolicy,
};
use ferry_events::{Event, EventKind, Origin};

use crate::event_sink::{EventSink, Transport};
use chunks::ChunkMarkers;

/// Why 4096: enough publishes in flight to keep a link busy, few enough that a batch's
/// pending acks stay small; past it the oldest ack is awaited before the next publish.
const MAX_ACKS_IN_FLIGHT: usize = 4096;

/// Why 128: publishes made back to back reach the connection's writer together, so it
/// writes them to the socket in one go and the server reads them in one go; published one
/// at a time, between the work of encoding the next, each costs both sides a wake-up and a
/// system call.
const BURST: usize = 128;

/// Why 10 s: a JetStream ack normally takes milliseconds; one that takes longer means
/// the server is down or overloaded, and the batch is retried.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why 5 s: a server on the network answers a connect in well under it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects NATS JetStream sinks.
#[derive(Clone, Copy, Debug, Default)]
pub struct NatsConnector;

#[async_trait]
impl SinkConnector for NatsConnector {
    async fn connect(
        &self,
        uri: &SinkUri,
        feed: &str,
        policy: TargetPolicy,
    ) -> Result<Box<dyn Sink>, SinkError> {
        let uri = nats_uri(uri)?;
        let js = connect(uri).await?;
        ensure_stream(&js, uri).await?;
        let chunks = ChunkMarkers::open(&js, uri.stream(), feed).await?;
        let transport = NatsTransport {
            js,
            chunks,
            prefix: uri.subject_prefix().to_string(),
            acks: VecDeque::new(),
            unsent: Vec::with_capacity(BURST),
        };
        let origin = Origin {
            name: feed.to_string(),
            db: policy.source.map(|s| s.database).unwrap_or_default(),
        };
        Ok(Box::new(EventSink::new(transport, origin, uri.options())))
    }

    /// Forgets the changefeed's chunk markers; its events stay in the stream (the user's).
    async fn release(&self, uri: &SinkUri, feed: &str, _server_id: &str) -> Result<(), SinkError> {
        let uri = nats_uri(uri)?;
        let js = connect(uri).await?;
        ChunkMarkers::open(&js, uri.stream(), feed)
            .await?
            .clear()
            .await
    }
}

fn nats_uri(uri: &SinkUri) -> Result<&NatsSinkUri, SinkError> {
    match uri {
        SinkUri::Nats(uri) => Ok(uri),
        other => Err(SinkError::Unsupported {
            message: format!("the NATS connector got a {} sink", other.masked()),
        }),
    }
}

async fn connect(uri: &NatsSinkUri) -> Result<jetstream::Context, SinkError> {
    let client = async_nats::ConnectOptions::new()
        .name("ferry")
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(uri.server())
        .await
        .map_err(|e| SinkError::Connect {
            what: format!("connect to NATS at {}", uri.server()),
            class: ErrorClass::Transient,
            source: Box::new(e),
        })?;
    Ok(jetstream::context::ContextBuilder::new()
        .ack_timeout(ACK_TIMEOUT)
        .max_ack_inflight(MAX_ACKS_IN_FLIGHT + 1)
        .backpressure_on_inflight(true)
        .build(client))
}

/// Finds the stream, or creates it, and checks that it takes `PFX.>`.
async fn ensure_stream(js: &jetstream::Context, uri: &NatsSinkUri) -> Result<(), SinkError> {
    let wildcard = format!("{}.>", uri.subject_prefix());
    let config = stream::Config {
        name: uri.stream().to_string(),
        subjects: vec![wildcard.clone()],
        ..Default::default()
    };
    let stream = js.get_or_create_stream(config).await.map_err(|e| {
        let class = match e.kind() {
            // The server refused (subjects overlapping another stream, limits).
            CreateStreamErrorKind::JetStream(_) => ErrorClass::Definite,
            _ => ErrorClass::Transient,
        };
        SinkError::Connect {
            what: format!("find or create the JetStream stream {}", uri.stream()),
            class,
            source: Box::new(e),
        }
    })?;
    let subjects = &stream.cached_info().config.subjects;
    if !subjects.iter().any(|s| subject::covers(s, &wildcard)) {
        return Err(SinkError::Unsupported {
            message: format!(
                "the JetStream stream {} takes subjects {subjects:?}, not {wildcard}; add \
                 {wildcard} to its subjects or name another stream",
                uri.stream()
            ),
        });
    }
    Ok(())
}

/// A failure retrying may fix (the server down, a timeout).
fn transient(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> SinkError {
    SinkError::Statement {
        what: what.into(),
        class: ErrorClass::Transient,
        source: Box::new(e),
    }
}

fn publish_error(e: async_nats::jetstream::context::PublishError) -> SinkError {
    let class = match e.kind() {
        // No stream takes the subject any more (deleted or changed by hand), or a message
        // the server will never take: retrying cannot help.
        PublishErrorKind::StreamNotFound | PublishErrorKind::MaxPayloadExceeded => {
            ErrorClass::Definite
        }
        _ => ErrorClass::Transient,
    };
    SinkError::Statement {
        what: "publish events to JetStream".into(),
        class,
        source: Box::new(e),
    }
}

/// Publishes one changefeed's events into a stream.
pub(crate) struct NatsTransport {
    js: jetstream::Context,
    chunks: ChunkMarkers,
    prefix: String,
    /// Acks not awaited yet, oldest first.
    acks: VecDeque<PublishAckFuture>,
    /// Events held back to publish in one burst ([`BURST`]).
    unsent: Vec<(String, jetstream::message::PublishMessage)>,
}

impl NatsTransport {
    /// Publishes the events held back, one after another.
    async fn publish_unsent(&mut self) -> Result<(), SinkError> {
        for (subject, message) in std::mem::take(&mut self.unsent) {
            if self.acks.len() >= MAX_ACKS_IN_FLIGHT {
                let oldest = self.acks.pop_front().expect("the queue is full");
                oldest.await.map_err(publish_error)?;
            }
            let ack = self
                .js
                .send_publish(subject, message)
                .await
                .map_err(publish_error)?;
            self.acks.push_back(ack);
        }
        Ok(())
    }

    /// A change's table subject, or `PFX.transaction` for `BEGIN`/`END`.
    fn subject(&self, event: &Event) -> String {
        match event.kind {
            EventKind::Transaction => format!("{}.transaction", self.prefix),
            EventKind::Change | EventKind::Tombstone => {
                subject::table_subject(&self.prefix, &event.table)
            }
        }
    }
}

#[async_trait]
impl Transport for NatsTransport {
    async fn send(&mut self, event: Event) -> Result<(), SinkError> {
        let subject = self.subject(&event);
        let message = jetstream::message::PublishMessage::build()
            .message_id(&event.id)
            .header("ferry-event-id", event.id.as_str())
            .payload(event.json.into());
        self.unsent.push((subject, message));
        if self.unsent.len() >= BURST {
            self.publish_unsent().await?;
        }
        Ok(())
    }

    /// Returns once every event published so far is stored in the stream.
    async fn flush(&mut self) -> Result<(), SinkError> {
        self.publish_unsent().await?;
        while let Some(ack) = self.acks.pop_front() {
            ack.await.map_err(publish_error)?;
        }
        Ok(())
    }

    /// The acks still to come, awaited on the engine's task while the next batch publishes.
    async fn seal(&mut self) -> Result<Option<Settle>, SinkError> {
        self.publish_unsent().await?;
        let acks = std::mem::take(&mut self.acks);
        Ok(Some(Box::pin(async move {
            for ack in acks {
                ack.await.map_err(publish_error)?;
            }
            Ok(())
        })))
    }

    /// Published events stay in the stream; a resent batch repeats them with the same ids,
    /// which the duplicate window drops.
    async fn discard(&mut self) {
        self.unsent.clear();
        self.acks.clear();
    }

    async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        self.chunks.finished().await
    }

    async fn record_chunk(&mut self, chunk: &FinishedChunk) -> Result<(), SinkError> {
        self.chunks.record(chunk).await
    }

    async fn clear_chunks(&mut self) -> Result<(), SinkError> {
        self.chunks.clear().await
    }
}
