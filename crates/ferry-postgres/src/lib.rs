//! PostgreSQL, both ends: the logical replication source and the transactional sink.
//!
//! # Source
//! ```text
//!  publication(s) ─┐                        ┌─ snapshot: COPY chunks inside the exported
//!  slot ───────────┼─ CREATE_REPLICATION_SLOT │  snapshot, bytes passed straight to the sink
//!                  │  (EXPORT_SNAPSHOT)       └─ then START_REPLICATION on the same session:
//!                  │                             pgoutput → decode → SourceEvent stream
//! ```
//! - [`slot`]: names derived from the changefeed id, publications (a second, insert-only
//!   one for tables without a replica identity, so the source's own UPDATEs never fail),
//!   the replication slot and its exported snapshot.
//! - [`catalog`]: which tables a filter selects, their columns, keys and user types;
//!   [`types`]: each column's logical type.
//! - [`snapshot`]: chunk planning by key range and the `COPY … TO STDOUT` reader.
//! - [`copy_text`]: COPY text to rows and back, for the snapshot's row path (a source or
//!   sink of another kind on the other end).
//! - [`definition`]: a table's indexes, constraints, defaults, identity, sequences,
//!   generated columns and comments, which the sink recreates on tables it created.
//! - [`decode`]: the pgoutput byte decoder (fuzzed and property-tested).
//! - [`source`]: the replication stream, turned into [`ferry_core::SourceEvent`]s.
//! - [`liveness`]: a silent stream probed, a dead session noticed, a slot taken back from
//!   this changefeed's own dead walsender; a slot creation probed (waiting for transactions,
//!   or dead). A snapshot COPY has its own read timeout ([`snapshot`]).
//! - [`eligibility`]: whether a source can be replicated (wal_level, REPLICATION) and which
//!   tables fully (a key or a replica identity), for checks before anything is stored.
//!
//! - [`heartbeat`]: a logical message on an interval, so an idle slot's position moves.
//! - [`orphans`]: every `ferry_*` slot and publication of a source.
//! - [`identity`]: which cluster and database a connection reaches (sink = source refusal).
//! - [`sequences`]: moves target sequences to the source's values (pgoutput has none).
//!
//! # Sink
//! - [`sink`]: DDL for missing tables and column changes, `COPY FROM` for snapshot chunks,
//!   pipelined statements for the stream, and the checkpoint table written in the same
//!   transaction as the data; which changefeed owns each target table, and which columns
//!   Ferry created (it never drops or rewrites another).
//!
//! # Sessions
//! Every connection follows the URI's TLS options (libpq's `sslmode`, `sslrootcert`, …,
//! parsed once by [`ferry_core::TlsOptions`]): [`tls`] builds the rustls client (ring) and
//! explains failures; the replication session, whose client library cannot use it, is
//! relayed through a private Unix socket by the `tunnel` module.
//!
//! Every connection pins `DateStyle=ISO`, `IntervalStyle=postgres`, `TimeZone=UTC`,
//! `extra_float_digits=3` and `bytea_output=hex`, so the text a source prints is the text
//! a target parses back to the same value.

pub mod catalog;
pub mod connect;
pub mod connector;
pub mod copy_text;
pub mod decode;
pub mod definition;
pub mod eligibility;
pub mod foreign_keys;
pub mod heartbeat;
pub mod identity;
pub mod liveness;
pub mod orphans;
pub mod replication;
pub mod sequences;
pub mod sink;
pub mod slot;
pub mod snapshot;
pub mod source;
pub mod spool;
pub mod tap;
pub mod tls;
mod tunnel;
pub mod types;

pub use connect::PgError;
