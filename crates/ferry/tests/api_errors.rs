//! Every route's refusals: each bad input class gets a 4xx with a stable code (never a
//! 5xx), namespaces isolate changefeeds, and none of it disturbs a running changefeed.
//! Also the server routes: status, metrics, the OpenAPI document.

mod common;

use std::time::Duration;

use common::Pair;
use ferry_testkit::wait_for;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

#[track_caller]
fn refused(reply: (u16, Value), status: u16, code: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["error_code"], json!(code), "{}", reply.1);
    assert!(reply.1["error_msg"].is_string(), "{}", reply.1);
}

#[test]
fn every_route_refuses_bad_input_with_a_code() {
    let pair = Pair::start();
    let ferry = &pair.ferry;
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    pair.create("cf", &["public.t"]);
    pair.wait_synced("cf", MINUTE);

    let routes_with_bodies = [
        ("POST", "/api/v2/changefeeds"),
        ("PUT", "/api/v2/changefeeds/cf"),
        ("POST", "/api/v2/changefeeds/cf/resume"),
        ("POST", "/api/v2/changefeeds/cf/pause"),
        ("POST", "/api/v2/sources"),
        ("PUT", "/api/v2/sources/shop"),
        ("POST", "/api/v2/verify-table"),
    ];
    for (method, route) in routes_with_bodies {
        let send = |body: &[u8]| ferry.request(method, route, Some(body));
        let what = format!("{method} {route}");
        let (code, reply) = send(b"{not json");
        // Sources that do not exist are looked up after the body is parsed.
        if route.ends_with("/shop") {
            assert!(code == 400 || code == 404, "{what}: {reply}");
            continue;
        }
        assert_eq!(code, 400, "{what}: {reply}");
        assert_eq!(reply["error_code"], json!("INVALID_REQUEST_BODY"), "{what}");
        refused(send(b"[1, 2]"), 400, "INVALID_REQUEST_BODY");
        refused(
            send(br#"{"unknown_field": true}"#),
            400,
            "INVALID_REQUEST_BODY",
        );
        refused(send(&vec![b' '; 2 << 20]), 413, "REQUEST_BODY_TOO_LARGE");
    }
    // Wrong types, field by field.
    let put = |body: Value| {
        ferry.request(
            "PUT",
            "/api/v2/changefeeds/cf",
            Some(body.to_string().as_bytes()),
        )
    };
    refused(
        put(json!({"tables": "public.t"})),
        400,
        "INVALID_REQUEST_BODY",
    );
    refused(
        put(json!({"options": {"snapshot_workers": -1}})),
        400,
        "INVALID_REQUEST_BODY",
    );
    refused(
        put(json!({"options": {"snapshot_workers": "postgres://u:hunter2@h/db"}})),
        400,
        "INVALID_REQUEST_BODY",
    );
    let (_, leaked) = put(json!({"options": {"snapshot_workers": "postgres://u:hunter2@h/db"}}));
    assert!(!leaked.to_string().contains("hunter2"), "{leaked}");
    // Query strings.
    refused(
        ferry.get("/api/v2/changefeeds?surprise=1"),
        400,
        "INVALID_PARAMETER",
    );
    refused(
        ferry.get("/api/v2/changefeeds/cf?namespace=bad%20name"),
        400,
        "INVALID_PARAMETER",
    );
    refused(
        ferry.get("/api/v2/changefeeds?namespace="),
        400,
        "INVALID_PARAMETER",
    );
    // Unknown ids on every changefeed route.
    for (method, route) in [
        ("GET", ""),
        ("PUT", ""),
        ("GET", "/status"),
        ("GET", "/synced"),
        ("POST", "/pause"),
        ("POST", "/resume"),
    ] {
        let body: &[u8] = if method == "PUT" { b"{}" } else { b"" };
        let reply = ferry.request(
            method,
            &format!("/api/v2/changefeeds/nope{route}"),
            Some(body),
        );
        refused(reply, 404, "CHANGEFEED_NOT_FOUND");
    }
    refused(
        ferry.get("/api/v2/sources/nope/status"),
        404,
        "SOURCE_NOT_FOUND",
    );
    // Routes and methods.
    refused(ferry.get("/api/v2/nowhere"), 404, "NOT_FOUND");
    refused(
        ferry.request("PATCH", "/api/v2/changefeeds/cf", Some(b"{}")),
        405,
        "METHOD_NOT_ALLOWED",
    );
    refused(
        ferry.request("DELETE", "/api/v2/changefeeds", None),
        405,
        "METHOD_NOT_ALLOWED",
    );
    // Names longer than allowed, ids that break the syntax.
    let create = |id: &str| {
        ferry.post(
            "/api/v2/changefeeds",
            &json!({"id": id, "source_uri": pair.source.uri("shop"), "sink_uri": "blackhole://"}),
        )
    };
    refused(create(&"x".repeat(129)), 400, "INVALID_CONFIG");
    refused(create("a/b"), 400, "INVALID_CONFIG");
    refused(
        ferry.post(
            "/api/v2/changefeeds",
            &json!({"id": "t2", "source_uri": pair.source.uri("shop"), "sink_uri": "blackhole://",
                    "tables": ["public.t", "public.missing"]}),
        ),
        400,
        "TABLE_NOT_FOUND",
    );

    // None of that disturbed the changefeed.
    assert_eq!(
        ferry.get("/api/v2/changefeeds/cf/status").1["state"],
        json!("running")
    );
    pair.source.psql("shop", "INSERT INTO t VALUES (2)");
    pair.wait_synced("cf", MINUTE);
    pair.assert_same("t");
    assert!(!ferry.log().contains("hunter2"), "a secret reached the log");
}

#[test]
fn namespaces_isolate_changefeeds() {
    let pair = Pair::start();
    let ferry = &pair.ferry;
    let create = |ns: &str, start: bool| {
        ferry.post(
            &format!("/api/v2/changefeeds?namespace={ns}"),
            &json!({"id": "same", "start": start, "source_uri": pair.source.uri("shop"),
                    "sink_uri": "blackhole://"}),
        )
    };
    assert_eq!(create("team-a", false).0, 201);
    assert_eq!(create("team-b", true).0, 201);
    refused(create("team-a", false), 409, "CHANGEFEED_ALREADY_EXISTS");
    let state = |ns: &str| {
        ferry
            .get(&format!("/api/v2/changefeeds/same/status?namespace={ns}"))
            .1
    };
    assert_eq!(state("team-a")["state"], json!("stopped"));
    assert_eq!(state("team-b")["namespace"], json!("team-b"));
    refused(
        ferry.get("/api/v2/changefeeds/same"),
        404,
        "CHANGEFEED_NOT_FOUND",
    );
    let list = ferry.get("/api/v2/changefeeds?namespace=team-a").1;
    assert_eq!(list["total"], json!(1), "{list}");
    assert_eq!(list["items"][0]["namespace"], json!("team-a"));
    assert_eq!(ferry.get("/api/v2/changefeeds").1["total"], json!(0));
    // Deleting one leaves the other.
    assert_eq!(
        ferry.delete("/api/v2/changefeeds/same?namespace=team-a").1["deleted"],
        json!(true)
    );
    wait_for("team-b runs", MINUTE, || {
        state("team-b")["state"] == json!("running")
    });
}

#[test]
fn server_status_metrics_and_openapi() {
    let pair = Pair::start();
    let ferry = &pair.ferry;
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    pair.create("cf", &["public.t"]);
    pair.wait_synced("cf", MINUTE);
    pair.source.psql(
        "shop",
        "INSERT INTO t VALUES (2); UPDATE t SET id = 3 WHERE id = 1;",
    );
    pair.wait_synced("cf", MINUTE);

    let (code, health) = ferry.get("/api/v2/health");
    assert_eq!((code, health), (200, json!({"status": "ok"})));
    let (code, status) = ferry.get("/api/v2/status");
    assert_eq!(code, 200);
    assert!(
        status["version"].is_string() && status["node_id"].is_string(),
        "{status}"
    );
    assert!(status["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        status["changefeeds_by_state"]["running"],
        json!(1),
        "{status}"
    );

    let (code, metrics) = ferry.get("/metrics");
    assert_eq!(code, 200);
    let metrics = metrics.as_str().expect("text").to_string();
    for needle in [
        "ferry_changefeed_state{namespace=\"default\",changefeed=\"cf\",state=\"running\"} 1",
        "ferry_rows_applied_total{",
        "table=\"public.t\"",
        "op=\"insert\"",
        "ferry_transactions_applied_total{",
        "ferry_source_bytes_read_total{",
        "ferry_checkpoint_lag_seconds{",
        "ferry_snapshot_rows_copied{namespace=\"default\",changefeed=\"cf\"} 1",
        "ferry_process_resident_memory_bytes ",
        "ferry_process_cpu_seconds_total ",
    ] {
        assert!(metrics.contains(needle), "no {needle} in\n{metrics}");
    }
    wait_for("retained WAL measured", MINUTE, || {
        ferry
            .get("/metrics")
            .1
            .as_str()
            .unwrap_or_default()
            .contains("ferry_slot_retained_wal_bytes{")
    });

    let (code, spec) = ferry.get("/api/v2/openapi.json");
    assert_eq!(code, 200);
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3."),
        "{spec}"
    );
    for path in [
        "/api/v2/changefeeds",
        "/api/v2/changefeeds/{id}",
        "/api/v2/changefeeds/{id}/pause",
        "/api/v2/changefeeds/{id}/resume",
        "/api/v2/sources/{name}/status",
        "/api/v2/verify-table",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} missing");
    }
}
