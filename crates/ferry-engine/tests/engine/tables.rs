//! Tables copied in a later snapshot (added by an update, or created on the source while
//! streaming): the stream skips their changes committed before the copy's position, which
//! the copy holds, and applies the later ones. A change applied twice would show as an
//! anomaly in the in-memory target (an insert of a key it holds, a delete of one it lacks).

use ferry_engine::config::Options;
use ferry_testkit::mem::MemDb;

use crate::harness::{insert_each, Harness};

#[tokio::test(start_paused = true)]
async fn a_table_added_by_an_update_skips_what_its_copy_holds() {
    let db = MemDb::new();
    let a = db.create_table("public", "a");
    let b = db.create_table("public", "b");
    let h = Harness::start(&db);
    let config = h.config(&["public.a"], Options::default());
    h.create(config.clone()).await;
    h.wait_caught_up().await;
    insert_each(&db, &a, 0, 3);
    insert_each(&db, &b, 0, 5);
    h.wait_caught_up().await;
    assert!(!db.target_has_table(&b));

    // While paused, b changes; then the rules select it too.
    h.engine.pause("default", "cf").await.unwrap();
    db.commit(|tx| {
        tx.insert(&b, 10, "new");
        tx.update(&b, 1, "changed");
        tx.delete(&b, 2);
        tx.insert(&a, 10, "a");
    });
    db.commit(|tx| tx.delete(&b, 10));
    db.commit(|tx| tx.insert(&b, 10, "again"));
    h.engine
        .update(ferry_engine::ChangefeedConfig {
            tables: ferry_core::TableFilter::new(&["public.a", "public.b"]).unwrap(),
            ..config
        })
        .await
        .unwrap();
    h.engine.resume("default", "cf", None).await.unwrap();
    h.wait_caught_up().await;
    h.assert_identical(&[&a, &b]);

    // Changes after the copy are applied.
    db.commit(|tx| {
        tx.update(&b, 10, "later");
        tx.delete(&b, 0);
        tx.insert(&b, 11, "later");
    });
    h.wait_caught_up().await;
    h.assert_identical(&[&a, &b]);
}

#[tokio::test(start_paused = true)]
async fn a_table_created_while_streaming_is_copied_then_streamed() {
    let db = MemDb::new();
    let a = db.create_table("public", "a");
    let h = Harness::start(&db);
    h.create(h.config(&[], Options::default())).await;
    h.wait_caught_up().await;

    // Created and written before the engine notices it.
    let c = db.create_table("public", "c");
    insert_each(&db, &c, 0, 5);
    db.commit(|tx| {
        tx.delete(&c, 0);
        tx.insert(&a, 1, "a");
    });
    h.wait("c to be copied", |h| h.db.target_has_table(&c))
        .await;
    db.commit(|tx| {
        tx.update(&c, 1, "later");
        tx.insert(&c, 0, "back");
    });
    h.wait_caught_up().await;
    h.assert_identical(&[&a, &c]);
}

#[tokio::test(start_paused = true)]
async fn an_added_table_whose_copy_crashed_is_copied_again_exactly() {
    let db = MemDb::new();
    let a = db.create_table("public", "a");
    let b = db.create_table("public", "b");
    insert_each(&db, &b, 0, 5);
    let mut h = Harness::start(&db);
    let config = h.config(&["public.a"], Options::default());
    h.create(config.clone()).await;
    h.wait_caught_up().await;

    h.engine.pause("default", "cf").await.unwrap();
    h.engine
        .update(ferry_engine::ChangefeedConfig {
            tables: ferry_core::TableFilter::new(&["public.a", "public.b"]).unwrap(),
            ..config
        })
        .await
        .unwrap();
    // b's copy hangs; b changes meanwhile, then the engine restarts.
    db.fail_sink(
        ferry_testkit::mem::SinkStep::CopyChunk,
        ferry_testkit::mem::SinkFault::Hang,
    );
    h.engine.resume("default", "cf", None).await.unwrap();
    h.wait("b's copy to hang", |h| h.db.faults_fired() == 1)
        .await;
    db.commit(|tx| {
        tx.insert(&b, 10, "new");
        tx.update(&b, 1, "changed");
        tx.delete(&b, 2);
        tx.insert(&a, 1, "a");
    });
    h.restart().await;
    h.wait_caught_up().await;
    db.commit(|tx| tx.delete(&b, 10));
    h.wait_caught_up().await;
    h.assert_identical(&[&a, &b]);
}
