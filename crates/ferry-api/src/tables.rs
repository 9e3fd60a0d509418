//! One table of a changefeed: `GET …/tables` lists them with their state;
//! `POST …/tables/{schema.table}/pause|resume|resync` and `DELETE …/tables/{schema.table}`
//! act on one while the others go on.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use ferry_engine::{ChangefeedStatus, TableAction, TableProgress};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::extract::{self, NamespaceQuery};
use crate::repair::parse_table;
use crate::AppState;

/// The answer of `GET /changefeeds/{id}/tables`.
#[derive(Serialize, ToSchema)]
pub(crate) struct TablesResponse {
    /// Every table the changefeed replicates, by name.
    items: Vec<TableProgress>,
}

#[utoipa::path(get, operation_id = "changefeed_tables", path = "/api/v2/changefeeds/{id}/tables", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "Every table with its state (`pending`, `copying`, `copied`, `paused`, `failed`) and copy progress", body = TablesResponse), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// The changefeed's tables and their state.
pub(crate) async fn list(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<TablesResponse>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    let status = state.engine.status(ns.get()?, &id)?;
    Ok(Json(TablesResponse {
        items: status.tables,
    }))
}

/// The changefeed id and table of a `/changefeeds/{id}/tables/{table}` path.
fn id_and_table(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, ferry_core::TableId), ApiError> {
    let Path((id, table)) =
        path.map_err(|e| ApiError::bad_request(ErrorCode::InvalidParameter, format!("path: {e}")))?;
    Ok((extract::path(Ok(Path(id)))?, parse_table(&table)?))
}

/// Runs `action` on the path's table.
async fn act(
    state: AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
    action: TableAction,
) -> Result<Json<ChangefeedStatus>, ApiError> {
    let (id, table) = id_and_table(path)?;
    let ns = extract::query(ns)?;
    Ok(Json(
        state
            .engine
            .table_action(ns.get()?, &id, &table, action)
            .await?,
    ))
}

#[utoipa::path(post, operation_id = "pause_table", path = "/api/v2/changefeeds/{id}/tables/{table}/pause", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), ("table" = String, Path, description = "`schema.table`"), NamespaceQuery),
    responses((status = 200, description = "The table's changes are no longer applied: the status", body = ChangefeedStatus), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// Stops applying one table's changes; the others go on.
pub(crate) async fn pause(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<ChangefeedStatus>, ApiError> {
    act(state, path, ns, TableAction::Pause).await
}

#[utoipa::path(post, operation_id = "resume_table", path = "/api/v2/changefeeds/{id}/tables/{table}/resume", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), ("table" = String, Path, description = "`schema.table`"), NamespaceQuery),
    responses((status = 200, description = "The table is copied again, then streams: the status", body = ChangefeedStatus), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// Brings back a paused or failed table: copied again, then streamed without a gap.
pub(crate) async fn resume(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<ChangefeedStatus>, ApiError> {
    act(state, path, ns, TableAction::Resume).await
}

#[utoipa::path(delete, operation_id = "remove_table", path = "/api/v2/changefeeds/{id}/tables/{table}", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), ("table" = String, Path, description = "`schema.table`"), NamespaceQuery),
    responses((status = 200, description = "The table is no longer replicated (its target table stays): the status", body = ChangefeedStatus), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// Stops replicating one table (a `!schema.table` rule is added); its target table stays.
pub(crate) async fn remove(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<ChangefeedStatus>, ApiError> {
    act(state, path, ns, TableAction::Remove).await
}

#[utoipa::path(post, operation_id = "resync_table", path = "/api/v2/changefeeds/{id}/tables/{table}/resync", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), ("table" = String, Path, description = "`schema.table`"), NamespaceQuery),
    responses((status = 200, description = "The table will be copied again: the status", body = ChangefeedStatus), (status = 400, description = "The changefeed does not replicate that table (`TABLE_NOT_FOUND`)", body = crate::error::ErrorBody), (status = 409, description = "Finished, or still copying (`CHANGEFEED_COPYING`)", body = crate::error::ErrorBody), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// Copies one table again from a fresh snapshot (emptied on the target first) and hands
/// over to the stream without a gap.
pub(crate) async fn resync_table(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<ChangefeedStatus>, ApiError> {
    let Path((id, table)) =
        path.map_err(|e| ApiError::bad_request(ErrorCode::InvalidParameter, format!("path: {e}")))?;
    let id = extract::path(Ok(Path(id)))?;
    let ns = extract::query(ns)?;
    let table = parse_table(&table)?;
    Ok(Json(
        state
            .engine
            .resync(ns.get()?, &id, Some(vec![table]))
            .await?,
    ))
}
