//! End to end: snapshot, then streaming, between two real PostgreSQL clusters.

mod common;

use std::time::Duration;

use common::Pair;
use serde_json::json;

const ALL_TYPES: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE all_types (
    id bigint PRIMARY KEY,
    i2 smallint, i4 int, i8 bigint,
    n numeric, n2 numeric(40, 20),
    f4 real, f8 double precision,
    t text, vc varchar(20), c char(5),
    b bytea, flag bool,
    d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
    u uuid, j json, jb jsonb,
    arr int[], tarr text[],
    ip inet, net cidr,
    m mood, marr mood[], p positive,
    big text
);
INSERT INTO all_types VALUES
 (1, 1, 2, 3, 'NaN', 12345678901234567890.12345678901234567890,
  'Infinity', '-Infinity', 'plain', 'vc', 'abc', '\x00ff10', true,
  'infinity', '23:59:59.999999', '12:00+05', '-infinity', 'infinity', '1 year 2 mons -3 days 04:05:06.789',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.50, "x"]}', '{"b": {"c": null}}',
  '{1,NULL,3}', '{"a b","c,d","\""}', '192.168.0.1/24', '10.0.0.0/8',
  'happy', '{sad,ok}', 7, repeat('toast', 40000)),
 (2, -32768, -2147483648, -9223372036854775808, '-0.000000000000000000000000000001', NULL,
  3.4028235e38, 2.2250738585072014e-308, E'tab\there\nnewline \\ backslash', '', '     ',
  '\x', false, '4713-01-01 BC', '00:00', '00:00:00-12', '1999-12-31 23:59:59.5', '2000-01-01 00:00:00+00',
  '-178000000 years', '00000000-0000-0000-0000-000000000000', '[]', '[]', '{}', '{}', '::1', '::/0',
  'sad', '{}', 1, NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

#[test]
fn snapshot_then_stream_all_types_and_operations() {
    let pair = Pair::start();
    pair.source.psql("shop", ALL_TYPES);
    pair.source.psql(
        "shop",
        "CREATE TABLE nokey (a int, b text);
         INSERT INTO nokey VALUES (1, 'x'), (1, 'x'), (2, NULL);
         CREATE TABLE fullid (a int, b text);
         ALTER TABLE fullid REPLICA IDENTITY FULL;
         INSERT INTO fullid VALUES (1, 'x'), (1, 'x'), (2, 'y');
         CREATE TABLE audit_log (id int PRIMARY KEY);
         INSERT INTO audit_log VALUES (1);",
    );
    pair.create("shop", &["public.*", "!public.audit_*"]);
    pair.wait_synced("shop", Duration::from_secs(60));
    for t in ["all_types", "nokey", "fullid"] {
        pair.assert_same(t);
    }
    // Excluded table was not created on the target.
    let excluded = pair.target.psql(
        "analytics",
        "SELECT count(*) FROM pg_class WHERE relname = 'audit_log'",
    );
    assert_eq!(excluded, "0");

    // Stream: every operation, TOAST unchanged on update of another column, a rolled-back
    // transaction, a key change, truncate, keyless inserts, FULL identity updates/deletes.
    pair.source.psql(
        "shop",
        "UPDATE all_types SET i4 = 42 WHERE id = 1;
         INSERT INTO all_types SELECT 10 + g, g, g, g, g, g, g, g, 'r' || g FROM generate_series(1, 500) g;
         UPDATE all_types SET id = 1000 WHERE id = 2;
         DELETE FROM all_types WHERE id = 3;
         INSERT INTO nokey VALUES (3, 'z'), (1, 'x');
         UPDATE fullid SET b = 'changed' WHERE a = 2;
         DELETE FROM fullid WHERE ctid = (SELECT ctid FROM fullid WHERE a = 1 LIMIT 1);",
    );
    // psql sends one -c string as one implicit transaction: roll back in a call of its own.
    pair.source.psql(
        "shop",
        "BEGIN; INSERT INTO all_types (id) VALUES (99999); DELETE FROM all_types WHERE id = 1; ROLLBACK;",
    );
    pair.wait_synced("shop", Duration::from_secs(60));
    for t in ["all_types", "nokey", "fullid"] {
        pair.assert_same(t);
    }
    let toast = pair.target.psql(
        "analytics",
        "SELECT length(big), i4 FROM all_types WHERE id = 1",
    );
    assert_eq!(toast, "200000|42");

    // Columns follow the source: ADD, type change, DROP, mid-stream.
    pair.source.psql(
        "shop",
        "ALTER TABLE all_types ADD COLUMN extra text;
         INSERT INTO all_types (id, extra) VALUES (5000, 'new');",
    );
    // Existing rows read the added column's default without any row event; Ferry reads
    // that value from the catalog when the column appears, before a rewrite erases it.
    pair.wait_synced("shop", Duration::from_secs(60));
    pair.source.psql(
        "shop",
        "ALTER TABLE all_types ALTER COLUMN i2 TYPE bigint;
         UPDATE all_types SET i2 = 9999999999 WHERE id = 11;
         ALTER TABLE all_types DROP COLUMN vc;
         INSERT INTO all_types (id) VALUES (5001);
         TRUNCATE nokey;
         INSERT INTO nokey VALUES (7, 'after truncate');",
    );
    pair.wait_synced("shop", Duration::from_secs(60));
    for t in ["all_types", "nokey", "fullid"] {
        pair.assert_same(t);
    }

    // Only unpublished writes: the WAL moves, nothing reaches Ferry but keepalives, and
    // `synced` must still become true (the checkpoint follows the server's WAL position).
    pair.source.psql(
        "shop",
        "INSERT INTO audit_log SELECT generate_series(2, 1000)",
    );
    let before = pair.source.psql("shop", "SELECT pg_current_wal_lsn()");
    pair.wait_synced("shop", Duration::from_secs(60));
    let (_, synced) = pair.ferry.get("/api/v2/changefeeds/shop/synced");
    assert_eq!(
        synced["synced"],
        json!(true),
        "{synced} (source was at {before})"
    );

    let (code, status) = pair.ferry.get("/api/v2/changefeeds/shop/status");
    assert_eq!(code, 200);
    assert_eq!(status["state"], json!("running"), "{status}");
    assert_eq!(status["phase"], json!("streaming"));
    assert!(
        status["warnings"].to_string().contains("public.nokey"),
        "{status}"
    );

    // Delete drops the slot and publications; target data stays.
    let (code, _) = pair.ferry.delete("/api/v2/changefeeds/shop");
    assert_eq!(code, 200);
    assert_eq!(
        pair.source
            .psql("shop", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    assert_eq!(
        pair.source
            .psql("shop", "SELECT count(*) FROM pg_publication"),
        "0"
    );
    assert_eq!(
        pair.target
            .psql("analytics", "SELECT count(*) > 0 FROM all_types"),
        "t"
    );
    let (code, _) = pair.ferry.delete("/api/v2/changefeeds/shop");
    assert_eq!(code, 200);
}
