//! The API's refusals: every bad input gets a 4xx with a stable `error_code`, and
//! passwords never appear in responses or logs.

use std::path::Path;
use std::time::Duration;

use ferry_testkit::{FerryServer, PgCluster, PgOptions};
use serde_json::json;

const SECRET: &str = "s3cr3t-Pa55";

#[test]
fn bad_input_is_refused_with_stable_codes_and_secrets_stay_masked() {
    let options = PgOptions {
        password: Some(SECRET.into()),
        ..Default::default()
    };
    let source = PgCluster::start_with(options.clone());
    let target = PgCluster::start_with(options);
    source.create_database("shop");
    target.create_database("analytics");
    source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');",
    );
    let ferry = FerryServer::start(Path::new(env!("CARGO_BIN_EXE_ferry")));
    let good = json!({
        "id": "t1",
        "source_uri": source.uri("shop"),
        "sink_uri": target.uri("analytics"),
    });
    assert!(
        source.uri("shop").contains(SECRET),
        "the fixture uses the password"
    );

    let refused = |body: &[u8], status: u16, code: &str| {
        let (got, reply) = ferry.request("POST", "/api/v2/changefeeds", Some(body));
        assert_eq!(got, status, "{}: {reply}", String::from_utf8_lossy(body));
        assert_eq!(reply["error_code"], json!(code), "{reply}");
        assert!(!reply.to_string().contains(SECRET), "{reply}");
    };
    refused(b"{not json", 400, "INVALID_REQUEST_BODY");
    refused(b"[]", 400, "INVALID_REQUEST_BODY");
    refused(
        br#"{"id": 5, "source_uri": "x", "sink_uri": "y"}"#,
        400,
        "INVALID_REQUEST_BODY",
    );
    let mut unknown = good.clone();
    unknown["surprise"] = json!(true);
    refused(unknown.to_string().as_bytes(), 400, "INVALID_REQUEST_BODY");
    let mut bad_id = good.clone();
    bad_id["id"] = json!("-bad id");
    refused(bad_id.to_string().as_bytes(), 400, "INVALID_CONFIG");
    let mut bad_sink = good.clone();
    bad_sink["sink_uri"] = json!(format!("kafka://u:{SECRET}@h:9092/t"));
    refused(bad_sink.to_string().as_bytes(), 400, "INVALID_CONFIG");
    let mut bad_rule = good.clone();
    bad_rule["tables"] = json!(["no_schema"]);
    refused(bad_rule.to_string().as_bytes(), 400, "INVALID_CONFIG");
    let mut wrong_password = good.clone();
    wrong_password["source_uri"] = json!(source.uri("shop").replace(SECRET, "wrong-Pa55"));
    refused(
        wrong_password.to_string().as_bytes(),
        400,
        "SOURCE_UNUSABLE",
    );
    refused(&vec![b' '; 2 << 20], 413, "REQUEST_BODY_TOO_LARGE");

    let (code, created) = ferry.post("/api/v2/changefeeds", &good);
    assert_eq!(code, 201, "{created}");
    refused(
        good.to_string().as_bytes(),
        409,
        "CHANGEFEED_ALREADY_EXISTS",
    );

    let (code, reply) = ferry.get("/api/v2/changefeeds/nope/status");
    assert_eq!(
        (code, reply["error_code"].clone()),
        (404, json!("CHANGEFEED_NOT_FOUND"))
    );
    let (code, reply) = ferry.get("/api/v2/nowhere");
    assert_eq!(
        (code, reply["error_code"].clone()),
        (404, json!("NOT_FOUND"))
    );

    // The changefeed still runs and replicates after all that.
    source.psql("shop", "INSERT INTO t VALUES (2, 'b')");
    ferry_testkit::wait_for("table t on the target", Duration::from_secs(60), || {
        target.psql(
            "analytics",
            "SELECT count(*) FROM pg_tables WHERE tablename = 't'",
        ) == "1"
    });
    ferry_testkit::wait_for("row 2 on the target", Duration::from_secs(60), || {
        target.psql("analytics", "SELECT count(*) FROM t WHERE id = 2") == "1"
    });
    let (code, view) = ferry.get("/api/v2/changefeeds/t1");
    assert_eq!(code, 200);
    assert!(
        view["config"]["source_uri"]
            .as_str()
            .unwrap()
            .contains("***"),
        "{view}"
    );
    let (_, list) = ferry.get("/api/v2/changefeeds");
    assert_eq!(list["total"], json!(1));
    for shown in [view.to_string(), list.to_string(), ferry.log()] {
        assert!(!shown.contains(SECRET), "password leaked: {shown}");
    }
}
