//! One table held back while the others stream: paused, its changes are not applied;
//! resumed, it is copied again from a later snapshot and streamed on without a gap; a
//! re-sync copies a table again the same way. The in-memory target shows any change
//! applied twice or lost.

use ferry_core::TableId;
use ferry_engine::config::Options;
use ferry_engine::{TableAction, TableState};
use ferry_testkit::mem::MemDb;

use crate::harness::{insert_each, Harness};

fn state_of(h: &Harness, table: &TableId) -> TableState {
    let name = table.to_string();
    h.status()
        .tables
        .iter()
        .find(|t| t.table == name)
        .map(|t| t.state)
        .expect("the table is listed")
}

#[tokio::test(start_paused = true)]
async fn a_paused_table_gets_nothing_and_comes_back_whole() {
    let db = MemDb::new();
    let a = db.create_table("public", "a");
    let b = db.create_table("public", "b");
    insert_each(&db, &a, 0, 5);
    insert_each(&db, &b, 0, 5);
    let h = Harness::start(&db);
    h.create(h.config(&["public.*"], Options::default())).await;
    h.wait_caught_up().await;

    h.engine
        .table_action("default", "cf", &b, TableAction::Pause)
        .await
        .unwrap();
    assert_eq!(state_of(&h, &b), TableState::Paused);
    db.commit(|tx| {
        tx.insert(&a, 10, "a");
        tx.insert(&b, 10, "while paused");
        tx.update(&b, 1, "changed while paused");
    });
    db.commit(|tx| tx.delete(&b, 2));
    h.wait("a streams on", |h| h.db.target_rows(&a).contains_key(&10))
        .await;
    assert!(!db.target_rows(&b).contains_key(&10));
    assert!(db.target_rows(&b).contains_key(&2));

    h.engine
        .table_action("default", "cf", &b, TableAction::Resume)
        .await
        .unwrap();
    db.commit(|tx| {
        tx.insert(&b, 11, "after resume");
        tx.update(&b, 10, "after resume");
    });
    h.wait("b copied again", |h| {
        state_of(h, &b) == TableState::Streaming
    })
    .await;
    h.wait_caught_up().await;
    h.assert_identical(&[&a, &b]);
}

#[tokio::test(start_paused = true)]
async fn a_resync_copies_again_without_a_gap() {
    let db = MemDb::new();
    let a = db.create_table("public", "a");
    insert_each(&db, &a, 0, 20);
    let h = Harness::start(&db);
    h.create(h.config(&["public.a"], Options::default())).await;
    h.wait_caught_up().await;
    h.engine
        .resync("default", "cf", Some(vec![a.clone()]))
        .await
        .unwrap();
    assert_eq!(state_of(&h, &a), TableState::Resyncing);
    for i in 0..10 {
        db.commit(|tx| {
            tx.insert(&a, 100 + i, "during");
            tx.update(&a, i, "during");
        });
    }
    h.wait("a copied again", |h| {
        state_of(h, &a) == TableState::Streaming
    })
    .await;
    h.wait_caught_up().await;
    h.assert_identical(&[&a]);
}
