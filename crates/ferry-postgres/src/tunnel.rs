//! The replication session's TLS, done by Ferry and relayed over a private Unix socket.
//!
//! pgwire-replication speaks the replication protocol but brings TLS only through its
//! `tls-rustls` feature, whose dependencies (rustls and tokio-rustls with their default
//! features) compile in a second crypto provider, aws-lc-rs. So Ferry opens the connection
//! itself, with the same [`ClientTls`] as every other session (same verification, same
//! errors), and hands the library a Unix socket instead of a host:
//!
//! ```text
//! ReplicationClient ──unix socket──► relay task ──TLS (rustls, ring)──► PostgreSQL
//!                   (0700 temp dir, one connection, removed once accepted)
//! ```
//!
//! The library authenticates over the relayed bytes exactly as over TCP. The socket lives
//! in a fresh directory only Ferry's user can enter and is unlinked as soon as the one
//! expected connection arrives, so no other local process can reach the session.

use std::time::Duration;

use ferry_core::ErrorClass::{Definite, Transient};
use ferry_core::{ConnectionUri, SslMode, TlsOptions};
use pgwire_replication::{ReplicationClient, ReplicationConfig, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};

use crate::tls::{self, ClientTls};
use crate::PgError;

/// How long the TCP connect and the TLS handshake may take, as for other sessions.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the connect and login of a replication session may take in all.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the relay waits for the library to connect to it.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

/// `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Opens a gated replication session for `config` with the TLS that `uri` asks for.
pub(crate) async fn connect_gated(
    mut config: ReplicationConfig,
    uri: &ConnectionUri,
) -> Result<ReplicationClient, PgError> {
    let options = crate::connect::tls_options(uri)?;
    config.tls = TlsConfig::disabled();
    let Some(tls) = ClientTls::for_options(&options)? else {
        return connect_library(config).await;
    };
    let stream = match open(uri, &options, &tls).await? {
        Negotiated::Tls(stream) => *stream,
        // `prefer` and the server has no SSL: connect directly, nothing to relay.
        Negotiated::Plain(_) => return connect_library(config).await,
    };
    let dir = tempfile::Builder::new()
        .prefix("ferry-repl-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map_err(|e| PgError::other("create the replication relay's directory", Transient, e))?;
    let port = uri.port_or(5432);
    let listener = UnixListener::bind(dir.path().join(format!(".s.PGSQL.{port}")))
        .map_err(|e| PgError::other("open the replication relay's socket", Transient, e))?;
    config.host = dir.path().to_string_lossy().into_owned();
    config.port = port;
    tokio::spawn(relay(listener, dir, stream));
    connect_library(config).await
}

/// The library's connect and login, which has no timeout of its own: a source that accepts
/// the connection and then says nothing (a cut network behind a proxy) would hold it forever.
async fn connect_library(config: ReplicationConfig) -> Result<ReplicationClient, PgError> {
    tokio::time::timeout(LOGIN_TIMEOUT, ReplicationClient::connect_gated(config))
        .await
        .map_err(|_| {
            PgError::other(
                format!("open replication session: no answer within {LOGIN_TIMEOUT:?}"),
                Transient,
                "timed out",
            )
        })?
        .map_err(|e| crate::replication::replication_error("open replication session", e))
}

type ServerStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A TCP connection after SSL negotiation.
pub(crate) enum Negotiated {
    /// Encrypted.
    Tls(Box<ServerStream>),
    /// The server declined SSL and `sslmode=prefer` allows that: the same connection, in
    /// the clear, ready for the startup message.
    Plain(TcpStream),
}

/// TCP connect, SSL negotiation and the TLS handshake, with errors explained.
async fn open(
    uri: &ConnectionUri,
    options: &TlsOptions,
    tls: &ClientTls,
) -> Result<Negotiated, PgError> {
    let what = format!("open replication session to {}", uri.masked());
    let host = uri.host().to_owned();
    let connect = TcpStream::connect((
        host.trim_start_matches('[').trim_end_matches(']'),
        uri.port_or(5432),
    ));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| timed_out(&what))?
        .map_err(|e| PgError::other(what.clone(), Transient, e))?;
    tcp.set_nodelay(true)
        .map_err(|e| PgError::other(what.clone(), Transient, e))?;
    negotiate(tcp, uri, options, tls, &what).await
}

/// Transient: an unreachable source (a cut network) comes back.
fn timed_out(what: &str) -> PgError {
    PgError::other(
        format!("{what}: timed out after {CONNECT_TIMEOUT:?}"),
        Transient,
        "timed out",
    )
}

/// SSL negotiation and the TLS handshake on a connected `tcp`, as `options` ask, with errors
/// explained (`what` names the session).
pub(crate) async fn negotiate(
    mut tcp: TcpStream,
    uri: &ConnectionUri,
    options: &TlsOptions,
    tls: &ClientTls,
    what: &str,
) -> Result<Negotiated, PgError> {
    let host = uri.host().to_owned();
    let mut answer = [0u8; 1];
    let request = async {
        tcp.write_all(&SSL_REQUEST).await?;
        tcp.read_exact(&mut answer).await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, request)
        .await
        .map_err(|_| timed_out(what))?
        .map_err(|e| PgError::other(what.to_owned(), Transient, e))?;
    if answer[0] != b'S' {
        if options.mode == SslMode::Prefer {
            return Ok(Negotiated::Plain(tcp));
        }
        return Err(PgError::definite(format!(
            "{what}: {}",
            tls::server_without_ssl(options)
        )));
    }
    let name = tls::server_name(&host).map_err(|e| PgError::other(what.to_owned(), Definite, e))?;
    let handshake = tls.rustls_connector().connect(name, tcp);
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| timed_out(what))?
    {
        Ok(stream) => Ok(Negotiated::Tls(Box::new(stream))),
        Err(e) => {
            let e = tls::unwrap_rustls(e);
            match tls::explain(e.as_ref(), options, &host) {
                Some(reason) => Err(PgError::other(format!("{what}: {reason}"), Definite, e)),
                None => Err(PgError::other(what.to_owned(), Transient, e)),
            }
        }
    }
}

/// Accepts the library's one connection, removes the socket, then copies both ways until
/// either side closes.
async fn relay(listener: UnixListener, dir: tempfile::TempDir, mut server: ServerStream) {
    let accepted = tokio::time::timeout(ACCEPT_TIMEOUT, listener.accept()).await;
    drop(listener);
    drop(dir);
    let mut client = match accepted {
        Ok(Ok((client, _))) => client,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "replication relay: accept failed");
            return;
        }
        Err(_) => {
            tracing::warn!("replication relay: the replication client never connected");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
        tracing::debug!(error = %e, "replication relay closed");
    }
    let _ = server.shutdown().await;
}
