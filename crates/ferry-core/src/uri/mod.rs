//! Source and sink connection strings.
//!
//! A [`ConnectionUri`] keeps the string it was given (with the password) but prints and
//! debug-formats with every secret replaced by `***` (the userinfo password and secret
//! query parameters such as `password=` and `sslpassword=`, see [`mask`]), so it cannot
//! leak into logs, errors or API output by accident. [`ConnectionUri::expose`] is the one
//! way to read the stored text, for the metadata store;
//! [`ConnectionUri::password`] and [`ConnectionUri::connection_string`] are the ways to the
//! effective password, for the code that connects.
//!
//! A password may also be given by reference, `password_file=` or `password_env=` (see
//! [`password`]): then it is read at every connect and never stored.

pub mod events;
pub mod file;
pub mod kafka;
pub mod mask;
pub mod nats;
pub mod password;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use url::Url;

pub use mask::{is_secret_param, mask_secret_params, MASK};
pub use password::{PasswordError, PasswordSource, PASSWORD_ENV, PASSWORD_FILE};

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
    /// The password is given more than one way, or a reference is malformed.
    #[error("{reason}")]
    PasswordReference {
        /// What is wrong (names parameters, never values).
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

    /// How the password is given (inline, by reference, or not at all).
    pub fn password_source(&self) -> PasswordSource {
        if let Some(inline) = self.url.password() {
            return PasswordSource::Inline(percent_decode(inline));
        }
        // Parsing refused URIs with more than one form, so the first one found is the one.
        for (key, value) in self.url.query_pairs() {
            match key.as_ref() {
                "password" => return PasswordSource::Inline(value.into_owned()),
                PASSWORD_FILE => return PasswordSource::File(PathBuf::from(value.as_ref())),
                PASSWORD_ENV => return PasswordSource::Env(value.into_owned()),
                _ => {}
            }
        }
        PasswordSource::None
    }

    /// The effective password: inline, or read now from its `password_file` or
    /// `password_env`. The error names the file or variable, never a value.
    pub fn password(&self) -> Result<Option<String>, PasswordError> {
        match self.password_source() {
            PasswordSource::None => Ok(None),
            PasswordSource::Inline(password) => Ok(Some(password)),
            PasswordSource::File(path) => password::read_password_file(&path).map(Some),
            PasswordSource::Env(var) => password::read_password_env(&var).map(Some),
        }
    }

    /// The URI for a driver that parses libpq URIs: Ferry's own parameters
    /// (`password_file`, `password_env`, and the TLS options Ferry applies itself, see
    /// [`crate::TlsOptions`]) removed and a referenced password, read now, put
    /// in the userinfo; so the driver uses the password [`ConnectionUri::password`] returns
    /// (also for a stored URI with two, see `parse_stored`). Holds the secret: never print
    /// it.
    pub fn connection_string(&self) -> Result<String, PasswordError> {
        let referenced = match self.password_source() {
            PasswordSource::File(_) | PasswordSource::Env(_) => self.password()?,
            PasswordSource::None | PasswordSource::Inline(_) => None,
        };
        let mut url = self.url.clone();
        let userinfo = self.url.password().is_some();
        if let Some(query) = self.url.query() {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| {
                    let key = percent_decode(pair.split_once('=').map_or(*pair, |(k, _)| k));
                    !(key == PASSWORD_FILE
                        || key == PASSWORD_ENV
                        || userinfo && key == "password"
                        || crate::tls::TLS_PARAMS.contains(&key.as_str()))
                })
                .collect();
            url.set_query((!kept.is_empty()).then(|| kept.join("&")).as_deref());
        }
        if let Some(password) = referenced {
            let encoded =
                percent_encoding::utf8_percent_encode(&password, USERINFO_ENCODE).to_string();
            // A URL with a host (parsing checked it is a base) accepts a password.
            let _ = url.set_password(Some(&encoded));
        }
        Ok(url.into())
    }

    /// Database name (the path without its leading `/`).
    pub fn database(&self) -> String {
        percent_decode(self.url.path().trim_start_matches('/'))
    }

    /// The TLS options its query holds, checked ([`crate::TlsOptions::from_params`]).
    pub fn tls_options(&self) -> Result<crate::TlsOptions, UriError> {
        crate::TlsOptions::from_params(|key| self.param(key))
            .map_err(|e| UriError::InvalidParameter { reason: e.0 })
    }

    /// The value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// Whether a secret of this URI is the mask itself (`***`): a URI copied from output.
    pub fn has_masked_secret(&self) -> bool {
        self.url.password() == Some(MASK)
            || self
                .url
                .query_pairs()
                .any(|(key, value)| value == MASK && is_secret_param(&key))
    }

    /// The URI with its password and every secret query parameter masked as `***`.
    pub fn masked(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            // Setting a password cannot fail on a URL that already has one.
            let _ = url.set_password(Some(MASK));
        }
        if let Some(query) = self.url.query() {
            url.set_query(Some(&mask::mask_query(query)));
        }
        url.to_string()
    }
}

/// What `connection_string` percent-encodes in a password: everything but unreserved
/// characters, so any password survives the driver's URI parser.
const USERINFO_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` with its `%XX` escapes decoded (invalid UTF-8 replaced), as URI parts are read.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl ConnectionUri {
    /// A URI read back from the metadata store: like [`FromStr`], without refusing a
    /// password given more than one way. An older Ferry stored `user:a@…?password=b`
    /// unchecked; such a store still opens (the userinfo password is the effective one),
    /// and only new input is refused.
    fn parse_stored(s: &str) -> Result<Self, UriError> {
        parse_url(s).map(|url| ConnectionUri { url })
    }
}

fn parse_url(s: &str) -> Result<Url, UriError> {
    let url = Url::parse(s.trim()).map_err(|e| UriError::Malformed {
        reason: e.to_string(),
    })?;
    if url.cannot_be_a_base() {
        return Err(UriError::Malformed {
            reason: "expected scheme://[user[:password]@]host[:port][/database]".into(),
        });
    }
    Ok(url)
}

impl FromStr for ConnectionUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = parse_url(s)?;
        let params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        password::check_password_forms(url.password().is_some(), &params)?;
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
        ConnectionUri::parse_stored(&s).map_err(serde::de::Error::custom)
    }
}

/// A PostgreSQL source URI (`postgres://` or `postgresql://`).
pub fn parse_postgres_uri(s: &str) -> Result<ConnectionUri, UriError> {
    check_postgres(s.parse()?)
}

/// A source URI of any database kind Ferry reads: PostgreSQL (a database name is
/// required) or MySQL/MariaDB (`mysql://`, `mariadb://`; a database name limits the source
/// to that database).
pub fn parse_source_uri(s: &str) -> Result<ConnectionUri, UriError> {
    let uri: ConnectionUri = s.parse()?;
    match uri.scheme() {
        "mysql" | "mariadb" => check_mysql(uri),
        "postgres" | "postgresql" => check_postgres(uri),
        other => Err(UriError::UnsupportedScheme {
            scheme: other.to_string(),
            expected: "postgres://, postgresql://, mysql:// or mariadb://",
        }),
    }
}

/// The query parameter a webhook URI names its signing secret with (masked like a
/// password; never sent to the endpoint).
pub const WEBHOOK_SECRET_PARAM: &str = "signing_secret";

/// The event options of a webhook URI (its other parameters are the endpoint's).
fn webhook_options(url: &Url) -> Result<events::EventOptions, UriError> {
    let mut options = events::EventOptions::default();
    for (key, value) in url.query_pairs() {
        options.take(&key, &value, false)?;
    }
    Ok(options)
}

/// `uri` if it is a webhook URI with a host.
fn check_webhook(uri: ConnectionUri) -> Result<ConnectionUri, UriError> {
    if uri.url.host_str().is_none_or(str::is_empty) {
        return Err(UriError::Missing { part: "a host" });
    }
    if !uri.url.username().is_empty() || uri.url.password().is_some() {
        return Err(UriError::InvalidParameter {
            reason: "webhook URIs take no user:password; sign requests with ?signing_secret="
                .into(),
        });
    }
    webhook_options(&uri.url)?;
    Ok(uri)
}

impl ConnectionUri {
    /// A webhook's event options (`transactions=`; checked when parsed).
    pub fn webhook_options(&self) -> events::EventOptions {
        webhook_options(&self.url).unwrap_or_default()
    }

    /// A webhook's endpoint: the URI without Ferry's own parameters.
    pub fn webhook_endpoint(&self) -> String {
        let mut url = self.url.clone();
        let kept: Vec<(String, String)> = self
            .url
            .query_pairs()
            .filter(|(k, _)| {
                !matches!(
                    k.as_ref(),
                    WEBHOOK_SECRET_PARAM | "transactions" | "schemas"
                )
            })
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        url.into()
    }
}

/// `uri` if it is a MySQL/MariaDB URI with a host.
fn check_mysql(uri: ConnectionUri) -> Result<ConnectionUri, UriError> {
    if uri.url.host_str().is_none_or(str::is_empty) {
        return Err(UriError::Missing { part: "a host" });
    }
    uri.tls_options()?;
    Ok(uri)
}

/// `uri` if it is a PostgreSQL URI with a host and a database.
fn check_postgres(uri: ConnectionUri) -> Result<ConnectionUri, UriError> {
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
    uri.tls_options()?;
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
    /// `file:///DIR?format=debezium-json`: JSON-lines event files in a directory.
    File(file::FileSinkUri),
    /// `nats://host:port?stream=NAME&subject_prefix=PFX`: a NATS JetStream stream.
    Nats(nats::NatsSinkUri),
    /// `mysql://` or `mariadb://`: a MySQL or MariaDB server.
    Mysql(ConnectionUri),
    /// `kafka://host:port[,…]?topic_prefix=PFX`: Kafka topics.
    Kafka(kafka::KafkaSinkUri),
    /// `http(s)://host/path[?signing_secret=S]`: a webhook that receives batches of events.
    Webhook(ConnectionUri),
}

impl SinkUri {
    /// The connection URI of a sink with secrets in it (databases, webhooks; `None` for
    /// the others), whose password the engine checks and whose masked secrets an update
    /// keeps.
    pub fn connection(&self) -> Option<&ConnectionUri> {
        match self {
            SinkUri::Postgres(uri) | SinkUri::Mysql(uri) | SinkUri::Webhook(uri) => Some(uri),
            SinkUri::Blackhole | SinkUri::File(_) | SinkUri::Nats(_) | SinkUri::Kafka(_) => None,
        }
    }

    /// The URI with secrets masked.
    pub fn masked(&self) -> String {
        match self {
            SinkUri::Postgres(uri) | SinkUri::Mysql(uri) | SinkUri::Webhook(uri) => uri.masked(),
            SinkUri::Blackhole => "blackhole://".into(),
            SinkUri::File(uri) => uri.to_string(),
            SinkUri::Nats(uri) => uri.to_string(),
            SinkUri::Kafka(uri) => uri.to_string(),
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
        if s.starts_with("kafka://") {
            return Ok(SinkUri::Kafka(kafka::KafkaSinkUri::parse(s)?));
        }
        let uri: ConnectionUri = s.parse()?;
        match uri.scheme() {
            "postgres" | "postgresql" => Ok(SinkUri::Postgres(parse_postgres_uri(s)?)),
            "blackhole" => Ok(SinkUri::Blackhole),
            "file" => Ok(SinkUri::File(file::FileSinkUri::parse(&uri.url)?)),
            "nats" => Ok(SinkUri::Nats(nats::NatsSinkUri::parse(&uri.url)?)),
            "mysql" | "mariadb" => Ok(SinkUri::Mysql(check_mysql(uri)?)),
            "http" | "https" => Ok(SinkUri::Webhook(check_webhook(uri)?)),
            other => Err(UriError::UnsupportedScheme {
                scheme: other.to_string(),
                expected: "postgres://, postgresql://, mysql://, mariadb://, blackhole://, \
                           file://, nats://, kafka://, http:// or https://",
            }),
        }
    }
}

/// Reads a sink URI back from the metadata store, as leniently as
/// [`ConnectionUri`]'s `Deserialize` (input goes through [`FromStr`]).
impl TryFrom<String> for SinkUri {
    type Error = UriError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match ConnectionUri::parse_stored(&s) {
            Ok(uri) if matches!(uri.scheme(), "postgres" | "postgresql") => {
                check_postgres(uri).map(SinkUri::Postgres)
            }
            Ok(uri) if matches!(uri.scheme(), "mysql" | "mariadb") => {
                check_mysql(uri).map(SinkUri::Mysql)
            }
            _ => s.parse(),
        }
    }
}

/// Serializes with secrets, like [`ConnectionUri`].
impl From<SinkUri> for String {
    fn from(uri: SinkUri) -> Self {
        match uri {
            SinkUri::Postgres(uri) | SinkUri::Mysql(uri) | SinkUri::Webhook(uri) => {
                uri.expose().to_string()
            }
            SinkUri::Blackhole => "blackhole://".into(),
            SinkUri::File(uri) => uri.to_string(),
            SinkUri::Nats(uri) => uri.to_string(),
            SinkUri::Kafka(uri) => uri.to_string(),
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
        assert_eq!(uri.password().unwrap().as_deref(), Some("s3cr@t"));
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
            "amqp://x:5672/t".parse::<SinkUri>(),
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

    #[test]
    fn query_secrets_never_print() {
        let uri = parse_postgres_uri(
            "postgres://app@db/shop?sslmode=require&password=s3cret&sslpassword=k3y",
        )
        .unwrap();
        assert_eq!(uri.password().unwrap().as_deref(), Some("s3cret"));
        for shown in [uri.to_string(), format!("{uri:?}"), uri.masked()] {
            assert!(
                !shown.contains("s3cret") && !shown.contains("k3y"),
                "{shown}"
            );
        }
        assert_eq!(
            uri.masked(),
            "postgres://app@db/shop?sslmode=require&password=***&sslpassword=***"
        );
    }

    #[test]
    fn password_given_one_way_only() {
        for bad in [
            "postgres://app:a@db/x?password=b",
            "postgres://app:a@db/x?password_file=/run/pw",
            "postgres://app@db/x?password_file=/run/pw&password_env=PW",
            "postgres://app@db/x?password_env=A&password_env=B",
            "postgres://app@db/x?password_file=relative/pw",
            "postgres://app@db/x?password_env=",
        ] {
            let err = parse_postgres_uri(bad).unwrap_err();
            assert!(
                matches!(err, UriError::PasswordReference { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_stored_uri_with_two_passwords_still_loads() {
        let stored = "\"postgres://app:a@db/x?password=b\"";
        let uri: ConnectionUri = serde_json::from_str(stored).unwrap();
        assert_eq!(uri.password().unwrap().as_deref(), Some("a"));
        assert_eq!(uri.masked(), "postgres://app:***@db/x?password=***");
        let driver = uri.connection_string().unwrap();
        assert_eq!(
            driver, "postgres://app:a@db/x",
            "one password reaches the driver"
        );
        let sink: SinkUri = serde_json::from_str(stored).unwrap();
        assert!(matches!(sink, SinkUri::Postgres(_)));
        assert!(stored.trim_matches('"').parse::<SinkUri>().is_err());
    }

    #[test]
    fn password_from_a_file() {
        let dir = std::env::temp_dir().join(format!("ferry-core-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "p@ss word/é\r\n").unwrap();
        let text = format!(
            "postgres://app@db:5433/shop?password_file={}&sslmode=disable&connect_timeout=5",
            file.display()
        );
        let uri = parse_postgres_uri(&text).unwrap();
        assert_eq!(uri.password_source(), PasswordSource::File(file.clone()));
        assert_eq!(uri.password().unwrap().as_deref(), Some("p@ss word/é"));
        assert_eq!(uri.masked(), text, "a reference is not secret");
        let driver: Url = uri.connection_string().unwrap().parse().unwrap();
        // Ferry's own parameters (references, TLS) are not the driver's; the rest are.
        assert_eq!(driver.query(), Some("connect_timeout=5"));
        assert_eq!(percent_decode(driver.password().unwrap()), "p@ss word/é");
        assert_eq!(driver.port(), Some(5433));

        std::fs::write(&file, "\n").unwrap();
        let err = uri.password().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("password_file {} is empty", file.display())
        );
        std::fs::remove_file(&file).unwrap();
        let err = uri.connection_string().unwrap_err();
        assert!(matches!(err, PasswordError::FileUnreadable { .. }));
        assert!(err.to_string().contains(&file.display().to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn password_from_the_environment() {
        let uri = parse_postgres_uri("postgres://app@db/shop?password_env=FERRY_CORE_TEST_UNSET")
            .unwrap();
        assert_eq!(
            uri.password().unwrap_err().to_string(),
            "environment variable FERRY_CORE_TEST_UNSET (password_env) is not set on the Ferry \
             server"
        );
        let uri = parse_postgres_uri("postgres://app@db/shop?password_env=PATH").unwrap();
        assert_eq!(uri.password().unwrap(), std::env::var("PATH").ok());
        let plain = parse_postgres_uri("postgres://app@db/shop").unwrap();
        assert_eq!(plain.password().unwrap(), None);
        assert_eq!(plain.connection_string().unwrap(), "postgres://app@db/shop");
    }

    #[test]
    fn postgres_uris_are_checked_when_parsed() {
        let err = parse_postgres_uri("postgres://u:topsecret@h/db?sslmode=bogus").unwrap_err();
        assert!(err.to_string().contains("sslmode"));
        assert!(!err.to_string().contains("topsecret"));
        assert!(parse_postgres_uri("postgres://u@h/db?sslmode=require").is_ok());
    }
}
