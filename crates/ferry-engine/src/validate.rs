//! Checks against the source before anything is stored: reachable, `wal_level = logical`,
//! a user with `REPLICATION`, tables that exist, and resume positions the slot can serve.
//! Every check connects with a short timeout and never touches a running changefeed.

use ferry_core::{ConnectionUri, Lsn, TableFilter};
use ferry_postgres::eligibility::{self, SourceFacts};
use ferry_postgres::slot::{self, SlotNames};
use tokio_postgres::Client;

use crate::registry::EngineError;

/// Connects to `uri` for a check.
pub(crate) async fn connect(uri: &ConnectionUri) -> Result<Client, EngineError> {
    ferry_postgres::connect::connect(uri, "ferry-check")
        .await
        .map_err(|e| EngineError::SourceUnusable(e.chain()))
}

/// Connects to the source and checks it can do logical replication.
pub(crate) async fn check_source(
    uri: &ConnectionUri,
) -> Result<(Client, SourceFacts), EngineError> {
    let client = connect(uri).await?;
    let facts = eligibility::source_facts(&client)
        .await
        .map_err(|e| EngineError::SourceUnusable(e.chain()))?;
    if let Some(problem) = facts.problems().into_iter().next() {
        return Err(EngineError::SourceUnusable(problem));
    }
    Ok((client, facts))
}

/// Checks that every rule naming one exact table names an existing table.
pub(crate) async fn check_tables(client: &Client, filter: &TableFilter) -> Result<(), EngineError> {
    let tables = eligibility::table_facts(client)
        .await
        .map_err(|e| EngineError::SourceUnusable(e.chain()))?;
    let missing = eligibility::missing_tables(filter, &tables);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(EngineError::TableNotFound(missing.join(", ")))
    }
}

/// Checks that the changefeed's slot can stream from `position`: at or after what the slot
/// has confirmed (older WAL may be gone) and not beyond the source's current WAL.
pub(crate) async fn check_resume_position(
    uri: &ConnectionUri,
    key: &str,
    position: Lsn,
) -> Result<(), EngineError> {
    let client = connect(uri).await?;
    let names = SlotNames::for_changefeed(key);
    let slots = slot::slot_positions(&client, std::slice::from_ref(&names.slot))
        .await
        .map_err(|e| EngineError::SourceUnusable(e.chain()))?;
    let Some((_, slot)) = slots.into_iter().next() else {
        return Err(EngineError::InvalidPosition(format!(
            "the changefeed has no replication slot {} on the source, so it cannot start from \
             {position}",
            names.slot
        )));
    };
    let oldest = slot.confirmed_flush.max(slot.restart_lsn);
    if position < oldest {
        return Err(EngineError::InvalidPosition(format!(
            "position {position} is older than what the slot can serve (confirmed {}, \
             restart {}); use a position at or after {oldest}",
            slot.confirmed_flush, slot.restart_lsn
        )));
    }
    if position > slot.current_wal {
        return Err(EngineError::InvalidPosition(format!(
            "position {position} is beyond the source's current WAL position {}",
            slot.current_wal
        )));
    }
    Ok(())
}
