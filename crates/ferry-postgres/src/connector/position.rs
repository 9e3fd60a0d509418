//! The source's current WAL position, read on one kept session per source.
//!
//! `/synced` asks for the source's position on every request, and scripts and monitoring
//! poll it. A new PostgreSQL connection forks a backend and loads its caches:
//! about 5 ms of the source's CPU each (measured on PostgreSQL 15 with trust
//! authentication; password and TLS handshakes add to it), so a client polling `/synced`
//! every 20 ms during a copy took ~0.27 of a core from the source. The session is kept
//! instead, one per source URI, and shared by every request (queries on one client are
//! pipelined).
//!
//! Nothing of Ferry's stays open on a source nobody asks about: a session unused for
//! [`IDLE`] is closed, so is one whose query failed or went unanswered for
//! [`QUERY_TIMEOUT`] (the next request connects again), and
//! releasing a changefeed closes its source's session at once (`DROP DATABASE` on the
//! source fails while any session is connected to the database).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use ferry_core::{ConnectionUri, ErrorClass, Lsn};
use tokio_postgres::Client;

use crate::PgError;

/// How long a kept session may stay unused before it is closed.
const IDLE: Duration = Duration::from_secs(30);

/// A kept session and when a request last used it.
struct Kept {
    client: Arc<Client>,
    last_used: Instant,
}

/// The kept sessions, by the source's full URI (only ever compared, never shown).
static SESSIONS: LazyLock<Mutex<HashMap<String, Kept>>> = LazyLock::new(Default::default);

/// How long the position query may take on a session before the request fails: a silent
/// network (a cut behind a proxy) would otherwise hold a kept session's query, and every
/// request after it, forever.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The source's current WAL position, on its kept session. A kept session whose query
/// fails (the source restarted since) is replaced by a new one for this request; one that
/// does not answer is dropped and the request fails.
pub(super) async fn current_wal_lsn(uri: &ConnectionUri) -> Result<Lsn, PgError> {
    let key = uri.expose().to_owned();
    let kept = {
        let mut sessions = SESSIONS.lock().expect("position sessions lock");
        sessions.get_mut(&key).and_then(|kept| {
            kept.last_used = Instant::now();
            (!kept.client.is_closed()).then(|| kept.client.clone())
        })
    };
    if let Some(client) = kept {
        match read(&client).await {
            Ok(lsn) => return Ok(lsn),
            Err((silent, e)) => {
                forget_if(&key, &client);
                if silent {
                    return Err(e);
                }
            }
        }
    }
    let client = Arc::new(super::connect(uri, "ferry-position").await?);
    keep(key.clone(), &client);
    read(&client).await.map_err(|(_, e)| {
        forget_if(&key, &client);
        e
    })
}

/// The position query on `client`, bounded by [`QUERY_TIMEOUT`]; an error says whether the
/// session was silent (`true`) or answered with an error.
async fn read(client: &Client) -> Result<Lsn, (bool, PgError)> {
    match tokio::time::timeout(QUERY_TIMEOUT, super::source::current_wal_lsn(client)).await {
        Ok(read) => read.map_err(|e| (false, e)),
        Err(_) => Err((
            true,
            PgError::other(
                "read the current WAL position",
                ErrorClass::Transient,
                format!("no answer within {QUERY_TIMEOUT:?}"),
            ),
        )),
    }
}

/// Closes the kept session of `uri`, if there is one.
pub(super) fn forget(uri: &ConnectionUri) {
    let removed = SESSIONS
        .lock()
        .expect("position sessions lock")
        .remove(uri.expose());
    drop(removed);
}

/// Keeps `client` for `key` and closes it once it has been unused for [`IDLE`].
fn keep(key: String, client: &Arc<Client>) {
    let watched = Arc::downgrade(client);
    let replaced = SESSIONS.lock().expect("position sessions lock").insert(
        key.clone(),
        Kept {
            client: client.clone(),
            last_used: Instant::now(),
        },
    );
    drop(replaced);
    tokio::spawn(close_when_idle(key, watched));
}

/// Waits until the session `watched` of `key` has been unused for [`IDLE`], then closes it
/// (the connection ends once the last request holding it is done). Ends early when the
/// session was replaced or forgotten.
async fn close_when_idle(key: String, watched: Weak<Client>) {
    let mut wait = IDLE;
    loop {
        tokio::time::sleep(wait).await;
        let mut sessions = SESSIONS.lock().expect("position sessions lock");
        let Some(kept) = sessions.get(&key) else {
            return;
        };
        if !std::ptr::eq(Arc::as_ptr(&kept.client), watched.as_ptr()) {
            return;
        }
        let unused = kept.last_used.elapsed();
        if unused >= IDLE {
            sessions.remove(&key);
            return;
        }
        wait = IDLE - unused;
    }
}

/// Drops the kept session of `key` if it is still `client` (a failed one is not reused).
fn forget_if(key: &str, client: &Arc<Client>) {
    let mut sessions = SESSIONS.lock().expect("position sessions lock");
    if sessions
        .get(key)
        .is_some_and(|kept| Arc::ptr_eq(&kept.client, client))
    {
        sessions.remove(key);
    }
}
