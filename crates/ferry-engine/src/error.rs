//! The errors of engine operations (create, pause, …), each with what the API maps to a
//! stable `error_code`.

use ferry_core::SourceError;
use ferry_meta::MetaError;

use crate::config::ConfigError;
use crate::lifecycle::Refusal;

/// An engine operation that was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration is invalid.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// A changefeed with that id exists in that namespace.
    #[error("changefeed {0} already exists")]
    AlreadyExists(String),
    /// No changefeed with that id in that namespace.
    #[error("changefeed {0} does not exist")]
    NotFound(String),
    /// The server runs as many changefeeds as it is configured for.
    #[error("this server already has {0} changefeeds, its configured maximum")]
    TooManyChangefeeds(usize),
    /// The action is not possible in the changefeed's state.
    #[error("changefeed {id}: {refusal}")]
    Refused {
        /// The changefeed.
        id: String,
        /// Why.
        refusal: Refusal,
    },
    /// The source cannot be used (unreachable, not configured for logical replication).
    #[error("source is not usable: {0}")]
    SourceUnusable(String),
    /// A URI's `password_file` cannot be read or its `password_env` variable is not set
    /// on the server (the message names the file or variable, never a value).
    #[error("{0}")]
    SecretUnavailable(String),
    /// A table rule names a table the source does not have.
    #[error("the source has no table {0}")]
    TableNotFound(String),
    /// A resume position is malformed or cannot be served.
    #[error("invalid position: {0}")]
    InvalidPosition(String),
    /// No named source with that name in that namespace.
    #[error("source {0} does not exist")]
    SourceNotFound(String),
    /// A changefeed names a source that does not exist.
    #[error("source {0} does not exist; create it first (POST /api/v2/sources)")]
    UnknownSource(String),
    /// A source with that name exists in that namespace.
    #[error("source {0} already exists")]
    SourceAlreadyExists(String),
    /// Changefeeds use the source.
    #[error("source {name} is used by changefeeds {changefeeds}; {hint}")]
    SourceInUse {
        /// The source.
        name: String,
        /// The changefeeds, comma-separated.
        changefeeds: String,
        /// What to do.
        hint: &'static str,
    },
    /// The sink refused in a way retrying cannot fix (a wrong password, a certificate not
    /// trusted, missing privileges).
    #[error("sink is not usable: {0}")]
    SinkUnusable(String),
    /// The sink is the source database itself (same cluster and database).
    #[error("{0}")]
    SinkIsSource(String),
    /// Another changefeed owns a target table this one would write.
    #[error("{0}")]
    TargetTableOwned(String),
    /// A target table holds rows and `options.existing_target` is `fail`.
    #[error("{0}")]
    TargetNotEmpty(String),
    /// The source's columns cannot be written into an existing target table as it is.
    #[error("{0}")]
    TargetConflict(String),
    /// Syncing the target's sequences failed (source or target unreachable or refusing).
    #[error("sequence sync failed: {0}")]
    SequenceSync(String),
    /// Reading the source's foreign keys or writing the target failed.
    #[error("creating foreign keys failed: {0}")]
    ForeignKeys(String),
    /// No diff with that id for that changefeed.
    #[error("diff {0} does not exist")]
    DiffNotFound(String),
    /// A diff cannot do what it was asked: the sink cannot be read back, or a table to
    /// repair has no key.
    #[error("{0}")]
    DiffUnsupported(String),
    /// The diff's state does not allow the action (one runs already, it is not running).
    #[error("{0}")]
    DiffRefused(String),
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl EngineError {
    /// A source failure during a check: the source is not usable, with the connector's
    /// hint when it has one.
    pub(crate) fn source(e: SourceError) -> Self {
        let mut text = e.chain();
        if let Some(hint) = &e.hint {
            text.push_str(". Hint: ");
            text.push_str(hint);
        }
        EngineError::SourceUnusable(text)
    }
}
