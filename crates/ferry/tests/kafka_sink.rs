//! The Kafka sink end to end, against librdkafka's mock cluster (brokers on loopback ports
//! inside the test process; the Ferry server is a separate process that reaches them over
//! TCP): PostgreSQL → `kafka://` through the API and the CLI, then a consumer that rebuilds
//! every table from the topics (upsert on r/c/u, delete on d, clear on t, repeats dropped
//! by event id) must hold exactly the source's rows: after a broker outage, and after
//! `kill -9`s of the Ferry server during a load. Needs cargo feature `kafka`.
#![cfg(feature = "kafka")]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::events::{Rebuilt, PGBENCH};
use common::stream::{every_op_keys, pgbench_keys, StreamSetup, CHANGES, TABLES};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

/// The shared source and server, and a one-broker mock Kafka.
struct Setup {
    base: StreamSetup,
    kafka: MockCluster<'static, DefaultProducerContext>,
}

impl Setup {
    fn start() -> Setup {
        Setup {
            base: StreamSetup::start(),
            kafka: MockCluster::new(1).expect("a mock Kafka cluster"),
        }
    }

    fn sink_uri(&self, prefix: &str) -> String {
        format!(
            "kafka://{}?topic_prefix={prefix}",
            self.kafka.bootstrap_servers()
        )
    }

    /// One partition per table topic: the rebuild applies `t` events in order with every
    /// key's changes.
    fn topics(&self, prefix: &str, tables: &[&str]) {
        for table in tables {
            self.kafka
                .create_topic(&format!("{prefix}.public.{table}"), 1, 1)
                .unwrap();
        }
    }

    /// Reads every table topic of `prefix` from its start and applies every message,
    /// checking each message's key and id header on the way; tombstones (after deletes,
    /// with `tombstones=true`) are checked against the delete before them and counted.
    fn rebuild(&self, prefix: &str, keys: &HashMap<&str, &[&str]>) -> (Rebuilt, u64) {
        let mut out = Rebuilt::default();
        let mut tombstones = 0;
        let mut previous: Option<(Option<Value>, String)> = None;
        for (topic, key, header_id, event) in read_topics(&self.kafka.bootstrap_servers(), prefix) {
            if topic.ends_with(".transaction") {
                continue;
            }
            let Some(event) = event else {
                let (delete_key, delete_id) =
                    previous.take().expect("a tombstone follows a delete");
                assert_eq!(key, delete_key, "tombstone key");
                assert_eq!(header_id, Some(format!("{delete_id}:tombstone")));
                tombstones += 1;
                continue;
            };
            let id = event["source"]["event_id"].as_str().unwrap();
            assert_eq!(header_id.as_deref(), Some(id), "ferry-event-id of {event}");
            let table = format!(
                "{}.{}",
                event["source"]["schema"].as_str().unwrap(),
                event["source"]["table"].as_str().unwrap()
            );
            assert_eq!(topic, format!("{prefix}.{table}"), "{event}");
            match keys.get(table.as_str()) {
                Some(columns) if !columns.is_empty() && event["op"] != "t" => {
                    let row = if event["op"] == "d" {
                        &event["before"]
                    } else {
                        &event["after"]
                    };
                    let expected: serde_json::Map<String, Value> = columns
                        .iter()
                        .map(|c| (c.to_string(), row[*c].clone()))
                        .collect();
                    assert_eq!(key, Some(Value::Object(expected)), "key of {event}");
                }
                _ => assert_eq!(key, None, "key of {event}"),
            }
            previous = (event["op"] == "d" && key.is_some()).then(|| (key.clone(), id.to_string()));
            out.apply(event, keys);
        }
        (out, tombstones)
    }
}

/// One message: (topic, key, ferry-event-id, event; `None` for a tombstone).
type Read = (String, Option<Value>, Option<String>, Option<Value>);

/// Every message of every topic named `prefix.*`, partition by partition, in order.
fn read_topics(bootstrap: &str, prefix: &str) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "rebuild")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut out = Vec::new();
    for topic in metadata.topics() {
        if !topic.name().starts_with(&format!("{prefix}.")) {
            continue;
        }
        for partition in topic.partitions() {
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(topic.name(), partition.id(), Offset::Beginning)
                .unwrap();
            consumer.assign(&assignment).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "topic {} never ended",
                    topic.name()
                );
                match consumer.poll(Duration::from_millis(200)) {
                    None => continue,
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    Some(Err(e)) => panic!("consume {}: {e}", topic.name()),
                    Some(Ok(message)) => {
                        let header = message.headers().and_then(|h| {
                            h.iter()
                                .find(|h| h.key == "ferry-event-id")
                                .and_then(|h| h.value)
                                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                        });
                        let key = message.key().map(|k| serde_json::from_slice(k).unwrap());
                        let event = message
                            .payload()
                            .map(|p| serde_json::from_slice(p).unwrap());
                        out.push((topic.name().to_string(), key, header, event));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn snapshot_changes_and_a_broker_outage_rebuild_the_source() {
    let setup = Setup::start();
    setup.base.source.psql("shop", TABLES);
    setup.topics("cdc", &["items", "notes", "scratch"]);
    // A bad URI never reaches the engine.
    let (code, body) = setup.base.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "bad", "source_uri": setup.base.source.uri("shop"),
                "sink_uri": format!("kafka://{}", setup.kafka.bootstrap_servers()),
                "tables": ["public.*"]}),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("topic"), "{body}");

    // Created with the CLI, which takes kafka:// as the API does.
    let options = "&transactions=true&tombstones=true";
    setup
        .base
        .create_with_cli("events", &["public.*"], &(setup.sink_uri("cdc") + options));
    setup.base.wait_synced("events");
    setup.base.source.psql("shop", CHANGES);
    setup.base.wait_synced("events");

    // The broker goes away: the changefeed retries (never fails) and catches up after.
    setup.kafka.broker_down(1).unwrap();
    setup
        .base
        .source
        .psql("shop", "UPDATE items SET name = 'outage' WHERE id > 400;");
    std::thread::sleep(Duration::from_secs(3));
    let status = setup.base.status("events");
    assert_ne!(status["state"], "failed", "{status}");
    setup.kafka.broker_up(1).unwrap();
    setup.base.wait_synced("events");

    let (rebuilt, tombstones) = setup.rebuild("cdc", &every_op_keys());
    setup.base.assert_every_op_rebuilt(&rebuilt);
    // Ten deletes of keyed rows, each followed by its tombstone (the keyless `notes`
    // delete has none).
    assert_eq!(tombstones, 10);
    // BEGIN and END frame each transaction, END counting its events per table.
    let boundaries: Vec<Value> = read_topics(&setup.kafka.bootstrap_servers(), "cdc")
        .into_iter()
        .filter(|(topic, ..)| topic == "cdc.transaction")
        .filter_map(|(_, _, _, event)| event)
        .collect();
    let ends: Vec<&Value> = boundaries.iter().filter(|e| e["status"] == "END").collect();
    assert!(!ends.is_empty(), "{boundaries:?}");
    assert_eq!(
        boundaries.iter().filter(|e| e["status"] == "BEGIN").count(),
        ends.len()
    );
    for end in &ends {
        let per_table: u64 = end["data_collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["event_count"].as_u64().unwrap())
            .sum();
        assert_eq!(Some(per_table), end["event_count"].as_u64(), "{end}");
        let id = end["id"].as_str().unwrap();
        let changes = rebuilt
            .lines
            .iter()
            .filter(|e| e["transaction"]["id"] == id)
            .count() as u64;
        assert_eq!(changes, per_table, "{end}");
    }
    rebuilt.assert_table(&setup.base.source, "notes", &[], "'body', body, 'n', n");
    rebuilt.assert_table(&setup.base.source, "scratch", &["id"], "'id', id");
    for op in ["r", "c", "u", "d", "t"] {
        assert!(
            rebuilt.ops.contains_key(op),
            "no {op} event: {:?}",
            rebuilt.ops
        );
    }
    assert_eq!(rebuilt.gaps(), 0);
    eprintln!(
        "outage run: {} messages, {} duplicates dropped, ops {:?}",
        rebuilt.events, rebuilt.duplicates, rebuilt.ops
    );

    // Deleting the changefeed forgets its chunk markers (tombstones); its events stay.
    let before = read_topics(&setup.kafka.bootstrap_servers(), "cdc").len();
    assert_eq!(setup.base.ferry.delete("/api/v2/changefeeds/events").0, 200);
    assert_eq!(
        read_topics(&setup.kafka.bootstrap_servers(), "cdc").len(),
        before
    );
}

#[test]
fn kill_9_during_a_load_loses_nothing() {
    let mut setup = Setup::start();
    let names: Vec<&str> = PGBENCH.iter().map(|(t, _, _)| *t).collect();
    setup.topics("bench", &names);
    let sink_uri = setup.sink_uri("bench");
    setup.base.load_with_kills(&sink_uri, 8, &[400, 2500, 2500]);
    let (rebuilt, _) = setup.rebuild("bench", &pgbench_keys());
    setup
        .base
        .assert_load_rebuilt(&rebuilt, "3 kill -9 under pgbench and a delete churn");
}
