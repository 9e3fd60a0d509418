//! One huge source transaction streams through with bounded memory: the sink writes it
//! into an open target transaction in pipelined slices, never holding it whole.

mod common;

use std::time::Duration;

use common::Pair;

/// Rows in the transaction: 200k by default; `FERRY_TEST_BIG_TX_ROWS=1000000` for the
/// issue's full-size run.
fn rows() -> String {
    std::env::var("FERRY_TEST_BIG_TX_ROWS").unwrap_or_else(|_| "200000".into())
}

#[test]
fn one_huge_transaction_keeps_memory_bounded() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE big (id bigint PRIMARY KEY, payload text)",
    );
    pair.create("big", &[]);
    pair.wait_synced("big", Duration::from_secs(60));
    pair.source.psql(
        "shop",
        &format!(
            "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {}) g",
            rows()
        ),
    );
    pair.wait_synced("big", Duration::from_secs(600));
    pair.assert_same("big");
    let peak_mib = pair.ferry.peak_rss_kib().expect("server runs") / 1024;
    eprintln!(
        "peak RSS after a {}-row transaction: {peak_mib} MiB",
        rows()
    );
    assert!(peak_mib < 150, "peak RSS {peak_mib} MiB");
}
