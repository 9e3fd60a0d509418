//! Routes and handlers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use ferry_core::{parse_postgres_uri, SinkUri, TableFilter};
use ferry_engine::config::Options;
use ferry_engine::{ChangefeedConfig, ChangefeedStatus, Engine};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};

type AppState = Arc<Engine>;

pub(crate) fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/api/v2/health", get(health))
        .route("/api/v2/changefeeds", get(list).post(create))
        .route("/api/v2/changefeeds/{id}", get(get_one).delete(delete))
        .route("/api/v2/changefeeds/{id}/status", get(status))
        .route("/api/v2/changefeeds/{id}/synced", get(synced))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
        })
        .layer(DefaultBodyLimit::max(crate::MAX_BODY_BYTES))
        .with_state(engine)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceQuery {
    namespace: Option<String>,
}

impl NamespaceQuery {
    fn get(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The body of `POST /changefeeds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    id: String,
    source_uri: String,
    sink_uri: String,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    options: Options,
}

fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::RequestBodyTooLarge,
                format!(
                    "request body is larger than {} bytes",
                    crate::MAX_BODY_BYTES
                ),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequestBody,
                e.body_text(),
            )
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        // serde_json's messages name fields and types, never echo string values wholesale.
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequestBody,
            format!("invalid JSON body: {e}"),
        )
    })
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidConfig, message)
}

async fn create(
    State(engine): State<AppState>,
    Query(ns): Query<NamespaceQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ChangefeedStatus>), ApiError> {
    let request: CreateRequest = parse_body(body)?;
    let namespace = ns.get().to_string();
    ferry_engine::config::validate_id(&namespace)
        .map_err(|e| invalid(format!("namespace: {e}")))?;
    let source_uri =
        parse_postgres_uri(&request.source_uri).map_err(|e| invalid(format!("source_uri: {e}")))?;
    let sink_uri: SinkUri = request
        .sink_uri
        .parse()
        .map_err(|e| invalid(format!("sink_uri: {e}")))?;
    let tables = TableFilter::new(&request.tables).map_err(|e| invalid(format!("tables: {e}")))?;
    let config = ChangefeedConfig {
        id: request.id,
        namespace: namespace.clone(),
        source_uri,
        sink_uri,
        tables,
        options: request.options,
        created_at_us: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64),
    };
    let id = config.id.clone();
    engine.create(config).await?;
    Ok((StatusCode::CREATED, Json(engine.status(&namespace, &id)?)))
}

#[derive(Serialize)]
struct ListResponse {
    total: usize,
    items: Vec<ChangefeedStatus>,
}

async fn list(
    State(engine): State<AppState>,
    Query(ns): Query<NamespaceQuery>,
) -> Json<ListResponse> {
    let items: Vec<ChangefeedStatus> = engine
        .list()
        .into_iter()
        .filter(|s| s.namespace == ns.get())
        .collect();
    Json(ListResponse {
        total: items.len(),
        items,
    })
}

/// The configuration as shown: URIs masked.
#[derive(Serialize)]
struct ConfigView {
    source_uri: String,
    sink_uri: String,
    tables: Vec<String>,
    options: Options,
}

#[derive(Serialize)]
struct ChangefeedView {
    config: ConfigView,
    created_at_us: i64,
    #[serde(flatten)]
    status: ChangefeedStatus,
}

async fn get_one(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(ns): Query<NamespaceQuery>,
) -> Result<Json<ChangefeedView>, ApiError> {
    let config = engine.config(ns.get(), &id)?;
    let status = engine.status(ns.get(), &id)?;
    Ok(Json(ChangefeedView {
        config: ConfigView {
            source_uri: config.source_uri.masked(),
            sink_uri: config.sink_uri.masked(),
            tables: config.tables.rules().to_vec(),
            options: config.options,
        },
        created_at_us: config.created_at_us,
        status,
    }))
}

async fn status(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(ns): Query<NamespaceQuery>,
) -> Result<Json<ChangefeedStatus>, ApiError> {
    Ok(Json(engine.status(ns.get(), &id)?))
}

async fn synced(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(ns): Query<NamespaceQuery>,
) -> Result<Json<ferry_engine::SyncedReport>, ApiError> {
    Ok(Json(engine.synced(ns.get(), &id).await?))
}

async fn delete(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(ns): Query<NamespaceQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let existed = engine.delete(ns.get(), &id).await?;
    Ok(Json(serde_json::json!({ "id": id, "deleted": existed })))
}
