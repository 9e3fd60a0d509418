//! The engine without a database: the real [`Engine`] drives the in-memory source and sink
//! of `ferry_testkit::mem` on a paused clock, so every test is fast and deterministic.
//!
//! - `batching`: transactions grouped into batches, `batch_max_rows`, whole transactions.
//! - `checkpoint`: the source is confirmed only what the target made durable.
//! - `target`: `target_position` applies exactly up to it, then finishes.
//! - `tables`: tables copied in a later snapshot skip the changes their copy holds.
//! - `snapshot`: the copy resumed after a crash or failure; snapshot-only; no copy.
//! - `held`: one table paused and resumed, or re-synced, while the others stream.
//! - `lifecycle`: pause and resume, crashes and restarts, retried source failures.
//! - `settling`: stream sinks, whose batches become durable after they are sealed.
//! - `reshape`: a table's new shape into a sink that changes tables only between batches.
//! - `soak`: a seeded random workload under all of those disturbances at once.
//!
//! [`Engine`]: ferry_engine::Engine

mod batching;
mod checkpoint;
mod harness;
mod held;
mod lifecycle;
mod reshape;
mod settling;
mod snapshot;
mod soak;
mod tables;
mod target;
