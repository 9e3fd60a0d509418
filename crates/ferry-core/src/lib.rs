//! Ferry's core vocabulary, shared by every source, sink and the engine. No I/O, but for
//! one exception: [`ConnectionUri::password`] reads a `password_file` or `password_env`
//! reference when a connector asks for the password.
//!
//! - [`position`]: where a source is in its log ([`Position`], [`Lsn`]); ordered and persisted.
//! - [`table`]: table identity and shape ([`TableId`], [`TableSchema`]).
//! - [`logical`]: a column's database-independent type ([`LogicalType`]) and the canonical
//!   text of its values.
//! - [`change`]: what flows from a source to a sink ([`SourceEvent`], [`RowChange`], [`Value`]).
//! - [`ahead`]: changes of a transaction still in progress, sent before its commit.
//! - [`compact`]: a batch's row changes merged per key, for the database sinks.
//! - [`filter`]: which tables a changefeed selects ([`TableFilter`], TiCDC's rule syntax).
//! - [`uri`]: source and sink connection strings, with secrets that never print.
//! - [`tls`]: TLS options of a connection URI (libpq's `sslmode` and friends), typed.
//! - [`sink`]: the contract every sink keeps ([`Sink`]), including the checkpoint invariant,
//!   and reading a target back for a diff ([`TargetReader`]).
//! - [`source`]: what a changefeed's attempt asks of a source ([`Source`]); [`snapshot`]: the
//!   vocabulary of table copies.
//! - [`connector`]: checks, status and clean-up per connector, and the registry by scheme
//!   ([`Connectors`]); [`error`]: error classes shared by all.
//!
//! Data flows `source → SourceEvent → engine → Sink`. A source emits committed
//! transactions in commit order as a *stream* of events (begin, changes, commit), never as
//! one buffered value, so memory stays bounded whatever a transaction's size.

pub mod ahead;
pub mod change;
pub mod compact;
pub mod connector;
pub mod error;
pub mod filter;
pub mod gtid;
pub mod logical;
pub mod position;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod table;
pub mod tls;
pub mod uri;

pub use ahead::{Ahead, AheadReply};
pub use change::{Row, RowChange, SourceEvent, Value};
pub use connector::{
    BacklogRisk, Connectors, FeedBacklog, ForeignKeyCreated, ForeignKeyOutcome, OrphanObject,
    SequenceSynced, SinkConnector, SourceCheck, SourceConnector, SourceObject, SourceOptions,
    TableVerdict, TargetPolicy, TargetProblem,
};
pub use error::{error_chain, ErrorClass, SourceError};
pub use filter::{FilterError, PartitionMode, TableFilter};
pub use logical::LogicalType;
pub use position::{Lsn, ParsePositionError, Position};
pub use sink::{
    CheckpointStore, DdlPolicy, ExistingTarget, Settle, Sink, SinkError, TargetReader, TargetRows,
    TxMeta,
};
pub use snapshot::{
    BulkFormat, ChunkData, ChunkLedger, ChunkLedgerHandle, ChunkSpec, FinishedChunk, RowStream,
    TablePlan,
};
pub use source::{
    ChangeStream, ChunkReader, ServerIdentity, SnapshotExport, Source, SourceTable, StreamState,
    TableDefinition,
};
pub use table::{
    quote_ident, ColumnSchema, Dialect, ReplicaIdentity, TableId, TableSchema, UserType,
    UserTypeKind,
};
pub use tls::{ClientCert, ConnectionSecurity, RootCerts, SslMode, TlsError, TlsOptions};
pub use uri::{
    events::EventOptions,
    file::{FileFormat, FileSinkUri},
    kafka::{KafkaSinkUri, KafkaTopics},
    nats::NatsSinkUri,
    parse_postgres_uri, parse_source_uri, ConnectionUri, PasswordError, PasswordSource, SinkUri,
    UriError, WEBHOOK_SECRET_PARAM,
};
