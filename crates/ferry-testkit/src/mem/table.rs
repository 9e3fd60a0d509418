//! In-memory tables: their one shape (`id bigint` key, `value text`), the transactions a
//! test builds on them, and how a change applies to a table's rows.

use std::collections::BTreeMap;

use bytes::Bytes;
use ferry_core::{
    ColumnSchema, LogicalType, Lsn, Position, ReplicaIdentity, Row, RowChange, TableId,
    TableSchema, Value,
};

use super::SourceTable;

/// A source transaction being built; see [`MemDb::commit`].
pub struct MemTransaction<'a> {
    pub(super) tables: &'a mut BTreeMap<TableId, SourceTable>,
    pub(super) changes: Vec<RowChange>,
}

impl MemTransaction<'_> {
    fn table(&mut self, table: &TableId) -> &mut SourceTable {
        self.tables
            .get_mut(table)
            .unwrap_or_else(|| panic!("no source table {table}"))
    }

    /// Inserts row `id`; panics when it exists, as a primary key would refuse it.
    pub fn insert(&mut self, table: &TableId, id: i64, value: &str) {
        let t = self.table(table);
        let new = row(id, value);
        assert!(t.rows.insert(id, new.clone()).is_none(), "{table} has {id}");
        let table = t.schema.clone();
        self.changes.push(RowChange::Insert { table, new });
    }

    /// Sets row `id`'s value; panics when it does not exist.
    pub fn update(&mut self, table: &TableId, id: i64, value: &str) {
        let t = self.table(table);
        let new = row(id, value);
        assert!(
            t.rows.insert(id, new.clone()).is_some(),
            "{table} lacks {id}"
        );
        let table = t.schema.clone();
        self.changes.push(RowChange::Update {
            table,
            old: None,
            new,
        });
    }

    /// Deletes row `id`; panics when it does not exist.
    pub fn delete(&mut self, table: &TableId, id: i64) {
        let t = self.table(table);
        assert!(t.rows.remove(&id).is_some(), "{table} lacks {id}");
        let old = vec![key_value(id), Value::Null];
        let table = t.schema.clone();
        self.changes.push(RowChange::Delete { table, old });
    }

    /// Adds a nullable column `name` to the table's shape (`ALTER TABLE … ADD COLUMN`):
    /// the changes after it carry the new shape, which the stream announces before the
    /// table's next change. The model's rows keep their two values; only the shape's
    /// announcement matters to the engine.
    pub fn add_column(&mut self, table: &TableId, name: &str) {
        let t = self.table(table);
        let mut schema = (*t.schema).clone();
        schema
            .columns
            .push(column(name, "text", 25, LogicalType::Text, true));
        t.schema = std::sync::Arc::new(schema);
    }

    /// Empties the table.
    pub fn truncate(&mut self, table: &TableId) {
        let t = self.table(table);
        t.rows.clear();
        let tables = vec![t.schema.clone()];
        self.changes.push(RowChange::Truncate {
            tables,
            restart_identity: false,
        });
    }
}

/// The shape of every in-memory table.
pub(super) fn table_schema(id: TableId) -> TableSchema {
    TableSchema {
        id,
        columns: vec![
            column("id", "bigint", 20, LogicalType::Int { bits: 64 }, false),
            column("value", "text", 25, LogicalType::Text, true),
        ],
        key: vec![0],
        identity: ReplicaIdentity::Default,
        user_types: Vec::new(),
        partition_of: Vec::new(),
        dialect: ferry_core::Dialect::Postgres,
    }
}

fn column(
    name: &str,
    type_name: &str,
    type_oid: u32,
    logical: LogicalType,
    nullable: bool,
) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        type_name: type_name.into(),
        type_oid,
        logical,
        nullable,
        missing_value: None,
        has_default: false,
    }
}

/// The LSN of an in-memory position (all are `Position::PgLsn`).
pub(super) fn lsn_of(position: &Position) -> Option<Lsn> {
    match position {
        Position::PgLsn(lsn) => Some(*lsn),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// A row of an in-memory table.
pub fn row(id: i64, value: &str) -> Row {
    vec![key_value(id), Value::Text(Bytes::from(value.to_string()))]
}

pub(super) fn key_value(id: i64) -> Value {
    Value::Text(Bytes::from(id.to_string()))
}

/// The key of an in-memory row.
pub(super) fn key_of(row: &Row) -> i64 {
    match row.first() {
        Some(Value::Text(text)) => std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .expect("in-memory keys are integers"),
        other => panic!("in-memory rows have a key, not {other:?}"),
    }
}

/// Applies `change` to `rows` if it is a change of `table`, as an upsert; notes in
/// `anomalies` what a table in step with its source never sees.
pub(super) fn apply_change(
    rows: &mut BTreeMap<i64, Row>,
    table: &TableId,
    change: &RowChange,
    anomalies: &mut Vec<String>,
) {
    match change {
        RowChange::Insert { table: t, new } if &t.id == table => {
            let id = key_of(new);
            if rows.insert(id, new.clone()).is_some() {
                anomalies.push(format!("insert of key {id} that {table} holds"));
            }
        }
        RowChange::Update { table: t, old, new } if &t.id == table => {
            let id = old.as_ref().map_or_else(|| key_of(new), key_of);
            let Some(before) = rows.remove(&id) else {
                anomalies.push(format!("update of key {id} that {table} lacks"));
                rows.insert(key_of(new), new.clone());
                return;
            };
            let merged = new
                .iter()
                .zip(before)
                .map(|(v, old)| match v {
                    Value::Unchanged => old,
                    v => v.clone(),
                })
                .collect();
            rows.insert(key_of(new), merged);
        }
        RowChange::Delete { table: t, old } if &t.id == table => {
            let id = key_of(old);
            if rows.remove(&id).is_none() {
                anomalies.push(format!("delete of key {id} that {table} lacks"));
            }
        }
        RowChange::Truncate { tables, .. } if tables.iter().any(|t| &t.id == table) => {
            rows.clear();
        }
        _ => {}
    }
}
