//! The HTTP API (`/api/v2`): an axum router over the [`Engine`].
//!
//! ```text
//! request ─► auth.rs (token, role; 401/403 before routing) ─► routes.rs ─► extract.rs (body ≤ 1 MiB, JSON, query, path: every rejection an
//!            │             ApiError) ─► changefeeds.rs / tables.rs / diffs.rs / sources.rs / server.rs ─► Engine
//!            └─► /metrics (metrics.rs), /api/v2/openapi.json (openapi.rs)
//! ```
//!
//! Every failure is a JSON body `{"error_code": "…", "error_msg": "…"}` with a 4xx/5xx
//! status ([`error`]): malformed JSON, unknown fields, wrong types, oversized bodies,
//! unknown ids and refused state transitions are 4xx; only a failing metadata store is a
//! 5xx. URIs in responses are always masked, and every error message passes through
//! [`mask_secrets`]. Handlers never touch a running changefeed except through the engine's
//! operations, so bad input cannot disturb one.

pub mod auth;
mod changefeeds;
mod diffs;
mod error;
mod extract;
mod history;
mod metrics;
mod openapi;
mod repair;
mod routes;
mod secrets;
mod server;
mod sources;
mod tables;
mod target;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use ferry_engine::Engine;

pub use error::{mask_secrets, ApiError, ErrorCode};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Facts about this server process that `GET /api/v2/status` reports.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// This node's id (stable across restarts when the server configures one).
    pub node_id: String,
    /// When the process started (for `uptime_seconds`).
    pub started_at: SystemTime,
    /// Who may call the API (default: everyone; see [`auth`]).
    pub access: auth::AccessPolicy,
}

impl Default for ApiOptions {
    /// Node id from the host name and process id, started now.
    fn default() -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        ApiOptions {
            node_id: format!("{host}-{}", std::process::id()),
            started_at: SystemTime::now(),
            access: auth::AccessPolicy::default(),
        }
    }
}

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Arc<Engine>,
    pub(crate) options: Arc<ApiOptions>,
    pub(crate) prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Whether requests need a token (the OpenAPI document says so then).
    pub(crate) bearer_auth: bool,
}

/// The API router for `engine`, with default [`ApiOptions`].
pub fn router(engine: Arc<Engine>) -> Router {
    router_with(engine, ApiOptions::default())
}

/// Installs the process's metrics recorder (once). Call it before the engine starts: a
/// changefeed resumed before it would hold counters that record nowhere.
pub fn install_metrics() {
    let _ = metrics::handle();
}

/// The API router for `engine`, reporting `options` in `GET /api/v2/status`. Installs the
/// process's metrics recorder on first use.
pub fn router_with(engine: Arc<Engine>, options: ApiOptions) -> Router {
    let access = Arc::new(options.access.clone());
    let bearer_auth = access.tokens.is_some();
    routes::router(
        access,
        AppState {
            bearer_auth,
            engine,
            options: Arc::new(options),
            prometheus: metrics::handle(),
        },
    )
}

/// The OpenAPI document (the same as `GET /api/v2/openapi.json` serves), as JSON;
/// `bearer_auth`: as a server with tokens serves it.
pub fn openapi_json(bearer_auth: bool) -> String {
    serde_json::to_string_pretty(&openapi::spec(bearer_auth))
        .expect("the OpenAPI document serializes")
}
