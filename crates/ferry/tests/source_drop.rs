//! DROP TABLE on the source while the table's changes are still unread: in the same
//! transaction as its last INSERT, and while the changefeed is paused. The changes read
//! before the drop are applied (the table's shape comes from the stream, since the catalog
//! no longer has it), the target table is kept, the status warns, and the changefeed keeps
//! streaming the other tables: no loop on "read table <oid>", no re-copy.

mod common;

use std::time::Duration;

use common::Pair;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn dropped_tables_keep_their_changes_and_the_stream_goes_on() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE kept (id int PRIMARY KEY, v text);
         CREATE TABLE gone_now (id int PRIMARY KEY, v text, n numeric(10,2));
         CREATE TABLE gone_later (a int, b int, v text, PRIMARY KEY (a, b));
         INSERT INTO gone_now VALUES (1, 'snapshot', 1.5);
         INSERT INTO gone_later VALUES (1, 1, 'snapshot')",
    );
    pair.create("cf", &["public.*"]);
    pair.wait_synced("cf", MINUTE);

    // In one transaction: the rows and the drop.
    pair.source.psql(
        "shop",
        "BEGIN;
         INSERT INTO gone_now SELECT g, 'last words', g / 4.0 FROM generate_series(2, 50) g;
         UPDATE gone_now SET v = 'updated' WHERE id = 1;
         DROP TABLE gone_now;
         COMMIT;
         INSERT INTO kept VALUES (1, 'after the first drop')",
    );
    pair.wait_synced("cf", MINUTE);
    // No warning is asserted here: the walsender may send the transaction a moment before
    // its DROP is visible to other sessions, and the catalog then still describes the table.
    let status = pair.status("cf");
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(
        pair.target
            .psql("analytics", "SELECT count(*), sum(n), min(v) FROM gone_now"),
        "50|320.00|last words"
    );

    // Paused: changes, then the drop, then more changes elsewhere; resumed.
    pair.act("cf", "pause");
    pair.wait_state("cf", "paused", MINUTE);
    pair.source.psql(
        "shop",
        "INSERT INTO gone_later SELECT g, g, 'while paused' FROM generate_series(2, 20) g;
         DELETE FROM gone_later WHERE a = 1;
         DROP TABLE gone_later;
         INSERT INTO kept VALUES (2, 'after the second drop')",
    );
    pair.act("cf", "resume");
    pair.wait_synced("cf", MINUTE);
    let status = pair.status("cf");
    assert_eq!(status["state"], "running", "{status}");
    let warnings = status["warnings"].to_string();
    for expected in [
        "table public.gone_later was dropped on the source",
        "tables no longer replicated (dropped on the source, or excluded by the rules): \
         public.gone_later",
    ] {
        assert!(
            warnings.contains(expected),
            "{expected:?} not in {warnings}\n{}",
            pair.ferry.log()
        );
    }
    assert_eq!(
        pair.target
            .psql("analytics", "SELECT count(*), min(a) FROM gone_later"),
        "19|2"
    );
    let report = pair.compare(&["kept"]);
    eprintln!(
        "scenario 7: 49 inserts + 1 update then DROP in one transaction: 50 rows kept on the \
         target; 19 inserts + 1 delete then DROP while paused: 19 rows kept; other table\n{report}"
    );
    report.assert_identical();
    let log = pair.ferry.log();
    assert!(!log.contains("unexpected number of rows"), "{log}");
    assert_eq!(
        log.matches("snapshot done").count(),
        1,
        "tables were copied again:\n{log}"
    );
}

/// A table dropped and created again under its name is another table (another OID): its
/// target table, which holds the old table's rows, is copied again, whether the changefeed
/// was streaming or paused at the time, and the status says so.
#[test]
fn a_table_created_again_is_copied_anew() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE kept (id int PRIMARY KEY, v text);
         CREATE TABLE again (id int PRIMARY KEY, v text);
         INSERT INTO again SELECT g, 'old' FROM generate_series(1, 10) g",
    );
    pair.create("cf", &["public.*"]);
    pair.wait_synced("cf", MINUTE);
    let target_rows = || {
        pair.target.psql(
            "analytics",
            "SELECT string_agg(id || v, ',' ORDER BY id) FROM again",
        )
    };

    // Streaming: found by the check for new tables, then copied.
    pair.source.psql(
        "shop",
        "DROP TABLE again;
         CREATE TABLE again (id int PRIMARY KEY, v text);
         INSERT INTO again VALUES (20, 'new')",
    );
    let deadline = std::time::Instant::now() + MINUTE;
    while target_rows() != "20new" {
        assert!(
            std::time::Instant::now() < deadline,
            "{}\n{}",
            target_rows(),
            pair.ferry.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    pair.source
        .psql("shop", "INSERT INTO again VALUES (21, 'after')");
    pair.wait_synced("cf", MINUTE);
    assert_eq!(target_rows(), "20new,21after");

    // Paused: the same, found at resume.
    pair.act("cf", "pause");
    pair.wait_state("cf", "paused", MINUTE);
    pair.source.psql(
        "shop",
        "INSERT INTO again VALUES (22, 'lost with the table');
         DROP TABLE again;
         CREATE TABLE again (id int PRIMARY KEY, v text);
         INSERT INTO again VALUES (30, 'newer');
         INSERT INTO kept VALUES (1, 'x')",
    );
    pair.act("cf", "resume");
    pair.wait_synced("cf", MINUTE);
    assert_eq!(target_rows(), "30newer", "{}", pair.ferry.log());
    let status = pair.status("cf");
    assert!(
        status["warnings"]
            .to_string()
            .contains("table public.again was dropped and created again on the source"),
        "{status}"
    );
    pair.compare(&["kept", "again"]).assert_identical();
}
