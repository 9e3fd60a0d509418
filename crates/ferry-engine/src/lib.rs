//! A changefeed's runtime: snapshot → stream hand-off, batching, checkpoints, retries.
//!
//! ```text
//!              ┌──────────── runner (one task per changefeed) ─────────────┐
//!  source ──►  │ snapshot: N workers, COPY chunk ─► sink.copy_chunk        │
//!              │ stream:   reader task ─► bounded channel ─► batcher ─► sink│ ──► target
//!              └──────── confirm(end_lsn) ◄── after commit_batch ──────────┘
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
//! # Errors
//! Transient failures (connections, restarts) retry with exponential backoff in state
//! `error`; definite ones (bad data, refused DDL, a lost slot) stop in state `failed` with a
//! hint.

pub mod config;
mod registry;
mod runner;
mod sink;
pub mod status;

pub use config::{ChangefeedConfig, ConfigError};
pub use registry::{Engine, EngineError, SyncedReport};
pub use status::{ChangefeedStatus, FeedState, Phase};
