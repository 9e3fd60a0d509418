//! A keyless table streamed insert-only (REPLICA IDENTITY DEFAULT) whose updates were lost
//! before REPLICA IDENTITY FULL was set is marked divergent, with a warning that says what
//! fixes it.

mod common;

use std::time::Duration;

use common::Pair;
use ferry_testkit::wait_for;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn keyless_table_switched_to_replica_identity_full_is_marked_divergent() {
    let mut pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE k (v int, note text);
         INSERT INTO k SELECT g, 'old' FROM generate_series(1, 10) g;
         CREATE TABLE ok (id int PRIMARY KEY)",
    );
    pair.create("cf", &["public.k", "public.ok"]);
    pair.wait_synced("cf", MINUTE);
    let status = pair.status("cf");
    assert_eq!(status["divergent_tables"], json!([]), "{status}");
    assert!(
        status["warnings"]
            .to_string()
            .contains("replicate inserts and truncates only"),
        "{status}"
    );

    // Lost while insert-only: the update never reaches the target.
    pair.source.psql(
        "shop",
        "UPDATE k SET note = 'new' WHERE v <= 3; INSERT INTO k VALUES (11, 'x')",
    );
    pair.wait_synced("cf", MINUTE);
    pair.source
        .psql("shop", "ALTER TABLE k REPLICA IDENTITY FULL");
    pair.act("cf", "pause");
    pair.wait_state("cf", "paused", MINUTE);
    pair.act("cf", "resume");
    // Marked when the resumed attempt syncs the publications (`synced` may answer before).
    wait_for("public.k marked divergent", MINUTE, || {
        pair.status("cf")["divergent_tables"] == json!(["public.k"])
    });
    pair.wait_synced("cf", MINUTE);
    let status = pair.status("cf");
    let warnings = status["warnings"].to_string();
    for expected in [
        "tables marked divergent: public.k",
        "Setting REPLICA IDENTITY FULL does not repair that",
        "re-copy the tables",
        "existing_target truncate",
    ] {
        assert!(
            warnings.contains(expected),
            "{expected:?} not in {warnings}"
        );
    }
    assert_eq!(
        pair.target
            .psql("analytics", "SELECT count(*) FROM k WHERE note = 'new'"),
        "0"
    );

    // The mark is kept across restarts of the server (the status is rebuilt from the store).
    pair.ferry.stop();
    pair.ferry.restart();
    pair.wait_state("cf", "running", MINUTE);
    wait_for("public.k still marked divergent", MINUTE, || {
        let status = pair.status("cf");
        status["divergent_tables"] == json!(["public.k"])
            && status["warnings"]
                .to_string()
                .contains("tables marked divergent")
    });
}
