//! Online diffs with repair (Vitess's VDiff for Ferry): prove a changefeed's target equals
//! its source while the changefeed runs, and fix what differs.
//!
//! ```text
//! per table, per chunk (a range of its key, planned by the source):
//!   source snapshot at P ─► rows ─► key → hash ┐
//!   wait: checkpoint covers P                  ├─► compare ─► suspects ─► re-check ×3
//!   target (TargetReader) ─► rows ─► key → hash┘                           │
//!                                     persistent differences: counted, sampled, repaired
//! ```
//!
//! # Consistency
//! A chunk is read on the source inside a snapshot at position `P`, then on the target
//! once the changefeed's checkpoint covers `P`: the target then holds everything the
//! snapshot holds, and perhaps changes made after it. Those show up as differences that
//! vanish on a re-check: each suspect chunk is read again (a newer snapshot, a new wait)
//! up to [`task::RECHECKS`] times, and only keys that differ every time are reported.
//! Rows are compared by a hash of their values in canonical text (what the connectors
//! read), so a diff across database kinds compares values, not encodings.
//!
//! # Repair
//! With `repair`, the keys that differ are read again from the source and handed to the
//! changefeed's applier, which writes them between source transactions in one target
//! transaction (see `runner/repair.rs` for why that cannot race the stream). Tables
//! without a key cannot be repaired row by row: a diff refuses `repair` for them.
//!
//! # Persistence
//! A diff is a document in [`ferry_meta::Collection::Diffs`] (key
//! `namespace/id/diff_id`) holding its plan, the chunks done and what they found, saved
//! after every chunk: a restart (even `kill -9`) resumes running diffs from their last
//! finished chunk.
//!
//! - `ops.rs`: create, list, get, stop, resume, delete, restore (the [`crate::Engine`]
//!   methods). `task.rs`: a running diff. `compare.rs`: the comparison of one chunk.

mod compare;
mod ops;
mod task;

use ferry_core::{TableId, TablePlan};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Keys of each kind a diff shows per table.
pub(crate) const SAMPLE_KEYS: usize = 100;

/// Rows per chunk when the request does not say.
pub const DEFAULT_ROWS_PER_CHUNK: u64 = 10_000;

/// Where a diff is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiffState {
    /// Comparing (or waiting for the changefeed to catch up).
    Running,
    /// Every chunk compared.
    Finished,
    /// Stopped by an operator; resumable.
    Stopped,
    /// Ended by an error (in `error`); resumable.
    Failed,
}

/// What an operator asks a diff to do.
#[derive(Clone, Debug, Default)]
pub struct DiffOptions {
    /// The tables to compare (every table of the changefeed when `None`).
    pub tables: Option<Vec<TableId>>,
    /// Fix what differs through the changefeed's sink.
    pub repair: bool,
    /// Rows per chunk ([`DEFAULT_ROWS_PER_CHUNK`] when `None`).
    pub rows_per_chunk: Option<u64>,
    /// Most source rows compared per second (unlimited when `None`).
    pub rate_limit: Option<u64>,
}

/// A diff: what was asked, how far it is, and what it found.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Diff {
    /// The diff's id within its changefeed.
    pub id: String,
    /// The changefeed's id.
    pub changefeed: String,
    /// `running`, `finished`, `stopped` or `failed`.
    pub state: DiffState,
    /// Whether it repairs what it finds.
    pub repair: bool,
    /// Rows per chunk it aims for.
    pub rows_per_chunk: u64,
    /// Most source rows compared per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u64>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How far it is.
    pub progress: DiffProgress,
    /// What it found, per table.
    pub tables: Vec<TableDiff>,
}

/// How far a diff is.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct DiffProgress {
    /// Tables to compare.
    pub tables: u32,
    /// Tables compared.
    pub tables_done: u32,
    /// Chunks to compare.
    pub chunks: u64,
    /// Chunks compared.
    pub chunks_done: u64,
    /// Source rows compared.
    pub rows_compared: u64,
    /// Seconds left at the pace so far, while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
}

/// What a diff found in one table.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TableDiff {
    /// `schema.table`.
    pub table: String,
    /// Rows on the source, not on the target.
    pub missing: u64,
    /// Rows on the target, not on the source.
    pub extra: u64,
    /// Rows on both whose values differ.
    pub different: u64,
    /// Up to 100 keys of each kind.
    pub sample_keys: SampleKeys,
    /// Whether the diff repaired rows of this table.
    pub repaired: bool,
    /// Chunks the table is compared in.
    pub chunks: u32,
    /// Chunks compared.
    pub chunks_done: u32,
}

/// Keys of rows that differ, as text: a key's value, or `(a, b)` for a key of several
/// columns; for a table without a key, the whole row.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct SampleKeys {
    /// Keys of rows missing on the target.
    pub missing: Vec<String>,
    /// Keys of rows only the target has.
    pub extra: Vec<String>,
    /// Keys of rows that differ.
    pub different: Vec<String>,
}

/// A diff as stored: what it shows, and its plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DiffRecord {
    pub(crate) diff: Diff,
    /// One plan per table of `diff.tables`, in the same order.
    pub(crate) plans: Vec<TablePlan>,
}

/// The store key of a diff.
pub(crate) fn diff_key(namespace: &str, id: &str, diff_id: &str) -> String {
    format!("{namespace}/{id}/{diff_id}")
}
