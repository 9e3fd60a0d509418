//! The HTTP API (`/api/v2`): an axum router over the [`Engine`].
//!
//! Every failure is a JSON body `{"error_code": "…", "error_msg": "…"}` with a 4xx/5xx
//! status ([`error`]). Request bodies are parsed by hand from bytes (limited in size) so
//! malformed JSON, unknown fields and wrong types get the same error shape as everything
//! else. URIs in responses are always masked.

mod error;
mod routes;

use std::sync::Arc;

use axum::Router;
use ferry_engine::Engine;

pub use error::{ApiError, ErrorCode};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The API router for `engine`.
pub fn router(engine: Arc<Engine>) -> Router {
    routes::router(engine)
}
