//! Request parsing that fails with the API's error shape.
//!
//! Bodies are taken as bytes (limited to [`crate::MAX_BODY_BYTES`]) and parsed with
//! `serde_json`; query strings and path segments go through axum's extractors whose
//! rejections are turned into [`ApiError`]s here, so no input reaches a handler unchecked
//! and none gets a plain-text or 5xx answer.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{ApiError, ErrorCode};

/// The request body as bytes, or the matching error.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
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
            ApiError::bad_request(ErrorCode::InvalidRequestBody, e.body_text())
        }
    })
}

/// Parses JSON bytes as `T`.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidRequestBody,
            format!("invalid JSON body: {e}"),
        )
    })
}

/// The body parsed as `T`.
pub(crate) fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    parse_json(&body_bytes(body)?)
}

/// The body parsed as `T`, or `None` when it is empty or `null` (optional bodies).
pub(crate) fn optional_json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<Option<T>, ApiError> {
    let bytes = body_bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_json(&bytes)
}

/// The query string parsed as `T`.
pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidParameter,
            format!("invalid query string: {}", e.body_text()),
        )
    })
}

/// The path's id or name, checked against the id syntax (so no request reaches the
/// engine with a name that cannot exist).
pub(crate) fn path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let name = path.map(|Path(p)| p).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidParameter,
            format!("invalid path: {}", e.body_text()),
        )
    })?;
    ferry_engine::config::validate_id(&name)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidParameter, e.to_string()))?;
    Ok(name)
}

/// The default namespace.
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// `?namespace=…`, the only query parameter of most routes.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct NamespaceQuery {
    /// Tenant namespace (default `default`).
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")]
    pub(crate) namespace: Option<String>,
}

impl NamespaceQuery {
    /// The namespace, checked.
    pub(crate) fn get(&self) -> Result<&str, ApiError> {
        check_namespace(self.namespace.as_deref())
    }
}

/// A namespace (or the default), checked against the id syntax.
pub(crate) fn check_namespace(namespace: Option<&str>) -> Result<&str, ApiError> {
    let ns = namespace.unwrap_or(DEFAULT_NAMESPACE);
    ferry_engine::config::validate_id(ns).map_err(|e| {
        ApiError::bad_request(ErrorCode::InvalidParameter, format!("namespace: {e}"))
    })?;
    Ok(ns)
}
