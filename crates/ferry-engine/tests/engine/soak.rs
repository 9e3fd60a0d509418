//! A seeded random workload over three tables with every disturbance the in-memory
//! connectors offer, one after another: failed and unanswered commits, broken streams,
//! pauses, sinks that hang or panic mid-batch followed by an engine restart. The target
//! must end identical to the source, with nothing applied twice and the checkpoint rule
//! kept throughout. Deterministic: the seed fixes the workload and the clock is paused.
//! (The seed was checked against several others; a new one is a cheap way to look for
//! more.)

use ferry_core::{ErrorClass, TableId};
use ferry_engine::config::Options;
use ferry_testkit::mem::{MemDb, SinkFault, SinkStep, SourceStep};

use crate::harness::Harness;

/// A small deterministic random number generator (64-bit LCG, top bits).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Commits one transaction of a few random inserts, updates and deletes.
fn random_transaction(db: &MemDb, tables: &[TableId], rng: &mut Rng, next_key: &mut i64) {
    let picks: Vec<(usize, u64, i64)> = (0..1 + rng.below(4))
        .map(|_| {
            let table = rng.below(tables.len() as u64) as usize;
            let existing: Vec<i64> = db.source_rows(&tables[table]).into_keys().collect();
            let key = match existing.len() as u64 {
                0 => -1,
                n => existing[rng.below(n) as usize],
            };
            (table, rng.below(3), key)
        })
        .collect();
    db.commit(|tx| {
        let mut touched = std::collections::HashSet::new();
        for (table, op, key) in picks {
            let t = &tables[table];
            // One change per existing key and transaction keeps the picks valid.
            if key < 0 || op == 0 || !touched.insert((table, key)) {
                *next_key += 1;
                tx.insert(t, *next_key, "new");
            } else if op == 1 {
                tx.update(t, key, &format!("updated {next_key}"));
            } else {
                tx.delete(t, key);
            }
        }
    });
}

#[tokio::test(start_paused = true)]
async fn a_random_workload_under_every_disturbance_ends_identical() {
    let db = MemDb::new();
    let tables: Vec<TableId> = ["a", "b", "c"]
        .iter()
        .map(|name| db.create_table("public", name))
        .collect();
    let mut rng = Rng(20_261_130);
    let mut next_key = 0;
    for _ in 0..20 {
        random_transaction(&db, &tables, &mut rng, &mut next_key);
    }
    let mut h = Harness::start(&db);
    let options = Options {
        batch_max_rows: 7,
        ..Options::default()
    };
    h.create(h.config(&[], options)).await;
    h.wait_caught_up().await;

    for _ in 0..40 {
        // One disturbance at a time: the last one's fault has fired.
        h.wait("the last fault", |h| h.db.faults_armed() == 0).await;
        let disturbance = rng.below(7);
        match disturbance {
            0 => db.fail_sink(
                SinkStep::CommitBatch,
                SinkFault::Fail(ErrorClass::Transient),
            ),
            1 => db.fail_sink(
                SinkStep::CommitBatch,
                SinkFault::FailAfterCommit(ErrorClass::Transient),
            ),
            2 => db.fail_source(SourceStep::Stream, ErrorClass::Transient),
            3 => db.fail_sink_after(SinkStep::Apply, rng.below(3) as u32, SinkFault::Hang),
            4 => db.fail_sink_after(SinkStep::Apply, rng.below(3) as u32, SinkFault::Panic),
            5 => h.engine.pause("default", "cf").await.map(drop).unwrap(),
            _ => {}
        }
        for _ in 0..1 + rng.below(6) {
            random_transaction(&db, &tables, &mut rng, &mut next_key);
        }
        match disturbance {
            3 | 4 => {
                h.wait("the fault", |h| h.db.faults_armed() == 0).await;
                h.restart().await;
            }
            5 => h
                .engine
                .resume("default", "cf", None)
                .await
                .map(drop)
                .unwrap(),
            _ => {}
        }
        if rng.below(3) == 0 {
            h.wait_caught_up().await;
        }
    }
    h.wait_caught_up().await;
    h.assert_identical(&tables.iter().collect::<Vec<_>>());
    assert!(next_key > 40, "the workload inserted {next_key} rows");
}
