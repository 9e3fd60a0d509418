//! The webhook sink end to end: PostgreSQL → `http://…` through the API and the CLI into a
//! receiver in the test (axum on a loopback port) that checks every request's signature
//! and rebuilds every table from the events (upsert on r/c/u, delete on d, clear on t,
//! repeats dropped by event id): after a receiver outage (503s), and after `kill -9`s of
//! the Ferry server during a load. A 4xx fails the changefeed with the receiver's answer.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::events::{Rebuilt, ITEMS_SELECT};
use common::stream::{every_op_keys, pgbench_keys, StreamSetup, CHANGES, TABLES};
use serde_json::{json, Value};

const SECRET: &str = "s3cret-signing-key";

/// What the receiver does and saw.
#[derive(Default)]
struct Receiver {
    /// Every event of every accepted request, in arrival order.
    events: Mutex<Vec<Value>>,
    requests: AtomicU32,
    bad_signatures: AtomicU32,
    /// Answer this many next requests with 503.
    unavailable: AtomicU32,
    /// Answer every request with 400 while set.
    reject: AtomicU32,
    /// `BEGIN` and `END` events received.
    boundaries: AtomicU32,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    receiver.requests.fetch_add(1, Ordering::Relaxed);
    if receiver.reject.load(Ordering::Relaxed) > 0 {
        return (StatusCode::BAD_REQUEST, "schema registry says no");
    }
    if receiver
        .unavailable
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later");
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let expected: String = ring::hmac::sign(&key, &body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let given = headers
        .get("x-ferry-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given != format!("sha256={expected}") {
        receiver.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::UNAUTHORIZED, "bad signature");
    }
    let events: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array of events");
    let mut kept = receiver.events.lock().unwrap();
    for event in events {
        // With `schemas=true` every event is {"schema", "payload"}; BEGIN/END events
        // (`transactions=true`) are counted, not applied.
        let event = match event.get("payload") {
            Some(payload) => {
                assert_eq!(event["schema"]["type"], "struct", "{event}");
                payload.clone()
            }
            None => event,
        };
        if event.get("status").is_some() {
            receiver.boundaries.fetch_add(1, Ordering::Relaxed);
        } else {
            kept.push(event);
        }
    }
    (StatusCode::OK, "ok")
}

/// Serves the receiver on a free loopback port from a thread of its own.
fn serve(receiver: Arc<Receiver>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new()
                .route("/hook", axum::routing::post(receive))
                .with_state(receiver);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

/// The shared source and server, and a receiver.
struct Setup {
    base: StreamSetup,
    receiver: Arc<Receiver>,
    port: u16,
}

impl Setup {
    fn start() -> Setup {
        let receiver = Arc::new(Receiver::default());
        Setup {
            base: StreamSetup::start(),
            port: serve(receiver.clone()),
            receiver,
        }
    }

    fn sink_uri(&self) -> String {
        format!(
            "http://127.0.0.1:{}/hook?signing_secret={SECRET}",
            self.port
        )
    }

    /// With every message's schema and transaction boundaries.
    fn sink_uri_with_options(&self) -> String {
        format!("{}&schemas=true&transactions=true", self.sink_uri())
    }

    fn rebuild(&self, keys: &HashMap<&str, &[&str]>) -> Rebuilt {
        assert_eq!(self.receiver.bad_signatures.load(Ordering::Relaxed), 0);
        let mut out = Rebuilt::default();
        for event in self.receiver.events.lock().unwrap().iter() {
            out.apply(event.clone(), keys);
        }
        out
    }
}

#[test]
fn snapshot_changes_an_outage_and_a_refusal() {
    let setup = Setup::start();
    setup.base.source.psql("shop", TABLES);
    setup.base.source.psql(
        "shop",
        "INSERT INTO items (id, name) SELECT g, 'more ' || g FROM generate_series(10001, 12000) g",
    );
    // Created with the CLI, which takes http:// as the API does.
    setup
        .base
        .create_with_cli("hook", &["public.*"], &setup.sink_uri_with_options());
    setup.base.wait_synced("hook");
    // The signing secret is masked wherever the changefeed shows.
    let (_, shown) = setup.base.ferry.get("/api/v2/changefeeds/hook");
    assert!(!shown.to_string().contains(SECRET), "{shown}");
    assert!(shown.to_string().contains("signing_secret=***"), "{shown}");
    assert!(!setup.base.ferry.log().contains(SECRET));

    // The receiver answers 503 for a while: retried, never failed, caught up after.
    setup.receiver.unavailable.store(8, Ordering::Relaxed);
    setup.base.source.psql("shop", CHANGES);
    setup.base.wait_synced("hook");
    assert_ne!(setup.base.status("hook")["state"], "failed");
    assert_eq!(setup.receiver.unavailable.load(Ordering::Relaxed), 0);

    let keys = every_op_keys();
    let rebuilt = setup.rebuild(&keys);
    setup.base.assert_every_op_rebuilt(&rebuilt);
    assert!(setup.receiver.boundaries.load(Ordering::Relaxed) >= 2);
    eprintln!(
        "{} requests, {} events, {} duplicates dropped, ops {:?}",
        setup.receiver.requests.load(Ordering::Relaxed),
        rebuilt.events,
        rebuilt.duplicates,
        rebuilt.ops
    );

    // A 4xx is the receiver refusing for good: the changefeed fails, naming the answer.
    setup.receiver.reject.store(1, Ordering::Relaxed);
    setup
        .base
        .source
        .psql("shop", "UPDATE items SET name = 'refused' WHERE id = 1;");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = setup.base.status("hook");
        if status["state"] == "failed" {
            break status;
        }
        assert!(Instant::now() < deadline, "not failed: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let error = status["last_error"].to_string();
    assert!(
        error.contains("400") && error.contains("schema registry says no"),
        "{status}"
    );
    assert!(!error.contains(SECRET), "{status}");
    // Fixed and resumed, the refused change arrives.
    setup.receiver.reject.store(0, Ordering::Relaxed);
    assert_eq!(
        setup
            .base
            .ferry
            .post("/api/v2/changefeeds/hook/resume", &json!({}))
            .0,
        200
    );
    setup.base.wait_synced("hook");
    setup
        .rebuild(&keys)
        .assert_table(&setup.base.source, "items", &["id"], ITEMS_SELECT);
}

#[test]
fn kill_9_during_a_load_loses_nothing() {
    let mut setup = Setup::start();
    let sink_uri = setup.sink_uri();
    setup.base.load_with_kills(&sink_uri, 8, &[400, 2500, 2500]);
    let rebuilt = setup.rebuild(&pgbench_keys());
    setup
        .base
        .assert_load_rebuilt(&rebuilt, "3 kill -9 under pgbench and a delete churn");
}
