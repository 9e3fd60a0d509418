//! Recording operator actions: every request that changes a changefeed (`POST`, `PUT`,
//! `DELETE` under `/api/v2/changefeeds`) goes into its history with its parameters (query
//! and body, every secret masked) and its result, once answered. `GET
//! /api/v2/changefeeds/{id}/history` reads it back.

use axum::body::{to_bytes, Body};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_core::uri::{is_secret_param, mask_secret_params, MASK};
use ferry_engine::History;
use serde_json::{Map, Value};
use tracing::warn;

use crate::error::{ApiError, ErrorCode};
use crate::extract::{self, NamespaceQuery};
use crate::{AppState, MAX_BODY_BYTES};

/// The prefix of the routes whose changes are recorded.
const PREFIX: &str = "/api/v2/changefeeds";

#[utoipa::path(get, operation_id = "changefeed_history", path = "/api/v2/changefeeds/{id}/history", tag = "changefeeds", params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"), NamespaceQuery),
    responses((status = 200, description = "Every operator action on the changefeed, oldest first", body = History), (status = "4XX", description = "Refused: `error_code` says why", body = crate::error::ErrorBody)))]
/// The operator actions taken on a changefeed (kept after it is deleted).
pub(crate) async fn history(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ns: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Json<History>, ApiError> {
    let (id, ns) = (extract::path(id)?, extract::query(ns)?);
    Ok(Json(state.engine.history(ns.get()?, &id)?))
}

/// Middleware: answers the request, then records it when it acted on a changefeed.
pub(crate) async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if method == Method::GET || !path.starts_with(PREFIX) {
        return next.run(request).await;
    }
    let query = request.uri().query().unwrap_or("").to_string();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        // Too large (or cut off): refused as the handlers would; nothing was done.
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RequestBodyTooLarge,
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
        .into_response();
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes.clone())))
        .await;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let Some((id, action)) = action(&method, &path, &body) else {
        return response;
    };
    let namespace = param(&query, "namespace").unwrap_or_else(|| "default".into());
    if action == "create" && param(&query, "dry_run").as_deref() == Some("true") {
        return response;
    }
    let (parts, answer) = response.into_parts();
    let answer = to_bytes(answer, usize::MAX).await.unwrap_or_default();
    let result = if parts.status.is_success() {
        "ok".to_string()
    } else {
        let error: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        let code = error["error_code"].as_str().unwrap_or("ERROR");
        if code == "CHANGEFEED_NOT_FOUND" || code == "INVALID_PARAMETER" {
            // Nothing of a changefeed was acted on.
            return Response::from_parts(parts, Body::from(answer));
        }
        format!("{code}: {}", error["error_msg"].as_str().unwrap_or(""))
    };
    let mut parameters = Map::new();
    if !query.is_empty() {
        parameters.insert("query".into(), Value::String(mask_secret_params(&query)));
    }
    if !body.is_null() {
        parameters.insert("body".into(), masked(body));
    }
    if let Err(e) =
        state
            .engine
            .record_action(&namespace, &id, action, Value::Object(parameters), result)
    {
        warn!(changefeed = %id, error = %ferry_core::error_chain(&e), "could not record the action in the history");
    }
    Response::from_parts(parts, Body::from(answer))
}

/// The changefeed and the action a request names: `POST /changefeeds` is `create` (the id
/// in its body), `PUT` and `DELETE /changefeeds/{id}` are `update` and `delete`, and
/// `POST /changefeeds/{id}/…` is the rest of its path.
fn action(method: &Method, path: &str, body: &Value) -> Option<(String, String)> {
    let rest = path.strip_prefix(PREFIX)?.trim_start_matches('/');
    let (id, tail) = match rest.split_once('/') {
        Some((id, tail)) => (id, tail),
        None => (rest, ""),
    };
    let action = match (method, id, tail) {
        (&Method::POST, "", _) => return Some((body["id"].as_str()?.to_string(), "create".into())),
        (&Method::PUT, _, "") => "update".to_string(),
        (&Method::DELETE, _, "") => "delete".to_string(),
        (&Method::DELETE, _, tail) => format!("{tail}/remove"),
        (&Method::POST, _, tail) if !tail.is_empty() => tail.to_string(),
        _ => return None,
    };
    (!id.is_empty()).then(|| (id.to_string(), action))
}

/// A query parameter's value.
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

/// `value` with every secret masked: values of secret-named keys, and the password and
/// secret parameters of every URI-shaped string.
fn masked(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, v)| {
                    let v = if is_secret_param(&key) && !v.is_null() {
                        Value::String(MASK.into())
                    } else {
                        masked(v)
                    };
                    (key, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(masked).collect()),
        Value::String(text) if text.contains("://") => Value::String(mask_uri(&text)),
        other => other,
    }
}

/// A URI with its userinfo password and secret parameters masked.
fn mask_uri(text: &str) -> String {
    match url::Url::parse(text.trim()) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some(MASK));
            }
            mask_secret_params(url.as_str())
        }
        // Not a URI after all: whatever follows `scheme://` up to `@` may be a password.
        Err(_) => match (text.find("://"), text.rfind('@')) {
            (Some(start), Some(at)) if at > start => {
                format!("{}{MASK}{}", &text[..start + 3], &text[at..])
            }
            _ => mask_secret_params(text),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_everywhere_in_the_parameters() {
        let body = json!({
            "id": "cf",
            "source_uri": "postgres://app:s3cret@db:5432/shop?sslpassword=k3y&sslmode=require",
            "sink_uri": "postgres://app:s3cret@[::1/x",
            "options": {"token": "t0ken", "snapshot_workers": 4},
        });
        let text = masked(body).to_string();
        for secret in ["s3cret", "k3y", "t0ken"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("sslmode=require"), "{text}");
        assert!(text.contains("\"snapshot_workers\":4"), "{text}");
    }

    #[test]
    fn actions_are_named_by_method_and_path() {
        let body = json!({"id": "new"});
        let cases = [
            (Method::POST, "/api/v2/changefeeds", Some(("new", "create"))),
            (
                Method::PUT,
                "/api/v2/changefeeds/cf",
                Some(("cf", "update")),
            ),
            (
                Method::DELETE,
                "/api/v2/changefeeds/cf",
                Some(("cf", "delete")),
            ),
            (
                Method::POST,
                "/api/v2/changefeeds/cf/resume",
                Some(("cf", "resume")),
            ),
            (
                Method::POST,
                "/api/v2/changefeeds/cf/tables/public.t/resync",
                Some(("cf", "tables/public.t/resync")),
            ),
            (
                Method::DELETE,
                "/api/v2/changefeeds/cf/tables/public.t",
                Some(("cf", "tables/public.t/remove")),
            ),
            (Method::POST, "/api/v2/changefeeds/cf", None),
        ];
        for (method, path, want) in cases {
            let got = action(&method, path, &body);
            assert_eq!(
                got,
                want.map(|(i, a)| (i.to_string(), a.to_string())),
                "{path}"
            );
        }
    }
}
