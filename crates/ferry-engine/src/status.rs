//! What a changefeed is doing now, as the API shows it.
//!
//! A runner writes into its changefeed's [`StatusCell`]; the API reads snapshots of it. When
//! a task stops (pause, failure, finish, shutdown) the cell's last values are persisted with
//! the lifecycle, so a settled changefeed still shows its checkpoint and table progress
//! after a server restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_core::{Position, TableId};

use serde::{Deserialize, Serialize};

/// A message with the time it was recorded (microseconds since the Unix epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timed {
    /// The text (no secrets).
    pub message: String,
    /// When.
    pub at_us: i64,
}

/// A changefeed's lifecycle state (see [`crate::lifecycle`] for the transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedState {
    /// Created and not started, or stopped by an operator.
    Stopped,
    /// Replicating.
    Running,
    /// Paused by an operator; the slot keeps the source's WAL until it resumes.
    Paused,
    /// A transient failure; retrying with backoff (see `last_warning`).
    Error,
    /// A definite failure, or retries exhausted; needs an operator (see `last_error`).
    Failed,
    /// The `target_position` was reached, or a snapshot-only copy completed.
    Finished,
}

impl FeedState {
    /// Every state, in documentation order.
    pub const ALL: [FeedState; 6] = [
        FeedState::Stopped,
        FeedState::Running,
        FeedState::Paused,
        FeedState::Error,
        FeedState::Failed,
        FeedState::Finished,
    ];

    /// The state's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedState::Stopped => "stopped",
            FeedState::Running => "running",
            FeedState::Paused => "paused",
            FeedState::Error => "error",
            FeedState::Failed => "failed",
            FeedState::Finished => "finished",
        }
    }
}

impl std::fmt::Display for FeedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FeedState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FeedState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// Which part of the job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Copying the tables' existing rows.
    Snapshot,
    /// Applying the change stream.
    Streaming,
}

/// Where one table's snapshot copy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TableState {
    /// Not copied yet.
    Pending,
    /// Being copied.
    Copying,
    /// Copied; its changes stream.
    Streaming,
    /// Being copied again (a re-sync, or a paused or failed table resumed); its changes
    /// stream once the copy is done.
    Resyncing,
    /// Paused by an operator: its changes are not applied; resuming copies it again.
    Paused,
    /// The target refused its changes and the changefeed parked it (`on_table_error:
    /// park`): see `error`; resuming copies it again.
    Failed,
}

impl TableState {
    /// Every state, in the order a table goes through them.
    pub const ALL: [TableState; 6] = [
        TableState::Pending,
        TableState::Copying,
        TableState::Streaming,
        TableState::Resyncing,
        TableState::Paused,
        TableState::Failed,
    ];

    /// Its name in the API (`pending`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TableState::Pending => "pending",
            TableState::Copying => "copying",
            TableState::Streaming => "streaming",
            TableState::Resyncing => "resyncing",
            TableState::Paused => "paused",
            TableState::Failed => "failed",
        }
    }
}

/// Snapshot progress of one table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TableProgress {
    /// `schema.table`.
    pub table: String,
    /// Pending, copying or copied.
    pub state: TableState,
    /// Rows copied so far.
    pub rows_copied: u64,
    /// The source's row estimate when the copy was planned.
    pub rows_estimated: u64,
    /// Chunks copied.
    pub chunks_done: u32,
    /// Chunks planned.
    pub chunks_total: u32,
    /// Row changes the stream applied to it (since the server started).
    #[serde(default)]
    pub rows_applied: u64,
    /// Seconds its target table is behind the source: the stream's lag for a `copied`
    /// table (one stream serves them all); none while it is copied, paused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Why the table is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The live, mutable part, shared between a runner and the API.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) state: FeedState,
    pub(crate) phase: Phase,
    /// The durable position (last committed batch, or idle position confirmed).
    pub(crate) checkpoint: Option<Position>,
    /// Source time of the checkpoint, microseconds since the Unix epoch.
    pub(crate) checkpoint_time_us: Option<i64>,
    /// Whether everything received has been applied and nothing is in flight.
    pub(crate) caught_up: bool,
    pub(crate) last_error: Option<Timed>,
    /// The commit position of the source transaction the target refused (`last_error`).
    pub(crate) last_error_position: Option<Position>,
    pub(crate) last_warning: Option<Timed>,
    pub(crate) warnings: Vec<String>,
    pub(crate) tables: Vec<TableProgress>,
    pub(crate) rows_applied: u64,
    pub(crate) transactions_applied: u64,
    /// WAL the slot holds back on the source, as last measured.
    pub(crate) retained_wal_bytes: Option<u64>,
    /// What the slot monitor last found wrong with the slot (too much WAL held, about to be
    /// or already invalidated, gone); shown after `warnings`.
    pub(crate) slot_warning: Option<String>,
    /// Tables whose target copy misses changes (see `ChangefeedStatus::divergent_tables`).
    pub(crate) divergent_tables: Vec<String>,
}

/// A handle to a changefeed's live status.
#[derive(Clone, Debug)]
pub(crate) struct StatusCell(Arc<Mutex<Live>>);

impl StatusCell {
    /// The changefeed's durable position.
    pub(crate) fn checkpoint(&self) -> Option<Position> {
        self.update(|s| s.checkpoint.clone())
    }

    pub(crate) fn new(state: FeedState, phase: Phase) -> Self {
        StatusCell(Arc::new(Mutex::new(Live {
            state,
            phase,
            checkpoint: None,
            checkpoint_time_us: None,
            caught_up: false,
            last_error: None,
            last_error_position: None,
            last_warning: None,
            warnings: Vec::new(),
            tables: Vec::new(),
            rows_applied: 0,
            transactions_applied: 0,
            retained_wal_bytes: None,
            slot_warning: None,
            divergent_tables: Vec::new(),
        })))
    }

    /// Runs `f` on the live status.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut Live) -> R) -> R {
        let mut live = self
            .0
            .lock()
            .expect("status lock is never poisoned: no panics inside");
        f(&mut live)
    }

    /// The current state.
    pub(crate) fn state(&self) -> FeedState {
        self.update(|live| live.state)
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// RFC 3339 text of a Unix-epoch microsecond time.
pub fn rfc3339(us: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The status document of `GET /changefeeds/{id}/status`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ChangefeedStatus {
    /// Changefeed id.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Lifecycle state.
    pub state: FeedState,
    /// Snapshot or streaming.
    pub phase: Phase,
    /// The durable source position (`0/16B3748`), if any.
    pub checkpoint_position: Option<String>,
    /// Source commit time of the checkpoint (RFC 3339).
    pub checkpoint_time: Option<String>,
    /// Seconds the target is behind the source (0 when caught up).
    pub lag_seconds: Option<f64>,
    /// The last definite error, with a hint.
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_time: Option<String>,
    /// When the target refused one source transaction: its commit position, in the form
    /// `POST …/skip` takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_position: Option<String>,
    /// The last transient error (retried).
    pub last_warning: Option<String>,
    /// When `last_warning` happened.
    pub last_warning_time: Option<String>,
    /// Standing warnings (e.g. tables whose updates cannot be replicated).
    pub warnings: Vec<String>,
    /// Row changes applied by the stream (since the server started).
    pub rows_applied: u64,
    /// Source transactions applied by the stream (since the server started).
    pub transactions_applied: u64,
    /// Snapshot rows copied.
    pub snapshot_rows_copied: u64,
    /// Snapshot rows the source estimated.
    pub snapshot_rows_estimated: u64,
    /// Log the source keeps for this changefeed (PostgreSQL: WAL its slot holds back), in
    /// bytes, as last measured.
    pub source_retained_bytes: Option<u64>,
    /// The same value under its earlier name, kept for existing clients.
    #[schema(deprecated)]
    pub slot_retained_wal_bytes: Option<u64>,
    /// Snapshot progress by table.
    pub tables: Vec<TableProgress>,
    /// Tables whose target copy is known to miss changes: keyless tables streamed
    /// insert-only (REPLICA IDENTITY DEFAULT) before a key or REPLICA IDENTITY FULL was set.
    /// A warning says how to re-copy them.
    pub divergent_tables: Vec<String>,
    /// When the changefeed was created (RFC 3339).
    pub created_at: String,
}

impl StatusCell {
    pub(crate) fn snapshot(
        &self,
        id: &str,
        namespace: &str,
        created_at_us: i64,
    ) -> ChangefeedStatus {
        self.update(|live| {
            let lag_seconds = match (live.phase, live.checkpoint_time_us) {
                (Phase::Streaming, _) if live.caught_up => Some(0.0),
                (Phase::Streaming, Some(t)) => Some(((now_us() - t).max(0) as f64) / 1e6),
                _ => None,
            };
            ChangefeedStatus {
                id: id.to_string(),
                namespace: namespace.to_string(),
                state: live.state,
                phase: live.phase,
                checkpoint_position: live.checkpoint.as_ref().map(ToString::to_string),
                checkpoint_time: live.checkpoint_time_us.map(rfc3339),
                lag_seconds,
                last_error: live.last_error.as_ref().map(|e| e.message.clone()),
                last_error_time: live.last_error.as_ref().map(|e| rfc3339(e.at_us)),
                last_error_position: live.last_error_position.as_ref().map(ToString::to_string),
                last_warning: live.last_warning.as_ref().map(|e| e.message.clone()),
                last_warning_time: live.last_warning.as_ref().map(|e| rfc3339(e.at_us)),
                warnings: live
                    .warnings
                    .iter()
                    .chain(&live.slot_warning)
                    .cloned()
                    .collect(),
                rows_applied: live.rows_applied,
                transactions_applied: live.transactions_applied,
                snapshot_rows_copied: live.tables.iter().map(|t| t.rows_copied).sum(),
                snapshot_rows_estimated: live.tables.iter().map(|t| t.rows_estimated).sum(),
                source_retained_bytes: live.retained_wal_bytes,
                slot_retained_wal_bytes: live.retained_wal_bytes,
                tables: live
                    .tables
                    .iter()
                    .map(|t| TableProgress {
                        lag_seconds: (t.state == TableState::Streaming)
                            .then_some(lag_seconds)
                            .flatten(),
                        ..t.clone()
                    })
                    .collect(),
                divergent_tables: live.divergent_tables.clone(),
                created_at: rfc3339(created_at_us),
            }
        })
    }
}

/// Progress of `table` in a list.
pub(crate) fn table_entry<'a>(
    tables: &'a mut [TableProgress],
    table: &TableId,
) -> Option<&'a mut TableProgress> {
    let name = table.to_string();
    tables.iter_mut().find(|t| t.table == name)
}
