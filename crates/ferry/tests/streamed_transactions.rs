//! Transactions the source streams while still in progress (pgoutput protocol 2,
//! `streaming 'on'`): with `logical_decoding_work_mem` at its 64 kB minimum, every
//! transaction here outgrows it, so the walsender sends it in blocks before its commit.
//! What commits arrives exactly (savepoints rolled back are not applied, released ones
//! are), what aborts never arrives, a transaction committed meanwhile keeps its place, and
//! a Ferry server killed in the middle of a streamed transaction gets it whole after its
//! restart. Into PostgreSQL, a streamed transaction is applied ahead of its commit on a
//! second target session when it can be, and comes whole at its commit when it cannot.

mod common;

use std::time::Duration;

use common::Pair;
use ferry_testkit::{PgCluster, PgOptions};

const MINUTE: Duration = Duration::from_secs(60);

fn streamed_source() -> PgOptions {
    PgOptions {
        extra_conf: vec![("logical_decoding_work_mem".into(), "64kB".into())],
        ..PgOptions::default()
    }
}

/// Transactions the changefeed's slot received streamed, as the source counts them.
fn stream_txns(pair: &Pair) -> i64 {
    pair.source
        .psql(
            "shop",
            "SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots \
             WHERE slot_name NOT LIKE '%tmp'",
        )
        .parse()
        .unwrap()
}

/// Runs `sql` (one transaction) in another session and, `after` into it, `during`; returns
/// once both are done.
fn while_open(source: &PgCluster, sql: &str, after: Duration, during: impl FnOnce()) {
    std::thread::scope(|s| {
        let open = s.spawn(|| source.psql("shop", sql));
        std::thread::sleep(after);
        during();
        open.join().unwrap();
    });
}

/// Transactions the changefeed applied ahead of their commit, as its metrics count them.
fn applied_ahead(pair: &Pair) -> u64 {
    let (code, metrics) = pair.ferry.get("/metrics");
    assert_eq!(code, 200);
    metrics
        .as_str()
        .expect("text")
        .lines()
        .find(|l| l.starts_with("ferry_transactions_applied_ahead_total{") && l.contains("\"cf\""))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn streamed_transactions_apply_ahead_of_their_commit() {
    let mut pair = Pair::start_with(streamed_source(), PgOptions::default());
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int);
         CREATE TABLE log (at int, what text);
         CREATE TABLE small (id int PRIMARY KEY, at text);
         INSERT INTO t SELECT g, 'snapshot', g FROM generate_series(1, 10) g",
    );
    pair.create("cf", &[]);
    pair.wait_synced("cf", MINUTE);

    // While the big transaction is open, another session changes a row it changes later,
    // inserts into its table and into another one: both commit first, and the big
    // transaction's later update must build on the first.
    while_open(
        &pair.source,
        "BEGIN;
         INSERT INTO t SELECT g, repeat(md5(g::text), 3), g FROM generate_series(11, 3000) g;
         INSERT INTO log SELECT g, 'keyless' FROM generate_series(1, 500) g;
         SELECT pg_sleep(2);
         UPDATE t SET n = n + 1000 WHERE id <= 10;
         DELETE FROM t WHERE id BETWEEN 100 AND 199;
         UPDATE t SET v = 'updated' WHERE id BETWEEN 200 AND 2999;
         COMMIT",
        Duration::from_millis(1000),
        || {
            pair.source.psql(
                "shop",
                "UPDATE t SET v = 'meanwhile', n = -5 WHERE id = 5;
                 INSERT INTO t VALUES (100001, 'meanwhile', 1);
                 INSERT INTO small VALUES (1, 'committed while the big one was open')",
            );
        },
    );
    pair.wait_synced("cf", MINUTE);
    pair.compare(&["t", "log", "small"]).assert_identical();
    assert_eq!(
        pair.target
            .psql("analytics", "SELECT v, n FROM t WHERE id = 5"),
        "meanwhile|995"
    );
    assert_eq!(
        applied_ahead(&pair),
        1,
        "the big transaction went ahead: {}",
        std::fs::read_to_string(pair.ferry.log_path()).unwrap_or_default()
    );

    // Rolled back: what went ahead is dropped, nothing arrives. Changing its own table's
    // shape: not applied ahead, but whole at its commit.
    pair.source.psql(
        "shop",
        "BEGIN;
         INSERT INTO t SELECT g, repeat(md5(g::text), 3), g FROM generate_series(10001, 13000) g;
         ROLLBACK;
         BEGIN;
         INSERT INTO t SELECT g, repeat(md5(g::text), 3), g FROM generate_series(20001, 23000) g;
         ALTER TABLE t ADD COLUMN extra int;
         INSERT INTO t SELECT g, 'after the change', g, g FROM generate_series(30001, 33000) g;
         COMMIT",
    );
    pair.wait_synced("cf", MINUTE);
    pair.compare(&["t", "log", "small"]).assert_identical();
    assert_eq!(applied_ahead(&pair), 1);

    // Another big one on the new shape goes ahead again.
    pair.source.psql(
        "shop",
        "INSERT INTO t SELECT g, repeat(md5(g::text), 3), g, -g FROM generate_series(40001, 44000) g",
    );
    pair.wait_synced("cf", MINUTE);
    pair.compare(&["t", "log", "small"]).assert_identical();
    assert_eq!(applied_ahead(&pair), 2);

    // One that makes a column NOT NULL, which no Relation message shows: whole at its
    // commit, and the target follows.
    pair.source.psql(
        "shop",
        "BEGIN;
         INSERT INTO t SELECT g, repeat(md5(g::text), 3), g, g FROM generate_series(50001, 53000) g;
         ALTER TABLE t ALTER COLUMN n SET NOT NULL;
         INSERT INTO t SELECT g, repeat(md5(g::text), 3), g, g FROM generate_series(53001, 56000) g;
         COMMIT",
    );
    pair.wait_synced("cf", MINUTE);
    pair.compare(&["t", "log", "small"]).assert_identical();
    assert_eq!(applied_ahead(&pair), 2);
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'n'"
        ),
        "t"
    );

    // After a restart the target table's definition (a secondary index) is completed by
    // the main session while a big transaction goes ahead: neither waits for the other.
    pair.source.psql("shop", "CREATE INDEX t_n ON t (n)");
    pair.source.psql(
        "shop",
        "INSERT INTO small VALUES (2, 'announces the index')",
    );
    pair.wait_synced("cf", MINUTE);
    pair.ferry.stop();
    pair.ferry.restart();
    while_open(
        &pair.source,
        "BEGIN;
         INSERT INTO t SELECT g, repeat(md5(g::text), 3), g, g FROM generate_series(60001, 64000) g;
         SELECT pg_sleep(2);
         INSERT INTO t SELECT g, repeat(md5(g::text), 3), g, g FROM generate_series(64001, 65000) g;
         COMMIT",
        Duration::from_millis(1000),
        || {
            pair.source
                .psql("shop", "INSERT INTO t VALUES (100002, 'meanwhile', 2, 2)");
        },
    );
    pair.wait_synced("cf", Duration::from_secs(30));
    pair.compare(&["t", "log", "small"]).assert_identical();
    assert_eq!(
        applied_ahead(&pair),
        1,
        "counted since the restart (the counters of a changefeed resumed at start record too)"
    );
}

#[test]
fn streamed_transactions_arrive_exactly() {
    let mut pair = Pair::start_with(streamed_source(), PgOptions::default());
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int);
         CREATE TABLE small (id int PRIMARY KEY, at text);
         INSERT INTO t SELECT g, 'snapshot', 0 FROM generate_series(1, 10) g",
    );
    pair.create("cf", &[]);
    pair.wait_synced("cf", MINUTE);

    // Savepoints: one rolled back (with one nested in it), one released. Meanwhile, another
    // session commits a small transaction, which must not wait for the big one nor be lost.
    while_open(
        &pair.source,
        "BEGIN;
         INSERT INTO t SELECT g, repeat(md5(g::text), 3), g FROM generate_series(11, 3000) g;
         SELECT pg_sleep(2);
         SAVEPOINT a;
         INSERT INTO t SELECT g, 'rolled back', g FROM generate_series(3001, 4000) g;
         UPDATE t SET v = 'rolled back' WHERE id <= 500;
         SAVEPOINT b;
         DELETE FROM t WHERE id BETWEEN 600 AND 900;
         ROLLBACK TO SAVEPOINT a;
         SAVEPOINT c;
         INSERT INTO t SELECT g, repeat('kept', 40), g FROM generate_series(5001, 6000) g;
         RELEASE SAVEPOINT c;
         UPDATE t SET v = 'final', n = -n WHERE id BETWEEN 100 AND 200;
         DELETE FROM t WHERE id BETWEEN 1000 AND 1099;
         COMMIT",
        Duration::from_millis(1000),
        || {
            pair.source.psql(
                "shop",
                "INSERT INTO small VALUES (1, 'committed while the big one was open')",
            );
        },
    );
    pair.wait_synced("cf", MINUTE);
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT count(*), count(*) FILTER (WHERE v = 'rolled back'), \
             count(*) FILTER (WHERE v = 'final') FROM t"
        ),
        "3900|0|101"
    );
    pair.compare(&["t", "small"]).assert_identical();

    // Aborted whole: nothing of it arrives.
    pair.source.psql(
        "shop",
        "BEGIN;
         INSERT INTO t SELECT g, repeat(md5(g::text), 3), g FROM generate_series(10001, 13000) g;
         DELETE FROM t WHERE id <= 50;
         ROLLBACK;
         INSERT INTO small VALUES (2, 'after the abort')",
    );
    pair.wait_synced("cf", MINUTE);
    pair.compare(&["t", "small"]).assert_identical();
    let streamed = stream_txns(&pair);
    assert!(streamed >= 2, "the source streamed {streamed} transactions");

    // The server dies while a streamed transaction is open; the transaction commits while
    // it is down. The new session gets it whole, from its start.
    while_open(
        &pair.source,
        "BEGIN;
         INSERT INTO t SELECT g, repeat(md5(g::text), 3), g FROM generate_series(20001, 24000) g;
         SELECT pg_sleep(3);
         UPDATE t SET n = n + 1 WHERE id > 20000;
         COMMIT",
        Duration::from_millis(1500),
        || pair.ferry.kill9(),
    );
    pair.ferry.restart();
    pair.wait_synced("cf", MINUTE);
    pair.compare(&["t", "small"]).assert_identical();
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT count(*) FROM t WHERE id > 20000 AND n = id + 1"
        ),
        "4000"
    );
}
