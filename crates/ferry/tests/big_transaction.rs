//! Fault scenario 6: huge source transactions stream through with bounded memory. The sink
//! writes a transaction into an open target transaction in pipelined slices, never holding
//! it whole: a 2M-row INSERT and a 1M-row UPDATE, each one source transaction, end exact
//! (the oracle) with the server's peak RSS at most 150 MB.

mod common;

use std::time::{Duration, Instant};

use common::Pair;

/// Rows inserted in one transaction (half of them then updated in another): 200k by
/// default; `FERRY_TEST_BIG_TX_ROWS=2000000` for the full-size run.
fn rows() -> u64 {
    std::env::var("FERRY_TEST_BIG_TX_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// The memory cap.
const MAX_RSS_MIB: u64 = 150;

#[test]
fn one_huge_transaction_keeps_memory_bounded() {
    let (rows, updated) = (rows(), rows() / 2);
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE big (id bigint PRIMARY KEY, payload text)",
    );
    pair.create("big", &[]);
    pair.wait_synced("big", Duration::from_secs(60));

    let started = Instant::now();
    pair.source.psql(
        "shop",
        &format!(
            "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {rows}) g"
        ),
    );
    pair.wait_synced("big", Duration::from_secs(900));
    let insert_seconds = started.elapsed().as_secs_f64();
    let insert_peak = pair.ferry.peak_rss_kib().expect("server runs") / 1024;

    let started = Instant::now();
    pair.source.psql(
        "shop",
        &format!("UPDATE big SET payload = md5(payload) WHERE id <= {updated}"),
    );
    pair.wait_synced("big", Duration::from_secs(900));
    let update_seconds = started.elapsed().as_secs_f64();
    let peak = pair.ferry.peak_rss_kib().expect("server runs") / 1024;

    let report = pair.compare(&["big"]);
    eprintln!(
        "scenario 6: one INSERT of {rows} rows in a single transaction, synced after \
         {insert_seconds:.0} s, peak RSS {insert_peak} MiB; then one UPDATE of {updated} rows, \
         synced after {update_seconds:.0} s; server peak RSS over both {peak} MiB\n{report}"
    );
    report.assert_identical();
    assert!(peak <= MAX_RSS_MIB, "peak RSS {peak} MiB");
}
