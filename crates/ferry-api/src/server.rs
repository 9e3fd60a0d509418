//! Server-wide routes: health, server status, table verification.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::Json;
use ferry_core::{parse_source_uri, ConnectionUri, PartitionMode, TableFilter};
use ferry_engine::FeedState;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::extract::{self, NamespaceQuery};
use crate::AppState;

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok` when the server answers.
    status: &'static str,
}

#[utoipa::path(get, operation_id = "health", path = "/api/v2/health", tag = "server",
    responses((status = 200, description = "The server is up", body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /status`: this server process.
#[derive(Serialize, ToSchema)]
pub(crate) struct ServerStatus {
    /// Ferry's version.
    version: &'static str,
    /// This node's id.
    node_id: String,
    /// When the process started (RFC 3339).
    started_at: String,
    /// Seconds since it started.
    uptime_seconds: f64,
    /// Changefeeds of every namespace.
    changefeeds: usize,
    /// Changefeeds by state (every state is listed, zero or not).
    changefeeds_by_state: std::collections::BTreeMap<String, usize>,
}

#[utoipa::path(get, operation_id = "server_status", path = "/api/v2/status", tag = "server",
    responses((status = 200, description = "The server: version, uptime, changefeeds by state", body = ServerStatus)))]
pub(crate) async fn server_status(State(state): State<AppState>) -> Json<ServerStatus> {
    let feeds = state.engine.list(None, None);
    let mut by_state: std::collections::BTreeMap<String, usize> =
        FeedState::ALL.iter().map(|s| (s.to_string(), 0)).collect();
    for feed in &feeds {
        *by_state.entry(feed.state.to_string()).or_default() += 1;
    }
    let started_us = state
        .options
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    Json(ServerStatus {
        version: env!("CARGO_PKG_VERSION"),
        node_id: state.options.node_id.clone(),
        started_at: ferry_engine::status::rfc3339(started_us),
        uptime_seconds: state
            .options
            .started_at
            .elapsed()
            .map_or(0.0, |d| d.as_secs_f64()),
        changefeeds: feeds.len(),
        changefeeds_by_state: by_state,
    })
}

/// The body of `POST /verify-table`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyRequest {
    /// The source URI; or give `source`.
    #[serde(default)]
    source_uri: Option<String>,
    /// A named source; or give `source_uri`.
    #[serde(default)]
    source: Option<String>,
    /// Table rules, as a changefeed's `tables`; empty: every table.
    #[serde(default)]
    tables: Vec<String>,
    /// As a changefeed's `options.partitions`: `root` (default) or `leaves` (the leaves
    /// are judged, each a table of its own).
    #[serde(default)]
    #[schema(value_type = String, example = "root")]
    partitions: PartitionMode,
}

/// One table's verdict.
#[derive(Serialize, ToSchema)]
pub(crate) struct TableVerdictView {
    /// `schema.table`.
    table: String,
    /// Why it is (in)eligible; for an ineligible one, what to do.
    reason: String,
}

/// `POST /verify-table`: the tables the rules select, split by whether their updates and
/// deletes can be replicated.
#[derive(Serialize, ToSchema)]
pub(crate) struct VerifyResponse {
    /// A primary key, or `REPLICA IDENTITY FULL`/`USING INDEX`.
    eligible_tables: Vec<TableVerdictView>,
    /// Everything else, with the reason.
    ineligible_tables: Vec<TableVerdictView>,
}

#[utoipa::path(post, operation_id = "verify_table", path = "/api/v2/verify-table", tag = "server", params(NamespaceQuery),
    request_body = VerifyRequest,
    responses((status = 200, description = "The comparison of the table on both sides", body = VerifyResponse), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn verify_table(
    State(state): State<AppState>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let ns = extract::query(ns)?;
    let namespace = ns.get()?;
    let r: VerifyRequest = extract::json_body(body)?;
    let invalid = |m: String| ApiError::bad_request(ErrorCode::InvalidConfig, m);
    let uri: ConnectionUri = match (r.source_uri, r.source) {
        (Some(uri), None) => {
            parse_source_uri(&uri).map_err(|e| invalid(format!("source_uri: {e}")))?
        }
        (None, Some(name)) => {
            state
                .engine
                .source_config(namespace, &name)
                .map_err(|_| {
                    ApiError::bad_request(
                        ErrorCode::UnknownSource,
                        format!("source {name} does not exist"),
                    )
                })?
                .uri
        }
        _ => return Err(invalid("give either source_uri or source".into())),
    };
    let filter = TableFilter::new(&r.tables)
        .map_err(|e| invalid(format!("tables: {e}")))?
        .with_partitions(r.partitions);
    uri.password().map_err(|e| {
        ApiError::bad_request(
            ErrorCode::SecretUnavailable,
            format!("source_uri: {}", ferry_core::error_chain(&e)),
        )
    })?;
    let verdicts = state.engine.verify_tables(&uri, &filter).await?;
    let (eligible, ineligible): (Vec<_>, Vec<_>) = verdicts.into_iter().partition(|v| v.eligible);
    let views = |v: Vec<ferry_core::TableVerdict>| {
        v.into_iter()
            .map(|v| TableVerdictView {
                table: v.table,
                reason: v.reason,
            })
            .collect()
    };
    Ok(Json(VerifyResponse {
        eligible_tables: views(eligible),
        ineligible_tables: views(ineligible),
    }))
}
