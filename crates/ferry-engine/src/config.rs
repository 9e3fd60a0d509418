//! A changefeed's configuration: what the operator asked for.

use ferry_core::{
    ConnectionUri, DdlPolicy, ExistingTarget, PartitionMode, Position, SinkUri, TableFilter,
};
use serde::{Deserialize, Serialize};

/// Default snapshot copy workers: enough to keep a target busy while one worker waits on
/// the source, few enough for a small machine.
pub const DEFAULT_SNAPSHOT_WORKERS: usize = 4;
/// Default most row changes in one target transaction.
pub const DEFAULT_BATCH_MAX_ROWS: usize = 20_000;
/// Default longest a batch stays open while more changes keep arriving (milliseconds).
pub const DEFAULT_BATCH_MAX_WAIT_MS: u64 = 200;

/// A configuration that is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The id does not match `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`.
    #[error("id {0:?} is invalid: use 1-128 letters, digits, '_' or '-', starting with a letter or digit")]
    InvalidId(String),
    /// A name is longer than the server allows.
    #[error("{field} is {len} bytes long; this server allows at most {max}")]
    NameTooLong {
        /// Which name.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An option is out of range.
    #[error("{field} {problem}")]
    InvalidOption {
        /// The option's path.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Whether a changefeed copies its tables before streaming.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Copy every table, then stream from the copy's consistent point.
    #[default]
    Initial,
    /// Copy nothing: stream from the slot's creation. Rows that existed before are not
    /// copied; the target must already hold them (the user copied them).
    Never,
}

/// How much of a source table's definition the tables Ferry creates get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaMode {
    /// Columns and key, then once copied: generated columns, defaults, identity and
    /// sequences, secondary indexes, UNIQUE/CHECK/EXCLUDE constraints, comments.
    #[default]
    Full,
    /// Columns (with NOT NULL) and the key only: for targets that want only the data.
    Tables,
}

/// Tuning knobs and target handling; every one has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Parallel snapshot copy workers.
    pub snapshot_workers: usize,
    /// Most row changes in one target transaction.
    pub batch_max_rows: usize,
    /// Longest a batch stays open while changes keep arriving, in milliseconds.
    pub batch_max_wait_ms: u64,
    /// What to do with rows of a target table that existed before the changefeed:
    /// `fail` (refuse a table that is not empty), `truncate` (empty it before the copy) or
    /// `append` (keep the rows; the copy and the stream upsert by key).
    #[schema(value_type = String, example = "fail")]
    pub existing_target: ExistingTarget,
    /// `initial` (copy the tables, then stream) or `never` (stream from the slot's
    /// creation; rows that existed before are not copied).
    #[schema(value_type = String, example = "initial")]
    pub snapshot: SnapshotMode,
    /// Writes a heartbeat message into the source's WAL every this many milliseconds while
    /// streaming, so the slot's position moves on a database whose writes are all to tables
    /// the changefeed does not replicate. Off (`null`) by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Most WAL the slot may hold on the source, in bytes, before
    /// `on_retained_wal_exceeded` applies. Off (`null`) by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retained_wal_bytes: Option<u64>,
    /// What happens past `max_retained_wal_bytes`: `pause` (the changefeed is paused and
    /// keeps its slot, which still holds the WAL) or `drop_slot` (the slot is dropped so the
    /// source frees its WAL, and the changefeed fails: its tables must be copied anew).
    #[schema(value_type = String, example = "pause")]
    pub on_retained_wal_exceeded: RetainedWalAction,
    /// `full` (tables Ferry creates get the source's indexes, constraints, defaults,
    /// identity, generated columns and comments) or `tables` (columns and key only).
    #[schema(value_type = String, example = "full")]
    pub schema: SchemaMode,
    /// Schema changes on the source: `apply` (follow what can be followed exactly, stop on
    /// the rest) or `stop` (change nothing on the target; stop until it matches again).
    /// See docs/ddl.md.
    #[schema(value_type = String, example = "apply")]
    pub ddl: DdlPolicy,
    /// Whether a snapshot chunk may travel in a bulk format the source and the sink share
    /// (PostgreSQL to PostgreSQL: COPY text passed through undecoded). `false` sends every
    /// chunk as rows of typed values, the path any source and sink pair takes.
    pub snapshot_bulk: bool,
    /// When the target refuses one source transaction that changes a single table:
    /// `stop` the changefeed (`failed`, the default) or `park` that table (its state
    /// `failed` with the error, its changes no longer applied) while the others go on.
    /// See docs/operations.md.
    #[schema(value_type = String, example = "stop")]
    pub on_table_error: TableErrorPolicy,
    /// `root` (a partitioned table replicates through its root into one target table) or
    /// `leaves` (every leaf partition into a target table of its own, named as the leaf).
    /// Cannot change after creation.
    #[schema(value_type = String, example = "root")]
    pub partitions: PartitionMode,
}

/// What a changefeed does when the target refuses one table's changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableErrorPolicy {
    /// The changefeed fails.
    #[default]
    Stop,
    /// The table is parked; the others go on.
    Park,
}

/// What a changefeed does when its slot holds more WAL than `max_retained_wal_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetainedWalAction {
    /// Pause the changefeed; the slot stays (and keeps the WAL) until it is resumed or
    /// deleted.
    #[default]
    Pause,
    /// Drop the slot to free the source's disk and fail the changefeed (re-sync needed).
    DropSlot,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            snapshot_workers: DEFAULT_SNAPSHOT_WORKERS,
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            batch_max_wait_ms: DEFAULT_BATCH_MAX_WAIT_MS,
            existing_target: ExistingTarget::Fail,
            snapshot: SnapshotMode::Initial,
            heartbeat_interval_ms: None,
            max_retained_wal_bytes: None,
            on_retained_wal_exceeded: RetainedWalAction::Pause,
            schema: SchemaMode::Full,
            ddl: DdlPolicy::Apply,
            snapshot_bulk: true,
            on_table_error: TableErrorPolicy::Stop,
            partitions: PartitionMode::Root,
        }
    }
}

/// One changefeed's static configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangefeedConfig {
    /// Unique within its namespace.
    pub id: String,
    /// Tenant namespace.
    pub namespace: String,
    /// The named source this changefeed reads from, if it names one (then `source_uri` is
    /// that source's URI, kept up to date when the source changes).
    #[serde(default)]
    pub source: Option<String>,
    /// The source database (password inside; prints masked).
    pub source_uri: ConnectionUri,
    /// The sink.
    pub sink_uri: SinkUri,
    /// Table rules; empty selects every table of every non-system schema. The selection
    /// is [`ChangefeedConfig::filter`], which adds `options.partitions`.
    pub tables: TableFilter,
    /// Tuning.
    #[serde(default)]
    pub options: Options,
    /// Finish once every transaction committed at or before this position is applied.
    #[serde(default)]
    pub target_position: Option<Position>,
    /// Copy the tables once and finish, without streaming changes.
    #[serde(default)]
    pub snapshot_only: bool,
    /// Creation time, microseconds since the Unix epoch.
    pub created_at_us: i64,
}

impl ChangefeedConfig {
    /// The tables this changefeed replicates: the rules of `tables`, partitioned tables
    /// handled as `options.partitions` says. Every question about the selection (to a
    /// connector, or of a table's name) goes through it.
    pub fn filter(&self) -> TableFilter {
        self.tables.clone().with_partitions(self.options.partitions)
    }

    /// Whether the changefeed copies tables (then `existing_target` applies to their rows).
    pub fn copies(&self) -> bool {
        self.options.snapshot == SnapshotMode::Initial
    }

    /// What the sink does with rows already in a table: kept when nothing is copied.
    pub fn existing_target(&self) -> ExistingTarget {
        if self.copies() {
            self.options.existing_target
        } else {
            ExistingTarget::Append
        }
    }

    /// `namespace/id`: the key of everything stored about this changefeed.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.id)
    }

    /// Checks everything that needs no I/O; names may be at most `max_name_length` bytes.
    pub fn validate(&self, max_name_length: usize) -> Result<(), ConfigError> {
        validate_id(&self.id)?;
        validate_name_length("id", &self.id, max_name_length)?;
        validate_name_length("namespace", &self.namespace, max_name_length)?;
        if self.options.snapshot_workers == 0 || self.options.snapshot_workers > 64 {
            return Err(ConfigError::InvalidOption {
                field: "options.snapshot_workers",
                problem: "must be between 1 and 64",
            });
        }
        if self.options.batch_max_rows == 0 {
            return Err(ConfigError::InvalidOption {
                field: "options.batch_max_rows",
                problem: "must be > 0",
            });
        }
        if self.options.batch_max_wait_ms > MAX_BATCH_WAIT_MS {
            return Err(ConfigError::InvalidOption {
                field: "options.batch_max_wait_ms",
                problem: "must be at most 3600000 (one hour)",
            });
        }
        if let Some(ms) = self.options.heartbeat_interval_ms {
            if !(MIN_HEARTBEAT_INTERVAL_MS..=MAX_HEARTBEAT_INTERVAL_MS).contains(&ms) {
                return Err(ConfigError::InvalidOption {
                    field: "options.heartbeat_interval_ms",
                    problem: "must be between 100 and 86400000 (one day)",
                });
            }
        }
        if self.options.max_retained_wal_bytes == Some(0) {
            return Err(ConfigError::InvalidOption {
                field: "options.max_retained_wal_bytes",
                problem: "must be > 0 (omit it to turn the limit off)",
            });
        }
        if self.options.snapshot == SnapshotMode::Never {
            if self.snapshot_only {
                return Err(ConfigError::InvalidOption {
                    field: "options.snapshot",
                    problem:
                        "never cannot be combined with snapshot_only (nothing would be copied)",
                });
            }
            if self.options.existing_target == ExistingTarget::Truncate {
                return Err(ConfigError::InvalidOption {
                    field: "options.existing_target",
                    problem: "truncate cannot be combined with snapshot never (the target would be emptied and nothing copied)",
                });
            }
        }
        if self.snapshot_only && self.target_position.is_some() {
            return Err(ConfigError::InvalidOption {
                field: "target_position",
                problem: "cannot be combined with snapshot_only (a snapshot-only changefeed never streams)",
            });
        }
        Ok(())
    }
}

/// Longest batch wait accepted: longer would hold a source transaction's changes back
/// for no gain.
const MAX_BATCH_WAIT_MS: u64 = 3_600_000;

/// Shortest heartbeat interval: a WAL record every 100 ms is already far more than a slot
/// needs.
const MIN_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Longest heartbeat interval accepted.
const MAX_HEARTBEAT_INTERVAL_MS: u64 = 86_400_000;

/// Checks that `name` (the `field`) is at most `max` bytes.
pub fn validate_name_length(
    field: &'static str,
    name: &str,
    max: usize,
) -> Result<(), ConfigError> {
    if name.len() > max {
        return Err(ConfigError::NameTooLong {
            field,
            len: name.len(),
            max,
        });
    }
    Ok(())
}

/// Checks an id (or namespace) against `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`.
pub fn validate_id(id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidId(id.chars().take(140).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_length_limit() {
        assert!(validate_name_length("id", "abcd", 4).is_ok());
        assert_eq!(
            validate_name_length("id", "abcde", 4)
                .unwrap_err()
                .to_string(),
            "id is 5 bytes long; this server allows at most 4"
        );
    }

    #[test]
    fn snapshot_never_keeps_existing_rows_and_refuses_what_contradicts_it() {
        let config = |options: serde_json::Value, snapshot_only: bool| {
            serde_json::from_value::<ChangefeedConfig>(serde_json::json!({
                "id": "a", "namespace": "default",
                "source_uri": "postgres://u@h/db", "sink_uri": "blackhole://",
                "tables": [], "options": options, "snapshot_only": snapshot_only,
                "created_at_us": 0,
            }))
            .unwrap()
        };
        let default = config(serde_json::json!({}), false);
        assert!(default.copies());
        assert_eq!(default.existing_target(), ExistingTarget::Fail);
        let never = config(serde_json::json!({"snapshot": "never"}), false);
        assert!(never.validate(128).is_ok());
        assert!(!never.copies());
        assert_eq!(never.existing_target(), ExistingTarget::Append);
        for (options, only, field) in [
            (
                serde_json::json!({"snapshot": "never"}),
                true,
                "options.snapshot",
            ),
            (
                serde_json::json!({"snapshot": "never", "existing_target": "truncate"}),
                false,
                "options.existing_target",
            ),
        ] {
            let err = config(options, only).validate(128).unwrap_err();
            assert!(err.to_string().starts_with(field), "{err}");
        }
        assert!(
            serde_json::from_value::<Options>(serde_json::json!({"existing_target": "keep"}))
                .is_err()
        );
    }

    #[test]
    fn ids() {
        for ok in ["a", "orders", "A-1_b", &"x".repeat(128)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "a b", "a/b", "ä", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
