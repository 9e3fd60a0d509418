//! API errors: a status, a stable code and a safe message.
//!
//! The codes are part of the API (documented in `docs/api.md`); clients branch on them, so
//! a code is never renamed or reused for something else. Every message passes through
//! [`mask_secrets`] on its way out, so even a message that quotes user input cannot carry
//! a password.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_engine::{EngineError, Refusal};
use serde::Serialize;

/// Stable error codes (documented in `docs/api.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The body is not valid JSON, has unknown fields or wrong types.
    InvalidRequestBody,
    /// The body is larger than the limit.
    RequestBodyTooLarge,
    /// A query parameter is unknown or malformed, or a path's id or name is malformed.
    InvalidParameter,
    /// A field has an invalid value.
    InvalidConfig,
    /// The source cannot be reached or is not set up for logical replication.
    SourceUnusable,
    /// Syncing the target's sequences failed (source or target unreachable or refusing).
    SequenceSyncFailed,
    /// Reading the source's foreign keys or creating them on the target failed.
    ForeignKeysFailed,
    /// A table rule names a table the source does not have.
    TableNotFound,
    /// A URI's `password_file` cannot be read, or its `password_env` variable is not set on
    /// the server.
    SecretUnavailable,
    /// A resume position is malformed or older than the slot can serve.
    InvalidPosition,
    /// A changefeed names a source that does not exist.
    UnknownSource,
    /// The id is taken in that namespace.
    ChangefeedAlreadyExists,
    /// No such changefeed.
    ChangefeedNotFound,
    /// The server runs its configured maximum of changefeeds.
    ChangefeedLimitReached,
    /// The changefeed runs (or retries): pause it first.
    ChangefeedRunning,
    /// The changefeed does not run: there is nothing to pause.
    ChangefeedNotRunning,
    /// The changefeed is finished: it can only be read or deleted.
    ChangefeedFinished,
    /// The changefeed is still copying its tables (re-sync once it streams).
    ChangefeedCopying,
    /// The source name is taken in that namespace.
    SourceAlreadyExists,
    /// No such source.
    SourceNotFound,
    /// Changefeeds use the source.
    SourceInUse,
    /// The sink refused in a way retrying cannot fix (a wrong password, a certificate not
    /// trusted, missing privileges).
    SinkUnusable,
    /// The sink is the source database itself (same cluster and database, whatever the
    /// URIs say).
    SinkIsSource,
    /// Another changefeed (of any namespace or server) owns a target table this one would
    /// write.
    TargetTableOwned,
    /// A target table holds rows and `options.existing_target` is `fail`.
    TargetTableNotEmpty,
    /// The source's columns cannot be written into an existing target table as it is (a
    /// type that does not cast, a missing key column, a generated column).
    TargetSchemaConflict,
    /// No token, or a token that is not valid (HTTP 401).
    Unauthorized,
    /// The token's role does not allow the request: a `read` token on a write (HTTP 403).
    Forbidden,
    /// No such diff of that changefeed.
    DiffNotFound,
    /// A diff cannot do what was asked: the sink cannot be read back (a stream, a file),
    /// or `repair` names a table without a key.
    DiffUnsupported,
    /// The diff's state does not allow the action: another diff of the changefeed runs, or
    /// the diff is not running (stop) or not stopped or failed (resume).
    DiffRefused,
    /// No such route.
    NotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
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
    /// An error with a status, code and message (secrets are masked on the way out).
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 400 with `code`.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

/// The error body.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// A stable code from the documented list.
    error_code: ErrorCode,
    /// What went wrong, for people; never contains secrets.
    error_msg: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = mask_secrets(&self.message);
        if self.status.is_server_error() {
            tracing::error!(code = ?self.code, error = %message, "request failed");
        } else {
            tracing::debug!(code = ?self.code, error = %message, "request refused");
        }
        (
            self.status,
            Json(ErrorBody {
                error_code: self.code,
                error_msg: message,
            }),
        )
            .into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        use ErrorCode as C;
        use StatusCode as S;
        let message = err.to_string();
        let (status, code) = match &err {
            EngineError::InvalidConfig(_) => (S::BAD_REQUEST, C::InvalidConfig),
            EngineError::AlreadyExists(_) => (S::CONFLICT, C::ChangefeedAlreadyExists),
            EngineError::NotFound(_) => (S::NOT_FOUND, C::ChangefeedNotFound),
            EngineError::TooManyChangefeeds(_) => (S::CONFLICT, C::ChangefeedLimitReached),
            EngineError::Refused { refusal, .. } => (
                S::CONFLICT,
                match refusal {
                    Refusal::Running(_) => C::ChangefeedRunning,
                    Refusal::NotRunning(_) => C::ChangefeedNotRunning,
                    Refusal::Finished => C::ChangefeedFinished,
                    Refusal::Copying => C::ChangefeedCopying,
                },
            ),
            EngineError::SourceUnusable(_) => (S::BAD_REQUEST, C::SourceUnusable),
            EngineError::SequenceSync(_) => (S::BAD_GATEWAY, C::SequenceSyncFailed),
            EngineError::ForeignKeys(_) => (S::BAD_GATEWAY, C::ForeignKeysFailed),
            EngineError::TableNotFound(_) => (S::BAD_REQUEST, C::TableNotFound),
            EngineError::SecretUnavailable(_) => (S::BAD_REQUEST, C::SecretUnavailable),
            EngineError::InvalidPosition(_) => (S::BAD_REQUEST, C::InvalidPosition),
            EngineError::SourceNotFound(_) => (S::NOT_FOUND, C::SourceNotFound),
            EngineError::UnknownSource(_) => (S::BAD_REQUEST, C::UnknownSource),
            EngineError::SourceAlreadyExists(_) => (S::CONFLICT, C::SourceAlreadyExists),
            EngineError::SourceInUse { .. } => (S::CONFLICT, C::SourceInUse),
            EngineError::SinkIsSource(_) => (S::BAD_REQUEST, C::SinkIsSource),
            EngineError::SinkUnusable(_) => (S::BAD_REQUEST, C::SinkUnusable),
            EngineError::TargetTableOwned(_) => (S::CONFLICT, C::TargetTableOwned),
            EngineError::TargetNotEmpty(_) => (S::CONFLICT, C::TargetTableNotEmpty),
            EngineError::TargetConflict(_) => (S::CONFLICT, C::TargetSchemaConflict),
            EngineError::DiffNotFound(_) => (S::NOT_FOUND, C::DiffNotFound),
            EngineError::DiffUnsupported(_) => (S::BAD_REQUEST, C::DiffUnsupported),
            EngineError::DiffRefused(_) => (S::CONFLICT, C::DiffRefused),
            EngineError::Meta(_) => {
                tracing::error!(error = %ferry_core::error_chain(&err), "metadata store failed");
                (S::INTERNAL_SERVER_ERROR, C::Internal)
            }
        };
        ApiError::new(status, code, message)
    }
}

/// `text` with the password of every `scheme://user:password@` and the value of every
/// secret `key=value` (`password=`, `sslpassword=`, …) replaced by `***`, and the
/// contents of every quoted string after `string ` (serde's way of quoting a bad value)
/// dropped: a message may quote what a client sent, and what a client sent may be a secret.
pub fn mask_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace, quote or backtick.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '`' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    drop_quoted_strings(&ferry_core::uri::mask_secret_params(&out))
}

/// Replaces `string "…"` (serde's quoting of a value) with `string`.
fn drop_quoted_strings(text: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i + MARK.len() - 2]);
        let quoted = &rest[i + MARK.len()..];
        // Skip to the closing quote, honouring backslash escapes.
        let mut escaped = false;
        let mut end = quoted.len();
        for (j, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &quoted[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_secrets("connect to postgres://app:s3cr3t@db:5432/shop failed"),
            "connect to postgres://app:***@db:5432/shop failed"
        );
        assert_eq!(
            mask_secrets("a kafka://u:p%40ss@h:9092 and nats://h:4222/x"),
            "a kafka://u:***@h:9092 and nats://h:4222/x"
        );
        assert_eq!(
            mask_secrets("postgres://app@db/shop"),
            "postgres://app@db/shop"
        );
        assert_eq!(mask_secrets("no uri here"), "no uri here");
        assert_eq!(
            mask_secrets("postgres://app@db/shop?sslmode=disable&password=s3cr3t failed"),
            "postgres://app@db/shop?sslmode=disable&password=*** failed"
        );
    }

    #[test]
    fn quoted_values_are_dropped() {
        assert_eq!(
            mask_secrets(r#"invalid type: string "hunter2 \"x\"", expected usize at line 1"#),
            "invalid type: string, expected usize at line 1"
        );
    }

    #[test]
    fn refusals_map_to_conflicts() {
        let err: ApiError = EngineError::Refused {
            id: "a".into(),
            refusal: Refusal::Finished,
        }
        .into();
        assert_eq!(
            (err.status(), err.code()),
            (StatusCode::CONFLICT, ErrorCode::ChangefeedFinished)
        );
    }
}
