//! The webhook sink, `http(s)://host/path[?signing_secret=S]`: events are POSTed to the
//! endpoint as JSON arrays of Debezium events (see `ferry_events` and `docs/events.md`).
//!
//! ```text
//! send ──► buffer (a JSON array) ──► POST when full, and at every flush
//!                                     200–299: delivered │ 5xx, 408, 429, network: retried
//!                                                        │ other 4xx: the changefeed fails
//! ```
//!
//! # Durability
//! A batch is delivered when the endpoint answered every POST of it with a 2xx; only then
//! does [`crate::event_sink::Transport::flush`] return and the engine's checkpoint move.
//! At least once: a batch retried after a failure is POSTed again with the same event ids.
//! An endpoint has no place for snapshot chunk markers, so they live in the engine's
//! metadata store ([`ferry_core::ChunkLedger`]).
//!
//! # Signature
//! With `signing_secret` (masked like a password, never sent), every request carries
//! `X-Ferry-Signature: sha256=<hex HMAC-SHA256 of the body>`; the receiver recomputes it
//! to know the request is Ferry's and untouched.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::{
    ChunkLedgerHandle, ErrorClass, FinishedChunk, Sink, SinkConnector, SinkError, SinkUri,
    TargetPolicy, WEBHOOK_SECRET_PARAM,
};
use ferry_events::{Event, Origin};

use crate::event_sink::{EventSink, Transport};

/// Why 1000 events or 1 MiB: a request big enough to amortize its round trip, within
/// common receivers' body limits (nginx's default is 1 MiB; with `schemas=true` each event
/// carries its schema, several times its size); a larger batch goes in several requests,
/// and an event larger than the limit alone.
const MAX_EVENTS_PER_REQUEST: usize = 1000;
const MAX_BYTES_PER_REQUEST: usize = 1 << 20;

/// Why 30 s: a receiver that takes longer to answer is treated as down (and retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Retries of one request before the batch fails (transient: the engine retries it),
/// with the wait doubling from [`FIRST_BACKOFF`].
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// The header with the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Ferry-Signature";

/// Connects webhook sinks.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebhookConnector;

#[async_trait]
impl SinkConnector for WebhookConnector {
    async fn connect(
        &self,
        uri: &SinkUri,
        feed: &str,
        policy: TargetPolicy,
    ) -> Result<Box<dyn Sink>, SinkError> {
        let SinkUri::Webhook(uri) = uri else {
            return Err(SinkError::Unsupported {
                message: format!("the webhook connector got a {} sink", uri.masked()),
            });
        };
        let ledger = policy.chunk_ledger.ok_or_else(|| SinkError::Unsupported {
            message: "a webhook sink needs the engine's chunk ledger".into(),
        })?;
        let transport = WebhookTransport {
            client: client()?,
            endpoint: uri.webhook_endpoint(),
            key: uri
                .param(WEBHOOK_SECRET_PARAM)
                .map(|secret| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes())),
            body: Vec::new(),
            events: 0,
            ledger,
        };
        let origin = Origin {
            name: feed.to_string(),
            db: policy.source.map(|s| s.database).unwrap_or_default(),
        };
        Ok(Box::new(EventSink::new(
            transport,
            origin,
            uri.webhook_options(),
        )))
    }
}

/// An HTTP client trusting the system's CAs for `https://` endpoints.
fn client() -> Result<reqwest::Client, SinkError> {
    let definite = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| SinkError::Connect {
        what: what.into(),
        class: ErrorClass::Definite,
        source: e,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| definite("set up TLS", Box::new(e)))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // reqwest looks for a process-wide provider even for http://; ring is the only one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| definite("build the HTTP client", Box::new(e)))
}

/// POSTs one changefeed's events.
pub(crate) struct WebhookTransport {
    client: reqwest::Client,
    /// The URL requests go to (without Ferry's parameters).
    endpoint: String,
    key: Option<ring::hmac::Key>,
    /// The JSON array being built, without its closing `]`.
    body: Vec<u8>,
    /// Events in `body`.
    events: usize,
    ledger: ChunkLedgerHandle,
}

impl WebhookTransport {
    /// POSTs the buffered events, retrying what may pass later.
    async fn post(&mut self) -> Result<(), SinkError> {
        if self.events == 0 {
            return Ok(());
        }
        self.body.push(b']');
        let body = bytes::Bytes::from(std::mem::take(&mut self.body));
        self.events = 0;
        let signature = self.key.as_ref().map(|key| {
            let tag = ring::hmac::sign(key, &body);
            let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256={hex}")
        });
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let mut request = self
                .client
                .post(&self.endpoint)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(signature) = &signature {
                request = request.header(SIGNATURE_HEADER, signature);
            }
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let text: String = text.chars().take(500).collect();
                    let retryable = status.is_server_error()
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                    let message = format!("the webhook answered {status}: {text}");
                    if !retryable {
                        return Err(SinkError::Unsupported {
                            message: format!(
                                "{message} (a 4xx is not retried: fix the receiver or the \
                                 URI, then resume)"
                            ),
                        });
                    }
                    SinkError::Statement {
                        what: "POST events to the webhook".into(),
                        class: ErrorClass::Transient,
                        source: message.into(),
                    }
                }
                Err(e) => SinkError::Connect {
                    what: "POST events to the webhook".into(),
                    class: ErrorClass::Transient,
                    source: Box::new(e.without_url()),
                },
            };
            if attempt >= ATTEMPTS {
                return Err(failure);
            }
            tracing::debug!(attempt, error = %ferry_core::error_chain(&failure), "webhook request failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }
}

#[async_trait]
impl Transport for WebhookTransport {
    async fn send(&mut self, event: Event) -> Result<(), SinkError> {
        let json = event.json;
        if self.events > 0 && self.body.len() + json.len() + 2 > MAX_BYTES_PER_REQUEST {
            self.post().await?;
        }
        self.body.push(if self.events == 0 { b'[' } else { b',' });
        self.body.extend_from_slice(&json);
        self.events += 1;
        if self.events >= MAX_EVENTS_PER_REQUEST || self.body.len() >= MAX_BYTES_PER_REQUEST {
            self.post().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.post().await
    }

    /// What was POSTed stays with the receiver; a resent batch repeats it with the same
    /// ids.
    async fn discard(&mut self) {
        self.body.clear();
        self.events = 0;
    }

    async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        self.ledger.0.finished().map_err(ledger_error)
    }

    async fn record_chunk(&mut self, chunk: &FinishedChunk) -> Result<(), SinkError> {
        self.ledger.0.record(chunk).map_err(ledger_error)
    }

    async fn clear_chunks(&mut self) -> Result<(), SinkError> {
        self.ledger.0.clear().map_err(ledger_error)
    }
}

fn ledger_error(e: String) -> SinkError {
    SinkError::Statement {
        what: "keep snapshot chunk markers".into(),
        class: ErrorClass::Transient,
        source: e.into(),
    }
}
