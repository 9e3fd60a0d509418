//! A table's new shape into a sink that changes tables only between batches (MariaDB's
//! DDL commits implicitly): the batch ends before the transaction that announces it; a
//! transaction that handed the batch changes first is replayed alone; one that wrote the
//! table before changing it stops the changefeed, naming the table.

use ferry_engine::config::Options;
use ferry_engine::FeedState;
use ferry_testkit::mem::MemDb;

use crate::harness::{Harness, FEED};

fn options() -> Options {
    Options {
        batch_max_rows: 1000,
        ..Options::default()
    }
}

#[tokio::test(start_paused = true)]
async fn the_batch_ends_before_a_new_shape() {
    let db = MemDb::new();
    db.reshape_between_batches();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], options())).await;
    h.wait_caught_up().await;

    // A backlog: two transactions, then one that changes the shape and writes, then one more.
    let ends: Vec<_> = [
        db.commit(|tx| tx.insert(&t, 1, "a")),
        db.commit(|tx| tx.insert(&t, 2, "b")),
        db.commit(|tx| {
            tx.add_column(&t, "extra");
            tx.insert(&t, 3, "c");
        }),
        db.commit(|tx| tx.insert(&t, 4, "d")),
    ]
    .map(|c| c.end)
    .to_vec();
    h.wait_caught_up().await;

    let batches = db.batches(FEED);
    let checkpoints: Vec<_> = batches.iter().map(|b| b.checkpoint.clone()).collect();
    assert_eq!(checkpoints, [ends[1].clone(), ends[3].clone()]);
    assert_eq!(db.reshapes(), std::slice::from_ref(&t));
    assert_eq!(h.status().transactions_applied, 4);
    h.assert_identical(&[&t]);
    h.assert_checkpoint_rule();
}

#[tokio::test(start_paused = true)]
async fn a_transaction_that_handed_the_batch_changes_first_is_replayed_alone() {
    let db = MemDb::new();
    db.reshape_between_batches();
    let t = db.create_table("public", "t");
    let u = db.create_table("public", "u");
    let h = Harness::start(&db);
    h.create(h.config(&[], options())).await;
    h.wait_caught_up().await;

    // The batch holds t's row; the next transaction writes u, then t at a new shape.
    let first = db.commit(|tx| tx.insert(&t, 1, "a"));
    let second = db.commit(|tx| {
        tx.insert(&u, 1, "u");
        tx.add_column(&t, "extra");
        tx.insert(&t, 2, "b");
    });
    let third = db.commit(|tx| tx.insert(&t, 3, "c"));
    h.wait_caught_up().await;

    let batches = db.batches(FEED);
    let checkpoints: Vec<_> = batches.iter().map(|b| b.checkpoint.clone()).collect();
    // Up to the reshaping transaction each commits alone; then batches as usual.
    assert_eq!(checkpoints, [first.end, second.end, third.end]);
    assert_eq!(db.reshapes(), std::slice::from_ref(&t));
    assert_eq!(h.status().state, FeedState::Running);
    assert_eq!(h.status().last_error, None);
    h.assert_identical(&[&t, &u]);
    h.assert_checkpoint_rule();
}

#[tokio::test(start_paused = true)]
async fn a_transaction_that_wrote_a_table_before_reshaping_it_stops() {
    let db = MemDb::new();
    db.reshape_between_batches();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], options())).await;
    h.wait_caught_up().await;

    let before = db.commit(|tx| tx.insert(&t, 1, "a"));
    let split = db.commit(|tx| {
        tx.insert(&t, 2, "b");
        tx.add_column(&t, "extra");
        tx.insert(&t, 3, "c");
    });
    h.wait_state(FeedState::Failed).await;

    let error = h.status().last_error.unwrap();
    assert!(
        error.contains("table public.t changed shape in the middle of source transaction")
            && error.contains(&split.commit.to_string())
            && error.contains("table resync"),
        "{error}"
    );
    // Nothing of the split transaction: the one before it is durable, alone.
    assert_eq!(db.target_checkpoint(FEED), Some(before.end));
    assert_eq!(db.target_rows(&t).len(), 1);
    assert!(db.reshapes().is_empty());
    assert!(db.anomalies().is_empty(), "{:?}", db.anomalies());
    h.assert_checkpoint_rule();
}

#[tokio::test(start_paused = true)]
async fn a_table_copied_again_keeps_its_later_shape() {
    let db = MemDb::new();
    db.reshape_between_batches();
    let t = db.create_table("public", "t");
    let h = Harness::start(&db);
    h.create(h.config(&[], options())).await;
    h.wait_caught_up().await;
    db.commit(|tx| {
        tx.insert(&t, 1, "a");
        tx.add_column(&t, "extra");
        tx.insert(&t, 2, "b");
    });
    h.wait_state(FeedState::Failed).await;

    // What the hint says: copy the table again (at its new shape), then resume. The
    // stream replays the transaction, whose changes of t the copy holds: its shapes (the
    // old one first) must not undo the copy's.
    h.engine
        .resync("default", "cf", Some(vec![t.clone()]))
        .await
        .unwrap();
    h.engine.resume("default", "cf", None).await.unwrap();
    db.commit(|tx| tx.insert(&t, 3, "c"));
    h.wait_caught_up().await;
    assert_eq!(
        db.reshapes(),
        std::slice::from_ref(&t),
        "only the copy changed t's shape"
    );
    h.assert_identical(&[&t]);
}
