//! Values across databases: the logical type of a column, and the one canonical text of
//! each logical type that [`crate::Value::Text`] carries.
//!
//! A source fills [`crate::ColumnSchema::logical`] from its catalog and prints every value
//! in the canonical text of that type; a sink maps canonical text to its own literals.
//! Values of two databases of the same kind may travel in the source's own text (the
//! column's `type_name` keeps same-dialect DDL exact); `logical` is what another kind of
//! database needs to create a column and read the value.
//!
//! # Canonical text
//! | logical type | canonical text | examples |
//! |---|---|---|
//! | [`Bool`](LogicalType::Bool) | `t` or `f` | `t` |
//! | [`Int`](LogicalType::Int) | decimal digits, optional leading `-` | `-42` |
//! | [`Decimal`](LogicalType::Decimal) | plain decimal, no exponent, `.` as separator; `NaN`, `Infinity`, `-Infinity` | `12.50`, `-0.001` |
//! | [`Float`](LogicalType::Float) | shortest text that reads back exactly; exponent allowed; `NaN`, `Infinity`, `-Infinity` | `1.5`, `1e+100` |
//! | [`Text`](LogicalType::Text), [`Enum`](LogicalType::Enum) | the string itself (UTF-8), the enum's label | `a\tb` |
//! | [`Bytes`](LogicalType::Bytes) | `\x` then two lowercase hex digits per byte | `\x00ff` |
//! | [`Date`](LogicalType::Date) | ISO 8601 `YYYY-MM-DD`; ` BC` suffix before year 1; `infinity`, `-infinity` | `2024-02-29` |
//! | [`Time`](LogicalType::Time) | `HH:MM:SS[.ffffff]`; with `tz`, the offset the value has (`+HH[:MM]`) | `13:05:00.5`, `13:05:00+02` |
//! | [`Timestamp`](LogicalType::Timestamp) | `YYYY-MM-DD HH:MM:SS[.ffffff]`; with `tz`, in UTC with the suffix `+00`; `infinity`, `-infinity` | `2024-02-29 13:05:00.25+00` |
//! | [`Interval`](LogicalType::Interval) | PostgreSQL's `postgres` interval style | `1 year 2 mons 3 days 04:05:06` |
//! | [`Json`](LogicalType::Json) | JSON text (RFC 8259) | `{"a": [1, 2]}` |
//! | [`Uuid`](LogicalType::Uuid) | lowercase, hyphenated | `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11` |
//! | [`Array`](LogicalType::Array) | PostgreSQL array literal of the elements' canonical texts | `{1,NULL,3}`, `{"a b","c\"d"}` |
//! | [`Other`](LogicalType::Other) | the source's own text; only a source of the same kind reads it | |
//!
//! SQL NULL is [`crate::Value::Null`], never a text. A PostgreSQL session with Ferry's
//! settings (`DateStyle=ISO`, `IntervalStyle=postgres`, `TimeZone=UTC`,
//! `extra_float_digits=3`, `bytea_output=hex`) prints exactly this text, so PostgreSQL to
//! PostgreSQL passes values through untouched.

use serde::{Deserialize, Serialize};

/// What a column holds, independent of the database: enough for a sink of another kind to
/// create a column and read the canonical text (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogicalType {
    /// A boolean.
    Bool,
    /// A signed integer of `bits` bits (16, 32 or 64).
    Int {
        /// Width in bits.
        bits: u8,
    },
    /// An exact decimal number; `None` where the source sets no limit.
    Decimal {
        /// Total significant digits.
        precision: Option<u32>,
        /// Digits after the decimal point.
        scale: Option<u32>,
    },
    /// A binary floating-point number of `bits` bits (32 or 64).
    Float {
        /// Width in bits.
        bits: u8,
    },
    /// A character string.
    Text,
    /// A byte string.
    Bytes,
    /// A calendar date.
    Date,
    /// A time of day, with a time zone offset when `tz`.
    Time {
        /// Carries a time zone offset.
        tz: bool,
    },
    /// A date and time; with `tz`, an instant (canonical text in UTC).
    Timestamp {
        /// Is an instant (PostgreSQL `timestamptz`).
        tz: bool,
    },
    /// A duration in months, days and microseconds.
    Interval,
    /// A JSON document.
    Json,
    /// A UUID.
    Uuid,
    /// One label of an enumerated type (the type's labels are in the table's user types).
    Enum,
    /// An array of elements of one logical type.
    Array(Box<LogicalType>),
    /// A type with no logical equivalent: only a sink of the source's kind can store it.
    Other {
        /// The source's name for the type.
        source_type: String,
    },
}

impl Default for LogicalType {
    /// What a column schema stored before logical types existed reads as: nothing known.
    fn default() -> Self {
        LogicalType::Other {
            source_type: String::new(),
        }
    }
}

impl std::fmt::Display for LogicalType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogicalType::Bool => f.write_str("bool"),
            LogicalType::Int { bits } => write!(f, "int{bits}"),
            LogicalType::Decimal {
                precision: Some(p),
                scale,
            } => write!(f, "decimal({p},{})", scale.unwrap_or(0)),
            LogicalType::Decimal { .. } => f.write_str("decimal"),
            LogicalType::Float { bits } => write!(f, "float{bits}"),
            LogicalType::Text => f.write_str("text"),
            LogicalType::Bytes => f.write_str("bytes"),
            LogicalType::Date => f.write_str("date"),
            LogicalType::Time { tz: false } => f.write_str("time"),
            LogicalType::Time { tz: true } => f.write_str("time with time zone"),
            LogicalType::Timestamp { tz: false } => f.write_str("timestamp"),
            LogicalType::Timestamp { tz: true } => f.write_str("timestamp with time zone"),
            LogicalType::Interval => f.write_str("interval"),
            LogicalType::Json => f.write_str("json"),
            LogicalType::Uuid => f.write_str("uuid"),
            LogicalType::Enum => f.write_str("enum"),
            LogicalType::Array(element) => write!(f, "{element}[]"),
            LogicalType::Other { source_type } => write!(f, "other({source_type})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_form_is_stable() {
        let t = LogicalType::Array(Box::new(LogicalType::Decimal {
            precision: Some(12),
            scale: Some(2),
        }));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"array":{"decimal":{"precision":12,"scale":2}}}"#);
        assert_eq!(serde_json::from_str::<LogicalType>(&json).unwrap(), t);
        assert_eq!(
            serde_json::to_string(&LogicalType::Bool).unwrap(),
            r#""bool""#
        );
    }

    #[test]
    fn a_column_stored_without_a_logical_type_reads_as_other() {
        let column: crate::ColumnSchema = serde_json::from_str(
            r#"{"name":"a","type_name":"integer","type_oid":23,"nullable":true}"#,
        )
        .unwrap();
        assert_eq!(column.logical, LogicalType::default());
    }
}
