//! Process-wide engine settings, set once from the server's configuration.

use std::time::Duration;

/// Default most changefeeds one server runs: a small machine's connections and memory,
/// with room to spare.
pub const DEFAULT_MAX_CHANGEFEEDS: usize = 100;
/// Default longest changefeed id or namespace: long enough for descriptive names, short
/// enough to fit PostgreSQL's 63-byte identifiers once hashed into slot names.
pub const DEFAULT_MAX_NAME_LENGTH: usize = 128;
/// Default first retry delay after a transient failure.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Default largest retry delay: a restarted database is noticed within a minute.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Default time a changefeed keeps retrying one streak of transient failures before it is
/// `failed`: long enough for a database restart or failover, short enough that an operator
/// hears of a lasting problem the same day.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(30 * 60);

/// Default WAL a slot may hold on its source before the changefeed's status warns: 10 GB,
/// a day or more of a busy database's WAL, yet a small share of a production disk.
pub const DEFAULT_RETAINED_WAL_WARNING_BYTES: u64 = 10_000_000_000;

/// How a changefeed retries transient failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubled after each failed retry.
    pub initial_backoff: Duration,
    /// Largest delay between retries.
    pub max_backoff: Duration,
    /// A streak of failures longer than this (since its first failure) turns the changefeed
    /// `failed`. A successful run of a while resets the streak.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
        }
    }
}

/// Settings of the whole engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// Most changefeeds (all namespaces together); creating one more is refused.
    pub max_changefeeds: usize,
    /// Longest changefeed id, source name or namespace, in bytes (at most 128).
    pub max_name_length: usize,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// A changefeed whose slot holds more WAL than this on its source shows a warning in its
    /// status (the WAL stays until the changefeed confirms it, and fills the source's disk).
    pub retained_wal_warning_bytes: u64,
    /// A replication stream silent this long is probed, and a source that does not answer
    /// within it is unreachable: the changefeed reconnects (a cut network).
    pub replication_timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_changefeeds: DEFAULT_MAX_CHANGEFEEDS,
            max_name_length: DEFAULT_MAX_NAME_LENGTH,
            retry: RetryPolicy::default(),
            retained_wal_warning_bytes: DEFAULT_RETAINED_WAL_WARNING_BYTES,
            replication_timeout: std::time::Duration::from_secs(30),
        }
    }
}
