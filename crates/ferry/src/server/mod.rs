//! `ferry server`: loads the [`Settings`], then runs the HTTP API (plain or HTTPS,
//! [`https`]) and the changefeed runtime on an embedded metadata store until SIGINT or
//! SIGTERM.
//!
//! A configuration error (unreadable file, unknown key, bad value, a malformed token file,
//! an unusable certificate, a non-loopback address without tokens) is reported on stderr and
//! exits with [`crate::cli::exit::USAGE`] before anything starts.

mod cpu;
mod https;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use ferry_api::auth::{AccessPolicy, TokenTable};
use tracing::{info, warn};

use crate::cli::exit;
use crate::settings::{LogFormat, Settings};

/// Flags of `ferry server`. Every one overrides the same key of the configuration file and
/// its `FERRY_*` environment variable.
#[derive(clap::Args)]
pub(crate) struct ServerArgs {
    /// Configuration file (TOML or YAML, by extension) [env: FERRY_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration (defaults, file, environment, flags) as TOML and
    /// exit.
    #[arg(long)]
    print_config: bool,
    /// Address the HTTP API listens on [env: FERRY_ADDR] [default: 127.0.0.1:8300]
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// Directory of the embedded metadata store [env: FERRY_DATA_DIR] [default: ./ferry-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// Key file sealing the stored secrets; generated (mode 0600) when absent
    /// [env: FERRY_SECRET_KEY_FILE] [default: <data dir>.secret-key, beside the data dir]
    #[arg(long, value_name = "FILE")]
    secret_key_file: Option<String>,
    /// This node's id in `GET /api/v2/status` [env: FERRY_NODE_ID] [default: host name and
    /// process id]
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// How the OS schedules the server's threads: batch (a thread that wakes does not
    /// preempt the one running, such as a database's process on the same host) or normal
    /// [env: FERRY_CPU_SCHEDULING] [default: batch]
    #[arg(long, value_name = "POLICY")]
    cpu_scheduling: Option<String>,
    /// Log filter (`info`, `warn,ferry_engine=debug`, …) [env: FERRY_LOG] [default: info]
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Log format: text or json [env: FERRY_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Most changefeeds this server runs [env: FERRY_MAX_CHANGEFEEDS] [default: 100]
    #[arg(long, value_name = "N")]
    max_changefeeds: Option<String>,
    /// Longest changefeed id, source name or namespace, in bytes (1-128)
    /// [env: FERRY_MAX_NAME_LENGTH] [default: 128]
    #[arg(long, value_name = "N")]
    max_name_length: Option<String>,
    /// A slot holding more WAL than this (bytes) on its source puts a warning in the
    /// changefeed's status [env: FERRY_RETAINED_WAL_WARNING_BYTES] [default: 10000000000]
    #[arg(long, value_name = "BYTES")]
    retained_wal_warning_bytes: Option<String>,
    /// A silent replication stream is probed after this long; a source that does not answer
    /// within it is unreachable and the changefeed reconnects
    /// [env: FERRY_REPLICATION_TIMEOUT] [default: 30s]
    #[arg(long, value_name = "DURATION")]
    replication_timeout: Option<String>,
    /// First retry delay after a transient failure [env: FERRY_RETRY_INITIAL_BACKOFF]
    /// [default: 1s]
    #[arg(long, value_name = "DURATION")]
    retry_initial_backoff: Option<String>,
    /// Largest retry delay [env: FERRY_RETRY_MAX_BACKOFF] [default: 1m]
    #[arg(long, value_name = "DURATION")]
    retry_max_backoff: Option<String>,
    /// How long a changefeed retries one streak of failures before it is `failed`
    /// [env: FERRY_RETRY_GIVE_UP_AFTER] [default: 30m]
    #[arg(long, value_name = "DURATION")]
    retry_give_up_after: Option<String>,
    /// API tokens: a file of `NAME ROLE TOKEN` lines (ROLE admin or read)
    /// [env: FERRY_AUTH_TOKEN_FILE]
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<String>,
    /// Require a token for /metrics too [env: FERRY_METRICS_AUTH] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    metrics_auth: Option<String>,
    /// Serve without tokens on a non-loopback address (anyone who reaches it controls the
    /// changefeeds) [env: FERRY_INSECURE_NO_AUTH]
    #[arg(long)]
    insecure_no_auth: bool,
    /// Serve HTTPS with this certificate chain (PEM) [env: FERRY_TLS_CERT]
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<String>,
    /// The private key of --tls-cert (PEM) [env: FERRY_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    tls_key: Option<String>,
    /// Require client certificates signed by this CA (PEM) [env: FERRY_TLS_CLIENT_CA]
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<String>,
    /// Accept only client certificates with this subject CN (repeatable)
    /// [env: FERRY_TLS_ALLOWED_CN, comma-separated]
    #[arg(long, value_name = "NAME")]
    tls_allowed_cn: Vec<String>,
}

impl ServerArgs {
    /// The flags that were given, by key path.
    fn flags(&self) -> Vec<(&'static str, String)> {
        [
            ("addr", &self.addr),
            ("data_dir", &self.data_dir),
            ("secret_key_file", &self.secret_key_file),
            ("node_id", &self.node_id),
            ("cpu_scheduling", &self.cpu_scheduling),
            ("log.level", &self.log),
            ("log.format", &self.log_format),
            ("max_changefeeds", &self.max_changefeeds),
            ("max_name_length", &self.max_name_length),
            (
                "retained_wal_warning_bytes",
                &self.retained_wal_warning_bytes,
            ),
            ("replication_timeout", &self.replication_timeout),
            ("retry.initial_backoff", &self.retry_initial_backoff),
            ("retry.max_backoff", &self.retry_max_backoff),
            ("retry.give_up_after", &self.retry_give_up_after),
            ("auth_token_file", &self.auth_token_file),
            ("metrics_auth", &self.metrics_auth),
            (
                "insecure_no_auth",
                &self.insecure_no_auth.then(|| "true".to_string()),
            ),
            ("tls.cert", &self.tls_cert),
            ("tls.key", &self.tls_key),
            ("tls.client_ca", &self.tls_client_ca),
            (
                "tls.allowed_cn",
                &(!self.tls_allowed_cn.is_empty()).then(|| self.tls_allowed_cn.join(",")),
            ),
        ]
        .into_iter()
        .filter_map(|(path, value)| value.clone().map(|v| (path, v)))
        .collect()
    }
}

/// Runs `ferry server`.
pub(crate) fn main(args: ServerArgs) -> ExitCode {
    let config = args.config.clone().or_else(|| {
        std::env::var_os("FERRY_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    // `vars_os`: an unrelated variable that is not UTF-8 must not stop the server.
    let env = std::env::vars_os().filter_map(|(name, value)| {
        let name = name.into_string().ok()?;
        name.starts_with("FERRY_")
            .then(|| (name, value.to_string_lossy().into_owned()))
    });
    let settings = match Settings::load(config.as_deref(), env, &args.flags()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: {}", crate::cli::error_chain(&err));
            return ExitCode::from(exit::USAGE);
        }
    };
    if args.print_config {
        print!("{}", settings.to_toml());
        return ExitCode::SUCCESS;
    }
    let access = match load_access(&settings) {
        Ok(access) => access,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let tls = match https::server_config(&settings.tls) {
        Ok(tls) => tls,
        Err(err) => {
            eprintln!("error: {}", crate::cli::error_chain(&err));
            return ExitCode::from(exit::USAGE);
        }
    };
    init_logs(&settings);
    // Before the runtime starts its threads, so they inherit it.
    match cpu::apply(settings.cpu_scheduling) {
        Ok(()) => info!(policy = %settings.cpu_scheduling, "CPU scheduling"),
        Err(err) => warn!(
            policy = %settings.cpu_scheduling,
            error = %err,
            "CPU scheduling not set; the system's default applies"
        ),
    }
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .and_then(|runtime| runtime.block_on(serve(settings, access, tls)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn init_logs(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log.level)
        .expect("validate() checked the log filter");
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only on a terminal: a log file or collector gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The access policy: the token file parsed (errors name the file and the line, never a
/// token).
fn load_access(settings: &Settings) -> Result<AccessPolicy, String> {
    let Some(path) = &settings.auth_token_file else {
        return Ok(AccessPolicy::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "auth_token_file {}: cannot read the file: {e}",
            path.display()
        )
    })?;
    let tokens =
        TokenTable::parse(&text).map_err(|e| format!("auth_token_file {}: {e}", path.display()))?;
    Ok(AccessPolicy {
        tokens: Some(Arc::new(tokens)),
        metrics_auth: settings.metrics_auth,
    })
}

/// Logs how the API is protected; loudly when it is not.
fn log_access(settings: &Settings, access: &AccessPolicy, https: bool) {
    if let (Some(tokens), Some(file)) = (&access.tokens, &settings.auth_token_file) {
        info!(
            file = %file.display(),
            names = %tokens.names().join(","),
            metrics_auth = access.metrics_auth,
            "API tokens loaded"
        );
        warn_if_readable_by_others(file);
    } else if settings.insecure_no_auth && !settings.addr.ip().is_loopback() {
        warn!(
            addr = %settings.addr,
            "INSECURE: the API has no authentication (--insecure-no-auth) and listens on a \
             non-loopback address: anyone who can reach it can create, change and delete \
             changefeeds and read their configuration"
        );
    } else {
        info!("API authentication off (loopback address, no auth_token_file)");
    }
    if https {
        info!(
            client_certificates = settings.tls.client_ca.is_some(),
            allowed_cn = %settings.tls.allowed_cn.join(","),
            "serving HTTPS"
        );
    }
}

fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            warn!(
                file = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the token file is readable by other users; chmod 600 it"
            );
        }
    }
}

async fn serve(
    settings: Settings,
    access: AccessPolicy,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    let key_file = settings
        .secret_key_path()
        .expect("validate() checked the secret key file");
    let meta = ferry_meta::MetaStore::open(&settings.data_dir, &key_file)
        .with_context(|| format!("open the data dir {}", settings.data_dir.display()))?;
    if meta.secret_key().generated() {
        warn!(
            key_file = %key_file.display(),
            "generated a new secret key for the metadata store; back it up apart from the \
             data directory: without it the stored passwords cannot be read"
        );
    }
    let connectors = Arc::new(ferry_connectors::Registry);
    // Before the engine resumes changefeeds, so their counters record from the start.
    ferry_api::install_metrics();
    let engine = ferry_engine::Engine::start(Arc::new(meta), settings.engine_options(), connectors)
        .context("start the engine")?;
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("listen on {}", settings.addr))?;
    log_access(&settings, &access, tls.is_some());
    info!(
        addr = %settings.addr,
        scheme = if tls.is_some() { "https" } else { "http" },
        data_dir = %settings.data_dir.display(),
        secret_key_file = %key_file.display(),
        max_changefeeds = settings.max_changefeeds,
        "ferry server listening"
    );
    let mut api_options = ferry_api::ApiOptions {
        access,
        ..Default::default()
    };
    if let Some(node_id) = settings.node_id.clone() {
        api_options.node_id = node_id;
    }
    let app = ferry_api::router_with(engine.clone(), api_options);
    match tls {
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serve HTTP")?,
        Some(config) => {
            let listener = https::HttpsListener::new(listener, config).context("serve HTTPS")?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .context("serve HTTPS")?
        }
    }
    info!("shutting down");
    engine.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
