//! Each column's [`LogicalType`], from the catalog's facts about its type.
//!
//! Domains are described by their base type, enums as [`LogicalType::Enum`], arrays by
//! their element. Types with no logical equivalent (geometric, network, ranges, extension
//! and composite types …) are [`LogicalType::Other`] under their PostgreSQL name: a
//! PostgreSQL sink still stores them exactly, another kind of sink cannot.
//!
//! The text a session with [`crate::connect::SESSION_OPTIONS`] prints for a value is the
//! canonical text of its logical type (see [`ferry_core::logical`]).

use ferry_core::LogicalType;
use tokio_postgres::Client;

use crate::PgError;

/// What the catalog says about a column's type, domains resolved one level to their base.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeFacts {
    /// The type's OID, or its base's for a domain.
    pub oid: u32,
    /// The type modifier (`numeric(12,2)`'s precision and scale), or the domain's.
    pub typmod: i32,
    /// `pg_type.typtype` of the (base) type: `b` base, `e` enum, `c` composite, `r` range …
    pub kind: String,
    /// For an array, its element type's OID (its base's for a domain), else 0.
    pub element_oid: u32,
    /// For an array, `typtype` of its element.
    pub element_kind: String,
    /// The type as SQL, for [`LogicalType::Other`].
    pub name: String,
}

/// SQL for the facts of a type (the columns of [`TypeFacts`] but the name), given `t`,
/// a `pg_type` row, and `TYPMOD`, the column's type modifier, replaced by the caller.
/// Needs the joins of [`FACTS_JOINS`].
pub const FACTS_COLUMNS: &str =
    "bt.oid, CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE TYPMOD END, \
     bt.typtype::text, COALESCE(COALESCE(NULLIF(be.typbasetype, 0), be.oid), 0), \
     COALESCE(be.typtype::text, '')";

/// The joins [`FACTS_COLUMNS`] reads, after a `pg_type t`.
pub const FACTS_JOINS: &str =
    "JOIN pg_catalog.pg_type bt ON bt.oid = COALESCE(NULLIF(t.typbasetype, 0), t.oid) \
     LEFT JOIN pg_catalog.pg_type be ON be.oid = bt.typelem AND bt.typcategory = 'A'";

/// The logical type of a column whose type the catalog describes by `facts`.
pub fn logical_type(facts: &TypeFacts) -> LogicalType {
    if facts.kind == "e" {
        return LogicalType::Enum;
    }
    if facts.element_oid != 0 {
        let element = if facts.element_kind == "e" {
            Some(LogicalType::Enum)
        } else {
            builtin(facts.element_oid, facts.typmod)
        };
        let element = element.unwrap_or_else(|| LogicalType::Other {
            source_type: facts.name.trim_end_matches("[]").to_string(),
        });
        return LogicalType::Array(Box::new(element));
    }
    builtin(facts.oid, facts.typmod).unwrap_or_else(|| LogicalType::Other {
        source_type: facts.name.clone(),
    })
}

/// The logical type of a built-in scalar type, `None` for one without an equivalent.
fn builtin(oid: u32, typmod: i32) -> Option<LogicalType> {
    Some(match oid {
        16 => LogicalType::Bool,
        21 => LogicalType::Int { bits: 16 },
        23 => LogicalType::Int { bits: 32 },
        20 => LogicalType::Int { bits: 64 },
        1700 => numeric(typmod),
        700 => LogicalType::Float { bits: 32 },
        701 => LogicalType::Float { bits: 64 },
        // text, varchar, char(n), name, "char", citext-less strings.
        25 | 1043 | 1042 | 19 | 18 => LogicalType::Text,
        17 => LogicalType::Bytes,
        1082 => LogicalType::Date,
        1083 => LogicalType::Time { tz: false },
        1266 => LogicalType::Time { tz: true },
        1114 => LogicalType::Timestamp { tz: false },
        1184 => LogicalType::Timestamp { tz: true },
        1186 => LogicalType::Interval,
        114 | 3802 => LogicalType::Json,
        2950 => LogicalType::Uuid,
        _ => return None,
    })
}

/// Whether a column of type `oid` copies in `COPY … (FORMAT binary)` between servers of
/// [`BINARY_COPY_VERSIONS`], the target's column being of the same type: a built-in type
/// (its OID is the same in every version) whose send and receive forms have not changed
/// across those versions and hold the value exactly, or an array of one. Where a form did
/// change, the new values are refused by older servers (numeric's infinities before 14),
/// except `interval`: PostgreSQL 17 sends its infinities as extreme field values that older
/// servers store as finite intervals, so it is left out. Also left out: domains, enums,
/// composites and extension types (OIDs of their cluster), `money` (its binary form counts
/// units of the server's `lc_monetary`), and everything less common.
pub fn binary_copy_safe(oid: u32) -> bool {
    BINARY_COPY_TYPES.contains(&oid)
}

/// Whether every column of `schema` copies in binary ([`binary_copy_safe`]).
pub fn binary_copy_columns(schema: &ferry_core::TableSchema) -> bool {
    schema.columns.iter().all(|c| binary_copy_safe(c.type_oid))
}

/// The servers (`server_version_num`) whose binary forms of [`BINARY_COPY_TYPES`] were
/// checked: a server newer than this build knows copies in text.
pub const BINARY_COPY_VERSIONS: std::ops::RangeInclusive<i32> = 100_000..=189_999;

/// The types of [`binary_copy_safe`], by OID.
#[rustfmt::skip]
pub const BINARY_COPY_TYPES: &[u32] = &[
    // bool, bytea, "char", name, int8, int2, int4, text, oid, json
    16, 17, 18, 19, 20, 21, 23, 25, 26, 114,
    // cidr, float4, float8, macaddr8, macaddr, inet, char(n), varchar
    650, 700, 701, 774, 829, 869, 1042, 1043,
    // date, time, timestamp, timestamptz, timetz, bit, varbit, numeric
    1082, 1083, 1114, 1184, 1266, 1560, 1562, 1700,
    // uuid, jsonb, int4range, numrange, tsrange, tstzrange, daterange, int8range
    2950, 3802, 3904, 3906, 3908, 3910, 3912, 3926,
    // Their arrays, in the same order.
    1000, 1001, 1002, 1003, 1016, 1005, 1007, 1009, 1028, 199,
    651, 1021, 1022, 775, 1040, 1041, 1014, 1015,
    1182, 1183, 1115, 1185, 1270, 1561, 1563, 1231,
    2951, 3807, 3905, 3907, 3909, 3911, 3913, 3927,
];

/// `numeric(p,s)` from its type modifier (`((p << 16) | s) + 4`; -1: unconstrained).
fn numeric(typmod: i32) -> LogicalType {
    if typmod < 4 {
        return LogicalType::Decimal {
            precision: None,
            scale: None,
        };
    }
    let packed = typmod - 4;
    let precision = ((packed >> 16) & 0xffff) as u32;
    // PostgreSQL 15 allows a negative scale (11 bits, signed): no plain equivalent.
    let scale = ((packed & 0x7ff) ^ 0x400) - 0x400;
    LogicalType::Decimal {
        precision: Some(precision),
        scale: u32::try_from(scale).ok(),
    }
}

/// The logical type of the type `oid` with modifier `typmod`, asked of the catalog (for a
/// column the catalog no longer has, described from a replication message).
pub async fn describe(client: &Client, oid: u32, typmod: i32) -> Result<LogicalType, PgError> {
    let sql = format!(
        "SELECT {}, pg_catalog.format_type(t.oid, $2) FROM pg_catalog.pg_type t {} WHERE t.oid = $1",
        FACTS_COLUMNS.replace("TYPMOD", "$2"),
        FACTS_JOINS
    );
    let row = client
        .query_opt(&sql, &[&oid, &typmod])
        .await
        .map_err(|e| PgError::new("describe a column type", e))?;
    Ok(match row {
        Some(row) => logical_type(&TypeFacts {
            oid: row.get(0),
            typmod: row.get(1),
            kind: row.get(2),
            element_oid: row.get(3),
            element_kind: row.get(4),
            name: row.get(5),
        }),
        None => LogicalType::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(oid: u32, typmod: i32) -> TypeFacts {
        TypeFacts {
            oid,
            typmod,
            kind: "b".into(),
            name: "x".into(),
            ..TypeFacts::default()
        }
    }

    #[test]
    fn numeric_modifiers_give_precision_and_scale() {
        let typmod = ((12 << 16) | 2) + 4;
        assert_eq!(
            logical_type(&facts(1700, typmod)),
            LogicalType::Decimal {
                precision: Some(12),
                scale: Some(2)
            }
        );
        assert_eq!(
            logical_type(&facts(1700, -1)),
            LogicalType::Decimal {
                precision: None,
                scale: None
            }
        );
    }

    #[test]
    fn arrays_enums_and_unknown_types() {
        let array = TypeFacts {
            element_oid: 23,
            element_kind: "b".into(),
            ..facts(1007, -1)
        };
        assert_eq!(
            logical_type(&array),
            LogicalType::Array(Box::new(LogicalType::Int { bits: 32 }))
        );
        let moods = TypeFacts {
            element_oid: 16390,
            element_kind: "e".into(),
            ..facts(16389, -1)
        };
        assert_eq!(
            logical_type(&moods),
            LogicalType::Array(Box::new(LogicalType::Enum))
        );
        let point = TypeFacts {
            name: "point".into(),
            ..facts(600, -1)
        };
        assert_eq!(
            logical_type(&point),
            LogicalType::Other {
                source_type: "point".into()
            }
        );
    }
}
