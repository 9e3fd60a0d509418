//! Deadline-bounded polling for conditions that become true eventually.
//!
//! Replication is asynchronous: after a test writes upstream it has to wait for the change to
//! arrive downstream. These helpers poll a condition until it holds and panic, naming what was
//! awaited, when the deadline passes, so a stuck test fails with a message instead of hanging.

use std::future::Future;
use std::thread;
use std::time::{Duration, Instant};

/// How long to sleep between two checks: short enough not to slow tests, long enough not to
/// spin a core that the servers under test need.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Calls `condition` until it returns `true`; panics with `what` after `timeout`.
///
/// The condition is always checked at least once, and once more after the deadline, so a
/// slow final check still counts.
pub fn wait_for<F: FnMut() -> bool>(what: &str, timeout: Duration, mut condition: F) {
    let deadline = Instant::now() + timeout;
    loop {
        let timed_out = Instant::now() >= deadline;
        if condition() {
            return;
        }
        if timed_out {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Awaits `condition()` until it yields `true`; panics with `what` after `timeout`.
///
/// Uses tokio's clock, so it cooperates with `tokio::time::pause()`.
pub async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let timed_out = tokio::time::Instant::now() >= deadline;
        if condition().await {
            return;
        }
        if timed_out {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_returns_once_the_condition_holds() {
        let mut calls = 0;
        wait_for("three calls", Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        });
        assert_eq!(calls, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn wait_for_panics_with_what_on_timeout() {
        wait_for("the impossible", Duration::from_millis(60), || false);
    }

    #[tokio::test]
    async fn wait_for_async_returns_once_the_condition_holds() {
        let start = tokio::time::Instant::now();
        wait_for_async("50ms to pass", Duration::from_secs(5), || async move {
            start.elapsed() >= Duration::from_millis(50)
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for never")]
    async fn wait_for_async_panics_on_timeout() {
        wait_for_async("never", Duration::from_millis(60), || async { false }).await;
    }
}
