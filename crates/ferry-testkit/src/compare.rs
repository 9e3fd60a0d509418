//! The oracle every fault test ends with: source and target compared row by row, per table.
//!
//! ```text
//! source table ──► (key, md5(row)) per row ─┐
//!                                           ├─► missing / extra / different, per table
//! target table ──► (key, md5(row)) per row ─┘
//! ```
//!
//! A table is keyed by its primary key on the source (else its replica identity index); a
//! row is its `to_jsonb` text, whose keys are sorted, so column order does not matter and
//! every type compares in one canonical text form. Keyless tables compare whole rows as
//! multisets: a row twice on one side and once on the other is one missing (or extra) row.
//!
//! Only an md5 of each row is kept in memory, so tables of millions of rows compare in a few
//! hundred megabytes at most. Examples in the report name keys, never row values.

use std::collections::HashMap;
use std::fmt;

use crate::PgCluster;

/// How many example keys a [`TableDiff`] keeps.
const EXAMPLES: usize = 5;

/// One table's comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDiff {
    /// `schema.table`.
    pub table: String,
    /// The key columns rows are matched by; empty when whole rows are matched.
    pub key: Vec<String>,
    /// Rows on the source.
    pub source_rows: u64,
    /// Rows on the target.
    pub target_rows: u64,
    /// Source rows the target lacks.
    pub missing: u64,
    /// Target rows the source lacks.
    pub extra: u64,
    /// Keys on both sides whose rows differ (always 0 for keyless tables).
    pub different: u64,
    /// A few keys (or, for keyless tables, row hashes) that differ, for the failure report.
    pub examples: Vec<String>,
}

impl TableDiff {
    /// 0 missing, 0 extra, 0 different.
    pub fn is_identical(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }
}

/// The comparison of several tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// One entry per table, in the order asked.
    pub tables: Vec<TableDiff>,
}

impl Comparison {
    /// Every table identical.
    pub fn is_identical(&self) -> bool {
        self.tables.iter().all(TableDiff::is_identical)
    }

    /// Sums over the tables: (missing, extra, different).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.tables.iter().fold((0, 0, 0), |(m, e, d), t| {
            (m + t.missing, e + t.extra, d + t.different)
        })
    }

    /// Panics with the report unless every table is identical.
    pub fn assert_identical(&self) {
        assert!(self.is_identical(), "source and target differ:\n{self}");
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<32} {:>10} {:>10} {:>8} {:>8} {:>9}  matched by",
            "table", "source", "target", "missing", "extra", "different"
        )?;
        for t in &self.tables {
            let key = if t.key.is_empty() {
                "whole rows".to_string()
            } else {
                t.key.join(", ")
            };
            writeln!(
                f,
                "{:<32} {:>10} {:>10} {:>8} {:>8} {:>9}  {key}",
                t.table, t.source_rows, t.target_rows, t.missing, t.extra, t.different
            )?;
            if !t.examples.is_empty() {
                writeln!(f, "    e.g. {}", t.examples.join("; "))?;
            }
        }
        let (missing, extra, different) = self.totals();
        write!(
            f,
            "total: {missing} missing / {extra} extra / {different} different"
        )
    }
}

/// Compares `tables` (`schema.table`, or `table` for `public.table`) of `source_db` on
/// `source` with the same tables of `target_db` on `target`.
///
/// Panics when a table is missing on either side: that is a failed comparison too, and the
/// clearest one.
pub fn compare_tables(
    source: &PgCluster,
    source_db: &str,
    target: &PgCluster,
    target_db: &str,
    tables: &[&str],
) -> Comparison {
    let tables = tables
        .iter()
        .map(|table| {
            let table = qualified(table);
            let key = key_columns(source, source_db, &table);
            let source_rows = read_rows(source, source_db, &table, &key);
            let target_rows = read_rows(target, target_db, &table, &key);
            diff(table, key, &source_rows, &target_rows)
        })
        .collect();
    Comparison { tables }
}

/// Every ordinary table of `db` outside the system schemas and Ferry's `_ferry`, as
/// `schema.table`, sorted: what a changefeed of `*.*` replicates.
pub fn user_tables(cluster: &PgCluster, db: &str) -> Vec<String> {
    let out = cluster.psql(
        db,
        "SELECT format('%s.%s', n.nspname, c.relname)
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_ferry')
           AND n.nspname NOT LIKE 'pg_toast%'
         ORDER BY 1",
    );
    out.lines().map(str::to_owned).collect()
}

/// `table` as `schema.table` (already-qualified names are kept).
fn qualified(table: &str) -> String {
    if table.contains('.') {
        table.to_owned()
    } else {
        format!("public.{table}")
    }
}

/// The SQL text of `schema.table` with both parts quoted.
fn quoted(table: &str) -> String {
    let (schema, name) = table.split_once('.').expect("qualified names hold a dot");
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The primary key's columns on the source, else the replica identity index's, else none.
fn key_columns(cluster: &PgCluster, db: &str, table: &str) -> Vec<String> {
    let sql = format!(
        "SELECT a.attname FROM pg_catalog.pg_index i
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = {}::regclass
           AND i.indexrelid = (
             SELECT j.indexrelid FROM pg_catalog.pg_index j
             WHERE j.indrelid = i.indrelid AND (j.indisprimary OR j.indisreplident)
             ORDER BY j.indisprimary DESC LIMIT 1)
         ORDER BY k.ord",
        quote_literal(&quoted(table))
    );
    cluster
        .psql(db, &sql)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Each row as (key text, md5 of the row's jsonb text); the key is the row's md5 too when
/// `key` is empty.
fn read_rows(cluster: &PgCluster, db: &str, table: &str, key: &[String]) -> Vec<(String, String)> {
    let row_hash = "md5(to_jsonb(t)::text)";
    let key_text = if key.is_empty() {
        row_hash.to_string()
    } else {
        let columns: Vec<String> = key
            .iter()
            .map(|c| format!("t.{}", quote_ident(c)))
            .collect();
        format!("jsonb_build_array({})::text", columns.join(", "))
    };
    // jsonb text escapes tabs and newlines, and md5 is hex: the separator cannot occur inside.
    let sql = format!(
        "SELECT {key_text} || E'\\t' || {row_hash} FROM {} t",
        quoted(table)
    );
    cluster
        .psql(db, &sql)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (key, row) = line
                .rsplit_once('\t')
                .unwrap_or_else(|| panic!("unexpected comparison line from {table}: {line}"));
            (key.to_owned(), row.to_owned())
        })
        .collect()
}

/// Matches two sides' rows by key (or as multisets of whole rows when `key` is empty).
fn diff(
    table: String,
    key: Vec<String>,
    source: &[(String, String)],
    target: &[(String, String)],
) -> TableDiff {
    let mut result = TableDiff {
        table,
        key,
        source_rows: source.len() as u64,
        target_rows: target.len() as u64,
        missing: 0,
        extra: 0,
        different: 0,
        examples: Vec::new(),
    };
    let note = |examples: &mut Vec<String>, what: &str, key: &str| {
        if examples.len() < EXAMPLES {
            examples.push(format!("{what} {key}"));
        }
    };
    if result.key.is_empty() {
        let mut counts: HashMap<&str, i64> = HashMap::new();
        for (row, _) in source {
            *counts.entry(row).or_default() += 1;
        }
        for (row, _) in target {
            *counts.entry(row).or_default() -= 1;
        }
        let mut rows: Vec<_> = counts.into_iter().filter(|(_, n)| *n != 0).collect();
        rows.sort();
        for (row, n) in rows {
            if n > 0 {
                result.missing += n as u64;
                note(&mut result.examples, "missing row md5", row);
            } else {
                result.extra += n.unsigned_abs();
                note(&mut result.examples, "extra row md5", row);
            }
        }
        return result;
    }
    let target_by_key: HashMap<&str, &str> = target
        .iter()
        .map(|(k, r)| (k.as_str(), r.as_str()))
        .collect();
    let source_keys: std::collections::HashSet<&str> =
        source.iter().map(|(k, _)| k.as_str()).collect();
    for (key, row) in source {
        match target_by_key.get(key.as_str()) {
            None => {
                result.missing += 1;
                note(&mut result.examples, "missing key", key);
            }
            Some(target_row) if target_row != row => {
                result.different += 1;
                note(&mut result.examples, "different key", key);
            }
            Some(_) => {}
        }
    }
    for (key, _) in target {
        if !source_keys.contains(key.as_str()) {
            result.extra += 1;
            note(&mut result.examples, "extra key", key);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, r)| (k.to_string(), r.to_string()))
            .collect()
    }

    #[test]
    fn keyed_tables_count_missing_extra_and_different() {
        let source = rows(&[("[1]", "a"), ("[2]", "b"), ("[3]", "c")]);
        let target = rows(&[("[1]", "a"), ("[2]", "B"), ("[4]", "d")]);
        let d = diff("public.t".into(), vec!["id".into()], &source, &target);
        assert_eq!((d.missing, d.extra, d.different), (1, 1, 1));
        assert_eq!((d.source_rows, d.target_rows), (3, 3));
        assert!(d.examples.contains(&"missing key [3]".to_string()));
        assert!(!d.is_identical());
    }

    #[test]
    fn keyless_tables_compare_multisets_of_rows() {
        let source = rows(&[("x", "x"), ("x", "x"), ("y", "y")]);
        let target = rows(&[("x", "x"), ("y", "y"), ("y", "y"), ("z", "z")]);
        let d = diff("public.h".into(), vec![], &source, &target);
        assert_eq!((d.missing, d.extra, d.different), (1, 2, 0));
        let same = diff("public.h".into(), vec![], &source, &source);
        assert!(same.is_identical());
    }

    #[test]
    fn names_are_qualified_and_quoted() {
        assert_eq!(qualified("t"), "public.t");
        assert_eq!(qualified("s.t"), "s.t");
        assert_eq!(quoted("s.T\"x"), "\"s\".\"T\"\"x\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
