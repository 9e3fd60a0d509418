//! `ferry`: the one binary. `ferry server` runs the HTTP API and the changefeed runtime
//! with an embedded metadata store in `--data-dir`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::info;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Change data capture and database replication"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: HTTP API plus the changefeed runtime.
    Server(ServerArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "FERRY_ADDR", default_value = "127.0.0.1:8300")]
    addr: SocketAddr,
    /// Directory of the embedded metadata store.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
    data_dir: PathBuf,
    /// Log filter (`info`, `ferry_engine=debug`, …).
    #[arg(long, env = "FERRY_LOG", default_value = "info")]
    log: String,
    /// Log format.
    #[arg(long, env = "FERRY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => {
            init_logs(&args.log, &args.log_format);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("start the async runtime")?
                .block_on(serve(args))
        }
    }
}

fn init_logs(filter: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let meta = ferry_meta::MetaStore::open(&args.data_dir)
        .with_context(|| format!("open the data dir {}", args.data_dir.display()))?;
    let engine = ferry_engine::Engine::start(Arc::new(meta)).context("start the engine")?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listen on {}", args.addr))?;
    info!(addr = %args.addr, data_dir = %args.data_dir.display(), "ferry server listening");
    let app = ferry_api::router(engine.clone());
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
