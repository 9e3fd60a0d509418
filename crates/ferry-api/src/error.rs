//! API errors: a status, a stable code and a safe message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_engine::EngineError;
use serde::Serialize;

/// Stable error codes (documented in `docs/api.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The body is not valid JSON, has unknown fields or wrong types.
    InvalidRequestBody,
    /// The body is larger than the limit.
    RequestBodyTooLarge,
    /// A field has an invalid value.
    InvalidConfig,
    /// The id is taken in that namespace.
    ChangefeedAlreadyExists,
    /// No such changefeed.
    ChangefeedNotFound,
    /// The source cannot be reached or is not set up for logical replication.
    SourceUnusable,
    /// No such route.
    NotFound,
    /// Something failed inside Ferry.
    Internal,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    /// An error with a status, code and message (which must hold no secrets).
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error_code: ErrorCode,
    error_msg: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = ?self.code, error = %self.message, "request failed");
        }
        (
            self.status,
            Json(Body {
                error_code: self.code,
                error_msg: &self.message,
            }),
        )
            .into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        let message = err.to_string();
        match err {
            EngineError::InvalidConfig(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidConfig, message)
            }
            EngineError::AlreadyExists(_) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::ChangefeedAlreadyExists,
                message,
            ),
            EngineError::NotFound(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::ChangefeedNotFound,
                message,
            ),
            EngineError::SourceUnusable(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::SourceUnusable, message)
            }
            EngineError::Meta(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                message,
            ),
        }
    }
}
