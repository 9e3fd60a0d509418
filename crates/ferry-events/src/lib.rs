//! Ferry's change events in Debezium's JSON format, shared by every stream sink (files and
//! NATS today; Kafka and webhooks to come). No I/O: a sink hands rows in and gets JSON out.
//!
//! ```text
//!  RowChange + TxMeta ──► envelope::TransactionEvents ──► Event { id, table, key, json }
//!  snapshot Row       ──► chunk::ChunkEvents           ─┘        (value::encode per column)
//! ```
//!
//! Events are JSON text, written field by field in Debezium's order (`write`); the schema
//! form wraps that text with schemas written once per table shape ([`SchemaCache`]).
//!
//! The format is documented for users in `docs/events.md`. Invariants:
//! - every event carries `before`, `after`, `source`, `op`, `ts_ms` and `transaction`
//!   (null where empty);
//! - the same change re-sent has the same id and the same JSON except `ts_ms` (processing
//!   time; snapshot reads also in `source.ts_ms`);
//! - a value that does not read as its column's logical type is an error, never a guess.

pub mod boundary;
pub mod chunk;
pub mod envelope;
pub mod schema;
pub mod value;
mod write;

pub use boundary::tombstone;
pub use chunk::ChunkEvents;
pub use envelope::{
    recopy_truncate_event, reset_events, reset_truncate_event, snapshot_event, EncodeError, Event,
    EventKind, Op, Origin, SnapshotRead, TransactionEvents,
};
pub use schema::SchemaCache;
pub use value::{encode, ValueError, UNAVAILABLE_VALUE};
