//! `ferry server`: loads the [`Settings`], then runs the HTTP API and the changefeed
//! runtime on an embedded metadata store until SIGINT or SIGTERM.
//!
//! A configuration error (unreadable file, unknown key, bad value) is reported on stderr
//! and exits with [`crate::cli::exit::USAGE`] before anything starts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tracing::info;

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
    /// This node's id in `GET /api/v2/status` [env: FERRY_NODE_ID] [default: host name and
    /// process id]
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
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
}

impl ServerArgs {
    /// The flags that were given, by key path.
    fn flags(&self) -> Vec<(&'static str, String)> {
        [
            ("addr", &self.addr),
            ("data_dir", &self.data_dir),
            ("node_id", &self.node_id),
            ("log.level", &self.log),
            ("log.format", &self.log_format),
            ("max_changefeeds", &self.max_changefeeds),
            ("max_name_length", &self.max_name_length),
            (
                "retained_wal_warning_bytes",
                &self.retained_wal_warning_bytes,
            ),
            ("retry.initial_backoff", &self.retry_initial_backoff),
            ("retry.max_backoff", &self.retry_max_backoff),
            ("retry.give_up_after", &self.retry_give_up_after),
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
    init_logs(&settings);
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .and_then(|runtime| runtime.block_on(serve(settings)));
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let meta = ferry_meta::MetaStore::open(&settings.data_dir)
        .with_context(|| format!("open the data dir {}", settings.data_dir.display()))?;
    let engine = ferry_engine::Engine::start(Arc::new(meta), settings.engine_options())
        .context("start the engine")?;
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("listen on {}", settings.addr))?;
    info!(
        addr = %settings.addr,
        data_dir = %settings.data_dir.display(),
        max_changefeeds = settings.max_changefeeds,
        "ferry server listening"
    );
    let mut api_options = ferry_api::ApiOptions::default();
    if let Some(node_id) = settings.node_id.clone() {
        api_options.node_id = node_id;
    }
    let app = ferry_api::router_with(engine.clone(), api_options);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serve HTTP")?;
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
