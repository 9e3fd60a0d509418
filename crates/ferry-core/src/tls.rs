//! TLS options of a database connection, named once for every connector.
//!
//! The names and meanings are libpq's (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`,
//! `sslsni`), so a URI that works with `psql` works with Ferry. [`TlsOptions::from_params`]
//! parses and validates them when a URI is accepted, so a bad value is a clear error at
//! create time; the connectors (PostgreSQL today, MySQL later) turn the typed options into
//! their TLS client. Files are paths on the Ferry server; this module does no I/O.
//!
//! | `sslmode`     | encrypted            | certificate chain checked | host name checked |
//! |---------------|----------------------|---------------------------|-------------------|
//! | `disable`     | never                | –                         | –                 |
//! | `prefer`      | if the server offers | no                        | no                |
//! | `require`     | always               | no (yes with `sslrootcert`) | no              |
//! | `verify-ca`   | always               | yes                       | no                |
//! | `verify-full` | always               | yes                       | yes               |

use std::fmt;
use std::path::PathBuf;

/// The URI query parameters this module owns; connectors strip them before handing the
/// rest of the URI to a driver.
pub const TLS_PARAMS: [&str; 5] = ["sslmode", "sslrootcert", "sslcert", "sslkey", "sslsni"];

/// A TLS parameter Ferry cannot use (for example `sslmode=bogus`): what is wrong, never
/// the URI itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not checked (unless `sslrootcert` is given).
    Require,
    /// TLS or fail; the server's certificate must chain to a trusted CA.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    /// Whether the server's certificate chain is checked.
    pub fn verifies_chain(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    fn parse(value: &str) -> Result<SslMode, TlsError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` (plain first, TLS only if refused) protects nothing that
            // `prefer` does not; refusing it beats pretending.
            other => {
                return Err(invalid(format!(
                    "sslmode={other:?} is not supported: use disable, prefer, require, \
                     verify-ca or verify-full"
                )))
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which certificate authorities are trusted to sign the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RootCerts {
    /// The CA certificates (PEM) in this file.
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's trusted roots.
    System,
}

/// A client certificate and its private key (PEM files), for servers that ask for one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientCert {
    /// `sslcert`: the certificate, optionally followed by its intermediates.
    pub cert: PathBuf,
    /// `sslkey`: the private key (PKCS#8, PKCS#1 or SEC1); must not be group/world readable.
    pub key: PathBuf,
}

/// The TLS settings of one connection URI, validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct TlsOptions {
    /// The mode after libpq's rules: `require` with `sslrootcert` is `verify-ca`.
    pub mode: SslMode,
    /// The mode as written (or defaulted), for messages.
    pub mode_given: SslMode,
    /// Trusted CAs; set whenever [`SslMode::verifies_chain`] holds.
    pub root_certs: Option<RootCerts>,
    /// The client certificate, if any.
    pub client_cert: Option<ClientCert>,
    /// `sslsni`: whether to send the host name in the handshake (default on).
    pub sni: bool,
}

impl TlsOptions {
    /// Reads and checks the TLS parameters a URI holds (`param` gives a query parameter's
    /// value), with libpq's defaults and rules:
    ///
    /// - `sslmode` defaults to `prefer`;
    /// - `require` with `sslrootcert` behaves as `verify-ca`;
    /// - `verify-ca` and `verify-full` need `sslrootcert` (a file, or `system`); libpq
    ///   would look for `~/.postgresql/root.crt`, a hidden default Ferry does not copy;
    /// - `sslrootcert=system` needs `verify-full` (a public CA signs certificates for
    ///   anyone, so only the host name check makes it mean something) and is its default;
    /// - `sslcert` and `sslkey` come together;
    /// - `sslsni` is `0` or `1`.
    pub fn from_params(param: impl Fn(&str) -> Option<String>) -> Result<TlsOptions, TlsError> {
        let file = |key: &str| -> Result<Option<PathBuf>, TlsError> {
            match param(key) {
                None => Ok(None),
                Some(v) if v.is_empty() => Err(invalid(format!("{key} is empty"))),
                Some(v) => Ok(Some(PathBuf::from(v))),
            }
        };
        let root_certs = match param("sslrootcert").as_deref() {
            Some("system") => Some(RootCerts::System),
            _ => file("sslrootcert")?.map(RootCerts::File),
        };
        let mode_given = match param("sslmode") {
            Some(v) => SslMode::parse(&v)?,
            None if root_certs == Some(RootCerts::System) => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        let mode = match (mode_given, &root_certs) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        };
        if mode.verifies_chain() && root_certs.is_none() {
            return Err(invalid(format!(
                "sslmode={mode_given} needs sslrootcert: the CA certificate file (PEM) on the \
                 Ferry server, or sslrootcert=system for the operating system's trusted CAs"
            )));
        }
        if root_certs == Some(RootCerts::System) && mode != SslMode::VerifyFull {
            return Err(invalid(format!(
                "sslrootcert=system needs sslmode=verify-full (got sslmode={mode_given}): any \
                 public CA would vouch for any server without the host name check"
            )));
        }
        let client_cert = match (file("sslcert")?, file("sslkey")?) {
            (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("sslcert needs sslkey (its private key)")),
            (None, Some(_)) => return Err(invalid("sslkey needs sslcert (its certificate)")),
        };
        let sni = match param("sslsni").as_deref() {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => return Err(invalid(format!("sslsni={other:?}: expected 0 or 1"))),
        };
        if mode == SslMode::Disable && (root_certs.is_some() || client_cert.is_some()) {
            return Err(invalid(
                "sslmode=disable with sslrootcert, sslcert or sslkey: the files would be \
                 ignored; remove them or choose another sslmode",
            ));
        }
        Ok(TlsOptions {
            mode,
            mode_given,
            root_certs,
            client_cert,
            sni,
        })
    }
}

/// Whether an open connection is encrypted, as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectionSecurity {
    /// TLS is in use.
    pub encrypted: bool,
    /// `TLSv1.3`, `TLSv1.2`, … when encrypted.
    pub tls_version: Option<String>,
    /// The cipher suite, when encrypted.
    pub cipher: Option<String>,
}

fn invalid(reason: impl Into<String>) -> TlsError {
    TlsError(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options of a query string (`?key=value&…`).
    fn options(query: &str) -> Result<TlsOptions, TlsError> {
        let pairs: Vec<(String, String)> = query
            .trim_start_matches('?')
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        TlsOptions::from_params(|key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    #[test]
    fn default_is_prefer_with_sni() {
        let tls = options("").unwrap();
        assert_eq!(tls.mode, SslMode::Prefer);
        assert!(tls.sni);
        assert_eq!(tls.root_certs, None);
        assert_eq!(tls.client_cert, None);
    }

    #[test]
    fn every_mode_parses() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
        ] {
            assert_eq!(options(&format!("?sslmode={text}")).unwrap().mode, mode);
            assert_eq!(mode.as_str(), text);
        }
        let ca = "&sslrootcert=/etc/ferry/ca.pem";
        assert_eq!(
            options(&format!("?sslmode=verify-ca{ca}")).unwrap().mode,
            SslMode::VerifyCa
        );
        let full = options(&format!("?sslmode=verify-full{ca}")).unwrap();
        assert_eq!(full.mode, SslMode::VerifyFull);
        assert_eq!(
            full.root_certs,
            Some(RootCerts::File("/etc/ferry/ca.pem".into()))
        );
    }

    #[test]
    fn require_with_a_root_cert_verifies_the_chain() {
        let tls = options("?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.mode_given, SslMode::Require);
    }

    #[test]
    fn verify_modes_need_a_root_cert() {
        for mode in ["verify-ca", "verify-full"] {
            let err = options(&format!("?sslmode={mode}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("needs sslrootcert"), "{err}");
        }
    }

    #[test]
    fn system_roots_mean_verify_full() {
        let tls = options("?sslrootcert=system").unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_certs, Some(RootCerts::System));
        let err = options("?sslrootcert=system&sslmode=verify-ca")
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs sslmode=verify-full"), "{err}");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        for (query, expected) in [
            ("?sslmode=allow", "sslmode=\"allow\" is not supported"),
            ("?sslmode=VERIFY-FULL", "is not supported"),
            ("?sslsni=yes", "sslsni=\"yes\": expected 0 or 1"),
            ("?sslcert=/c.pem", "sslcert needs sslkey"),
            ("?sslkey=/k.pem", "sslkey needs sslcert"),
            ("?sslrootcert=", "sslrootcert is empty"),
            ("?sslmode=disable&sslrootcert=/ca.pem", "would be ignored"),
        ] {
            let err = options(query).unwrap_err().to_string();
            assert!(err.contains(expected), "{query}: {err}");
        }
    }

    #[test]
    fn client_cert_and_sni() {
        let tls = options("?sslcert=/c.pem&sslkey=/k.pem&sslsni=0").unwrap();
        assert_eq!(
            tls.client_cert,
            Some(ClientCert {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert!(!tls.sni);
    }
}
