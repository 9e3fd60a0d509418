//! Compaction of a batch's row changes into set-based statements, shared by the database
//! sinks.
//!
//! Within one target transaction only each row's **final** state matters. For a table
//! with a key, the changes of a segment collapse to one entry per key: the whole row to
//! upsert, the key to delete, or the sent columns to update (an update whose unchanged
//! TOAST values must keep the target's). Inserts into a table without a key are kept as a
//! list. A segment then becomes at most a few statements per table: never a round trip
//! per row.
//!
//! Keys are compared by their text. Two texts that the target holds equal (`1.0` and
//! `1.00` in a `numeric` key) can only both appear when a key update changed the text;
//! of such a group at most one key ends as a row, so running the deletes before the
//! upserts and the updates gives the same table as applying the changes one by one.
//!
//! A change that cannot be compacted is handed back ([`TableChanges::absorb`] returns it)
//! and the sink applies the segment so far, then the change on its own: updates and
//! deletes of a table without a key, an update that changes the key and leaves TOAST
//! values unsent (unless the batch holds the old row), a key value not sent.

use std::sync::Arc;

// foldhash rather than SipHash: every change's key is hashed, and the backlog drained with
// less CPU on it (docs/benchmarks.md, "the read path without a wake-up per message"). Its
// seeds are random per process; it resists crafted collisions less than SipHash, and a
// segment holds at most some tens of thousands of keys.
use foldhash::{HashMap, HashMapExt};

use crate::{Row, RowChange, TableId, TableSchema, Value};

/// The open segment's compacted changes, per table.
pub type SegmentMap = HashMap<TableId, TableChanges>;

/// Whether `segment` holds changes of `table` made with another shape: the segment must be
/// applied before `table`'s next change joins it. (The same schema, shared, is the common
/// case: then no column is compared.)
pub fn shape_changed(segment: &SegmentMap, table: &Arc<TableSchema>) -> bool {
    segment.get(&table.id).is_some_and(|c| {
        !Arc::ptr_eq(&c.schema, table)
            && (c.schema.columns != table.columns || c.schema.key != table.key)
    })
}

/// `table`'s entry in `segment`, empty when new.
pub fn entry<'a>(segment: &'a mut SegmentMap, table: &Arc<TableSchema>) -> &'a mut TableChanges {
    // Looked up before inserting: `HashMap::entry` would clone the table's name for every
    // change.
    if !segment.contains_key(&table.id) {
        segment.insert(table.id.clone(), TableChanges::new(table.clone()));
    }
    segment
        .get_mut(&table.id)
        .expect("the entry was inserted above")
}

/// The final state of one key within a segment.
#[derive(Clone, Debug, PartialEq)]
pub enum Final {
    /// The row was inserted in this segment, its key unseen before in it: the target
    /// holds no row of that key unless it diverged (values all sent).
    Insert(Row),
    /// The row exists with these values (all sent).
    Upsert(Row),
    /// The row is gone; the key's values in key order.
    Delete(Vec<Value>),
    /// The row exists; the sent values replace the target's, `Value::Unchanged` keep it.
    Update(Row),
}

/// The compacted changes of one table in the open segment.
pub struct TableChanges {
    /// The table's shape the changes were made with.
    pub schema: Arc<TableSchema>,
    /// Final state per key (tables with a key).
    pub keyed: HashMap<Vec<Value>, Final>,
    /// Rows inserted, in order (tables without a key).
    pub inserts: Vec<Row>,
}

fn has_unchanged(values: &[Value]) -> bool {
    values.iter().any(|v| matches!(v, Value::Unchanged))
}

/// `base` with every value `over` sent.
fn overlay(base: &Row, over: &Row) -> Row {
    base.iter()
        .zip(over)
        .map(|(b, o)| match o {
            Value::Unchanged => b.clone(),
            sent => sent.clone(),
        })
        .collect()
}

impl TableChanges {
    /// An empty segment entry for a table of shape `schema`.
    pub fn new(schema: Arc<TableSchema>) -> Self {
        TableChanges {
            schema,
            keyed: HashMap::new(),
            inserts: Vec::new(),
        }
    }

    fn key_of(&self, row: &Row) -> Vec<Value> {
        self.schema.key.iter().map(|&k| row[k].clone()).collect()
    }

    /// Folds `change` into the segment, or hands it back when it must be applied alone
    /// (after the segment so far).
    pub fn absorb(&mut self, change: RowChange) -> Result<(), RowChange> {
        if !self.schema.has_key() {
            return match change {
                RowChange::Insert { new, .. } if !has_unchanged(&new) => {
                    self.inserts.push(new);
                    Ok(())
                }
                other => Err(other),
            };
        }
        match change {
            RowChange::Insert { new, .. } => {
                if has_unchanged(&new) {
                    return Err(RowChange::Insert {
                        table: self.schema.clone(),
                        new,
                    });
                }
                let key = self.key_of(&new);
                // After a delete in this segment the entry replaces the delete, which then
                // never runs: the target may still hold the key.
                let entry = match self.keyed.get(&key) {
                    None => Final::Insert(new),
                    Some(_) => Final::Upsert(new),
                };
                self.keyed.insert(key, entry);
                Ok(())
            }
            RowChange::Delete { old, .. } => {
                let key = self.key_of(&old);
                if has_unchanged(&key) {
                    return Err(RowChange::Delete {
                        table: self.schema.clone(),
                        old,
                    });
                }
                self.keyed.insert(key.clone(), Final::Delete(key));
                Ok(())
            }
            RowChange::Update { table, old, new } => self.absorb_update(table, old, new),
            truncate @ RowChange::Truncate { .. } => Err(truncate),
        }
    }

    fn absorb_update(
        &mut self,
        table: Arc<TableSchema>,
        old: Option<Row>,
        new: Row,
    ) -> Result<(), RowChange> {
        let new_key = self.key_of(&new);
        let old_key = old.as_ref().map(|o| self.key_of(o));
        let hand_back = |old, new| Err(RowChange::Update { table, old, new });
        if has_unchanged(&new_key) || old_key.as_deref().is_some_and(has_unchanged) {
            return hand_back(old, new);
        }
        let complete = !has_unchanged(&new);
        match old_key.filter(|k| *k != new_key) {
            // The key changed: the old key is gone, the new one holds the row.
            Some(old_key) => {
                let row = if complete {
                    new
                } else if let Some(Final::Upsert(prev) | Final::Insert(prev)) =
                    self.keyed.get(&old_key)
                {
                    overlay(prev, &new)
                } else {
                    return hand_back(old, new);
                };
                self.keyed
                    .insert(old_key.clone(), Final::Delete(old_key.clone()));
                self.keyed.insert(new_key, Final::Upsert(row));
            }
            None => {
                let entry = match self.keyed.get(&new_key) {
                    Some(Final::Insert(prev)) if !complete => Final::Insert(overlay(prev, &new)),
                    Some(Final::Insert(_)) => Final::Insert(new),
                    _ if complete => Final::Upsert(new),
                    Some(Final::Upsert(prev)) => Final::Upsert(overlay(prev, &new)),
                    Some(Final::Update(prev)) => Final::Update(overlay(prev, &new)),
                    Some(Final::Delete(_)) => return hand_back(old, new),
                    None => Final::Update(new),
                };
                self.keyed.insert(new_key, entry);
            }
        }
        Ok(())
    }

    /// The rows to delete (key values), to upsert or insert (whole rows), and to update
    /// grouped by which columns were sent, in the order they must run.
    pub fn into_sets(self) -> Sets {
        let mut sets = Sets {
            deletes: Vec::new(),
            inserts: Vec::new(),
            upserts: self.inserts,
            updates: HashMap::new(),
        };
        for (_, state) in self.keyed {
            match state {
                Final::Delete(key) => sets.deletes.push(key),
                Final::Insert(row) => sets.inserts.push(row),
                Final::Upsert(row) => sets.upserts.push(row),
                Final::Update(row) => {
                    let sent: Vec<bool> =
                        row.iter().map(|v| !matches!(v, Value::Unchanged)).collect();
                    sets.updates.entry(sent).or_default().push(row);
                }
            }
        }
        sets
    }
}

/// A table's compacted segment, ready to become statements.
pub struct Sets {
    /// Key values of rows to delete (run first).
    pub deletes: Vec<Vec<Value>>,
    /// Whole rows of a keyed table that only this segment wrote ([`Final::Insert`]): a
    /// plain insert succeeds unless the target diverged; upserting them is always right.
    pub inserts: Vec<Row>,
    /// Whole rows to upsert (keyed) or insert (keyless).
    pub upserts: Vec<Row>,
    /// Rows to update, by the mask of sent columns.
    pub updates: HashMap<Vec<bool>, Vec<Row>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(key: Vec<usize>) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: crate::TableId::new("s", "t"),
            columns: ["id", "a", "b"]
                .iter()
                .map(|n| crate::ColumnSchema {
                    name: n.to_string(),
                    type_name: "text".into(),
                    type_oid: 25,
                    logical: crate::LogicalType::Text,
                    nullable: true,
                    missing_value: None,
                    has_default: false,
                })
                .collect(),
            key,
            identity: crate::ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: Vec::new(),
            dialect: crate::Dialect::Postgres,
        })
    }

    fn t(s: &str) -> Value {
        Value::Text(bytes::Bytes::copy_from_slice(s.as_bytes()))
    }

    fn row(id: &str, a: &str, b: &str) -> Row {
        vec![t(id), t(a), t(b)]
    }

    fn insert(s: &Arc<TableSchema>, new: Row) -> RowChange {
        RowChange::Insert {
            table: s.clone(),
            new,
        }
    }

    fn update(s: &Arc<TableSchema>, old: Option<Row>, new: Row) -> RowChange {
        RowChange::Update {
            table: s.clone(),
            old,
            new,
        }
    }

    fn delete(s: &Arc<TableSchema>, id: &str) -> RowChange {
        RowChange::Delete {
            table: s.clone(),
            old: vec![t(id), Value::Null, Value::Null],
        }
    }

    #[test]
    fn last_change_of_a_key_wins() {
        let s = schema(vec![0]);
        let mut c = TableChanges::new(s.clone());
        c.absorb(insert(&s, row("1", "a", "b"))).unwrap();
        c.absorb(update(&s, None, row("1", "a2", "b2"))).unwrap();
        c.absorb(insert(&s, row("2", "x", "y"))).unwrap();
        c.absorb(delete(&s, "2")).unwrap();
        let sets = c.into_sets();
        assert_eq!(sets.inserts, vec![row("1", "a2", "b2")]);
        assert!(sets.upserts.is_empty());
        assert_eq!(sets.deletes, vec![vec![t("2")]]);
        assert!(sets.updates.is_empty());
    }

    #[test]
    fn delete_then_insert_is_an_upsert() {
        let s = schema(vec![0]);
        let mut c = TableChanges::new(s.clone());
        c.absorb(delete(&s, "1")).unwrap();
        c.absorb(insert(&s, row("1", "a", "b"))).unwrap();
        let sets = c.into_sets();
        assert!(sets.deletes.is_empty());
        assert_eq!(sets.upserts, vec![row("1", "a", "b")]);
    }

    #[test]
    fn unchanged_toast_merges_into_the_batch_row_or_stays_an_update() {
        let s = schema(vec![0]);
        let mut c = TableChanges::new(s.clone());
        c.absorb(insert(&s, row("1", "a", "big"))).unwrap();
        c.absorb(update(&s, None, vec![t("1"), t("a2"), Value::Unchanged]))
            .unwrap();
        c.absorb(update(&s, None, vec![t("2"), t("z"), Value::Unchanged]))
            .unwrap();
        c.absorb(update(&s, None, vec![t("2"), Value::Unchanged, t("w")]))
            .unwrap();
        let sets = c.into_sets();
        assert_eq!(sets.inserts, vec![row("1", "a2", "big")]);
        assert_eq!(
            sets.updates[&vec![true, true, true]],
            vec![vec![t("2"), t("z"), t("w")]]
        );
    }

    #[test]
    fn key_change_deletes_the_old_key() {
        let s = schema(vec![0]);
        let mut c = TableChanges::new(s.clone());
        let old = Some(vec![t("1"), Value::Null, Value::Null]);
        c.absorb(update(&s, old, row("2", "a", "b"))).unwrap();
        let sets = c.into_sets();
        assert_eq!(sets.deletes, vec![vec![t("1")]]);
        assert_eq!(sets.upserts, vec![row("2", "a", "b")]);
    }

    #[test]
    fn key_change_with_unsent_values_needs_the_old_row() {
        let s = schema(vec![0]);
        let old = || Some(vec![t("1"), Value::Null, Value::Null]);
        let new = vec![t("2"), t("a"), Value::Unchanged];
        let mut c = TableChanges::new(s.clone());
        assert!(c.absorb(update(&s, old(), new.clone())).is_err());
        c.absorb(insert(&s, row("1", "x", "big"))).unwrap();
        c.absorb(update(&s, old(), new)).unwrap();
        let sets = c.into_sets();
        assert_eq!(sets.deletes, vec![vec![t("1")]]);
        assert_eq!(sets.upserts, vec![row("2", "a", "big")]);
    }

    #[test]
    fn update_after_delete_is_handed_back() {
        let s = schema(vec![0]);
        let mut c = TableChanges::new(s.clone());
        c.absorb(delete(&s, "1")).unwrap();
        let partial = vec![t("1"), t("a"), Value::Unchanged];
        assert!(c.absorb(update(&s, None, partial)).is_err());
    }

    #[test]
    fn keyless_tables_keep_inserts_and_hand_back_the_rest() {
        let s = schema(vec![]);
        let mut c = TableChanges::new(s.clone());
        c.absorb(insert(&s, row("1", "a", "b"))).unwrap();
        c.absorb(insert(&s, row("1", "a", "b"))).unwrap();
        assert!(c.absorb(delete(&s, "1")).is_err());
        assert_eq!(c.into_sets().upserts.len(), 2);
    }
}
