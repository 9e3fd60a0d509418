//! The counters a changefeed's task increments, through the `metrics` facade.
//!
//! Counters only: gauges that describe a changefeed now (state, lag, retained WAL, snapshot
//! rows copied and estimated) are rendered from the status at scrape time by the API, so a deleted changefeed
//! leaves no stale gauge behind. Every counter carries `namespace` and `changefeed` labels;
//! the names are documented in `docs/metrics.md`.
//!
//! Row counts are gathered per batch in a small map and added to the registry once per
//! commit, so the hot path pays a hash-map increment per row, not a registry lookup.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::{RowChange, TableId, TableSchema};
use metrics::{counter, Counter};

/// Row changes applied, by table and operation.
pub const ROWS_APPLIED: &str = "ferry_rows_applied_total";
/// Source transactions applied.
pub const TRANSACTIONS_APPLIED: &str = "ferry_transactions_applied_total";
/// Source transactions applied ahead of their commit, on a second session of the sink.
pub const TRANSACTIONS_AHEAD: &str = "ferry_transactions_applied_ahead_total";
/// Value bytes read from the source.
pub const SOURCE_BYTES_READ: &str = "ferry_source_bytes_read_total";
/// Failed attempts, by class.
pub const ERRORS: &str = "ferry_changefeed_errors_total";
/// Retries after transient failures.
pub const RETRIES: &str = "ferry_changefeed_retries_total";

/// One changefeed's counters.
#[derive(Clone)]
pub(crate) struct FeedMetrics {
    namespace: String,
    changefeed: String,
    transactions: Counter,
    ahead: Counter,
    bytes_read: Counter,
    retries: Counter,
}

impl FeedMetrics {
    pub(crate) fn new(namespace: &str, changefeed: &str) -> Self {
        let labels = [
            ("namespace", namespace.to_string()),
            ("changefeed", changefeed.to_string()),
        ];
        FeedMetrics {
            namespace: namespace.to_string(),
            changefeed: changefeed.to_string(),
            transactions: counter!(TRANSACTIONS_APPLIED, &labels),
            ahead: counter!(TRANSACTIONS_AHEAD, &labels),
            bytes_read: counter!(SOURCE_BYTES_READ, &labels),
            retries: counter!(RETRIES, &labels),
        }
    }

    pub(crate) fn bytes_read(&self, n: u64) {
        self.bytes_read.increment(n);
    }

    pub(crate) fn transactions(&self, n: u64) {
        self.transactions.increment(n);
    }

    pub(crate) fn applied_ahead(&self) {
        self.ahead.increment(1);
    }

    pub(crate) fn retry(&self) {
        self.retries.increment(1);
    }

    /// A failed attempt; `class` is `transient` or `definite`.
    pub(crate) fn error(&self, class: &'static str) {
        counter!(
            ERRORS,
            "namespace" => self.namespace.clone(),
            "changefeed" => self.changefeed.clone(),
            "class" => class
        )
        .increment(1);
    }

    /// A row counter for `table` and `op`.
    fn rows(&self, table: &TableId, op: &'static str) -> Counter {
        counter!(
            ROWS_APPLIED,
            "namespace" => self.namespace.clone(),
            "changefeed" => self.changefeed.clone(),
            "table" => table.to_string(),
            "op" => op
        )
    }
}

/// Operations counted per table.
const OPS: [&str; 4] = ["insert", "update", "delete", "truncate"];

fn op_index(change: &RowChange) -> usize {
    match change {
        RowChange::Insert { .. } => 0,
        RowChange::Update { .. } => 1,
        RowChange::Delete { .. } => 2,
        RowChange::Truncate { .. } => 3,
    }
}

/// Row counts of the open batch, by table and operation.
///
/// Keyed by the address of the change's table schema (one `Arc` per table shape while a
/// stream runs), so counting a row hashes a pointer, not a table name. The entry holds the
/// `Arc`, so the address cannot be reused by another schema while it is counted.
#[derive(Default)]
pub(crate) struct RowCounts {
    pending: HashMap<usize, (Arc<TableSchema>, [u64; 4])>,
    handles: HashMap<(TableId, usize), Counter>,
}

impl RowCounts {
    /// Counts `change` (a truncate counts once per table).
    pub(crate) fn count(&mut self, change: &RowChange) {
        let op = op_index(change);
        match change {
            RowChange::Insert { table, .. }
            | RowChange::Update { table, .. }
            | RowChange::Delete { table, .. } => self.add(table, op),
            RowChange::Truncate { tables, .. } => {
                for table in tables {
                    self.add(table, op);
                }
            }
        }
    }

    fn add(&mut self, table: &Arc<TableSchema>, op: usize) {
        let entry = self
            .pending
            .entry(Arc::as_ptr(table) as usize)
            .or_insert_with(|| (table.clone(), [0; 4]));
        entry.1[op] += 1;
    }

    /// The batch's row changes per table.
    pub(crate) fn per_table(&self) -> Vec<(TableId, u64)> {
        self.pending
            .values()
            .map(|(schema, counts)| (schema.id.clone(), counts.iter().sum()))
            .collect()
    }

    /// Adds the batch's counts to the registry (after the batch committed).
    pub(crate) fn publish(&mut self, metrics: &FeedMetrics) {
        for (_, (schema, counts)) in self.pending.drain() {
            let table = &schema.id;
            for (op, n) in counts.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                self.handles
                    .entry((table.clone(), op))
                    .or_insert_with(|| metrics.rows(table, OPS[op]))
                    .increment(n);
            }
        }
    }

    /// Publishes the counts of `batch` (a durable batch's) through this one's handles.
    pub(crate) fn absorb(&mut self, batch: &mut RowCounts, metrics: &FeedMetrics) {
        for (key, (schema, counts)) in batch.pending.drain() {
            let entry = self.pending.entry(key).or_insert_with(|| (schema, [0; 4]));
            for (total, n) in entry.1.iter_mut().zip(counts) {
                *total += n;
            }
        }
        self.publish(metrics);
    }

    /// Forgets the batch's counts (it was rolled back).
    pub(crate) fn discard(&mut self) {
        self.pending.clear();
    }
}
