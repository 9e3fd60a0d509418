//! Column values as Debezium's JSON converter writes them (`decimal.handling.mode=string`,
//! `time.precision.mode=adaptive_time_microseconds`, `interval.handling.mode=numeric`),
//! read from the canonical text of each [`LogicalType`] (see `ferry_core::logical`).
//!
//! A text that does not read as its logical type is an error, never a guess: a consumer
//! must not receive a value that differs from the source's.

use base64::Engine as _;
use ferry_core::{LogicalType, Value};
use serde_json::Value as Json;

/// Debezium's stand-in for an unchanged TOASTed value the source did not send.
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
/// Debezium's average month for intervals in `numeric` mode (365.25 / 12 days).
const DAYS_PER_MONTH_AVG: f64 = 30.4375;

/// A value whose text does not read as its column's logical type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a value does not read as {logical}")]
pub struct ValueError {
    /// The logical type expected.
    pub logical: String,
}

/// The JSON of one column value.
pub fn encode(logical: &LogicalType, value: &Value) -> Result<Json, ValueError> {
    match value {
        Value::Null => Ok(Json::Null),
        Value::Unchanged => Ok(Json::String(UNAVAILABLE_VALUE.into())),
        Value::Text(bytes) => {
            let error = || ValueError {
                logical: logical.to_string(),
            };
            match logical {
                LogicalType::Bytes => {
                    let bytes = decode_hex(bytes).ok_or_else(error)?;
                    Ok(Json::String(
                        base64::engine::general_purpose::STANDARD.encode(bytes),
                    ))
                }
                _ => {
                    let text = std::str::from_utf8(bytes).map_err(|_| error())?;
                    encode_text(logical, text).ok_or_else(error)
                }
            }
        }
    }
}

fn encode_text(logical: &LogicalType, text: &str) -> Option<Json> {
    Some(match logical {
        LogicalType::Bool => match text {
            "t" => Json::Bool(true),
            "f" => Json::Bool(false),
            _ => return None,
        },
        LogicalType::Int { .. } => Json::from(text.parse::<i64>().ok()?),
        LogicalType::Float { .. } => match text {
            "NaN" | "Infinity" | "-Infinity" => Json::String(text.into()),
            _ => Json::from(serde_json::Number::from_f64(text.parse::<f64>().ok()?)?),
        },
        LogicalType::Decimal { .. }
        | LogicalType::Text
        | LogicalType::Enum
        | LogicalType::Json
        | LogicalType::Uuid
        | LogicalType::Other { .. } => Json::String(text.into()),
        LogicalType::Bytes => {
            let bytes = decode_hex(text.as_bytes())?;
            Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        LogicalType::Date => match text {
            "infinity" | "-infinity" => Json::String(text.into()),
            _ => Json::from(parse_date(text)?),
        },
        LogicalType::Time { tz: false } => Json::from(parse_time(text)?),
        LogicalType::Time { tz: true } => Json::String(time_tz_utc(text)?),
        LogicalType::Timestamp { tz: false } => match text {
            "infinity" | "-infinity" => Json::String(text.into()),
            _ => {
                let (date, time) = text.split_once(' ')?;
                let (time, bc) = match time.strip_suffix(" BC") {
                    Some(t) => (t, " BC"),
                    None => (time, ""),
                };
                let days = parse_date(&format!("{date}{bc}"))?;
                Json::from(days.checked_mul(MICROS_PER_DAY)? + parse_time(time)?)
            }
        },
        LogicalType::Timestamp { tz: true } => match text {
            "infinity" | "-infinity" => Json::String(text.into()),
            _ => Json::String(timestamptz_iso(text)?),
        },
        LogicalType::Interval => Json::from(interval_micros(text)?),
        LogicalType::Array(element) => parse_array(element, text)?,
    })
}

/// `\x` then hex digits (PostgreSQL's `bytea_output=hex`).
fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    let hex = text.strip_prefix(b"\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Days since 1970-01-01 of `YYYY-MM-DD[ BC]` (proleptic Gregorian, as PostgreSQL).
fn parse_date(text: &str) -> Option<i64> {
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    };
    let mut parts = text.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1 {
        return None;
    }
    // Year 1 BC is astronomical year 0.
    let year = if bc { 1 - year } else { year };
    Some(days_from_civil(year, month, day))
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since midnight of `HH:MM:SS[.ffffff]` (`24:00:00` included).
fn parse_time(text: &str) -> Option<i64> {
    let (hms, fraction) = match text.split_once('.') {
        Some((hms, f)) => (hms, f),
        None => (text, ""),
    };
    let mut parts = hms.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let s: i64 = parts.next()?.parse().ok()?;
    if !(0..=24).contains(&h) || !(0..60).contains(&m) || !(0..=60).contains(&s) {
        return None;
    }
    if fraction.len() > 6 || !fraction.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = format!("{fraction:0<6}").parse().ok()?;
    Some(((h * 60 + m) * 60 + s) * MICROS_PER_SECOND + micros)
}

/// Splits `13:05:00.5+02:30` into the time and the offset in seconds.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    let at = text.rfind(['+', '-'])?;
    let (time, offset) = text.split_at(at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut parts = offset[1..].splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    let s: i64 = parts.next().map_or(Some(0), |s| s.parse().ok())?;
    Some((time, sign * (h * 3600 + m * 60 + s)))
}

/// `HH:MM:SS[.ffffff]Z` in UTC, as Debezium's `ZonedTime`.
fn time_tz_utc(text: &str) -> Option<String> {
    let (time, offset) = split_offset(text)?;
    let local = parse_time(time)?;
    let utc = (local - offset * MICROS_PER_SECOND).rem_euclid(MICROS_PER_DAY);
    Some(format!("{}Z", format_time(utc)))
}

fn format_time(micros: i64) -> String {
    let secs = micros / MICROS_PER_SECOND;
    let fraction = micros % MICROS_PER_SECOND;
    let hms = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if fraction == 0 {
        hms
    } else {
        format!("{hms}.{}", format!("{fraction:06}").trim_end_matches('0'))
    }
}

/// ISO 8601 in UTC (`2024-02-29T13:05:00.25Z`) from the canonical `… +00` text; BC years
/// as ISO's signed years (`-0043` is 44 BC).
fn timestamptz_iso(text: &str) -> Option<String> {
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    };
    let (date, time) = text.split_once(' ')?;
    let (time, offset) = split_offset(time)?;
    if offset != 0 {
        return None;
    }
    parse_time(time)?;
    parse_date(date)?;
    let date = if bc {
        let (year, rest) = date.split_once('-')?;
        format!("-{:04}-{rest}", year.parse::<i64>().ok()? - 1)
    } else {
        date.to_string()
    };
    Some(format!("{date}T{time}Z"))
}

/// Microseconds of a PostgreSQL-style interval (`1 year 2 mons 3 days -04:05:06.5`), a
/// month counting Debezium's average days.
fn interval_micros(text: &str) -> Option<i64> {
    let mut months = 0i64;
    let mut days = 0i64;
    let mut micros = 0i64;
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        if word.contains(':') {
            let (sign, hms) = match word.strip_prefix('-') {
                Some(rest) => (-1, rest),
                None => (1, word.strip_prefix('+').unwrap_or(word)),
            };
            // Hours may exceed 24 in an interval.
            let (h, rest) = hms.split_once(':')?;
            let hours: i64 = h.parse().ok()?;
            micros +=
                sign * (hours * 3600 * MICROS_PER_SECOND + parse_time(&format!("00:{rest}"))?);
            continue;
        }
        let n: i64 = word.parse().ok()?;
        match words.next()? {
            "year" | "years" => months += 12 * n,
            "mon" | "mons" => months += n,
            "day" | "days" => days += n,
            _ => return None,
        }
    }
    let month_micros = months as f64 * DAYS_PER_MONTH_AVG * MICROS_PER_DAY as f64;
    Some(month_micros.round() as i64 + days * MICROS_PER_DAY + micros)
}

/// A PostgreSQL array literal (`{1,NULL,3}`, `{{a,b},{c,d}}`) as a JSON array of its
/// elements' encodings. Arrays with explicit bounds (`[0:1]={…}`) are refused.
fn parse_array(element: &LogicalType, text: &str) -> Option<Json> {
    let mut chars = text.chars().peekable();
    let json = parse_array_level(element, &mut chars)?;
    chars.next().is_none().then_some(json)
}

fn parse_array_level(
    element: &LogicalType,
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Option<Json> {
    if chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(Json::Array(items));
    }
    loop {
        match chars.peek()? {
            '{' => items.push(parse_array_level(element, chars)?),
            '"' => {
                chars.next();
                let mut item = String::new();
                loop {
                    match chars.next()? {
                        '\\' => item.push(chars.next()?),
                        '"' => break,
                        c => item.push(c),
                    }
                }
                items.push(encode_element(element, &item)?);
            }
            _ => {
                let mut item = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    item.push(c);
                    chars.next();
                }
                let item = item.trim();
                if item == "NULL" {
                    items.push(Json::Null);
                } else {
                    items.push(encode_element(element, item)?);
                }
            }
        }
        match chars.next()? {
            ',' => continue,
            '}' => return Some(Json::Array(items)),
            _ => return None,
        }
    }
}

fn encode_element(element: &LogicalType, text: &str) -> Option<Json> {
    encode(element, &Value::Text(text.as_bytes().to_vec().into())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn enc(logical: LogicalType, text: &str) -> Json {
        encode(&logical, &Value::Text(text.as_bytes().to_vec().into())).unwrap()
    }

    #[test]
    fn scalars() {
        assert_eq!(enc(LogicalType::Bool, "t"), json!(true));
        assert_eq!(
            enc(LogicalType::Int { bits: 64 }, "-9223372036854775808"),
            json!(i64::MIN)
        );
        let dec = LogicalType::Decimal {
            precision: Some(12),
            scale: Some(2),
        };
        assert_eq!(enc(dec, "12.50"), json!("12.50"));
        assert_eq!(enc(LogicalType::Float { bits: 32 }, "1.1"), json!(1.1));
        assert_eq!(enc(LogicalType::Float { bits: 64 }, "1e+100"), json!(1e100));
        assert_eq!(enc(LogicalType::Float { bits: 64 }, "NaN"), json!("NaN"));
        assert_eq!(enc(LogicalType::Bytes, "\\x00ff10"), json!("AP8Q"));
        assert_eq!(
            enc(LogicalType::Json, r#"{"a": [1, 2]}"#),
            json!(r#"{"a": [1, 2]}"#)
        );
        let uuid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        assert_eq!(enc(LogicalType::Uuid, uuid), json!(uuid));
        assert_eq!(
            encode(&LogicalType::Text, &Value::Null).unwrap(),
            Json::Null
        );
        assert_eq!(
            encode(&LogicalType::Text, &Value::Unchanged).unwrap(),
            json!(UNAVAILABLE_VALUE)
        );
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(enc(LogicalType::Date, "1970-01-01"), json!(0));
        assert_eq!(enc(LogicalType::Date, "2024-02-29"), json!(19782));
        assert_eq!(enc(LogicalType::Date, "1969-12-31"), json!(-1));
        assert_eq!(enc(LogicalType::Date, "0001-12-31 BC"), json!(-719_163));
        assert_eq!(enc(LogicalType::Date, "infinity"), json!("infinity"));
        assert_eq!(
            enc(LogicalType::Time { tz: false }, "13:05:00.5"),
            json!(47_100_500_000i64)
        );
        assert_eq!(
            enc(LogicalType::Time { tz: false }, "24:00:00"),
            json!(MICROS_PER_DAY)
        );
        assert_eq!(
            enc(LogicalType::Time { tz: true }, "13:05:00+02"),
            json!("11:05:00Z")
        );
        assert_eq!(
            enc(LogicalType::Time { tz: true }, "01:00:00.25-03:30"),
            json!("04:30:00.25Z")
        );
        assert_eq!(
            enc(
                LogicalType::Timestamp { tz: false },
                "2024-02-29 13:05:00.25"
            ),
            json!(1_709_211_900_250_000i64)
        );
        assert_eq!(
            enc(
                LogicalType::Timestamp { tz: true },
                "2024-02-29 13:05:00.25+00"
            ),
            json!("2024-02-29T13:05:00.25Z")
        );
        assert_eq!(
            enc(LogicalType::Interval, "1 year 2 mons 3 days 04:05:06"),
            json!(
                ((14.0 * DAYS_PER_MONTH_AVG * 86_400e6) as i64)
                    + 3 * MICROS_PER_DAY
                    + 14_706_000_000
            )
        );
        assert_eq!(enc(LogicalType::Interval, "-00:00:01.5"), json!(-1_500_000));
    }

    #[test]
    fn arrays() {
        let ints = LogicalType::Array(Box::new(LogicalType::Int { bits: 32 }));
        assert_eq!(enc(ints.clone(), "{1,NULL,3}"), json!([1, null, 3]));
        assert_eq!(enc(ints.clone(), "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
        assert_eq!(enc(ints, "{}"), json!([]));
        let texts = LogicalType::Array(Box::new(LogicalType::Text));
        assert_eq!(
            enc(texts, r#"{"a b","c\"d",NULL,"NULL",e}"#),
            json!(["a b", "c\"d", null, "NULL", "e"])
        );
    }

    #[test]
    fn refuses_text_that_is_not_its_type() {
        for (logical, text) in [
            (LogicalType::Int { bits: 32 }, "1.5"),
            (LogicalType::Bool, "true"),
            (LogicalType::Bytes, "00ff"),
            (LogicalType::Date, "2024-13-01"),
            (LogicalType::Time { tz: false }, "12:00"),
            (
                LogicalType::Timestamp { tz: true },
                "2024-01-01 00:00:00+02",
            ),
            (
                LogicalType::Array(Box::new(LogicalType::Int { bits: 32 })),
                "[0:1]={1,2}",
            ),
        ] {
            let value = Value::Text(text.as_bytes().to_vec().into());
            assert!(encode(&logical, &value).is_err(), "{logical} {text}");
        }
    }

    proptest! {
        #[test]
        fn dates_count_days_like_the_calendar(days in -800_000i64..2_900_000) {
            // Walk back from a day count to a civil date (Hinnant's civil_from_days) and
            // read it again.
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + i64::from(m <= 2);
            let text = if y >= 1 {
                format!("{y:04}-{m:02}-{d:02}")
            } else {
                format!("{:04}-{m:02}-{d:02} BC", 1 - y)
            };
            prop_assert_eq!(enc(LogicalType::Date, &text), json!(days));
        }

        #[test]
        fn integers_and_bytes_round_trip(n in any::<i64>(), bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(enc(LogicalType::Int { bits: 64 }, &n.to_string()), json!(n));
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let encoded = enc(LogicalType::Bytes, &format!("\\x{hex}"));
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_str().unwrap())
                .unwrap();
            prop_assert_eq!(decoded, bytes);
        }

        #[test]
        fn times_round_trip(micros in 0i64..MICROS_PER_DAY) {
            let time = format_time(micros);
            prop_assert_eq!(enc(LogicalType::Time { tz: false }, &time), json!(micros));
        }
    }
}
