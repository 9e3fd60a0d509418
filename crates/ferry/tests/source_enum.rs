//! Enum labels added on the source while replicating (`ALTER TYPE … ADD VALUE`, which the
//! replication stream does not announce) follow on the target in the source's order, while
//! running and while paused, for a table already streaming and for one added later, also
//! when a new label first appears inside an enum array; and
//! `SET NOT NULL` / `DROP NOT NULL` on a column Ferry created follow too.

mod common;

use std::time::Duration;

use common::Pair;

const MINUTE: Duration = Duration::from_secs(60);

fn labels(cluster: &ferry_testkit::PgCluster, db: &str) -> String {
    cluster.psql(
        db,
        "SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum
         WHERE enumtypid = 'public.mood'::regtype",
    )
}

#[test]
fn enum_labels_and_not_null_follow_the_source() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TYPE mood AS ENUM ('ok', 'happy');
         CREATE TABLE feelings (id int PRIMARY KEY, m mood, n text);
         INSERT INTO feelings VALUES (1, 'ok', 'a'), (2, 'happy', 'b');
         CREATE TABLE moodlists (id int PRIMARY KEY, ms mood[]);
         INSERT INTO moodlists VALUES (1, '{ok,happy}')",
    );
    pair.create("cf", &["public.*"]);
    pair.wait_synced("cf", MINUTE);

    // Running: labels added after, before and between, then used in one transaction.
    pair.source.psql(
        "shop",
        "ALTER TYPE mood ADD VALUE 'ecstatic';
         ALTER TYPE mood ADD VALUE 'sad' BEFORE 'ok';
         ALTER TYPE mood ADD VALUE 'meh' AFTER 'ok'",
    );
    pair.source.psql(
        "shop",
        "INSERT INTO feelings VALUES (3, 'ecstatic', 'c'), (4, 'sad', 'd');
         UPDATE feelings SET m = 'meh' WHERE id = 1",
    );
    pair.wait_synced("cf", MINUTE);
    assert_eq!(
        labels(&pair.target, "analytics"),
        "sad,ok,meh,happy,ecstatic"
    );
    pair.compare(&["feelings"]).assert_identical();
    // A label added and used only inside an enum array.
    pair.source
        .psql("shop", "ALTER TYPE mood ADD VALUE 'wistful'");
    pair.source.psql(
        "shop",
        "INSERT INTO moodlists VALUES (2, '{wistful,NULL,ok}')",
    );
    pair.wait_synced("cf", MINUTE);
    pair.compare(&["moodlists"]).assert_identical();
    // Seen in the stream and followed, not learnt from the target's refusal.
    common::assert_no_refused_batch_in(&pair.ferry);

    // Paused: a new label and a new table using it; NOT NULL set on a column.
    pair.act("cf", "pause");
    pair.wait_state("cf", "paused", MINUTE);
    pair.source
        .psql("shop", "ALTER TYPE mood ADD VALUE 'calm' AFTER 'meh'");
    pair.source.psql(
        "shop",
        "CREATE TABLE moods_later (id int PRIMARY KEY, m mood NOT NULL);
         INSERT INTO moods_later VALUES (1, 'calm');
         ALTER TABLE feelings ALTER COLUMN n SET NOT NULL;
         INSERT INTO feelings VALUES (5, 'calm', 'e')",
    );
    pair.act("cf", "resume");
    pair.wait_synced("cf", MINUTE);
    assert_eq!(
        labels(&pair.target, "analytics"),
        labels(&pair.source, "shop")
    );
    pair.compare(&["feelings", "moods_later", "moodlists"])
        .assert_identical();
    let not_null = |db: &ferry_testkit::PgCluster, name: &str| {
        db.psql(
            name,
            "SELECT attnotnull FROM pg_attribute
             WHERE attrelid = 'public.feelings'::regclass AND attname = 'n'",
        )
    };
    assert_eq!(not_null(&pair.target, "analytics"), "t");

    // And back.
    pair.source.psql(
        "shop",
        "ALTER TABLE feelings ALTER COLUMN n DROP NOT NULL;
         INSERT INTO feelings VALUES (6, 'ok', NULL)",
    );
    pair.wait_synced("cf", MINUTE);
    assert_eq!(not_null(&pair.target, "analytics"), "f");
    pair.compare(&["feelings"]).assert_identical();
    let status = pair.status("cf");
    assert_eq!(status["state"], "running", "{status}");
    let report = pair.compare(&["feelings", "moods_later"]);
    eprintln!(
        "scenario 7: enum labels added after, before, between (running) and while paused; \
         SET/DROP NOT NULL\n{report}"
    );
    report.assert_identical();
}
