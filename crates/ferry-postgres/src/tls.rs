//! TLS to PostgreSQL: rustls (ring provider) configured from a URI's [`TlsOptions`].
//!
//! One [`ClientTls`] serves every connection to a URI: catalog and check sessions, snapshot
//! workers and the sink through [`MakeRustlsConnect`] (tokio-postgres), the replication
//! session through [`crate::tunnel`]. Building it reads the certificate files, so it is
//! cached per set of options and rebuilt only when one of the files changes (a rotated
//! certificate is picked up by the next connection).
//!
//! | mode          | verifier                                                          |
//! |---------------|-------------------------------------------------------------------|
//! | `prefer`, `require` | none (handshake signatures are still checked)               |
//! | `verify-ca`   | the chain against `sslrootcert`, any host name                    |
//! | `verify-full` | the chain against `sslrootcert`, and the host name (DNS or IP)    |
//!
//! Failures are explained for operators by [`explain`]: certificate not trusted, host name
//! mismatch, server without SSL, server requiring SSL, unreadable files. They are definite.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::SystemTime;

use ferry_core::ErrorClass::Definite;
use ferry_core::{ClientCert, RootCerts, SslMode, TlsOptions};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::PgError;

/// The TLS client for one set of [`TlsOptions`]: the mode and a ready rustls configuration.
#[derive(Clone)]
pub struct ClientTls {
    /// The effective mode (never `Disable`: there is no client then).
    pub mode: SslMode,
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// The client for `options`, `None` for `sslmode=disable`. Reads the files named in
    /// `options` unless an unchanged copy is cached.
    pub fn for_options(options: &TlsOptions) -> Result<Option<ClientTls>, PgError> {
        if options.mode == SslMode::Disable {
            return Ok(None);
        }
        static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
        let stamps = stamps(options);
        let cache = CACHE.get_or_init(Default::default);
        if let Some((cached_stamps, tls)) = cache.lock().expect("tls cache lock").get(options) {
            if *cached_stamps == stamps {
                return Ok(Some(tls.clone()));
            }
        }
        let tls = ClientTls {
            mode: options.mode,
            config: Arc::new(build_config(options)?),
        };
        cache
            .lock()
            .expect("tls cache lock")
            .insert(options.clone(), (stamps, tls.clone()));
        Ok(Some(tls))
    }

    /// The tokio-postgres connector.
    pub fn connector(&self) -> MakeRustlsConnect {
        MakeRustlsConnect {
            config: self.config.clone(),
        }
    }

    /// The rustls connector, for streams Ferry opens itself.
    pub(crate) fn rustls_connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }
}

/// A file's identity for the cache: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

/// Built clients by options, with the stamps of the files they were built from.
type Cache = HashMap<TlsOptions, (Vec<Stamp>, ClientTls)>;

fn stamps(options: &TlsOptions) -> Vec<Stamp> {
    let stamp = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    let mut files: Vec<&Path> = Vec::new();
    if let Some(RootCerts::File(path)) = &options.root_certs {
        files.push(path);
    }
    if let Some(client) = &options.client_cert {
        files.push(&client.cert);
        files.push(&client.key);
    }
    files.into_iter().map(stamp).collect()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_config(options: &TlsOptions) -> Result<ClientConfig, PgError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match &options.root_certs {
        Some(roots) if options.mode.verifies_chain() => {
            let roots = Arc::new(root_store(roots)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| PgError::other("build the TLS verifier", Definite, e))?;
            if options.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly { inner: webpki })
            }
        }
        _ => Arc::new(NoVerification { algorithms }),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::other("configure TLS", Definite, e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &options.client_cert {
        Some(client) => {
            let (chain, key) = client_identity(client)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                PgError::other(
                    format!(
                        "sslcert {} and sslkey {} do not form a usable pair",
                        client.cert.display(),
                        client.key.display()
                    ),
                    Definite,
                    e,
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = options.sni;
    Ok(config)
}

fn read_file(param: &str, path: &Path) -> Result<Vec<u8>, PgError> {
    std::fs::read(path).map_err(|e| {
        PgError::other(
            format!(
                "cannot read the {param} file {} on the Ferry server",
                path.display()
            ),
            Definite,
            e,
        )
    })
}

fn certificates(param: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PgError> {
    let pem = read_file(param, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            PgError::other(
                format!("the {param} file {} is not valid PEM", path.display()),
                Definite,
                e,
            )
        })?;
    if certs.is_empty() {
        return Err(PgError::definite(format!(
            "the {param} file {} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

fn root_store(roots: &RootCerts) -> Result<RootCertStore, PgError> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::File(path) => {
            let (added, _) = store.add_parsable_certificates(certificates("sslrootcert", path)?);
            if added == 0 {
                return Err(PgError::definite(format!(
                    "the sslrootcert file {} holds no usable CA certificate",
                    path.display()
                )));
            }
        }
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(PgError::definite(
                    "sslrootcert=system: the operating system has no trusted CA certificates \
                     (install ca-certificates, or set SSL_CERT_FILE)",
                ));
            }
        }
    }
    Ok(store)
}

fn client_identity(
    client: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PgError> {
    let chain = certificates("sslcert", &client.cert)?;
    check_key_permissions(&client.key)?;
    let pem = read_file("sslkey", &client.key)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        PgError::other(
            format!(
                "the sslkey file {} holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)",
                client.key.display()
            ),
            Definite,
            e,
        )
    })?;
    Ok((chain, key))
}

/// libpq's rule: a private key must not be readable by others (0600 or less), or 0640 or
/// less when root owns it.
fn check_key_permissions(path: &Path) -> Result<(), PgError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        PgError::other(
            format!(
                "cannot read the sslkey file {} on the Ferry server",
                path.display()
            ),
            Definite,
            e,
        )
    })?;
    let forbidden = if meta.uid() == 0 { 0o037 } else { 0o077 };
    if meta.mode() & forbidden != 0 {
        return Err(PgError::definite(format!(
            "the sslkey file {} has group or world access (mode {:o}); it must be 0600 or less \
             (0640 or less if owned by root): chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // Name checks come after the chain checks in webpki: reaching one means the
            // chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
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

/// `prefer` and `require`: any certificate (libpq's semantics: encryption against passive
/// listeners only); the handshake's signatures are still verified.
#[derive(Debug)]
struct NoVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A tokio-postgres TLS connector over rustls.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, rustls::Error> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            server_name: server_name(host)?,
        })
    }
}

/// The server name to verify: an IP address for an IP host (matched against the
/// certificate's IP addresses, and never sent as SNI), a DNS name otherwise.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, rustls::Error> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| {
        rustls::Error::General(format!("{host:?} is neither a host name nor an IP address"))
    })
}

/// One connection's TLS handshake.
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            connector
                .connect(self.server_name, stream)
                .await
                .map(|s| RustlsStream(Box::new(s)))
                .map_err(unwrap_rustls)
        })
    }
}

/// tokio-rustls wraps rustls errors in `io::Error`, whose `source()` skips them: unwrap so
/// that [`explain`] can see the rustls error in the chain.
pub(crate) fn unwrap_rustls(err: io::Error) -> Box<dyn std::error::Error + Send + Sync> {
    if err.get_ref().is_some_and(|e| e.is::<rustls::Error>()) {
        err.into_inner().expect("checked above")
    } else {
        Box::new(err)
    }
}

/// An encrypted stream to the server.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM works without it (libpq's default is `channel_binding=prefer`).
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// What went wrong with TLS, for an operator, if `err` (or a cause) is a TLS failure or
/// the server's refusal of an unencrypted connection. `host` is the host connected to.
pub fn explain(
    err: &(dyn std::error::Error + 'static),
    options: &TlsOptions,
    host: &str,
) -> Option<String> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(explain_rustls(tls, options, host));
        }
        if let Some(db) = e.downcast_ref::<tokio_postgres::error::DbError>() {
            if db.code().code() == "28000" && db.message().contains("no encryption") {
                return Some(server_requires_ssl(options));
            }
            if db.code().code() == "28000" && db.message().contains("client certificate") {
                return Some(format!(
                    "the server requires a client certificate ({}) (hint: set sslcert and \
                     sslkey to a certificate signed by a CA in the server's ssl_ca_file)",
                    db.message()
                ));
            }
        }
        if e.to_string() == "server does not support TLS" {
            return Some(server_without_ssl(options));
        }
        cause = e.source();
    }
    None
}

pub(crate) fn server_without_ssl(options: &TlsOptions) -> String {
    format!(
        "the server does not support SSL, and sslmode={} requires it (hint: set ssl = on in \
         the server's postgresql.conf, or use sslmode=prefer to allow plain connections)",
        options.mode_given
    )
}

fn server_requires_ssl(options: &TlsOptions) -> String {
    format!(
        "{SERVER_REQUIRES_SSL}, and sslmode={} did not encrypt ({SERVER_REQUIRES_SSL_HINT})",
        options.mode_given
    )
}

/// The server's pg_hba.conf refused an unencrypted connection.
pub(crate) const SERVER_REQUIRES_SSL: &str =
    "the server requires SSL: pg_hba.conf has no entry for unencrypted connections";
/// What to do about [`SERVER_REQUIRES_SSL`].
pub(crate) const SERVER_REQUIRES_SSL_HINT: &str =
    "hint: use sslmode=require, or verify-full with sslrootcert";

fn explain_rustls(err: &rustls::Error, options: &TlsOptions, host: &str) -> String {
    use rustls::AlertDescription as Alert;
    let trusted_by = match &options.root_certs {
        Some(RootCerts::File(path)) => format!("the CA in sslrootcert ({})", path.display()),
        Some(RootCerts::System) => "a CA the operating system trusts".to_owned(),
        None => "a trusted CA".to_owned(),
    };
    match err {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!(
            "the server's certificate is not trusted: it was not issued by {trusted_by} (hint: \
             point sslrootcert at the CA certificate that signed the server's certificate)"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "host name mismatch: the server's certificate is not valid for {host:?} (hint: \
             connect with a host name the certificate lists, or use sslmode=verify-ca to check \
             the CA only)"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => "the server's certificate has expired or is not valid yet (hint: renew it, and \
              check the clocks of both machines)"
            .to_owned(),
        rustls::Error::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::AccessDenied,
        ) => format!(
            "the server refused the TLS handshake ({err}): it wants a client certificate it \
             trusts (hint: set sslcert and sslkey to a certificate its ssl_ca_file accepts)"
        ),
        other => format!("the TLS handshake with {host} failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_for_hosts_and_addresses() {
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("db.example").unwrap(),
            ServerName::DnsName(_)
        ));
    }

    #[test]
    fn explains_rustls_failures() {
        let options = TlsOptions {
            mode: SslMode::VerifyFull,
            root_certs: Some(RootCerts::File("/etc/ca.pem".into())),
            ..TlsOptions::default()
        };
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let text = explain(&unknown, &options, "db").unwrap();
        assert!(
            text.contains("not trusted") && text.contains("/etc/ca.pem"),
            "{text}"
        );
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(explain(&name, &options, "db")
            .unwrap()
            .contains("host name mismatch"));
        let plain = io::Error::other("connection reset");
        assert_eq!(explain(&plain, &options, "db"), None);
    }

    #[test]
    fn built_once_and_rebuilt_when_a_file_changes() {
        let ca = ferry_testkit::certs::TestCa::new("cache CA");
        let options = TlsOptions {
            mode: SslMode::VerifyFull,
            mode_given: SslMode::VerifyFull,
            root_certs: Some(RootCerts::File(ca.cert_path())),
            ..TlsOptions::default()
        };
        let first = ClientTls::for_options(&options).unwrap().unwrap();
        let again = ClientTls::for_options(&options).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first.config, &again.config));

        let rotated = ferry_testkit::certs::TestCa::new("rotated CA");
        std::fs::write(ca.cert_path(), rotated.cert_pem()).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(ca.cert_path())
            .unwrap()
            .set_modified(later)
            .unwrap();
        let rebuilt = ClientTls::for_options(&options).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&first.config, &rebuilt.config));

        std::fs::write(ca.cert_path(), "not a certificate").unwrap();
        let err = ClientTls::for_options(&options).err().unwrap().to_string();
        assert!(err.contains("holds no certificate"), "{err}");
    }

    #[test]
    fn world_readable_keys_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_key_permissions(&key).unwrap_err().to_string();
        assert!(err.contains("group or world access"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_key_permissions(&key).is_ok());
    }
}
