//! Online diffs (Vitess's VDiff): `POST …/changefeeds/{id}/diffs` starts one, `GET …/diffs`
//! and `GET …/diffs/{diff_id}` show them, `POST …/diffs/{diff_id}/stop|resume` and
//! `DELETE …/diffs/{diff_id}` control them. The comparison runs in the engine
//! ([`ferry_engine::diff`]); the changefeed keeps running meanwhile.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_engine::{Diff, DiffOptions};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::extract::{self, NamespaceQuery};
use crate::repair::parse_table;
use crate::AppState;

/// The body of `POST /changefeeds/{id}/diffs` (all fields optional).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiffRequest {
    /// `schema.table` names to compare (default: every table of the changefeed).
    #[serde(default)]
    tables: Option<Vec<String>>,
    /// Fix what differs through the changefeed's sink (tables with a key only).
    #[serde(default)]
    repair: bool,
    /// Rows per chunk (default 10000, at most 1000000); a chunk's keys are held in memory.
    #[serde(default)]
    rows_per_chunk: Option<u64>,
    /// Most source rows compared per second (default: no limit).
    #[serde(default)]
    rate_limit: Option<u64>,
}

/// The answer of `GET /changefeeds/{id}/diffs`.
#[derive(Serialize, ToSchema)]
pub(crate) struct DiffsResponse {
    /// Every diff of the changefeed, oldest first.
    items: Vec<Diff>,
}

/// The changefeed id and diff id of a `/changefeeds/{id}/diffs/{diff_id}` path.
fn ids(path: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String), ApiError> {
    let Path((id, diff_id)) =
        path.map_err(|e| ApiError::bad_request(ErrorCode::InvalidParameter, format!("path: {e}")))?;
    Ok((
        extract::path(Ok(Path(id)))?,
        extract::path(Ok(Path(diff_id)))?,
    ))
}

#[utoipa::path(post, operation_id = "create_diff", path = "/api/v2/changefeeds/{id}/diffs", tag = "diffs", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    request_body = DiffRequest,
    responses((status = 201, description = "The diff started: its `id` and state", body = Diff), (status = 400, description = "The sink cannot be read back, or `repair` asked for a table without a key (`DIFF_UNSUPPORTED`); a table the changefeed does not replicate (`TABLE_NOT_FOUND`); a bad `rows_per_chunk` or `rate_limit` (`INVALID_CONFIG`)", body = crate::error::ErrorBody), (status = 409, description = "A diff of the changefeed runs (`DIFF_REFUSED`), or the changefeed is still copying or finished", body = crate::error::ErrorBody), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// Starts comparing the changefeed's target with its source, chunk by chunk, while the
/// changefeed runs; with `repair`, fixes what differs.
pub(crate) async fn create(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    let request: DiffRequest = extract::optional_json_body(body)?.unwrap_or_default();
    let tables = request
        .tables
        .map(|tables| tables.iter().map(|t| parse_table(t)).collect())
        .transpose()?;
    let options = DiffOptions {
        tables,
        repair: request.repair,
        rows_per_chunk: request.rows_per_chunk,
        rate_limit: request.rate_limit,
    };
    let diff = state.engine.create_diff(ns.get()?, &id, options).await?;
    Ok((StatusCode::CREATED, Json(diff)).into_response())
}

#[utoipa::path(get, operation_id = "list_diffs", path = "/api/v2/changefeeds/{id}/diffs", tag = "diffs", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "Every diff of the changefeed", body = DiffsResponse), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// The changefeed's diffs.
pub(crate) async fn list(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<DiffsResponse>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    let items = state.engine.diffs(ns.get()?, &id)?;
    Ok(Json(DiffsResponse { items }))
}

#[utoipa::path(get, operation_id = "get_diff", path = "/api/v2/changefeeds/{id}/diffs/{diff_id}", tag = "diffs", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), ("diff_id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "The diff: state, progress, and per table what differs", body = Diff), (status = 404, description = "No such diff (`DIFF_NOT_FOUND`) or changefeed", body = crate::error::ErrorBody), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// One diff.
pub(crate) async fn get_one(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<Diff>, ApiError> {
    let (id, diff_id) = ids(path)?;
    let ns = extract::query(ns)?;
    Ok(Json(state.engine.diff(ns.get()?, &id, &diff_id)?))
}

#[utoipa::path(post, operation_id = "stop_diff", path = "/api/v2/changefeeds/{id}/diffs/{diff_id}/stop", tag = "diffs", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), ("diff_id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "Stopped after its last finished chunk", body = Diff), (status = 409, description = "Not running (`DIFF_REFUSED`)", body = crate::error::ErrorBody), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// Stops a running diff; a resume continues after its last finished chunk.
pub(crate) async fn stop(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<Diff>, ApiError> {
    let (id, diff_id) = ids(path)?;
    let ns = extract::query(ns)?;
    Ok(Json(
        state.engine.stop_diff(ns.get()?, &id, &diff_id).await?,
    ))
}

#[utoipa::path(post, operation_id = "resume_diff", path = "/api/v2/changefeeds/{id}/diffs/{diff_id}/resume", tag = "diffs", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), ("diff_id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "Running again from its last finished chunk", body = Diff), (status = 409, description = "Running or finished (`DIFF_REFUSED`)", body = crate::error::ErrorBody), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// Resumes a stopped or failed diff after its last finished chunk.
pub(crate) async fn resume(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<Diff>, ApiError> {
    let (id, diff_id) = ids(path)?;
    let ns = extract::query(ns)?;
    Ok(Json(state.engine.resume_diff(ns.get()?, &id, &diff_id)?))
}

#[utoipa::path(delete, operation_id = "delete_diff", path = "/api/v2/changefeeds/{id}/diffs/{diff_id}", tag = "diffs", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), ("diff_id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 204, description = "Deleted (stopped first when running)"), (status = 404, description = "No such diff (`DIFF_NOT_FOUND`) or changefeed", body = crate::error::ErrorBody), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// Deletes a diff and what it found.
pub(crate) async fn delete(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let (id, diff_id) = ids(path)?;
    let ns = extract::query(ns)?;
    state.engine.delete_diff(ns.get()?, &id, &diff_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
