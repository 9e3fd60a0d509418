//! The fault suite's two workloads besides pgbench, sized for the run: a bank whose total the
//! target must show in every consistent read (checked every second while the load runs) and
//! TOASTed rows updated in other columns.

use std::time::Duration;

use ferry_testkit::workload::bank::{Bank, BankChecker, BankReport};
use ferry_testkit::workload::toast::{self, ToastDocs};
use ferry_testkit::workload::{Writer, WriterStats};

use super::Pair;

/// The workloads' tables, for the changefeed's rules and the oracle.
pub const TABLES: [&str; 3] = ["bank_accounts", "bank_transfers", toast::TABLE];

/// The bank and the TOAST table on the pair's source.
pub struct Workloads {
    bank: Bank,
    docs: ToastDocs,
}

/// Full sizes with `FERRY_CHAOS_FULL`, else the normal suite's.
fn full() -> bool {
    std::env::var_os("FERRY_CHAOS_FULL").is_some()
}

impl Workloads {
    /// Creates both on the source's `shop`: 1,000 accounts and 100 TOASTed rows (full:
    /// 10,000 and 1,000).
    pub fn create(pair: &Pair) -> Workloads {
        let (accounts, rows) = if full() {
            (10_000, 1_000)
        } else {
            (1_000, 100)
        };
        Workloads {
            bank: Bank::create(&pair.source, "shop", accounts),
            docs: ToastDocs::create(&pair.source, "shop", rows),
        }
    }

    /// Starts the writers (one client each, `pause` between transactions; two with
    /// `FERRY_CHAOS_FULL`) and the checker of the bank's total on the target, counting reads
    /// once the target's checkpoint is at `consistent_from` or later.
    pub fn start(&self, pair: &Pair, consistent_from: &str, pause: Duration) -> Running {
        let clients = if full() { 2 } else { 1 };
        Running {
            checker: Some(self.bank.start_checker(
                &pair.target,
                "analytics",
                consistent_from,
                Duration::from_secs(1),
            )),
            transfers: Some(self.bank.start_writer(clients, pause)),
            updates: Some(self.docs.start_writer(clients, pause)),
            stats: None,
        }
    }
}

/// Writers and checker at work.
pub struct Running {
    checker: Option<BankChecker>,
    transfers: Option<Writer>,
    updates: Option<Writer>,
    stats: Option<(WriterStats, WriterStats)>,
}

impl Running {
    /// Stops the writers (the checker goes on until [`Running::finish`]).
    pub fn stop_writers(&mut self) {
        if let (Some(t), Some(u)) = (self.transfers.take(), self.updates.take()) {
            self.stats = Some((t.stop(), u.stop()));
        }
    }

    /// Stops everything; call after the changefeed is synced. Asserts that the bank's total
    /// held in every read that counted, and that reads were made.
    pub fn finish(mut self, pair: &Pair) -> Summary {
        self.stop_writers();
        let bank = self.checker.take().expect("checker runs").stop();
        let (transfers, updates) = self.stats.expect("writers stopped");
        let (toasted, rows) = ToastDocs::toasted_rows(&pair.target, "analytics");
        let summary = Summary {
            transfers,
            updates,
            bank,
            toasted,
            rows,
        };
        assert!(summary.bank.violations.is_empty(), "{summary}");
        assert!(summary.bank.held > 0, "the total was never read: {summary}");
        assert!(
            transfers.committed > 10 && updates.committed > 10,
            "the workloads ran: {summary}"
        );
        assert_eq!(toasted, rows, "the target lost large values: {summary}");
        summary
    }
}

/// What the workloads did and what the checker saw.
pub struct Summary {
    pub transfers: WriterStats,
    pub updates: WriterStats,
    pub bank: BankReport,
    /// Target rows whose `doc` and `meta` are both over 2 kB, of all rows.
    pub toasted: u64,
    pub rows: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "workloads: {} bank transfers, {} TOAST-row transactions committed; {}; target rows \
             keeping both large values: {} of {}",
            self.transfers.committed, self.updates.committed, self.bank, self.toasted, self.rows
        )
    }
}
