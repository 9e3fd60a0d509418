//! `on_table_error: park`: a table the target refuses alone is held back, with its error,
//! while the other tables go on (see docs/operations.md).

use ferry_core::{ErrorClass, TableId};
use ferry_meta::Collection;

use super::tables::{self, RuntimeState};
use super::{RunError, Runner};

impl Runner {
    /// The table to park for `err` under `on_table_error: park`: the target refused one
    /// source transaction alone, and it changed that one table.
    pub(super) fn parkable(&self, err: &RunError) -> Option<TableId> {
        if self.config.options.on_table_error != crate::config::TableErrorPolicy::Park
            || err.class() != ErrorClass::Definite
        {
            return None;
        }
        match err {
            RunError::Apply {
                transactions: 1,
                tables,
                ..
            } if tables.len() == 1 => Some(tables[0].clone()),
            _ => None,
        }
    }

    /// Holds `table` back with `error`, for the next attempt and the status.
    pub(super) fn park(&self, table: &TableId, error: &str) -> Result<(), ferry_meta::MetaError> {
        let key = self.config.key();
        let mut state: RuntimeState = self
            .meta
            .get(Collection::ChangefeedState, &key)?
            .unwrap_or_default();
        if !state.is_held(table) {
            state.held.push(tables::HeldTable {
                table: table.clone(),
                error: Some(error.to_string()),
            });
        }
        self.meta.put(Collection::ChangefeedState, &key, &state)
    }
}
