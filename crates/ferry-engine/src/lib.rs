//! A changefeed's runtime: snapshot → stream hand-off, batching, checkpoints, retries.
//! It knows no database: sources and sinks are reached through the traits of `ferry-core`
//! (`Connectors`, `Source`, `Sink`), which the binary fills with real connectors.
//!
//! ```text
//!              ┌──────────── runner (one task per changefeed) ───────────────┐
//!  Source ──►  │ snapshot: N workers, ChunkReader::read ─► sink.copy_chunk   │
//!              │ stream:   ChangeStream task ─► bounded channel ─► applier   │ ──► Sink
//!              └──────── confirmed(position) ◄── after commit_batch ─────────┘
//! ```
//!
//! # The checkpoint invariant
//! A sink makes a batch durable, *then* the checkpoint is saved (for database sinks, in the
//! same target transaction as the data), *then* the source is told it may discard its log
//! (the slot's `confirmed_flush_lsn`). Never reorder. Stored positions never move backwards.
//! A crash anywhere therefore resumes exactly after the last durable transaction.
//!
//! # Snapshot hand-off
//! The slot is created with an exported snapshot; every chunk is read inside it and the
//! stream starts at the slot's consistent point: no gap, no overlap. After a restart during
//! the snapshot the exported snapshot is gone, so the unfinished chunks are read in a new
//! snapshot (from a temporary slot) at a later position: tables with a key converge because
//! the stream's changes are applied idempotently (upserts); a table without a key is copied
//! again whole and the stream skips its changes older than that snapshot.
//!
//! # Lifecycle
//! A changefeed is `stopped`, `running`, `paused`, `error` (retrying a transient failure
//! with exponential backoff), `failed` (a definite failure, or retries exhausted after
//! [`RetryPolicy::give_up_after`]) or `finished` (its `target_position` reached, or a
//! snapshot-only copy done). [`lifecycle`] holds the transition table; operator actions
//! live in `control.rs`, the task in `runner/`. A paused or stopped changefeed keeps its
//! slot, so a resume continues exactly after the checkpoint. An operator may move the
//! position with `overwrite_checkpoint_position`: the one deliberate exception to "stored
//! positions never move backwards", limited to what the slot can still serve.
//!
//! # Errors
//! Transient failures (connections, restarts) retry with exponential backoff in state
//! `error`; definite ones (bad data, refused DDL, a lost slot) stop in state `failed` with a
//! hint.
//!
//! # Modules
//! - `engine.rs`: the [`Engine`] and its changefeeds (a table there maps every operation
//!   to its file); `error.rs`: [`EngineError`].
//! - `registry.rs`: create, list, delete, restore. `control.rs`: pause, resume, update.
//!   `validate.rs`: the checks asked of the connectors before anything is stored.
//! - `sources.rs`: named sources and their status. `monitor.rs`: the log each changefeed
//!   holds on its source; `guard.rs` pauses or releases it past `max_retained_wal_bytes`.
//!   `cleanup.rs`: what deleted changefeeds left on unreachable sources, still to drop.
//! - [`diff`]: online diffs of source and target, with repair through the changefeed's
//!   applier.
//! - `runner/`: one changefeed's task. [`metrics`]: the counters the tasks increment.

mod cleanup;
pub mod config;
mod control;
pub mod diff;
mod engine;
mod error;
mod foreign_keys;
mod guard;
mod history;
mod ledger;
pub mod lifecycle;
pub mod metrics;
mod monitor;
pub mod options;
mod registry;
mod resync;
mod retry;
mod runner;
mod sequences;
mod skip;
mod sources;
pub mod status;
mod table_control;
mod validate;

pub use config::{ChangefeedConfig, ConfigError};
pub use diff::{Diff, DiffOptions, DiffProgress, DiffState, SampleKeys, TableDiff};
pub use engine::Engine;
pub use error::EngineError;
pub use foreign_keys::{ForeignKeyReport, ForeignKeysReport, Outcome as ForeignKeyOutcome};
pub use history::{History, HistoryEntry};
pub use lifecycle::Refusal;
pub use options::{EngineOptions, RetryPolicy};
pub use registry::SyncedReport;
pub use sequences::{SequenceSync, SequencesReport};
pub use sources::{SlotReport, SourceConfig, SourceReport};
pub use status::{ChangefeedStatus, FeedState, Phase, TableProgress, TableState};
pub use table_control::TableAction;
