//! `/api/v2/sources`: named source connections that changefeeds refer to by name.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ferry_core::parse_source_uri;
use ferry_engine::status::rfc3339;
use ferry_engine::{SourceConfig, SourceReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::changefeeds::DeleteResponse;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{self, NamespaceQuery};
use crate::secrets::unmask;
use crate::AppState;

/// The body of `POST /sources`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSourceRequest {
    /// `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`, unique in its namespace.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")]
    name: String,
    /// `postgres://user:password@host:port/database`.
    uri: String,
}

/// The body of `PUT /sources/{name}`. The read-only fields of a source (as `GET` shows
/// it) are accepted and ignored, so a shown source can be edited and sent back.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateSourceRequest {
    /// Must be the source's name, if given.
    #[serde(default)]
    name: Option<String>,
    /// Must be the source's namespace, if given.
    #[serde(default)]
    namespace: Option<String>,
    /// The new URI; a `***` password keeps the stored one.
    #[serde(default)]
    uri: Option<String>,
    /// Ignored (read-only).
    #[serde(default)]
    #[allow(dead_code)]
    created_at: Option<String>,
    /// Ignored (read-only).
    #[serde(default)]
    #[allow(dead_code)]
    changefeeds: Option<Vec<String>>,
}

/// A source as shown: its URI masked, with the changefeeds using it.
#[derive(Serialize, ToSchema)]
pub(crate) struct SourceView {
    name: String,
    namespace: String,
    /// The URI, password masked.
    uri: String,
    /// When it was created (RFC 3339).
    created_at: String,
    /// The changefeeds that name it.
    changefeeds: Vec<String>,
}

/// `GET /sources`.
#[derive(Serialize, ToSchema)]
pub(crate) struct SourceList {
    total: usize,
    items: Vec<SourceView>,
}

/// `?namespace=…&force=…` of `DELETE /sources/{name}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteSourceQuery {
    /// Tenant namespace (default `default`).
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")]
    namespace: Option<String>,
    /// Delete even when changefeeds use it (they keep a copy of its URI).
    #[serde(default)]
    force: bool,
}

fn view(state: &AppState, source: SourceConfig) -> SourceView {
    SourceView {
        changefeeds: state.engine.source_users(&source.namespace, &source.name),
        uri: source.uri.masked(),
        created_at: rfc3339(source.created_at_us),
        name: source.name,
        namespace: source.namespace,
    }
}

fn parse_uri(uri: &str) -> Result<ferry_core::ConnectionUri, ApiError> {
    parse_source_uri(uri)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidConfig, format!("uri: {e}")))
}

#[utoipa::path(post, operation_id = "create_source", path = "/api/v2/sources", tag = "sources", params(NamespaceQuery),
    request_body = CreateSourceRequest,
    responses((status = 201, description = "The source, created", body = SourceView), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SourceView>), ApiError> {
    let ns = extract::query(ns)?;
    let namespace = ns.get()?;
    let r: CreateSourceRequest = extract::json_body(body)?;
    let source = SourceConfig {
        name: r.name,
        namespace: namespace.to_string(),
        uri: parse_uri(&r.uri)?,
        created_at_us: ferry_engine::status::now_us(),
    };
    state.engine.create_source(source.clone()).await?;
    Ok((StatusCode::CREATED, Json(view(&state, source))))
}

#[utoipa::path(get, operation_id = "list_sources", path = "/api/v2/sources", tag = "sources", params(NamespaceQuery),
    responses((status = 200, description = "The sources of the namespace", body = SourceList), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<SourceList>, ApiError> {
    let ns = extract::query(ns)?;
    let items: Vec<SourceView> = state
        .engine
        .list_sources(ns.get()?)?
        .into_iter()
        .map(|s| view(&state, s))
        .collect();
    Ok(Json(SourceList {
        total: items.len(),
        items,
    }))
}

#[utoipa::path(get, operation_id = "get_source", path = "/api/v2/sources/{name}", tag = "sources", params(("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "The source (password masked)", body = SourceView), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<SourceView>, ApiError> {
    let (name, ns) = (extract::path(name)?, extract::query(ns)?);
    let source = state.engine.source_config(ns.get()?, &name)?;
    Ok(Json(view(&state, source)))
}

#[utoipa::path(put, operation_id = "update_source", path = "/api/v2/sources/{name}", tag = "sources", params(("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    request_body = UpdateSourceRequest,
    responses((status = 200, description = "The source, updated", body = SourceView), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SourceView>, ApiError> {
    let (name, ns) = (extract::path(name)?, extract::query(ns)?);
    let namespace = ns.get()?;
    let r: UpdateSourceRequest = extract::json_body(body)?;
    let current = state.engine.source_config(namespace, &name)?;
    if r.name.as_deref().is_some_and(|n| n != name)
        || r.namespace.as_deref().is_some_and(|n| n != namespace)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidConfig,
            "name and namespace cannot change",
        ));
    }
    let uri = match r.uri {
        Some(uri) => parse_uri(&unmask(&uri, Some(&current.uri)))?,
        None => current.uri.clone(),
    };
    let source = SourceConfig { uri, ..current };
    state.engine.update_source(source).await?;
    let source = state.engine.source_config(namespace, &name)?;
    Ok(Json(view(&state, source)))
}

#[utoipa::path(delete, operation_id = "delete_source", path = "/api/v2/sources/{name}", tag = "sources", params(("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), DeleteSourceQuery),
    responses((status = 200, description = "Deleted", body = DeleteResponse), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    q: Result<Query<DeleteSourceQuery>, QueryRejection>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let (name, q) = (extract::path(name)?, extract::query(q)?);
    let namespace = extract::check_namespace(q.namespace.as_deref())?;
    let deleted = state
        .engine
        .delete_source(namespace, &name, q.force)
        .await?;
    Ok(Json(DeleteResponse::new(name, deleted)))
}

#[utoipa::path(get, operation_id = "source_status", path = "/api/v2/sources/{name}/status", tag = "sources", params(("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "Whether the source is reachable and usable, and its slots", body = SourceReport), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<SourceReport>, ApiError> {
    let (name, ns) = (extract::path(name)?, extract::query(ns)?);
    Ok(Json(state.engine.source_status(ns.get()?, &name).await?))
}
