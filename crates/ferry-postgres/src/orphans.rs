//! Ferry's objects on a source as the source lists them: every replication slot and
//! publication whose name starts with `ferry_`, so the engine can tell which ones no
//! changefeed owns any more (left behind by a changefeed deleted while its source was
//! unreachable, by another server, or by hand).

use tokio_postgres::Client;

use crate::PgError;

/// A `ferry_*` replication slot of the source's cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FerrySlot {
    /// The slot's name.
    pub name: String,
    /// The database it decodes (slots belong to the cluster, each to one database).
    pub database: Option<String>,
    /// Whether a session streams from it now.
    pub active: bool,
}

/// The `ferry_*` objects of a source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FerryObjects {
    /// Every `ferry_*` logical slot of the cluster.
    pub slots: Vec<FerrySlot>,
    /// Every `ferry_*` publication of the connected database.
    pub publications: Vec<String>,
}

/// Lists the `ferry_*` slots of the cluster and publications of the connected database.
pub async fn ferry_objects(client: &Client) -> Result<FerryObjects, PgError> {
    let slots = client
        .query(
            "SELECT slot_name::text, database::text, active
             FROM pg_catalog.pg_replication_slots
             WHERE slot_type = 'logical' AND slot_name LIKE 'ferry\\_%'
             ORDER BY slot_name",
            &[],
        )
        .await
        .map_err(|e| PgError::new("list replication slots", e))?
        .iter()
        .map(|r| FerrySlot {
            name: r.get(0),
            database: r.get(1),
            active: r.get(2),
        })
        .collect();
    let publications = client
        .query(
            "SELECT pubname::text FROM pg_catalog.pg_publication
             WHERE pubname LIKE 'ferry\\_%' ORDER BY pubname",
            &[],
        )
        .await
        .map_err(|e| PgError::new("list publications", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(FerryObjects {
        slots,
        publications,
    })
}
