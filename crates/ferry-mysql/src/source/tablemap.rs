//! The shape a TABLE_MAP event describes: the table as it was at the event's position in
//! the binlog, whatever happened to it since.
//!
//! ```text
//! TABLE_MAP ─► read ─► per column: COLUMN_TYPE text + character set + nullable, the key
//!                         (binlog type, metadata bytes, signedness, collation id, labels)
//!           ─► shape ─► TableSchema + kinds, each column decoded as classify() reads it;
//!                       what the event does not say comes from a known column that matches
//! ```
//!
//! With `binlog_row_metadata=FULL` (the pre-flight check requires it) a TABLE_MAP gives every
//! column's name, binlog type and metadata (byte lengths, precision and scale, fractional
//! digits, bits, blob sizes), nullability, signedness (numeric columns), collation (string,
//! ENUM and SET columns), ENUM and SET labels, and the primary key. [`read`] turns each column
//! into the `COLUMN_TYPE` text MariaDB's catalog prints for it (`int(10) unsigned`,
//! `varchar(20)`, `enum('a','b')`) and its character set, so [`types::classify`] gives the
//! same kind as for a column read from the catalog: one mapping, two inputs.
//!
//! # What the event does not say
//! [`shape`] takes the rest from the columns the stream already knows (its tracked shape and,
//! where consulted, the catalog): a known column of the same name whose kind and type match
//! keeps its definition (its exact `COLUMN_TYPE`, such as `int(5)`, and whether it has a
//! default); nullability is always the event's. MariaDB's JSON is a LONGTEXT with a
//! `json_valid` check that no event carries: a LONGTEXT is JSON where the known column of that
//! name is. A column nothing knew (added and dropped again while the changefeed was behind)
//! is taken as the event describes it, as having a default when it is NOT NULL (MariaDB gave
//! the rows that existed a value without any row event).
//!
//! # Invariant
//! The kinds returned are the event's columns, in its order and number, so a row event after
//! it decodes column by column with the types in force at its position, never the catalog's.

use std::collections::HashMap;

use ferry_core::{ColumnSchema, ErrorClass, SourceError, TableId, TableSchema};
use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::consts::ColumnType;

use super::types::{self, Charset, Kind, Unsupported};
use super::values::decode_charset;

/// The character set behind a collation id, as TABLE_MAP events name collations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Collation {
    /// The character set's name (`utf8mb4`, `latin1`, `binary`).
    pub(crate) charset: String,
    /// Bytes per character at most: a string column's metadata gives its length in bytes.
    pub(crate) max_len: u8,
}

/// Every collation of the server by id (read once per stream: see `catalog::collations`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Collations(pub(crate) HashMap<u16, Collation>);

/// One column as a TABLE_MAP event describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MapColumn {
    pub(crate) name: String,
    /// As the catalog's `COLUMN_TYPE` prints it, with MariaDB's default display widths.
    pub(crate) column_type: String,
    /// The character set of a string, ENUM or SET column; `None` for others and binary
    /// strings.
    pub(crate) charset: Option<String>,
    pub(crate) nullable: bool,
}

/// A table as a TABLE_MAP event describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableMap {
    pub(crate) columns: Vec<MapColumn>,
    /// Indexes of the primary key's columns; empty without one.
    pub(crate) key: Vec<usize>,
}

/// What the binlog says about one column, before it is named as a type.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Described<'a> {
    /// The real type (ENUM and SET unwrapped from `MYSQL_TYPE_STRING`).
    pub(crate) real: ColumnType,
    /// The column's metadata bytes in the event.
    pub(crate) meta: &'a [u8],
    /// From the SIGNEDNESS field (numeric columns).
    pub(crate) unsigned: bool,
    /// From the (ENUM_AND_SET_)COLUMN_CHARSET or DEFAULT_CHARSET field.
    pub(crate) collation: Option<&'a Collation>,
    /// From the ENUM_STR_VALUE or SET_STR_VALUE field.
    pub(crate) labels: &'a [String],
}

fn event_error(id: &TableId, e: impl std::error::Error + Send + Sync + 'static) -> SourceError {
    SourceError::new(
        format!("read the TABLE_MAP event of {id}"),
        ErrorClass::Definite,
        e,
    )
}

fn missing_metadata(id: &TableId, what: &str) -> SourceError {
    SourceError::message(
        format!("the binlog's TABLE_MAP event of {id} does not give {what}"),
        ErrorClass::Definite,
    )
    .with_hint(
        "set binlog_row_metadata=FULL on the source (SET GLOBAL and in its configuration), \
         then re-sync the changefeed",
    )
}

/// The table `tme` describes. Errors name the column; a type Ferry cannot read is one.
pub(crate) fn read(
    tme: &TableMapEvent<'_>,
    collations: &Collations,
) -> Result<TableMap, SourceError> {
    let id = TableId::new(tme.database_name(), tme.table_name());
    let meta =
        OptionalMetaExtractor::new(tme.iter_optional_meta()).map_err(|e| event_error(&id, e))?;
    let names: Vec<String> = meta
        .iter_column_name()
        .map(|n| n.map(|n| n.name().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| event_error(&id, e))?;
    let count = tme.columns_count() as usize;
    if names.len() != count {
        return Err(missing_metadata(&id, "its column names"));
    }
    let (enums, sets) = labels_raw(tme).map_err(|e| event_error(&id, e))?;
    let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
    let mut unsigned = meta.iter_signedness();
    let mut charsets = meta.iter_charset();
    let mut enum_set_charsets = meta.iter_enum_and_set_charset();
    let nulls = tme.null_bitmask();
    let mut columns = Vec::with_capacity(count);
    for (i, name) in names.into_iter().enumerate() {
        let unreadable = |what: String| {
            SourceError::message(
                format!("column {name} of {id} has {what} at this position in the binlog"),
                ErrorClass::Definite,
            )
            .with_hint(format!(
                "exclude the table with a rule such as !{id}, or re-sync it once the column is \
                 of a type Ferry reads"
            ))
        };
        let raw = tme
            .get_raw_column_type(i)
            .map_err(|e| event_error(&id, e))?
            .expect("i < columns_count");
        let real = tme
            .get_column_type(i)
            .map_err(|e| event_error(&id, e))?
            .expect("i < columns_count");
        let is_unsigned = if raw.is_numeric_type() {
            unsigned
                .next()
                .ok_or_else(|| missing_metadata(&id, "the signedness of its columns"))?
        } else {
            false
        };
        let collation_of = |id_result: Option<Result<u16, std::io::Error>>| {
            let collation = id_result
                .ok_or_else(|| missing_metadata(&id, "the collations of its columns"))?
                .map_err(|e| event_error(&id, e))?;
            collations.0.get(&collation).ok_or_else(|| {
                unreadable(format!(
                    "collation {collation}, which the server does not list"
                ))
            })
        };
        let (collation, labels) = if real.is_character_type() {
            (Some(collation_of(charsets.next())?), Vec::new())
        } else if real.is_enum_or_set_type() {
            let collation = collation_of(enum_set_charsets.next())?;
            let raw_labels = if real.is_enum_type() {
                enums.next()
            } else {
                sets.next()
            }
            .ok_or_else(|| missing_metadata(&id, "the labels of its ENUM and SET columns"))?;
            let labels = raw_labels
                .iter()
                .map(|l| label_text(l, &collation.charset))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|what| unreadable(format!("ENUM or SET labels {what}")))?;
            (Some(collation), labels)
        } else {
            (None, Vec::new())
        };
        let described = Described {
            real,
            meta: tme.get_column_metadata(i).unwrap_or_default(),
            unsigned: is_unsigned,
            collation,
            labels: &labels,
        };
        let (column_type, charset) = column_type(&described).map_err(|u| unreadable(u.0))?;
        columns.push(MapColumn {
            name,
            column_type,
            charset,
            nullable: nulls[i],
        });
    }
    let key = meta
        .iter_primary_key()
        .map(|k| k.map(|k| k as usize))
        .collect::<Result<_, _>>()
        .map_err(|e| event_error(&id, e))?;
    Ok(TableMap { columns, key })
}

/// An ENUM or SET label in `charset`. Labels in a character set Ferry does not decode read
/// when they are ASCII (which those sets share).
fn label_text(bytes: &[u8], charset: &str) -> Result<String, String> {
    match Charset::from_name(charset) {
        Some(charset) => {
            decode_charset(bytes, charset).map_err(|b| format!("Ferry cannot decode: {}", b.0))
        }
        None if bytes.is_ascii() => Ok(bytes.iter().map(|b| char::from(*b)).collect()),
        None => Err(format!(
            "in character set {charset} beyond ASCII, which Ferry does not decode from the binlog"
        )),
    }
}

/// The raw labels of the ENUM columns and of the SET columns, each in column order.
type RawLabels = Vec<Vec<Vec<u8>>>;

fn labels_raw(tme: &TableMapEvent<'_>) -> std::io::Result<(RawLabels, RawLabels)> {
    let (mut enums, mut sets) = (Vec::new(), Vec::new());
    for field in tme.iter_optional_meta() {
        match field? {
            OptionalMetadataField::EnumStrValue(columns) => {
                for labels in columns.iter_values() {
                    let labels = labels?;
                    enums.push(
                        labels
                            .values()
                            .iter()
                            .map(|v| v.value_raw().to_vec())
                            .collect(),
                    );
                }
            }
            OptionalMetadataField::SetStrValue(columns) => {
                for labels in columns.iter_values() {
                    let labels = labels?;
                    sets.push(
                        labels
                            .values()
                            .iter()
                            .map(|v| v.value_raw().to_vec())
                            .collect(),
                    );
                }
            }
            _ => {}
        }
    }
    Ok((enums, sets))
}

/// `COLUMN_TYPE` text as MariaDB prints it for a column the binlog describes, and its
/// character set (`None` for binary strings and non-strings).
pub(crate) fn column_type(d: &Described<'_>) -> Result<(String, Option<String>), Unsupported> {
    use ColumnType::*;
    let byte = |i: usize| d.meta.get(i).copied().unwrap_or(0);
    let sign = if d.unsigned { " unsigned" } else { "" };
    let int = |name: &str, signed_width: u8, unsigned_width: u8| {
        let width = if d.unsigned {
            unsigned_width
        } else {
            signed_width
        };
        format!("{name}({width}){sign}")
    };
    let fraction = |name: &str| match byte(0) {
        0 => name.to_string(),
        fsp => format!("{name}({fsp})"),
    };
    let string = |fixed: bool, bytes: usize| {
        let collation = d.collation.ok_or_else(|| {
            Unsupported("a string column without a collation in the binlog".into())
        })?;
        let binary = collation.charset == "binary";
        let name = match (fixed, binary) {
            (true, true) => "binary",
            (true, false) => "char",
            (false, true) => "varbinary",
            (false, false) => "varchar",
        };
        let chars = bytes / usize::from(collation.max_len.max(1));
        let charset = (!binary).then(|| collation.charset.clone());
        Ok::<_, Unsupported>((format!("{name}({chars})"), charset))
    };
    let text_charset = || d.collation.map(|c| c.charset.clone());
    Ok(match d.real {
        MYSQL_TYPE_TINY => (int("tinyint", 4, 3), None),
        MYSQL_TYPE_SHORT => (int("smallint", 6, 5), None),
        MYSQL_TYPE_INT24 => (int("mediumint", 9, 8), None),
        MYSQL_TYPE_LONG => (int("int", 11, 10), None),
        MYSQL_TYPE_LONGLONG => (int("bigint", 20, 20), None),
        MYSQL_TYPE_NEWDECIMAL => (format!("decimal({},{}){sign}", byte(0), byte(1)), None),
        MYSQL_TYPE_FLOAT => (format!("float{sign}"), None),
        MYSQL_TYPE_DOUBLE => (format!("double{sign}"), None),
        // The length of CHAR(n) in bytes: the low byte, and two more bits folded into the
        // type byte (inverted), as the server packs a length above 255.
        MYSQL_TYPE_STRING => {
            let high = usize::from((byte(0) & 0x30) ^ 0x30) << 4;
            string(true, high | usize::from(byte(1)))?
        }
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            string(false, usize::from(u16::from_le_bytes([byte(0), byte(1)])))?
        }
        MYSQL_TYPE_BLOB => {
            let binary = d.collation.is_none_or(|c| c.charset == "binary");
            let size = match byte(0) {
                1 => "tiny",
                2 => "",
                3 => "medium",
                4 => "long",
                other => return Err(Unsupported(format!("a BLOB of {other} length bytes"))),
            };
            if binary {
                (format!("{size}blob"), None)
            } else {
                (format!("{size}text"), text_charset())
            }
        }
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => ("date".into(), None),
        MYSQL_TYPE_TIME2 => (fraction("time"), None),
        MYSQL_TYPE_DATETIME2 => (fraction("datetime"), None),
        MYSQL_TYPE_TIMESTAMP2 => (fraction("timestamp"), None),
        // The formats before MariaDB 10.1 / MySQL 5.6 (no fractional seconds).
        MYSQL_TYPE_TIME => ("time".into(), None),
        MYSQL_TYPE_DATETIME => ("datetime".into(), None),
        MYSQL_TYPE_TIMESTAMP => ("timestamp".into(), None),
        MYSQL_TYPE_YEAR => ("year(4)".into(), None),
        MYSQL_TYPE_ENUM => (format!("enum({})", quoted_labels(d.labels)), text_charset()),
        MYSQL_TYPE_SET => (format!("set({})", quoted_labels(d.labels)), text_charset()),
        MYSQL_TYPE_BIT => (
            format!("bit({})", u32::from(byte(1)) * 8 + u32::from(byte(0))),
            None,
        ),
        MYSQL_TYPE_JSON => ("json".into(), None),
        other => {
            let name = format!("{other:?}");
            let name = name.trim_start_matches("MYSQL_TYPE_").to_ascii_lowercase();
            return Err(Unsupported(format!(
                "type {name}, which Ferry does not replicate from MySQL"
            )));
        }
    })
}

/// `'a','b''c'` as `COLUMN_TYPE` quotes labels.
fn quoted_labels(labels: &[String]) -> String {
    labels
        .iter()
        .map(|l| format!("'{}'", l.replace('\\', "\\\\").replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",")
}

/// A column's type as far as matching goes: lowercase, without display widths (`int(11)`
/// and `int(5)` hold the same values) or ZEROFILL, ENUM and SET without labels (their kinds
/// compare those).
fn comparable_type(column_type: &str) -> String {
    let t = column_type
        .trim()
        .to_ascii_lowercase()
        .replace(" zerofill", "");
    let base = t.split(['(', ' ']).next().unwrap_or_default();
    match base {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "float"
        | "double" | "real" | "year" => {
            let t = match (t.find('('), t.find(')')) {
                (Some(open), Some(close)) if open < close => {
                    format!("{}{}", &t[..open], &t[close + 1..])
                }
                _ => t.clone(),
            };
            t.replacen("integer", "int", 1)
        }
        "enum" | "set" => base.to_string(),
        _ => t,
    }
}

/// A table's shape at a TABLE_MAP's position: the event's columns, each decoded as the event
/// says, with what the event does not say taken from `known` (shapes and kinds, the first
/// that matches wins) and the rest of the table's definition from `base`.
pub(crate) fn shape(
    map: TableMap,
    known: &[(&TableSchema, &[Kind])],
    base: &TableSchema,
) -> Result<(TableSchema, Vec<Kind>), SourceError> {
    let id = &base.id;
    let mut columns = Vec::with_capacity(map.columns.len());
    let mut kinds = Vec::with_capacity(map.columns.len());
    for column in map.columns {
        let same_name: Vec<(&ColumnSchema, &Kind)> = known
            .iter()
            .filter_map(|(schema, kinds)| {
                let i = schema.columns.iter().position(|c| c.name == column.name)?;
                Some((&schema.columns[i], &kinds[i]))
            })
            .collect();
        let json = same_name.iter().any(|(_, kind)| **kind == Kind::Json);
        let (kind, logical) = types::classify(&column.column_type, column.charset.as_deref(), json)
            .map_err(|u| {
                SourceError::message(
                    format!(
                        "column {} of {id} has {} at this position in the binlog",
                        column.name, u.0
                    ),
                    ErrorClass::Definite,
                )
                .with_hint(format!(
                    "exclude the table with a rule such as !{id}, or re-sync it once the \
                     column is of a type Ferry reads"
                ))
            })?;
        let wanted = comparable_type(&column.column_type);
        let matching = same_name.iter().find(|(c, k)| {
            **k == kind && c.logical == logical && comparable_type(&c.type_name) == wanted
        });
        let definition = match matching {
            Some((known, _)) => ColumnSchema {
                nullable: column.nullable,
                ..(*known).clone()
            },
            None => ColumnSchema {
                has_default: same_name
                    .first()
                    .map_or(!column.nullable, |(c, _)| c.has_default),
                name: column.name,
                type_name: column.column_type,
                type_oid: 0,
                logical,
                nullable: column.nullable,
                missing_value: None,
            },
        };
        columns.push(definition);
        kinds.push(kind);
    }
    Ok((
        TableSchema {
            columns,
            key: map.key,
            ..base.clone()
        },
        kinds,
    ))
}

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;
