//! What a start checks of the source's tables before it streams: the stream still there,
//! planned tables renamed out of the rules or swapped, tables marked divergent.

use ferry_core::{Source, SourceTable, StreamState, TableId};

use super::tables::{self, RuntimeState};
use super::{RunError, Runner};

impl Runner {
    /// Fails (definite) when the stream is missing or lost on the source: streaming on
    /// from another position would skip changes silently.
    pub(super) async fn ensure_stream(&self, source: &mut dyn Source) -> Result<(), RunError> {
        let (description, confirmed) = match source.stream_state().await? {
            StreamState::Usable => return Ok(()),
            StreamState::Lost {
                description,
                confirmed,
            } => (description, confirmed),
            StreamState::Absent { description } => (description, None),
        };
        // The status's checkpoint, else what the slot had confirmed when it was lost.
        let checkpoint = self
            .status
            .checkpoint()
            .or(confirmed)
            .map_or_else(|| "unknown".to_string(), |p| p.to_string());
        Err(RunError::SlotLost {
            description,
            checkpoint,
        })
    }

    /// Fails when a planned table (`gone`: source id and target name) is no longer selected
    /// because it was renamed to a name the rules exclude (see [`RunError::RenamedOut`]).
    pub(super) async fn check_renamed_out(
        &self,
        source: &mut dyn Source,
        gone: &[(u32, TableId)],
    ) -> Result<(), RunError> {
        if gone.is_empty() {
            return Ok(());
        }
        let ids: Vec<u32> = gone.iter().map(|(id, _)| *id).collect();
        let now = source.table_names(&ids).await?;
        for (id, from) in gone {
            match now.get(id) {
                Some(to) if to != from && self.config.filter().matches(from) => {
                    return Err(RunError::RenamedOut {
                        from: from.clone(),
                        to: to.clone(),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Fails when a swap made while the changefeed was not streaming left a selected table
    /// under the name the target keeps for another (see [`RunError::Swapped`]), unless both
    /// are replicated and the stream follows renames in order (`renames_in_order`, see
    /// [`ferry_core::Source::renames_in_order`]): it renames the old table's target table
    /// before the new one takes its name. A table the changefeed did not replicate would be
    /// mapped to the old table's target name: never followed.
    pub(super) fn check_swapped(
        state: &RuntimeState,
        selected: &[(u32, TableId, u64)],
        renames_in_order: bool,
    ) -> Result<(), RunError> {
        let Some(swap) = tables::find_swaps(state, selected)
            .into_iter()
            .find(|s| !renames_in_order || s.taken_from.is_none())
        else {
            return Ok(());
        };
        let (other, exclude) = match &swap.taken_from {
            Some(from) => (
                format!("table {from}"),
                format!("{}, {} and {from}", swap.table, swap.renamed_to),
            ),
            None => (
                "another table".to_string(),
                format!("{} and {}", swap.table, swap.renamed_to),
            ),
        };
        Err(RunError::Swapped {
            names: Box::new((swap.table, swap.renamed_to)),
            other: other.into(),
            exclude: exclude.into(),
        })
    }

    /// Marks in the status the tables whose updates and deletes were lost while they were
    /// streamed insert-only, with what fixes them.
    pub(super) fn note_divergent(&self, divergent: &[TableId]) {
        let list: Vec<String> = divergent.iter().map(ToString::to_string).collect();
        self.status.update(|s| {
            s.divergent_tables = list.clone();
            if !list.is_empty() {
                s.warnings.push(format!(
                    "tables marked divergent: {}. They replicated inserts only (no key, \
                     REPLICA IDENTITY DEFAULT) until a key or REPLICA IDENTITY FULL was set, so \
                     the updates and deletes made on the source before are missing on the \
                     target, and later changes may not find their rows. Setting REPLICA \
                     IDENTITY FULL does not repair that: re-copy the tables (delete the \
                     changefeed and create it again with options.existing_target truncate, \
                     which empties the target tables and copies them anew)",
                    list.join(", ")
                ));
            }
        });
    }
}

/// Each selected table's source id, name and row estimate.
pub(super) fn source_ids(selected: &[SourceTable]) -> Vec<(u32, TableId, u64)> {
    selected
        .iter()
        .map(|t| {
            (
                t.source_id,
                t.schema.id.clone(),
                t.estimated_rows.unwrap_or(0),
            )
        })
        .collect()
}
