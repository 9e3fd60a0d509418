//! Connections from a `mysql://` or `mariadb://` URI, each pinned to UTC.
//!
//! TLS follows the URI's `sslmode` the way Ferry reads it for every database
//! ([`ferry_core::TlsOptions`]): `disable` and `prefer` connect in plain text (the driver
//! cannot fall back, so `prefer` does not try TLS), `require` encrypts without checking the
//! certificate, `verify-ca` checks the chain against `sslrootcert`, `verify-full` the
//! host name too; `sslcert`/`sslkey` give a client certificate.

use ferry_core::{
    ConnectionUri, ErrorClass, RootCerts, ServerIdentity, SinkError, SourceError, SslMode,
};
use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};

/// The default MySQL port.
pub const DEFAULT_PORT: u16 = 3306;

/// Statements every session runs first: UTC, so TIMESTAMP values read and written are
/// exact; utf8mb4, so every character survives; a strict SQL mode, so the server refuses
/// a value it would otherwise truncate or zero instead of storing something else.
const SESSION_INIT: [&str; 3] = [
    "SET time_zone = '+00:00'",
    "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
];

/// Why a URI cannot be turned into connection options (names parameters, never values).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OptsError(pub String);

/// The driver's options for `uri`: host, port (3306 by default), user, password (also by
/// reference), the database of the path if any, TLS, and the UTC session.
pub fn opts(uri: &ConnectionUri) -> Result<Opts, OptsError> {
    let password = uri.password().map_err(|e| OptsError(e.to_string()))?;
    let database = uri.database();
    let tls = uri.tls_options().map_err(|e| OptsError(e.to_string()))?;
    let ssl = if tls.mode.requires_tls() {
        let mut ssl = SslOpts::default();
        if let Some(client) = &tls.client_cert {
            ssl = ssl.with_client_identity(Some(ClientIdentity::new(
                client.cert.clone().into(),
                client.key.clone().into(),
            )));
        }
        match (&tls.root_certs, tls.mode) {
            (Some(RootCerts::File(path)), _) => {
                ssl = ssl.with_root_certs(vec![path.clone().into()]);
            }
            (Some(RootCerts::System), _) => {}
            (None, _) => ssl = ssl.with_danger_accept_invalid_certs(true),
        }
        if tls.mode != SslMode::VerifyFull {
            ssl = ssl.with_danger_skip_domain_validation(true);
        }
        Some(ssl)
    } else {
        None
    };
    let builder = OptsBuilder::default()
        .ip_or_hostname(uri.host())
        .tcp_port(uri.port_or(DEFAULT_PORT))
        .user(Some(uri.user()))
        .pass(password)
        .db_name((!database.is_empty()).then_some(database))
        .ssl_opts(ssl)
        .prefer_socket(false)
        .init(
            SESSION_INIT
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        );
    Ok(builder.into())
}

/// Opens one connection to `uri`.
pub async fn connect(uri: &ConnectionUri) -> Result<mysql_async::Conn, mysql_async::Error> {
    let opts =
        opts(uri).map_err(|e| mysql_async::Error::Other(Box::new(std::io::Error::other(e.0))))?;
    mysql_async::Conn::new(opts).await
}

/// The server's identity, the same whether a source or a sink asks, so a sink refuses to
/// write into the server it reads: the server's own host name and data directory (MariaDB
/// has no server UUID; two servers never share both), and `database` (empty for a source
/// that reads every database).
pub async fn server_identity(
    conn: &mut mysql_async::Conn,
    database: &str,
) -> Result<ServerIdentity, mysql_async::Error> {
    use mysql_async::prelude::Queryable;
    let (host, datadir): (String, String) = conn
        .query_first("SELECT @@hostname, @@datadir")
        .await?
        .unwrap_or_default();
    Ok(ServerIdentity {
        system_identifier: format!("{host}:{datadir}"),
        database: database.to_string(),
    })
}

/// Whether retrying can help after `e`: network and server-gone errors are transient; a
/// refusal (wrong password, missing privilege, bad SQL) is definite.
pub fn error_class(e: &mysql_async::Error) -> ErrorClass {
    match e {
        mysql_async::Error::Io(_) => ErrorClass::Transient,
        mysql_async::Error::Driver(_) => ErrorClass::Transient,
        mysql_async::Error::Server(server) => match server.code {
            // Too many connections, lock wait timeout, deadlock, server shutting down,
            // query interrupted, read-only while failing over.
            1040 | 1205 | 1213 | 1053 | 1317 | 1290 | 2006 | 2013 => ErrorClass::Transient,
            _ => ErrorClass::Definite,
        },
        _ => ErrorClass::Definite,
    }
}

/// A source error for `what` caused by `e`.
pub fn source_error(what: impl Into<String>, e: mysql_async::Error) -> SourceError {
    SourceError::new(what, error_class(&e), e)
}

/// A sink error for statement `what` caused by `e`.
pub fn sink_error(what: impl Into<String>, e: mysql_async::Error) -> SinkError {
    SinkError::Statement {
        what: what.into(),
        class: error_class(&e),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::prelude::Queryable;

    #[tokio::test]
    async fn sessions_are_pinned_to_utc_and_strict() {
        let db = ferry_testkit::MariaDb::start();
        let uri = ferry_core::parse_source_uri(&db.uri("ferry_test")).unwrap();
        let mut conn = connect(&uri).await.unwrap();
        let (tz, mode): (String, String) = conn
            .query_first("SELECT @@session.time_zone, @@session.sql_mode")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tz, "+00:00");
        assert!(mode.contains("STRICT_ALL_TABLES"), "{mode}");
        let wrong = ferry_core::parse_source_uri(&format!(
            "mariadb://ferry:wrong@127.0.0.1:{}/",
            db.port()
        ))
        .unwrap();
        let e = connect(&wrong).await.unwrap_err();
        assert_eq!(error_class(&e), ErrorClass::Definite);
        assert!(!e.to_string().contains("wrong"));
    }
}
