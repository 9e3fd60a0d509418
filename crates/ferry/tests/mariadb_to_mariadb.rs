//! MariaDB → MariaDB through the real server and the CLI: the snapshot and the binlog
//! stream under a concurrent workload, with a `kill -9` of Ferry mid-load, into a second
//! MariaDB server; tables are created with the source's own column types (same dialect),
//! and both sides end identical, compared through the same normalized row dump.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry_testkit::{FerryServer, MariaDb};
use serde_json::{json, Value};

const TABLES: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (
    id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
    qty int NOT NULL,
    small tinyint unsigned,
    note varchar(40) CHARACTER SET utf8mb4,
    latin varchar(20) CHARACTER SET latin1,
    price decimal(12,3),
    ratio double,
    status enum('new','paid','gone'),
    flags set('a','b','c'),
    doc json,
    at datetime(6),
    stamp timestamp(3) NULL,
    day date,
    span time(3),
    yr year,
    bits bit(3),
    data varbinary(16),
    body blob
);
CREATE TABLE shop.log (msg varchar(20), n int);
INSERT INTO shop.orders (qty, small, note, latin, price, ratio, status, flags, doc, at, stamp,
                         day, span, yr, bits, data, body)
SELECT seq % 97, seq % 256, CONCAT('n', seq, ' ✓'), CONCAT('é', seq), seq / 7, seq / 3.0,
       ELT(1 + seq % 3, 'new', 'paid', 'gone'), IF(seq % 2 = 0, 'a,c', 'b'),
       JSON_OBJECT('k', seq, 'l', JSON_ARRAY(1, 2)),
       '2024-02-29 13:05:00.123456' + INTERVAL seq SECOND,
       '2024-03-01 10:00:00.5' + INTERVAL seq MINUTE,
       '2024-01-01' + INTERVAL seq DAY, '-100:00:00.5', 2000 + seq % 100, seq % 8,
       UNHEX(LPAD(HEX(seq), 8, '0')), REPEAT('x', seq % 50)
FROM shop.seq_1_to_2000;
INSERT INTO shop.log VALUES ('same', 1), ('same', 1), ('other', 2);
";

/// Every column of `shop.orders` as text, the same expression on both sides.
const ORDERS_DUMP: &str =
    "SELECT CONCAT_WS('|', id, qty, IFNULL(small, '~'), IFNULL(HEX(note), '~'),
    IFNULL(HEX(CONVERT(latin USING utf8mb4)), '~'), IFNULL(price, '~'), IFNULL(ratio, '~'),
    IFNULL(status, '~'), IFNULL(flags, '~'), IFNULL(doc, '~'), IFNULL(at, '~'),
    IFNULL(UNIX_TIMESTAMP(stamp), '~'), IFNULL(day, '~'), IFNULL(span, '~'), IFNULL(yr, '~'),
    IFNULL(bits + 0, '~'), IFNULL(HEX(data), '~'), IFNULL(MD5(body), '~'))
  FROM shop.orders ORDER BY id";

const LOG_DUMP: &str =
    "SELECT CONCAT_WS('|', msg, n, COUNT(*)) FROM shop.log GROUP BY msg, n ORDER BY msg, n";

fn wait_synced(ferry: &FerryServer, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, body) = ferry.get(&format!("/api/v2/changefeeds/{id}/synced"));
        if code == 200 && body["synced"] == json!(true) {
            return;
        }
        let status: Value = ferry.get(&format!("/api/v2/changefeeds/{id}/status")).1;
        assert!(
            Instant::now() < deadline && status["state"] != "failed",
            "not synced: {body}\nstatus: {status}\n{}",
            ferry.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn snapshot_and_stream_under_load_with_a_kill9_end_identical() {
    let (source, target) = std::thread::scope(|s| {
        let a = s.spawn(|| MariaDb::start_with(1, &[]));
        let b = s.spawn(|| MariaDb::start_with(2, &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    source.sql(TABLES);
    let mut ferry = FerryServer::start(std::path::Path::new(env!("CARGO_BIN_EXE_ferry")));
    let stop = AtomicBool::new(false);
    let statements = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                source.sql(&format!(
                    "INSERT INTO shop.orders (qty, note, status, flags, doc, at, stamp, bits, data)
                       VALUES ({q}, 'w{i}', 'paid', 'a,b', '[{i}]', NOW(6), NOW(3), 5, X'00ff');
                     UPDATE shop.orders SET qty = qty + 1, note = CONCAT('u', id), span = '12:00:01.5'
                       WHERE id % 50 = {m};
                     DELETE FROM shop.orders WHERE id % 211 = {m} LIMIT 3;
                     UPDATE shop.orders SET id = id + 100000 WHERE id = {k};
                     DELETE FROM shop.log WHERE msg = 'same' LIMIT 1;
                     INSERT INTO shop.log VALUES ('same', 1);",
                    q = i % 13,
                    m = i % 50,
                    k = 3000 + i,
                ));
            }
            i
        });
        std::thread::sleep(Duration::from_millis(300));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["changefeed", "create", "--id", "maria", "--source-uri"])
            .arg(source.uri("shop"))
            .arg("--sink-uri")
            .arg(target.uri(""))
            .args(["--tables", "shop.*"])
            .env("FERRY_SERVER", ferry.url())
            .env_remove("FERRY_NAMESPACE")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        std::thread::sleep(Duration::from_secs(3));
        ferry.kill9();
        std::thread::sleep(Duration::from_millis(300));
        ferry.restart();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap()
    });
    wait_synced(&ferry, "maria");
    let (code, shown) = ferry.get("/api/v2/changefeeds/maria/status");
    assert_eq!(code, 200);
    let checkpoint = shown["checkpoint_position"].as_str().unwrap_or_default();
    assert!(
        checkpoint.starts_with("0-1-"),
        "a MariaDB GTID list: {shown}"
    );
    for dump in [ORDERS_DUMP, LOG_DUMP] {
        let (s, t) = (source.sql(dump), target.sql(dump));
        assert!(s.lines().count() >= 2, "{s}");
        if s != t {
            let (s, t): (Vec<&str>, Vec<&str>) = (s.lines().collect(), t.lines().collect());
            let missing: Vec<_> = s.iter().filter(|l| !t.contains(l)).take(3).collect();
            let extra: Vec<_> = t.iter().filter(|l| !s.contains(l)).take(3).collect();
            panic!(
                "{dump}: source {} rows, target {}\nmissing: {missing:#?}\nextra: {extra:#?}",
                s.len(),
                t.len()
            );
        }
    }
    // The target's columns are the source's own types.
    let columns = "SELECT GROUP_CONCAT(CONCAT(column_name, ' ', column_type) ORDER BY ordinal_position)
                   FROM information_schema.columns WHERE table_schema = 'shop' AND table_name = 'orders'";
    assert_eq!(source.sql(columns), target.sql(columns));
    eprintln!("{statements} workload rounds, one kill -9, identical");
}

/// Asserts `dump` reads the same on both servers.
fn assert_same_rows(source: &MariaDb, target: &MariaDb, dump: &str) {
    let (s, t) = (source.sql(dump), target.sql(dump));
    assert!(s.lines().count() >= 2, "{s}");
    if s != t {
        let (s, t): (Vec<&str>, Vec<&str>) = (s.lines().collect(), t.lines().collect());
        let missing: Vec<_> = s.iter().filter(|l| !t.contains(l)).take(3).collect();
        let extra: Vec<_> = t.iter().filter(|l| !s.contains(l)).take(3).collect();
        panic!(
            "{dump}: source {} rows, target {}\nmissing: {missing:#?}\nextra: {extra:#?}",
            s.len(),
            t.len()
        );
    }
}

#[test]
fn columns_added_dropped_and_widened_mid_stream_with_a_kill9() {
    let (source, target) = std::thread::scope(|s| {
        let a = s.spawn(|| MariaDb::start_with(1, &[]));
        let b = s.spawn(|| MariaDb::start_with(2, &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    source.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.items (id int NOT NULL AUTO_INCREMENT PRIMARY KEY, qty int NOT NULL,
                                  note varchar(20), old int NOT NULL DEFAULT 0,
                                  status enum('new','paid'));
         INSERT INTO shop.items (qty, note, old, status)
         SELECT seq, CONCAT('n', seq), seq, 'new' FROM shop.seq_1_to_200;
         CREATE TABLE shop.bag (a int, b varchar(10));
         INSERT INTO shop.bag VALUES (1, 'p'), (1, 'p'), (2, 'q');",
    );
    let mut ferry = FerryServer::start(std::path::Path::new(env!("CARGO_BIN_EXE_ferry")));
    let (code, body) = ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "cols",
            "source_uri": source.uri("shop"),
            "sink_uri": target.uri(""),
            "tables": ["shop.*"],
        }),
    );
    assert_eq!(code, 201, "{body}");
    wait_synced(&ferry, "cols");

    // Columns change while rows keep coming (some transactions write both tables), and
    // Ferry is killed in the middle.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (source, stop) = (&source, &stop);
        s.spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                source.sql(&format!(
                    "INSERT INTO shop.items (qty) VALUES ({i});
                     UPDATE shop.items SET qty = qty + 1 WHERE id % 20 = {m};
                     START TRANSACTION;
                     INSERT INTO shop.bag (a) VALUES ({m});
                     UPDATE shop.items SET qty = qty + 1 WHERE id = {k};
                     COMMIT;
                     DELETE FROM shop.bag WHERE a = {m} LIMIT 1;
                     INSERT INTO shop.bag (a) VALUES ({m}), ({m});",
                    m = i % 20,
                    k = i % 200 + 1,
                ));
            }
        });
        let step = |sql: &str| {
            std::thread::sleep(Duration::from_millis(700));
            source.sql(sql);
        };
        step("ALTER TABLE shop.items ADD COLUMN extra int NULL");
        step("UPDATE shop.items SET extra = id WHERE id % 3 = 0");
        step("ALTER TABLE shop.items MODIFY note varchar(40), MODIFY qty bigint NOT NULL");
        step("UPDATE shop.items SET note = REPEAT('x', 35), qty = 5000000000 WHERE id % 5 = 0");
        step("ALTER TABLE shop.items MODIFY status enum('new','paid','gone')");
        step("UPDATE shop.items SET status = 'gone' WHERE id % 7 = 0");
        ferry.kill9();
        step("ALTER TABLE shop.bag ADD COLUMN c varchar(5)");
        step("INSERT INTO shop.bag VALUES (9, 'z', 'zz'), (9, 'z', 'zz')");
        ferry.restart();
        step("ALTER TABLE shop.items DROP COLUMN old");
        step("UPDATE shop.items SET qty = 0 WHERE id % 11 = 0");
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
    });
    wait_synced(&ferry, "cols");
    assert_same_rows(
        &source,
        &target,
        "SELECT CONCAT_WS('|', id, qty, IFNULL(note, '~'), IFNULL(status, '~'),
                IFNULL(extra, '~')) FROM shop.items ORDER BY id",
    );
    assert_same_rows(
        &source,
        &target,
        "SELECT CONCAT_WS('|', IFNULL(a, '~'), IFNULL(b, '~'), IFNULL(c, '~'), COUNT(*))
         FROM shop.bag GROUP BY a, b, c ORDER BY a, b, c",
    );
    for table in ["items", "bag"] {
        let columns = format!(
            "SELECT GROUP_CONCAT(CONCAT(column_name, ' ', column_type) ORDER BY ordinal_position)
             FROM information_schema.columns WHERE table_schema = 'shop' AND table_name = '{table}'"
        );
        assert_eq!(source.sql(&columns), target.sql(&columns));
    }
    let created = target.sql(
        "SELECT GROUP_CONCAT(column_name ORDER BY column_name) FROM _ferry.created_columns
         WHERE table_schema = 'shop' AND table_name = 'items'",
    );
    assert_eq!(created, "extra,id,note,qty,status");
}
