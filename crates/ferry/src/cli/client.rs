//! The HTTP client of the CLI: one method per request shape, JSON in and out.
//!
//! Every answer that is not a success becomes a [`CliError`] whose exit code says what
//! kind of failure it was ([`super::exit`]) and whose message carries the API's
//! `error_code` and `error_msg`. A `404` with the code `NOT_FOUND` means the *route* is
//! unknown (a server older than this CLI), which is reported as such rather than as a
//! missing changefeed. A `401` or `403` exits with [`super::exit::UNAUTHORIZED`], whatever
//! the route, with a hint about the token.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::credentials::Credentials;
use super::{exit, CliError};

/// Longest wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for an answer: creating a changefeed connects to its source first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A client of one server, in one namespace.
#[derive(Clone, Debug)]
pub(crate) struct ApiClient {
    http: reqwest::Client,
    base: Url,
    namespace: String,
    token: Option<ferry_api::auth::ApiToken>,
}

impl ApiClient {
    /// A client of the server at `server` (`http://host:port` or `https://host:port`).
    pub(crate) fn new(
        server: &str,
        namespace: &str,
        credentials: &Credentials,
    ) -> Result<ApiClient, CliError> {
        let base = Url::parse(server.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                CliError::usage(format!(
                    "--server {}: expected http://HOST:PORT or https://HOST:PORT",
                    super::secrets::mask_text(server)
                ))
            })?;
        // reqwest checks for a process-wide provider even for http://; ring is the only one
        // in the binary. An error means it is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        if base.scheme() == "https" {
            builder = builder.tls_backend_preconfigured(credentials.tls_config()?);
        }
        let http = builder
            .build()
            .map_err(|e| CliError::new(exit::FAILURE, format!("build the HTTP client: {e}")))?;
        if credentials.token.is_some() && sends_token_in_clear(&base) {
            eprintln!(
                "warning: the API token goes to {} over plain http, readable on the network; \
                 serve HTTPS (--tls-cert, --tls-key) and use https://",
                base.host_str().unwrap_or_default()
            );
        }
        Ok(ApiClient {
            http,
            base,
            namespace: namespace.to_string(),
            token: credentials.token.clone(),
        })
    }

    /// The namespace requests are made in.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Makes further requests in `namespace`.
    pub(crate) fn set_namespace(&mut self, namespace: &str) {
        self.namespace = namespace.to_string();
    }

    /// `/api/v2/<segments…>` (each segment percent-encoded) with `?namespace=`.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.path_segments_mut()
            .expect("an http URL has a path")
            .pop_if_empty()
            .extend(["api", "v2"])
            .extend(segments);
        url.query_pairs_mut()
            .append_pair("namespace", &self.namespace)
            .extend_pairs(query);
        url
    }

    /// `GET`.
    pub(crate) async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Value, CliError> {
        self.send(Method::GET, segments, query, None).await
    }

    /// `POST` with an optional JSON body.
    pub(crate) async fn post(
        &self,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        self.send(Method::POST, segments, &[], body).await
    }

    /// `POST` with query parameters and a JSON body.
    pub(crate) async fn post_with_query(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        body: &Value,
    ) -> Result<Value, CliError> {
        self.send(Method::POST, segments, query, Some(body)).await
    }

    /// `PUT` with a JSON body.
    pub(crate) async fn put(&self, segments: &[&str], body: &Value) -> Result<Value, CliError> {
        self.send(Method::PUT, segments, &[], Some(body)).await
    }

    /// `DELETE`.
    pub(crate) async fn delete(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Value, CliError> {
        self.send(Method::DELETE, segments, query, None).await
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let url = self.url(segments, query);
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        let json: Option<Value> = if text.trim().is_empty() {
            Some(Value::Null)
        } else {
            serde_json::from_str(&text).ok()
        };
        if status.is_success() {
            return json.ok_or_else(|| {
                CliError::new(
                    exit::SERVER_ERROR,
                    format!(
                        "{method} {}: the server answered {status} with a body that is not JSON",
                        url.path()
                    ),
                )
            });
        }
        Err(api_error(&method, &url, status, json.as_ref()))
    }

    fn unreachable(&self, err: &reqwest::Error) -> CliError {
        let mut cause = String::new();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        let what = if err.is_timeout() {
            "timed out waiting for"
        } else {
            "cannot reach"
        };
        CliError::new(
            exit::UNREACHABLE,
            format!("{what} the ferry server at {}: {cause}", self.server()),
        )
        .with_hint(unreachable_hint(&cause))
    }

    /// The server's base URL as given.
    pub(crate) fn server(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }
}

/// Whether a token sent to `base` crosses a network unencrypted: `http://` to anything but
/// a loopback address or `localhost`.
fn sends_token_in_clear(base: &Url) -> bool {
    let loopback = match base.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    base.scheme() == "http" && !loopback
}

/// What to do about a connection that failed with `cause` (the innermost error).
fn unreachable_hint(cause: &str) -> &'static str {
    let cause = cause.to_ascii_lowercase();
    if cause.contains("certificate") && cause.contains("peer") {
        "the server's certificate is not trusted: pass --ca FILE (or FERRY_CA) with the CA \
         that signed it"
    } else if cause.contains("alert") || cause.contains("certificate") {
        "the server refused the TLS handshake: it may require a client certificate \
         (--cert FILE --key FILE) signed by its CA, with an allowed CN"
    } else if cause.contains("invalid http version") {
        "the server may serve HTTPS: use an https:// URL"
    } else {
        "start one with `ferry server`, or point --server or FERRY_SERVER at it"
    }
}

/// The error of a non-2xx answer.
fn api_error(method: &Method, url: &Url, status: StatusCode, body: Option<&Value>) -> CliError {
    let code = body
        .and_then(|b| b.get("error_code"))
        .and_then(Value::as_str);
    let message = body
        .and_then(|b| b.get("error_msg"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let hint = if status == StatusCode::UNAUTHORIZED {
            "give a token of the server's token file with --token-file FILE, FERRY_TOKEN or --token"
        } else {
            "this needs a token with the role admin"
        };
        return CliError::new(
            exit::UNAUTHORIZED,
            format!("{}: {message}", code.unwrap_or(status.as_str())),
        )
        .with_hint(hint);
    }
    let Some(code) = code else {
        return CliError::new(
            exit::SERVER_ERROR,
            format!(
                "{method} {}: the server answered {status} without an API error body",
                url.path()
            ),
        );
    };
    if code == "NOT_FOUND" || status == StatusCode::METHOD_NOT_ALLOWED {
        return CliError::new(
            exit::SERVER_ERROR,
            format!(
                "the server does not know {method} {} ({code}): is it an older ferry?",
                url.path()
            ),
        );
    }
    let exit_code = match status {
        StatusCode::NOT_FOUND => exit::NOT_FOUND,
        StatusCode::CONFLICT => exit::CONFLICT,
        s if s.is_client_error() => exit::REJECTED,
        _ => exit::SERVER_ERROR,
    };
    CliError::new(exit_code, format!("{code}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_encoded_and_namespaced() {
        let none = Credentials::default();
        let client = ApiClient::new("http://127.0.0.1:8300/", "team-a", &none).unwrap();
        let url = client.url(&["changefeeds", "a b/c"], &[("state", "running")]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8300/api/v2/changefeeds/a%20b%2Fc?namespace=team-a&state=running"
        );
        assert!(ApiClient::new("127.0.0.1:8300", "default", &none).is_err());
        assert!(ApiClient::new("ftp://x", "default", &none).is_err());
        assert!(ApiClient::new("https://h:8300", "default", &none).is_ok());
    }

    #[test]
    fn tokens_in_clear_are_noticed() {
        for (url, clear) in [
            ("http://127.0.0.1:8300", false),
            ("http://localhost:8300", false),
            ("http://[::1]:8300", false),
            ("https://ferry.internal:8300", false),
            ("http://ferry.internal:8300", true),
            ("http://10.0.0.5:8300", true),
        ] {
            assert_eq!(
                sends_token_in_clear(&Url::parse(url).unwrap()),
                clear,
                "{url}"
            );
        }
    }

    #[test]
    fn api_errors_map_to_exit_codes() {
        let url = Url::parse("http://h/api/v2/changefeeds/x").unwrap();
        let body = |code: &str| serde_json::json!({"error_code": code, "error_msg": "why"});
        for (status, code, exit_code) in [
            (404, "CHANGEFEED_NOT_FOUND", exit::NOT_FOUND),
            (409, "CHANGEFEED_ALREADY_EXISTS", exit::CONFLICT),
            (400, "INVALID_CONFIG", exit::REJECTED),
            (413, "REQUEST_BODY_TOO_LARGE", exit::REJECTED),
            (500, "INTERNAL", exit::SERVER_ERROR),
            (404, "NOT_FOUND", exit::SERVER_ERROR),
            (401, "UNAUTHORIZED", exit::UNAUTHORIZED),
            (403, "FORBIDDEN", exit::UNAUTHORIZED),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            let err = api_error(&Method::GET, &url, status, Some(&body(code)));
            assert_eq!(err.code, exit_code, "{code}");
            assert!(err.message.contains(code), "{}", err.message);
        }
        let err = api_error(&Method::GET, &url, StatusCode::BAD_GATEWAY, None);
        assert_eq!(err.code, exit::SERVER_ERROR);
    }
}
