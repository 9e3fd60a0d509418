//! Pause and resume, crashes and restarts, and source failures: whatever happens, the
//! target ends identical to the source, with no row lost or applied twice.

use std::time::Duration;

use ferry_core::ErrorClass;
use ferry_engine::config::Options;
use ferry_engine::FeedState;
use ferry_testkit::mem::{MemDb, SinkFault, SinkStep, SourceStep};

use crate::harness::{insert_each, Harness, FEED};

#[tokio::test(start_paused = true)]
async fn a_paused_changefeed_applies_nothing_then_resumes_exactly() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    insert_each(&db, &t, 0, 10);
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;

    let paused = h.engine.pause("default", "cf").await.unwrap();
    assert_eq!(paused.state, FeedState::Paused);
    let before = db.target_rows(&t);
    insert_each(&db, &t, 10, 5);
    db.commit(|tx| {
        tx.update(&t, 0, "while paused");
        tx.delete(&t, 1);
    });
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(h.status().state, FeedState::Paused);
    assert_eq!(db.target_rows(&t), before);
    assert!(db.has_slot(FEED), "a paused changefeed keeps its slot");

    h.engine.resume("default", "cf", None).await.unwrap();
    h.wait_caught_up().await;
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_sink_panicking_mid_batch_loses_and_doubles_nothing() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let mut h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    insert_each(&db, &t, 0, 5);
    h.wait_caught_up().await;

    // The fourth row of a ten-row transaction crashes the task.
    db.fail_sink_after(SinkStep::Apply, 3, SinkFault::Panic);
    db.commit(|tx| {
        for id in 100..110 {
            tx.insert(&t, id, "x");
        }
        tx.update(&t, 0, "changed");
    });
    h.wait("the panic", |h| h.db.faults_fired() == 1).await;
    // The engine restarts before the task's own retry (see the test below).
    assert_eq!(
        db.target_rows(&t).len(),
        5,
        "the crashed batch left nothing"
    );

    insert_each(&db, &t, 200, 3);
    h.restart().await;
    h.wait_caught_up().await;
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_restart_during_a_hanging_commit_loses_and_doubles_nothing() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let mut h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;

    db.fail_sink(SinkStep::CommitBatch, SinkFault::Hang);
    insert_each(&db, &t, 0, 20);
    h.wait("the commit to hang", |h| h.db.faults_fired() == 1)
        .await;
    db.commit(|tx| tx.delete(&t, 3));
    h.restart().await;
    h.wait_caught_up().await;
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_transient_source_failure_is_retried_then_recovers() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    insert_each(&db, &t, 0, 5);
    h.wait_caught_up().await;

    // The stream breaks, and the next two connection attempts fail too.
    db.fail_source(SourceStep::Open, ErrorClass::Transient);
    db.fail_source(SourceStep::Open, ErrorClass::Transient);
    db.fail_source(SourceStep::Stream, ErrorClass::Transient);
    h.wait_state(FeedState::Error).await;
    insert_each(&db, &t, 5, 5);
    let warning = h.status().last_warning.unwrap();
    assert!(
        warning.contains("injected") && warning.contains("(retry "),
        "{warning}"
    );

    h.wait_caught_up().await;
    assert_eq!(db.faults_fired(), 3);
    assert_eq!(h.status().last_error, None);
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_definite_source_failure_fails_until_resumed() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;

    db.fail_source(SourceStep::Stream, ErrorClass::Definite);
    h.wait_state(FeedState::Failed).await;
    let error = h.status().last_error.unwrap();
    assert!(
        error.contains("injected") && error.contains("Hint:"),
        "{error}"
    );
    insert_each(&db, &t, 0, 5);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(h.status().state, FeedState::Failed);
    assert!(db.target_rows(&t).is_empty());

    h.engine.resume("default", "cf", None).await.unwrap();
    h.wait_caught_up().await;
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_resume_at_a_later_position_skips_to_it() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;

    h.engine.pause("default", "cf").await.unwrap();
    let skipped = db.commit(|tx| tx.insert(&t, 1, "skipped"));
    db.commit(|tx| tx.insert(&t, 2, "applied"));
    h.engine
        .resume("default", "cf", Some(skipped.end.clone()))
        .await
        .unwrap();
    h.wait_caught_up().await;
    assert_eq!(db.target_rows(&t).keys().collect::<Vec<_>>(), [&2]);
    h.assert_checkpoint_rule();

    // A position the slot cannot serve (before what it confirmed) is refused.
    h.engine.pause("default", "cf").await.unwrap();
    let refused = h.engine.resume("default", "cf", Some(skipped.commit)).await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test(start_paused = true)]
async fn deleting_a_changefeed_releases_its_slot() {
    let db = MemDb::new();
    db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;
    assert!(db.has_slot(FEED));
    assert!(h.engine.delete("default", "cf").await.unwrap());
    assert!(!db.has_slot(FEED));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_attempt_is_retried_not_left_running() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;

    db.fail_sink(SinkStep::Apply, SinkFault::Panic);
    insert_each(&db, &t, 0, 5);
    h.wait_state(FeedState::Error).await;
    let warning = h.status().last_warning.unwrap();
    assert!(warning.contains("crashed"), "{warning}");
    assert!(!warning.contains("injected panic"), "{warning}");
    h.wait_caught_up().await;
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_stream_reader_fails_the_changefeed_naming_the_panic() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;

    db.panic_stream();
    insert_each(&db, &t, 0, 5);
    h.wait_state(FeedState::Failed).await;
    let error = h.status().last_error.unwrap();
    assert!(
        error.contains("panicked") && error.contains("injected panic"),
        "{error}"
    );
    h.engine.resume("default", "cf", None).await.unwrap();
    h.wait_caught_up().await;
    h.assert_identical(&[&t]);
}
