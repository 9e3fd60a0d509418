//! Repairs: `POST …/skip` leaves out the source transaction the target refused (the
//! status's `last_error_position`), or only its changes to one table, and resumes;
//! `POST …/resync` copies every table again (one table: [`crate::tables`]).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use ferry_core::TableId;
use ferry_engine::ChangefeedStatus;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::extract::{self, NamespaceQuery};
use crate::AppState;

/// The body of `POST /changefeeds/{id}/skip`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SkipRequest {
    /// The commit position of the refused transaction, as the status's
    /// `last_error_position` shows it; any other is refused.
    position: String,
    /// `schema.table`: leave out only the transaction's changes to this table.
    #[serde(default)]
    table: Option<String>,
}

#[utoipa::path(post, operation_id = "skip_transaction", path = "/api/v2/changefeeds/{id}/skip", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    request_body = SkipRequest,
    responses((status = 200, description = "Skipped and resumed: the status", body = ChangefeedStatus), (status = 400, description = "Not the refused transaction's position, or no refused transaction (`error_code` INVALID_POSITION)", body = crate::error::ErrorBody), (status = 409, description = "The changefeed runs (`CHANGEFEED_RUNNING`) or is finished", body = crate::error::ErrorBody), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// Leaves out the source transaction the target refused (all of it, or only its changes
/// to `table`) and resumes the changefeed.
pub(crate) async fn skip(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ChangefeedStatus>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    let request: SkipRequest = extract::json_body(body)?;
    let table = request.table.as_deref().map(parse_table).transpose()?;
    Ok(Json(
        state
            .engine
            .skip(ns.get()?, &id, &request.position, table)
            .await?,
    ))
}

#[utoipa::path(post, operation_id = "resync_changefeed", path = "/api/v2/changefeeds/{id}/resync", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "Every table will be copied again: the status", body = ChangefeedStatus), (status = 409, description = "Finished, or still copying (`CHANGEFEED_COPYING`)", body = crate::error::ErrorBody), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// Copies every table of the changefeed again from a fresh snapshot, keeping the slot,
/// and streams on from there.
pub(crate) async fn resync(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<ChangefeedStatus>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    Ok(Json(state.engine.resync(ns.get()?, &id, None).await?))
}

/// `schema.table` as a table id.
pub(crate) fn parse_table(text: &str) -> Result<TableId, ApiError> {
    match text.split_once('.') {
        Some((schema, name)) if !schema.is_empty() && !name.is_empty() => {
            Ok(TableId::new(schema, name))
        }
        _ => Err(ApiError::bad_request(
            ErrorCode::InvalidParameter,
            format!("table: {text:?} is not schema.table"),
        )),
    }
}
