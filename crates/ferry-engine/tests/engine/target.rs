//! `target_position`: every transaction committed at or before it is applied, none after
//! it, and the changefeed finishes (releasing its slot).

use ferry_engine::config::Options;
use ferry_engine::FeedState;
use ferry_testkit::mem::MemDb;

use crate::harness::{Harness, FEED};

#[tokio::test(start_paused = true)]
async fn applies_exactly_up_to_the_target_position_then_finishes() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    let config = h.config(&[], Options::default());
    h.create(config.clone()).await;
    h.wait_caught_up().await;

    // Ten transactions while paused, then a target at the fifth one's commit.
    h.engine.pause("default", "cf").await.unwrap();
    let committed: Vec<_> = (0..10)
        .map(|id| {
            db.commit(|tx| {
                tx.insert(&t, id, "x");
                if id > 0 {
                    tx.update(&t, id - 1, "y");
                }
            })
        })
        .collect();
    let target = committed[4].commit.clone();
    h.engine
        .update(ferry_engine::ChangefeedConfig {
            target_position: Some(target.clone()),
            ..config
        })
        .await
        .unwrap();
    h.engine.resume("default", "cf", None).await.unwrap();
    h.wait_state(FeedState::Finished).await;

    assert_eq!(db.target_rows(&t), db.source_rows_through(&t, &target));
    assert_eq!(db.target_rows(&t).len(), 5);
    assert_eq!(db.target_checkpoint(FEED), Some(committed[4].end.clone()));
    assert!(
        !db.has_slot(FEED),
        "a finished changefeed releases its slot"
    );
    assert_eq!(db.anomalies(), Vec::<String>::new());
    h.assert_checkpoint_rule();

    // Later transactions stay on the source.
    db.commit(|tx| tx.insert(&t, 100, "after"));
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(h.status().state, FeedState::Finished);
    assert_eq!(db.target_rows(&t).len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_target_position_beyond_the_source_waits_for_it() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    let first = db.commit(|tx| tx.insert(&t, 1, "copied"));
    assert_eq!(db.current_position(), first.end);
    // Two transactions ahead: the second one's end.
    let target = db.upcoming(2).end;
    let config = ferry_engine::ChangefeedConfig {
        target_position: Some(target.clone()),
        ..h.config(&[], Options::default())
    };
    h.create(config).await;
    h.wait("the copy", |h| h.db.target_rows(&t).len() == 1)
        .await;
    db.commit(|tx| tx.insert(&t, 2, "x"));
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(h.status().state, FeedState::Running);

    let last = db.commit(|tx| tx.insert(&t, 3, "x"));
    assert_eq!(last.end, target);
    h.wait_state(FeedState::Finished).await;
    assert_eq!(db.target_rows(&t), db.source_rows(&t));
    h.assert_checkpoint_rule();
}

#[tokio::test(start_paused = true)]
async fn a_restart_before_the_target_is_durable_still_stops_exactly_there() {
    let db = MemDb::new();
    let t = db.create_table("public", "t");
    let mut h = Harness::start(&db);
    let config = h.config(&[], Options::default());
    h.create(config.clone()).await;
    h.wait_caught_up().await;

    h.engine.pause("default", "cf").await.unwrap();
    let committed: Vec<_> = (0..5)
        .map(|id| db.commit(|tx| tx.insert(&t, id, "x")))
        .collect();
    let target = committed[2].commit.clone();
    h.engine
        .update(ferry_engine::ChangefeedConfig {
            target_position: Some(target.clone()),
            ..config
        })
        .await
        .unwrap();
    // The batch that reaches the target hangs; the engine restarts.
    db.fail_sink(
        ferry_testkit::mem::SinkStep::CommitBatch,
        ferry_testkit::mem::SinkFault::Hang,
    );
    h.engine.resume("default", "cf", None).await.unwrap();
    h.wait("the commit to hang", |h| h.db.faults_fired() == 1)
        .await;
    assert!(db.target_rows(&t).is_empty());
    h.restart().await;
    h.wait_state(FeedState::Finished).await;
    assert_eq!(db.target_rows(&t), db.source_rows_through(&t, &target));
    assert_eq!(db.target_checkpoint(FEED), Some(committed[2].end.clone()));
    assert_eq!(db.anomalies(), Vec::<String>::new());
    h.assert_checkpoint_rule();
}
