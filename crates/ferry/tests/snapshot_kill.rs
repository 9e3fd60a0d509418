//! Fault scenario 2: `kill -9` of the server twice during the snapshot of a large table
//! (2M rows with `FERRY_CHAOS_FULL=1`, 800k in the fast run). Each chunk commits with its
//! marker in `_ferry.snapshot_chunks`, so a restart copies only the chunks that were not
//! finished: the rows copied again are at most the chunks in flight at each kill (the
//! target's `n_tup_ins` counts the rows of aborted chunks too), and the oracle ends 0 / 0 / 0.

mod common;

use std::time::Duration;

use common::Pair;
use serde_json::json;

/// Rows of one chunk (`ferry_postgres::snapshot::CHUNK_ROWS`).
const CHUNK_ROWS: u64 = 100_000;
/// Parallel copy workers (`snapshot_workers`): chunks in flight at a kill. Two, not the
/// default four: chunks of one size finish in waves of `WORKERS`, and the fast run's 8
/// chunks in two waves of four left the second kill no wave to land in before the end.
const WORKERS: u64 = 2;

/// Rows of ~170 bytes (a 128-character text), so that a chunk takes long enough to copy for
/// the second kill to land within the snapshot: with 45-byte rows the whole table was
/// sometimes copied between two polls of the markers. 800k of them are ~130 MB, 4 chunks by
/// `CHUNK_BYTES`, so the table is still cut by `CHUNK_ROWS`.
fn rows() -> u64 {
    if std::env::var_os("FERRY_CHAOS_FULL").is_some() {
        2_000_000
    } else {
        800_000
    }
}

fn markers(pair: &Pair) -> u64 {
    let exists = pair.target.psql(
        "analytics",
        "SELECT to_regclass('_ferry.snapshot_chunks') IS NOT NULL",
    );
    if exists != "t" {
        return 0;
    }
    pair.target
        .psql("analytics", "SELECT count(*) FROM _ferry.snapshot_chunks")
        .parse()
        .unwrap()
}

#[test]
fn kill_9_during_a_large_snapshot_copies_finished_chunks_once() {
    let rows = rows();
    let chunks = rows.div_ceil(CHUNK_ROWS);
    let mut pair = Pair::start();
    pair.source.psql(
        "shop",
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, v text);
             INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {rows}) g;
             ANALYZE big;"
        ),
    );
    pair.create_with("cf", &["public.big"], json!({"snapshot_workers": WORKERS}));
    // Kill once a chunk is done, and again once more are; each time right after a marker.
    let mut at_kill: Vec<u64> = Vec::new();
    for round in 0..2 {
        let wanted = match round {
            0 => 1,
            _ => (chunks / 2).max(at_kill[0] + 1),
        };
        ferry_testkit::wait_for("finished chunks", Duration::from_secs(300), || {
            markers(&pair) >= wanted
        });
        pair.ferry.kill9();
        at_kill.push(markers(&pair));
        pair.ferry.restart();
    }
    pair.wait_synced("cf", Duration::from_secs(600));
    // Every chunk is recorded once (the key is changefeed, table, chunk).
    assert_eq!(markers(&pair), chunks, "one marker per chunk");
    let inserted: u64 = {
        // The statistics of the aborted copies reach the view within a second or so.
        std::thread::sleep(Duration::from_millis(1500));
        pair.target
            .psql(
                "analytics",
                "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'big'",
            )
            .parse()
            .unwrap()
    };
    let recopied = inserted.saturating_sub(rows);
    let report = pair.compare(&["big"]);
    eprintln!(
        "scenario 2: {rows} rows in {chunks} chunks; 2 kill -9 during the snapshot, after {} \
         and {} finished chunks; rows copied in all {inserted}, copied again {recopied} (at most \
         {} chunks in flight per kill)\n{report}",
        at_kill[0], at_kill[1], WORKERS
    );
    report.assert_identical();
    // The copy worker that loaded the last chunk built the key, or the restart did.
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT count(*) FROM pg_index WHERE indrelid = 'public.big'::regclass \
             AND indisprimary AND indisvalid"
        ),
        "1",
        "the copied table has its primary key"
    );
    assert!(
        at_kill[1] < chunks,
        "the second kill landed after the snapshot: make the table larger"
    );
    assert!(
        recopied <= 2 * WORKERS * CHUNK_ROWS,
        "finished chunks were copied again: {recopied} rows copied twice"
    );
}
