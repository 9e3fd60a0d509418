//! The optional heartbeat (`options.heartbeat_interval_ms`): while a changefeed streams, a
//! task writes a logical message into the source's WAL on that interval, so the keepalives
//! that follow carry a newer position and the slot's confirmed position keeps up with a
//! database whose traffic is all unpublished. It lives as long as the stream; a failed
//! write is logged and tried again at the next tick (on a new connection), never an error
//! of the changefeed.

use std::time::Duration;

use ferry_core::ConnectionUri;
use tracing::debug;

/// Runs until aborted (the stream's end drops its handle).
pub(super) async fn run(uri: ConnectionUri, every: Duration, changefeed: String) {
    let mut client = None;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if client.is_none() {
            match ferry_postgres::connect::connect(&uri, "ferry-heartbeat").await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    debug!(changefeed = %changefeed, error = %e.chain(), "heartbeat connection failed");
                    continue;
                }
            }
        }
        let written = match &client {
            Some(c) => ferry_postgres::heartbeat::emit_heartbeat(c).await,
            None => continue,
        };
        if let Err(e) = written {
            debug!(changefeed = %changefeed, error = %e.chain(), "heartbeat failed");
            client = None;
        }
    }
}
