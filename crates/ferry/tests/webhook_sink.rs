//! The webhook sink end to end: PostgreSQL → `http://…` through the API and the CLI into a
//! receiver in the test (axum on a loopback port) that checks every request's signature
//! and rebuilds every table from the events (upsert on r/c/u, delete on d, clear on t,
//! repeats dropped by event id): after a receiver outage (503s), and after `kill -9`s of
//! the Ferry server during a load. A 4xx fails the changefeed with the receiver's answer.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::events::{Rebuilt, ITEMS_SELECT, PGBENCH};
use ferry_testkit::{FerryServer, PgCluster};
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

/// One source cluster (database `shop`), a receiver and a Ferry server.
struct Setup {
    source: PgCluster,
    receiver: Arc<Receiver>,
    port: u16,
    ferry: FerryServer,
}

impl Setup {
    fn start() -> Setup {
        let source = PgCluster::start();
        source.create_database("shop");
        let receiver = Arc::new(Receiver::default());
        Setup {
            source,
            port: serve(receiver.clone()),
            receiver,
            ferry: FerryServer::start(Path::new(env!("CARGO_BIN_EXE_ferry"))),
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

    fn create(&self, id: &str, tables: &[&str]) {
        let (code, body) = self.ferry.post(
            "/api/v2/changefeeds",
            &json!({"id": id, "source_uri": self.source.uri("shop"),
                    "sink_uri": self.sink_uri(), "tables": tables}),
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
    setup.source.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags int[], \
           doc jsonb, data bytea, at timestamptz, day date, ts timestamp, ok boolean);
         CREATE TABLE notes (body text, n int);
         ALTER TABLE notes REPLICA IDENTITY FULL;
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY[g, NULL, 3], \
           jsonb_build_object('g', g), '\\x00ff'::bytea, '2024-02-29 13:05:00+02', \
           DATE '2024-02-29' + g, TIMESTAMP '1999-12-31 23:59:59.5' + g * interval '1 hour', g % 2 = 0 \
           FROM generate_series(1, 2500) g;
         INSERT INTO notes VALUES ('a', 1), ('a', 1), ('b', 2);",
    );
    // Created with the CLI, which takes http:// as the API does.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["changefeed", "create", "--id", "hook", "--source-uri"])
        .arg(setup.source.uri("shop"))
        .arg("--sink-uri")
        .arg(setup.sink_uri_with_options())
        .args(["--tables", "public.*"])
        .env("FERRY_SERVER", setup.ferry.url())
        .env_remove("FERRY_NAMESPACE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    setup.wait_synced("hook");
    // The signing secret is masked wherever the changefeed shows.
    let (_, shown) = setup.ferry.get("/api/v2/changefeeds/hook");
    assert!(!shown.to_string().contains(SECRET), "{shown}");
    assert!(shown.to_string().contains("signing_secret=***"), "{shown}");
    assert!(!setup.ferry.log().contains(SECRET));

    // The receiver answers 503 for a while: retried, never failed, caught up after.
    setup.receiver.unavailable.store(8, Ordering::Relaxed);
    setup.source.psql(
        "shop",
        "INSERT INTO items (id, name, price) VALUES (3001, 'new', 9.99);
         UPDATE items SET name = 'renamed', price = price + 1 WHERE id <= 20;
         UPDATE items SET id = 4000 WHERE id = 21;
         DELETE FROM items WHERE id BETWEEN 30 AND 39;
         DELETE FROM notes WHERE ctid IN (SELECT ctid FROM notes WHERE body = 'a' LIMIT 1);
         UPDATE notes SET n = 3 WHERE body = 'b';",
    );
    setup.wait_synced("hook");
    assert_ne!(setup.status("hook")["state"], "failed");
    assert_eq!(setup.receiver.unavailable.load(Ordering::Relaxed), 0);

    let keys: HashMap<&str, &[&str]> = HashMap::from([("public.items", &["id"][..])]);
    let rebuilt = setup.rebuild(&keys);
    rebuilt.assert_table(&setup.source, "items", &["id"], ITEMS_SELECT);
    rebuilt.assert_table(&setup.source, "notes", &[], "'body', body, 'n', n");
    assert_eq!(rebuilt.gaps(), 0);
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
        .source
        .psql("shop", "UPDATE items SET name = 'refused' WHERE id = 1;");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = setup.status("hook");
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
            .ferry
            .post("/api/v2/changefeeds/hook/resume", &json!({}))
            .0,
        200
    );
    setup.wait_synced("hook");
    setup
        .rebuild(&keys)
        .assert_table(&setup.source, "items", &["id"], ITEMS_SELECT);
}

#[test]
fn kill_9_during_a_load_loses_nothing() {
    let mut setup = Setup::start();
    let init = setup.source.pgbench("shop", &["-i", "-q", "-s", "1"]);
    assert!(init.status.success(), "{init:?}");
    setup.source.psql(
        "shop",
        "CREATE TABLE pgbench_churn (id int PRIMARY KEY, v int);
         INSERT INTO pgbench_churn SELECT g, 0 FROM generate_series(1, 1000) g;",
    );
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
        setup.create("bench", &["public.pgbench_*"]);
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
    let rebuilt = setup.rebuild(&keys);
    eprintln!(
        "3 kill -9 under pgbench: {} events received, {} duplicates dropped, {} gaps, ops {:?}",
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
