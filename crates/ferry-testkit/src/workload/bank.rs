//! The bank: transfers between accounts, whose total never changes.
//!
//! `bank_accounts (id, balance)` starts with every account at [`INITIAL_BALANCE`];
//! every transaction moves money between accounts and logs it in `bank_transfers`, so any
//! committed state of the source holds the same total. Most transactions move money from one
//! account to another; one in ten pays many accounts from one (a wider transaction). A target
//! that applies source transactions atomically, with its checkpoint in the same target
//! transaction, shows that total in every consistent read; a [`BankChecker`] reads it every
//! second while the load runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Writer;
use crate::PgCluster;

/// The tables of the bank.
pub const TABLES: [&str; 2] = ["bank_accounts", "bank_transfers"];

/// Every account's balance at the start.
pub const INITIAL_BALANCE: i64 = 1_000;

/// The bank on one source database.
#[derive(Clone, Debug)]
pub struct Bank {
    uri: String,
    accounts: i64,
}

impl Bank {
    /// Creates the bank's tables in `db` with `accounts` accounts (at least 2).
    pub fn create(source: &PgCluster, db: &str, accounts: i64) -> Bank {
        assert!(accounts >= 2, "a bank needs two accounts");
        source.psql(
            db,
            &format!(
                "CREATE TABLE bank_accounts (id int PRIMARY KEY, balance bigint NOT NULL);
                 CREATE TABLE bank_transfers (id bigserial PRIMARY KEY, from_id int NOT NULL,
                     to_id int NOT NULL, amount bigint NOT NULL,
                     at timestamptz NOT NULL DEFAULT now());
                 INSERT INTO bank_accounts SELECT g, {INITIAL_BALANCE}
                     FROM generate_series(1, {accounts}) g"
            ),
        );
        Bank {
            uri: source.uri(db),
            accounts,
        }
    }

    /// The number of accounts.
    pub fn accounts(&self) -> i64 {
        self.accounts
    }

    /// The total every consistent state holds.
    pub fn total(&self) -> i64 {
        self.accounts * INITIAL_BALANCE
    }

    /// Starts `clients` writers with `pause` between two transactions of each.
    pub fn start_writer(&self, clients: usize, pause: Duration) -> Writer {
        let accounts = self.accounts as u64;
        Writer::start(
            &self.uri,
            clients,
            pause,
            move |client, mut rng| async move {
                client.batch_execute("BEGIN").await?;
                if rng.below(10) == 0 {
                    // Payday: one account pays 1 to up to 20 others, in one transaction.
                    let payer = 1 + rng.below(accounts) as i32;
                    let payees = (1 + rng.below(20)).min(accounts - 1) as i32;
                    let sql = format!(
                        "WITH paid AS (
                         SELECT ((({payer} - 1 + g) % {accounts}) + 1)::int AS id
                         FROM generate_series(1, {payees}) g),
                     moved AS (
                         UPDATE bank_accounts a SET balance = balance + CASE
                             WHEN a.id = {payer} THEN -{payees} ELSE 1 END
                         WHERE a.id = {payer} OR a.id IN (SELECT id FROM paid)
                         RETURNING a.id)
                     INSERT INTO bank_transfers (from_id, to_id, amount)
                         SELECT {payer}, id, 1 FROM paid"
                    );
                    client.batch_execute(&sql).await?;
                } else {
                    let from = 1 + rng.below(accounts) as i32;
                    let to = 1 + ((from as u64 + rng.below(accounts - 1)) % accounts) as i32;
                    let amount = 1 + rng.below(100) as i64;
                    // Lower id first: two transfers between the same accounts lock in one order.
                    let (first, second) = if from < to {
                        ((from, -amount), (to, amount))
                    } else {
                        ((to, amount), (from, -amount))
                    };
                    for (id, delta) in [first, second] {
                        client
                            .execute(
                                "UPDATE bank_accounts SET balance = balance + $2 WHERE id = $1",
                                &[&id, &delta],
                            )
                            .await?;
                    }
                    client
                    .execute(
                        "INSERT INTO bank_transfers (from_id, to_id, amount) VALUES ($1, $2, $3)",
                        &[&from, &to, &amount],
                    )
                    .await?;
                }
                client.batch_execute("COMMIT").await
            },
        )
    }

    /// Starts a checker of the total on the target's database `db`, reading every `every`.
    ///
    /// Reads count only once the target's checkpoint has reached `consistent_from` (a
    /// `pg_lsn`, e.g. `0/0`): a changefeed whose snapshot was resumed after a crash copies
    /// the rest in a later snapshot and replays the stream over it, so the target is
    /// consistent only once its position has passed that snapshot's.
    pub fn start_checker(
        &self,
        target: &PgCluster,
        db: &str,
        consistent_from: &str,
        every: Duration,
    ) -> BankChecker {
        BankChecker::start(
            target.uri(db),
            self.accounts,
            self.total(),
            consistent_from.to_owned(),
            every,
        )
    }
}

/// What a [`BankChecker`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankReport {
    /// Reads that found every account and the total.
    pub held: u64,
    /// Reads that found a different total or number of accounts: each is
    /// `(checkpoint position, accounts, total)`.
    pub violations: Vec<(String, i64, i64)>,
    /// Reads not counted: the target unreachable, the table not there yet, or the checkpoint
    /// before the consistent point.
    pub skipped: u64,
}

impl std::fmt::Display for BankReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bank total checked on the target {} times while the load ran: held {}, violated {}",
            self.held + self.violations.len() as u64,
            self.held,
            self.violations.len()
        )?;
        if let Some((position, accounts, total)) = self.violations.first() {
            write!(
                f,
                " (first at checkpoint {position}: {accounts} accounts, total {total})"
            )?;
        }
        Ok(())
    }
}

/// Reads the bank's total on the target, in one repeatable-read transaction with the
/// target's checkpoint, every interval, until stopped.
pub struct BankChecker {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<BankReport>>,
    thread: Option<JoinHandle<()>>,
}

impl BankChecker {
    fn start(
        uri: String,
        accounts: i64,
        total: i64,
        consistent_from: String,
        every: Duration,
    ) -> BankChecker {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(BankReport::default()));
        let (thread_stop, thread_report) = (stop.clone(), report.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a checker runtime");
            runtime.block_on(async move {
                let mut client = None;
                while !thread_stop.load(Ordering::Relaxed) {
                    if client.is_none() {
                        client = super::connect(&uri).await;
                    }
                    let read = match &client {
                        Some(c) => tokio::time::timeout(
                            Duration::from_secs(10),
                            read_total(c, &consistent_from),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok),
                        None => None,
                    };
                    {
                        let mut report = thread_report.lock().expect("report lock");
                        match read {
                            Some(Some((position, n, sum))) => {
                                if n == accounts && sum == total {
                                    report.held += 1;
                                } else {
                                    report.violations.push((position, n, sum));
                                }
                            }
                            Some(None) => report.skipped += 1,
                            None => {
                                report.skipped += 1;
                                client = None;
                            }
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            });
        });
        BankChecker {
            stop,
            report,
            thread: Some(thread),
        }
    }

    /// What it saw so far.
    pub fn report(&self) -> BankReport {
        self.report.lock().expect("report lock").clone()
    }

    /// Stops reading and returns what it saw.
    pub fn stop(mut self) -> BankReport {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the checker thread panicked");
        }
        self.report()
    }
}

impl Drop for BankChecker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `(checkpoint, accounts, total)` in one snapshot of the target, or `None` when the target
/// has no bank yet or its checkpoint is before `consistent_from`.
async fn read_total(
    client: &tokio_postgres::Client,
    consistent_from: &str,
) -> Result<Option<(String, i64, i64)>, tokio_postgres::Error> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let exists = client
        .query_one(
            "SELECT to_regclass('bank_accounts') IS NOT NULL
                    AND to_regclass('_ferry.checkpoints') IS NOT NULL",
            &[],
        )
        .await?
        .get::<_, bool>(0);
    let mut read = None;
    if exists {
        let row = client
            .query_one(
                "SELECT (SELECT max((position::jsonb->>'value')::pg_lsn)::text
                         FROM _ferry.checkpoints),
                        (SELECT max((position::jsonb->>'value')::pg_lsn) >= $1::text::pg_lsn
                         FROM _ferry.checkpoints),
                        count(*), coalesce(sum(balance), 0)::int8
                 FROM bank_accounts",
                &[&consistent_from],
            )
            .await?;
        if row.get::<_, Option<bool>>(1) == Some(true) {
            read = Some((
                row.get::<_, Option<String>>(0).unwrap_or_default(),
                row.get(2),
                row.get(3),
            ));
        }
    }
    client.batch_execute("COMMIT").await?;
    Ok(read)
}
