//! HTTPS for the API: a rustls server configuration (ring provider) from the `[tls]`
//! settings, optional client certificates with an allow-list of subject common names, and a
//! listener that hands axum finished TLS connections.
//!
//! ```text
//! TcpListener ─► accept task ─► one handshake task per connection (10 s limit)
//!                                   │ ok: TlsStream ─► channel ─► HttpsListener::accept ─► axum
//!                                   └ failed: logged at debug, dropped
//! ```
//!
//! Handshakes run in their own tasks, so a slow or silent client never delays the others;
//! `axum::serve`'s graceful shutdown works as with plain TCP, and dropping the listener stops
//! the accept task.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::settings::TlsSettings;

/// Longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for axum to take them.
const ACCEPT_QUEUE: usize = 64;

/// A `[tls]` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpsError {
    /// A file cannot be read.
    #[error("{field} {path}: cannot read the file")]
    Read {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{field} {path}: {problem}")]
    Pem {
        field: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// rustls refused the combination (a key that does not match the certificate …).
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify anything.
    #[error("tls.client_ca: {0}")]
    ClientVerifier(String),
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, HttpsError> {
    std::fs::read(path).map_err(|source| HttpsError::Read {
        field,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, HttpsError> {
    let pem = read(field, path)?;
    let bad = |problem: String| HttpsError::Pem {
        field,
        path: path.to_path_buf(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (-----BEGIN CERTIFICATE-----)".into()
        ));
    }
    Ok(certs)
}

/// The server configuration of `tls`, or `None` when HTTPS is off (no certificate).
pub(crate) fn server_config(tls: &TlsSettings) -> Result<Option<Arc<ServerConfig>>, HttpsError> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return Ok(None);
    };
    let chain = certificates("tls.cert", cert)?;
    let key_pem = read("tls.key", key)?;
    // The parser's message is not quoted: it could hold a piece of the key.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| HttpsError::Pem {
        field: "tls.key",
        path: key.clone(),
        problem: "holds no private key in PEM (PKCS#8, PKCS#1 or SEC1)".into(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("tls.client_ca", ca)? {
                roots.add(cert)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| HttpsError::ClientVerifier(e.to_string()))?;
            if tls.allowed_cn.is_empty() {
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_client_cert_verifier(Arc::new(AllowedCommonNames {
                    inner: verifier,
                    allowed: tls.allowed_cn.clone(),
                }))
            }
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// A client certificate verifier that also requires the subject CN to be in a list
/// (TiCDC's `cert-allowed-cn`).
#[derive(Debug)]
struct AllowedCommonNames {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

/// The subject common names of a DER certificate.
fn common_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(String::from))
        .collect()
}

impl ClientCertVerifier for AllowedCommonNames {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = common_names(end_entity);
        if names.iter().any(|cn| self.allowed.contains(cn)) {
            return Ok(verified);
        }
        warn!(cn = ?names, "client certificate refused: its CN is not in tls.allowed_cn");
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A listener of finished TLS connections, for `axum::serve`.
pub(crate) struct HttpsListener {
    local_addr: SocketAddr,
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl HttpsListener {
    /// Serves TLS with `config` on `tcp`.
    pub(crate) fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (sender, connections) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off as axum does.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(HttpsListener {
            local_addr,
            connections,
            accept_task,
        })
    }
}

impl Drop for HttpsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
