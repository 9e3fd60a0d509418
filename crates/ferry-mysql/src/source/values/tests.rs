//! Canonical text of every kind, and property tests that encode the binlog's binary forms
//! (DECIMAL, DATETIME2, TIME2, TIMESTAMP2) the way the server does, decode them with the
//! driver's reader, and check the text Ferry prints.

use super::*;
use mysql_common::binlog::decimal::Decimal;
use mysql_common::binlog::misc;
use proptest::prelude::*;
use std::str::FromStr;

fn text(value: My, kind: &Kind, origin: Origin) -> String {
    match canonical(value, kind, origin).unwrap() {
        Value::Text(b) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn forms_of_both_origins_meet() {
    let ts = Kind::Timestamp;
    assert_eq!(
        text(My::Bytes(b"1700000000.25".to_vec()), &ts, Origin::Binlog),
        "2023-11-14 22:13:20.25+00"
    );
    assert_eq!(
        text(
            My::Date(2023, 11, 14, 22, 13, 20, 250_000),
            &ts,
            Origin::Snapshot
        ),
        "2023-11-14 22:13:20.25+00"
    );
    let labels = Kind::Enum(vec!["a".into(), "b".into()]);
    assert_eq!(text(My::Int(2), &labels, Origin::Binlog), "b");
    assert_eq!(
        text(My::Bytes(b"b".to_vec()), &labels, Origin::Snapshot),
        "b"
    );
    let set = Kind::Set(vec!["x".into(), "y".into(), "z".into()]);
    assert_eq!(text(My::Bytes(vec![0b101]), &set, Origin::Binlog), "x,z");
    assert_eq!(
        text(My::Bytes(b"1900".to_vec()), &Kind::Year, Origin::Binlog),
        "0"
    );
    assert_eq!(text(My::Int(2024), &Kind::Year, Origin::Snapshot), "2024");
    assert_eq!(
        text(My::Bytes(vec![1]), &Kind::Bit { bits: 1 }, Origin::Binlog),
        "t"
    );
    assert_eq!(
        text(
            My::Bytes(vec![1, 0]),
            &Kind::Bit { bits: 9 },
            Origin::Binlog
        ),
        "256"
    );
    assert_eq!(
        text(My::UInt(u64::MAX), &Kind::BigUnsigned, Origin::Binlog),
        u64::MAX.to_string()
    );
    let i24 = Kind::Int {
        signed: true,
        bytes: 3,
    };
    assert_eq!(text(My::Int(8_388_608), &i24, Origin::Binlog), "-8388608");
    assert_eq!(text(My::Int(-1), &i24, Origin::Snapshot), "-1");
    let u32_ = Kind::Int {
        signed: false,
        bytes: 4,
    };
    assert_eq!(text(My::Int(-1), &u32_, Origin::Binlog), "4294967295");
    assert_eq!(
        text(My::Bytes(vec![0, 0xff]), &Kind::Bytes, Origin::Binlog),
        "\\x00ff"
    );
    assert_eq!(text(My::Float(1.1), &Kind::Float, Origin::Binlog), "1.1");
    assert_eq!(
        text(My::Double(1e100), &Kind::Double, Origin::Binlog),
        "1e100"
    );
    assert_eq!(
        text(
            My::Time(true, 34, 22, 59, 59, 0),
            &Kind::Time,
            Origin::Binlog
        ),
        "-838:59:59"
    );
}

#[test]
fn binlog_strings_decode_from_their_charset() {
    let latin1 = Kind::Text {
        charset: Charset::Latin1,
    };
    assert_eq!(
        text(My::Bytes(vec![0xe9, 0x80]), &latin1, Origin::Binlog),
        "é€"
    );
    let utf16 = Kind::Text {
        charset: Charset::Utf16Be,
    };
    assert_eq!(
        text(
            My::Bytes(vec![0xd8, 0x3d, 0xde, 0x00]),
            &utf16,
            Origin::Binlog
        ),
        "😀"
    );
    let utf32 = Kind::Text {
        charset: Charset::Utf32,
    };
    assert_eq!(
        text(My::Bytes(vec![0, 0, 0, 0x41]), &utf32, Origin::Binlog),
        "A"
    );
}

#[test]
fn zero_dates_and_mismatched_forms_are_refused() {
    for (value, kind) in [
        (My::Date(0, 0, 0, 0, 0, 0, 0), Kind::Date),
        (My::Date(2024, 0, 1, 0, 0, 0, 0), Kind::DateTime),
        (My::Bytes(b"0".to_vec()), Kind::Timestamp),
        (
            My::Int(1),
            Kind::Text {
                charset: Charset::Utf8,
            },
        ),
    ] {
        assert!(canonical(value, &kind, Origin::Binlog).is_err(), "{kind:?}");
    }
}

/// DATETIME2 as the server writes it: 5 bytes big-endian of the packed value plus an
/// offset, then the fraction in `(dec+1)/2` bytes.
fn datetime2(
    (y, mo, d): (u32, u32, u32),
    (h, mi, s): (u32, u32, u32),
    frac: u32,
    dec: u32,
) -> Vec<u8> {
    let ym = i64::from(y * 13 + mo);
    let ymd = (ym << 5) | i64::from(d);
    let hms = i64::from((h << 12) | (mi << 6) | s);
    let int = ((ymd << 17) | hms) + misc::DATETIMEF_INT_OFS;
    let mut out = int.to_be_bytes()[3..].to_vec();
    match dec {
        1 | 2 => out.push((frac / 10_000) as u8),
        3 | 4 => out.extend_from_slice(&((frac / 100) as u16).to_be_bytes()),
        5 | 6 => out.extend_from_slice(&frac.to_be_bytes()[1..]),
        _ => {}
    }
    out
}

/// TIME2 with 6 fractional digits: 6 bytes big-endian of the packed value plus an offset.
fn time2(negative: bool, h: u32, m: u32, s: u32, us: u32) -> Vec<u8> {
    let int = i64::from((h << 12) | (m << 6) | s);
    let mut packed = (int << 24) + i64::from(us);
    if negative {
        packed = -packed;
    }
    (packed + misc::TIMEF_OFS).to_be_bytes()[2..].to_vec()
}

proptest! {
    #[test]
    fn datetime2_round_trips(
        y in 1000u32..=9999, mo in 1u32..=12, d in 1u32..=28,
        h in 0u32..24, mi in 0u32..60, s in 0u32..60,
        dec in 0u32..=6, us in 0u32..1_000_000,
    ) {
        let frac = us / 10u32.pow(6 - dec) * 10u32.pow(6 - dec);
        let bytes = datetime2((y, mo, d), (h, mi, s), frac, dec);
        let packed = misc::my_datetime_packed_from_binary(&bytes[..], dec).unwrap();
        let value = misc::datetime_from_packed(packed);
        let expected = format!(
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{}",
            fraction(frac)
        );
        prop_assert_eq!(text(value, &Kind::DateTime, Origin::Binlog), expected);
    }

    #[test]
    fn time2_round_trips(
        negative: bool, h in 0u32..=838, m in 0u32..60, s in 0u32..60, us in 0u32..1_000_000,
    ) {
        let bytes = time2(negative, h, m, s, us);
        let packed = misc::my_time_packed_from_binary(&bytes[..], 6).unwrap();
        let value = misc::time_from_packed(packed);
        let zero = h == 0 && m == 0 && s == 0 && us == 0;
        let sign = if negative && !zero { "-" } else { "" };
        let expected = format!("{sign}{h:02}:{m:02}:{s:02}{}", fraction(us));
        prop_assert_eq!(text(value, &Kind::Time, Origin::Binlog), expected);
    }

    #[test]
    fn decimal_binary_round_trips(
        negative: bool, int in "[1-9][0-9]{0,19}", frac in "[0-9]{0,10}",
    ) {
        let scale = frac.len();
        let precision = int.len() + scale;
        let literal = format!("{}{int}{}{frac}", if negative { "-" } else { "" },
            if scale > 0 { "." } else { "" });
        let decimal = Decimal::from_str(&literal).unwrap();
        let mut bytes = Vec::new();
        decimal.write_bin(&mut bytes).unwrap();
        let back = Decimal::read_bin(&bytes[..], precision, scale, false).unwrap();
        let got = text(My::Bytes(back.to_string().into_bytes()),
            &Kind::Decimal { scale: scale as u32 }, Origin::Binlog);
        prop_assert_eq!(got, decimal_text(&literal, scale as u32).unwrap());
    }

    #[test]
    fn decimal_text_keeps_the_scale(int in 0u64..1_000_000, frac in 0u32..1000) {
        let t = decimal_text(&format!("{int}.{frac:03}"), 5).unwrap();
        prop_assert_eq!(t, format!("{int}.{frac:03}00"));
    }

    #[test]
    fn timestamps_match_the_civil_calendar(secs in 1i64..253_402_300_799) {
        let t = timestamp_text(secs, 0);
        let (date, rest) = t.split_once(' ').unwrap();
        let mut parts = date.split('-').map(|p| p.parse::<i64>().unwrap());
        let (y, m, d) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        // Days from civil (the inverse), independently of civil_from_days.
        let (yy, mm) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
        let era = yy.div_euclid(400);
        let yoe = yy - era * 400;
        let doy = (153 * mm + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        prop_assert_eq!(days, secs.div_euclid(86_400));
        prop_assert!(rest.ends_with("+00"));
    }
}
