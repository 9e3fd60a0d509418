//! The webhook contender's endpoint: an HTTP server in the harness that reads every request
//! body, counts the events in it and answers 200, as fast as a receiver can.
//!
//! It runs on a thread of its own with a single-threaded runtime (the webhook sink sends one
//! request at a time, so one thread serves it), and stops when dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use tokio::sync::oneshot;

/// Counts one event: every event object has exactly one `"event_id":"` (its
/// `source.event_id`). The sink writes compact JSON, and inside a string value the quotes
/// would be escaped, so row data cannot fake it.
const EVENT_MARKER: &[u8] = br#""event_id":""#;

/// A running receiver at `http://127.0.0.1:PORT/hook`.
pub(crate) struct WebhookReceiver {
    port: u16,
    events: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookReceiver {
    /// Starts the receiver on a free loopback port.
    pub(crate) fn start() -> anyhow::Result<WebhookReceiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind the receiver")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the receiver's runtime")?;
        let events = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel::<()>();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            // The sink caps requests at 1 MiB unless one event is larger: take whatever comes.
            .layer(DefaultBodyLimit::disable())
            .with_state(events.clone());
        let thread = std::thread::Builder::new()
            .name("webhook-receiver".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("a bound std listener converts");
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .context("spawn the receiver's thread")?;
        Ok(WebhookReceiver {
            port,
            events,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The sink URI: the receiver's endpoint.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Events received so far.
    pub(crate) fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn receive(State(events): State<Arc<AtomicU64>>, body: Bytes) -> StatusCode {
    events.fetch_add(count_events(&body), Ordering::Relaxed);
    StatusCode::OK
}

fn count_events(body: &[u8]) -> u64 {
    memchr::memmem::find_iter(body, EVENT_MARKER).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_by_their_id_key() {
        let body = br#"[{"after":{"note":"\"event_id\":\"x"},"source":{"event_id":"1:0"}},{"source":{"event_id":"1:1"}}]"#;
        assert_eq!(count_events(body), 2);
        assert_eq!(count_events(b"[]"), 0);
    }
}
