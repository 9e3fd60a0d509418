//! The SQL text row changes become.
//!
//! Values are written as literals ([`super::types`]) into plain statements: a multi-row
//! statement carries thousands of rows, and several statements travel in one query, so a
//! segment costs a few round trips whatever its size.
//!
//! | change | table with a key | table without (REPLICA IDENTITY FULL) |
//! |---|---|---|
//! | insert, whole-row update | `INSERT … ON DUPLICATE KEY UPDATE` (many rows) | `INSERT` (many rows) |
//! | delete | `DELETE … WHERE key IN (…)` (many keys) | `DELETE … WHERE <every column> LIMIT 1` |
//! | update with unsent (TOAST) values | `UPDATE … SET <sent columns> WHERE key = <old key>` | `UPDATE … WHERE <every column> LIMIT 1` |
//!
//! Rows of a table without a key are matched with `<=>` (NULL equals NULL) on every
//! column, and exactly one is changed: of two identical rows one goes, as on the source.

use std::sync::Arc;

use ferry_core::{Row, SinkError, TableSchema, Value};

use super::types::{quote, quote_table, Column};

/// A statement grows to about this many bytes before the next starts.
pub(super) const STATEMENT_BYTES: usize = 1 << 20;

/// A target table as the sink writes it.
pub(super) struct Target {
    pub(super) schema: Arc<TableSchema>,
    columns: Vec<Column>,
    names: Vec<String>,
    /// The table's quoted name on the target.
    pub(super) table: String,
}

impl Target {
    pub(super) fn new(schema: Arc<TableSchema>) -> Self {
        Target {
            columns: Column::all(&schema),
            names: schema.columns.iter().map(|c| quote(&c.name)).collect(),
            table: quote_table(&schema.id),
            schema,
        }
    }

    /// Writes `schema`'s rows into the table still named `physical` (renamed on the
    /// source; the target follows once the batch commits).
    pub(super) fn stored_as(schema: Arc<TableSchema>, physical: &ferry_core::TableId) -> Self {
        Target {
            table: quote_table(physical),
            ..Target::new(schema)
        }
    }

    /// Appends column `i`'s value.
    fn value(&self, i: usize, value: &Value, out: &mut Vec<u8>) -> Result<(), SinkError> {
        match value {
            Value::Null => {
                out.extend_from_slice(b"NULL");
                Ok(())
            }
            Value::Text(text) => self.columns[i].write(&self.schema.id, text, out),
            Value::Unchanged => Err(SinkError::Unsupported {
                message: format!(
                    "column {} of {}: the source sent no value (unchanged TOAST) where a whole \
                     row was needed",
                    self.schema.columns[i].name, self.schema.id
                ),
            }),
        }
    }

    /// Appends `` `c` <=> v `` (or `=`), cast where comparing needs it.
    fn equals(
        &self,
        i: usize,
        value: &Value,
        null_safe: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), SinkError> {
        out.extend_from_slice(self.names[i].as_bytes());
        out.extend_from_slice(if null_safe { b" <=> " } else { b" = " });
        self.compared(i, value, out)
    }

    fn compared(&self, i: usize, value: &Value, out: &mut Vec<u8>) -> Result<(), SinkError> {
        match self.columns[i].compare_cast() {
            Some(cast) if *value != Value::Null => {
                out.extend_from_slice(b"CAST(");
                self.value(i, value, out)?;
                out.extend_from_slice(format!(" AS {cast})").as_bytes());
                Ok(())
            }
            _ => self.value(i, value, out),
        }
    }

    /// `INSERT INTO t (…) VALUES ` — rows follow.
    pub(super) fn insert_head(&self) -> Vec<u8> {
        format!(
            "INSERT INTO {} ({}) VALUES ",
            self.table,
            self.names.join(", ")
        )
        .into_bytes()
    }

    /// Appends `(v1, v2, …)`.
    pub(super) fn row(&self, row: &Row, out: &mut Vec<u8>) -> Result<(), SinkError> {
        out.push(b'(');
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            self.value(i, v, out)?;
        }
        out.push(b')');
        Ok(())
    }

    /// What makes an insert an upsert by key (nothing for a table without one).
    pub(super) fn upsert_tail(&self) -> String {
        if !self.schema.has_key() {
            return String::new();
        }
        let mut set: Vec<String> = (0..self.names.len())
            .filter(|i| !self.schema.key.contains(i))
            .map(|i| format!("{0} = VALUES({0})", self.names[i]))
            .collect();
        if set.is_empty() {
            let k = &self.names[self.schema.key[0]];
            set.push(format!("{k} = {k}"));
        }
        format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "))
    }

    /// Multi-row statements writing `rows` (whole rows): upserts by key, or inserts.
    pub(super) fn inserts(&self, rows: &[Row], upsert: bool) -> Result<Vec<Vec<u8>>, SinkError> {
        let tail = if upsert {
            self.upsert_tail()
        } else {
            String::new()
        };
        let mut statements = Vec::new();
        let mut sql = Vec::new();
        for row in rows {
            if sql.is_empty() {
                sql = self.insert_head();
            } else {
                sql.push(b',');
            }
            self.row(row, &mut sql)?;
            if sql.len() >= STATEMENT_BYTES {
                sql.extend_from_slice(tail.as_bytes());
                statements.push(std::mem::take(&mut sql));
            }
        }
        if !sql.is_empty() {
            sql.extend_from_slice(tail.as_bytes());
            statements.push(sql);
        }
        Ok(statements)
    }

    /// Statements deleting the rows of `keys` (values in key order).
    pub(super) fn deletes(&self, keys: &[Vec<Value>]) -> Result<Vec<Vec<u8>>, SinkError> {
        let key = &self.schema.key;
        let head = if key.len() == 1 {
            format!(
                "DELETE FROM {} WHERE {} IN (",
                self.table, self.names[key[0]]
            )
        } else {
            let names: Vec<&str> = key.iter().map(|&k| self.names[k].as_str()).collect();
            format!(
                "DELETE FROM {} WHERE ({}) IN (",
                self.table,
                names.join(", ")
            )
        };
        let mut statements = Vec::new();
        let mut sql = Vec::new();
        for values in keys {
            if sql.is_empty() {
                sql = head.clone().into_bytes();
            } else {
                sql.push(b',');
            }
            if key.len() > 1 {
                sql.push(b'(');
            }
            for (n, (&k, v)) in key.iter().zip(values).enumerate() {
                if n > 0 {
                    sql.push(b',');
                }
                self.compared(k, v, &mut sql)?;
            }
            if key.len() > 1 {
                sql.push(b')');
            }
            if sql.len() >= STATEMENT_BYTES {
                sql.push(b')');
                statements.push(std::mem::take(&mut sql));
            }
        }
        if !sql.is_empty() {
            sql.push(b')');
            statements.push(sql);
        }
        Ok(statements)
    }

    /// Appends ` WHERE <key of row> ` matching by key.
    fn where_key(&self, row: &Row, out: &mut Vec<u8>) -> Result<(), SinkError> {
        out.extend_from_slice(b" WHERE ");
        for (n, &k) in self.schema.key.iter().enumerate() {
            if n > 0 {
                out.extend_from_slice(b" AND ");
            }
            self.equals(k, &row[k], true, out)?;
        }
        Ok(())
    }

    /// Appends ` WHERE <every column of old> LIMIT 1` (a table without a key).
    fn where_row(&self, old: &Row, out: &mut Vec<u8>) -> Result<(), SinkError> {
        out.extend_from_slice(b" WHERE ");
        for (i, v) in old.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b" AND ");
            }
            self.equals(i, v, true, out)?;
        }
        out.extend_from_slice(b" LIMIT 1");
        Ok(())
    }

    /// `UPDATE t SET <sent columns of new> WHERE <old>`: by key (`old` holds the old key)
    /// or, without a key, one row equal to `old`. `None` when nothing is to set.
    pub(super) fn update(
        &self,
        old: &Row,
        new: &Row,
        include_key: bool,
    ) -> Result<Option<Vec<u8>>, SinkError> {
        let set: Vec<usize> = (0..new.len())
            .filter(|&i| new[i] != Value::Unchanged)
            .filter(|i| include_key || !self.schema.key.contains(i))
            .collect();
        if set.is_empty() {
            return Ok(None);
        }
        let mut sql = format!("UPDATE {} SET ", self.table).into_bytes();
        for (n, &i) in set.iter().enumerate() {
            if n > 0 {
                sql.push(b',');
            }
            self.equals(i, &new[i], false, &mut sql)?;
        }
        if self.schema.has_key() {
            self.where_key(old, &mut sql)?;
        } else {
            self.where_row(old, &mut sql)?;
        }
        Ok(Some(sql))
    }

    /// `DELETE FROM t WHERE <every column of old> LIMIT 1` (a table without a key).
    pub(super) fn delete_row(&self, old: &Row) -> Result<Vec<u8>, SinkError> {
        let mut sql = format!("DELETE FROM {}", self.table).into_bytes();
        self.where_row(old, &mut sql)?;
        Ok(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{ColumnSchema, Dialect, LogicalType, ReplicaIdentity, TableId};

    fn target(key: Vec<usize>) -> Target {
        let column = |name: &str, logical| ColumnSchema {
            name: name.into(),
            type_name: "x".into(),
            type_oid: 0,
            logical,
            nullable: true,
            missing_value: None,
            has_default: false,
        };
        Target::new(Arc::new(TableSchema {
            id: TableId::new("s", "t"),
            columns: vec![
                column("id", LogicalType::Int { bits: 32 }),
                column("f", LogicalType::Float { bits: 32 }),
                column("doc", LogicalType::Text),
            ],
            key,
            identity: ReplicaIdentity::Full,
            user_types: vec![],
            partition_of: vec![],
            dialect: Dialect::Postgres,
        }))
    }

    fn text(s: &str) -> Value {
        Value::Text(bytes::Bytes::copy_from_slice(s.as_bytes()))
    }

    fn sql(statements: Vec<Vec<u8>>) -> Vec<String> {
        statements
            .into_iter()
            .map(|s| String::from_utf8(s).unwrap())
            .collect()
    }

    #[test]
    fn keyed_rows_are_upserted_and_deleted_by_key_in_sets() {
        let t = target(vec![0, 1]);
        let rows = [vec![text("1"), text("1.5"), Value::Null]];
        assert_eq!(
            sql(t.inserts(&rows, true).unwrap()),
            [
                "INSERT INTO `s`.`t` (`id`, `f`, `doc`) VALUES (1,1.5,NULL) \
              ON DUPLICATE KEY UPDATE `doc` = VALUES(`doc`)"
            ]
        );
        let keys = [vec![text("1"), text("1.5")], vec![text("2"), text("0")]];
        assert_eq!(
            sql(t.deletes(&keys).unwrap()),
            ["DELETE FROM `s`.`t` WHERE (`id`, `f`) IN \
              ((1,CAST(1.5 AS FLOAT)),(2,CAST(0 AS FLOAT)))"]
        );
    }

    #[test]
    fn unsent_values_are_kept_and_keyless_rows_change_one_at_a_time() {
        let t = target(vec![0]);
        let old = vec![text("1"), Value::Null, Value::Null];
        let new = vec![text("2"), text("0.5"), Value::Unchanged];
        let update = String::from_utf8(t.update(&old, &new, true).unwrap().unwrap()).unwrap();
        assert_eq!(
            update,
            "UPDATE `s`.`t` SET `id` = 2,`f` = CAST(0.5 AS FLOAT) WHERE `id` <=> 1"
        );
        let keyless = target(vec![]);
        let row = vec![text("1"), Value::Null, text("it's")];
        let delete = String::from_utf8(keyless.delete_row(&row).unwrap()).unwrap();
        assert_eq!(
            delete,
            "DELETE FROM `s`.`t` WHERE `id` <=> 1 AND `f` <=> NULL AND `doc` <=> 'it\\'s' LIMIT 1"
        );
        assert_eq!(keyless.upsert_tail(), "");
    }
}
