//! Errors every connector shares: whether retrying can help ([`ErrorClass`]), a source's
//! failure ([`SourceError`]) and how an error prints on one line ([`error_chain`]).
//!
//! Classify where the error is born and never lose the class on the way: a transient
//! failure (a network cut, a restart) is retried with backoff, a definite one (a refused
//! password, a lost replication slot) stops the changefeed with a hint.

/// Whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A network cut, a restart, a lock timeout: retry with backoff.
    Transient,
    /// Wrong data, a refused DDL, missing permissions: stop and tell the operator.
    Definite,
}

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

/// A source failure, with the operation that failed. Never carries row values or secrets.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct SourceError {
    /// What was attempted.
    pub what: String,
    /// Whether to retry.
    pub class: ErrorClass,
    /// What the operator can do about it, when the connector knows.
    pub hint: Option<String>,
    /// The cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SourceError {
    /// An error with a cause.
    pub fn new(
        what: impl Into<String>,
        class: ErrorClass,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SourceError {
            what: what.into(),
            class,
            hint: None,
            source: Some(source.into()),
        }
    }

    /// A failure the message says all about.
    pub fn message(what: impl Into<String>, class: ErrorClass) -> Self {
        SourceError {
            what: what.into(),
            class,
            hint: None,
            source: None,
        }
    }

    /// Adds what the operator can do.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error and its causes on one line, for status and logs.
    pub fn chain(&self) -> String {
        error_chain(self)
    }
}
