//! The heartbeat: a logical message written into the source's WAL on an interval, so a
//! slot whose tables see no writes still has a recent position to confirm.
//!
//! A non-transactional message (`pg_logical_emit_message(false, …)`) is a WAL record of
//! its own. The walsender decodes past it; pgoutput sends messages only to sessions that
//! ask for them (`messages 'true'`, which Ferry does not), so the stream sees no event, but
//! the next keepalive carries a position past it, which the changefeed confirms once
//! everything before it is applied. That moves the slot's `confirmed_flush_lsn` and
//! `restart_lsn` on a database whose only traffic is unpublished (or in another database
//! of the cluster), as Debezium's heartbeat action does.

use ferry_core::Lsn;
use tokio_postgres::Client;

use crate::PgError;

/// The prefix of Ferry's heartbeat messages (visible to other logical decoding consumers
/// that ask for messages; they may ignore it).
pub const HEARTBEAT_PREFIX: &str = "ferry_heartbeat";

/// Writes one heartbeat message; returns its WAL position.
pub async fn emit_heartbeat(client: &Client) -> Result<Lsn, PgError> {
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_logical_emit_message(false, $1, ''::text)::text",
            &[&HEARTBEAT_PREFIX],
        )
        .await
        .map_err(|e| PgError::new("write a heartbeat message on the source", e))?;
    Ok(row.get::<_, String>(0).parse().unwrap_or(Lsn::ZERO))
}
