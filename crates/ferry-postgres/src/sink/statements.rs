//! The statement each row change becomes, and its parameters.
//!
//! Values are bound as **text-format** parameters ([`TextParam`]): the target runs each
//! type's input function on exactly the text the source printed, so every type, user
//! types included, round-trips without Ferry knowing it. Parameter types are inferred by
//! the target from the columns they are compared with or assigned to.
//!
//! | change | table with a key | table without (REPLICA IDENTITY FULL) |
//! |---|---|---|
//! | insert | `INSERT … ON CONFLICT (key) DO UPDATE` | `INSERT` |
//! | update, all values sent, same key | the upsert above | `UPDATE … WHERE ctid = (first row equal to old)` |
//! | update, key changed | `DELETE` old key, then the upsert | same as above |
//! | update with unchanged TOAST values | `UPDATE SET <sent columns> WHERE key = old key` | same as above |
//! | delete | `DELETE WHERE key = …` | `DELETE WHERE ctid = (first row equal to old)` |
//!
//! Upserts make re-applying a change harmless, which the snapshot's resume after a restart
//! relies on (chunks copied at a later snapshot converge once the stream passes it).

use std::error::Error;

use bytes::{Bytes, BytesMut};
use ferry_core::{quote_ident, Row, TableSchema, Value};
use postgres_types::{to_sql_checked, Format, IsNull, ToSql, Type};

/// A value bound in text format; `None` is NULL.
#[derive(Clone, Debug)]
pub(crate) struct TextParam(pub(crate) Option<Bytes>);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

impl TextParam {
    fn of(value: &Value) -> TextParam {
        match value {
            Value::Text(b) => TextParam(Some(b.clone())),
            Value::Null | Value::Unchanged => TextParam(None),
        }
    }
}

/// A statement shape: the cache key of its prepared statement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Shape {
    /// Insert-or-update of a whole row.
    Upsert,
    /// Plain insert (no key).
    Insert,
    /// Update of the columns flagged `true`, matched by key.
    UpdateByKey(Vec<bool>),
    /// Delete matched by key.
    DeleteByKey,
    /// Update of the flagged columns of the first row equal on the second flags.
    UpdateByValues(Vec<bool>, Vec<bool>),
    /// Delete of the first row equal on the flagged columns.
    DeleteByValues(Vec<bool>),
}

/// The SQL of `shape` for `schema`.
pub(crate) fn sql(schema: &TableSchema, shape: &Shape) -> String {
    let table = schema.id.quoted();
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let placeholders = |n: usize| {
        (1..=n)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let key_match = |first: usize| {
        schema
            .key
            .iter()
            .enumerate()
            .map(|(i, &k)| format!("{} = ${}", cols[k], first + i))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let value_match = |mask: &[bool], first: usize| {
        let mut n = first;
        let mut parts = Vec::new();
        for (i, on) in mask.iter().enumerate() {
            if *on {
                parts.push(format!("{}::text IS NOT DISTINCT FROM ${n}::text", cols[i]));
                n += 1;
            }
        }
        if parts.is_empty() {
            "true".to_string()
        } else {
            parts.join(" AND ")
        }
    };
    let assignments = |mask: &[bool]| {
        let mut n = 0;
        let parts: Vec<String> = mask
            .iter()
            .enumerate()
            .filter(|(_, on)| **on)
            .map(|(i, _)| {
                n += 1;
                format!("{} = ${n}", cols[i])
            })
            .collect();
        (parts.join(", "), n)
    };
    match shape {
        Shape::Insert => format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            cols.join(", "),
            placeholders(cols.len())
        ),
        Shape::Upsert => {
            let key: Vec<&str> = schema.key.iter().map(|&k| cols[k].as_str()).collect();
            let updates: Vec<String> = cols
                .iter()
                .enumerate()
                .filter(|(i, _)| !schema.key.contains(i))
                .map(|(_, c)| format!("{c} = EXCLUDED.{c}"))
                .collect();
            let action = if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            format!(
                "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO {action}",
                cols.join(", "),
                placeholders(cols.len()),
                key.join(", ")
            )
        }
        Shape::UpdateByKey(mask) => {
            let (set, n) = assignments(mask);
            format!("UPDATE {table} SET {set} WHERE {}", key_match(n + 1))
        }
        Shape::DeleteByKey => format!("DELETE FROM {table} WHERE {}", key_match(1)),
        Shape::UpdateByValues(set_mask, match_mask) => {
            let (set, n) = assignments(set_mask);
            format!(
                "UPDATE {table} SET {set} WHERE ctid = (SELECT ctid FROM {table} WHERE {} LIMIT 1)",
                value_match(match_mask, n + 1)
            )
        }
        Shape::DeleteByValues(mask) => format!(
            "DELETE FROM {table} WHERE ctid = (SELECT ctid FROM {table} WHERE {} LIMIT 1)",
            value_match(mask, 1)
        ),
    }
}

/// One statement to run: its shape and parameters.
pub(crate) struct Op {
    pub(crate) shape: Shape,
    pub(crate) params: Vec<TextParam>,
}

fn sent(row: &Row) -> Vec<bool> {
    row.iter().map(|v| !matches!(v, Value::Unchanged)).collect()
}

fn params_where<'a>(row: &'a Row, mask: &'a [bool]) -> impl Iterator<Item = TextParam> + 'a {
    row.iter()
        .zip(mask)
        .filter(|(_, on)| **on)
        .map(|(v, _)| TextParam::of(v))
}

fn key_params(schema: &TableSchema, row: &Row) -> Vec<TextParam> {
    schema.key.iter().map(|&k| TextParam::of(&row[k])).collect()
}

/// The statements for an insert.
pub(crate) fn insert(schema: &TableSchema, new: &Row) -> Op {
    let shape = if schema.has_key() {
        Shape::Upsert
    } else {
        Shape::Insert
    };
    Op {
        shape,
        params: new.iter().map(TextParam::of).collect(),
    }
}

/// The statements for an update (one or two).
pub(crate) fn update(schema: &TableSchema, old: Option<&Row>, new: &Row) -> Vec<Op> {
    let set_mask = sent(new);
    let complete = set_mask.iter().all(|s| *s);
    if !schema.has_key() {
        // REPLICA IDENTITY FULL: match the first row equal to the old one.
        let Some(old) = old else { return Vec::new() };
        let match_mask = sent(old);
        let mut params: Vec<TextParam> = params_where(new, &set_mask).collect();
        params.extend(params_where(old, &match_mask));
        return vec![Op {
            shape: Shape::UpdateByValues(set_mask, match_mask),
            params,
        }];
    }
    let key_changed = old.is_some_and(|old| schema.key.iter().any(|&k| old[k] != new[k]));
    if complete {
        let mut ops = Vec::with_capacity(2);
        if key_changed {
            let old = old.expect("key_changed implies an old row");
            ops.push(Op {
                shape: Shape::DeleteByKey,
                params: key_params(schema, old),
            });
        }
        ops.push(insert(schema, new));
        return ops;
    }
    let match_row = if key_changed {
        old.expect("key_changed implies an old row")
    } else {
        new
    };
    let mut params: Vec<TextParam> = params_where(new, &set_mask).collect();
    params.extend(key_params(schema, match_row));
    vec![Op {
        shape: Shape::UpdateByKey(set_mask),
        params,
    }]
}

/// The statement for a delete.
pub(crate) fn delete(schema: &TableSchema, old: &Row) -> Op {
    if schema.has_key() {
        return Op {
            shape: Shape::DeleteByKey,
            params: key_params(schema, old),
        };
    }
    let mask = sent(old);
    let params = params_where(old, &mask).collect();
    Op {
        shape: Shape::DeleteByValues(mask),
        params,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{ColumnSchema, ReplicaIdentity, TableId};

    fn schema(key: Vec<usize>) -> TableSchema {
        TableSchema {
            id: TableId::new("s", "t"),
            columns: ["id", "a", "b"]
                .iter()
                .map(|n| ColumnSchema {
                    name: n.to_string(),
                    type_name: "text".into(),
                    type_oid: 25,
                    nullable: true,
                    missing_value: None,
                })
                .collect(),
            key,
            identity: ReplicaIdentity::Default,
            user_types: vec![],
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn upsert_sql() {
        assert_eq!(
            sql(&schema(vec![0]), &Shape::Upsert),
            "INSERT INTO \"s\".\"t\" (\"id\", \"a\", \"b\") VALUES ($1, $2, $3) \
             ON CONFLICT (\"id\") DO UPDATE SET \"a\" = EXCLUDED.\"a\", \"b\" = EXCLUDED.\"b\""
        );
    }

    #[test]
    fn unchanged_toast_is_not_overwritten() {
        let s = schema(vec![0]);
        let ops = update(&s, None, &vec![t("1"), Value::Unchanged, t("x")]);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].shape, Shape::UpdateByKey(vec![true, false, true]));
        assert_eq!(
            sql(&s, &ops[0].shape),
            "UPDATE \"s\".\"t\" SET \"id\" = $1, \"b\" = $2 WHERE \"id\" = $3"
        );
        assert_eq!(ops[0].params.len(), 3);
    }

    #[test]
    fn key_change_deletes_old_key() {
        let s = schema(vec![0]);
        let old = vec![t("1"), Value::Null, Value::Null];
        let ops = update(&s, Some(&old), &vec![t("2"), t("a"), t("b")]);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].shape, Shape::DeleteByKey);
        assert_eq!(ops[1].shape, Shape::Upsert);
    }

    #[test]
    fn keyless_matches_by_value() {
        let s = schema(vec![]);
        let op = delete(&s, &vec![t("1"), Value::Null, t("b")]);
        assert_eq!(
            sql(&s, &op.shape),
            "DELETE FROM \"s\".\"t\" WHERE ctid = (SELECT ctid FROM \"s\".\"t\" WHERE \
             \"id\"::text IS NOT DISTINCT FROM $1::text AND \"a\"::text IS NOT DISTINCT FROM \
             $2::text AND \"b\"::text IS NOT DISTINCT FROM $3::text LIMIT 1)"
        );
    }
}
