//! Compressed binlog events (`log_bin_compress=ON`): Ferry cannot read them yet, so the
//! check refuses such a server, and a stream that meets one stops naming it instead of
//! skipping it (the rows it carries would be missing on the target while `synced` said
//! true).

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_testkit::{FerryServer, MariaDb, PgCluster};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn compressed_binlog_events_are_refused_up_front_and_stop_a_running_changefeed() {
    let source = MariaDb::start_with(1, &["--log-bin-compress=ON"]);
    let target = PgCluster::start();
    target.create_database("analytics");
    source.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id int PRIMARY KEY, note text);
         INSERT INTO shop.t VALUES (1, 'one')",
    );
    let ferry = FerryServer::start(Path::new(env!("CARGO_BIN_EXE_ferry")));
    let body = json!({
        "id": "t",
        "source_uri": source.uri("shop"),
        "sink_uri": target.uri("analytics"),
        "tables": ["shop.t"],
    });

    let (code, refused) = ferry.post("/api/v2/changefeeds", &body);
    assert!(code >= 400, "{code} {refused}");
    assert!(
        refused.to_string().contains("set log_bin_compress=OFF"),
        "{refused}"
    );

    source.sql("SET GLOBAL log_bin_compress = OFF");
    let (code, created) = ferry.post("/api/v2/changefeeds", &body);
    assert_eq!(code, 201, "{created}\n{}", ferry.log());
    let synced = || ferry.get("/api/v2/changefeeds/t/synced").1["synced"] == json!(true);
    let deadline = Instant::now() + MINUTE;
    while !synced() {
        assert!(Instant::now() < deadline, "not synced\n{}", ferry.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Compression turned on under a running changefeed: the next rows arrive compressed.
    source.sql("SET GLOBAL log_bin_compress_min_len = 10; SET GLOBAL log_bin_compress = ON");
    source.sql("INSERT INTO shop.t VALUES (2, REPEAT('compressible ', 20))");
    let deadline = Instant::now() + MINUTE;
    let status = loop {
        let status = ferry.get("/api/v2/changefeeds/t/status").1;
        if status["state"] == json!("failed") {
            break status;
        }
        assert!(Instant::now() < deadline, "not failed: {status}");
        assert!(!synced(), "synced without the compressed row: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = status.to_string();
    assert!(text.contains("log_bin_compress"), "{text}");
    assert!(text.contains("create the changefeed again"), "{text}");
    assert_eq!(target.psql("analytics", "SELECT count(*) FROM shop.t"), "1");
}
