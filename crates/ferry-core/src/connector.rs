//! The control plane of connectors: what the engine and the API ask a source or a sink
//! outside a changefeed's run (checks before create, status, clean-up), and the registry
//! that picks a connector by URI scheme ([`Connectors`]).
//!
//! Each question is answered by the connector, so `ferry changefeed check`, create and a
//! changefeed's first start run one code path. The engine names no database: it holds a
//! `dyn Connectors` the binary hands it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::source::{ServerIdentity, Source};
use crate::{
    ConnectionSecurity, ConnectionUri, DdlPolicy, ExistingTarget, ParsePositionError, Position,
    Sink, SinkError, SinkUri, SourceError, TableFilter, TableId, TableSchema,
};

/// What a check of a source found.
#[derive(Clone, Debug)]
pub struct SourceCheck {
    /// Facts an operator may want (server version, settings), as the connector names them.
    pub facts: serde_json::Value,
    /// What stops the source from being used, each with what to do. Empty: usable.
    pub problems: Vec<String>,
}

/// Whether a table can be replicated fully, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableVerdict {
    /// `schema.table`.
    pub table: String,
    /// Why it is (in)eligible, and for an ineligible one what to do.
    pub reason: String,
    /// Whether updates and deletes replicate.
    pub eligible: bool,
}

/// How far behind a changefeed's stream is on its source, and whether that is safe.
#[derive(Clone, Debug)]
pub struct FeedBacklog {
    /// The changefeed (`namespace/id`).
    pub feed: String,
    /// The object that keeps the changefeed's place (PostgreSQL: its slot's name).
    pub holder: String,
    /// What the holder has confirmed; `None` when it does not exist.
    pub confirmed: Option<Position>,
    /// Log the source keeps for the changefeed, in bytes; `None` when it does not exist.
    pub retained_bytes: Option<u64>,
    /// The log the changefeed needs is at risk or gone.
    pub risk: Option<BacklogRisk>,
}

/// A danger to a changefeed's place in the source's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BacklogRisk {
    /// The source will discard log the changefeed needs unless it catches up: what and
    /// what to do.
    AtRisk(String),
    /// The log is gone (or the holder vanished): what happened.
    Lost(String),
}

/// An object a changefeed leaves on its source (PostgreSQL: a slot or a publication).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceObject {
    /// `slot`, `publication`, …
    pub kind: &'static str,
    /// Its name.
    pub name: String,
}

/// A `ferry_*` object on a source that no changefeed of this server owns.
#[derive(Clone, Debug, Serialize)]
pub struct OrphanObject {
    /// `slot` or `publication`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// The database it belongs to.
    pub database: Option<String>,
    /// Whether a session uses it now (another server may own it).
    pub active: Option<bool>,
    /// Log the source keeps for it, in bytes.
    pub retained_bytes: Option<u64>,
}

/// Settings of a source connection for one attempt.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Longest silence from the source before the stream counts as dead.
    pub replication_timeout: Duration,
    /// How partitioned tables replicate: it decides how the source publishes them (the
    /// filter given to [`Source::select_tables`] carries the same mode).
    pub partitions: crate::PartitionMode,
}

/// Controls a source kind. Object-safe: the engine holds `dyn SourceConnector`.
#[async_trait]
pub trait SourceConnector: Send + Sync {
    /// Parses a position in the database's own notation.
    fn parse_position(&self, text: &str) -> Result<Position, ParsePositionError>;

    /// Connects for one attempt of changefeed `feed` (`namespace/id`).
    async fn open(
        &self,
        uri: &ConnectionUri,
        feed: &str,
        options: &SourceOptions,
    ) -> Result<Box<dyn Source>, SourceError>;

    /// Whether the source can serve changefeeds (reachable, configured, privileged).
    async fn check(&self, uri: &ConnectionUri) -> Result<SourceCheck, SourceError>;

    /// The connection's encryption.
    async fn security(&self, uri: &ConnectionUri) -> Result<ConnectionSecurity, SourceError>;

    /// The rules of `filter` that name one exact table that does not exist.
    async fn missing_tables(
        &self,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<Vec<String>, SourceError>;

    /// What stops the tables `filter` selects from being replicated (PostgreSQL: tables
    /// the user does not own cannot join a publication), each with what to do.
    async fn table_problems(
        &self,
        _uri: &ConnectionUri,
        _filter: &TableFilter,
    ) -> Result<Vec<String>, SourceError> {
        Ok(Vec::new())
    }

    /// Each table `filter` selects, judged.
    async fn verify_tables(
        &self,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<Vec<TableVerdict>, SourceError>;

    /// The shapes of the tables `filter` selects, and the source's identity.
    async fn selected_schemas(
        &self,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<(Vec<TableSchema>, Option<ServerIdentity>), SourceError>;

    /// The source's current position.
    async fn current_position(&self, uri: &ConnectionUri) -> Result<Position, SourceError>;

    /// Whether changefeed `feed` can stream from `position`: `Ok(Err(why))` when not.
    async fn check_resume(
        &self,
        uri: &ConnectionUri,
        feed: &str,
        position: &Position,
    ) -> Result<Result<(), String>, SourceError>;

    /// The backlog of each of `feeds` on this source, in the same order.
    async fn backlog(
        &self,
        uri: &ConnectionUri,
        feeds: &[String],
    ) -> Result<Vec<FeedBacklog>, SourceError>;

    /// The objects changefeed `feed` keeps on its source.
    fn objects(&self, feed: &str) -> Vec<SourceObject>;

    /// Drops what changefeed `feed` keeps on the source (its place in the log).
    async fn release(&self, uri: &ConnectionUri, feed: &str) -> Result<(), SourceError>;

    /// Ferry's objects on the source that none of `owned` names.
    async fn orphans(
        &self,
        uri: &ConnectionUri,
        owned: &BTreeSet<String>,
    ) -> Result<Vec<OrphanObject>, SourceError>;

    /// Resolves with the first table `filter` selects whose source id is not in `known`
    /// (created or renamed on the source); checks every few seconds, quietly retrying.
    fn watch_new_tables(
        &self,
        uri: &ConnectionUri,
        filter: TableFilter,
        known: BTreeSet<u32>,
    ) -> BoxFuture<'static, TableId>;

    /// Writes a small message into the source's log every `every`, so a changefeed whose
    /// tables are idle still confirms positions (runs until dropped).
    fn heartbeat(&self, uri: &ConnectionUri, every: Duration, feed: &str)
        -> BoxFuture<'static, ()>;
}

/// How a changefeed's sink treats target tables.
#[derive(Clone, Debug, Default)]
pub struct TargetPolicy {
    /// The id of the Ferry server running the changefeed (stored in its metadata).
    pub server_id: String,
    /// What to do with rows of a table that existed before the changefeed.
    pub existing_target: ExistingTarget,
    /// The source's identity: a sink reaching the same database refuses to connect, before
    /// it creates anything.
    pub source: Option<ServerIdentity>,
    /// `stop`: never change a table's shape on the target; stop instead.
    pub ddl: DdlPolicy,
    /// The changefeed's chunk ledger in the engine's store, for sinks whose destination
    /// cannot keep chunk markers; `None` where the engine offers none (checks).
    pub chunk_ledger: Option<crate::ChunkLedgerHandle>,
}

/// Why a changefeed may not write its target tables, found by [`SinkConnector::preflight`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetProblem {
    /// The target is the source database itself.
    SinkIsSource(String),
    /// Another changefeed owns a table.
    Owned(String),
    /// A table holds rows and the changefeed's `existing_target` is `fail`.
    NotEmpty(String),
    /// The source's columns cannot be written into an existing table as it is.
    Conflict(String),
}

/// One target sequence a sequence sync looked at.
#[derive(Clone, Debug)]
pub struct SequenceSynced {
    /// The sequence, schema-qualified.
    pub sequence: String,
    /// The source's last value (`None`: never used there).
    pub source_value: Option<i64>,
    /// The target's last value before the sync.
    pub target_before: Option<i64>,
    /// Whether the target's sequence was set to the source's value.
    pub set: bool,
    /// Why it was not looked at.
    pub missing: Option<String>,
}

/// One source foreign key a request to create them looked at.
#[derive(Clone, Debug)]
pub struct ForeignKeyCreated {
    /// The table holding it, schema-qualified.
    pub table: String,
    /// The constraint's name.
    pub name: String,
    /// The table it references, schema-qualified.
    pub references: String,
    /// What became of it.
    pub outcome: ForeignKeyOutcome,
}

/// What a request to create a foreign key on the target did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForeignKeyOutcome {
    /// Created (and validated against the target's rows).
    Created,
    /// The target table already has a constraint of that name.
    Exists,
    /// Not created, and why (a table not replicated or not Ferry's, rows the target
    /// refuses).
    Skipped(String),
}

/// Controls a sink kind. Object-safe: the engine holds `dyn SinkConnector`.
#[async_trait]
pub trait SinkConnector: Send + Sync {
    /// Connects for changefeed `feed` (`namespace/id`).
    async fn connect(
        &self,
        uri: &SinkUri,
        feed: &str,
        policy: TargetPolicy,
    ) -> Result<Box<dyn Sink>, SinkError>;

    /// Checks the target before a changefeed is stored: `Ok(None)` when it may write
    /// `tables`. An unreachable target is an error the caller may tolerate. A sink without
    /// tables of its own (a stream) has nothing to check: the default.
    async fn preflight(
        &self,
        _uri: &SinkUri,
        _feed: &str,
        _policy: &TargetPolicy,
        _tables: &[TableSchema],
        _copies: bool,
    ) -> Result<Option<TargetProblem>, SinkError> {
        Ok(None)
    }

    /// Gives up changefeed `feed`'s claim on its target tables (after a delete); nothing
    /// to give up by default.
    async fn release(
        &self,
        _uri: &SinkUri,
        _feed: &str,
        _server_id: &str,
    ) -> Result<(), SinkError> {
        Ok(())
    }

    /// A reader of changefeed `feed`'s target tables, for a diff; `None` for a sink whose
    /// target cannot be read back (a stream, a file): the default.
    async fn reader(
        &self,
        _uri: &SinkUri,
        _feed: &str,
    ) -> Result<Option<Box<dyn crate::TargetReader>>, SinkError> {
        Ok(None)
    }
}

/// Every connector of the process, by URI scheme. The binary builds it; the engine and the
/// API only ever see this trait.
pub trait Connectors: Send + Sync {
    /// The connector of a source URI's scheme.
    fn source(&self, uri: &ConnectionUri) -> Result<Arc<dyn SourceConnector>, SourceError>;

    /// The connector of a sink URI.
    fn sink(&self, uri: &SinkUri) -> Arc<dyn SinkConnector>;

    /// Moves every target sequence of `tables` to at least the source's value. Empty for
    /// a pair without sequences.
    fn sync_sequences<'a>(
        &'a self,
        source: &'a ConnectionUri,
        sink: &'a SinkUri,
        filter: &'a TableFilter,
    ) -> BoxFuture<'a, Result<Vec<SequenceSynced>, String>>;

    /// Creates on the target the source's foreign keys between the tables `filter`
    /// selects, on the tables the sink created. Empty for a pair without foreign keys.
    fn create_foreign_keys<'a>(
        &'a self,
        _source: &'a ConnectionUri,
        _sink: &'a SinkUri,
        _filter: &'a TableFilter,
    ) -> BoxFuture<'a, Result<Vec<ForeignKeyCreated>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
