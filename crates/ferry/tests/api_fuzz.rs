//! Fuzzes the API from its own OpenAPI document (`scripts/api-fuzz`, schemathesis): no
//! response may be a 5xx or break the document, and requests the document calls invalid get
//! a 4xx. Runs when `python3` (with `venv`) is available; the script installs schemathesis
//! into a venv under `target/` once. A server with a real source, a named source and two
//! changefeeds gives the fuzzer something to hit.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Pair;
use serde_json::json;

#[test]
fn openapi_fuzz_finds_no_server_errors_and_no_spec_violations() {
    // The script needs python3 with its venv module (Debian: python3-venv).
    let python = Command::new("python3")
        .args(["-m", "venv", "--help"])
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        eprintln!("api_fuzz: python3 with venv not found; skipped");
        return;
    }
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    let ferry = &pair.ferry;
    let uri = pair.source.uri("shop");
    let created = [
        ferry.post("/api/v2/sources", &json!({"name": "fuzz", "uri": uri})),
        ferry.post(
            "/api/v2/changefeeds",
            &json!({"id": "fuzz", "source": "fuzz", "sink_uri": "blackhole://"}),
        ),
        ferry.post(
            "/api/v2/changefeeds",
            &json!({"id": "fuzz-stopped", "start": false, "source_uri": uri, "sink_uri": "blackhole://"}),
        ),
    ];
    for (code, body) in created {
        assert_eq!(code, 201, "{body}");
    }
    pair.wait_synced("fuzz", Duration::from_secs(60));

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(root.join("scripts/api-fuzz"))
        .arg(ferry.url())
        .env("FERRY_FUZZ_VENV", root.join("target/api-fuzz-venv"))
        .output()
        .expect("run scripts/api-fuzz");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "api fuzz failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{}",
        output.status,
        ferry.log()
    );
    assert!(
        !ferry.log().contains("request failed"),
        "the server logged a 5xx:\n{}",
        ferry.log()
    );
}
