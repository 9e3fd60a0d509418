//! API authentication: bearer tokens with a role, checked before routing.
//!
//! ```text
//! request ─► guard ─┬─ open route (/api/v2/health; /metrics unless metrics_auth) ─► router
//!                   ├─ no tokens configured ────────────────────────────────────► router
//!                   ├─ no / unknown token ─► 401 UNAUTHORIZED + WWW-Authenticate: Bearer
//!                   ├─ read token, not GET/HEAD ─► 403 FORBIDDEN
//!                   └─ else ─► router, inside a span `request{caller=NAME}`
//! ```
//!
//! The guard wraps the whole router, fallback included, so a caller without a valid token
//! learns nothing about which routes, changefeeds or sources exist: every answer is the same
//! 401. Tokens are compared as SHA-256 digests in constant time, against every configured
//! token (no early exit), and only the digests are kept. Every request is logged with the
//! token's *name* (`caller`); the token itself is never logged, and [`ApiToken`] prints as
//! `***`. Log lines of the engine emitted while a request runs (changefeed created, paused,
//! deleted …) carry the same `caller` through the span.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::error::{ApiError, ErrorCode};

/// Shortest token accepted: 16 characters leave no room for guessing over the network.
pub const MIN_TOKEN_LENGTH: usize = 16;
/// Longest token name (names appear in every log line of a request).
const MAX_NAME_LENGTH: usize = 64;
/// The caller name of requests that carry no token (open routes, or no tokens configured).
pub const ANONYMOUS: &str = "anonymous";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Every request.
    Admin,
    /// `GET` and `HEAD` only.
    Read,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Read => "read",
        })
    }
}

/// A bearer token: a secret that prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps `token` (surrounding whitespace removed).
    pub fn new(token: &str) -> ApiToken {
        ApiToken(token.trim().to_string())
    }

    /// The token itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A token file that cannot be used. Messages name the line, never a field's value (a
/// misplaced field could be a token).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenFileError {
    /// One line is malformed.
    #[error("line {line}: {problem}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// No line holds a token.
    #[error("the file holds no token (each line: NAME ROLE TOKEN)")]
    Empty,
}

struct Entry {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The configured tokens, by name and role; only digests of the tokens are kept.
pub struct TokenTable {
    entries: Vec<Entry>,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|e| format!("{} ({})", e.name, e.role)),
            )
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

impl TokenTable {
    /// Parses a token file: one `NAME ROLE TOKEN` per line, separated by whitespace; `#`
    /// starts a comment; blank lines are skipped. Names are `[A-Za-z0-9._@-]` (at most 64),
    /// unique; roles `admin` or `read`; tokens printable ASCII of at least
    /// [`MIN_TOKEN_LENGTH`] characters, unique.
    pub fn parse(text: &str) -> Result<TokenTable, TokenFileError> {
        let mut entries: Vec<(usize, Entry)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let bad = |problem: &str| TokenFileError::Line {
                line,
                problem: problem.to_string(),
            };
            let content = raw.split('#').next().unwrap_or("");
            let fields: Vec<&str> = content.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let [name, role, token] = fields[..] else {
                return Err(bad(&format!(
                    "expected 3 fields NAME ROLE TOKEN, found {}",
                    fields.len()
                )));
            };
            let name_ok = name.len() <= MAX_NAME_LENGTH
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
            if !name_ok {
                return Err(bad(
                    "NAME must be 1-64 characters of A-Z a-z 0-9 . _ @ - (is the order NAME ROLE TOKEN?)",
                ));
            }
            let role = match role {
                "admin" => Role::Admin,
                "read" => Role::Read,
                _ => return Err(bad("ROLE must be admin or read")),
            };
            if token.len() < MIN_TOKEN_LENGTH || !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(bad(&format!(
                    "TOKEN must be at least {MIN_TOKEN_LENGTH} printable ASCII characters"
                )));
            }
            let entry = Entry {
                name: name.to_string(),
                role,
                digest: digest(token.as_bytes()),
            };
            for (earlier, other) in &entries {
                if other.name == entry.name {
                    return Err(bad(&format!("NAME is already used on line {earlier}")));
                }
                if other.digest == entry.digest {
                    return Err(bad(&format!("TOKEN is already used on line {earlier}")));
                }
            }
            entries.push((line, entry));
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(TokenTable {
            entries: entries.into_iter().map(|(_, e)| e).collect(),
        })
    }

    /// The names of the tokens, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// The entry whose token is `presented`. Compares against every entry in constant time.
    fn find(&self, presented: &str) -> Option<&Entry> {
        let presented = digest(presented.as_bytes());
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        found
    }
}

/// Who may call the API.
#[derive(Clone, Debug, Default)]
pub struct AccessPolicy {
    /// The tokens; `None`: no authentication (every request is allowed).
    pub tokens: Option<Arc<TokenTable>>,
    /// Whether `/metrics` needs a token (of either role).
    pub metrics_auth: bool,
}

/// The authenticated caller of a request (a request extension).
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name, or [`ANONYMOUS`].
    pub name: String,
    /// Its role (`Admin` when authentication is off).
    pub role: Role,
}

impl AccessPolicy {
    /// Whether `path` is answered without a token.
    fn is_open(&self, path: &str) -> bool {
        path == "/api/v2/health" || (path == "/metrics" && !self.metrics_auth)
    }

    /// The caller of a request, or why it is refused (with the token's name when known).
    fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Caller, (String, ApiError)> {
        let anonymous = || Caller {
            name: ANONYMOUS.to_string(),
            role: Role::Admin,
        };
        let Some(tokens) = &self.tokens else {
            return Ok(anonymous());
        };
        if self.is_open(path) {
            return Ok(anonymous());
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let Some(presented) = presented else {
            return Err((
                ANONYMOUS.to_string(),
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    "this request needs a token: send the header Authorization: Bearer TOKEN",
                ),
            ));
        };
        let Some(entry) = tokens.find(presented) else {
            return Err((
                ANONYMOUS.to_string(),
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    "the bearer token is not valid",
                ),
            ));
        };
        let reads = method == Method::GET || method == Method::HEAD;
        if entry.role == Role::Read && !reads {
            return Err((
                entry.name.clone(),
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Forbidden,
                    format!(
                        "token {} has the role read, which may only GET; {method} needs an \
                         admin token",
                        entry.name
                    ),
                ),
            ));
        }
        Ok(Caller {
            name: entry.name.clone(),
            role: entry.role,
        })
    }
}

/// The middleware around the whole router: authenticates, authorizes, logs the request.
pub(crate) async fn guard(
    State(policy): State<Arc<AccessPolicy>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let (caller, response) = match policy.check(&method, &path, request.headers()) {
        Ok(caller) => {
            let name = caller.name.clone();
            let span = tracing::info_span!("request", caller = %name);
            request.extensions_mut().insert(caller);
            (name, next.run(request).instrument(span).await)
        }
        Err((name, error)) => {
            let unauthorized = error.status() == StatusCode::UNAUTHORIZED;
            let mut response = error.into_response();
            if unauthorized {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"ferry\""),
                );
            }
            (name, response)
        }
    };
    let status = response.status().as_u16();
    let millis = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0);
    let quiet = (method == Method::GET || method == Method::HEAD) && status < 400;
    if quiet {
        tracing::debug!(caller = %caller, %method, %path, status, %millis, "request");
    } else {
        tracing::info!(caller = %caller, %method, %path, status, %millis, "request");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-token-0123456789";
    const READER: &str = "read-token-0123456789";

    fn table() -> TokenTable {
        TokenTable::parse(&format!(
            "# name role token\n\nalice admin {ADMIN}  # ops\n  bob\tread {READER}\n"
        ))
        .unwrap()
    }

    #[test]
    fn parses_names_roles_and_comments() {
        let t = table();
        assert_eq!(t.names(), ["alice", "bob"]);
        assert_eq!(t.find(ADMIN).map(|e| e.role), Some(Role::Admin));
        assert_eq!(t.find(READER).map(|e| e.name.as_str()), Some("bob"));
        assert!(t.find("admin-token-012345678").is_none());
        assert!(!format!("{t:?}").contains(ADMIN));
    }

    #[test]
    fn errors_name_the_line_never_the_token() {
        let secret = "s3cret-s3cret-s3cret";
        for (text, line, problem) in [
            (
                format!("# c\nalice admin {secret} extra\n"),
                2,
                "expected 3 fields",
            ),
            (format!("alice {secret}\n"), 1, "expected 3 fields"),
            (format!("alice owner {secret}\n"), 1, "ROLE must be"),
            (format!("{secret}! admin alice\n"), 1, "NAME must be"),
            ("alice admin short\n".to_string(), 1, "at least 16"),
            (
                format!("a admin {secret}\nb read {secret}\n"),
                2,
                "TOKEN is already used on line 1",
            ),
            (
                format!("a admin {secret}\na read {secret}x\n"),
                2,
                "NAME is already used on line 1",
            ),
        ] {
            let err = TokenTable::parse(&text).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("line {line}: ")),
                "{text}: {message}"
            );
            assert!(message.contains(problem), "{text}: {message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        assert_eq!(
            TokenTable::parse("# only comments\n\n").unwrap_err(),
            TokenFileError::Empty
        );
    }

    #[test]
    fn roles_decide_methods() {
        let policy = AccessPolicy {
            tokens: Some(Arc::new(table())),
            metrics_auth: false,
        };
        let headers = |token: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(t) = token {
                h.insert(
                    header::AUTHORIZATION,
                    format!("Bearer {t}").parse().unwrap(),
                );
            }
            h
        };
        let status = |method: Method, path: &str, token: Option<&str>| match policy.check(
            &method,
            path,
            &headers(token),
        ) {
            Ok(_) => 200,
            Err((_, e)) => e.status().as_u16(),
        };
        assert_eq!(status(Method::GET, "/api/v2/health", None), 200);
        assert_eq!(status(Method::GET, "/metrics", None), 200);
        assert_eq!(status(Method::GET, "/api/v2/changefeeds", None), 401);
        assert_eq!(status(Method::GET, "/nowhere", Some("wrong")), 401);
        assert_eq!(
            status(Method::GET, "/api/v2/changefeeds", Some(READER)),
            200
        );
        assert_eq!(status(Method::HEAD, "/api/v2/status", Some(READER)), 200);
        assert_eq!(
            status(Method::POST, "/api/v2/changefeeds", Some(READER)),
            403
        );
        assert_eq!(
            status(Method::DELETE, "/api/v2/sources/x", Some(ADMIN)),
            200
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("bearer  {ADMIN}").parse().unwrap(),
        );
        assert!(policy.check(&Method::PUT, "/x", &h).is_ok(), "scheme case");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {ADMIN}").parse().unwrap(),
        );
        assert!(policy.check(&Method::GET, "/x", &h).is_err());
        let protected = AccessPolicy {
            metrics_auth: true,
            ..policy.clone()
        };
        assert!(protected
            .check(&Method::GET, "/metrics", &headers(None))
            .is_err());
        assert!(protected
            .check(&Method::GET, "/metrics", &headers(Some(READER)))
            .is_ok());
    }

    #[test]
    fn tokens_print_masked() {
        let token = ApiToken::new(" abc ");
        assert_eq!(token.expose(), "abc");
        assert_eq!(format!("{token} {token:?}"), "*** ***");
    }
}
