//! Sequence sync: pgoutput does not carry sequences, so on request (and when a changefeed
//! finishes) every target sequence of the replicated tables is moved to at least the
//! source's value. The connectors do the work (`Connectors::sync_sequences`).

use ferry_core::Connectors;
use serde::Serialize;
use tracing::info;

use crate::config::ChangefeedConfig;

/// One sequence a sync looked at.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SequenceSync {
    /// The sequence, schema-qualified.
    pub sequence: String,
    /// The source's last value (`null`: never used there).
    pub source_value: Option<i64>,
    /// The target's last value before the sync (`null`: never used there).
    pub target_before: Option<i64>,
    /// Whether the target's sequence was set to the source's value.
    pub set: bool,
    /// Why it was not looked at (the target has no such sequence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// The answer of `POST /changefeeds/{id}/sequences/sync`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SequencesReport {
    /// Every sequence of the replicated tables.
    pub sequences: Vec<SequenceSync>,
}

/// Syncs the target sequences of `config`'s tables; an empty report for a sink without
/// sequences.
pub(crate) async fn sync(
    connectors: &dyn Connectors,
    config: &ChangefeedConfig,
) -> Result<SequencesReport, String> {
    let synced = connectors
        .sync_sequences(&config.source_uri, &config.sink_uri, &config.filter())
        .await?;
    let set = synced.iter().filter(|s| s.set).count();
    info!(changefeed = %config.key(), sequences = synced.len(), set, "target sequences synced");
    Ok(SequencesReport {
        sequences: synced
            .into_iter()
            .map(|s| SequenceSync {
                sequence: s.sequence,
                source_value: s.source_value,
                target_before: s.target_before,
                set: s.set,
                missing: s.missing,
            })
            .collect(),
    })
}
