//! MySQL column types: what each holds ([`Kind`], read from `COLUMN_TYPE` and the column's
//! character set) and the [`LogicalType`] whose canonical text its values travel in.
//!
//! | MySQL type | logical type | canonical text |
//! |---|---|---|
//! | `tinyint`, `smallint`, `tinyint unsigned` | `int16` | digits |
//! | `mediumint`, `int`, `smallint unsigned`, `mediumint unsigned` | `int32` | digits |
//! | `bigint`, `int unsigned` | `int64` | digits |
//! | `bigint unsigned` | `decimal(20,0)` | digits, up to 2^64−1 |
//! | `decimal(p,s)` | `decimal(p,s)` | plain decimal with `s` digits after the point |
//! | `float`, `double` | `float32`, `float64` | shortest text that reads back exactly |
//! | `char`, `varchar`, `*text` (any supported charset) | `text` | UTF-8 |
//! | `binary`, `varbinary`, `*blob` | `bytes` | `\x` + hex |
//! | `date` | `date` | `YYYY-MM-DD` |
//! | `time(n)` | `interval` | `[-]HH:MM:SS[.f]`: MySQL's TIME spans ±838 hours |
//! | `datetime(n)` | `timestamp` | `YYYY-MM-DD HH:MM:SS[.f]` |
//! | `timestamp(n)` | `timestamp with time zone` | in UTC, suffix `+00` |
//! | `year` | `int16` | digits (`0` for YEAR 0000) |
//! | `enum(…)`, `set(…)` | `text` | the label; a set's labels joined by `,` |
//! | `bit(1)` | `bool` | `t`/`f` |
//! | `bit(n)`, n ≤ 63 / n = 64 | `int64` / `decimal(20,0)` | the bits as an unsigned number |
//! | `json`, MariaDB `longtext` with a `json_valid` check | `json` | JSON text |
//!
//! Zero dates (`0000-00-00`, or a zero month or day) have no equivalent in any other
//! database: a value holding one stops the changefeed with an error naming the column
//! (see `docs/types.md`), never a guessed value.

use ferry_core::LogicalType;

/// What a column holds, as the decoder needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An integer of `bytes` bytes that fits the logical type.
    Int {
        /// Declared signed (the binlog's own signedness flags are not trusted: see
        /// [`super::values`]).
        signed: bool,
        /// Storage width: 1, 2, 3, 4 or 8.
        bytes: u8,
    },
    /// `bigint unsigned`.
    BigUnsigned,
    /// `decimal(p,s)`: text with exactly `scale` digits after the point.
    Decimal { scale: u32 },
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// A character string in `charset` (MySQL's name).
    Text { charset: Charset },
    /// A byte string.
    Bytes,
    /// `date`.
    Date,
    /// `time`: a signed duration.
    Time,
    /// `datetime`.
    DateTime,
    /// `timestamp`: an instant, read in UTC.
    Timestamp,
    /// `year`.
    Year,
    /// `enum`, with its labels (value `n` is label `n-1`, 0 the empty error value).
    Enum(Vec<String>),
    /// `set`, with its labels (bit `i` is label `i`).
    Set(Vec<String>),
    /// `bit(n)`.
    Bit { bits: u32 },
    /// JSON (MySQL's binary JSON, or MariaDB's checked text).
    Json,
}

/// Character sets whose bytes Ferry decodes from the binlog (snapshot reads get UTF-8 from
/// the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Charset {
    /// `utf8mb4`, `utf8mb3`, `ascii`: UTF-8 bytes.
    Utf8,
    /// `latin1`, which MySQL defines as Windows-1252.
    Latin1,
    /// `ucs2`, `utf16`: big-endian UTF-16.
    Utf16Be,
    /// `utf16le`.
    Utf16Le,
    /// `utf32`: big-endian.
    Utf32,
}

impl Charset {
    /// The charset of MySQL's name, `None` when Ferry does not decode it.
    pub(crate) fn from_name(name: &str) -> Option<Charset> {
        Some(match name {
            "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => Charset::Utf8,
            "latin1" => Charset::Latin1,
            "ucs2" | "utf16" => Charset::Utf16Be,
            "utf16le" => Charset::Utf16Le,
            "utf32" => Charset::Utf32,
            _ => return None,
        })
    }
}

/// Why a column cannot be replicated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unsupported(pub(crate) String);

/// The kind and logical type of a column from its `COLUMN_TYPE` (`bigint(20) unsigned`),
/// its character set name (for strings) and whether a `json_valid` check guards it.
pub(crate) fn classify(
    column_type: &str,
    charset: Option<&str>,
    json_checked: bool,
) -> Result<(Kind, LogicalType), Unsupported> {
    let t = column_type.trim().to_ascii_lowercase();
    let unsigned = t.contains(" unsigned");
    let base = t.split(['(', ' ']).next().unwrap_or_default();
    let args = t
        .find('(')
        .and_then(|i| t[i + 1..].find(')').map(|j| &t[i + 1..i + 1 + j]))
        .unwrap_or("");
    let signed = !unsigned;
    let int = |bytes, bits| (Kind::Int { signed, bytes }, LogicalType::Int { bits });
    let text = || -> Result<(Kind, LogicalType), Unsupported> {
        let name = charset.unwrap_or("utf8mb4");
        let charset = Charset::from_name(name).ok_or_else(|| {
            Unsupported(format!(
                "character set {name} (Ferry decodes utf8mb4, utf8mb3, ascii, latin1, ucs2, \
                 utf16, utf16le and utf32)"
            ))
        })?;
        Ok((Kind::Text { charset }, LogicalType::Text))
    };
    Ok(match base {
        "tinyint" => int(1, 16),
        "smallint" if unsigned => int(2, 32),
        "smallint" => int(2, 16),
        "mediumint" => int(3, 32),
        "int" | "integer" if unsigned => int(4, 64),
        "int" | "integer" => int(4, 32),
        "bigint" if unsigned => (
            Kind::BigUnsigned,
            LogicalType::Decimal {
                precision: Some(20),
                scale: Some(0),
            },
        ),
        "bigint" => int(8, 64),
        "decimal" | "numeric" => {
            let mut parts = args.split(',').map(|p| p.trim().parse::<u32>().ok());
            let precision = parts.next().flatten().unwrap_or(10);
            let scale = parts.next().flatten().unwrap_or(0);
            (
                Kind::Decimal { scale },
                LogicalType::Decimal {
                    precision: Some(precision),
                    scale: Some(scale),
                },
            )
        }
        "float" => (Kind::Float, LogicalType::Float { bits: 32 }),
        "double" | "real" => (Kind::Double, LogicalType::Float { bits: 64 }),
        "longtext" if json_checked => (Kind::Json, LogicalType::Json),
        "json" => (Kind::Json, LogicalType::Json),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => text()?,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            (Kind::Bytes, LogicalType::Bytes)
        }
        "date" => (Kind::Date, LogicalType::Date),
        // mysql_common (0.37, 0.38) decodes a negative TIME(1)/TIME(2) binlog value with a
        // fraction wrongly (an unsigned underflow: garbage in release builds): refused.
        "time" if matches!(args.trim(), "1" | "2") => {
            return Err(Unsupported(format!(
                "type {t}: the binlog decoder Ferry uses reads negative TIME(1) and TIME(2) \
                 values with a fraction wrongly; change the column to TIME, TIME(3) … TIME(6)"
            )))
        }
        "time" => (Kind::Time, LogicalType::Interval),
        "datetime" => (Kind::DateTime, LogicalType::Timestamp { tz: false }),
        "timestamp" => (Kind::Timestamp, LogicalType::Timestamp { tz: true }),
        "year" => (Kind::Year, LogicalType::Int { bits: 16 }),
        "enum" => (Kind::Enum(labels(args)), LogicalType::Text),
        "set" => (Kind::Set(labels(args)), LogicalType::Text),
        "bit" => {
            let bits: u32 = args.trim().parse().unwrap_or(1);
            let logical = match bits {
                1 => LogicalType::Bool,
                2..=63 => LogicalType::Int { bits: 64 },
                _ => LogicalType::Decimal {
                    precision: Some(20),
                    scale: Some(0),
                },
            };
            (Kind::Bit { bits }, logical)
        }
        other => {
            return Err(Unsupported(format!(
                "type {other}, which Ferry does not replicate from MySQL"
            )))
        }
    })
}

/// The labels of `enum('a','b''c')` / `set(…)`: quoted, with `''` for a quote.
fn labels(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = args.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                c => label.push(c),
            }
        }
        out.push(label);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_widen_so_every_unsigned_value_fits() {
        let logical = |t| classify(t, None, false).unwrap().1;
        assert_eq!(
            logical("tinyint(3) unsigned"),
            LogicalType::Int { bits: 16 }
        );
        assert_eq!(
            logical("smallint(5) unsigned"),
            LogicalType::Int { bits: 32 }
        );
        assert_eq!(logical("int(10) unsigned"), LogicalType::Int { bits: 64 });
        assert_eq!(logical("int(11)"), LogicalType::Int { bits: 32 });
        assert_eq!(
            logical("bigint(20) unsigned"),
            LogicalType::Decimal {
                precision: Some(20),
                scale: Some(0)
            }
        );
        assert_eq!(logical("bit(1)"), LogicalType::Bool);
        assert_eq!(logical("time(3)"), LogicalType::Interval);
        assert_eq!(logical("timestamp(6)"), LogicalType::Timestamp { tz: true });
    }

    #[test]
    fn enum_labels_unquote() {
        let (kind, _) = classify("enum('a','b''c','d,e')", None, false).unwrap();
        assert_eq!(
            kind,
            Kind::Enum(vec!["a".into(), "b'c".into(), "d,e".into()])
        );
    }

    #[test]
    fn unknown_types_and_charsets_are_refused() {
        assert!(classify("geometry", None, false).is_err());
        assert!(classify("time(1)", None, false).is_err());
        assert!(classify("time(2)", None, false).is_err());
        assert!(classify("time", None, false).is_ok());
        assert!(classify("varchar(10)", Some("sjis"), false).is_err());
        assert_eq!(
            classify("longtext", Some("utf8mb4"), true).unwrap().1,
            LogicalType::Json
        );
    }
}
