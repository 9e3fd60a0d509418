//! The checkpoint rule: a batch is durable in the target, *then* its position is confirmed
//! to the source, and confirmed positions never move backwards. The in-memory source
//! checks every confirmation against the target's checkpoint (`checkpoint_violations`).

use std::time::Duration;

use ferry_core::ErrorClass;
use ferry_engine::config::Options;
use ferry_engine::FeedState;
use ferry_testkit::mem::{MemDb, SinkFault, SinkStep};

use crate::harness::{insert_each, Harness, FEED};

#[tokio::test(start_paused = true)]
async fn nothing_is_confirmed_while_its_batch_is_not_durable() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;
    insert_each(&db, &t, 0, 5);
    h.wait_caught_up().await;
    let before = db.confirmed(FEED).last().cloned().unwrap();

    db.fail_sink(SinkStep::CommitBatch, SinkFault::Hang);
    let hung = db.commit(|tx| tx.update(&t, 1, "changed"));
    h.wait("the commit to hang", |h| h.db.faults_fired() == 1)
        .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Neither the source nor the status is told of the hanging batch.
    let confirmed = db.confirmed(FEED);
    assert!(
        confirmed.iter().all(|p| !p.covers(&hung.commit)),
        "{confirmed:?}"
    );
    assert_eq!(db.confirmed(FEED).last(), Some(&before));
    assert!(!h.checkpoint().unwrap().covers(&hung.end));
    assert_eq!(db.target_rows(&t)[&1], ferry_testkit::mem::row(1, "v1"));

    // Pausing cancels the hanging commit; resuming applies the transaction once.
    h.engine.pause("default", "cf").await.unwrap();
    h.engine.resume("default", "cf", None).await.unwrap();
    h.wait_caught_up().await;
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_commit_is_retried_and_never_confirmed_early() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;

    db.fail_sink(
        SinkStep::CommitBatch,
        SinkFault::Fail(ErrorClass::Transient),
    );
    insert_each(&db, &t, 0, 10);
    h.wait("the failed commit to be retried", |h| {
        h.status()
            .last_warning
            .is_some_and(|w| w.contains("injected"))
    })
    .await;
    h.wait_caught_up().await;
    assert_eq!(h.status().state, FeedState::Running);
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_lost_commit_answer_doubles_nothing() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;

    // The batch commits, but the engine hears an error: it retries from the checkpoint
    // the target holds, so the transactions are not applied again.
    db.fail_sink(
        SinkStep::CommitBatch,
        SinkFault::FailAfterCommit(ErrorClass::Transient),
    );
    insert_each(&db, &t, 0, 10);
    h.wait("the commit to fail", |h| h.db.faults_fired() == 1)
        .await;
    db.commit(|tx| {
        tx.update(&t, 3, "later");
        tx.delete(&t, 4);
    });
    h.wait_caught_up().await;
    assert!(h.status().last_warning.is_some());
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_changefeed_whose_tables_are_idle_still_confirms_positions() {
    let db = MemDb::new();
    let a = db.create_table("public", "a");
    let other = db.create_table("public", "other");
    let h = Harness::start(&db);
    h.create(h.config(&["public.a"], Options::default())).await;
    h.wait_caught_up().await;

    // Only tables the changefeed does not replicate change: nothing reaches the target,
    // yet the source may discard its log.
    insert_each(&db, &other, 0, 10);
    h.wait_caught_up().await;
    assert_eq!(db.confirmed(FEED).last(), Some(&db.current_position()));
    assert!(db.batches(FEED).is_empty());
    assert!(!db.target_has_table(&other));
    h.assert_identical(&[&a]);
}
