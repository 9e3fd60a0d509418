//! The contract every sink keeps.
//!
//! # The checkpoint invariant
//! A sink makes a batch durable, *then* the checkpoint (the source position after the
//! batch's last transaction) is saved, *then* the source is told it may discard its log.
//! Never reorder. Database sinks save the checkpoint **in the target, in the same
//! transaction as the data**, so a crash can neither lose nor double-apply a transaction.
//! Stored positions never move backwards.
//!
//! # Batches
//! The engine opens a batch, feeds it whole source transactions (schema announcements and
//! row changes, in commit order), and commits it with the position after the last one.
//! A sink may write a batch's changes before the commit (memory stays bounded for a
//! transaction of any size) but nothing of it may become visible or durable before
//! [`Sink::commit_batch`] returns, and a batch that is never committed leaves no trace.

use std::future::Future;
use std::sync::Arc;

use crate::{Position, RowChange, TableSchema};

/// An error and its causes on one line (`what: cause: cause`), skipping a cause whose text
/// the line already ends with. For status fields and logs.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// What a changefeed does with a target table that already holds rows when it first
/// writes it (a table the user created, or one a deleted changefeed left behind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExistingTarget {
    /// Refuse a table that is not empty (the default: nothing is written).
    #[default]
    Fail,
    /// Empty it before the copy.
    Truncate,
    /// Keep its rows; the copy and the stream upsert by key.
    Append,
}

/// What a changefeed does when a replicated table's shape changes on the source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DdlPolicy {
    /// Follow what can be followed exactly (columns, NOT NULL, enum labels, renamed and new
    /// tables); stop on the rest (the default).
    #[default]
    Apply,
    /// Change nothing on the target: stop when a table's shape there no longer matches the
    /// source's, until the operator makes it match (or switches to `apply`) and resumes.
    Stop,
}

impl std::fmt::Display for ExistingTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExistingTarget::Fail => "fail",
            ExistingTarget::Truncate => "truncate",
            ExistingTarget::Append => "append",
        })
    }
}

/// Whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A network cut, a restart, a lock timeout: retry with backoff.
    Transient,
    /// Wrong data, a refused DDL, missing permissions: stop and tell the operator.
    Definite,
}

/// A sink failure.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The target could not be reached or the connection broke.
    #[error("cannot reach the target: {what}")]
    Connect {
        /// What was attempted.
        what: String,
        /// Transient for a network cut; definite for a refusal retrying cannot fix (a
        /// certificate not trusted, a wrong password).
        class: ErrorClass,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The target refused a statement.
    #[error("target refused {what}")]
    Statement {
        /// What was attempted (never row values).
        what: String,
        /// Whether to retry.
        class: ErrorClass,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The change cannot be applied safely; the changefeed must stop.
    #[error("{message}")]
    Unsupported {
        /// What and why, with a hint what to do.
        message: String,
    },
}

impl SinkError {
    /// Whether retrying can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            SinkError::Connect { class, .. } => *class,
            SinkError::Statement { class, .. } => *class,
            SinkError::Unsupported { .. } => ErrorClass::Definite,
        }
    }
}

/// A destination for changes. See the module docs for the invariants.
pub trait Sink: Send {
    /// The position stored with the data by the last committed batch, if any.
    fn load_checkpoint(
        &mut self,
    ) -> impl Future<Output = Result<Option<Position>, SinkError>> + Send;

    /// Brings the target table in line with `schema` (create, or follow column changes).
    fn ensure_table(
        &mut self,
        schema: &Arc<TableSchema>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Adds one change to the open batch (opening one if needed).
    fn apply(&mut self, change: RowChange) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Makes the open batch durable together with `checkpoint`.
    fn commit_batch(
        &mut self,
        checkpoint: Position,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}
