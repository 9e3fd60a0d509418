//! `options.ddl: stop`: a schema change on the source changes nothing on the target; the
//! changefeed stops with the statements that would make the target match, and resumes once
//! the operator has made it match.

mod common;

use std::time::Duration;

use common::Pair;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn ddl_stop_changes_nothing_and_resumes_once_the_target_matches() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t VALUES (1, 'a')",
    );
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "cf",
            "source_uri": pair.source.uri("shop"),
            "sink_uri": pair.target.uri("analytics"),
            "tables": ["public.*"],
            "options": {"ddl": "stop"},
        }),
    );
    assert_eq!(code, 201, "{body}");
    pair.wait_synced("cf", MINUTE);
    pair.source.psql(
        "shop",
        "ALTER TABLE t ADD COLUMN w int;
         INSERT INTO t VALUES (2, 'b', 7)",
    );
    let status = pair.wait_state("cf", "failed", MINUTE);
    let error = status["last_error"].to_string();
    eprintln!("scenario 7 (options.ddl stop): {error}");
    assert!(
        error.contains("options.ddl is stop") && error.contains("ADD COLUMN \\\"w\\\" integer"),
        "{error}"
    );
    assert_eq!(
        pair.target.psql("analytics", "SELECT count(*) FROM t"),
        "1",
        "nothing of the transaction was written"
    );
    // The operator makes the target match, then resumes.
    pair.target
        .psql("analytics", "ALTER TABLE t ADD COLUMN w integer");
    pair.act("cf", "resume");
    pair.wait_synced("cf", MINUTE);
    pair.compare(&["t"]).assert_identical();
    assert_eq!(pair.status("cf")["state"], "running");
}
