//! The route table.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use std::sync::Arc;

use crate::auth::{self, AccessPolicy};
use crate::error::{ApiError, ErrorCode};
use crate::{
    changefeeds, diffs, history, metrics, repair, server, sources, tables, target, AppState,
};

pub(crate) fn router(access: Arc<AccessPolicy>, state: AppState) -> Router {
    Router::new()
        .route("/api/v2/health", get(server::health))
        .route("/api/v2/status", get(server::server_status))
        .route("/api/v2/verify-table", post(server::verify_table))
        .route("/api/v2/openapi.json", get(openapi))
        .route(
            "/api/v2/changefeeds",
            get(changefeeds::list).post(changefeeds::create),
        )
        .route(
            "/api/v2/changefeeds/{id}",
            get(changefeeds::get_one)
                .put(changefeeds::update)
                .delete(changefeeds::delete),
        )
        .route("/api/v2/changefeeds/{id}/pause", post(changefeeds::pause))
        .route("/api/v2/changefeeds/{id}/resume", post(changefeeds::resume))
        .route("/api/v2/changefeeds/{id}/status", get(changefeeds::status))
        .route("/api/v2/changefeeds/{id}/synced", get(changefeeds::synced))
        .route("/api/v2/changefeeds/{id}/history", get(history::history))
        .route("/api/v2/changefeeds/{id}/tables", get(tables::list))
        .route(
            "/api/v2/changefeeds/{id}/tables/{table}",
            axum::routing::delete(tables::remove),
        )
        .route(
            "/api/v2/changefeeds/{id}/tables/{table}/pause",
            post(tables::pause),
        )
        .route(
            "/api/v2/changefeeds/{id}/tables/{table}/resume",
            post(tables::resume),
        )
        .route(
            "/api/v2/changefeeds/{id}/diffs",
            get(diffs::list).post(diffs::create),
        )
        .route(
            "/api/v2/changefeeds/{id}/diffs/{diff_id}",
            get(diffs::get_one).delete(diffs::delete),
        )
        .route(
            "/api/v2/changefeeds/{id}/diffs/{diff_id}/stop",
            post(diffs::stop),
        )
        .route(
            "/api/v2/changefeeds/{id}/diffs/{diff_id}/resume",
            post(diffs::resume),
        )
        .route("/api/v2/changefeeds/{id}/skip", post(repair::skip))
        .route("/api/v2/changefeeds/{id}/resync", post(repair::resync))
        .route(
            "/api/v2/changefeeds/{id}/tables/{table}/resync",
            post(tables::resync_table),
        )
        .route(
            "/api/v2/changefeeds/{id}/sequences/sync",
            post(target::sync_sequences),
        )
        .route(
            "/api/v2/changefeeds/{id}/foreign-keys/create",
            post(target::create_foreign_keys),
        )
        .route("/api/v2/sources", get(sources::list).post(sources::create))
        .route(
            "/api/v2/sources/{name}",
            get(sources::get_one)
                .put(sources::update)
                .delete(sources::delete),
        )
        .route("/api/v2/sources/{name}/status", get(sources::status))
        .route("/metrics", get(metrics::render))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "this route does not support that method",
            )
        })
        .layer(DefaultBodyLimit::max(crate::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            history::record,
        ))
        .with_state(state)
        // Outermost: runs before routing, so unknown routes and ids look alike to a caller
        // without a token.
        .layer(axum::middleware::from_fn_with_state(access, auth::guard))
}

async fn openapi(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::spec(state.bearer_auth))
}
