//! Which tables a changefeed replicates, and how far each one's copy is.
//!
//! The first snapshot plans every selected table ([`RuntimeState::plan`]). Afterwards, each
//! time the changefeed starts streaming it compares the filter's selection with what it
//! knows: a table that is new (added by an update of `tables`, or created on the source
//! since) is *added* — copied alone, in one chunk, from a fresh snapshot at a later position
//! L, while the stream skips that table's changes committed before L; a table no longer
//! selected is dropped from the publications (its target data stays).
//!
//! A table can be dropped and added again: its old copy's markers in the target are older
//! than the position recorded when it was added again ([`AddedTable::since`]), so they are
//! not mistaken for the new copy.

use std::collections::{BTreeMap, HashMap, HashSet};

use ferry_core::{ChunkSpec, FinishedChunk, Position, TableId, TablePlan};
use serde::{Deserialize, Serialize};

use crate::status::{Phase, TableProgress, TableState};

/// What a restart needs to know, persisted in the metadata store.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RuntimeState {
    pub(crate) phase: Option<Phase>,
    /// The first snapshot's plan.
    pub(crate) plan: Vec<TablePlan>,
    /// Tables added after the first snapshot.
    #[serde(default)]
    pub(crate) added: Vec<AddedTable>,
    /// Tables streamed insert-only (no key, REPLICA IDENTITY DEFAULT) that replicate every
    /// operation now: their updates and deletes of before are missing on the target.
    #[serde(default)]
    pub(crate) divergent: Vec<TableId>,
    /// The source's id (OID) of each replicated table, with the name its target table has:
    /// a table renamed on the source keeps its id, so a new name under a known id is a
    /// rename to follow, not a new table.
    #[serde(default)]
    pub(crate) source_ids: BTreeMap<u32, TableId>,
    /// Tables an operator asked to copy again (`resync`): at the next start each becomes
    /// an added table, copied whole from a fresh snapshot.
    #[serde(default)]
    pub(crate) resync: Vec<TableId>,
    /// Tables whose changes are not applied: paused by an operator, or parked after the
    /// target refused them (`on_table_error: park`). Resuming one copies it again.
    #[serde(default)]
    pub(crate) held: Vec<HeldTable>,
    /// Planned tables found dropped on the source at a start, kept until the checkpoint
    /// passes the position the drop was seen at: a source whose stream describes only the
    /// tables it is given (a binlog) still reads their changes made before the drop.
    #[serde(default)]
    pub(crate) dropped: Vec<DroppedTable>,
    /// Tables to re-sync because the source dropped and created them again: the status
    /// says so when their copy starts.
    #[serde(default)]
    pub(crate) recreated: Vec<TableId>,
    /// Replicated tables the stream read the drop of (recorded before the checkpoint
    /// passes it): a table found under one of these names at the next start was created
    /// again after the drop, and its target table holds the dropped one's rows.
    #[serde(default)]
    pub(crate) stream_dropped: Vec<TableId>,
}

/// What the stream tells about a table that the changefeed's state must keep at once.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TableNote<'a> {
    /// Dropped and created again: to copy again at the next start.
    Recreated(&'a TableId),
    /// Dropped (the stream read the drop).
    Dropped(&'a TableId),
    /// Created again before the position its copy was read at: nothing to do.
    Copied(&'a TableId),
    /// A table followed by a rename took the name: not one created after a drop.
    Taken(&'a TableId),
}

/// Records `note` in `state`.
pub(crate) fn note(state: &mut RuntimeState, note: TableNote<'_>) {
    match note {
        TableNote::Recreated(table) => {
            state.stream_dropped.retain(|t| t != table);
            if !state.resync.contains(table) {
                state.resync.push(table.clone());
                state.recreated.push(table.clone());
            }
        }
        TableNote::Copied(table) | TableNote::Taken(table) => {
            state.stream_dropped.retain(|t| t != table)
        }
        TableNote::Dropped(table) => {
            if !state.stream_dropped.contains(table) {
                state.stream_dropped.push(table.clone());
            }
        }
    }
}

/// Planned tables the stream read the drop of before this start and that a selected table
/// (`(source id, name, rows)`) has the name of again: created again after the drop, while
/// the changefeed was paused, stopped or behind. Not a table known under another planned
/// name (renamed to it: the stream follows that rename), and not a held table (resuming it
/// copies it). Forgets the drops read (a table still gone is one the selection no longer
/// has, sorted by [`sort_gone`]).
pub(crate) fn created_again(
    state: &mut RuntimeState,
    selected: &[(u32, TableId, u64)],
) -> Vec<TableId> {
    let new_under = |table: &TableId| {
        selected.iter().any(|(id, name, _)| {
            name == table
                && state
                    .source_ids
                    .get(id)
                    .is_none_or(|known| known == name || !planned(state, known))
        })
    };
    let read = state.stream_dropped.clone();
    let again = read
        .into_iter()
        .filter(|t| planned(state, t) && !state.is_held(t) && new_under(t))
        .collect();
    state.stream_dropped.clear();
    again
}

/// A table dropped on the source whose last changes may still be unread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DroppedTable {
    /// Its source id.
    pub(crate) id: u32,
    /// Its target name.
    pub(crate) table: TableId,
    /// The source's position when the drop was seen: the drop is before it.
    pub(crate) until: Position,
}

/// A table whose changes are held back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeldTable {
    pub(crate) table: TableId,
    /// Why the target refused it (parked); `None` when an operator paused it.
    #[serde(default)]
    pub(crate) error: Option<String>,
}

impl RuntimeState {
    /// Whether `table`'s changes are held back.
    pub(crate) fn is_held(&self, table: &TableId) -> bool {
        self.held.iter().any(|h| &h.table == table)
    }
}

/// A table added after the first snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AddedTable {
    /// Its copy plan: always one chunk.
    pub(crate) plan: TablePlan,
    /// The source's position when it was added; its copy is read after this (stored as a
    /// bare PostgreSQL LSN by earlier versions, which still reads).
    pub(crate) since: Position,
}

/// Tables that changed in a [`reconcile`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reconciled {
    pub(crate) added: Vec<TableId>,
    pub(crate) removed: Vec<TableId>,
}

impl Reconciled {
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// A plan copying `table` in one unbounded chunk.
pub(crate) fn single_chunk_plan(table: TableId, estimated_rows: u64) -> TablePlan {
    TablePlan {
        table,
        key_column: None,
        chunks: vec![ChunkSpec::whole()],
        estimated_rows,
    }
}

/// Brings `state` in line with `selected` (tables with their row estimates): new tables
/// become added tables at `since`, tables no longer selected are forgotten.
pub(crate) fn reconcile(
    state: &mut RuntimeState,
    selected: &[(TableId, u64)],
    since: &Position,
) -> Reconciled {
    let wanted: HashSet<&TableId> = selected.iter().map(|(t, _)| t).collect();
    let mut out = Reconciled::default();
    state.plan.retain(|p| {
        let keep = wanted.contains(&p.table);
        if !keep {
            out.removed.push(p.table.clone());
        }
        keep
    });
    state.added.retain(|a| {
        let keep = wanted.contains(&a.plan.table);
        if !keep {
            out.removed.push(a.plan.table.clone());
        }
        keep
    });
    for (table, estimated_rows) in selected {
        let known = state.plan.iter().any(|p| &p.table == table)
            || state.added.iter().any(|a| &a.plan.table == table);
        if !known {
            state.added.push(AddedTable {
                plan: single_chunk_plan(table.clone(), *estimated_rows),
                since: since.clone(),
            });
            out.added.push(table.clone());
        }
    }
    out
}

/// Every planned table (first snapshot, then added).
pub(crate) fn planned_tables(state: &RuntimeState) -> Vec<TableId> {
    state
        .plan
        .iter()
        .map(|p| p.table.clone())
        .chain(state.added.iter().map(|a| a.plan.table.clone()))
        .collect()
}

/// Turns the tables to re-sync into tables to add: forgotten here, [`reconcile`] adds
/// them again at its position (their earlier copy's markers are older than it).
pub(crate) fn take_resync(state: &mut RuntimeState) -> Vec<TableId> {
    let tables = std::mem::take(&mut state.resync);
    state.plan.retain(|p| !tables.contains(&p.table));
    state.added.retain(|a| !tables.contains(&a.plan.table));
    tables
}

/// Whether `table` is planned (first snapshot or added).
pub(crate) fn planned(state: &RuntimeState, table: &TableId) -> bool {
    state.plan.iter().any(|p| &p.table == table)
        || state.added.iter().any(|a| &a.plan.table == table)
}

/// The selection (`(source id, name, estimated rows)`) as [`reconcile`] should see it: a
/// planned table renamed on the source keeps its planned (target) name until the stream
/// reaches the rename and the target follows it. Records every selected table's id.
pub(crate) fn track_renames(
    state: &mut RuntimeState,
    selected: &[(u32, TableId, u64)],
) -> Vec<(TableId, u64)> {
    let mut ids = BTreeMap::new();
    let wanted = selected
        .iter()
        .map(|(oid, name, rows)| {
            let name = match state.source_ids.get(oid) {
                Some(known) if known != name && planned(state, known) => known.clone(),
                _ => name.clone(),
            };
            ids.insert(*oid, name.clone());
            (name, *rows)
        })
        .collect();
    state.source_ids = ids;
    wanted
}

/// A swap made while the changefeed was not streaming: the planned table kept on the
/// target as `table` was renamed to `renamed_to`, and another selected table took the
/// name `table`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Swap {
    pub(crate) table: TableId,
    pub(crate) renamed_to: TableId,
    /// The target name of the table that took `table`; `None` when it was not replicated.
    pub(crate) taken_from: Option<TableId>,
}

/// The swaps in `selected` (`(source id, name, estimated rows)`), found before
/// [`track_renames`] records their ids: a selected table named as the target table of
/// another planned id that is selected under a new name. Until the stream reaches that
/// rename, the target name belongs to the renamed table, so mapping the other id to it
/// would write two source tables into one target table.
pub(crate) fn find_swaps(state: &RuntimeState, selected: &[(u32, TableId, u64)]) -> Vec<Swap> {
    selected
        .iter()
        .filter_map(|(id, name, _)| {
            let (other, _) = state
                .source_ids
                .iter()
                .find(|(other, kept)| *other != id && *kept == name && planned(state, kept))?;
            let (_, renamed_to, _) = selected
                .iter()
                .find(|(o, now, _)| o == other && now != name)?;
            Some(Swap {
                table: name.clone(),
                renamed_to: renamed_to.clone(),
                taken_from: state
                    .source_ids
                    .get(id)
                    .filter(|known| *known != name && planned(state, known))
                    .cloned(),
            })
        })
        .collect()
}

/// Planned tables whose source id is not among `selected` ids: dropped, or renamed to a
/// name the rules exclude.
pub(crate) fn unselected_ids(state: &RuntimeState, selected: &[u32]) -> Vec<(u32, TableId)> {
    state
        .source_ids
        .iter()
        .filter(|(oid, name)| !selected.contains(oid) && planned(state, name))
        .map(|(oid, name)| (*oid, name.clone()))
        .collect()
}

/// Sorts the planned tables whose source id vanished (`gone`): one whose name no selected
/// table has was dropped on the source, remembered in `state.dropped` until the stream is
/// past `now`. One whose name a selected table has under a new id was dropped and created
/// again when `ids_identify_tables` (returned, to copy again: its target table holds the
/// old table's rows); else it may be the same table rebuilt, and the stream reports
/// re-created tables ([`ferry_core::SourceEvent::Recreated`]).
pub(crate) fn sort_gone(
    state: &mut RuntimeState,
    gone: &[(u32, TableId)],
    selected: &[(u32, TableId, u64)],
    now: &Position,
    ids_identify_tables: bool,
) -> Vec<TableId> {
    let mut recreated = Vec::new();
    for (id, table) in gone {
        if selected.iter().any(|(_, name, _)| name == table) {
            if ids_identify_tables && !state.resync.contains(table) {
                state.resync.push(table.clone());
                recreated.push(table.clone());
            }
        } else if !state.dropped.iter().any(|d| d.id == *id) {
            state.dropped.push(DroppedTable {
                id: *id,
                table: table.clone(),
                until: now.clone(),
            });
        }
    }
    recreated
}

/// The name `table` of `before` has in `after` (a later state of the same changefeed):
/// another when the stream followed a rename of it in between.
pub(crate) fn renamed_to(before: &RuntimeState, after: &RuntimeState, table: TableId) -> TableId {
    before
        .source_ids
        .iter()
        .find(|(_, name)| **name == table)
        .and_then(|(id, _)| after.source_ids.get(id))
        .cloned()
        .unwrap_or(table)
}

/// Records that the target table `from` is now `to` (the source renamed it).
pub(crate) fn rename(state: &mut RuntimeState, from: &TableId, to: &TableId) {
    for plan in &mut state.plan {
        if &plan.table == from {
            plan.table = to.clone();
        }
    }
    for added in &mut state.added {
        if &added.plan.table == from {
            added.plan.table = to.clone();
        }
    }
    for name in state.source_ids.values_mut() {
        if name == from {
            *name = to.clone();
        }
    }
    for held in &mut state.held {
        if &held.table == from {
            held.table = to.clone();
        }
    }
    for table in &mut state.resync {
        if table == from {
            *table = to.clone();
        }
    }
}

/// The marker of an added table's copy, if it is done.
fn added_copy<'a>(added: &AddedTable, finished: &'a [FinishedChunk]) -> Option<&'a FinishedChunk> {
    finished
        .iter()
        .find(|c| c.table == added.plan.table && c.chunk == 0 && c.snapshot.covers(&added.since))
}

/// Added tables whose copy is not done yet.
pub(crate) fn pending_added<'a>(
    state: &'a RuntimeState,
    finished: &[FinishedChunk],
) -> Vec<&'a AddedTable> {
    state
        .added
        .iter()
        .filter(|a| added_copy(a, finished).is_none())
        .collect()
}

/// Per table, the position before which the stream skips its changes: they are in the
/// table's copy. Only for tables copied whole in one snapshot (one chunk); a table copied
/// in key ranges started with the slot, or converges by idempotent upserts.
pub(crate) fn skip_before(
    state: &RuntimeState,
    finished: &[FinishedChunk],
) -> HashMap<TableId, Position> {
    let mut skip = HashMap::new();
    for plan in state.plan.iter().filter(|p| p.chunks.len() == 1) {
        if let Some(c) = finished.iter().find(|c| c.table == plan.table) {
            skip.insert(plan.table.clone(), c.snapshot.clone());
        }
    }
    for added in &state.added {
        if let Some(c) = added_copy(added, finished) {
            skip.insert(added.plan.table.clone(), c.snapshot.clone());
        }
    }
    skip
}

/// Copy progress of every table of `state`, from the target's markers.
pub(crate) fn progress(state: &RuntimeState, finished: &[FinishedChunk]) -> Vec<TableProgress> {
    let entry = |plan: &TablePlan, done: Vec<&FinishedChunk>| TableProgress {
        table: plan.table.to_string(),
        state: if done.len() >= plan.chunks.len() {
            TableState::Streaming
        } else {
            TableState::Pending
        },
        rows_copied: done.iter().map(|c| c.rows).sum(),
        rows_estimated: plan.estimated_rows,
        chunks_done: done.len() as u32,
        chunks_total: plan.chunks.len() as u32,
        rows_applied: 0,
        lag_seconds: None,
        error: None,
    };
    let mut out: Vec<TableProgress> = state
        .plan
        .iter()
        .map(|plan| {
            let done = finished
                .iter()
                .filter(|c| c.table == plan.table && plan.chunks.iter().any(|s| s.index == c.chunk))
                .collect();
            entry(plan, done)
        })
        .collect();
    for added in &state.added {
        out.push(entry(
            &added.plan,
            added_copy(added, finished).into_iter().collect(),
        ));
    }
    mark(state, &mut out);
    out.sort_by(|a, b| a.table.cmp(&b.table));
    out
}

/// Replaces the shown `tables` with `progress`, keeping each table's rows applied.
pub(crate) fn refresh(tables: &mut Vec<TableProgress>, mut progress: Vec<TableProgress>) {
    for entry in &mut progress {
        if let Some(old) = tables.iter().find(|t| t.table == entry.table) {
            entry.rows_applied = old.rows_applied;
        }
    }
    *tables = progress;
}

/// Shows in `progress` what `state` says beyond the copy markers: tables held (paused or
/// parked), tables to copy again (resyncing), tables no longer planned (gone).
pub(crate) fn mark(state: &RuntimeState, progress: &mut Vec<TableProgress>) {
    let planned = planned_tables(state);
    progress.retain(|p| planned.iter().any(|t| t.to_string() == p.table));
    for entry in progress {
        if let Some(held) = state
            .held
            .iter()
            .find(|h| h.table.to_string() == entry.table)
        {
            entry.state = match held.error {
                Some(_) => TableState::Failed,
                None => TableState::Paused,
            };
            entry.error = held.error.clone();
        } else if state.resync.iter().any(|t| t.to_string() == entry.table) {
            entry.state = TableState::Resyncing;
            entry.error = None;
        }
    }
}

#[cfg(test)]
mod tests;
