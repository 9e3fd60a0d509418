//! How the applier follows what the stream tells about tables as tables: renames, drops,
//! and tables dropped and created again.

use std::sync::Arc;

use ferry_core::{Position, TableId, TableSchema};

use super::super::tables::TableNote;
use super::{Applier, Batch, Cursor, StreamEnd};
use crate::runner::RunError;

impl Applier {
    /// A table the stream read the drop of: recorded at once, so that a table found under
    /// its name at a later start is copied anew (see [`super::super::tables::created_again`]).
    pub(super) fn dropped(&mut self, table: TableId) -> Result<(), RunError> {
        if !self.selected(&table, &[]) {
            return Ok(());
        }
        (self.on_table)(TableNote::Dropped(&table))?;
        self.warn(format!(
            "table {table} was dropped on the source: its changes up to the drop were \
             applied, and its target table is kept"
        ));
        Ok(())
    }

    /// A table dropped and created again at `position`: copied again (the run ends and
    /// starts over), unless its copy was read after `position`.
    pub(super) async fn recreated(
        &mut self,
        table: TableId,
        position: Position,
        batch: &mut Batch,
        cursor: &Cursor,
    ) -> Result<Option<StreamEnd>, RunError> {
        let copied = self
            .skip_before
            .get(&table)
            .is_some_and(|s| s.covers(&position));
        if copied {
            // Its copy is younger: the drop read before it is settled.
            (self.on_table)(TableNote::Copied(&table))?;
        }
        if copied || !self.selected(&table, &[]) || self.held.contains(&table) {
            return Ok(None);
        }
        if !self.copies {
            self.abort(batch).await;
            return Err(RunError::RecreatedUncopied { table });
        }
        tracing::info!(table = %table, position = %position, "table dropped and created again on the source: copying it again");
        if cursor.in_transaction {
            // Replayed from the checkpoint after the copy.
            self.abort(batch).await;
        } else {
            self.commit_durable(batch).await?;
        }
        (self.on_table)(TableNote::Recreated(&table))?;
        Ok(Some(StreamEnd::Recreated))
    }

    /// Follows a table renamed on the source when the rules select its new name; stops
    /// when they selected the old name only; ignores a table they never selected. Returns
    /// whether the sink was told.
    pub(super) async fn renamed(
        &mut self,
        from: TableId,
        schema: Arc<TableSchema>,
        batch: &mut Batch,
    ) -> Result<bool, RunError> {
        let to = schema.id.clone();
        let partition_of = &schema.partition_of;
        match (
            self.selected(&from, partition_of),
            self.filter.selects(&to, partition_of),
        ) {
            (_, true) => {
                tracing::info!(from = %from, to = %to, "table renamed on the source");
                // Read in the stream's order: a drop of `to` read before is settled, one
                // read after stays recorded.
                (self.on_table)(TableNote::Taken(&to))?;
                self.excluded.remove(&to);
                self.replicated.remove(&from);
                self.replicated.insert(to.clone());
                self.sink.rename_table(&from, &schema).await?;
                if let Some(position) = self.skip_before.remove(&from) {
                    self.skip_before.insert(to.clone(), position);
                }
                // A held table stays held under its new name (its target table follows).
                if self.held.remove(&from) {
                    self.held.insert(to.clone());
                }
                batch.renamed.push((from, to));
                Ok(true)
            }
            (true, false) => Err(RunError::RenamedOut { from, to }),
            (false, false) => {
                self.excluded.insert(to);
                Ok(false)
            }
        }
    }

    /// Shows `message` in the status (once) and logs it.
    pub(super) fn warn(&self, message: String) {
        tracing::warn!(warning = %message, "source warning");
        self.status.update(|s| {
            if !s.warnings.contains(&message) {
                s.warnings.push(message);
            }
        });
    }
}
