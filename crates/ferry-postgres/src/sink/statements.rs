//! The statements row changes become, and their parameters.
//!
//! Values travel as text: the target runs each type's input function on exactly the text
//! the source printed, so every type, user types included, round-trips without Ferry
//! knowing it.
//!
//! **Set statements** apply a compacted segment ([`ferry_core::compact`]): one `text[]`
//! parameter per column (binary array format, no escaping), unnested and cast to the
//! target column's type, so a statement carries thousands of rows:
//!
//! | segment part | statement |
//! |---|---|
//! | keys to delete | `DELETE FROM t USING unnest(…) WHERE key = …` |
//! | rows to upsert | `INSERT INTO t SELECT … FROM unnest(…) ON CONFLICT (key) DO UPDATE` |
//! | rows of a table without a key | `INSERT INTO t SELECT … FROM unnest(…)` |
//! | updates with unchanged TOAST values | `UPDATE t SET <sent columns> FROM unnest(…) WHERE key = …` |
//!
//! **Row statements** apply what cannot be compacted, one change each, with text-format
//! scalar parameters whose types the target infers:
//!
//! | change | table with a key | table without (REPLICA IDENTITY FULL) |
//! |---|---|---|
//! | update, key changed, TOAST values unsent | `UPDATE SET <sent columns> WHERE key = old key` | `UPDATE … WHERE ctid = (first row equal to old)` |
//! | delete | (compacted) | `DELETE WHERE ctid = (first row equal to old)` |
//!
//! Inserts say `OVERRIDING SYSTEM VALUE`: an identity column `GENERATED ALWAYS` takes the
//! source's value (the clause is a no-op on other tables).
//!
//! Upserts make re-applying a change harmless, which the snapshot's resume after a restart
//! relies on (chunks copied at a later snapshot converge once the stream passes it).

use std::error::Error;

use bytes::{BufMut, Bytes, BytesMut};
use ferry_core::{quote_ident, Row, TableSchema, Value};
use postgres_types::{to_sql_checked, Format, IsNull, ToSql, Type};

/// A statement parameter: one value in text format (`None` is NULL), or a column of
/// values as a `text[]` array in binary format (no escaping needed).
#[derive(Clone, Debug)]
pub(crate) enum Param {
    /// One value, text format.
    Text(Option<Bytes>),
    /// Many values, bound as `text[]`.
    TextArray(Vec<Option<Bytes>>),
}

/// The OID of `text`, the element type of [`Param::TextArray`].
const TEXT_OID: u32 = 25;

impl ToSql for Param {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Param::Text(None) => Ok(IsNull::Yes),
            Param::Text(Some(bytes)) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            Param::TextArray(values) => {
                // The array binary format: dimensions, null flag, element type, then the
                // length and lower bound of the one dimension, then each element.
                let len = i32::try_from(values.len())?;
                out.put_i32(1);
                out.put_i32(i32::from(values.iter().any(Option::is_none)));
                out.put_u32(TEXT_OID);
                out.put_i32(len);
                out.put_i32(1);
                for value in values {
                    match value {
                        None => out.put_i32(-1),
                        Some(bytes) => {
                            out.put_i32(i32::try_from(bytes.len())?);
                            out.extend_from_slice(bytes);
                        }
                    }
                }
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        match self {
            Param::Text(_) => Format::Text,
            Param::TextArray(_) => Format::Binary,
        }
    }

    to_sql_checked!();
}

impl Param {
    fn of(value: &Value) -> Param {
        Param::Text(text_of(value))
    }

    /// Bytes this parameter sends.
    pub(crate) fn size(&self) -> usize {
        match self {
            Param::Text(v) => v.as_ref().map_or(4, |b| b.len() + 4),
            Param::TextArray(vs) => vs
                .iter()
                .map(|v| v.as_ref().map_or(4, |b| b.len() + 4))
                .sum(),
        }
    }
}

fn text_of(value: &Value) -> Option<Bytes> {
    match value {
        Value::Text(b) => Some(b.clone()),
        Value::Null | Value::Unchanged => None,
    }
}

/// One `text[]` parameter per selected column of `rows`.
pub(crate) fn column_arrays<'a>(
    rows: &'a [Row],
    columns: impl Iterator<Item = usize> + 'a,
) -> impl Iterator<Item = Param> + 'a {
    columns.map(move |c| Param::TextArray(rows.iter().map(|r| text_of(&r[c])).collect()))
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
    /// Upsert of many rows: one `text[]` per column.
    UpsertSet,
    /// Insert of many rows (no key): one `text[]` per column.
    InsertSet,
    /// Delete of many keys: one `text[]` per key column.
    DeleteSet,
    /// Update, matched by key, of the non-key columns flagged `true` in many rows: one
    /// `text[]` per key column, then one per updated column.
    UpdateSet(Vec<bool>),
}

/// The SQL of `shape` for `schema`; `casts` are the target's column types, which the set
/// shapes cast their `text[]` elements to.
pub(crate) fn sql(schema: &TableSchema, casts: &[String], shape: &Shape) -> String {
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
                // The type's output text, as the source sent it (`c::text` differs for
                // bool, inet and char(n)); `format` of NULL is '', hence the CASE.
                parts.push(format!(
                    "(CASE WHEN {c} IS NULL THEN NULL ELSE format('%s', {c}) END) \
                     IS NOT DISTINCT FROM ${n}::text",
                    c = cols[i]
                ));
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
            "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ({})",
            cols.join(", "),
            placeholders(cols.len())
        ),
        Shape::Upsert => format!(
            "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ({}){}",
            cols.join(", "),
            placeholders(cols.len()),
            on_conflict(schema, &cols)
        ),
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
        Shape::UpsertSet | Shape::InsertSet => {
            let all: Vec<usize> = (0..cols.len()).collect();
            let conflict = if *shape == Shape::InsertSet {
                String::new()
            } else {
                on_conflict(schema, &cols)
            };
            format!(
                "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}{}{conflict}",
                cols.join(", "),
                all.iter()
                    .map(|&c| cast(casts, c))
                    .collect::<Vec<_>>()
                    .join(", "),
                unnest(&all),
                key_order(schema)
            )
        }
        Shape::DeleteSet => format!(
            "DELETE FROM {table} AS t USING {} WHERE {}",
            unnest(&schema.key),
            set_key_match(schema, &cols, casts)
        ),
        Shape::UpdateSet(sent) => {
            let set: Vec<usize> = (0..cols.len())
                .filter(|i| sent[*i] && !schema.key.contains(i))
                .collect();
            let mut columns = schema.key.clone();
            columns.extend(&set);
            let assignments: Vec<String> = set
                .iter()
                .map(|&c| format!("{} = {}", cols[c], cast(casts, c)))
                .collect();
            format!(
                "UPDATE {table} AS t SET {} FROM {} WHERE {}",
                assignments.join(", "),
                unnest(&columns),
                set_key_match(schema, &cols, casts)
            )
        }
    }
}

/// ` ON CONFLICT (key) DO UPDATE SET <every other column> = EXCLUDED.…` (or `DO NOTHING`
/// when the key is every column).
fn on_conflict(schema: &TableSchema, cols: &[String]) -> String {
    let key: Vec<&str> = schema.key.iter().map(|&k| cols[k].as_str()).collect();
    let updates: Vec<String> = cols
        .iter()
        .enumerate()
        .filter(|(i, _)| !schema.key.contains(i))
        .map(|(_, c)| format!("{c} = EXCLUDED.{c}"))
        .collect();
    if updates.is_empty() {
        format!(" ON CONFLICT ({}) DO NOTHING", key.join(", "))
    } else {
        format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            key.join(", "),
            updates.join(", ")
        )
    }
}

/// ` ORDER BY <key positions>` (nothing for a table without a key): the set's rows reach
/// the target sorted by the key, in the cast type's default order. Not needed for
/// correctness (keys are distinct within a set, so any order ends the same); it made
/// random-key upserts faster (docs/design.md, "Applying the stream").
fn key_order(schema: &TableSchema) -> String {
    if !schema.has_key() {
        return String::new();
    }
    let positions: Vec<String> = schema.key.iter().map(|k| (k + 1).to_string()).collect();
    format!(" ORDER BY {}", positions.join(", "))
}

/// `unnest($1::text[], …) AS u(c0, c3, …)`: one array parameter per listed column, each
/// named after the column's position.
fn unnest(columns: &[usize]) -> String {
    let arrays: Vec<String> = (1..=columns.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let names: Vec<String> = columns.iter().map(|c| format!("c{c}")).collect();
    format!("unnest({}) AS u({})", arrays.join(", "), names.join(", "))
}

/// `CAST(u.c<column> AS <target type>)`.
fn cast(casts: &[String], column: usize) -> String {
    format!("CAST(u.c{column} AS {})", casts[column])
}

/// `t.k = CAST(u.c<k> AS …) AND …` over the key columns.
fn set_key_match(schema: &TableSchema, cols: &[String], casts: &[String]) -> String {
    schema
        .key
        .iter()
        .map(|&k| format!("t.{} = {}", cols[k], cast(casts, k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// One statement to run: its shape and parameters.
pub(crate) struct Op {
    pub(crate) shape: Shape,
    pub(crate) params: Vec<Param>,
}

fn sent(row: &Row) -> Vec<bool> {
    row.iter().map(|v| !matches!(v, Value::Unchanged)).collect()
}

fn params_where<'a>(row: &'a Row, mask: &'a [bool]) -> impl Iterator<Item = Param> + 'a {
    row.iter()
        .zip(mask)
        .filter(|(_, on)| **on)
        .map(|(v, _)| Param::of(v))
}

fn key_params(schema: &TableSchema, row: &Row) -> Vec<Param> {
    schema.key.iter().map(|&k| Param::of(&row[k])).collect()
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
        params: new.iter().map(Param::of).collect(),
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
        let mut params: Vec<Param> = params_where(new, &set_mask).collect();
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
    let mut params: Vec<Param> = params_where(new, &set_mask).collect();
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

    fn schema(key: Vec<usize>) -> TableSchema {
        super::super::fixtures::table(key)
    }

    fn casts() -> Vec<String> {
        vec!["integer".into(), "text".into(), "jsonb".into()]
    }

    #[test]
    fn set_statements_unnest_text_arrays_and_cast_to_target_types() {
        let s = schema(vec![0]);
        assert_eq!(
            sql(&s, &casts(), &Shape::UpsertSet),
            "INSERT INTO \"s\".\"t\" (\"id\", \"a\", \"b\") OVERRIDING SYSTEM VALUE SELECT CAST(u.c0 AS integer), \
             CAST(u.c1 AS text), CAST(u.c2 AS jsonb) FROM unnest($1::text[], $2::text[], \
             $3::text[]) AS u(c0, c1, c2) ORDER BY 1 ON CONFLICT (\"id\") DO UPDATE SET \"a\" = \
             EXCLUDED.\"a\", \"b\" = EXCLUDED.\"b\""
        );
        assert_eq!(
            sql(&s, &casts(), &Shape::DeleteSet),
            "DELETE FROM \"s\".\"t\" AS t USING unnest($1::text[]) AS u(c0) \
             WHERE t.\"id\" = CAST(u.c0 AS integer)"
        );
        assert_eq!(
            sql(&s, &casts(), &Shape::UpdateSet(vec![true, false, true])),
            "UPDATE \"s\".\"t\" AS t SET \"b\" = CAST(u.c2 AS jsonb) FROM \
             unnest($1::text[], $2::text[]) AS u(c0, c2) WHERE t.\"id\" = CAST(u.c0 AS integer)"
        );
        assert!(sql(&schema(vec![]), &casts(), &Shape::InsertSet).ends_with("AS u(c0, c1, c2)"));
        assert!(sql(&schema(vec![0, 2]), &casts(), &Shape::InsertSet)
            .ends_with("AS u(c0, c1, c2) ORDER BY 1, 3"));
    }

    #[test]
    fn text_arrays_use_the_binary_array_format() {
        let p = Param::TextArray(vec![Some(Bytes::from_static(b"ab")), None]);
        let mut out = BytesMut::new();
        p.to_sql(&Type::TEXT_ARRAY, &mut out).unwrap();
        let expect: Vec<u8> = [1i32, 1, 25, 2, 1, 2]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .chain(*b"ab")
            .chain((-1i32).to_be_bytes())
            .collect();
        assert_eq!(&out[..], &expect[..]);
    }

    fn t(s: &str) -> Value {
        super::super::fixtures::text(s)
    }

    #[test]
    fn upsert_sql() {
        assert_eq!(
            sql(&schema(vec![0]), &casts(), &Shape::Upsert),
            "INSERT INTO \"s\".\"t\" (\"id\", \"a\", \"b\") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3) \
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
            sql(&s, &casts(), &ops[0].shape),
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
            sql(&s, &casts(), &op.shape),
            "DELETE FROM \"s\".\"t\" WHERE ctid = (SELECT ctid FROM \"s\".\"t\" WHERE \
             (CASE WHEN \"id\" IS NULL THEN NULL ELSE format('%s', \"id\") END) IS NOT \
             DISTINCT FROM $1::text AND (CASE WHEN \"a\" IS NULL THEN NULL ELSE \
             format('%s', \"a\") END) IS NOT DISTINCT FROM $2::text AND (CASE WHEN \"b\" IS \
             NULL THEN NULL ELSE format('%s', \"b\") END) IS NOT DISTINCT FROM $3::text LIMIT 1)"
        );
    }
}
