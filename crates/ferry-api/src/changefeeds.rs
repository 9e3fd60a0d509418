//! `/api/v2/changefeeds`: create, list, get, update, delete, pause, resume, status, synced.
//!
//! A changefeed's configuration is shown (and edited) as a [`ConfigView`]: the create body
//! without `start`, URIs masked. `PUT` merges its body into the current view (fields left
//! out stay as they are; objects merge field by field), so `ferry changefeed get` output can
//! be edited and sent back: a masked password (`***`) keeps the stored one.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ferry_core::{parse_source_uri, ConnectionUri, Position, SinkUri, TableFilter};
use ferry_engine::config::Options;
use ferry_engine::{ChangefeedConfig, ChangefeedStatus, FeedState, Phase, SyncedReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::extract::{self, NamespaceQuery};
use crate::secrets::unmask;
use crate::AppState;

/// The body of `POST /changefeeds`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    /// `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`, unique in its namespace.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")]
    id: String,
    /// A named source (see `/sources`); or give `source_uri`.
    #[serde(default)]
    source: Option<String>,
    /// `postgres://user:password@host:port/database`, or `mariadb://` / `mysql://` (a
    /// database in the path limits the source to it); or give `source`.
    #[serde(default)]
    source_uri: Option<String>,
    /// `postgres://…`, `postgresql://…`, `blackhole://`, `file:///DIR?format=debezium-json`
    /// or `nats://host:port?stream=NAME&subject_prefix=PFX`.
    sink_uri: String,
    /// Table rules (`schema.table` globs, `!` excludes, last match wins); empty: all tables.
    #[serde(default)]
    tables: Vec<String>,
    /// Tuning.
    #[serde(default)]
    options: Options,
    /// Start right away (default); `false` creates it `stopped`.
    #[serde(default = "yes")]
    start: bool,
    /// Finish once everything committed at or before this LSN (`0/16B3748`) is applied.
    #[serde(default)]
    target_position: Option<String>,
    /// Copy the tables once and finish, without streaming.
    #[serde(default)]
    snapshot_only: bool,
}

fn yes() -> bool {
    true
}

/// A changefeed's configuration as shown and as `PUT` accepts it. URIs are masked.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigView {
    /// The changefeed's id.
    id: String,
    /// Its namespace.
    namespace: String,
    /// The named source, when it uses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// The source URI (masked); absent when `source` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_uri: Option<String>,
    /// The sink URI (masked).
    sink_uri: String,
    /// Table rules.
    tables: Vec<String>,
    /// Tuning.
    options: Options,
    /// Where it finishes, if it does.
    #[serde(default)]
    target_position: Option<String>,
    /// Copy only, no streaming.
    #[serde(default)]
    snapshot_only: bool,
}

/// The body of `PUT /changefeeds/{id}`: a JSON merge patch (RFC 7386) of the configuration
/// `GET` shows, so every field is optional (`null` removes one); the result must be a valid
/// configuration. Documentation only: the handler merges the raw JSON into [`ConfigView`].
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ConfigPatch {
    /// Must be the changefeed's id, if given.
    id: Option<String>,
    /// Must be the changefeed's namespace, if given.
    namespace: Option<String>,
    /// A named source (replaces `source_uri`).
    source: Option<String>,
    /// A source URI (replaces `source`); a `***` password keeps the stored one.
    source_uri: Option<String>,
    /// The sink URI; a `***` password keeps the stored one.
    sink_uri: Option<String>,
    /// Table rules.
    tables: Option<Vec<String>>,
    /// Tuning, merged key by key.
    options: Option<Options>,
    /// Where it finishes.
    target_position: Option<String>,
    /// Copy only, no streaming.
    snapshot_only: Option<bool>,
}

impl ConfigView {
    fn of(config: &ChangefeedConfig) -> Self {
        ConfigView {
            id: config.id.clone(),
            namespace: config.namespace.clone(),
            source: config.source.clone(),
            source_uri: config.source.is_none().then(|| config.source_uri.masked()),
            sink_uri: config.sink_uri.masked(),
            tables: config.tables.rules().to_vec(),
            options: config.options.clone(),
            target_position: config.target_position.as_ref().map(ToString::to_string),
            snapshot_only: config.snapshot_only,
        }
    }
}

/// A changefeed: configuration and status.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChangefeedView {
    /// The configuration (masked).
    config: ConfigView,
    /// Everything of the status.
    #[serde(flatten)]
    status: ChangefeedStatus,
}

/// One changefeed in a list.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChangefeedSummary {
    id: String,
    namespace: String,
    state: FeedState,
    phase: Phase,
    checkpoint_position: Option<String>,
    checkpoint_time: Option<String>,
    lag_seconds: Option<f64>,
    /// What explains the state: `last_error` when failed, `last_warning` when in error.
    error: Option<String>,
}

/// `GET /changefeeds`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ListResponse {
    total: usize,
    items: Vec<ChangefeedSummary>,
}

/// `DELETE` answers.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeleteResponse {
    /// The id (or name) asked for.
    id: String,
    /// Whether it existed.
    deleted: bool,
}

impl DeleteResponse {
    pub(crate) fn new(id: String, deleted: bool) -> Self {
        DeleteResponse { id, deleted }
    }
}

/// The optional body of `POST /changefeeds/{id}/resume`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResumeRequest {
    /// Restart streaming at this LSN instead of the checkpoint; it must lie between what
    /// the slot has confirmed and the source's current WAL position.
    overwrite_checkpoint_position: Option<String>,
}

/// `?namespace=…&dry_run=…` of `POST /changefeeds`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CreateQuery {
    /// Tenant namespace (default `default`).
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")]
    namespace: Option<String>,
    /// Run every check `create` runs (source, tables, target) and create nothing: `200`
    /// with `{"checked": true}`, or the error `create` would give.
    #[serde(default)]
    dry_run: bool,
}

/// The answer of a `dry_run` create.
#[derive(Serialize, ToSchema)]
pub(crate) struct CheckedResponse {
    /// Always true: every check passed.
    checked: bool,
}

/// `?namespace=…&state=…` of `GET /changefeeds`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Tenant namespace (default `default`).
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")]
    namespace: Option<String>,
    /// `running`, `paused`, `error`, `failed`, `finished`, `stopped` or `all` (default).
    #[param(pattern = r"^(running|paused|error|failed|finished|stopped|all)$")]
    state: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidConfig, message)
}

/// Parses a position of the source `uri` in its database's notation.
fn parse_position(
    engine: &ferry_engine::Engine,
    uri: &ConnectionUri,
    field: &str,
    text: &str,
    code: ErrorCode,
) -> Result<Position, ApiError> {
    engine
        .parse_position(uri, text)
        .map_err(|e| ApiError::bad_request(code, format!("{field}: {e}")))
}

/// Builds a configuration from request fields (URIs already unmasked).
#[allow(clippy::too_many_arguments)]
fn build_config(
    engine: &ferry_engine::Engine,
    id: String,
    namespace: &str,
    source: Option<String>,
    source_uri: Option<String>,
    sink_uri: &str,
    tables: &[String],
    options: Options,
    target_position: Option<String>,
    snapshot_only: bool,
    created_at_us: i64,
) -> Result<ChangefeedConfig, ApiError> {
    let source_uri = match (&source, source_uri) {
        (Some(_), Some(_)) => return Err(invalid("give either source or source_uri, not both")),
        (None, None) => return Err(invalid("source_uri (or source) is required")),
        (None, Some(uri)) => {
            parse_source_uri(&uri).map_err(|e| invalid(format!("source_uri: {e}")))?
        }
        (Some(name), None) => {
            engine
                .source_config(namespace, name)
                .map_err(|_| {
                    ApiError::bad_request(
                        ErrorCode::UnknownSource,
                        format!(
                            "source {name} does not exist; create it first (POST /api/v2/sources)"
                        ),
                    )
                })?
                .uri
        }
    };
    let sink_uri: SinkUri = sink_uri
        .parse()
        .map_err(|e| invalid(format!("sink_uri: {e}")))?;
    let tables = TableFilter::new(tables).map_err(|e| invalid(format!("tables: {e}")))?;
    let target_position = target_position
        .map(|p| {
            parse_position(
                engine,
                &source_uri,
                "target_position",
                &p,
                ErrorCode::InvalidConfig,
            )
        })
        .transpose()?;
    Ok(ChangefeedConfig {
        id,
        namespace: namespace.to_string(),
        source,
        source_uri,
        sink_uri,
        tables,
        options,
        created_at_us,
        target_position,
        snapshot_only,
    })
}

fn view(state: &AppState, namespace: &str, id: &str) -> Result<ChangefeedView, ApiError> {
    let config = state.engine.config(namespace, id)?;
    let status = state.engine.status(namespace, id)?;
    Ok(ChangefeedView {
        config: ConfigView::of(&config),
        status,
    })
}

#[utoipa::path(post, operation_id = "create_changefeed", path = "/api/v2/changefeeds", tag = "changefeeds",
    params(CreateQuery), request_body = CreateRequest,
    responses((status = 201, description = "The changefeed, created (and started unless `start` is false)", body = ChangefeedView), (status = 200, description = "dry_run: every check passed", body = CheckedResponse), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    q: Result<Query<CreateQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let q = extract::query(q)?;
    let namespace = extract::check_namespace(q.namespace.as_deref())?;
    let r: CreateRequest = extract::json_body(body)?;
    let config = build_config(
        &state.engine,
        r.id,
        namespace,
        r.source,
        r.source_uri,
        &r.sink_uri,
        &r.tables,
        r.options,
        r.target_position,
        r.snapshot_only,
        ferry_engine::status::now_us(),
    )?;
    if q.dry_run {
        state.engine.check(config).await?;
        return Ok(Json(CheckedResponse { checked: true }).into_response());
    }
    // The view as created: a concurrent DELETE may remove it before a second look.
    let (config, status) = state.engine.create(config, r.start).await?;
    let view = ChangefeedView {
        config: ConfigView::of(&config),
        status,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(get, operation_id = "list_changefeeds", path = "/api/v2/changefeeds", tag = "changefeeds", params(ListQuery),
    responses((status = 200, description = "The changefeeds of the namespace", body = ListResponse), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let q = extract::query(q)?;
    let namespace = extract::check_namespace(q.namespace.as_deref())?;
    let wanted = match q.state.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(s.parse::<FeedState>().map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidParameter,
                format!("state: {e}; use running, paused, error, failed, finished, stopped or all"),
            )
        })?),
    };
    let items: Vec<ChangefeedSummary> = state
        .engine
        .list(Some(namespace), wanted)
        .into_iter()
        .map(|s| ChangefeedSummary {
            error: match s.state {
                FeedState::Failed => s.last_error,
                FeedState::Error => s.last_warning,
                _ => None,
            },
            id: s.id,
            namespace: s.namespace,
            state: s.state,
            phase: s.phase,
            checkpoint_position: s.checkpoint_position,
            checkpoint_time: s.checkpoint_time,
            lag_seconds: s.lag_seconds,
        })
        .collect();
    Ok(Json(ListResponse {
        total: items.len(),
        items,
    }))
}

#[utoipa::path(get, operation_id = "get_changefeed", path = "/api/v2/changefeeds/{id}", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "The changefeed: its configuration and state", body = ChangefeedView), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<ChangefeedView>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    Ok(Json(view(&state, ns.get()?, &id)?))
}

#[utoipa::path(put, operation_id = "update_changefeed", path = "/api/v2/changefeeds/{id}", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    request_body = ConfigPatch,
    responses((status = 200, description = "The changefeed, updated", body = ChangefeedView), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ChangefeedView>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    let namespace = ns.get()?;
    let patch: serde_json::Value = extract::json_body(body)?;
    let serde_json::Value::Object(patch) = patch else {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequestBody,
            "the body must be a JSON object",
        ));
    };
    let current = state.engine.config(namespace, &id)?;
    let mut merged = serde_json::to_value(ConfigView::of(&current)).expect("a view serializes");
    let base = merged.as_object_mut().expect("a view is an object");
    // Naming a source replaces a URI and the other way round.
    if patch.contains_key("source") {
        base.remove("source_uri");
    }
    if patch.contains_key("source_uri") {
        base.remove("source");
    }
    merge(&mut merged, serde_json::Value::Object(patch));
    let new: ConfigView = serde_json::from_value(merged).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidRequestBody,
            format!("invalid JSON body: {e}"),
        )
    })?;
    if new.id != id || new.namespace != namespace {
        return Err(invalid("id and namespace cannot change"));
    }
    let source_uri = new
        .source_uri
        .map(|uri| unmask(&uri, Some(&current.source_uri)));
    let current_sink = current.sink_uri.connection();
    let sink_uri = unmask(&new.sink_uri, current_sink);
    let config = build_config(
        &state.engine,
        id.clone(),
        namespace,
        new.source,
        source_uri,
        &sink_uri,
        &new.tables,
        new.options,
        new.target_position,
        new.snapshot_only,
        current.created_at_us,
    )?;
    state.engine.update(config).await?;
    Ok(Json(view(&state, namespace, &id)?))
}

/// RFC 7386 merge: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

#[utoipa::path(delete, operation_id = "delete_changefeed", path = "/api/v2/changefeeds/{id}", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "Deleted, with what was cleaned up on the source", body = DeleteResponse), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    let deleted = state.engine.delete(ns.get()?, &id).await?;
    Ok(Json(DeleteResponse { id, deleted }))
}

#[utoipa::path(post, operation_id = "pause_changefeed", path = "/api/v2/changefeeds/{id}/pause", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "Paused: the status", body = ChangefeedStatus), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ChangefeedStatus>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    // No body is expected; an empty object is tolerated.
    let _: Option<EmptyBody> = extract::optional_json_body(body)?;
    Ok(Json(state.engine.pause(ns.get()?, &id).await?))
}

/// An empty JSON object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

#[utoipa::path(post, operation_id = "resume_changefeed", path = "/api/v2/changefeeds/{id}/resume", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    request_body(content = Option<ResumeRequest>),
    responses((status = 200, description = "Resumed: the status", body = ChangefeedStatus), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ChangefeedStatus>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    let request: Option<ResumeRequest> = extract::optional_json_body(body)?;
    let namespace = ns.get()?;
    let position = request
        .and_then(|r| r.overwrite_checkpoint_position)
        .map(|p| {
            let uri = state.engine.config(namespace, &id)?.source_uri;
            parse_position(
                &state.engine,
                &uri,
                "overwrite_checkpoint_position",
                &p,
                ErrorCode::InvalidPosition,
            )
        })
        .transpose()?;
    Ok(Json(state.engine.resume(namespace, &id, position).await?))
}

#[utoipa::path(get, operation_id = "changefeed_status", path = "/api/v2/changefeeds/{id}/status", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "State, phase, checkpoint, lag and per-table progress", body = ChangefeedStatus), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<ChangefeedStatus>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    Ok(Json(state.engine.status(ns.get()?, &id)?))
}

#[utoipa::path(get, operation_id = "changefeed_synced", path = "/api/v2/changefeeds/{id}/synced", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "Whether the target holds everything the source committed", body = SyncedReport), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
pub(crate) async fn synced(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<SyncedReport>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    Ok(Json(state.engine.synced(ns.get()?, &id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patches_objects_field_by_field() {
        let mut base = json!({"a": 1, "o": {"x": 1, "y": 2}, "t": ["p"]});
        merge(&mut base, json!({"o": {"y": 3}, "t": ["q"], "a": null}));
        assert_eq!(base, json!({"o": {"x": 1, "y": 3}, "t": ["q"]}));
    }
}
