//! The comparison of one chunk: each side's rows reduced to key → hash of the whole row
//! (for a table without a key, row → how many times it occurs), then matched.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use ferry_core::{Row, TableSchema, Value};

/// A row's identity: its key's values (for a table without a key, all its values).
pub(super) type Key = Vec<Value>;

/// One side's rows of a chunk.
#[derive(Default)]
pub(super) struct Side {
    rows: HashMap<Key, Entry>,
    /// Rows read.
    pub(super) count: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Entry {
    hash: u64,
    occurrences: u64,
}

impl Side {
    /// Adds one row of `schema`.
    pub(super) fn add(&mut self, schema: &TableSchema, row: Row) {
        self.count += 1;
        if schema.has_key() {
            let key = schema.key.iter().map(|&k| row[k].clone()).collect();
            // SipHash with fixed keys: the same row hashes alike on both sides, in every
            // process (a hash is never stored across versions).
            let mut hasher = std::hash::DefaultHasher::new();
            row.hash(&mut hasher);
            let hash = hasher.finish();
            self.rows.insert(
                key,
                Entry {
                    hash,
                    occurrences: 1,
                },
            );
        } else {
            self.rows
                .entry(row)
                .or_insert(Entry {
                    hash: 0,
                    occurrences: 0,
                })
                .occurrences += 1;
        }
    }
}

/// Keys that differ in a chunk, each with how many rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Found {
    pub(super) missing: HashMap<Key, u64>,
    pub(super) extra: HashMap<Key, u64>,
    pub(super) different: HashMap<Key, u64>,
}

impl Found {
    /// The source's and the target's rows compared.
    pub(super) fn between(source: &Side, target: &Side) -> Found {
        let mut found = Found::default();
        for (key, s) in &source.rows {
            match target.rows.get(key) {
                None => {
                    found.missing.insert(key.clone(), s.occurrences);
                }
                Some(t) if t.hash != s.hash => {
                    found.different.insert(key.clone(), 1);
                }
                Some(t) if t.occurrences < s.occurrences => {
                    found
                        .missing
                        .insert(key.clone(), s.occurrences - t.occurrences);
                }
                Some(t) if t.occurrences > s.occurrences => {
                    found
                        .extra
                        .insert(key.clone(), t.occurrences - s.occurrences);
                }
                Some(_) => {}
            }
        }
        for (key, t) in &target.rows {
            if !source.rows.contains_key(key) {
                found.extra.insert(key.clone(), t.occurrences);
            }
        }
        found
    }

    /// Whether nothing differs.
    pub(super) fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }

    /// What differed before and still differs in `newer` (as `newer` has it): a key the
    /// stream changed between the two reads drops out.
    pub(super) fn persisting(self, newer: Found) -> Found {
        let seen = |key: &Key| {
            self.missing.contains_key(key)
                || self.extra.contains_key(key)
                || self.different.contains_key(key)
        };
        let keep = |m: HashMap<Key, u64>| m.into_iter().filter(|(k, _)| seen(k)).collect();
        Found {
            missing: keep(newer.missing),
            extra: keep(newer.extra),
            different: keep(newer.different),
        }
    }

    /// Every key that differs.
    pub(super) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.missing
            .keys()
            .chain(self.extra.keys())
            .chain(self.different.keys())
    }
}

/// A key as text: its value, `(a, b)` for several, `NULL` for a null.
pub(super) fn key_text(key: &Key) -> String {
    let value = |v: &Value| match v {
        Value::Text(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Null => "NULL".to_string(),
        Value::Unchanged => "?".to_string(),
    };
    match key.as_slice() {
        [one] => value(one),
        many => format!(
            "({})",
            many.iter().map(value).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Keys as sorted texts, at most `limit`.
pub(super) fn sample(keys: &HashMap<Key, u64>, limit: usize) -> Vec<String> {
    let mut texts: Vec<String> = keys.keys().map(key_text).collect();
    texts.sort();
    texts.truncate(limit);
    texts
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{ColumnSchema, ReplicaIdentity, TableId};

    fn schema(key: Vec<usize>) -> TableSchema {
        let column = |name: &str| ColumnSchema {
            name: name.into(),
            type_name: "text".into(),
            type_oid: 25,
            logical: ferry_core::LogicalType::Text,
            nullable: true,
            missing_value: None,
            has_default: false,
        };
        TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![column("id"), column("v")],
            key,
            identity: ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: vec![],
            dialect: ferry_core::Dialect::Postgres,
        }
    }

    fn row(id: &str, v: &str) -> Row {
        vec![
            Value::Text(id.to_string().into()),
            Value::Text(v.to_string().into()),
        ]
    }

    fn side(schema: &TableSchema, rows: &[(&str, &str)]) -> Side {
        let mut side = Side::default();
        for (id, v) in rows {
            side.add(schema, row(id, v));
        }
        side
    }

    #[test]
    fn keyed_rows_are_missing_extra_or_different() {
        let s = schema(vec![0]);
        let source = side(&s, &[("1", "a"), ("2", "b"), ("3", "c")]);
        let target = side(&s, &[("1", "a"), ("3", "x"), ("4", "d")]);
        let found = Found::between(&source, &target);
        assert_eq!(sample(&found.missing, 100), ["2"]);
        assert_eq!(sample(&found.different, 100), ["3"]);
        assert_eq!(sample(&found.extra, 100), ["4"]);
        assert!(Found::between(&source, &source).is_empty());
    }

    #[test]
    fn rows_without_a_key_compare_as_multisets() {
        let s = schema(vec![]);
        let source = side(&s, &[("1", "a"), ("1", "a"), ("2", "b")]);
        let target = side(&s, &[("1", "a"), ("2", "b"), ("2", "b")]);
        let found = Found::between(&source, &target);
        assert_eq!(found.missing.values().sum::<u64>(), 1);
        assert_eq!(found.extra.values().sum::<u64>(), 1);
        assert_eq!(sample(&found.missing, 100), ["(1, a)"]);
    }

    #[test]
    fn only_differences_seen_every_time_persist() {
        let s = schema(vec![0]);
        let source = side(&s, &[("1", "a"), ("2", "b")]);
        let first = Found::between(&source, &side(&s, &[("1", "x")]));
        let again = Found::between(&source, &side(&s, &[("1", "a"), ("3", "c")]));
        let kept = first.persisting(again);
        assert_eq!(sample(&kept.missing, 100), ["2"]);
        assert!(kept.different.is_empty() && kept.extra.is_empty());
    }
}
