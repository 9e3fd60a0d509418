//! Stream sinks: a sealed batch becomes durable later (its acknowledgements), the next
//! batch fills meanwhile, and a checkpoint is saved and confirmed only once its batch and
//! every one before it landed (`MemDb::settle_after`). Database sinks: a batch's COMMIT is
//! answered later, and the next batch is sealed only once it was
//! (`MemDb::commit_settles_after`).

use std::time::Duration;

use ferry_core::{ErrorClass, TableId};
use ferry_engine::config::Options;
use ferry_testkit::mem::{MemDb, SinkFault, SinkStep};
use tokio::time::Instant;

use crate::harness::{insert_each, Harness, FEED};

fn options(batch_max_rows: usize) -> Options {
    Options {
        batch_max_rows,
        ..Options::default()
    }
}

/// A changefeed of one table on `db` (its sink set up by the caller), caught up.
async fn started(db: &MemDb, batch_max_rows: usize) -> (TableId, Harness) {
    let t = db.create_table("public", "t");
    let h = Harness::start(db);
    h.create(h.config(&[], options(batch_max_rows))).await;
    h.wait_caught_up().await;
    (t, h)
}

/// The batches that landed hold `rows` rows, each checkpoint covering the one before.
fn assert_landed_in_order(db: &MemDb, rows: usize) {
    let batches = db.batches(FEED);
    assert_eq!(batches.iter().map(|b| b.rows).sum::<usize>(), rows);
    assert!(
        batches
            .windows(2)
            .all(|w| w[1].checkpoint.covers(&w[0].checkpoint)),
        "batches landed out of order"
    );
}

#[tokio::test(start_paused = true)]
async fn the_next_batch_fills_while_one_settles() {
    let db = MemDb::new();
    db.settle_after(Duration::from_millis(50));
    let (t, h) = started(&db, 50).await;

    let started = Instant::now();
    insert_each(&db, &t, 0, 400);
    h.wait_caught_up().await;
    let took = started.elapsed();

    assert_landed_in_order(&db, 400);
    // One after another, 8 batches would take 8 × 50 ms; up to 4 settle at once.
    assert!(
        took < Duration::from_millis(8 * 50),
        "{} batches took {took:?}",
        db.batches(FEED).len()
    );
    assert_eq!(h.status().transactions_applied, 400);
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_batch_that_fails_to_settle_is_sent_again_with_every_batch_after_it() {
    let db = MemDb::new();
    db.settle_after(Duration::from_millis(20));
    let (t, h) = started(&db, 20).await;

    // The third batch is never acknowledged; the ones sealed after it land nothing either.
    db.fail_sink_after(
        SinkStep::CommitBatch,
        2,
        SinkFault::Fail(ErrorClass::Transient),
    );
    insert_each(&db, &t, 0, 200);
    h.wait("the settle to fail", |h| h.db.faults_fired() == 1)
        .await;
    h.wait_caught_up().await;
    assert!(h
        .status()
        .last_warning
        .is_some_and(|w| w.contains("injected")));
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_database_sink_seals_a_batch_only_once_the_one_before_is_durable() {
    let db = MemDb::new();
    db.commit_settles_after(Duration::from_millis(50));
    let (t, h) = started(&db, 50).await;

    insert_each(&db, &t, 0, 400);
    h.wait_caught_up().await;

    assert_landed_in_order(&db, 400);
    // A later batch's checkpoint, committed while an earlier COMMIT could still fail,
    // would skip that batch.
    assert_eq!(db.anomalies(), Vec::<String>::new());
    assert_eq!(h.status().transactions_applied, 400);
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_database_sink_batch_refused_at_its_commit_is_retried_one_transaction_per_batch() {
    let db = MemDb::new();
    db.commit_settles_after(Duration::from_millis(10));
    let (t, h) = started(&db, 1000).await;

    // The target refuses the COMMIT of the five transactions' batch, once: the error
    // names the batch, so the replay isolates its transactions.
    let before = db.batches(FEED).len();
    db.fail_sink_after(
        SinkStep::CommitBatch,
        0,
        SinkFault::Fail(ErrorClass::Definite),
    );
    for id in 0..5 {
        db.commit(|tx| tx.insert(&t, id, "x"));
    }
    h.wait("the commit to fail", |h| h.db.faults_fired() == 1)
        .await;
    h.wait_caught_up().await;

    let rows: Vec<usize> = db.batches(FEED)[before..].iter().map(|b| b.rows).collect();
    assert_eq!(rows, [1, 1, 1, 1, 1]);
    assert_eq!(h.status().last_error, None);
    assert_eq!(db.anomalies(), Vec::<String>::new());
    h.assert_identical(&[&t]);
}
