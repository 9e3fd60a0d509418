//! The NATS JetStream sink end to end: PostgreSQL → `nats://` through the API, then a
//! consumer (a JetStream pull consumer) that rebuilds every table from the stream's
//! messages (upsert on r/c/u, delete on d, clear on t, repeats dropped by event id) must
//! hold exactly the source's rows: after a broker outage, and after `kill -9`s of the Ferry
//! server during a load.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use common::events::{Rebuilt, ITEMS_SELECT, PGBENCH};
use ferry_testkit::{FerryServer, NatsServer, PgCluster};
use futures::StreamExt;
use serde_json::{json, Value};

/// One source cluster (database `shop`), a NATS server and a Ferry server.
struct Setup {
    source: PgCluster,
    nats: NatsServer,
    ferry: FerryServer,
}

impl Setup {
    fn start() -> Setup {
        let source = PgCluster::start();
        source.create_database("shop");
        Setup {
            source,
            nats: NatsServer::start(),
            ferry: FerryServer::start(Path::new(env!("CARGO_BIN_EXE_ferry"))),
        }
    }

    fn sink_uri(&self, stream: &str, prefix: &str) -> String {
        format!(
            "{}?stream={stream}&subject_prefix={prefix}",
            self.nats.url()
        )
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

    fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(id);
            if status["state"] == state {
                return status;
            }
            assert!(Instant::now() < deadline, "not {state}: {status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Reads the whole stream with a pull consumer and applies every message, checking
    /// each message's subject and id headers on the way.
    fn rebuild(&self, stream: &str, prefix: &str, keys: &HashMap<&str, &[&str]>) -> Rebuilt {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let messages = runtime.block_on(read_stream(&self.nats.url(), stream));
        let mut out = Rebuilt::default();
        for (subject, msg_id, header_id, event) in messages {
            let id = event["source"]["event_id"].as_str().unwrap();
            assert_eq!(msg_id.as_deref(), Some(id), "Nats-Msg-Id of {event}");
            assert_eq!(header_id.as_deref(), Some(id), "ferry-event-id of {event}");
            let table_subject = format!(
                "{prefix}.{}.{}",
                event["source"]["schema"].as_str().unwrap(),
                event["source"]["table"].as_str().unwrap()
            );
            assert_eq!(subject, table_subject, "{event}");
            out.apply(event, keys);
        }
        out
    }
}

/// Every message of the stream, in order: (subject, Nats-Msg-Id, ferry-event-id, event).
async fn read_stream(
    url: &str,
    stream: &str,
) -> Vec<(String, Option<String>, Option<String>, Value)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(stream).await.unwrap();
    let count = stream.info().await.unwrap().state.messages;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < count {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("the stream's messages arrive")
            .unwrap()
            .unwrap();
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        out.push((
            message.subject.to_string(),
            header("Nats-Msg-Id"),
            header("ferry-event-id"),
            event,
        ));
    }
    out
}

#[test]
fn snapshot_changes_and_a_broker_outage_rebuild_the_source() {
    let mut setup = Setup::start();
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
    // A bad URI never reaches the engine.
    let (code, body) = setup.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "bad", "source_uri": setup.source.uri("shop"),
                "sink_uri": setup.sink_uri("a.b", "cdc"), "tables": ["public.*"]}),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("stream"), "{body}");

    setup.create("events", &["public.*"], &setup.sink_uri("CDC", "cdc.shop"));
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
    setup.nats.kill9();
    setup
        .source
        .psql("shop", "UPDATE items SET name = 'outage' WHERE id > 400;");
    std::thread::sleep(Duration::from_secs(3));
    let status = setup.status("events");
    assert_ne!(status["state"], "failed", "{status}");
    setup.nats.restart();
    setup.wait_synced("events");

    let keys: HashMap<&str, &[&str]> = HashMap::from([
        ("public.items", &["id"][..]),
        ("public.scratch", &["id"][..]),
    ]);
    let rebuilt = setup.rebuild("CDC", "cdc.shop", &keys);
    rebuilt.assert_table(&setup.source, "items", &["id"], ITEMS_SELECT);
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
    let first = rebuilt
        .lines
        .iter()
        .find(|e| e["op"] == "r" && e["source"]["table"] == "items" && e["after"]["id"] == 2)
        .unwrap();
    assert_eq!(first["after"]["price"], "2.50");
    assert_eq!(first["source"]["db"], "shop");

    // An existing stream that does not take the subjects is refused, and left alone.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let js = jetstream::new(async_nats::connect(setup.nats.url()).await.unwrap());
        js.create_stream(jetstream::stream::Config {
            name: "OTHER".into(),
            subjects: vec!["other.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    // (Created with the CLI, which takes nats:// as the API does.)
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["changefeed", "create", "--id", "wrong", "--source-uri"])
        .arg(setup.source.uri("shop"))
        .arg("--sink-uri")
        .arg(setup.sink_uri("OTHER", "cdc.wrong"))
        .args(["--tables", "public.items"])
        .env("FERRY_SERVER", setup.ferry.url())
        .env_remove("FERRY_NAMESPACE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status = setup.wait_state("wrong", "failed");
    assert!(status.to_string().contains("other.>"), "{status}");

    // Deleting the changefeed forgets its chunk markers; its events stay (the stream is
    // the user's).
    let markers = |runtime: &tokio::runtime::Runtime| {
        runtime.block_on(async {
            let js = jetstream::new(async_nats::connect(setup.nats.url()).await.unwrap());
            let mut chunks = js.get_stream("FERRY_CHUNKS").await.unwrap();
            let mut events = js.get_stream("CDC").await.unwrap();
            (
                chunks.info().await.unwrap().state.messages,
                events.info().await.unwrap().state.messages,
            )
        })
    };
    let (chunks, events) = markers(&runtime);
    assert!(chunks > 0 && events == rebuilt.events, "{chunks} {events}");
    assert_eq!(setup.ferry.delete("/api/v2/changefeeds/events").0, 200);
    assert_eq!(markers(&runtime), (0, events));
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
    let stop = AtomicBool::new(false);
    let sink_uri = setup.sink_uri("BENCH", "bench");
    std::thread::scope(|s| {
        let source = &setup.source;
        let load =
            s.spawn(move || source.pgbench("shop", &["-n", "-c", "2", "-j", "2", "-T", "10"]));
        let stop = &stop;
        let churn = s.spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
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
                std::thread::sleep(Duration::from_millis(50));
            }
            round
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
        stop.store(true, Ordering::Relaxed);
        assert!(churn.join().unwrap() > 30, "the churn ran");
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
    let rebuilt = setup.rebuild("BENCH", "bench", &keys);
    eprintln!(
        "3 kill -9 under pgbench and a delete churn: {} messages read, {} duplicates dropped, {} gaps, ops {:?}",
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
