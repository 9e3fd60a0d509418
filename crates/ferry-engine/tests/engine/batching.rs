//! Batching: a backlog of small transactions commits in batches of `batch_max_rows`, a
//! backlog arriving as a trickle shares target commits, a live transaction commits at once
//! when nothing more is queued, live transactions under load commit in groups, and a
//! transaction is never split.

use std::time::Duration;

use ferry_engine::config::Options;
use ferry_testkit::mem::{MemDb, SinkFault, SinkStep};

use crate::harness::{Harness, FEED};

fn options(batch_max_rows: usize) -> Options {
    Options {
        batch_max_rows,
        ..Options::default()
    }
}

/// A changefeed on one table `t`, caught up, its source giving commit times of now.
async fn live_feed() -> (MemDb, ferry_core::TableId, Harness) {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;
    db.live_commit_times();
    (db, t, h)
}

#[tokio::test(start_paused = true)]
async fn a_backlog_commits_in_batches_of_max_rows() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], options(50))).await;
    h.wait_caught_up().await;

    // 200 transactions at once: the engine finds them queued.
    let ends: Vec<_> = (0..200)
        .map(|id| db.commit(|tx| tx.insert(&t, id, "x")).end)
        .collect();
    h.wait_caught_up().await;

    let batches = db.batches(FEED);
    let rows: Vec<usize> = batches.iter().map(|b| b.rows).collect();
    assert_eq!(rows, [50, 50, 50, 50]);
    let checkpoints: Vec<_> = batches.iter().map(|b| b.checkpoint.clone()).collect();
    assert_eq!(
        checkpoints,
        [49, 99, 149, 199].map(|i| ends[i].clone()).to_vec()
    );
    assert_eq!(h.status().transactions_applied, 200);
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_trickling_backlog_shares_target_commits() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;

    // One transaction every millisecond, as a live workload commits.
    for id in 0..100 {
        db.commit(|tx| tx.insert(&t, id, "x"));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    h.wait_caught_up().await;

    let batches = db.batches(FEED);
    assert_eq!(batches.iter().map(|b| b.rows).sum::<usize>(), 100);
    assert!(
        (2..=20).contains(&batches.len()),
        "100 transactions in {} batches",
        batches.len()
    );
    h.assert_identical(&[&t]);
}

/// Live (commit times of now): a transaction on a quiet stream reaches the target without
/// waiting for a commit timer; transactions arriving together share a commit, so under a
/// steady stream the target commits far less often than the source does (the count of
/// commits is bounded loosely: the paused clock's timers are coarse).
#[tokio::test(start_paused = true)]
async fn live_transactions_commit_at_once_when_quiet_and_grouped_under_load() {
    let (db, t, h) = live_feed().await;

    for id in 0..5 {
        let before = db.batches(FEED).len();
        let start = tokio::time::Instant::now();
        db.commit(|tx| tx.insert(&t, id, "x"));
        while db.batches(FEED).len() == before {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(2),
            "a quiet stream's transaction waited {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Five transactions every millisecond (the timer's resolution) for 100 ms.
    let before = db.batches(FEED).len();
    for ms in 0..100 {
        for n in 0..5 {
            db.commit(|tx| tx.insert(&t, 100 + ms * 5 + n, "x"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    h.wait_caught_up().await;
    let batches = db.batches(FEED).len() - before;
    // Under the paused clock the source hands each millisecond's first transaction over
    // alone (committed at once, nothing queued behind it) and the other four together.
    assert!(
        (25..=250).contains(&batches),
        "500 transactions in 100 ms took {batches} target commits"
    );
    h.assert_identical(&[&t]);
}

/// Live, one after another: each transaction arriving once the commit before it was
/// answered, with nothing else queued, commits at once instead of waiting out the 1 ms that
/// spaces commits under load.
#[tokio::test(start_paused = true)]
async fn a_live_transaction_right_after_a_commit_does_not_wait_for_the_spacing() {
    let (db, t, h) = live_feed().await;

    // Yielding never lets the paused clock move: a transaction that needed a timer to
    // commit would not reach the target in this loop.
    for id in 0..20 {
        let before = db.batches(FEED).len();
        db.commit(|tx| tx.insert(&t, id, "x"));
        let mut yields = 0;
        while db.batches(FEED).len() == before {
            yields += 1;
            assert!(
                yields < 10_000,
                "transaction {id}, right after a commit, waited for a timer"
            );
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(h.status().transactions_applied, 20);
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_transaction_is_never_split() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], options(50))).await;
    h.wait_caught_up().await;

    // Three transactions of 30 rows: the second one's commit takes the batch past 50.
    let ends: Vec<_> = (0..3)
        .map(|n| {
            db.commit(|tx| {
                for id in n * 30..(n + 1) * 30 {
                    tx.insert(&t, id, "x");
                }
            })
            .end
        })
        .collect();
    h.wait_caught_up().await;

    let batches = db.batches(FEED);
    let got: Vec<_> = batches
        .iter()
        .map(|b| (b.rows, b.checkpoint.clone()))
        .collect();
    assert_eq!(got, [(60, ends[1].clone()), (30, ends[2].clone())]);
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_batch_is_retried_one_transaction_per_batch() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;

    // The target refuses the third change of a five-transaction batch, once.
    db.fail_sink_after(
        SinkStep::Apply,
        2,
        SinkFault::Fail(ferry_core::ErrorClass::Definite),
    );
    for id in 0..5 {
        db.commit(|tx| tx.insert(&t, id, "x"));
    }
    h.wait_caught_up().await;

    // Up to the refused one, one transaction per batch; then batches again.
    let rows: Vec<usize> = db.batches(FEED).iter().map(|b| b.rows).collect();
    assert_eq!(rows, [1, 1, 1, 2]);
    assert_eq!(h.status().last_error, None);
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_transaction_larger_than_the_event_queue_is_one_batch() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], options(100))).await;
    h.wait_caught_up().await;

    db.commit(|tx| {
        for id in 0..5000 {
            tx.insert(&t, id, "x");
        }
    });
    h.wait_caught_up().await;
    let rows: Vec<usize> = db.batches(FEED).iter().map(|b| b.rows).collect();
    assert_eq!(rows, [5000]);
    h.assert_identical(&[&t]);
}
