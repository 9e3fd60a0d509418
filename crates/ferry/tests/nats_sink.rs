//! The NATS JetStream sink end to end: PostgreSQL → `nats://` through the API, then a
//! consumer (a JetStream pull consumer) that rebuilds every table from the stream's
//! messages (upsert on r/c/u, delete on d, clear on t, repeats dropped by event id) must
//! hold exactly the source's rows: after a broker outage, and after `kill -9`s of the Ferry
//! server during a load.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use common::events::Rebuilt;
use common::stream::{every_op_keys, pgbench_keys, StreamSetup, CHANGES, TABLES};
use ferry_testkit::NatsServer;
use futures::StreamExt;
use serde_json::{json, Value};

fn sink_uri(nats: &NatsServer, stream: &str, prefix: &str) -> String {
    format!("{}?stream={stream}&subject_prefix={prefix}", nats.url())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Reads the whole stream with a pull consumer and applies every message, checking each
/// message's subject and id headers on the way.
fn rebuild(
    nats: &NatsServer,
    stream: &str,
    prefix: &str,
    keys: &HashMap<&str, &[&str]>,
) -> Rebuilt {
    let messages = runtime().block_on(read_stream(&nats.url(), stream));
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
    let setup = StreamSetup::start();
    let mut nats = NatsServer::start();
    setup.source.psql("shop", TABLES);
    // A bad URI never reaches the engine.
    let (code, body) = setup.ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "bad", "source_uri": setup.source.uri("shop"),
                "sink_uri": sink_uri(&nats, "a.b", "cdc"), "tables": ["public.*"]}),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("stream"), "{body}");

    setup.create("events", &["public.*"], &sink_uri(&nats, "CDC", "cdc.shop"));
    setup.wait_synced("events");
    setup.source.psql("shop", CHANGES);
    setup.wait_synced("events");

    // The broker goes away: the changefeed retries (never fails) and catches up after.
    nats.kill9();
    setup
        .source
        .psql("shop", "UPDATE items SET name = 'outage' WHERE id > 400;");
    std::thread::sleep(Duration::from_secs(3));
    let status = setup.status("events");
    assert_ne!(status["state"], "failed", "{status}");
    nats.restart();
    setup.wait_synced("events");

    let rebuilt = rebuild(&nats, "CDC", "cdc.shop", &every_op_keys());
    setup.assert_every_op_rebuilt(&rebuilt);
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
    let runtime = runtime();
    runtime.block_on(async {
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.create_stream(jetstream::stream::Config {
            name: "OTHER".into(),
            subjects: vec!["other.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    // (Created with the CLI, which takes nats:// as the API does.)
    setup.create_with_cli(
        "wrong",
        &["public.items"],
        &sink_uri(&nats, "OTHER", "cdc.wrong"),
    );
    let status = setup.wait_state("wrong", "failed");
    assert!(status.to_string().contains("other.>"), "{status}");

    // Deleting the changefeed forgets its chunk markers; its events stay (the stream is
    // the user's).
    let markers = || {
        runtime.block_on(async {
            let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
            let mut chunks = js.get_stream("FERRY_CHUNKS").await.unwrap();
            let mut events = js.get_stream("CDC").await.unwrap();
            (
                chunks.info().await.unwrap().state.messages,
                events.info().await.unwrap().state.messages,
            )
        })
    };
    let (chunks, events) = markers();
    assert!(chunks > 0 && events == rebuilt.events, "{chunks} {events}");
    assert_eq!(setup.ferry.delete("/api/v2/changefeeds/events").0, 200);
    assert_eq!(markers(), (0, events));
}

#[test]
fn kill_9_during_a_load_loses_nothing() {
    let mut setup = StreamSetup::start();
    let nats = NatsServer::start();
    setup.load_with_kills(&sink_uri(&nats, "BENCH", "bench"), 10, &[400, 2500, 2500]);
    let rebuilt = rebuild(&nats, "BENCH", "bench", &pgbench_keys());
    setup.assert_load_rebuilt(&rebuilt, "3 kill -9 under pgbench and a delete churn");
}
