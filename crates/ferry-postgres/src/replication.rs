//! The replication session's defaults and errors, shared by the slot's creation, the
//! stream and the snapshot's session.

use std::time::Duration;

use ferry_core::ErrorClass;

use crate::PgError;

/// Default replication timeout: a silent stream is probed after this long, and a source
/// that does not answer the probe within it is unreachable. Half the source's default
/// `wal_sender_timeout` (60 s), so a cut is noticed about when the source notices it.
pub const DEFAULT_REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Wraps a replication-client error with its class.
pub fn replication_error(what: &str, err: pgwire_replication::PgWireError) -> PgError {
    let text = err.to_string();
    if text.contains("no pg_hba.conf entry") && text.contains("no encryption") {
        use crate::tls::{SERVER_REQUIRES_SSL, SERVER_REQUIRES_SSL_HINT};
        let what = format!("{what}: {SERVER_REQUIRES_SSL} ({SERVER_REQUIRES_SSL_HINT})");
        return PgError::other(what, ErrorClass::Definite, err);
    }
    let class = if err.is_transient() || err.is_io() {
        ErrorClass::Transient
    } else {
        ErrorClass::Definite
    };
    PgError::other(what, class, err)
}
