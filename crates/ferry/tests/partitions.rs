//! `options.partitions: leaves`, against real PostgreSQL through the real server: every leaf
//! of a two-level partitioned table replicates into a target table of its own (none for
//! the partitioned tables), copied then streamed; an update moving a row between leaves
//! arrives as a delete from one and an insert into the other; partitions created or
//! attached while running are copied, then streamed, without a restart, with writes going
//! on throughout; every leaf ends identical, and the parent's serial sequence serves every
//! leaf on the target too. A bad value is refused, and so is changing the mode of an
//! existing changefeed.

mod common;

use std::time::{Duration, Instant};

use common::Pair;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

/// `events` by region, `events_eu` by date below it; a table the rules leave out.
const SOURCE: &str = "
CREATE TABLE events (id bigserial, region text NOT NULL, at date NOT NULL, v text,
                     PRIMARY KEY (id, region, at)) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu') PARTITION BY RANGE (at);
CREATE TABLE events_eu_2025 PARTITION OF events_eu
  FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_eu_2026 PARTITION OF events_eu
  FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
CREATE INDEX events_v ON events (v);
INSERT INTO events
SELECT i, CASE WHEN i % 3 = 0 THEN 'us' ELSE 'eu' END, date '2025-06-01' + (i % 400), 'v' || i
FROM generate_series(1, 900) i;
CREATE TABLE other (id int PRIMARY KEY);
";

/// Tables and partitioned tables of `public` on the target, `name:relkind`.
const TARGET_TABLES: &str =
    "SELECT string_agg(relname || ':' || relkind::text, ',' ORDER BY relname)
     FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')";

fn create(pair: &Pair, id: &str, tables: &[&str], options: Value) -> (u16, Value) {
    pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": id,
            "source_uri": pair.source.uri("shop"),
            "sink_uri": pair.target.uri("analytics"),
            "tables": tables,
            "options": options,
        }),
    )
}

#[test]
fn every_leaf_becomes_a_target_table_and_new_partitions_follow() {
    let pair = Pair::start();
    pair.source.psql("shop", SOURCE);
    let (code, body) = create(
        &pair,
        "leaves",
        &["public.events"],
        json!({"partitions": "leaves"}),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["config"]["options"]["partitions"], "leaves", "{body}");
    pair.wait_synced("leaves", MINUTE);
    assert_eq!(
        pair.target.psql("analytics", TARGET_TABLES),
        "events_eu_2025:r,events_eu_2026:r,events_us:r"
    );
    let leaves = ["events_eu_2025", "events_eu_2026", "events_us"];
    pair.compare(&leaves).assert_identical();

    // Streamed under each leaf's name; moving a row between leaves is a delete from one
    // and an insert into the other.
    pair.source.psql(
        "shop",
        "INSERT INTO events VALUES (5000, 'eu', '2026-02-01', 'new'), (5001, 'us', '2025-01-01', 'new');
         INSERT INTO events (region, at, v) VALUES ('us', '2025-02-01', 'from the sequence');
         UPDATE events SET v = 'changed' WHERE id BETWEEN 1 AND 20;
         DELETE FROM events WHERE id BETWEEN 21 AND 30;
         UPDATE events SET region = 'us' WHERE id = 31;
         UPDATE events SET at = at + 365 WHERE id = 32 AND at < '2025-12-01';",
    );
    pair.wait_synced("leaves", MINUTE);
    pair.compare(&leaves).assert_identical();
    assert_eq!(
        pair.target
            .psql("analytics", "SELECT count(*) FROM events_us WHERE id = 31"),
        "1"
    );

    // A partition created and one attached (holding rows) while running, written
    // throughout: each is noticed, copied, then streamed.
    pair.source.psql(
        "shop",
        "CREATE TABLE events_apac PARTITION OF events FOR VALUES IN ('apac');
         INSERT INTO events SELECT i, 'apac', '2025-03-01', 'before' FROM generate_series(10001, 10300) i;
         CREATE TABLE events_eu_2027 (LIKE events_eu_2026 INCLUDING ALL);
         INSERT INTO events_eu_2027 SELECT i, 'eu', '2027-05-01', 'attached' FROM generate_series(20001, 20200) i;
         ALTER TABLE events_eu ATTACH PARTITION events_eu_2027
           FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');",
    );
    let started = Instant::now();
    let mut id = 30_000;
    let mut picked_up = None;
    while started.elapsed() < MINUTE {
        id += 1;
        pair.source.psql(
            "shop",
            &format!(
                "INSERT INTO events VALUES ({id}, 'apac', '2025-04-01', 'during'),
                   ({id}, 'eu', '2027-06-01', 'during'), ({id}, 'us', '2025-07-01', 'during');
                 UPDATE events SET v = 'updated {id}' WHERE id = {} AND region = 'apac';
                 UPDATE events SET region = 'apac' WHERE id = {} AND region = 'us';",
                10_000 + id % 300 + 1,
                id - 5
            ),
        );
        let there = pair.target.psql(
            "analytics",
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('events_apac', 'events_eu_2027')",
        );
        if there == "2" && picked_up.is_none() {
            picked_up = Some((started.elapsed(), id));
        }
        if let Some((_, at)) = picked_up {
            if id >= at + 20 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (after, _) = picked_up.expect("the new partitions were never picked up");
    pair.wait_synced("leaves", MINUTE);
    let all = [
        "events_apac",
        "events_eu_2025",
        "events_eu_2026",
        "events_eu_2027",
        "events_us",
    ];
    let report = pair.compare(&all);
    eprintln!(
        "new partitions picked up {:.1} s after their creation, {} writes during\n{report}",
        after.as_secs_f64(),
        id - 30_000
    );
    report.assert_identical();
    assert_eq!(
        pair.target.psql("analytics", TARGET_TABLES),
        "events_apac:r,events_eu_2025:r,events_eu_2026:r,events_eu_2027:r,events_us:r"
    );
    let status = pair.status("leaves");
    assert_eq!(status["state"], "running", "{status}");
    let log = pair.ferry.log();
    assert!(!log.contains("target refused an object"), "{log}");
    // The leaves share the parent's serial sequence, on the target too: after a sync, an
    // insert there takes the next value.
    let (code, body) = pair
        .ferry
        .post("/api/v2/changefeeds/leaves/sequences/sync", &json!({}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        pair.target.psql(
            "analytics",
            "WITH i AS (INSERT INTO events_apac (region, at) VALUES ('apac', '2025-01-01')
                        RETURNING id)
             SELECT id FROM i"
        ),
        "2",
        "{body}"
    );
    // Published leaf by leaf, not through the root.
    assert_eq!(
        pair.source.psql(
            "shop",
            "SELECT string_agg(DISTINCT pubviaroot::text, ',') FROM pg_publication
             WHERE pubname LIKE 'ferry%'"
        ),
        "false"
    );
}

#[test]
fn a_bad_mode_is_refused_and_the_mode_cannot_change() {
    let pair = Pair::start();
    pair.source.psql("shop", SOURCE);
    let (code, body) = create(&pair, "bad", &["public.*"], json!({"partitions": "middle"}));
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error_code"], "INVALID_REQUEST_BODY", "{body}");
    assert!(
        body["error_msg"].as_str().unwrap_or("").contains("leaves"),
        "{body}"
    );

    // A leaf named on its own is selected in leaf mode; the root mode stays unchanged.
    let (code, body) = create(
        &pair,
        "one",
        &["public.events_us"],
        json!({"partitions": "leaves"}),
    );
    assert_eq!(code, 201, "{body}");
    pair.wait_synced("one", MINUTE);
    assert_eq!(pair.target.psql("analytics", TARGET_TABLES), "events_us:r");
    pair.compare(&["events_us"]).assert_identical();
    pair.act("one", "pause");
    let patch = json!({"options": {"partitions": "root"}}).to_string();
    let (code, body) = pair
        .ferry
        .request("PUT", "/api/v2/changefeeds/one", Some(patch.as_bytes()));
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error_code"], "INVALID_CONFIG", "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or("")
            .contains("options.partitions"),
        "{body}"
    );
}
