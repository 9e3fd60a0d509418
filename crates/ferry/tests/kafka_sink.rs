//! The Kafka sink end to end, against librdkafka's mock cluster (brokers on loopback ports
//! inside the test process; the Ferry server is a separate process that reaches them over
//! TCP): PostgreSQL → `kafka://` through the API and the CLI, then a consumer that rebuilds
//! every table from the topics (upsert on r/c/u, delete on d, clear on t, repeats dropped
//! by event id) must hold exactly the source's rows: after a broker outage, and after
//! `kill -9`s of the Ferry server during a load. Needs cargo feature `kafka`.
#![cfg(feature = "kafka")]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::events::{Rebuilt, ITEMS_SELECT, PGBENCH};
use ferry_testkit::{FerryServer, PgCluster};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

/// One source cluster (database `shop`), a one-broker mock Kafka and a Ferry server.
struct Setup {
    source: PgCluster,
    kafka: MockCluster<'static, DefaultProducerContext>,
    ferry: FerryServer,
}

impl Setup {
    fn start() -> Setup {
        let source = PgCluster::start();
        source.create_database("shop");
        Setup {
            source,
            kafka: MockCluster::new(1).expect("a mock Kafka cluster"),
            ferry: FerryServer::start(Path::new(env!("CARGO_BIN_EXE_ferry"))),
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

    fn create(&self, id: &str, tables: &[&str], sink_uri: &str) {
        let (code, body) = self.ferry.post(
            "/api/v2/changefeeds",
            &json!({"id": id, "source_uri": self.source.uri("shop"),
                    "sink_uri": sink_uri, "tables": tables}),
        );
        assert_eq!(code, 201, "create failed: {body}\n{}", self.ferry.log());
    }

    fn status(&self, id: &str) -> Value {
        self.ferry
            .get(&format!("/api/v2/changefeeds/{id}/status"))
            .1
    }

    fn wait_synced(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, body) = self.ferry.get(&format!("/api/v2/changefeeds/{id}/synced"));
            if code == 200 && body["synced"] == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not synced: {body}\nstatus: {}\n{}",
                self.status(id),
                self.ferry.log()
            );
            std::thread::sleep(Duration::from_millis(200));
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
    setup.source.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags int[], \
           doc jsonb, data bytea, at timestamptz, day date, ts timestamp, ok boolean);
         CREATE TABLE notes (body text, n int);
         ALTER TABLE notes REPLICA IDENTITY FULL;
         CREATE TABLE scratch (id int PRIMARY KEY);
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY[g, NULL, 3], \
           jsonb_build_object('g', g), '\\x00ff'::bytea, '2024-02-29 13:05:00+02', \
           DATE '2024-02-29' + g, TIMESTAMP '1999-12-31 23:59:59.5' + g * interval '1 hour', g % 2 = 0 \
           FROM generate_series(1, 500) g;
         INSERT INTO notes VALUES ('a', 1), ('a', 1), ('b', 2);
         INSERT INTO scratch SELECT generate_series(1, 10);",
    );
    setup.topics("cdc", &["items", "notes", "scratch"]);
    // A bad URI never reaches the engine.
    let (code, body) = setup.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "bad", "source_uri": setup.source.uri("shop"),
                "sink_uri": format!("kafka://{}", setup.kafka.bootstrap_servers()),
                "tables": ["public.*"]}),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("topic"), "{body}");

    // Created with the CLI, which takes kafka:// as the API does.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["changefeed", "create", "--id", "events", "--source-uri"])
        .arg(setup.source.uri("shop"))
        .arg("--sink-uri")
        .arg(format!(
            "{}&transactions=true&tombstones=true",
            setup.sink_uri("cdc")
        ))
        .args(["--tables", "public.*"])
        .env("FERRY_SERVER", setup.ferry.url())
        .env_remove("FERRY_NAMESPACE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    setup.wait_synced("events");
    setup.source.psql(
        "shop",
        "INSERT INTO items (id, name, price) VALUES (1001, 'new', 9.99);
         UPDATE items SET name = 'renamed', price = price + 1 WHERE id <= 20;
         UPDATE items SET id = 2000 WHERE id = 21;
         DELETE FROM items WHERE id BETWEEN 30 AND 39;
         DELETE FROM notes WHERE ctid IN (SELECT ctid FROM notes WHERE body = 'a' LIMIT 1);
         UPDATE notes SET n = 3 WHERE body = 'b';
         BEGIN; INSERT INTO scratch VALUES (11); TRUNCATE scratch; INSERT INTO scratch VALUES (12); COMMIT;",
    );
    setup.wait_synced("events");

    // The broker goes away: the changefeed retries (never fails) and catches up after.
    setup.kafka.broker_down(1).unwrap();
    setup
        .source
        .psql("shop", "UPDATE items SET name = 'outage' WHERE id > 400;");
    std::thread::sleep(Duration::from_secs(3));
    let status = setup.status("events");
    assert_ne!(status["state"], "failed", "{status}");
    setup.kafka.broker_up(1).unwrap();
    setup.wait_synced("events");

    let keys: HashMap<&str, &[&str]> = HashMap::from([
        ("public.items", &["id"][..]),
        ("public.scratch", &["id"][..]),
    ]);
    let (rebuilt, tombstones) = setup.rebuild("cdc", &keys);
    rebuilt.assert_table(&setup.source, "items", &["id"], ITEMS_SELECT);
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
    rebuilt.assert_table(&setup.source, "notes", &[], "'body', body, 'n', n");
    rebuilt.assert_table(&setup.source, "scratch", &["id"], "'id', id");
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
    assert_eq!(setup.ferry.delete("/api/v2/changefeeds/events").0, 200);
    assert_eq!(
        read_topics(&setup.kafka.bootstrap_servers(), "cdc").len(),
        before
    );
}

#[test]
fn kill_9_during_a_load_loses_nothing() {
    let mut setup = Setup::start();
    let init = setup.source.pgbench("shop", &["-i", "-q", "-s", "1"]);
    assert!(init.status.success(), "{init:?}");
    // pgbench never deletes: a second load inserts, updates and deletes by key.
    setup.source.psql(
        "shop",
        "CREATE TABLE pgbench_churn (id int PRIMARY KEY, v int);
         INSERT INTO pgbench_churn SELECT g, 0 FROM generate_series(1, 1000) g;",
    );
    let names: Vec<&str> = PGBENCH.iter().map(|(t, _, _)| *t).collect();
    setup.topics("bench", &names);
    let sink_uri = setup.sink_uri("bench");
    std::thread::scope(|s| {
        let source = &setup.source;
        let load =
            s.spawn(move || source.pgbench("shop", &["-n", "-c", "2", "-j", "2", "-T", "8"]));
        let churn = s.spawn(move || {
            for round in 1..=40u64 {
                let (m, n) = (round % 7, round % 5);
                source.psql(
                    "shop",
                    &format!(
                        "BEGIN;
                         DELETE FROM pgbench_churn WHERE id % 7 = {m};
                         UPDATE pgbench_churn SET v = v + 1 WHERE id % 5 = {n};
                         INSERT INTO pgbench_churn SELECT g, {round} FROM generate_series(1, 1000) g
                           WHERE g % 7 = {m} ON CONFLICT (id) DO NOTHING;
                         COMMIT;"
                    ),
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        setup.create("bench", &["public.pgbench_*"], &sink_uri);
        // The first kill usually lands in the snapshot, the others in the stream.
        for delay_ms in [400, 2500, 2500] {
            std::thread::sleep(Duration::from_millis(delay_ms));
            setup.ferry.kill9();
            std::thread::sleep(Duration::from_millis(200));
            setup.ferry.restart();
        }
        let out = load.join().unwrap();
        assert!(out.status.success(), "pgbench: {out:?}");
        churn.join().unwrap();
    });
    setup.wait_synced("bench");
    let names: Vec<String> = PGBENCH
        .iter()
        .map(|(t, _, _)| format!("public.{t}"))
        .collect();
    let keys: HashMap<&str, &[&str]> = names
        .iter()
        .zip(PGBENCH)
        .map(|(name, (_, key, _))| (name.as_str(), key))
        .collect();
    let (rebuilt, _) = setup.rebuild("bench", &keys);
    eprintln!(
        "3 kill -9 under pgbench: {} messages read, {} duplicates dropped, {} gaps, ops {:?}",
        rebuilt.events,
        rebuilt.duplicates,
        rebuilt.gaps(),
        rebuilt.ops
    );
    for (table, key, select) in PGBENCH {
        rebuilt.assert_table(&setup.source, table, key, select);
    }
    assert_eq!(rebuilt.gaps(), 0, "an event was lost");
    assert!(rebuilt.ops.contains_key("d"), "{:?}", rebuilt.ops);
}
