//! The server's configuration: what `ferry server` reads once at start and passes down as
//! typed values.
//!
//! # Layers
//! Each key is resolved in this order, later layers winning:
//!
//! ```text
//! defaults ──► config file (--config, FERRY_CONFIG; TOML or YAML by extension)
//!          ──► FERRY_* environment variables ──► command-line flags ──► validate()
//! ```
//!
//! Every key has exactly one environment variable and one flag (see [`KEYS`]). The file
//! rejects unknown keys by name (`deny_unknown_fields`), so a typo never silently falls back
//! to a default. [`Settings::validate`] runs once on the merged result; its errors name the
//! key's path in the file (`retry.max_backoff must be >= retry.initial_backoff`).
//!
//! The defaults are the engine's own ([`EngineOptions::default`]), so the server and a test
//! that starts an engine directly agree without repeating numbers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_engine::{EngineOptions, RetryPolicy};
use serde::{Deserialize, Serialize};

mod values;

pub(crate) use values::{CpuScheduling, LogFormat, LogSettings};

/// Default API address: loopback only, so a fresh server is not reachable from outside.
pub(crate) const DEFAULT_ADDR: &str = "127.0.0.1:8300";
/// Default data directory, relative to the working directory.
pub(crate) const DEFAULT_DATA_DIR: &str = "./ferry-data";
/// Appended to the data directory's name for the default secret key file: a sibling, so a
/// copy of the data directory alone (a backup, a volume snapshot) holds no usable secret.
pub(crate) const SECRET_KEY_SUFFIX: &str = ".secret-key";
/// Default log filter.
pub(crate) const DEFAULT_LOG_LEVEL: &str = "info";
/// Longest name the engine accepts at all (its id syntax allows 128 bytes).
const MAX_NAME_LENGTH_LIMIT: usize = 128;

/// A configuration that cannot be read or is not acceptable. Never holds a secret: the
/// server configuration names secret files (tokens, keys) but never holds their contents.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file's name does not say its format.
    #[error("configuration file {path}: unknown format; name it *.toml, *.yaml or *.yml")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file does not parse, has an unknown key or a value of the wrong type.
    #[error("configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names unknown keys and their line).
        message: String,
    },
    /// An environment variable or flag has a value that does not parse.
    #[error("{origin}: {problem}")]
    BadValue {
        /// `environment variable FERRY_X` or `flag --x`.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// A merged value is out of range.
    #[error("{field} {problem}")]
    Invalid {
        /// The key's path in the file.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// `[retry]`: how changefeeds retry transient failures. Durations are written `500ms`,
/// `10s`, `5m`, `1h 30m`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RetrySettings {
    /// Delay before the first retry; doubled after each failed retry.
    #[serde(with = "duration_text")]
    pub(crate) initial_backoff: Duration,
    /// Largest delay between retries.
    #[serde(with = "duration_text")]
    pub(crate) max_backoff: Duration,
    /// A streak of failures this long turns the changefeed `failed`.
    #[serde(with = "duration_text")]
    pub(crate) give_up_after: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        RetrySettings {
            initial_backoff: policy.initial_backoff,
            max_backoff: policy.max_backoff,
            give_up_after: policy.give_up_after,
        }
    }
}

/// `[tls]`: HTTPS for the API. Unset `cert` and `key`: plain HTTP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TlsSettings {
    /// The server's certificate chain (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<PathBuf>,
    /// When set, clients must present a certificate signed by this CA (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_ca: Option<PathBuf>,
    /// When not empty, a client certificate's subject common name must be one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) allowed_cn: Vec<String>,
}

/// Everything `ferry server` is configured with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    /// Address the HTTP API listens on.
    pub(crate) addr: SocketAddr,
    /// Directory of the embedded metadata store.
    pub(crate) data_dir: PathBuf,
    /// The key sealing the store's secrets; unset: `<data_dir>.secret-key`, beside (not
    /// inside) the data directory. Generated on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) secret_key_file: Option<PathBuf>,
    /// This node's id in `GET /api/v2/status`; unset: host name and process id (which
    /// change on every start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node_id: Option<String>,
    /// Most changefeeds this server runs (all namespaces together).
    pub(crate) max_changefeeds: usize,
    /// Longest changefeed id, source name or namespace, in bytes.
    pub(crate) max_name_length: usize,
    /// The API's bearer tokens: a file of `NAME ROLE TOKEN` lines. Unset: no authentication,
    /// which is allowed only on a loopback address (or with `insecure_no_auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) auth_token_file: Option<PathBuf>,
    /// Whether `/metrics` needs a token.
    pub(crate) metrics_auth: bool,
    /// Serve without tokens on a non-loopback address (logged loudly at start).
    pub(crate) insecure_no_auth: bool,
    /// A slot holding more WAL than this on its source puts a warning in the changefeed's
    /// status.
    pub(crate) retained_wal_warning_bytes: u64,
    /// A replication stream silent this long is probed; a source that does not answer within
    /// it is treated as unreachable (a cut network) and the changefeed reconnects.
    #[serde(with = "duration_text")]
    pub(crate) replication_timeout: Duration,
    /// How the OS schedules the server's threads.
    pub(crate) cpu_scheduling: CpuScheduling,
    /// Logging.
    pub(crate) log: LogSettings,
    /// Retries of transient failures.
    pub(crate) retry: RetrySettings,
    /// HTTPS for the API.
    pub(crate) tls: TlsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        let engine = EngineOptions::default();
        Settings {
            addr: DEFAULT_ADDR.parse().expect("the default address parses"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            secret_key_file: None,
            node_id: None,
            max_changefeeds: engine.max_changefeeds,
            max_name_length: engine.max_name_length,
            auth_token_file: None,
            metrics_auth: false,
            insecure_no_auth: false,
            retained_wal_warning_bytes: engine.retained_wal_warning_bytes,
            replication_timeout: engine.replication_timeout,
            cpu_scheduling: CpuScheduling::default(),
            log: LogSettings::default(),
            retry: RetrySettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

/// One configuration key: its path in the file, its environment variable and its flag.
pub(crate) struct Key {
    /// Path in the file (`retry.max_backoff`).
    pub(crate) path: &'static str,
    /// Environment variable.
    pub(crate) env: &'static str,
    /// Flag, without the leading `--`.
    pub(crate) flag: &'static str,
}

/// Every key. `FERRY_LOG` and `--log` keep their names from before the file existed.
pub(crate) const KEYS: &[Key] = &[
    key("addr", "FERRY_ADDR", "addr"),
    key("data_dir", "FERRY_DATA_DIR", "data-dir"),
    key(
        "secret_key_file",
        "FERRY_SECRET_KEY_FILE",
        "secret-key-file",
    ),
    key("node_id", "FERRY_NODE_ID", "node-id"),
    key(
        "max_changefeeds",
        "FERRY_MAX_CHANGEFEEDS",
        "max-changefeeds",
    ),
    key(
        "max_name_length",
        "FERRY_MAX_NAME_LENGTH",
        "max-name-length",
    ),
    key(
        "retained_wal_warning_bytes",
        "FERRY_RETAINED_WAL_WARNING_BYTES",
        "retained-wal-warning-bytes",
    ),
    key(
        "replication_timeout",
        "FERRY_REPLICATION_TIMEOUT",
        "replication-timeout",
    ),
    key("cpu_scheduling", "FERRY_CPU_SCHEDULING", "cpu-scheduling"),
    key("log.level", "FERRY_LOG", "log"),
    key("log.format", "FERRY_LOG_FORMAT", "log-format"),
    key(
        "retry.initial_backoff",
        "FERRY_RETRY_INITIAL_BACKOFF",
        "retry-initial-backoff",
    ),
    key(
        "retry.max_backoff",
        "FERRY_RETRY_MAX_BACKOFF",
        "retry-max-backoff",
    ),
    key(
        "retry.give_up_after",
        "FERRY_RETRY_GIVE_UP_AFTER",
        "retry-give-up-after",
    ),
    key(
        "auth_token_file",
        "FERRY_AUTH_TOKEN_FILE",
        "auth-token-file",
    ),
    key("metrics_auth", "FERRY_METRICS_AUTH", "metrics-auth"),
    key(
        "insecure_no_auth",
        "FERRY_INSECURE_NO_AUTH",
        "insecure-no-auth",
    ),
    key("tls.cert", "FERRY_TLS_CERT", "tls-cert"),
    key("tls.key", "FERRY_TLS_KEY", "tls-key"),
    key("tls.client_ca", "FERRY_TLS_CLIENT_CA", "tls-client-ca"),
    key("tls.allowed_cn", "FERRY_TLS_ALLOWED_CN", "tls-allowed-cn"),
];

const fn key(path: &'static str, env: &'static str, flag: &'static str) -> Key {
    Key { path, env, flag }
}

impl Settings {
    /// Defaults, then `file` (if any), then the `FERRY_*` variables among `env`, then
    /// `flags` (key path → value, as given on the command line); validated.
    pub(crate) fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[(&'static str, String)],
    ) -> Result<Settings, SettingsError> {
        let mut settings = match file {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        for key in KEYS {
            if let Some((_, value)) = env.iter().find(|(name, _)| name == key.env) {
                settings
                    .set(key.path, value)
                    .map_err(|problem| SettingsError::BadValue {
                        origin: format!("environment variable {}", key.env),
                        problem,
                    })?;
            }
        }
        for (path, value) in flags {
            let flag = KEYS
                .iter()
                .find(|k| k.path == *path)
                .map_or(*path, |k| k.flag);
            settings
                .set(path, value)
                .map_err(|problem| SettingsError::BadValue {
                    origin: format!("flag --{flag}"),
                    problem,
                })?;
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Defaults overlaid with a TOML or YAML file (by extension).
    pub(crate) fn from_file(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let parsed = match extension.to_ascii_lowercase().as_str() {
            "toml" => toml::from_str(&text).map_err(|e| e.to_string()),
            // An empty YAML document is "no keys", as an empty TOML file is.
            "yaml" | "yml" if text.trim().is_empty() => Ok(Settings::default()),
            "yaml" | "yml" => yaml_serde::from_str(&text).map_err(|e| e.to_string()),
            _ => {
                return Err(SettingsError::UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        parsed.map_err(|message| SettingsError::Parse {
            path: path.to_path_buf(),
            message: message.trim_end().to_string(),
        })
    }

    /// Sets the key at `path` from its text form (an environment variable or a flag).
    fn set(&mut self, path: &str, value: &str) -> Result<(), String> {
        fn number(value: &str) -> Result<usize, String> {
            value
                .trim()
                .parse()
                .map_err(|_| format!("{value:?} is not a non-negative integer"))
        }
        fn duration(value: &str) -> Result<Duration, String> {
            humantime::parse_duration(value.trim())
                .map_err(|e| format!("{value:?} is not a duration such as 500ms, 10s or 5m: {e}"))
        }
        fn boolean(value: &str) -> Result<bool, String> {
            match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("{value:?} is not a boolean: use true or false")),
            }
        }
        fn file(value: &str) -> Option<PathBuf> {
            (!value.trim().is_empty()).then(|| PathBuf::from(value))
        }
        match path {
            "addr" => {
                self.addr = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{value:?} is not an address such as 127.0.0.1:8300"))?;
            }
            "data_dir" => self.data_dir = PathBuf::from(value),
            "secret_key_file" => self.secret_key_file = Some(PathBuf::from(value)),
            "node_id" => self.node_id = Some(value.to_string()),
            "max_changefeeds" => self.max_changefeeds = number(value)?,
            "max_name_length" => self.max_name_length = number(value)?,
            "retained_wal_warning_bytes" => {
                self.retained_wal_warning_bytes = number(value)? as u64;
            }
            "replication_timeout" => self.replication_timeout = duration(value)?,
            "cpu_scheduling" => self.cpu_scheduling = value.trim().parse()?,
            "log.level" => self.log.level = value.to_string(),
            "log.format" => self.log.format = value.trim().parse()?,
            "retry.initial_backoff" => self.retry.initial_backoff = duration(value)?,
            "retry.max_backoff" => self.retry.max_backoff = duration(value)?,
            "retry.give_up_after" => self.retry.give_up_after = duration(value)?,
            "auth_token_file" => self.auth_token_file = file(value),
            "metrics_auth" => self.metrics_auth = boolean(value)?,
            "insecure_no_auth" => self.insecure_no_auth = boolean(value)?,
            "tls.cert" => self.tls.cert = file(value),
            "tls.key" => self.tls.key = file(value),
            "tls.client_ca" => self.tls.client_ca = file(value),
            // Comma-separated in the environment and flags (a repeated flag is joined so);
            // the file takes a list.
            "tls.allowed_cn" => {
                self.tls.allowed_cn = value
                    .split(',')
                    .map(str::trim)
                    .filter(|cn| !cn.is_empty())
                    .map(String::from)
                    .collect();
            }
            other => unreachable!("{other} is not in KEYS"),
        }
        Ok(())
    }

    /// Checks every value's range; errors name the key's path.
    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |field, problem: &str| {
            Err(SettingsError::Invalid {
                field,
                problem: problem.to_string(),
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.secret_key_path().is_none() {
            return invalid(
                "secret_key_file",
                "must be set when data_dir has no name of its own (/ or ..)",
            );
        }
        if self
            .node_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return invalid("node_id", "must not be empty");
        }
        if self.max_changefeeds == 0 {
            return invalid("max_changefeeds", "must be > 0");
        }
        if self.max_name_length == 0 || self.max_name_length > MAX_NAME_LENGTH_LIMIT {
            return invalid("max_name_length", "must be between 1 and 128");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(SettingsError::Invalid {
                field: "log.level",
                problem: format!(
                    "is not a log filter such as info or warn,ferry_engine=debug: {e}"
                ),
            });
        }
        if self.replication_timeout < Duration::from_secs(1) {
            return invalid("replication_timeout", "must be at least 1s");
        }
        if self.retry.initial_backoff.is_zero() {
            return invalid("retry.initial_backoff", "must be > 0");
        }
        if self.retry.max_backoff < self.retry.initial_backoff {
            return invalid("retry.max_backoff", "must be >= retry.initial_backoff");
        }
        if self.retry.give_up_after.is_zero() {
            return invalid("retry.give_up_after", "must be > 0");
        }
        self.validate_access()
    }

    /// Authentication and HTTPS: secure by default, and no setting that would be ignored.
    fn validate_access(&self) -> Result<(), SettingsError> {
        let invalid = |field, problem: String| Err(SettingsError::Invalid { field, problem });
        let tokens = self.auth_token_file.is_some();
        if tokens && self.insecure_no_auth {
            return invalid(
                "insecure_no_auth",
                "cannot be combined with auth_token_file (tokens are checked when configured)"
                    .into(),
            );
        }
        if self.metrics_auth && !tokens {
            return invalid(
                "metrics_auth",
                "needs auth_token_file (--auth-token-file): there is no token to check".into(),
            );
        }
        if !tokens && !self.insecure_no_auth && !self.addr.ip().is_loopback() {
            return invalid(
                "addr",
                format!(
                    "{} is not a loopback address, and no API tokens are configured: anyone \
                     who can reach it could create and delete changefeeds; set \
                     auth_token_file (--auth-token-file FILE), or listen on 127.0.0.1, or \
                     pass --insecure-no-auth to serve without authentication anyway",
                    self.addr
                ),
            );
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => return invalid("tls.key", "must be set with tls.cert".into()),
            (None, Some(_)) => return invalid("tls.cert", "must be set with tls.key".into()),
            _ => {}
        }
        if self.tls.client_ca.is_some() && self.tls.cert.is_none() {
            return invalid(
                "tls.client_ca",
                "needs tls.cert and tls.key (client certificates are part of HTTPS)".into(),
            );
        }
        if !self.tls.allowed_cn.is_empty() && self.tls.client_ca.is_none() {
            return invalid(
                "tls.allowed_cn",
                "needs tls.client_ca (only a verified client certificate has a trusted CN)".into(),
            );
        }
        Ok(())
    }

    /// The secret key file: as set, or `<data_dir>.secret-key` beside the data directory.
    pub(crate) fn secret_key_path(&self) -> Option<PathBuf> {
        if let Some(path) = &self.secret_key_file {
            return Some(path.clone());
        }
        let data_dir = std::path::absolute(&self.data_dir).ok()?;
        let mut name = data_dir.file_name()?.to_os_string();
        name.push(SECRET_KEY_SUFFIX);
        Some(data_dir.with_file_name(name))
    }

    /// The engine's part.
    pub(crate) fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            max_changefeeds: self.max_changefeeds,
            max_name_length: self.max_name_length,
            retained_wal_warning_bytes: self.retained_wal_warning_bytes,
            replication_timeout: self.replication_timeout,
            retry: RetryPolicy {
                initial_backoff: self.retry.initial_backoff,
                max_backoff: self.retry.max_backoff,
                give_up_after: self.retry.give_up_after,
            },
        }
    }

    /// The effective configuration as a TOML file (`ferry server --print-config`).
    pub(crate) fn to_toml(&self) -> String {
        toml::to_string(self).expect("settings are plain TOML values")
    }
}

/// Durations as humantime text (`30s`, `1h 30m`) in files.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration such as 500ms, 10s or 5m: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests;
