//! The copy before streaming: resumed after a crash or a failure in a later snapshot,
//! snapshot-only changefeeds, and changefeeds that copy nothing.

use std::time::Duration;

use ferry_core::ErrorClass;
use ferry_engine::config::{Options, SnapshotMode};
use ferry_engine::FeedState;
use ferry_testkit::mem::{MemDb, SinkFault, SinkStep, SourceStep};

use crate::harness::{insert_each, Harness, FEED};

#[tokio::test(start_paused = true)]
async fn a_restart_mid_snapshot_copies_the_rest_and_converges() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    insert_each(&db, &t, 0, 100);
    db.set_chunk_rows(10);
    let mut h = Harness::start(&db);
    let options = Options {
        snapshot_workers: 1,
        ..Options::default()
    };
    // The fifth chunk's load hangs: four are committed with their markers.
    db.fail_sink_after(SinkStep::CopyChunk, 4, SinkFault::Hang);
    h.create(h.config(&[], options)).await;
    h.wait("the copy to hang", |h| h.db.faults_fired() == 1)
        .await;
    assert_eq!(db.target_markers(FEED).len(), 4);
    assert_eq!(db.target_rows(&t).len(), 40);

    // Changes before the restart, in copied and not yet copied chunks.
    db.commit(|tx| {
        tx.update(&t, 5, "copied, then changed");
        tx.update(&t, 95, "changed before its copy");
        tx.delete(&t, 6);
        tx.delete(&t, 55);
        tx.insert(&t, 1000, "new");
    });
    h.restart().await;
    h.wait_caught_up().await;
    assert_eq!(db.target_markers(FEED).len(), 10);
    // Chunks copied in the later snapshot overlap the stream's replay, which upserts: the
    // rows converge (the in-memory target notes the overlap as anomalies).
    assert_eq!(db.target_rows(&t), db.source_rows(&t));
    h.assert_checkpoint_rule();
}

#[tokio::test(start_paused = true)]
async fn tables_copied_whole_after_a_restart_skip_what_their_copy_holds() {
    let db = MemDb::new();
    let a = db.create_table("public", "a");
    let b = db.create_table("public", "b");
    insert_each(&db, &a, 0, 5);
    insert_each(&db, &b, 0, 5);
    let mut h = Harness::start(&db);
    let options = Options {
        snapshot_workers: 1,
        ..Options::default()
    };
    // a is copied with the stream's snapshot; b's copy hangs.
    db.fail_sink_after(SinkStep::CopyChunk, 1, SinkFault::Hang);
    h.create(h.config(&[], options)).await;
    h.wait("the copy to hang", |h| h.db.faults_fired() == 1)
        .await;
    assert_eq!(db.target_rows(&a).len(), 5);

    for t in [&a, &b] {
        db.commit(|tx| {
            tx.insert(t, 10, "new");
            tx.update(t, 1, "changed");
            tx.delete(t, 2);
        });
    }
    h.restart().await;
    h.wait_caught_up().await;
    // b is copied again whole, in a later snapshot: exact, no change applied twice.
    h.assert_identical(&[&a, &b]);
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_reading_the_snapshot_is_retried() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    insert_each(&db, &t, 0, 5);
    let h = Harness::start(&db);
    db.fail_source(SourceStep::ReadChunk, ErrorClass::Transient);
    h.create(h.config(&[], Options::default())).await;
    h.wait_state(FeedState::Error).await;
    db.commit(|tx| {
        tx.update(&t, 0, "before the retry");
        tx.delete(&t, 1);
        tx.insert(&t, 1000, "x");
    });
    h.wait_caught_up().await;
    h.assert_identical(&[&t]);
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_only_changefeed_copies_once_and_finishes() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    insert_each(&db, &t, 0, 25);
    db.set_chunk_rows(10);
    let h = Harness::start(&db);
    let config = ferry_engine::ChangefeedConfig {
        snapshot_only: true,
        ..h.config(&[], Options::default())
    };
    h.create(config).await;
    h.wait_state(FeedState::Finished).await;
    assert_eq!(db.target_rows(&t), db.source_rows(&t));
    assert_eq!(db.target_markers(FEED).len(), 3);
    assert!(!db.has_slot(FEED), "a snapshot-only changefeed has no slot");

    db.commit(|tx| tx.insert(&t, 100, "after"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(db.target_rows(&t).len(), 25);
    assert_eq!(db.anomalies(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn snapshot_never_streams_from_creation_and_copies_nothing() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    insert_each(&db, &t, 0, 5);
    let h = Harness::start(&db);
    let options = Options {
        snapshot: SnapshotMode::Never,
        ..Options::default()
    };
    h.create(h.config(&[], options)).await;
    h.wait_caught_up().await;
    assert!(db.target_has_table(&t));
    assert!(db.target_rows(&t).is_empty());

    insert_each(&db, &t, 5, 5);
    h.wait_caught_up().await;
    let mut after = db.source_rows(&t);
    after.retain(|id, _| *id >= 5);
    assert_eq!(db.target_rows(&t), after);
    assert_eq!(db.anomalies(), Vec::<String>::new());
    h.assert_checkpoint_rule();
}
