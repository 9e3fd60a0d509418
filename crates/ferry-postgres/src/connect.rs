//! Connections with pinned session settings and the URI's TLS, and PostgreSQL error
//! classification.

use ferry_core::{ConnectionSecurity, ConnectionUri, ErrorClass, SslMode, TlsOptions};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use crate::tap::Tap;
use crate::tls::ClientTls;
use crate::tunnel::Negotiated;

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

impl From<PgError> for ferry_core::SourceError {
    fn from(e: PgError) -> Self {
        ferry_core::SourceError {
            what: e.what,
            class: e.class,
            hint: None,
            source: Some(e.source),
        }
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
///
/// The TLS parameters (`sslmode`, `sslrootcert`, …) are Ferry's own (see
/// [`ferry_core::TlsOptions`]): tokio-postgres knows only part of them, so they are taken
/// out and the rest of the URI is handed to its parser; the TLS mode is set from the
/// parsed options.
pub fn config(uri: &ConnectionUri, application_name: &str) -> Result<Config, PgError> {
    // The driver gets the effective password (a `password_file` or `password_env` is read
    // now, on every connect) and never sees Ferry's own parameters (references, TLS).
    let tls = tls_options(uri)?;
    let connection_string = uri.connection_string().map_err(|e| {
        PgError::other(
            format!("connect to {}", uri.masked()),
            ErrorClass::Definite,
            e,
        )
    })?;
    let mut config: Config = connection_string
        .parse()
        .map_err(|_| PgError::definite(format!("cannot use connection URI {}", uri.masked())))?;
    config.ssl_mode(match tls.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    config.options(SESSION_OPTIONS);
    config.application_name(application_name);
    config.connect_timeout(std::time::Duration::from_secs(10));
    config.keepalives_idle(std::time::Duration::from_secs(30));
    Ok(config)
}

/// The URI's TLS options (already validated when the URI was accepted).
pub(crate) fn tls_options(uri: &ConnectionUri) -> Result<TlsOptions, PgError> {
    uri.tls_options()
        .map_err(|e| PgError::definite(e.to_string()))
}

/// How long a connect and login may take in all.
const LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connects and drives the connection on a background task, with TLS as the URI says.
pub async fn connect(uri: &ConnectionUri, application_name: &str) -> Result<Client, PgError> {
    let config = config(uri, application_name)?;
    let options = tls_options(uri)?;
    let tls = ClientTls::for_options(&options)?;
    let login = async {
        match tls {
            None => config.connect(NoTls).await.map(run),
            Some(tls) => config.connect(tls.connector()).await.map(run),
        }
        .map_err(|e| login_failed(uri, &options, e))
    };
    within_login_timeout(uri, login).await
}

/// Connects as [`connect`] does, with a [`Tap`] on the session's stream for its COPY data
/// (snapshot reads). `None` for the tap where the session did not get one (then it is
/// connected as by [`connect`]): a URI with several hosts or a `hostaddr`, or TLS asked
/// over a Unix socket.
pub async fn connect_tapped(
    uri: &ConnectionUri,
    application_name: &str,
) -> Result<(Client, Option<Tap>), PgError> {
    let config = config(uri, application_name)?;
    let options = tls_options(uri)?;
    let tls = ClientTls::for_options(&options)?;
    let host = match config.get_hosts() {
        [host] if config.get_hostaddrs().is_empty() => host,
        _ => return Ok((connect(uri, application_name).await?, None)),
    };
    if matches!(host, Host::Unix(_)) && tls.is_some() {
        // TLS over a Unix socket is the driver's matter, as for every other session.
        return Ok((connect(uri, application_name).await?, None));
    }
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let tap = Tap::default();
    let login = async {
        let what = format!("connect to {}", uri.masked());
        let unreachable =
            |e: std::io::Error| PgError::other(what.clone(), ErrorClass::Transient, e);
        // SSL is negotiated here, below the tap; the driver then speaks in the clear to it.
        let mut plain = config.clone();
        plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let wire: Box<dyn Wire> = match (host, tls) {
            (Host::Tcp(name), None) => {
                Box::new(tcp(&config, name, port).await.map_err(unreachable)?)
            }
            (Host::Tcp(name), Some(tls)) => {
                let stream = tcp(&config, name, port).await.map_err(unreachable)?;
                match crate::tunnel::negotiate(stream, uri, &options, &tls, &what).await? {
                    Negotiated::Tls(stream) => stream,
                    Negotiated::Plain(stream) => Box::new(stream),
                }
            }
            (Host::Unix(dir), _) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                Box::new(
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(unreachable)?,
                )
            }
        };
        plain
            .connect_raw(tap.wrap(wire), NoTls)
            .await
            .map(run)
            .map_err(|e| login_failed(uri, &options, e))
    };
    let client = within_login_timeout(uri, login).await?;
    Ok((client, Some(tap)))
}

/// A session's connection under its tap: TCP, TLS over TCP, or a Unix socket.
trait Wire: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Wire for S {}

/// A TCP connection to `host`, as the driver would open it: its connect timeout, no delay,
/// its keepalives.
async fn tcp(config: &Config, host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let connect = tokio::net::TcpStream::connect((host, port));
    let stream = match config.get_connect_timeout() {
        Some(limit) => tokio::time::timeout(*limit, connect).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
        })??,
        None => connect.await?,
    };
    stream.set_nodelay(true)?;
    if config.get_keepalives() {
        let keepalive = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    }
    Ok(stream)
}

/// A failed login, explained when TLS is the reason.
fn login_failed(uri: &ConnectionUri, options: &TlsOptions, e: tokio_postgres::Error) -> PgError {
    let what = format!("connect to {}", uri.masked());
    match crate::tls::explain(&e, options, uri.host()) {
        Some(reason) => PgError::other(format!("{what}: {reason}"), ErrorClass::Definite, e),
        None => PgError::new(what, e),
    }
}

/// `login`, failed as transient when it takes longer than [`LOGIN_TIMEOUT`]: the driver's
/// connect_timeout covers the TCP connect only, and a source that accepts and then says
/// nothing (a cut network behind a proxy) would hold the login forever.
async fn within_login_timeout(
    uri: &ConnectionUri,
    login: impl std::future::Future<Output = Result<Client, PgError>>,
) -> Result<Client, PgError> {
    tokio::time::timeout(LOGIN_TIMEOUT, login)
        .await
        .map_err(|_| {
            PgError::other(
                format!(
                    "connect to {}: no answer within {LOGIN_TIMEOUT:?}",
                    uri.masked()
                ),
                ErrorClass::Transient,
                "timed out",
            )
        })?
}

/// Drives `connection` on a background task; the client is the caller's.
fn run<C>((client, connection): (Client, C)) -> Client
where
    C: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    spawn_connection(connection);
    client
}

fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "postgres connection closed");
        }
    });
}

/// Whether this session is encrypted, and how, from the server's own `pg_stat_ssl`.
pub async fn connection_security(client: &Client) -> Result<ConnectionSecurity, PgError> {
    let row = client
        .query_one(
            "SELECT ssl, version, cipher FROM pg_catalog.pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| PgError::new("read pg_stat_ssl", e))?;
    Ok(ConnectionSecurity {
        encrypted: row.get(0),
        tls_version: row.get(1),
        cipher: row.get(2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::{Host, SslMode as PgSslMode};

    fn config_for(uri: &str) -> Config {
        config(&ferry_core::parse_postgres_uri(uri).unwrap(), "test").unwrap()
    }

    #[test]
    fn tls_parameters_are_ferrys_and_the_rest_reaches_the_driver() {
        let config = config_for(
            "postgresql://app:p%40ss@db.example:5433/shop?sslmode=verify-full\
             &sslrootcert=/etc/ca.pem&sslsni=0&connect_timeout=3&target_session_attrs=read-write",
        );
        assert_eq!(config.get_ssl_mode(), PgSslMode::Require);
        assert_eq!(config.get_user(), Some("app"));
        assert_eq!(config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(config.get_dbname(), Some("shop"));
        assert_eq!(config.get_ports(), &[5433]);
        assert_eq!(config.get_hosts(), &[Host::Tcp("db.example".into())]);
        // Ferry's own settings win over the URI's.
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(10))
        );
        assert_eq!(config.get_application_name(), Some("test"));
    }

    #[test]
    fn modes_map_to_the_drivers() {
        for (mode, expected) in [
            ("disable", PgSslMode::Disable),
            ("prefer", PgSslMode::Prefer),
            ("require", PgSslMode::Require),
        ] {
            let uri = format!("postgres://u@h/db?sslmode={mode}");
            assert_eq!(config_for(&uri).get_ssl_mode(), expected, "{mode}");
        }
        assert_eq!(
            config_for("postgres://u@h/db").get_ssl_mode(),
            PgSslMode::Prefer
        );
    }
}
