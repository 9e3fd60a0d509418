//! Which database a connection reaches, whatever the URI says.
//!
//! Two URIs name the same database when they reach the same cluster (its
//! `system_identifier`, fixed at `initdb` and kept by physical replicas) and the same
//! database in it. Comparing URI text would let `localhost` and `127.0.0.1`, a DNS alias
//! or a connection pooler through: a changefeed whose sink is its own source would create
//! `_ferry` in the source and replicate its tables into themselves in a loop.

use tokio_postgres::Client;

use crate::PgError;

pub use ferry_core::ServerIdentity;

/// The identity of the database `client` is connected to (any user may ask).
pub async fn server_identity(client: &Client) -> Result<ServerIdentity, PgError> {
    let row = client
        .query_one(
            "SELECT system_identifier::text, pg_catalog.current_database()::text
             FROM pg_catalog.pg_control_system()",
            &[],
        )
        .await
        .map_err(|e| PgError::new("read the server's system identifier", e))?;
    Ok(ServerIdentity {
        system_identifier: row.get(0),
        database: row.get(1),
    })
}

/// The refusal when a sink is its source, for errors and the API.
pub fn sink_is_source_message(identity: &ServerIdentity) -> String {
    format!(
        "the sink is the source itself ({identity}), reached through another address; a \
         changefeed into its own source would replicate its tables into themselves. Use \
         another database or server as the sink"
    )
}
