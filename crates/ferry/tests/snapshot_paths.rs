//! The snapshot paths end identical: PostgreSQL → PostgreSQL with the bulk path off
//! (chunks decoded into rows of typed values, then encoded as COPY text again by the sink)
//! and on (COPY binary passed through for tables of built-in types the target has too,
//! COPY text for the others), for the copy and for the stream after it.

mod common;

use std::time::Duration;

use common::Pair;
use serde_json::json;

/// Every kind of value the row path must carry unchanged: a row per interesting value,
/// NULLs, TOASTed text and bytea, and text with every byte COPY text escapes.
const TYPES: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE typed (
    id bigint PRIMARY KEY,
    i2 smallint, i4 int, i8 bigint, n numeric, n2 numeric(40, 20), f8 double precision,
    t text, c char(5), b bytea, flag bool,
    d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
    u uuid, j json, jb jsonb, arr int[], tarr text[], ip inet,
    m mood, marr mood[], p positive, big text, bigb bytea
);
INSERT INTO typed VALUES
 (1, 1, 2, 3, 'NaN', 12345678901234567890.12345678901234567890, '-Infinity',
  E'tab\there\nnewline\r\\ back\\\\slash \\N \b\f\v', 'abc', '\x00ff105c0a09', true,
  'infinity', '23:59:59.999999', '12:00+05', '-infinity', '2024-02-29 13:05:00.25+02',
  '1 year 2 mons -3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  E'{"a": [1, 2.50, "x\\ty"], "b": "\\\\"}', '{"b": {"c": null}, "d": "é\n"}',
  '{1,NULL,3}', E'{"a b","c,d","\\"","tab\\\\t","x\\\\y",NULL,"NULL"}', '192.168.0.1/24',
  'happy', '{sad,ok}', 7, repeat(E'toast\t\\', 40000), decode(repeat('00ff5c', 50000), 'hex')),
 (2, -32768, -2147483648, -9223372036854775808, '-0.000000000000000000000000000001', NULL,
  2.2250738585072014e-308, '', '     ', '\x', false, '4713-01-01 BC', '00:00', '00:00:00-12',
  '1999-12-31 23:59:59.5', '2000-01-01 00:00:00+00', '-178000000 years',
  '00000000-0000-0000-0000-000000000000', '[]', '[]', '{}', '{}', '::1', 'sad', '{}', 1,
  'ünïcødé 🦀 日本', NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO typed (id, i8, n, t, b, tstz, j, tarr)
SELECT 100 + g, g::bigint * 1000003, g / 7.0, 'line ' || g || E'\n\t\\' || chr(1 + g % 30000),
       int8send(g), '2020-01-01 00:00:00+00'::timestamptz + g * interval '1 second',
       json_build_object('g', g, 's', E'\t' || g), ARRAY['a' || g, NULL, E'\\']
FROM generate_series(1, 3000) g;
CREATE TABLE keyless (a text, b bytea);
INSERT INTO keyless VALUES (E'x\ty', '\x09'), (E'x\ty', '\x09'), (NULL, NULL);
CREATE TABLE builtin AS SELECT id, i2, i4, i8, n, n2, f8, t, c, b, flag, d, tm, ttz, ts, tstz,
    u, j, jb, arr, tarr, ip, big, bigb FROM typed;
ALTER TABLE builtin ADD PRIMARY KEY (id),
    ADD f4 real, ADD nm name, ADD ch "char", ADD o oid, ADD cd cidr, ADD mac macaddr,
    ADD mac8 macaddr8, ADD vc varchar(7), ADD bits bit(4), ADD vbits varbit, ADD ts3 timestamp(3),
    ADD r4 int4range, ADD r8 int8range, ADD rn numrange, ADD rts tsrange, ADD rtstz tstzrange,
    ADD rd daterange, ADD n2arr numeric(6, 2)[], ADD tsarr timestamptz[], ADD jbarr jsonb[];
UPDATE builtin SET f4 = '-0', nm = 'naïve', ch = 'é', o = 4294967295, cd = '10.1/16',
    mac = '08:00:2b:01:02:03', mac8 = '08:00:2b:01:02:03:04:05', vc = 'seven77', bits = B'1010',
    vbits = B'', ts3 = '2024-01-01 00:00:00.123', r4 = '[1,5)', r8 = 'empty', rn = '(,1.5]',
    rts = '[2020-01-01,infinity)', rtstz = '[-infinity,2020-01-01 00:00+00)', rd = '[2020-01-01,2020-02-01)',
    n2arr = '{1.25,NULL,-3.5}', tsarr = '{infinity,"2001-02-03 04:05:06.789+00"}', jbarr = ARRAY['{"x": 1}'::jsonb, 'null']
WHERE id = 1;
UPDATE builtin SET f4 = 'NaN', ch = E'\\', vbits = B'1', r4 = 'empty', n2arr = '{}' WHERE id = 2;
CREATE TABLE retyped (id int PRIMARY KEY, v varchar(10), w smallint);
INSERT INTO retyped SELECT g, 'v' || g, g FROM generate_series(1, 100) g;
"#;

/// A table the target's owner made before the changefeed, with types wider than the
/// source's: its chunks load as text (binary values read as another type would be wrong).
const TARGET_RETYPED: &str =
    "CREATE TABLE retyped (id bigint PRIMARY KEY, v text, w int, mine text DEFAULT 'kept')";

/// Every table, compared source against target.
const TABLES: &[&str] = &["typed", "keyless", "builtin"];

/// Changes for the stream after the copy: every operation, a TOASTed value left unchanged
/// by an update of another column, escapes on the way.
const CHANGES: &str = r#"
UPDATE typed SET i4 = 42 WHERE id = 1;
UPDATE typed SET t = E'new\nline\\' WHERE id = 2;
INSERT INTO typed (id, t, b, arr) VALUES (9000, E'\\\\\t\r\n', '\x5c4e', '{7,NULL}');
DELETE FROM typed WHERE id BETWEEN 150 AND 250;
UPDATE typed SET id = 9001 WHERE id = 3;
INSERT INTO keyless VALUES (E'\\N', '\x5c4e');
UPDATE builtin SET f4 = 1.5, r4 = '[2,3)', bits = B'0001', ch = 'x' WHERE id = 2;
"#;

fn copy_then_stream(snapshot_bulk: bool) {
    let pair = Pair::start();
    pair.source.psql("shop", TYPES);
    pair.target.psql("analytics", TARGET_RETYPED);
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "paths",
            "source_uri": pair.source.uri("shop"),
            "sink_uri": pair.target.uri("analytics"),
            "tables": ["public.*"],
            "options": {"snapshot_bulk": snapshot_bulk},
        }),
    );
    assert_eq!(code, 201, "create failed: {body}");
    assert!(
        body.to_string()
            .contains(&format!("\"snapshot_bulk\":{snapshot_bulk}")),
        "the option is not shown: {body}"
    );
    pair.wait_synced("paths", Duration::from_secs(60));
    // Each path with the tables it took, as the log names them.
    let paths: &[(&str, &str)] = if snapshot_bulk {
        &[
            ("pg.copy.binary", "public.builtin, public.keyless"),
            ("pg.copy.text", "public.retyped, public.typed"),
        ]
    } else {
        &[(
            "rows",
            "public.builtin, public.keyless, public.retyped, public.typed",
        )]
    };
    let log = pair.ferry.log();
    for (path, tables) in paths {
        assert!(
            log.lines().any(|l| l.contains("tables copied in this path")
                && l.contains(&format!("path=\"{path}\""))
                && l.contains(&format!("tables={tables}"))),
            "the snapshot did not copy {tables} in {path}:\n{log}"
        );
    }
    pair.compare(TABLES).assert_identical();
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT count(*), count(*) FILTER (WHERE v = 'v' || id AND w = id AND mine = 'kept') FROM retyped"
        ),
        "100|100"
    );
    // The copy compresses what it TOASTs with lz4 (the test servers have it).
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT pg_column_compression(big) FROM typed WHERE id = 1"
        ),
        "lz4"
    );

    pair.source.psql("shop", CHANGES);
    pair.wait_synced("paths", Duration::from_secs(60));
    pair.compare(TABLES).assert_identical();
    let toast = pair.target.psql(
        "analytics",
        "SELECT length(big), length(bigb), i4 FROM typed WHERE id = 1",
    );
    assert_eq!(toast, "280000|150000|42");
}

#[test]
fn rows_path_ends_identical() {
    copy_then_stream(false);
}

#[test]
fn bulk_path_ends_identical() {
    copy_then_stream(true);
}
