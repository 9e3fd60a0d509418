//! The Kafka sink, `kafka://host:port[,…]?topic_prefix=PFX` (or `?topic=NAME`): every
//! change and snapshot row as one Debezium JSON message (see `ferry_events` and
//! `docs/events.md`) on topic `PFX.<schema>.<table>`, keyed by the row's key (Debezium's
//! key: the key columns as a JSON object), so a key's changes stay in order within its
//! partition. Built with cargo feature `kafka` (librdkafka, compiled from source).
//!
//! # Durability
//! An idempotent producer with `acks=all`: a broker's retry never doubles or reorders a
//! message. Messages are produced as they come; a batch is durable (the engine saves its
//! checkpoint) once the brokers acknowledged every one ([`Transport::seal`]), so the
//! checkpoint never covers a message Kafka lacks. At least once across crashes: resent events carry the same id (`source.event_id`
//! and the header `ferry-event-id`) for consumers to drop repeats.
//!
//! # Topics
//! Event topics are created by the brokers on first use (`auto.create.topics.enable`,
//! Kafka's default) or beforehand by the operator. Order holds per key (a key's messages
//! share a partition); events without a key (keyless tables, `t`) go to partition 0, so a
//! consumer that needs a truncate ordered against every key uses one partition per topic. Snapshot chunk markers go to topic
//! [`chunks::CHUNK_TOPIC`] ([`chunks`]).
//!
//! # Errors
//! Brokers unreachable, a delivery that timed out: transient (the engine retries; the batch
//! is resent). A message over the brokers' size limit, a topic the client may not write:
//! definite, with the broker's reason.

mod chunks;

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::{
    ErrorClass, FinishedChunk, KafkaSinkUri, Settle, Sink, SinkConnector, SinkError, SinkUri,
    TargetPolicy,
};
use ferry_events::{Event, EventKind, Origin};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use crate::event_sink::{EventSink, Transport};
use chunks::ChunkMarkers;

/// Why 10000: enough messages in flight to keep the brokers busy, few enough that a
/// batch's pending deliveries stay small; past it the oldest is awaited first.
const MAX_IN_FLIGHT: usize = 10_000;

/// Why 30 s: a delivery normally takes milliseconds; one not acknowledged by then means
/// the brokers are down, and the batch is retried.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects Kafka sinks.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaConnector;

#[async_trait]
impl SinkConnector for KafkaConnector {
    async fn connect(
        &self,
        uri: &SinkUri,
        feed: &str,
        policy: TargetPolicy,
    ) -> Result<Box<dyn Sink>, SinkError> {
        let uri = kafka_uri(uri)?;
        let producer = producer(uri)?;
        let chunks = ChunkMarkers::new(uri.bootstrap_servers(), producer.clone(), feed);
        let transport = KafkaTransport {
            uri: uri.clone(),
            producer,
            chunks,
            deliveries: VecDeque::new(),
        };
        let origin = Origin {
            name: feed.to_string(),
            db: policy.source.map(|s| s.database).unwrap_or_default(),
        };
        Ok(Box::new(EventSink::new(transport, origin, uri.options())))
    }

    /// Forgets the changefeed's chunk markers; its events stay in their topics (the
    /// user's).
    async fn release(&self, uri: &SinkUri, feed: &str, _server_id: &str) -> Result<(), SinkError> {
        let uri = kafka_uri(uri)?;
        let producer = producer(uri)?;
        ChunkMarkers::new(uri.bootstrap_servers(), producer, feed)
            .clear()
            .await
    }
}

fn kafka_uri(uri: &SinkUri) -> Result<&KafkaSinkUri, SinkError> {
    match uri {
        SinkUri::Kafka(uri) => Ok(uri),
        other => Err(SinkError::Unsupported {
            message: format!("the Kafka connector got a {} sink", other.masked()),
        }),
    }
}

fn producer(uri: &KafkaSinkUri) -> Result<FutureProducer, SinkError> {
    ClientConfig::new()
        .set("bootstrap.servers", uri.bootstrap_servers())
        .set("client.id", "ferry")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()
        .map_err(|e| SinkError::Connect {
            what: format!("create a Kafka producer for {}", uri.bootstrap_servers()),
            class: ErrorClass::Definite,
            source: Box::new(e),
        })
}

/// Whether retrying can help after a failed delivery.
fn class_of(e: &KafkaError) -> ErrorClass {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRecord,
        ) => ErrorClass::Definite,
        _ => ErrorClass::Transient,
    }
}

fn delivery_error(e: KafkaError) -> SinkError {
    SinkError::Statement {
        what: "produce events to Kafka".into(),
        class: class_of(&e),
        source: Box::new(e),
    }
}

/// Produces one changefeed's events.
pub(crate) struct KafkaTransport {
    uri: KafkaSinkUri,
    producer: FutureProducer,
    chunks: ChunkMarkers,
    /// Deliveries not awaited yet, oldest first.
    deliveries: VecDeque<DeliveryFuture>,
}

impl KafkaTransport {
    async fn await_oldest(&mut self) -> Result<(), SinkError> {
        match self.deliveries.pop_front() {
            Some(delivery) => delivered(delivery).await,
            None => Ok(()),
        }
    }
}

/// Waits for one message's acknowledgement.
async fn delivered(delivery: DeliveryFuture) -> Result<(), SinkError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(delivery_error(e)),
        // The producer was dropped with the message queued: not delivered.
        Err(_) => Err(delivery_error(KafkaError::Canceled)),
    }
}

#[async_trait]
impl Transport for KafkaTransport {
    async fn send(&mut self, event: Event) -> Result<(), SinkError> {
        if self.deliveries.len() >= MAX_IN_FLIGHT {
            self.await_oldest().await?;
        }
        let topic = match event.kind {
            EventKind::Transaction => self.uri.transaction_topic(),
            EventKind::Change | EventKind::Tombstone => {
                self.uri.topic_for(&event.table.schema, &event.table.name)
            }
        };
        let payload = (event.kind != EventKind::Tombstone).then_some(&event.json);
        let key = event.key.as_ref();
        let headers = OwnedHeaders::new().insert(Header {
            key: "ferry-event-id",
            value: Some(event.id.as_bytes()),
        });
        loop {
            let mut record = FutureRecord::to(&topic).headers(headers.clone());
            if let Some(payload) = &payload {
                record = record.payload(payload);
            }
            record = match &key {
                Some(key) => record.key(key),
                // Without a key, partition 0: a keyless table's changes (and `t` events)
                // stay in order among themselves.
                None => record.partition(0),
            };
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.deliveries.push_back(delivery);
                    return Ok(());
                }
                // The client's queue is full: wait for the oldest delivery, then again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if !self.deliveries.is_empty() =>
                {
                    self.await_oldest().await?
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err((e, _)) => return Err(delivery_error(e)),
            }
        }
    }

    /// Returns once the brokers acknowledged every message produced so far.
    async fn flush(&mut self) -> Result<(), SinkError> {
        while !self.deliveries.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// The acknowledgements still to come, awaited on the engine's task while the next
    /// batch produces.
    async fn seal(&mut self) -> Result<Option<Settle>, SinkError> {
        let deliveries = std::mem::take(&mut self.deliveries);
        Ok(Some(Box::pin(async move {
            for delivery in deliveries {
                delivered(delivery).await?;
            }
            Ok(())
        })))
    }

    /// Produced messages cannot be taken back; a resent batch repeats them with the same
    /// ids.
    async fn discard(&mut self) {
        self.deliveries.clear();
        let producer = self.producer.clone();
        // Deliveries still queued are not waited for; flushing bounds how long they linger.
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(1))).await;
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
