//! Noticing a dead replication session, and taking the slot back from one.
//!
//! # A silent stream
//! A logical replication stream is often silent: the walsender sends nothing while no
//! published change commits, and TCP keepalives do not help when the peer's kernel (or a
//! proxy, a NAT, a load balancer) still acknowledges packets that never reach PostgreSQL.
//! So silence alone says nothing, and [`PgStream`](crate::source::PgStream) asks: once the
//! stream has been silent for the replication timeout, it [`probe`]s over its catalog
//! connection (a normal session to the same source), within the same timeout, when the
//! walsender holding the slot last heard from Ferry (`pg_stat_replication.reply_time`; Ferry
//! reports its position at least every few seconds). No answer, no walsender, or a walsender
//! that has not heard Ferry for the timeout: the session is dead, the stream ends with a
//! transient error, and the changefeed reconnects.
//!
//! # The slot is still held
//! After a cut, the source's walsender of the old session lives on until the source's own
//! `wal_sender_timeout` ends it (default 60 s), and until then `START_REPLICATION` fails with
//! "replication slot … is active for PID …". The slot is this changefeed's own (its name
//! derives from the changefeed's key), so [`release_stale_slot`] ends that walsender with
//! `pg_terminate_backend` when it is a Ferry session (`application_name`) that has not heard
//! from its client for the replication timeout: a live Ferry session reports far more often,
//! so such a walsender serves a session that is gone. Any other holder (a live session, a
//! different client) is left alone and the attempt is retried later, as a transient error.

use std::time::Duration;

use tokio_postgres::Client;

use crate::PgError;

/// A walsender that has not heard from its client for this long (or the replication timeout,
/// if longer) serves a dead session: a live one reports every
/// [`FEEDBACK_INTERVAL`](crate::slot::FEEDBACK_INTERVAL).
const STALE_REPLY_MIN: Duration = Duration::from_secs(3);

/// How long without a report from Ferry makes a walsender's session dead.
pub fn stale_after(timeout: Duration) -> Duration {
    timeout.max(STALE_REPLY_MIN)
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    /// The walsender heard from Ferry this many seconds ago.
    Alive { reply_age_seconds: f64 },
    /// No walsender holds the slot (the session ended on the source's side).
    NoWalsender,
    /// The slot is gone.
    NoSlot,
}

/// The slot's walsender as the source sees it, over `catalog`, within `timeout`.
/// Errors when the source does not answer in time.
pub async fn probe(catalog: &Client, slot: &str, timeout: Duration) -> Result<Probe, PgError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&slot];
    let query = catalog.query_opt(
        "SELECT s.active_pid,
                EXTRACT(EPOCH FROM (pg_catalog.now()
                    - COALESCE(r.reply_time, r.backend_start)))::float8
         FROM pg_catalog.pg_replication_slots s
         LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid
         WHERE s.slot_name = $1",
        &params,
    );
    let row = tokio::time::timeout(timeout, query)
        .await
        .map_err(|_| silent_source(timeout))?
        .map_err(|e| PgError::new(format!("probe the walsender of slot {slot}"), e))?;
    Ok(match row {
        None => Probe::NoSlot,
        Some(row) => match row.get::<_, Option<i32>>(0) {
            None => Probe::NoWalsender,
            Some(_) => Probe::Alive {
                reply_age_seconds: row.get::<_, Option<f64>>(1).unwrap_or(0.0),
            },
        },
    })
}

/// The error of a source that did not answer for `timeout`.
pub fn silent_source(timeout: Duration) -> PgError {
    PgError::other(
        format!(
            "the source did not answer for {} s (replication_timeout): the network to it may be \
             cut; reconnecting",
            timeout.as_secs_f64()
        ),
        ferry_core::ErrorClass::Transient,
        "timed out",
    )
}

/// Whether a replication error says the slot is held by another session (SQLSTATE 55006).
pub fn is_slot_active_error(text: &str) -> bool {
    text.contains("is active for PID")
}

/// Ends the walsender holding `slot` when it is a Ferry session that has not heard from its
/// client for [`stale_after`] the replication `timeout` (see the module doc). Returns its PID when it ended one.
pub async fn release_stale_slot(
    catalog: &Client,
    slot: &str,
    application_name: &str,
    timeout: Duration,
) -> Result<Option<i32>, PgError> {
    let stale_after = stale_after(timeout);
    let seconds = stale_after.as_secs_f64();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&slot, &application_name, &seconds];
    let query = catalog.query_opt(
        "SELECT s.active_pid, pg_catalog.pg_terminate_backend(s.active_pid)
         FROM pg_catalog.pg_replication_slots s
         JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid
         WHERE s.slot_name = $1 AND r.application_name = $2
           AND COALESCE(r.reply_time, r.backend_start) 
               < pg_catalog.now() - make_interval(secs => $3)",
        &params,
    );
    let row = tokio::time::timeout(timeout, query)
        .await
        .map_err(|_| silent_source(timeout))?
        .map_err(|e| PgError::new(format!("end the stale walsender of slot {slot}"), e))?;
    Ok(row.and_then(|r| r.get::<_, Option<i32>>(0)))
}

/// What the source says of a `CREATE_REPLICATION_SLOT` Ferry is waiting on.
#[derive(Clone, Debug, PartialEq)]
pub enum SlotCreation {
    /// A walsender of Ferry's still runs the command (waiting for running transactions).
    Running,
    /// The walsender finished it: its answer was lost on the way.
    Finished,
    /// No walsender of Ferry's has run it: the command never arrived.
    NotSeen,
    /// The source answered the probe with an error (too many connections, a refused
    /// login): it is alive, and says nothing of the walsender.
    Unknown,
}

impl std::fmt::Display for SlotCreation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotCreation::Running => "still creates it",
            SlotCreation::Finished => "had finished creating it",
            SlotCreation::NotSeen => "never saw the command",
            SlotCreation::Unknown => "did not say",
        })
    }
}

/// Asks the source, over a new session to `uri` that must answer within `timeout`, whether
/// a walsender with `application_name` runs `CREATE_REPLICATION_SLOT` for `slot`
/// (`pg_stat_activity` shows a walsender's replication command and whether it is still
/// active). Errors when the source does not answer in time, or cannot be reached.
pub async fn probe_slot_creation(
    uri: &ferry_core::ConnectionUri,
    slot: &str,
    application_name: &str,
    timeout: Duration,
) -> Result<SlotCreation, PgError> {
    let probe = async {
        let client = crate::connect::connect(uri, "ferry-probe").await?;
        let command = format!(
            "CREATE_REPLICATION_SLOT {}%",
            ferry_core::quote_ident(slot)
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&application_name, &command];
        client
            .query_opt(
                "SELECT bool_or(state = 'active')
                 FROM pg_catalog.pg_stat_activity
                 WHERE backend_type = 'walsender' AND application_name = $1
                   AND query LIKE $2",
                &params,
            )
            .await
            .map_err(|e| PgError::new(format!("probe the creation of slot {slot}"), e))
    };
    let row = match tokio::time::timeout(timeout, probe).await {
        Err(_) => return Err(silent_source(timeout)),
        Ok(Err(e)) if answered(&e) => return Ok(SlotCreation::Unknown),
        Ok(result) => result?,
    };
    Ok(match row.and_then(|r| r.get::<_, Option<bool>>(0)) {
        Some(true) => SlotCreation::Running,
        Some(false) => SlotCreation::Finished,
        None => SlotCreation::NotSeen,
    })
}

/// Whether the source itself answered with this error (a server error, not a lost or
/// refused connection).
fn answered(error: &PgError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.to_string().contains("SQLSTATE")
            || e.downcast_ref::<tokio_postgres::Error>()
                .is_some_and(|e| e.as_db_error().is_some())
        {
            return true;
        }
        source = e.source();
    }
    false
}
