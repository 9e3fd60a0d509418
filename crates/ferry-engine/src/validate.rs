//! Checks before anything is stored. Against the source: passwords given by reference can
//! be read, the source is reachable, `wal_level = logical`, a user with `REPLICATION`,
//! tables that exist, and resume positions the slot can serve. Against the target: not the
//! source itself, no table owned by another changefeed, existing tables writable as they
//! are. Every check connects with a short timeout, only reads, and never touches a running
//! changefeed.

use ferry_core::{ConnectionUri, Lsn, SinkUri, TableFilter};
use ferry_postgres::eligibility::{self, SourceFacts};
use ferry_postgres::sink::TargetProblem;
use ferry_postgres::slot::{self, SlotNames};
use tokio_postgres::Client;

use crate::config::ChangefeedConfig;
use crate::registry::EngineError;

/// Reads `uri`'s password now when it is given by reference (`password_file`,
/// `password_env`), so a missing file or variable is refused before anything is stored
/// instead of failing the changefeed later. The value read is dropped at once.
pub(crate) fn check_password(uri: &ConnectionUri) -> Result<(), EngineError> {
    uri.password()
        .map(drop)
        .map_err(|e| EngineError::SecretUnavailable(ferry_core::error_chain(&e)))
}

/// [`check_password`] for the source and the sink of `config`.
pub(crate) fn check_passwords(config: &ChangefeedConfig) -> Result<(), EngineError> {
    check_password(&config.source_uri).map_err(|e| prefixed("source_uri", e))?;
    if let SinkUri::Postgres(uri) = &config.sink_uri {
        check_password(uri).map_err(|e| prefixed("sink_uri", e))?;
    }
    Ok(())
}

fn prefixed(field: &str, err: EngineError) -> EngineError {
    match err {
        EngineError::SecretUnavailable(m) => {
            EngineError::SecretUnavailable(format!("{field}: {m}"))
        }
        other => other,
    }
}

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

/// Checks the target of `config` (run by the changefeed with id `server_id` as owner)
/// against the source `source`: a sink that is the source database is refused, and so is
/// a table another changefeed owns, an existing table the source cannot be written into,
/// and (under `existing_target: fail`) a table holding rows. A target that cannot be reached
/// now is not an error: the same checks run when the changefeed first writes.
pub(crate) async fn check_target(
    config: &ChangefeedConfig,
    server_id: &str,
    source: &Client,
) -> Result<(), EngineError> {
    let SinkUri::Postgres(uri) = &config.sink_uri else {
        return Ok(());
    };
    let key = config.key();
    let sink = match ferry_postgres::connect::connect(uri, "ferry-check").await {
        Ok(client) => client,
        Err(e) => {
            tracing::info!(changefeed = %key, error = %e.chain(), "target unreachable: its checks run when the changefeed starts");
            return Ok(());
        }
    };
    // A database that hides its identity (a restricted managed service) cannot be
    // compared: the other checks still run.
    let source_id = ferry_postgres::identity::server_identity(source).await;
    let sink_id = ferry_postgres::identity::server_identity(&sink).await;
    match (source_id, sink_id) {
        (Ok(a), Ok(b)) if a == b => {
            return Err(EngineError::SinkIsSource(
                ferry_postgres::identity::sink_is_source_message(&b),
            ))
        }
        (Ok(_), Ok(_)) => {}
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(changefeed = %key, error = %e.chain(), "cannot compare the target with the source");
        }
    }
    ferry_postgres::catalog::prepare_session(source)
        .await
        .map_err(|e| EngineError::SourceUnusable(e.chain()))?;
    let selected = ferry_postgres::catalog::selected_tables(source, &config.tables)
        .await
        .map_err(|e| EngineError::SourceUnusable(e.chain()))?;
    let schemas: Vec<_> = selected.into_iter().map(|t| t.schema).collect();
    let found = ferry_postgres::sink::preflight(
        &sink,
        &key,
        server_id,
        &schemas,
        config.existing_target(),
        config.copies(),
    )
    .await;
    match found {
        Ok(None) => Ok(()),
        Ok(Some(TargetProblem::Owned(m))) => Err(EngineError::TargetTableOwned(m)),
        Ok(Some(TargetProblem::NotEmpty(m))) => Err(EngineError::TargetNotEmpty(m)),
        Ok(Some(TargetProblem::Conflict(m))) => Err(EngineError::TargetConflict(m)),
        Err(e) => {
            tracing::warn!(changefeed = %key, error = %ferry_core::error_chain(&e), "cannot check the target tables: checked when the changefeed starts");
            Ok(())
        }
    }
}
