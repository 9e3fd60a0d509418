//! Source and sink connection strings.
//!
//! A [`ConnectionUri`] keeps the string it was given (with the password) but prints and
//! debug-formats with the password replaced by `***`, so it cannot leak into logs, errors
//! or API output by accident. [`ConnectionUri::expose`] is the one way to read the secret,
//! for the code that connects and for the metadata store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use url::Url;

/// A URI that does not parse or names an unknown scheme. Never contains the password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UriError {
    /// Not a URI at all.
    #[error("invalid URI: {reason}")]
    Malformed {
        /// What is wrong, without the URI itself.
        reason: String,
    },
    /// A scheme Ferry does not know for this role.
    #[error("unsupported scheme {scheme:?}: expected {expected}")]
    UnsupportedScheme {
        /// The scheme given.
        scheme: String,
        /// The schemes accepted.
        expected: &'static str,
    },
    /// A required part is missing.
    #[error("URI is missing {part}")]
    Missing {
        /// The missing part.
        part: &'static str,
    },
    /// A query parameter has a value Ferry cannot use (for example `sslmode=bogus`).
    #[error("invalid URI parameter: {reason}")]
    InvalidParameter {
        /// What is wrong, without the URI itself.
        reason: String,
    },
}

/// A database connection URI such as `postgres://user:pw@host:5432/db?sslmode=disable`.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionUri {
    url: Url,
}

impl ConnectionUri {
    /// The full URI, password included: only for connecting and for the metadata store.
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// The URI's scheme.
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// Host name or address.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or("localhost")
    }

    /// Port, or `default` when the URI names none.
    pub fn port_or(&self, default: u16) -> u16 {
        self.url.port().unwrap_or(default)
    }

    /// User name (empty when none is given).
    pub fn user(&self) -> String {
        percent_decode(self.url.username())
    }

    /// The password, if any.
    pub fn password(&self) -> Option<String> {
        self.url.password().map(percent_decode)
    }

    /// Database name (the path without its leading `/`).
    pub fn database(&self) -> String {
        percent_decode(self.url.path().trim_start_matches('/'))
    }

    /// Query parameters other than `skip`, in order (values decoded).
    pub fn params_except(&self, skip: &[&str]) -> Vec<(String, String)> {
        self.url
            .query_pairs()
            .filter(|(k, _)| !skip.contains(&k.as_ref()))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// The value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// The URI with its password masked as `***`.
    pub fn masked(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            // Setting a password cannot fail on a URL that already has one.
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl FromStr for ConnectionUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = Url::parse(s.trim()).map_err(|e| UriError::Malformed {
            reason: e.to_string(),
        })?;
        if url.cannot_be_a_base() {
            return Err(UriError::Malformed {
                reason: "expected scheme://[user[:password]@]host[:port][/database]".into(),
            });
        }
        Ok(ConnectionUri { url })
    }
}

impl fmt::Display for ConnectionUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for ConnectionUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionUri({})", self.masked())
    }
}

/// Serializes **with** the password: for the metadata store only. API types print the
/// masked form through `Display`.
impl Serialize for ConnectionUri {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for ConnectionUri {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A PostgreSQL source URI (`postgres://` or `postgresql://`).
pub fn parse_postgres_uri(s: &str) -> Result<ConnectionUri, UriError> {
    let uri: ConnectionUri = s.parse()?;
    match uri.scheme() {
        "postgres" | "postgresql" => {}
        other => {
            return Err(UriError::UnsupportedScheme {
                scheme: other.to_string(),
                expected: "postgres:// or postgresql://",
            })
        }
    }
    if uri.url.host_str().is_none_or(str::is_empty) {
        return Err(UriError::Missing { part: "a host" });
    }
    if uri.database().is_empty() {
        return Err(UriError::Missing {
            part: "a database name (postgres://user@host:5432/dbname)",
        });
    }
    crate::tls::TlsOptions::from_uri(&uri)?;
    Ok(uri)
}

/// Where a changefeed writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SinkUri {
    /// Another PostgreSQL database.
    Postgres(ConnectionUri),
    /// `blackhole://`: discards everything, keeps counts.
    Blackhole,
}

impl SinkUri {
    /// The URI with secrets masked.
    pub fn masked(&self) -> String {
        match self {
            SinkUri::Postgres(uri) => uri.masked(),
            SinkUri::Blackhole => "blackhole://".into(),
        }
    }
}

impl fmt::Display for SinkUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl FromStr for SinkUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "blackhole://" || s == "blackhole:" {
            return Ok(SinkUri::Blackhole);
        }
        let uri: ConnectionUri = s.parse()?;
        match uri.scheme() {
            "postgres" | "postgresql" => Ok(SinkUri::Postgres(parse_postgres_uri(s)?)),
            "blackhole" => Ok(SinkUri::Blackhole),
            other => Err(UriError::UnsupportedScheme {
                scheme: other.to_string(),
                expected: "postgres://, postgresql:// or blackhole://",
            }),
        }
    }
}

impl TryFrom<String> for SinkUri {
    type Error = UriError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Serializes with secrets, like [`ConnectionUri`].
impl From<SinkUri> for String {
    fn from(uri: SinkUri) -> Self {
        match uri {
            SinkUri::Postgres(uri) => uri.expose().to_string(),
            SinkUri::Blackhole => "blackhole://".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_prints() {
        let uri =
            parse_postgres_uri("postgres://app:s3cr%40t@db.example:5433/shop?sslmode=disable")
                .unwrap();
        assert_eq!(uri.password().as_deref(), Some("s3cr@t"));
        assert_eq!(uri.user(), "app");
        assert_eq!(uri.database(), "shop");
        assert_eq!(uri.port_or(5432), 5433);
        for shown in [uri.to_string(), format!("{uri:?}"), uri.masked()] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }

    #[test]
    fn sink_schemes() {
        assert_eq!(
            "blackhole://".parse::<SinkUri>().unwrap(),
            SinkUri::Blackhole
        );
        assert!(matches!(
            "kafka://x:9092/t".parse::<SinkUri>(),
            Err(UriError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            "not a uri".parse::<SinkUri>(),
            Err(UriError::Malformed { .. })
        ));
        assert!(matches!(
            parse_postgres_uri("postgres://u@h:1/"),
            Err(UriError::Missing { .. })
        ));
    }

    #[test]
    fn errors_do_not_echo_the_uri() {
        let err = parse_postgres_uri("mysql://u:topsecret@h/db").unwrap_err();
        assert!(!err.to_string().contains("topsecret"));
    }
}
