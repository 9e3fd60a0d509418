//! Settings whose values are words: the log's format and the CPU scheduling policy.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DEFAULT_LOG_LEVEL;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSettings {
    /// A tracing filter: `info`, `warn,ferry_engine=debug`, …
    pub(crate) level: String,
    /// `text` or `json`.
    pub(crate) format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: DEFAULT_LOG_LEVEL.to_string(),
            format: LogFormat::Text,
        }
    }
}

/// How the operating system schedules the server's threads (Linux; elsewhere the system's
/// default applies whatever is set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CpuScheduling {
    /// `SCHED_BATCH`: the same share of the CPU, but a thread that wakes up does not
    /// preempt the one running. On a host Ferry shares with a database, its many short
    /// wake-ups (one per message read) then never push the database's processes, such as
    /// the walsender it reads from, off a core.
    #[default]
    Batch,
    /// `SCHED_OTHER`, the system's default.
    Normal,
}

impl std::str::FromStr for CpuScheduling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "batch" => Ok(CpuScheduling::Batch),
            "normal" => Ok(CpuScheduling::Normal),
            other => Err(format!(
                "unknown CPU scheduling {other:?}: use batch or normal"
            )),
        }
    }
}

impl fmt::Display for CpuScheduling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpuScheduling::Batch => "batch",
            CpuScheduling::Normal => "normal",
        })
    }
}
