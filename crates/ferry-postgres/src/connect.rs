//! Connections with pinned session settings, and PostgreSQL error classification.

use ferry_core::{ConnectionUri, ErrorClass};
use tokio_postgres::{Client, Config, NoTls};

/// Session settings that make text output parse back to the same value on another server.
pub const SESSION_OPTIONS: &str = "-c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC \
     -c extra_float_digits=3 -c bytea_output=hex";

/// A PostgreSQL failure, with the operation that failed. Never carries row values or secrets.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct PgError {
    /// What was attempted.
    pub what: String,
    /// Whether to retry.
    pub class: ErrorClass,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl PgError {
    /// Wraps a tokio-postgres error, classifying it by SQLSTATE.
    ///
    /// A server error keeps its severity, message, SQLSTATE and hint but not its `DETAIL`,
    /// which may quote row values (`Key (email)=(…) already exists`, `Failing row contains
    /// (…)`): the error ends up in the status, logs and metrics, where values never go.
    pub fn new(what: impl Into<String>, err: tokio_postgres::Error) -> Self {
        let class = classify(&err);
        let source: Box<dyn std::error::Error + Send + Sync> = match err.as_db_error() {
            Some(db) => {
                let mut text = format!(
                    "{}: {} (SQLSTATE {})",
                    db.severity(),
                    db.message(),
                    db.code().code()
                );
                if let Some(hint) = db.hint() {
                    text.push_str(&format!("; hint: {hint}"));
                }
                text.into()
            }
            None => Box::new(err),
        };
        PgError {
            what: what.into(),
            class,
            source,
        }
    }

    /// An error from another layer (the replication client), with its class.
    pub fn other(
        what: impl Into<String>,
        class: ErrorClass,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        PgError {
            what: what.into(),
            class,
            source: source.into(),
        }
    }

    /// A definite failure with a message and no underlying error.
    pub fn definite(message: impl Into<String>) -> Self {
        let message = message.into();
        PgError {
            what: message.clone(),
            class: ErrorClass::Definite,
            source: message.into(),
        }
    }

    /// The error and its causes on one line, for status and logs.
    pub fn chain(&self) -> String {
        ferry_core::error_chain(self)
    }
}

/// Transient: connection trouble, server shutdown, serialization failures, lock timeouts.
/// Everything else (syntax, permissions, constraint violations) is definite.
fn classify(err: &tokio_postgres::Error) -> ErrorClass {
    let Some(db) = err.as_db_error() else {
        return ErrorClass::Transient;
    };
    let code = db.code().code();
    let transient = code.starts_with("08") // connection exception
        || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
        || code.starts_with("53") // insufficient resources
        || code == "40001" // serialization failure
        || code == "40P01" // deadlock
        || code == "55P03" // lock not available
        || code == "55006"; // object in use (slot active elsewhere)
    if transient {
        ErrorClass::Transient
    } else {
        ErrorClass::Definite
    }
}

/// The tokio-postgres configuration for `uri`, with Ferry's session settings.
pub fn config(uri: &ConnectionUri, application_name: &str) -> Result<Config, PgError> {
    let mut config: Config = uri
        .expose()
        .parse()
        .map_err(|_| PgError::definite(format!("cannot use connection URI {}", uri.masked())))?;
    config.options(SESSION_OPTIONS);
    config.application_name(application_name);
    config.connect_timeout(std::time::Duration::from_secs(10));
    config.keepalives_idle(std::time::Duration::from_secs(30));
    Ok(config)
}

/// Connects and drives the connection on a background task.
pub async fn connect(uri: &ConnectionUri, application_name: &str) -> Result<Client, PgError> {
    let config = config(uri, application_name)?;
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| PgError::new(format!("connect to {}", uri.masked()), e))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "postgres connection closed");
        }
    });
    Ok(client)
}
