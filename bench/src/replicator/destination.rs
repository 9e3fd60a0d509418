//! Where the stream contenders' events go: a destination set up per run before the clock
//! starts, counted after it stops, and removed when the run is over.
//!
//! | contender | destination | sink URI | events counted from |
//! |---|---|---|---|
//! | `ferry-file` | a temp dir | `file:///DIR?format=debezium-json` | the lines of its `.jsonl` files |
//! | `ferry-nats` | `nats-server -js` (ferry-testkit) with stream `BENCH` | `nats://…?stream=BENCH&subject_prefix=bench` | the stream's message count |
//! | `ferry-kafka` | librdkafka's mock cluster, in this process | `kafka://…?topic_prefix=bench` | the table topics' high watermarks |
//! | `ferry-webhook` | an HTTP receiver, in this process | `http://127.0.0.1:PORT/hook` | the receiver, request by request |
//!
//! The destination is prepared like a user would before pointing a changefeed at it: the
//! JetStream stream and the Kafka topics (one partition each, so a table's events stay in
//! one ordered log) exist before the changefeed does. The destinations' own work (the NATS
//! server, the mock brokers, the receiver) is not in Ferry's CPU or RSS columns, just as
//! PostgreSQL's is not in the database sinks'.

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use ferry_testkit::NatsServer;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::ClientConfig;

use crate::plan::Contender;
use crate::replicator::receiver::WebhookReceiver;
use crate::testbed::Testbed;

/// The JetStream stream the NATS contender publishes into.
const NATS_STREAM: &str = "BENCH";
/// Subject prefix (NATS) and topic prefix (Kafka): `bench.<schema>.<table>`.
const PREFIX: &str = "bench";
/// How long a count may wait for a broker's answer.
const COUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// A stream contender's destination, alive for one run.
pub(crate) enum Destination {
    File(tempfile::TempDir),
    Nats(NatsServer),
    Kafka {
        cluster: MockCluster<'static, DefaultProducerContext>,
        topics: Vec<String>,
    },
    Webhook(WebhookReceiver),
}

impl Destination {
    /// Sets up `contender`'s destination for `tables` (`schema.table` names); `None` for
    /// contenders that are not stream sinks.
    pub(crate) fn set_up(
        testbed: &Testbed,
        contender: Contender,
        tables: &[&str],
    ) -> anyhow::Result<Option<Destination>> {
        let destination = match contender {
            Contender::FerryFile => Destination::File(
                tempfile::Builder::new()
                    .prefix("file-sink-")
                    .tempdir_in(testbed.scratch.path())
                    .context("create the file sink's directory")?,
            ),
            Contender::FerryNats => {
                let server = NatsServer::start();
                let url = server.url();
                testbed.handle().block_on(async {
                    let client = async_nats::connect(&url).await?;
                    async_nats::jetstream::new(client)
                        .create_stream(async_nats::jetstream::stream::Config {
                            name: NATS_STREAM.to_owned(),
                            subjects: vec![format!("{PREFIX}.>")],
                            ..Default::default()
                        })
                        .await?;
                    anyhow::Ok(())
                })?;
                Destination::Nats(server)
            }
            Contender::FerryKafka => {
                let cluster = MockCluster::new(1).context("start librdkafka's mock cluster")?;
                let topics: Vec<String> = tables.iter().map(|t| format!("{PREFIX}.{t}")).collect();
                for topic in &topics {
                    cluster
                        .create_topic(topic, 1, 1)
                        .with_context(|| format!("create topic {topic}"))?;
                }
                Destination::Kafka { cluster, topics }
            }
            Contender::FerryWebhook => Destination::Webhook(WebhookReceiver::start()?),
            _ => return Ok(None),
        };
        Ok(Some(destination))
    }

    /// The changefeed's `sink_uri`.
    pub(crate) fn sink_uri(&self) -> String {
        match self {
            Destination::File(dir) => {
                format!("file://{}?format=debezium-json", dir.path().display())
            }
            Destination::Nats(server) => format!(
                "{}?stream={NATS_STREAM}&subject_prefix={PREFIX}",
                server.url()
            ),
            Destination::Kafka { cluster, .. } => format!(
                "kafka://{}?topic_prefix={PREFIX}",
                cluster.bootstrap_servers()
            ),
            Destination::Webhook(receiver) => receiver.url(),
        }
    }

    /// How many change events the destination holds (or, for the webhook, received).
    pub(crate) fn events(&self, testbed: &Testbed) -> anyhow::Result<u64> {
        match self {
            Destination::File(dir) => count_lines(dir.path()),
            Destination::Nats(server) => {
                let url = server.url();
                testbed.handle().block_on(async {
                    let client = async_nats::connect(&url).await?;
                    let mut stream = async_nats::jetstream::new(client)
                        .get_stream(NATS_STREAM)
                        .await?;
                    anyhow::Ok(stream.info().await?.state.messages)
                })
            }
            Destination::Kafka { cluster, topics } => {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", cluster.bootstrap_servers())
                    .set("group.id", "ferry-bench")
                    .create()
                    .context("create a Kafka client to count messages")?;
                // The high watermark, not high − low: the mock broker keeps only the
                // latest segments of a partition (its low watermark moves up), but offsets
                // start at 0, so the high one is every message the topic took.
                let mut messages = 0;
                for topic in topics {
                    let (_, high) = consumer
                        .fetch_watermarks(topic, 0, COUNT_TIMEOUT)
                        .with_context(|| format!("read {topic}'s watermarks"))?;
                    messages += u64::try_from(high).unwrap_or(0);
                }
                Ok(messages)
            }
            Destination::Webhook(receiver) => Ok(receiver.events()),
        }
    }
}

/// Lines in the file sink's event files (`*.jsonl`; its own `.ferry-*` files left out).
fn count_lines(dir: &Path) -> anyhow::Result<u64> {
    let mut lines = 0;
    let mut buffer = vec![0; 1 << 20];
    for entry in std::fs::read_dir(dir).context("list the file sink's directory")? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || !name.ends_with(".jsonl") {
            continue;
        }
        let mut file =
            std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            lines += memchr::memchr_iter(b'\n', &buffer[..read]).count() as u64;
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_files_are_counted_by_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("00000000000000000000.jsonl"), "{}\n{}\n").expect("write");
        std::fs::write(dir.path().join("00000000000000000001.jsonl"), "{}\n").expect("write");
        std::fs::write(dir.path().join(".ferry-chunks.jsonl"), "{}\n{}\n").expect("write");
        assert_eq!(count_lines(dir.path()).expect("count"), 3);
    }
}
