//! Following a source table's column changes on a target table the changefeed owns:
//! columns added, columns dropped (only those Ferry created, recorded in
//! `_ferry.created_columns`), and types widened (a column Ferry created whose new type
//! holds every value of the old one); anything else stops the changefeed naming the
//! column, before anything is written.
//!
//! # Between batches
//! MariaDB commits DDL implicitly, and an `ALTER TABLE` waits for the lock the open
//! batch's transaction holds on a table it wrote. So a table changes only while the open
//! batch holds none of its changes: [`needs_own_batch`] tells the engine, which then ends
//! the batch before the source transaction that announced the new shape. The `ALTER`
//! runs on the sink's side connection, autocommitted, as one statement (atomic in
//! MariaDB). A crash between it and the next batch's commit re-delivers that transaction:
//! the [`plan`] is made from the target's columns as they are, so it finds the change
//! done and plans nothing.
//!
//! [`needs_own_batch`]: ferry_core::Sink::needs_own_batch

use std::collections::HashSet;

use ferry_core::{SinkError, TableId, TableSchema};

use super::ownership::FoundColumn;
use super::types::{column_type, quote, Column};

/// What brings a target table in line with the source's shape.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// `ALTER TABLE` clauses, in order.
    pub(super) clauses: Vec<String>,
    /// Columns added (Ferry's from then on).
    pub(super) added: Vec<String>,
    /// Columns of Ferry's dropped.
    pub(super) dropped: Vec<String>,
    /// Added columns the source filled with a default it does not tell (existing rows got
    /// a value no row event carries).
    pub(super) unknown_fill: Vec<String>,
}

impl Plan {
    pub(super) fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }
}

/// MariaDB compares column names without case.
fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether `new` changes `old`'s columns on the target (names, or the types they map to).
pub(super) fn changes_columns(old: &TableSchema, new: &TableSchema) -> bool {
    if old.columns.len() != new.columns.len() {
        return true;
    }
    (0..new.columns.len()).any(|i| {
        let Some(j) = old
            .columns
            .iter()
            .position(|c| same(&c.name, &new.columns[i].name))
        else {
            return true;
        };
        match (column_type(old, j), column_type(new, i)) {
            (Ok(a), Ok(b)) => a != b,
            _ => true,
        }
    })
}

/// The changes that bring the target's `found` columns in line with `schema`, touching
/// only the columns Ferry `created`; `known` is the shape the sink last wrote the table
/// with in this session, if any (a type change is judged against it, else against the
/// target's type). A definite error (naming table and column) when the change cannot be
/// followed exactly.
pub(super) fn plan(
    schema: &TableSchema,
    found: &[FoundColumn],
    created: &HashSet<String>,
    known: Option<&TableSchema>,
) -> Result<Plan, SinkError> {
    let id = &schema.id;
    let is_created = |name: &str| created.iter().any(|c| same(c, name));
    let added: Vec<usize> = (0..schema.columns.len())
        .filter(|&i| !found.iter().any(|f| same(&f.name, &schema.columns[i].name)))
        .collect();
    let dropped: Vec<&FoundColumn> = found
        .iter()
        .filter(|f| schema.columns.iter().all(|c| !same(&c.name, &f.name)))
        .filter(|f| is_created(&f.name))
        .collect();
    if !added.is_empty() && !dropped.is_empty() {
        return Err(SinkError::Unsupported {
            message: format!(
                "table {id}: column(s) {} disappeared and {} appeared in one change (a \
                 rename?); Ferry stops rather than drop data. Rename the target columns to \
                 match, then resume the changefeed",
                names(dropped.iter().map(|f| f.name.as_str())),
                names(added.iter().map(|&i| schema.columns[i].name.as_str())),
            ),
        });
    }
    let mut out = Plan::default();
    for &i in &added {
        let column = &schema.columns[i];
        let mut clause = format!(
            "ADD COLUMN {} {}",
            quote(&column.name),
            column_type(schema, i)?
        );
        if !column.nullable || schema.key.contains(&i) {
            clause.push_str(" NOT NULL");
        }
        match &column.missing_value {
            // Existing rows got this value on the source without a row event: the
            // column's default gives them the same (as the source's column has it).
            Some(value) => {
                let mut literal = Vec::new();
                Column::all(schema)[i].write(id, value.as_bytes(), &mut literal)?;
                clause.push_str(" DEFAULT ");
                clause.push_str(&String::from_utf8_lossy(&literal));
            }
            None if column.has_default => out.unknown_fill.push(column.name.clone()),
            None => {}
        }
        out.clauses.push(clause);
        out.added.push(column.name.clone());
    }
    for f in &dropped {
        out.clauses.push(format!("DROP COLUMN {}", quote(&f.name)));
        out.dropped.push(f.name.clone());
    }
    for (i, column) in schema.columns.iter().enumerate() {
        let Some(f) = found.iter().find(|f| same(&f.name, &column.name)) else {
            continue;
        };
        if !is_created(&f.name) {
            // The user's column keeps its type; values that do not fit are refused by
            // the server (strict mode).
            continue;
        }
        let new = column_type(schema, i)?;
        if matches!((parse(&f.column_type), parse(&new)), (Some(a), Some(b)) if a == b) {
            continue;
        }
        let before = known.and_then(|k| {
            let j = k.columns.iter().position(|c| same(&c.name, &column.name))?;
            column_type(k, j).ok()
        });
        let widen = match &before {
            Some(old) if *old == new => false,
            Some(old) => match (parse(old), parse(&new)) {
                (Some(a), Some(b)) if a == b => false,
                (Some(a), Some(b)) if widens(&a, &b) => true,
                _ => return Err(retype_refused(id, &column.name, old, &new)),
            },
            // Judged against the target's type: only where both are understood.
            None => match (parse(&f.column_type), parse(&new)) {
                (Some(a), Some(b)) if a == b => false,
                (Some(a), Some(b)) if widens(&a, &b) => true,
                (Some(_), Some(_)) => {
                    return Err(retype_refused(id, &column.name, &f.column_type, &new))
                }
                _ => false,
            },
        };
        if widen {
            let mut clause = format!("MODIFY COLUMN {} {new}", quote(&column.name));
            if !column.nullable || schema.key.contains(&i) {
                clause.push_str(" NOT NULL");
            }
            out.clauses.push(clause);
        }
    }
    Ok(out)
}

fn retype_refused(id: &TableId, column: &str, old: &str, new: &str) -> SinkError {
    SinkError::Unsupported {
        message: format!(
            "column {column} of {id} changed type on the source: on the target from {old} to \
             {new}, which does not hold every value the column holds now (the MySQL sink \
             follows only widening type changes: a larger integer, decimal, text, binary or \
             fractional-seconds type, more enum/set labels at the end); change the target \
             column yourself (ALTER TABLE … MODIFY COLUMN), then resume"
        ),
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

/// A column type as far as widening goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ty {
    /// `rank`: tinyint 0 … bigint 4.
    Int {
        rank: u8,
        unsigned: bool,
    },
    Decimal {
        precision: u32,
        scale: u32,
        unsigned: bool,
    },
    Float,
    Double,
    /// CHAR/VARCHAR of `len` characters.
    Char {
        len: u64,
        var: bool,
    },
    /// BINARY/VARBINARY of `len` bytes.
    Binary {
        len: u64,
        var: bool,
    },
    /// TINYTEXT 0 … LONGTEXT 3 (MariaDB's JSON is LONGTEXT).
    Text(u8),
    /// TINYBLOB 0 … LONGBLOB 3.
    Blob(u8),
    DateTime(u8),
    Timestamp(u8),
    Time(u8),
    Date,
    Year,
    Enum(Vec<String>),
    Set(Vec<String>),
}

/// Bytes a TEXT/BLOB of each rank holds.
const LOB_BYTES: [u64; 4] = [255, 65_535, 16_777_215, 4_294_967_295];

/// Parses a MariaDB column type (as `information_schema.COLUMNS.COLUMN_TYPE` shows it, or
/// as Ferry writes it); `None` for a type it does not judge.
fn parse(text: &str) -> Option<Ty> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    for (word, set) in [("enum(", false), ("set(", true)] {
        if lower.starts_with(word) {
            let inner = &trimmed[word.len()..trimmed.rfind(')')?];
            let labels = labels(inner)?;
            return Some(if set {
                Ty::Set(labels)
            } else {
                Ty::Enum(labels)
            });
        }
    }
    // The character set and collation do not change what a column holds here.
    let base = [" character set ", " charset ", " collate "]
        .iter()
        .filter_map(|w| lower.find(w))
        .min()
        .map_or(lower.as_str(), |at| &lower[..at]);
    let mut words: Vec<&str> = base.split_whitespace().collect();
    let unsigned = words.contains(&"unsigned");
    words.retain(|w| *w != "unsigned" && *w != "signed" && *w != "zerofill");
    let head = words.join(" ");
    let (name, args) = match head.find('(') {
        Some(open) => {
            let close = head.rfind(')')?;
            let args: Vec<u64> = head[open + 1..close]
                .split(',')
                .map(|a| a.trim().parse().ok())
                .collect::<Option<_>>()?;
            (head[..open].trim(), args)
        }
        None => (head.as_str(), Vec::new()),
    };
    let fsp = || u8::try_from(args.first().copied().unwrap_or(0)).ok();
    let len = || args.first().copied();
    let int = |rank| Some(Ty::Int { rank, unsigned });
    match name {
        "boolean" | "bool" => int(0),
        "tinyint" => int(0),
        "smallint" => int(1),
        "mediumint" => int(2),
        "int" | "integer" => int(3),
        "bigint" => int(4),
        "decimal" | "numeric" | "dec" | "fixed" => {
            let precision = u32::try_from(args.first().copied().unwrap_or(10)).ok()?;
            let scale = u32::try_from(args.get(1).copied().unwrap_or(0)).ok()?;
            Some(Ty::Decimal {
                precision,
                scale,
                unsigned,
            })
        }
        "float" if args.is_empty() => Some(Ty::Float),
        "double" | "double precision" | "real" if args.is_empty() => Some(Ty::Double),
        "char" => Some(Ty::Char {
            len: len().unwrap_or(1),
            var: false,
        }),
        "varchar" => Some(Ty::Char {
            len: len()?,
            var: true,
        }),
        "binary" => Some(Ty::Binary {
            len: len().unwrap_or(1),
            var: false,
        }),
        "varbinary" => Some(Ty::Binary {
            len: len()?,
            var: true,
        }),
        "tinytext" => Some(Ty::Text(0)),
        "text" if args.is_empty() => Some(Ty::Text(1)),
        "mediumtext" => Some(Ty::Text(2)),
        "longtext" | "json" => Some(Ty::Text(3)),
        "tinyblob" => Some(Ty::Blob(0)),
        "blob" if args.is_empty() => Some(Ty::Blob(1)),
        "mediumblob" => Some(Ty::Blob(2)),
        "longblob" => Some(Ty::Blob(3)),
        "datetime" => fsp().map(Ty::DateTime),
        "timestamp" => fsp().map(Ty::Timestamp),
        "time" => fsp().map(Ty::Time),
        "date" if args.is_empty() => Some(Ty::Date),
        "year" => Some(Ty::Year),
        _ => None,
    }
}

/// The labels of an ENUM/SET type's list (`'a','b''c'`).
fn labels(list: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = list.chars().peekable();
    loop {
        if chars.next()? != '\'' {
            return None;
        }
        let mut label = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => label.push(chars.next()?),
                c => label.push(c),
            }
        }
        out.push(label);
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// Whether every value of `old` is a value of `new`, unchanged.
fn widens(old: &Ty, new: &Ty) -> bool {
    use Ty::*;
    // Unsigned into signed needs a larger type; signed never becomes unsigned.
    let sign = |a: bool, b: bool, larger: bool| a == b || (a && !b && larger);
    match (old, new) {
        (
            Int {
                rank: a,
                unsigned: ua,
            },
            Int {
                rank: b,
                unsigned: ub,
            },
        ) => b >= a && sign(*ua, *ub, b > a),
        (
            Decimal {
                precision: p1,
                scale: s1,
                unsigned: u1,
            },
            Decimal {
                precision: p2,
                scale: s2,
                unsigned: u2,
            },
        ) => {
            let (int1, int2) = (p1.saturating_sub(*s1), p2.saturating_sub(*s2));
            s2 >= s1 && int2 >= int1 && sign(*u1, *u2, int2 > int1)
        }
        (Float, Double) => true,
        (Char { len: a, var: va }, Char { len: b, var: vb }) => b >= a && (va == vb || *vb),
        // Four bytes per character (utf8mb4).
        (Char { len, .. }, Text(rank)) => len * 4 <= LOB_BYTES[usize::from(*rank)],
        (Text(a), Text(b)) | (Blob(a), Blob(b)) => b >= a,
        (Binary { len: a, var: va }, Binary { len: b, var: vb }) => va == vb && b >= a,
        (Binary { len, var: true }, Blob(rank)) => *len <= LOB_BYTES[usize::from(*rank)],
        (DateTime(a), DateTime(b)) | (Timestamp(a), Timestamp(b)) | (Time(a), Time(b)) => b >= a,
        (Enum(a), Enum(b)) | (Set(a), Set(b)) => b.len() >= a.len() && b.starts_with(a),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{ColumnSchema, Dialect, LogicalType, ReplicaIdentity};

    fn schema(cols: &[(&str, &str)]) -> TableSchema {
        TableSchema {
            id: TableId::new("shop", "t"),
            columns: cols
                .iter()
                .map(|(n, t)| ColumnSchema {
                    name: n.to_string(),
                    type_name: t.to_string(),
                    type_oid: 0,
                    logical: LogicalType::Text,
                    nullable: *n != "id",
                    missing_value: None,
                    has_default: false,
                })
                .collect(),
            key: vec![0],
            identity: ReplicaIdentity::Full,
            user_types: Vec::new(),
            partition_of: Vec::new(),
            dialect: Dialect::Mysql,
        }
    }

    fn found(cols: &[(&str, &str)]) -> Vec<FoundColumn> {
        cols.iter()
            .map(|(n, t)| FoundColumn {
                name: n.to_string(),
                nullable: *n != "id",
                has_default: false,
                column_type: t.to_string(),
            })
            .collect()
    }

    fn all(cols: &[&str]) -> HashSet<String> {
        cols.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn adds_drops_and_widens_its_own_columns() {
        let s = schema(&[
            ("id", "bigint(20)"),
            ("v", "varchar(40)"),
            ("extra", "int(11)"),
        ]);
        let f = found(&[("id", "int(11)"), ("v", "varchar(20)"), ("gone", "int(11)")]);
        // `gone` dropped and `extra` added in one change looks like a rename: refused.
        let err = plan(&s, &f, &all(&["id", "v", "gone"]), None).unwrap_err();
        assert!(err.to_string().contains("a rename?"), "{err}");
        let f = found(&[("id", "int(11)"), ("v", "varchar(20)")]);
        let p = plan(&s, &f, &all(&["id", "v"]), None).unwrap();
        assert_eq!(
            p.clauses,
            [
                "ADD COLUMN `extra` int(11)",
                "MODIFY COLUMN `id` bigint(20) NOT NULL",
                "MODIFY COLUMN `v` varchar(40)",
            ]
        );
        assert_eq!(p.added, ["extra"]);
        let s = schema(&[("id", "int(11)")]);
        let f = found(&[("id", "int(11)"), ("V", "varchar(20)")]);
        let p = plan(&s, &f, &all(&["id", "v"]), None).unwrap();
        assert_eq!(p.clauses, ["DROP COLUMN `V`"]);
        assert_eq!(p.dropped, ["V"]);
    }

    #[test]
    fn a_change_found_done_plans_nothing() {
        // After a crash between the ALTER and the batch's commit, the same shape again.
        let s = schema(&[("id", "int(11)"), ("extra", "int(11)")]);
        let f = found(&[("id", "int(11)"), ("extra", "int(11)")]);
        let known = schema(&[("id", "int(11)")]);
        assert!(plan(&s, &f, &all(&["id"]), Some(&known))
            .unwrap()
            .is_empty());
        assert!(plan(&s, &f, &all(&["id"]), None).unwrap().is_empty());
        let s = schema(&[("id", "bigint(20)")]);
        let f = found(&[("id", "bigint(20)")]);
        let known = schema(&[("id", "int(11)"), ("gone", "text")]);
        assert!(plan(&s, &f, &all(&["id", "gone"]), Some(&known))
            .unwrap()
            .is_empty());
        assert!(plan(&s, &f, &all(&["id", "gone"]), None)
            .unwrap()
            .is_empty());
        // Not done yet: the same shapes plan the change.
        let f = found(&[("id", "int(11)"), ("gone", "text")]);
        let p = plan(&s, &f, &all(&["id", "gone"]), Some(&known)).unwrap();
        assert_eq!(
            p.clauses,
            [
                "DROP COLUMN `gone`",
                "MODIFY COLUMN `id` bigint(20) NOT NULL"
            ]
        );
    }

    #[test]
    fn never_drops_or_retypes_a_column_it_did_not_create() {
        let s = schema(&[("id", "bigint(20)"), ("v", "text")]);
        let f = found(&[("id", "int(11)"), ("v", "int(11)"), ("note", "text")]);
        assert!(plan(&s, &f, &all(&[]), None).unwrap().is_empty());
    }

    #[test]
    fn refuses_a_type_change_that_loses_values() {
        let s = schema(&[("id", "int(11)"), ("v", "int(11)")]);
        let known = schema(&[("id", "int(11)"), ("v", "bigint(20)")]);
        let f = found(&[("id", "int(11)"), ("v", "bigint(20)")]);
        let err = plan(&s, &f, &all(&["id", "v"]), Some(&known)).unwrap_err();
        assert!(
            err.to_string().contains("column v of shop.t changed type"),
            "{err}"
        );
        let err = plan(&s, &f, &all(&["id", "v"]), None).unwrap_err();
        assert!(
            err.to_string().contains("from bigint(20) to int(11)"),
            "{err}"
        );
    }

    #[test]
    fn widening_rules() {
        let w = |a: &str, b: &str| widens(&parse(a).unwrap(), &parse(b).unwrap());
        assert!(w("int(11)", "BIGINT"));
        assert!(w("int(10) unsigned", "bigint(20)"));
        assert!(!w("int(11) unsigned", "int(11)"));
        assert!(!w("int(11)", "int(10) unsigned"));
        assert!(!w("bigint(20)", "int(11)"));
        assert!(w("decimal(10,2)", "DECIMAL(12,3)"));
        assert!(!w("decimal(10,2)", "decimal(10,3)"));
        assert!(w("float", "double"));
        assert!(w("char(4)", "varchar(8)"));
        assert!(!w("varchar(8)", "char(8)"));
        assert!(w(
            "varchar(40)",
            "LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"
        ));
        assert!(w("varbinary(16)", "blob"));
        assert!(w("datetime(3)", "datetime(6)"));
        assert!(!w("datetime(6)", "timestamp(6)"));
        assert!(w("enum('a','b')", "enum('a','b','c''d')"));
        assert!(!w("enum('a','b')", "enum('b','a')"));
        assert_eq!(parse("json"), parse("longtext"));
        assert_eq!(parse("BOOLEAN"), parse("tinyint(1)"));
        assert_eq!(parse("bit(3)"), None);
    }

    #[test]
    fn changed_columns_are_told_apart_from_equal_ones() {
        let a = schema(&[("id", "int(11)"), ("v", "text")]);
        assert!(!changes_columns(&a, &a));
        assert!(changes_columns(&a, &schema(&[("id", "int(11)")])));
        assert!(changes_columns(
            &a,
            &schema(&[("id", "bigint(20)"), ("v", "text")])
        ));
    }
}
