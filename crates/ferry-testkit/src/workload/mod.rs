//! Write workloads for fault tests, besides pgbench: each one creates its tables on the
//! source, then writes from background threads until stopped, riding out source restarts
//! (a failed transaction is rolled back and the writer reconnects).
//!
//! - [`bank`]: transfers between accounts whose total never changes; a [`bank::BankChecker`]
//!   reads the total on the target every second, in one target transaction, while the load
//!   runs: every consistent state the target ever shows must hold it.
//! - [`toast`]: rows with large (TOASTed, > 2 kB) `text` and `jsonb` values, mostly updated
//!   in their other columns, so pgoutput sends "unchanged TOAST" markers instead of the
//!   values; the target must keep the large values.
//!
//! ```text
//!  Writer (N threads) ──► source ──► Ferry ──► target ◄── BankChecker (every second)
//! ```
//!
//! Both end with [`crate::compare_tables`], like every fault test.

pub mod bank;
pub mod toast;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// A small, seedable random number generator (xorshift64), enough for picking accounts and
/// rows; no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced: xorshift never leaves 0).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A generator seeded from the clock and `salt` (a thread number).
    pub fn from_clock(salt: u64) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64;
        Rng::new(nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// What the writer threads did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (a commit whose answer was lost counts as failed).
    pub committed: u64,
    /// Transactions that failed (connection lost, source down, deadlock) and were given up.
    pub failed: u64,
}

/// Background writer threads; [`Writer::stop`] ends them and returns what they did.
pub struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Writer {
    /// Starts `clients` threads, each with its own connection to `uri` and its own
    /// single-threaded runtime, running `transaction` in a loop with `pause` between two.
    ///
    /// `transaction` runs one transaction (it sends `BEGIN` and `COMMIT` itself). An error
    /// (or no answer for 30 s) drops the connection; the thread reconnects (every 200 ms
    /// while the source is down) and goes on.
    pub(crate) fn start<F, Fut>(
        uri: &str,
        clients: usize,
        pause: Duration,
        transaction: F,
    ) -> Writer
    where
        F: Fn(Arc<Client>, Rng) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Result<(), tokio_postgres::Error>>,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|i| {
                let (uri, stop) = (uri.to_owned(), stop.clone());
                let (committed, failed) = (committed.clone(), failed.clone());
                let transaction = transaction.clone();
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a writer runtime");
                    runtime.block_on(async move {
                        let mut rng = Rng::from_clock(i as u64 + 1);
                        let mut client: Option<Arc<Client>> = None;
                        while !stop.load(Ordering::Relaxed) {
                            let c = match &client {
                                Some(c) if !c.is_closed() => c.clone(),
                                _ => match connect(&uri).await {
                                    Some(c) => {
                                        client = Some(c.clone());
                                        c
                                    }
                                    None => {
                                        tokio::time::sleep(Duration::from_millis(200)).await;
                                        continue;
                                    }
                                },
                            };
                            let seed = rng.next_u64();
                            let run = transaction(c.clone(), Rng::new(seed));
                            match tokio::time::timeout(TRANSACTION_TIMEOUT, run).await {
                                Ok(Ok(())) => {
                                    committed.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(Err(_)) | Err(_) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                    // Whatever state the session is in, start afresh
                                    // on a new one (dropping it ends the transaction).
                                    client = None;
                                }
                            }
                            if !pause.is_zero() {
                                tokio::time::sleep(pause).await;
                            }
                        }
                    });
                })
            })
            .collect();
        Writer {
            stop,
            committed,
            failed,
            threads,
        }
    }

    /// What the threads did so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            committed: self.committed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops the threads (each finishes its transaction) and returns what they did.
    pub fn stop(mut self) -> WriterStats {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().expect("a writer thread panicked");
        }
        self.stats()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A transaction that takes longer is given up (and its connection dropped): the source is
/// unreachable.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to `uri` within 5 s, or `None`.
async fn connect(uri: &str) -> Option<Arc<Client>> {
    let connect = tokio_postgres::connect(uri, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .ok()?
        .ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(Arc::new(client))
}
