//! Completing the target for a cut-over: sequences (pgoutput does not carry them) and
//! foreign keys (never created while batches are applied).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use ferry_engine::{ForeignKeysReport, SequencesReport};

use crate::error::ApiError;
use crate::extract::{self, NamespaceQuery};
use crate::AppState;

#[utoipa::path(post, operation_id = "sync_sequences", path = "/api/v2/changefeeds/{id}/sequences/sync", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "The target sequences found and what each was set to", body = SequencesReport), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody), (status = 502, description = "The source or the target could not be read or written: `error_code` SEQUENCE_SYNC_FAILED", body = crate::error::ErrorBody)))]
/// Sets every target sequence of the replicated tables to at least the source's value
/// (pgoutput does not carry sequences); returns what it found and set.
pub(crate) async fn sync_sequences(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<SequencesReport>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    Ok(Json(state.engine.sync_sequences(ns.get()?, &id).await?))
}

#[utoipa::path(post, operation_id = "create_foreign_keys", path = "/api/v2/changefeeds/{id}/foreign-keys/create", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "The source's foreign keys between the replicated tables and what became of each", body = ForeignKeysReport), (status = 409, description = "The changefeed runs: pause it first (`error_code` CHANGEFEED_RUNNING)", body = crate::error::ErrorBody), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody), (status = 502, description = "The source or the target could not be read or written: `error_code` FOREIGN_KEYS_FAILED", body = crate::error::ErrorBody)))]
/// Creates on the target the source's foreign keys between the replicated tables (on the
/// tables Ferry created), each validated against the target's rows. Refused while the
/// changefeed runs; a finished changefeed has done it by itself.
pub(crate) async fn create_foreign_keys(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<ForeignKeysReport>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    Ok(Json(
        state.engine.create_foreign_keys(ns.get()?, &id).await?,
    ))
}
