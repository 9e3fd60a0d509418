//! Column types and values on a MySQL/MariaDB target.
//!
//! A table in MySQL's dialect (MariaDB → MariaDB) gets each column's `type_name` exactly.
//! A PostgreSQL table's columns are created from their [`LogicalType`] ([`column_type`]),
//! and each value's canonical text becomes a SQL literal of that type ([`Column::write`]):
//!
//! | logical | target type | literal |
//! |---|---|---|
//! | bool | `BOOLEAN` | `1` / `0` |
//! | int16/32/64 | `SMALLINT` / `INT` / `BIGINT` | as is |
//! | decimal(p,s), p ≤ 65, 0 ≤ s ≤ 38 | `DECIMAL(p,s)` | as is |
//! | other decimals | `DECIMAL(65,30)` | as is, if it fits exactly |
//! | float32/64 | `FLOAT` / `DOUBLE` | as is; NaN and ±Infinity refused |
//! | text, enum | `LONGTEXT` (`VARCHAR` in a key) | quoted string |
//! | bytes | `LONGBLOB` (`VARBINARY` in a key) | `X'…'` |
//! | date, timestamp(tz) | `DATE`, `DATETIME(6)` (UTC) | years 1–9999 only |
//! | time | `TIME(6)` | as is |
//! | json | `JSON` | the text |
//! | uuid | `CHAR(36)` | the text |
//! | arrays | `JSON` | a JSON array ([`super::array`]) |
//! | timetz, interval, other | `LONGTEXT` | PostgreSQL's text |
//!
//! Text columns use `utf8mb4_nopad_bin`: every character survives, and keys compare as
//! PostgreSQL's do (case and trailing spaces count). A value the target cannot hold
//! exactly stops the changefeed with an error naming the column; nothing is rounded.

use ferry_core::{Dialect, LogicalType, SinkError, TableSchema};

use super::array;

/// InnoDB's longest index key, in bytes: text key columns share it.
const MAX_KEY_BYTES: usize = 3072;
/// The widest DECIMAL MariaDB has…
const MAX_PRECISION: u32 = 65;
/// …and its most fractional digits.
const MAX_SCALE: u32 = 38;
/// Fractional digits of the DECIMAL(65,30) an unbounded numeric becomes.
const UNBOUNDED_SCALE: u32 = 30;

/// Character set and collation of every text column Ferry creates.
const TEXT_COLLATION: &str = "CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin";

/// Quotes a MySQL identifier, doubling embedded backticks.
pub(crate) fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// `` `schema`.`table` ``.
pub(crate) fn quote_table(id: &ferry_core::TableId) -> String {
    format!("{}.{}", quote(&id.schema), quote(&id.name))
}

/// Appends `text` as a quoted string literal (the session's sql_mode keeps backslash
/// escapes on: Ferry pins it).
pub(crate) fn write_string(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'\'');
    for &b in text {
        match b {
            b'\'' => out.extend_from_slice(b"\\'"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0 => out.extend_from_slice(b"\\0"),
            _ => out.push(b),
        }
    }
    out.push(b'\'');
}

/// The target type of column `index` of `schema`, as SQL.
pub(crate) fn column_type(schema: &TableSchema, index: usize) -> Result<String, SinkError> {
    let column = &schema.columns[index];
    if schema.dialect == Dialect::Mysql {
        return Ok(column.type_name.clone());
    }
    let in_key = schema.key.contains(&index);
    // Text and bytes keys share InnoDB's key length.
    let wide_keys = schema
        .key
        .iter()
        .filter(|&&k| is_wide(&schema.columns[k].logical))
        .count()
        .max(1);
    let key_chars = MAX_KEY_BYTES / 4 / wide_keys;
    let key_bytes = MAX_KEY_BYTES / wide_keys;
    Ok(match &column.logical {
        LogicalType::Bool => "BOOLEAN".into(),
        LogicalType::Int { bits: 16 } => "SMALLINT".into(),
        LogicalType::Int { bits: 32 } => "INT".into(),
        LogicalType::Int { .. } => "BIGINT".into(),
        LogicalType::Decimal { .. } => {
            let (p, s) = decimal_shape(&column.logical);
            format!("DECIMAL({p},{s})")
        }
        LogicalType::Float { bits: 32 } => "FLOAT".into(),
        LogicalType::Float { .. } => "DOUBLE".into(),
        LogicalType::Bytes if in_key => format!("VARBINARY({key_bytes})"),
        LogicalType::Bytes => "LONGBLOB".into(),
        LogicalType::Date => "DATE".into(),
        LogicalType::Time { tz: false } => "TIME(6)".into(),
        LogicalType::Timestamp { .. } => "DATETIME(6)".into(),
        LogicalType::Json | LogicalType::Array(_) if in_key => {
            return Err(SinkError::Unsupported {
                message: format!(
                    "column {} of {} is part of the key and holds {}: MariaDB cannot index \
                     JSON; give the source table a key without it",
                    column.name, schema.id, column.logical
                ),
            })
        }
        LogicalType::Json | LogicalType::Array(_) => "JSON".into(),
        LogicalType::Uuid => "CHAR(36) CHARACTER SET ascii COLLATE ascii_bin".into(),
        LogicalType::Text
        | LogicalType::Enum
        | LogicalType::Time { tz: true }
        | LogicalType::Interval
        | LogicalType::Other { .. } => {
            if in_key {
                format!("VARCHAR({key_chars}) {TEXT_COLLATION}")
            } else {
                format!("LONGTEXT {TEXT_COLLATION}")
            }
        }
    })
}

/// MariaDB's longest identifier, in characters.
const MAX_IDENTIFIER: usize = 64;

/// `CREATE TABLE` for `schema`: its columns with their target types and NOT NULL, and its
/// key as the primary key (InnoDB clusters rows by it).
pub(crate) fn create_table_sql(schema: &TableSchema) -> Result<String, SinkError> {
    check_columns(schema)?;
    let mut parts = Vec::with_capacity(schema.columns.len() + 1);
    for (i, column) in schema.columns.iter().enumerate() {
        let not_null = if column.nullable && !schema.key.contains(&i) {
            ""
        } else {
            " NOT NULL"
        };
        parts.push(format!(
            "{} {}{not_null}",
            quote(&column.name),
            column_type(schema, i)?
        ));
    }
    if schema.has_key() {
        let key: Vec<String> = schema
            .key
            .iter()
            .map(|&k| quote(&schema.columns[k].name))
            .collect();
        parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin",
        quote_table(&schema.id),
        parts.join(", ")
    ))
}

/// An error unless MariaDB can hold `schema`'s names and column types: names of at most
/// 64 characters, column names distinct without case (MariaDB ignores it), keys it can
/// index.
pub(crate) fn check_columns(schema: &TableSchema) -> Result<(), SinkError> {
    let refuse = |why: String| {
        Err(SinkError::Unsupported {
            message: format!(
                "table {} cannot be created on the MySQL/MariaDB target: {why}",
                schema.id
            ),
        })
    };
    for name in [&schema.id.schema, &schema.id.name] {
        if name.chars().count() > MAX_IDENTIFIER {
            return refuse(format!(
                "the name {name:?} is longer than {MAX_IDENTIFIER} characters"
            ));
        }
    }
    for (i, column) in schema.columns.iter().enumerate() {
        if column.name.chars().count() > MAX_IDENTIFIER {
            return refuse(format!(
                "column name {:?} is longer than {MAX_IDENTIFIER} characters",
                column.name
            ));
        }
        if let Some(other) = schema.columns[..i]
            .iter()
            .find(|c| c.name.to_lowercase() == column.name.to_lowercase())
        {
            return refuse(format!(
                "columns {:?} and {:?} differ only in case, and MariaDB's column names ignore case",
                other.name, column.name
            ));
        }
        column_type(schema, i)?;
    }
    Ok(())
}

fn is_wide(logical: &LogicalType) -> bool {
    matches!(
        logical,
        LogicalType::Text
            | LogicalType::Enum
            | LogicalType::Bytes
            | LogicalType::Time { tz: true }
            | LogicalType::Interval
            | LogicalType::Other { .. }
    )
}

/// Precision and scale of the DECIMAL a decimal becomes.
fn decimal_shape(logical: &LogicalType) -> (u32, u32) {
    match logical {
        LogicalType::Decimal {
            precision: Some(p),
            scale,
        } if *p <= MAX_PRECISION && scale.unwrap_or(0) <= MAX_SCALE => (*p, scale.unwrap_or(0)),
        _ => (MAX_PRECISION, UNBOUNDED_SCALE),
    }
}

/// How one column's canonical text becomes a literal.
#[derive(Clone, Debug)]
pub(crate) struct Column {
    name: String,
    logical: LogicalType,
    /// Digits a decimal may have before and after the point; `None` when every value of
    /// the source's type fits.
    decimal_limit: Option<(u32, u32)>,
}

impl Column {
    /// The writer of every column of `schema`.
    pub(crate) fn all(schema: &TableSchema) -> Vec<Column> {
        schema
            .columns
            .iter()
            .map(|c| {
                let decimal_limit = match &c.logical {
                    LogicalType::Decimal { .. } => {
                        let (p, s) = decimal_shape(&c.logical);
                        let fits = matches!(c.logical, LogicalType::Decimal { precision: Some(sp), scale: ss }
                            if sp == p && ss.unwrap_or(0) == s);
                        (!fits).then_some((p - s, s))
                    }
                    _ => None,
                };
                Column {
                    name: c.name.clone(),
                    logical: c.logical.clone(),
                    decimal_limit,
                }
            })
            .collect()
    }

    /// Appends the literal of canonical text `text`; an error naming the column when the
    /// target cannot hold the value exactly.
    pub(crate) fn write(
        &self,
        table: &ferry_core::TableId,
        text: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SinkError> {
        write_literal(&self.logical, self.decimal_limit, text, out)
            .map_err(|why| self.refusal(table, why))
    }

    /// Appends the value as a `LOAD DATA` field; an error naming the column as for
    /// [`Column::write`].
    pub(crate) fn write_field(
        &self,
        table: &ferry_core::TableId,
        text: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SinkError> {
        write_field(&self.logical, self.decimal_limit, text, out)
            .map_err(|why| self.refusal(table, why))
    }

    fn refusal(&self, table: &ferry_core::TableId, why: Refusal) -> SinkError {
        SinkError::Unsupported {
            message: format!(
                "column {} of {table} ({}): {why}; Ferry stops rather than write another \
                 value into the MySQL/MariaDB target",
                self.name, self.logical
            ),
        }
    }

    /// Whether `=` against a literal needs a cast to the column's type (FLOAT: a literal is
    /// a DOUBLE, and the column's value widened to one differs).
    pub(crate) fn compare_cast(&self) -> Option<&'static str> {
        matches!(self.logical, LogicalType::Float { bits: 32 }).then_some("FLOAT")
    }
}

/// Why a value cannot be written exactly.
pub(crate) type Refusal = String;

/// A value as the target reads it: plain digits, a string, or bytes in hex.
enum Field<'a> {
    Plain(&'a [u8]),
    Str(std::borrow::Cow<'a, [u8]>),
    Hex(&'a [u8]),
}

fn write_literal(
    logical: &LogicalType,
    decimal_limit: Option<(u32, u32)>,
    text: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Refusal> {
    match field(logical, decimal_limit, text)? {
        Field::Plain(b) => out.extend_from_slice(b),
        Field::Str(b) => write_string(out, &b),
        Field::Hex(h) => {
            out.extend_from_slice(b"X'");
            out.extend_from_slice(h);
            out.push(b'\'');
        }
    }
    Ok(())
}

/// Appends the value as a field of `LOAD DATA`'s default text format (tab-separated,
/// backslash escapes, `CHARACTER SET binary`).
fn write_field(
    logical: &LogicalType,
    decimal_limit: Option<(u32, u32)>,
    text: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Refusal> {
    let escaped = |out: &mut Vec<u8>, b: u8| match b {
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\t' => out.extend_from_slice(b"\\t"),
        b'\n' => out.extend_from_slice(b"\\n"),
        0 => out.extend_from_slice(b"\\0"),
        b => out.push(b),
    };
    match field(logical, decimal_limit, text)? {
        Field::Plain(b) => out.extend_from_slice(b),
        Field::Str(b) => b.iter().for_each(|&b| escaped(out, b)),
        Field::Hex(h) => {
            let digit = |c: u8| {
                (c as char)
                    .to_digit(16)
                    .ok_or("a byte string not in hex form")
            };
            for pair in h.chunks(2) {
                let [hi, lo] = pair else {
                    return Err("a byte string of odd hex length".into());
                };
                escaped(out, (digit(*hi)? * 16 + digit(*lo)?) as u8);
            }
        }
    }
    Ok(())
}

fn field<'a>(
    logical: &LogicalType,
    decimal_limit: Option<(u32, u32)>,
    text: &'a [u8],
) -> Result<Field<'a>, Refusal> {
    let s = std::str::from_utf8(text).map_err(|_| "the value is not UTF-8".to_string())?;
    Ok(match logical {
        LogicalType::Bool => Field::Plain(match s {
            "t" => b"1",
            "f" => b"0",
            _ => return Err(format!("{s:?} is not a boolean")),
        }),
        LogicalType::Int { .. } => {
            number(s, false)?;
            Field::Plain(text)
        }
        LogicalType::Decimal { .. } => {
            let (int_digits, frac_digits) = number(s, false)?;
            if let Some((max_int, max_frac)) = decimal_limit {
                if int_digits > max_int as usize || frac_digits > max_frac as usize {
                    return Err(format!(
                        "the value has {int_digits} digits before and {frac_digits} after the \
                         point, more than DECIMAL({},{max_frac}) holds",
                        max_int + max_frac
                    ));
                }
            }
            Field::Plain(text)
        }
        LogicalType::Float { .. } => {
            number(s, true)?;
            Field::Plain(text)
        }
        LogicalType::Bytes => Field::Hex(
            text.strip_prefix(b"\\x")
                .ok_or_else(|| "a byte string not in hex form".to_string())?,
        ),
        LogicalType::Date => {
            date_in_range(s)?;
            Field::Str(text.into())
        }
        LogicalType::Timestamp { tz } => {
            date_in_range(s)?;
            let local = if *tz {
                s.strip_suffix("+00")
                    .ok_or_else(|| format!("{s:?} is not in UTC"))?
            } else {
                s
            };
            Field::Str(local.as_bytes().into())
        }
        LogicalType::Array(element) => Field::Str(array::to_json(s, element)?.into_bytes().into()),
        _ => Field::Str(text.into()),
    })
}

/// Checks a decimal number (with `exponent`, a float's text) and returns its digits before
/// and after the point, trailing fractional zeros not counted.
fn number(s: &str, exponent: bool) -> Result<(usize, usize), Refusal> {
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return Err(format!("MariaDB has no {s}"));
    }
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exp) = match unsigned.find(['e', 'E']) {
        Some(i) if exponent => (&unsigned[..i], Some(&unsigned[i + 1..])),
        _ => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) || !exp_ok {
        return Err(format!("{s:?} is not a number"));
    }
    let int_digits = int.trim_start_matches('0').len();
    let frac_digits = frac.trim_end_matches('0').len();
    Ok((int_digits, frac_digits))
}

/// MariaDB's DATE and DATETIME hold years 1 to 9999; PostgreSQL's reach 4713 BC,
/// 294276 AD and ±infinity.
fn date_in_range(s: &str) -> Result<(), Refusal> {
    let year = s.split('-').next().unwrap_or("");
    if s.contains("infinity") || s.ends_with(" BC") || year.len() != 4 || year == "0000" {
        return Err(format!(
            "{s:?} is outside what MariaDB's DATE and DATETIME hold (years 1 to 9999)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(logical: LogicalType, text: &str) -> Result<String, Refusal> {
        let column = Column::all(&table(vec![("c", logical)], vec![]))
            .pop()
            .unwrap();
        let mut out = Vec::new();
        write_literal(
            &column.logical,
            column.decimal_limit,
            text.as_bytes(),
            &mut out,
        )?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn table(columns: Vec<(&str, LogicalType)>, key: Vec<usize>) -> TableSchema {
        TableSchema {
            id: ferry_core::TableId::new("s", "t"),
            columns: columns
                .into_iter()
                .map(|(name, logical)| ferry_core::ColumnSchema {
                    name: name.into(),
                    type_name: "x".into(),
                    type_oid: 0,
                    logical,
                    nullable: true,
                    missing_value: None,
                    has_default: false,
                })
                .collect(),
            key,
            identity: ferry_core::ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: vec![],
            dialect: Dialect::Postgres,
        }
    }

    #[test]
    fn literals_of_each_logical_type() {
        assert_eq!(literal(LogicalType::Bool, "t").unwrap(), "1");
        assert_eq!(literal(LogicalType::Bytes, "\\x00ff").unwrap(), "X'00ff'");
        assert_eq!(
            literal(LogicalType::Text, "it's a \\ \0").unwrap(),
            "'it\\'s a \\\\ \\0'"
        );
        assert_eq!(
            literal(
                LogicalType::Timestamp { tz: true },
                "2024-02-29 13:05:00.25+00"
            )
            .unwrap(),
            "'2024-02-29 13:05:00.25'"
        );
        assert_eq!(
            literal(LogicalType::Float { bits: 64 }, "1e+100").unwrap(),
            "1e+100"
        );
    }

    #[test]
    fn values_the_target_cannot_hold_are_refused() {
        let unbounded = LogicalType::Decimal {
            precision: None,
            scale: None,
        };
        assert!(literal(unbounded.clone(), "1.500000000000000000000000000000000").is_ok());
        assert!(literal(unbounded.clone(), "0.0000000000000000000000000000001").is_err());
        assert!(literal(unbounded.clone(), &"9".repeat(36)).is_err());
        assert!(literal(unbounded, "NaN").is_err());
        assert!(literal(LogicalType::Float { bits: 64 }, "Infinity").is_err());
        assert!(literal(LogicalType::Date, "0044-03-15 BC").is_err());
        assert!(literal(LogicalType::Date, "infinity").is_err());
        assert!(literal(LogicalType::Timestamp { tz: false }, "10000-01-01 00:00:00").is_err());
        let wide = LogicalType::Decimal {
            precision: Some(70),
            scale: Some(2),
        };
        assert!(literal(wide, "12.5").is_ok());
    }

    #[test]
    fn column_types_follow_the_key_and_the_dialect() {
        let t = table(
            vec![
                ("a", LogicalType::Text),
                ("b", LogicalType::Bytes),
                ("c", LogicalType::Text),
            ],
            vec![0, 1],
        );
        assert!(column_type(&t, 0).unwrap().starts_with("VARCHAR(384)"));
        assert_eq!(column_type(&t, 1).unwrap(), "VARBINARY(1536)");
        assert!(column_type(&t, 2).unwrap().starts_with("LONGTEXT"));
        let n = table(
            vec![(
                "n",
                LogicalType::Decimal {
                    precision: Some(12),
                    scale: Some(2),
                },
            )],
            vec![],
        );
        assert_eq!(column_type(&n, 0).unwrap(), "DECIMAL(12,2)");
        let mut m = n.clone();
        m.dialect = Dialect::Mysql;
        assert_eq!(column_type(&m, 0).unwrap(), "x");
    }
}
