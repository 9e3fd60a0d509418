//! Transactions the source streams while still in progress (pgoutput protocol 2,
//! `streaming 'on'`): with `logical_decoding_work_mem` at its 64 kB minimum, every
//! transaction here outgrows it, so the walsender sends it in blocks before its commit.
//! What commits arrives exactly (savepoints rolled back are not applied, released ones
//! are), what aborts never arrives, a transaction committed meanwhile keeps its place, and
//! a Ferry server killed in the middle of a streamed transaction gets it whole after its
//! restart.

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
