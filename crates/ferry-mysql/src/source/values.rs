//! Values into canonical text ([`ferry_core::logical`]): one converter for both paths.
//!
//! Snapshot reads use the binary protocol in a UTC session, binlog rows are decoded by
//! `mysql_common`; both give a [`mysql_async::Value`] per column, in forms that differ only
//! where the binlog is rawer ([`Origin::Binlog`]): strings in the column's character set,
//! ENUM as its index, SET as a bit mask, TIMESTAMP as seconds since the epoch, YEAR 0000
//! as 1900. A value of a form its column's kind does not expect is an error, never a guess:
//! it means the table's definition and the row disagree.

use bytes::{BufMut, BytesMut};
use ferry_core::{ErrorClass, SourceError, Value};
use mysql_async::Value as My;

use super::types::{Charset, Kind};

/// Where a value was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A snapshot read (binary protocol, UTF-8 session).
    Snapshot,
    /// A binlog row.
    Binlog,
}

/// Why a value cannot be converted (names the problem, never the value).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadValue(pub(crate) String);

impl BadValue {
    /// A definite source error for column `column` of `table`.
    pub(crate) fn into_error(self, table: &str, column: &str) -> SourceError {
        SourceError::message(
            format!("cannot read column {column} of {table}: {}", self.0),
            ErrorClass::Definite,
        )
    }
}

fn bad(what: impl Into<String>) -> BadValue {
    BadValue(what.into())
}

const ZERO_DATE: &str = "it holds a zero date (0000-00-00, or a zero month or day), which \
                         has no equivalent outside MySQL; set such values to NULL or a real \
                         date on the source, or exclude the table";

/// The canonical text of `value`, a column of `kind` read from `origin`.
pub(crate) fn canonical(value: My, kind: &Kind, origin: Origin) -> Result<Value, BadValue> {
    if value == My::NULL {
        return Ok(Value::Null);
    }
    let mut text = BytesMut::new();
    write_canonical(value, kind, origin, &mut text)?;
    Ok(Value::Text(text.freeze()))
}

/// Appends the canonical text of `value` (not NULL), a column of `kind` read from `origin`,
/// to `out`. The stream writes every value of its rows into one buffer and splits each off
/// ([`BytesMut::split`]): no allocation per value.
pub(crate) fn write_canonical(
    value: My,
    kind: &Kind,
    origin: Origin,
    out: &mut BytesMut,
) -> Result<(), BadValue> {
    match (kind, value) {
        (_, My::NULL) => return Err(bad("a NULL where text was expected")),
        (Kind::Int { signed, bytes }, My::Int(i)) => int_text(i128::from(i), *signed, *bytes, out),
        (Kind::Int { signed, bytes }, My::UInt(u)) => int_text(i128::from(u), *signed, *bytes, out),
        (Kind::BigUnsigned, My::Int(i)) => number(i as u64, out),
        (Kind::BigUnsigned, My::UInt(u)) => number(u, out),
        (Kind::Decimal { scale }, My::Bytes(b)) => push(out, &decimal_text(utf8_str(&b)?, *scale)?),
        (Kind::Float, My::Float(f)) => push(out, &format!("{f:?}")),
        (Kind::Float, My::Double(f)) => push(out, &format!("{:?}", f as f32)),
        (Kind::Double, My::Double(f)) => push(out, &format!("{f:?}")),
        (Kind::Text { charset }, My::Bytes(b)) => match origin {
            Origin::Snapshot => push(out, utf8_str(&b)?),
            Origin::Binlog => write_charset(&b, *charset, out)?,
        },
        (Kind::Json, My::Bytes(b)) => push(out, utf8_str(&b)?),
        (Kind::Bytes, My::Bytes(b)) => write_hex(&b, out),
        (Kind::Date, My::Date(y, m, d, ..)) => {
            if m == 0 || d == 0 {
                return Err(bad(ZERO_DATE));
            }
            date_text(u32::from(y), m, d, out);
        }
        (Kind::DateTime | Kind::Timestamp, My::Date(y, mo, d, h, mi, s, us)) => {
            if mo == 0 || d == 0 {
                return Err(bad(ZERO_DATE));
            }
            date_text(u32::from(y), mo, d, out);
            out.put_u8(b' ');
            clock_text(h, mi, s, us, out);
            if *kind == Kind::Timestamp {
                push(out, "+00");
            }
        }
        (Kind::Timestamp, My::Bytes(b)) if origin == Origin::Binlog => {
            push(out, &epoch_text(utf8_str(&b)?)?)
        }
        (Kind::Timestamp, My::Int(seconds)) if origin == Origin::Binlog => {
            push(out, &epoch_text(&seconds.to_string())?)
        }
        (Kind::Time, My::Time(negative, days, h, m, s, us)) => {
            push(out, &time_text(negative, days, h, m, s, us))
        }
        (Kind::Year, My::Int(y)) => number(y, out),
        (Kind::Year, My::UInt(y)) => number(y, out),
        (Kind::Year, My::Bytes(b)) => match utf8_str(&b)? {
            // The binlog stores YEAR as years since 1900, and 0 for YEAR 0000.
            "1900" => push(out, "0"),
            y => push(out, y),
        },
        (Kind::Enum(labels), My::Int(index)) if origin == Origin::Binlog => match index {
            0 => {}
            i => push(
                out,
                labels
                    .get(i as usize - 1)
                    .ok_or_else(|| bad(format!("ENUM index {i} is beyond the column's labels")))?,
            ),
        },
        (Kind::Enum(_) | Kind::Set(_), My::Bytes(b)) if origin == Origin::Snapshot => {
            push(out, utf8_str(&b)?)
        }
        (Kind::Set(labels), My::Bytes(mask)) => push(out, &set_text(&mask, labels)?),
        (Kind::Bit { bits }, My::Bytes(b)) => push(out, &bit_text(&b, *bits)?),
        (Kind::Bit { bits }, My::UInt(u)) => push(out, &bit_value_text(u, *bits)),
        (Kind::Bit { bits }, My::Int(i)) => push(out, &bit_value_text(i as u64, *bits)),
        (kind, value) => {
            return Err(bad(format!(
                "a {} value where the column's definition ({kind:?}) expects another form; \
                 the table may have changed on the source",
                variant(&value)
            )))
        }
    }
    Ok(())
}

fn push(out: &mut BytesMut, text: &str) {
    out.extend_from_slice(text.as_bytes());
}

/// An integer's decimal digits.
fn number(value: impl itoa::Integer, out: &mut BytesMut) {
    push(out, itoa::Buffer::new().format(value));
}

/// `YYYY-MM-DD`, as `{y:04}-{m:02}-{d:02}` prints it.
fn date_text(y: u32, m: u8, d: u8, out: &mut BytesMut) {
    if y > 9999 {
        push(out, &format!("{y:04}-{m:02}-{d:02}"));
        return;
    }
    out.extend_from_slice(&[
        b'0' + (y / 1000) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
        b'-',
    ]);
    two_digits(m, out);
    out.put_u8(b'-');
    two_digits(d, out);
}

/// `HH:MM:SS[.f]`: two digits each (a time of day), then [`fraction`].
fn clock_text(h: u8, mi: u8, s: u8, micros: u32, out: &mut BytesMut) {
    two_digits(h, out);
    out.put_u8(b':');
    two_digits(mi, out);
    out.put_u8(b':');
    two_digits(s, out);
    if micros > 999_999 {
        push(out, &fraction(micros));
    } else if micros != 0 {
        let mut digits = [b'.', 0, 0, 0, 0, 0, 0];
        let mut rest = micros;
        for slot in digits[1..].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let end = digits
            .iter()
            .rposition(|b| *b != b'0')
            .expect("micros != 0")
            + 1;
        out.extend_from_slice(&digits[..end]);
    }
}

/// At least two digits, as `{n:02}` prints them.
fn two_digits(n: u8, out: &mut BytesMut) {
    if n < 100 {
        out.extend_from_slice(&[b'0' + n / 10, b'0' + n % 10]);
    } else {
        number(n, out);
    }
}

/// An integer of a column `bytes` wide, read as the column declares it: the driver takes
/// signedness from the binlog's metadata, which it misreads for some types (MEDIUMINT), so
/// a value outside the declared range is the same bits in the other signedness.
fn int_text(value: i128, signed: bool, bytes: u8, out: &mut BytesMut) {
    let span = 1i128 << (8 * u32::from(bytes));
    let value = match signed {
        true if value >= span / 2 => value - span,
        false if value < 0 => value + span,
        _ => value,
    };
    number(value, out);
}

fn variant(value: &My) -> &'static str {
    match value {
        My::NULL => "NULL",
        My::Bytes(_) => "string",
        My::Int(_) | My::UInt(_) => "integer",
        My::Float(_) | My::Double(_) => "floating-point",
        My::Date(..) => "date",
        My::Time(..) => "time",
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, BadValue> {
    String::from_utf8(bytes).map_err(|_| bad("its bytes are not valid UTF-8"))
}

fn utf8_str(bytes: &[u8]) -> Result<&str, BadValue> {
    std::str::from_utf8(bytes).map_err(|_| bad("its bytes are not valid UTF-8"))
}

/// `\x` then two lowercase hex digits per byte.
fn write_hex(bytes: &[u8], out: &mut BytesMut) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 + 2 * bytes.len());
    push(out, "\\x");
    for b in bytes {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]);
    }
}

/// `.ffffff` without trailing zeros, or nothing.
fn fraction(micros: u32) -> String {
    if micros == 0 {
        return String::new();
    }
    let digits = format!(".{micros:06}");
    digits.trim_end_matches('0').to_string()
}

/// A TIME as a PostgreSQL interval in `postgres` style: `[-]HH:MM:SS[.f]`, hours beyond 24.
pub(crate) fn time_text(negative: bool, days: u32, h: u8, m: u8, s: u8, us: u32) -> String {
    let hours = u64::from(days) * 24 + u64::from(h);
    let zero = hours == 0 && m == 0 && s == 0 && us == 0;
    let sign = if negative && !zero { "-" } else { "" };
    format!("{sign}{hours:02}:{m:02}:{s:02}{}", fraction(us))
}

/// A decimal's text with exactly `scale` digits after the point and no negative zero.
pub(crate) fn decimal_text(text: &str, scale: u32) -> Result<String, BadValue> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad("it is not a decimal number"));
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let scale = scale as usize;
    let mut frac = frac.to_string();
    if frac.len() > scale {
        if frac[scale..].bytes().any(|b| b != b'0') {
            return Err(bad("it has more fractional digits than the column's scale"));
        }
        frac.truncate(scale);
    }
    while frac.len() < scale {
        frac.push('0');
    }
    let zero = int == "0" && frac.bytes().all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    Ok(if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// Seconds since the epoch (`123` or `123.456789`, a binlog TIMESTAMP) as UTC text.
fn epoch_text(text: &str) -> Result<String, BadValue> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().map_err(|_| bad("unreadable TIMESTAMP"))?;
    if secs == 0 && frac.bytes().all(|b| b == b'0') {
        // MySQL stores the zero TIMESTAMP as 0: 1970-01-01 00:00:00 is out of its range.
        return Err(bad(ZERO_DATE));
    }
    let micros: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")[..6]
            .parse()
            .map_err(|_| bad("unreadable TIMESTAMP fraction"))?
    };
    Ok(timestamp_text(secs, micros))
}

/// `secs` since the epoch and `micros` as `YYYY-MM-DD HH:MM:SS[.f]+00`.
pub(crate) fn timestamp_text(secs: i64, micros: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{}+00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        fraction(micros)
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A SET bit mask (little-endian) as its labels joined by `,`.
fn set_text(mask: &[u8], labels: &[String]) -> Result<String, BadValue> {
    let mut out = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        if mask.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0) {
            out.push(label.as_str());
        }
    }
    let known = labels.len();
    let stray = mask
        .iter()
        .enumerate()
        .any(|(i, b)| (0..8).any(|bit| b & (1 << bit) != 0 && i * 8 + bit >= known));
    if stray {
        return Err(bad("a SET bit beyond the column's labels"));
    }
    Ok(out.join(","))
}

/// BIT bytes (big-endian) as `t`/`f` for BIT(1), else the unsigned number.
fn bit_text(bytes: &[u8], bits: u32) -> Result<String, BadValue> {
    if bytes.len() > 8 {
        return Err(bad("a BIT value wider than 64 bits"));
    }
    let value = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    Ok(bit_value_text(value, bits))
}

fn bit_value_text(value: u64, bits: u32) -> String {
    if bits == 1 {
        if value == 0 { "f" } else { "t" }.to_string()
    } else {
        value.to_string()
    }
}

/// Appends bytes of a binlog string in `charset` as UTF-8.
fn write_charset(bytes: &[u8], charset: Charset, out: &mut BytesMut) -> Result<(), BadValue> {
    match charset {
        Charset::Utf8 => push(out, utf8_str(bytes)?),
        Charset::Latin1 if bytes.is_ascii() => out.extend_from_slice(bytes),
        other => push(out, &decode_charset(bytes, other)?),
    }
    Ok(())
}

/// Bytes of a binlog string in `charset`, as UTF-8.
pub(crate) fn decode_charset(bytes: &[u8], charset: Charset) -> Result<String, BadValue> {
    let units16 = |big: bool| -> Result<String, BadValue> {
        if !bytes.len().is_multiple_of(2) {
            return Err(bad("an odd number of bytes in a UTF-16 string"));
        }
        let units = bytes.chunks(2).map(|c| {
            if big {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|_| bad("invalid UTF-16"))
    };
    match charset {
        Charset::Utf8 => utf8(bytes.to_vec()),
        Charset::Latin1 => Ok(bytes.iter().map(|b| cp1252(*b)).collect()),
        Charset::Utf16Be => units16(true),
        Charset::Utf16Le => units16(false),
        Charset::Utf32 => {
            if !bytes.len().is_multiple_of(4) {
                return Err(bad("a UTF-32 string whose length is not a multiple of 4"));
            }
            bytes
                .chunks(4)
                .map(|c| {
                    char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .ok_or_else(|| bad("invalid UTF-32"))
                })
                .collect()
        }
    }
}

/// MySQL's `latin1` is Windows-1252; its five undefined bytes map to the C1 controls.
fn cp1252(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013,
        0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
    ];
    match b {
        0x80..=0x9F => char::from_u32(u32::from(HIGH[usize::from(b - 0x80)]))
            .expect("the table holds valid code points"),
        _ => char::from(b),
    }
}

#[cfg(test)]
mod tests;
