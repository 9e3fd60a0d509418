//! Every PostgreSQL type of the PostgreSQL → MariaDB mapping (`docs/types.md`), round-tripped
//! by a property test: random rows of every type go into the source, through Ferry's stream
//! into MariaDB, and each value must read back as what the mapping promises (exact values,
//! normalized only where the target prints the same value differently).

mod common;

use std::time::Duration;

use common::mariadb::{hex_text, micros, same, ToMariaDb};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

/// One source row: each value as PostgreSQL text (`None`: NULL).
#[derive(Clone, Debug)]
struct Row {
    i2: Option<i16>,
    i8: Option<i64>,
    num: Option<String>,
    num_fixed: Option<String>,
    f4: Option<f32>,
    f8: Option<f64>,
    flag: Option<bool>,
    txt: Option<String>,
    vc: Option<String>,
    bin: Option<Vec<u8>>,
    day: Option<String>,
    ts: Option<String>,
    tstz: Option<String>,
    clock: Option<String>,
    doc: Option<String>,
    id: Option<[u8; 16]>,
    ints: Option<Vec<Option<i32>>>,
    texts: Option<Vec<Option<String>>>,
    span: Option<String>,
    tt: Option<String>,
    mood: Option<String>,
    addr: Option<String>,
    code: Option<String>,
}

/// A decimal within DECIMAL(65,30): up to 35 digits before the point and 30 after.
fn decimal() -> impl Strategy<Value = String> {
    ("-?[0-9]{1,35}", proptest::option::of("[0-9]{1,30}")).prop_map(|(int, frac)| match frac {
        Some(f) => format!("{int}.{f}"),
        None => int,
    })
}

/// Text without NUL (PostgreSQL's text cannot hold it): quotes, backslashes, tabs,
/// newlines, any Unicode.
fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,40}"
}

/// A date in years 2 to 9998 (with any offset, a timestamptz stays within MariaDB's years
/// 1 to 9999).
fn date() -> impl Strategy<Value = String> {
    (2u32..=9998, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
}

fn time() -> impl Strategy<Value = String> {
    (0u32..24, 0u32..60, 0u32..60, 0u32..1_000_000)
        .prop_map(|(h, m, s, us)| format!("{h:02}:{m:02}:{s:02}.{us:06}"))
}

fn row() -> impl Strategy<Value = Row> {
    use proptest::option::of;
    let numbers = (
        of(any::<i16>()),
        of(any::<i64>()),
        of(decimal()),
        of("-?[0-9]{1,10}\\.[0-9]{2}"),
        of(any::<f32>().prop_filter("normal", |f| f.is_normal() || *f == 0.0)),
        of(any::<f64>().prop_filter("normal", |f| f.is_normal() || *f == 0.0)),
        of(any::<bool>()),
    );
    let texts = (
        of(text()),
        of("[a-z ]{0,20}"),
        of(proptest::collection::vec(any::<u8>(), 0..64)),
        of(any::<[u8; 16]>()),
        of(proptest::collection::vec(of(any::<i32>()), 0..5)),
        of(proptest::collection::vec(of(text()), 0..4)),
    );
    let times = (
        of(date()),
        of((date(), time()).prop_map(|(d, t)| format!("{d} {t}"))),
        of((date(), time(), -12i32..=12).prop_map(|(d, t, z)| format!("{d} {t}{z:+03}"))),
        of(time()),
        of((0i32..1000, 0i32..100, 0i32..1000)
            .prop_map(|(m, d, s)| format!("{m} mons {d} days {s} seconds"))),
        of(prop_oneof![
            Just(r#"{"a": [1, 2.5, null], "b": {"c": "d\"e"}}"#.to_string()),
            text().prop_map(|t| json!({ "t": t, "n": [1, true] }).to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
        ]),
    );
    // Kept as PostgreSQL's text on the target: time with time zone, an enum, inet, and a
    // padded char(n).
    let as_text = (
        of((time(), -14i32..=14).prop_map(|(t, z)| format!("{t}{z:+03}"))),
        of(prop_oneof![Just("sad"), Just("ok"), Just("happy")].prop_map(str::to_string)),
        of(any::<[u8; 4]>().prop_map(|[a, b, c, d]| format!("{a}.{b}.{c}.{d}/{}", 8 + d % 25))),
        of("[a-z]{0,5}"),
    );
    (numbers, texts, times, as_text).prop_map(
        |(
            (i2, i8, num, num_fixed, f4, f8, flag),
            (txt, vc, bin, id, ints, texts),
            (day, ts, tstz, clock, span, doc),
            (tt, mood, addr, code),
        )| Row {
            i2,
            i8,
            num,
            num_fixed,
            f4,
            f8,
            flag,
            txt,
            vc,
            bin,
            day,
            ts,
            tstz,
            clock,
            doc,
            id,
            ints,
            texts,
            span,
            tt,
            mood,
            addr,
            code,
        },
    )
}

const CREATE: &str = "CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TABLE public.all_types (
    k serial PRIMARY KEY, i2 smallint, i8 bigint, num numeric, num_fixed numeric(12,2),
    f4 real, f8 double precision, flag boolean, txt text, vc varchar(20), bin bytea,
    day date, ts timestamp, tstz timestamptz, clock time, doc jsonb, id uuid,
    ints int[], texts text[], span interval, tt timetz, mood public.mood, addr inet,
    code char(5))";

fn array_literal<T>(items: &[Option<T>], quote: impl Fn(&T) -> String) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|v| v.as_ref().map_or_else(|| "NULL".into(), &quote))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// The row's parameters as text, in column order.
fn params(r: &Row) -> Vec<Option<String>> {
    let hex = |b: &Vec<u8>| {
        format!(
            "\\x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        )
    };
    let uuid = |b: &[u8; 16]| {
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    };
    let quoted = |s: &String| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    vec![
        r.i2.map(|v| v.to_string()),
        r.i8.map(|v| v.to_string()),
        r.num.clone(),
        r.num_fixed.clone(),
        r.f4.map(|v| format!("{v:e}")),
        r.f8.map(|v| format!("{v:e}")),
        r.flag.map(|v| v.to_string()),
        r.txt.clone(),
        r.vc.clone(),
        r.bin.as_ref().map(hex),
        r.day.clone(),
        r.ts.clone(),
        r.tstz.clone(),
        r.clock.clone(),
        r.doc.clone(),
        r.id.as_ref().map(uuid),
        r.ints.as_ref().map(|a| array_literal(a, |v| v.to_string())),
        r.texts.as_ref().map(|a| array_literal(a, quoted)),
        r.span.clone(),
        r.tt.clone(),
        r.mood.clone(),
        r.addr.clone(),
        r.code.clone(),
    ]
}

const COLUMNS: [(&str, &str); 23] = [
    ("i2", "int2"),
    ("i8", "int8"),
    ("num", "numeric"),
    ("num_fixed", "numeric"),
    ("f4", "float4"),
    ("f8", "float8"),
    ("flag", "bool"),
    ("txt", "text"),
    ("vc", "varchar"),
    ("bin", "bytea"),
    ("day", "date"),
    ("ts", "timestamp"),
    ("tstz", "timestamptz"),
    ("clock", "time"),
    ("doc", "jsonb"),
    ("id", "uuid"),
    ("ints", "int4[]"),
    ("texts", "text[]"),
    ("span", "interval"),
    ("tt", "timetz"),
    ("mood", "public.mood"),
    ("addr", "inet"),
    ("code", "char(5)"),
];

/// How each column must read back: (PostgreSQL expression, MariaDB expression).
fn normalized() -> Vec<(String, String)> {
    let decimal = |c: &str| {
        // Both sides' exact value, trailing zeros dropped.
        (
            format!("trim_scale(\"{c}\")"),
            format!("trim(trailing '.' from trim(trailing '0' from if(`{c}` like '%.%', `{c}`, concat(`{c}`, '.'))))"),
        )
    };
    vec![
        same("k"),
        same("i2"),
        same("i8"),
        decimal("num"),
        decimal("num_fixed"),
        ("\"flag\"::int".into(), "`flag`".into()),
        hex_text("txt"),
        hex_text("vc"),
        ("encode(\"bin\", 'hex')".into(), "lower(hex(`bin`))".into()),
        ("\"day\"::text".into(), "`day`".into()),
        micros("ts", false),
        micros("tstz", true),
        (
            "to_char('2000-01-01'::date + \"clock\", 'HH24:MI:SS.US')".into(),
            "time_format(`clock`, '%H:%i:%s.%f')".into(),
        ),
        ("md5(\"doc\"::text)".into(), "md5(`doc`)".into()),
        same("id"),
        // PostgreSQL's compact JSON of the array, as the sink writes it.
        (
            "md5(array_to_json(\"ints\")::text)".into(),
            "md5(`ints`)".into(),
        ),
        (
            "md5(array_to_json(\"texts\")::text)".into(),
            "md5(`texts`)".into(),
        ),
        hex_text("span"),
        hex_text("tt"),
        hex_text("mood"),
        hex_text("addr"),
        hex_text("code"),
    ]
}

/// Floats compared by value: each side prints its own shortest text.
fn assert_same_floats(setup: &ToMariaDb, table: &str) {
    let parse = |out: String| -> Vec<(String, Option<f64>, Option<f64>)> {
        out.lines()
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                let value = |s: &str| (s != "NULL").then(|| s.parse::<f64>().unwrap());
                (f[0].to_string(), value(f[1]), value(f[2]))
            })
            .collect()
    };
    let source = parse(setup.source.psql(
        "shop",
        &format!("SELECT concat_ws('|', k, coalesce(float8(f4)::text, 'NULL'), coalesce(f8::text, 'NULL'))
         FROM public.{table} ORDER BY k"
    )));
    let target = parse(setup.target.sql(&format!(
        "SELECT concat_ws('|', k, coalesce(cast(f4 as double), 'NULL'), coalesce(f8, 'NULL'))
         FROM public.{table} ORDER BY k"
    )));
    assert_eq!(source, target);
}

#[test]
fn every_type_round_trips_postgresql_to_mariadb() {
    let setup = ToMariaDb::start();
    setup.source.psql("shop", CREATE);
    let (code, body) = setup.create("types", &["public.all_types"], json!({}));
    assert_eq!(code, 201, "{body}");
    setup.wait_synced("types", Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(setup.source.connect("shop"));
    let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
    let casts: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (_, t))| format!("${}::text::{t}", i + 1))
        .collect();
    let insert = format!(
        "INSERT INTO public.all_types ({}) VALUES ({})",
        names.join(", "),
        casts.join(", ")
    );
    let mut runner = TestRunner::new(Config {
        cases: 4,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(row(), 40), |rows| {
            runtime.block_on(async {
                client
                    .batch_execute("TRUNCATE public.all_types")
                    .await
                    .unwrap();
                for r in &rows {
                    let values = params(r);
                    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
                        .iter()
                        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
                        .collect();
                    client
                        .execute(&insert, &refs)
                        .await
                        .unwrap_or_else(|e| panic!("{e}: {r:?}"));
                }
                // Half the rows change again (whole rows), a few go.
                client
                    .batch_execute(
                        "UPDATE public.all_types SET txt = reverse(txt), i8 = -i8 WHERE k % 2 = 0;
                         DELETE FROM public.all_types WHERE k % 7 = 0;",
                    )
                    .await
                    .unwrap();
            });
            setup.wait_synced("types", Duration::from_secs(60));
            setup.assert_same("public", "all_types", &normalized());
            assert_same_floats(&setup, "all_types");
            let rows = setup.target.sql("SELECT count(*) FROM public.all_types");
            assert_eq!(
                rows,
                setup
                    .source
                    .psql("shop", "SELECT count(*) FROM public.all_types")
            );
            assert_ne!(rows, "0");
            Ok(())
        })
        .unwrap();

    // Edge values, by hand: array elements with Unicode white space at either end (PostgreSQL
    // does not quote them), escapes, negative zeros, empty strings and arrays.
    runtime.block_on(client.batch_execute(
        r#"INSERT INTO public.all_types (texts, ints, num, num_fixed, f4, f8, txt, bin, doc) VALUES
           (ARRAY[E'\u00a0a\u0085', ' b ', NULL, 'NULL', '', E'\x0b', E'q"\\'], '{}',
            '-0.000', '-0.00', '-0', '-0', E'a\tb\\c''d\r\n', '\x00090a5c27', '"\u2028"')"#,
    ))
    .unwrap();
    setup.wait_synced("types", Duration::from_secs(60));
    setup.assert_same("public", "all_types", &normalized());
    assert_same_floats(&setup, "all_types");

    // The last case's rows again, through a snapshot (the bulk load path).
    setup.source.psql(
        "shop",
        "CREATE TABLE public.all_types_copy (LIKE public.all_types INCLUDING ALL);
         INSERT INTO public.all_types_copy SELECT * FROM public.all_types;",
    );
    let (code, body) = setup.create("types-copy", &["public.all_types_copy"], json!({}));
    assert_eq!(code, 201, "{body}");
    setup.wait_synced("types-copy", Duration::from_secs(60));
    setup.assert_same("public", "all_types_copy", &normalized());
    assert_same_floats(&setup, "all_types_copy");

    // The target's types, as docs/types.md lists them.
    let types = setup.target.sql(
        "SELECT column_name, column_type FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = 'all_types' ORDER BY ordinal_position",
    );
    for expected in [
        "num\tdecimal(65,30)",
        "num_fixed\tdecimal(12,2)",
        "f4\tfloat",
        "tstz\tdatetime(6)",
        "id\tchar(36)",
        "doc\tlongtext",
        "ints\tlongtext",
        "bin\tlongblob",
    ] {
        assert!(types.contains(expected), "{expected} not in:\n{types}");
    }
}
