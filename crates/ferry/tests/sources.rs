//! Named sources over HTTP against real PostgreSQL: create, list, get, update, status,
//! delete (refused while used, unless forced), changefeeds that name a source, and
//! `POST /verify-table`.

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
}

#[track_caller]
fn ok(reply: (u16, Value)) -> Value {
    assert!(reply.0 == 200 || reply.0 == 201, "{}: {}", reply.0, reply.1);
    reply.1
}

#[test]
fn sources_are_registered_once_and_named_by_changefeeds() {
    let pair = Pair::start();
    let ferry = &pair.ferry;
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    let uri = pair.source.uri("shop");

    // Create: checked before anything is stored.
    refused(
        ferry.post(
            "/api/v2/sources",
            &json!({"name": "shop", "uri": "oracle://h/db"}),
        ),
        400,
        "INVALID_CONFIG",
    );
    refused(
        ferry.post("/api/v2/sources", &json!({"name": "-x", "uri": uri})),
        400,
        "INVALID_CONFIG",
    );
    refused(
        ferry.post(
            "/api/v2/sources",
            &json!({"name": "down", "uri": "postgres://u:pw@127.0.0.1:1/db"}),
        ),
        400,
        "SOURCE_UNUSABLE",
    );
    refused(
        ferry.post(
            "/api/v2/sources",
            &json!({"name": "shop", "uri": uri, "extra": 1}),
        ),
        400,
        "INVALID_REQUEST_BODY",
    );
    let created = ok(ferry.post("/api/v2/sources", &json!({"name": "shop", "uri": uri})));
    assert_eq!(created["name"], json!("shop"));
    refused(
        ferry.post("/api/v2/sources", &json!({"name": "shop", "uri": uri})),
        409,
        "SOURCE_ALREADY_EXISTS",
    );
    let listed = ok(ferry.get("/api/v2/sources"));
    assert_eq!(listed["total"], json!(1), "{listed}");
    assert_eq!(
        ok(ferry.get("/api/v2/sources?namespace=other"))["total"],
        json!(0)
    );
    refused(ferry.get("/api/v2/sources/nope"), 404, "SOURCE_NOT_FOUND");

    // A changefeed naming it.
    let changefeed = |id: &str, source: Value| {
        let mut body =
            json!({"id": id, "sink_uri": pair.target.uri("analytics"), "tables": ["public.t"]});
        body.as_object_mut()
            .unwrap()
            .extend(source.as_object().unwrap().clone());
        ferry.post("/api/v2/changefeeds", &body)
    };
    refused(
        changefeed("x", json!({"source": "nope"})),
        400,
        "UNKNOWN_SOURCE",
    );
    refused(
        changefeed("x", json!({"source": "shop", "source_uri": uri})),
        400,
        "INVALID_CONFIG",
    );
    let cf = ok(changefeed("cf", json!({"source": "shop"})));
    assert_eq!(cf["config"]["source"], json!("shop"), "{cf}");
    assert!(cf["config"].get("source_uri").is_none(), "{cf}");
    pair.wait_synced("cf", MINUTE);
    pair.assert_same("t");
    let shown = ok(ferry.get("/api/v2/sources/shop"));
    assert_eq!(shown["changefeeds"], json!(["cf"]), "{shown}");

    // Status: reachable, usable, with the changefeed's slot.
    let status = ok(ferry.get("/api/v2/sources/shop/status"));
    assert_eq!(
        (status["reachable"].clone(), status["usable"].clone()),
        (json!(true), json!(true)),
        "{status}"
    );
    assert_eq!(status["facts"]["wal_level"], json!("logical"));
    assert_eq!(status["slots"][0]["changefeed"], json!("cf"), "{status}");
    assert!(
        status["slots"][0]["retained_wal_bytes"].is_u64(),
        "{status}"
    );

    // Update: refused while a changefeed of it runs; a masked password keeps the stored one.
    let masked = shown["uri"].as_str().unwrap().to_string();
    let put = |body: Value| {
        ferry.request(
            "PUT",
            "/api/v2/sources/shop",
            Some(body.to_string().as_bytes()),
        )
    };
    refused(put(json!({"uri": masked})), 409, "SOURCE_IN_USE");
    ok(ferry.post("/api/v2/changefeeds/cf/pause", &json!({})));
    refused(put(json!({"name": "other"})), 400, "INVALID_CONFIG");
    refused(
        put(json!({"uri": "postgres://u:pw@127.0.0.1:1/db"})),
        400,
        "SOURCE_UNUSABLE",
    );
    // The shown document, sent back unchanged.
    ok(put(shown.clone()));
    ok(ferry.post("/api/v2/changefeeds/cf/resume", &json!({})));
    pair.source.psql("shop", "INSERT INTO t VALUES (2)");
    pair.wait_synced("cf", MINUTE);
    pair.assert_same("t");

    // Delete: refused while used, forced detaches the changefeed, which keeps running.
    refused(ferry.delete("/api/v2/sources/shop"), 409, "SOURCE_IN_USE");
    refused(
        ferry.delete("/api/v2/sources/shop?force=yes"),
        400,
        "INVALID_PARAMETER",
    );
    assert_eq!(
        ok(ferry.delete("/api/v2/sources/shop?force=true")),
        json!({"id": "shop", "deleted": true})
    );
    assert_eq!(
        ok(ferry.delete("/api/v2/sources/shop")),
        json!({"id": "shop", "deleted": false})
    );
    let cf = ok(ferry.get("/api/v2/changefeeds/cf"));
    assert!(cf["config"].get("source").is_none(), "{cf}");
    assert!(
        cf["config"]["source_uri"]
            .as_str()
            .unwrap()
            .starts_with("postgres://"),
        "{cf}"
    );
    pair.source.psql("shop", "INSERT INTO t VALUES (3)");
    wait_for("row 3", MINUTE, || {
        pair.target.psql("analytics", "SELECT count(*) FROM t") == "3"
    });
}

#[test]
fn verify_table_sorts_tables_by_eligibility() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE keyed (id int PRIMARY KEY);
         CREATE TABLE full_identity (a int); ALTER TABLE full_identity REPLICA IDENTITY FULL;
         CREATE TABLE by_index (code text NOT NULL); CREATE UNIQUE INDEX by_index_code ON by_index (code);
         ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_code;
         CREATE TABLE no_key (a int);
         CREATE TABLE nothing (id int PRIMARY KEY); ALTER TABLE nothing REPLICA IDENTITY NOTHING;
         CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
         CREATE SCHEMA other; CREATE TABLE other.skip (id int PRIMARY KEY);",
    );
    let verify = |body: Value| pair.ferry.post("/api/v2/verify-table", &body);
    let reply = ok(verify(
        json!({"source_uri": pair.source.uri("shop"), "tables": ["public.*"]}),
    ));
    let names = |key: &str| -> Vec<String> {
        reply[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["table"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names("eligible_tables"),
        ["public.by_index", "public.full_identity", "public.keyed"],
        "{reply}"
    );
    assert_eq!(
        names("ineligible_tables"),
        ["public.no_key", "public.nothing", "public.scratch"],
        "{reply}"
    );
    let no_key = &reply["ineligible_tables"][0]["reason"];
    assert!(
        no_key.as_str().unwrap().contains("REPLICA IDENTITY FULL"),
        "{reply}"
    );

    refused(
        verify(json!({"tables": ["public.*"]})),
        400,
        "INVALID_CONFIG",
    );
    refused(
        verify(json!({"source_uri": pair.source.uri("shop"), "tables": ["nodot"]})),
        400,
        "INVALID_CONFIG",
    );
    refused(
        verify(json!({"source_uri": "postgres://u:pw@127.0.0.1:1/db"})),
        400,
        "SOURCE_UNUSABLE",
    );
    refused(verify(json!({"source": "unknown"})), 400, "UNKNOWN_SOURCE");
    refused(
        verify(json!({"source_uri": 7})),
        400,
        "INVALID_REQUEST_BODY",
    );
}
