//! What the CLI authenticates with: the API token and the TLS settings of `https://` servers.
//!
//! - The token comes from `--token`, else `FERRY_TOKEN`, else the file of `--token-file` (or
//!   `FERRY_TOKEN_FILE`), whose first line that is neither blank nor a `#` comment is the
//!   token. It is held as an [`ApiToken`], which prints as `***`.
//! - `https://` servers are verified against the system's roots, or only against `--ca`.
//!   `--cert` and `--key` present a client certificate. The rustls configuration always uses
//!   the ring provider (the binary has no other).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_api::auth::ApiToken;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::CliError;

/// The token and TLS files of one CLI run.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    /// Sent as `Authorization: Bearer …` when set.
    pub(crate) token: Option<ApiToken>,
    /// Trust only this CA for `https://` servers.
    pub(crate) ca: Option<PathBuf>,
    /// A client certificate and its key.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Credentials {
    /// From the flags, falling back to `FERRY_TOKEN`, `FERRY_TOKEN_FILE`, `FERRY_CA`,
    /// `FERRY_CERT` and `FERRY_KEY`.
    pub(crate) fn from_flags(
        token: Option<String>,
        token_file: Option<PathBuf>,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Credentials, CliError> {
        let token = match token.or_else(|| env("FERRY_TOKEN")) {
            Some(token) => Some(token),
            None => match token_file.or_else(|| env("FERRY_TOKEN_FILE").map(PathBuf::from)) {
                Some(path) => Some(read_token_file(&path)?),
                None => None,
            },
        };
        let token = token.map(|t| ApiToken::new(&t));
        if token.as_ref().is_some_and(|t| t.expose().is_empty()) {
            return Err(CliError::usage("the API token is empty"));
        }
        let cert = cert.or_else(|| env("FERRY_CERT").map(PathBuf::from));
        let key = key.or_else(|| env("FERRY_KEY").map(PathBuf::from));
        let client_cert = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(CliError::usage("--cert and --key go together")),
        };
        Ok(Credentials {
            token,
            ca: ca.or_else(|| env("FERRY_CA").map(PathBuf::from)),
            client_cert,
        })
    }

    /// The rustls configuration for `https://` servers.
    pub(crate) fn tls_config(&self) -> Result<rustls::ClientConfig, CliError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| CliError::usage(format!("TLS: {e}")))?;
        let builder = match &self.ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates("--ca", ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| CliError::usage(format!("--ca {}: {e}", ca.display())))?;
                }
                builder.with_root_certificates(roots)
            }
            None => {
                let verifier = rustls_platform_verifier::Verifier::new(provider)
                    .map_err(|e| CliError::usage(format!("the system's CA roots: {e}")))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
            }
        };
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates("--cert", cert)?;
                let key_pem = read("--key", key)?;
                let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                    CliError::usage(format!("--key {}: no private key in PEM", key.display()))
                })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| CliError::usage(format!("--cert/--key: {e}")))?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::usage(format!("{flag} {}: {e}", path.display())))
}

fn certificates(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, CliError> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::usage(format!("{flag} {}: not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(CliError::usage(format!(
            "{flag} {}: holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The first line of `path` that is neither blank nor a comment.
fn read_token_file(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("--token-file {}: {e}", path.display())))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .ok_or_else(|| {
            CliError::usage(format!(
                "--token-file {}: holds no token (the first line that is not blank or a \
                 # comment is the token)",
                path.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_skips_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "# ops token\n\n  abcdefghijklmnopq  \n").unwrap();
        let creds = Credentials::from_flags(None, Some(path.clone()), None, None, None).unwrap();
        let token = creds.token.unwrap();
        assert_eq!(token.expose(), "abcdefghijklmnopq");
        assert_eq!(format!("{token:?}"), "***");
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(Credentials::from_flags(None, Some(path), None, None, None).is_err());
        let flag = Credentials::from_flags(Some("t".into()), None, None, None, None).unwrap();
        assert_eq!(flag.token.unwrap().expose(), "t", "the flag wins");
        assert!(Credentials::from_flags(None, None, None, Some("c".into()), None).is_err());
    }
}
