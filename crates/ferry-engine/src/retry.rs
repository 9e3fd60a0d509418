//! Exponential backoff for transient failures, with a time limit per streak of failures.
//!
//! A *streak* starts with the first transient failure after a healthy period. Each retry
//! waits twice as long as the previous one, from `initial_backoff` up to `max_backoff`.
//! Once a failure happens more than `give_up_after` after the streak's first one, the
//! changefeed gives up (state `failed`). An attempt that stays healthy for `max_backoff`
//! ends the streak, so a changefeed that fails once a day never accumulates toward the limit.

use std::time::Duration;

use tokio::time::Instant;

use crate::options::RetryPolicy;

/// What to do after a transient failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Retry after this delay; `attempt` counts the retries of this streak from 1.
    Retry { delay: Duration, attempt: u32 },
    /// Retried for longer than the policy allows.
    GiveUp { retried_for: Duration },
}

/// The retry state of one changefeed task.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    streak_started: Option<Instant>,
    next_delay: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Backoff {
            policy,
            streak_started: None,
            next_delay: policy.initial_backoff,
            attempt: 0,
        }
    }

    /// An attempt that started at `attempt_started` failed transiently at `now`.
    pub(crate) fn on_failure(&mut self, attempt_started: Instant, now: Instant) -> Decision {
        if now.saturating_duration_since(attempt_started) >= self.policy.max_backoff {
            // The attempt was healthy for a while: this failure starts a new streak.
            self.streak_started = None;
        }
        let started = *self.streak_started.get_or_insert_with(|| {
            self.next_delay = self.policy.initial_backoff;
            self.attempt = 0;
            now
        });
        let retried_for = now.saturating_duration_since(started);
        if retried_for > self.policy.give_up_after {
            return Decision::GiveUp { retried_for };
        }
        let delay = self.next_delay.min(self.policy.max_backoff);
        self.next_delay = (delay * 2).min(self.policy.max_backoff);
        self.attempt += 1;
        Decision::Retry {
            delay,
            attempt: self.attempt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            give_up_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn delays_double_up_to_the_maximum_then_give_up() {
        let mut b = Backoff::new(policy());
        let t0 = Instant::now();
        let mut now = t0;
        let mut delays = Vec::new();
        loop {
            // Each attempt fails right away.
            match b.on_failure(now, now) {
                Decision::Retry { delay, attempt } => {
                    assert_eq!(attempt as usize, delays.len() + 1);
                    delays.push(delay.as_secs());
                    now += delay;
                }
                Decision::GiveUp { retried_for } => {
                    assert!(retried_for > Duration::from_secs(30));
                    break;
                }
            }
        }
        // Failures at 0, 1, 3, 7, 15, 23 s retry; the one at 31 s is past the 30 s limit.
        assert_eq!(delays, vec![1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn a_healthy_attempt_ends_the_streak() {
        let mut b = Backoff::new(policy());
        let t0 = Instant::now();
        assert!(matches!(
            b.on_failure(t0, t0),
            Decision::Retry { attempt: 1, .. }
        ));
        let t1 = t0 + Duration::from_secs(1);
        assert!(matches!(
            b.on_failure(t1, t1),
            Decision::Retry { attempt: 2, .. }
        ));
        // The next attempt runs for 10 s (> max_backoff) before failing, 100 s later.
        let t2 = t0 + Duration::from_secs(100);
        assert_eq!(
            b.on_failure(t2 - Duration::from_secs(10), t2),
            Decision::Retry {
                delay: Duration::from_secs(1),
                attempt: 1
            }
        );
    }

    #[test]
    fn zero_limit_gives_up_on_the_second_failure() {
        let mut b = Backoff::new(RetryPolicy {
            give_up_after: Duration::ZERO,
            ..policy()
        });
        let t0 = Instant::now();
        assert!(matches!(b.on_failure(t0, t0), Decision::Retry { .. }));
        let t1 = t0 + Duration::from_secs(1);
        assert!(matches!(b.on_failure(t1, t1), Decision::GiveUp { .. }));
    }
}
