//! MariaDB → PostgreSQL through the real server, API and CLI: snapshot and streaming under
//! a concurrent workload with a column added and one dropped mid-stream, every type of the
//! mapping (the same values copied and streamed print the same), a `kill -9` of Ferry
//! mid-load and one mid-snapshot (resumed by finished chunks), an idle and a filtered
//! source reaching `synced`, two changefeeds on one source, a rename, the pre-flight
//! check, and a purged binlog failing with a message saying so. Every comparison is a
//! normalized row dump (or count and sums) of both sides.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_testkit::{FerryServer, MariaDb, PgCluster};
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

/// A MariaDB source (database `shop`), a PostgreSQL target (database `analytics`) and a
/// Ferry server.
struct Setup {
    source: MariaDb,
    target: PgCluster,
    ferry: FerryServer,
}

impl Setup {
    fn start() -> Setup {
        let (source, target) = std::thread::scope(|s| {
            let a = s.spawn(MariaDb::start);
            let b = s.spawn(PgCluster::start);
            (a.join().unwrap(), b.join().unwrap())
        });
        source.sql("CREATE DATABASE shop; CREATE DATABASE other; CREATE DATABASE seq");
        target.create_database("analytics");
        let ferry = FerryServer::start(std::path::Path::new(env!("CARGO_BIN_EXE_ferry")));
        Setup {
            source,
            target,
            ferry,
        }
    }

    fn create(&self, id: &str, tables: &[&str]) {
        let (code, body) = self.ferry.post(
            "/api/v2/changefeeds",
            &json!({
                "id": id,
                "source_uri": self.source.uri("shop"),
                "sink_uri": self.target.uri("analytics"),
                "tables": tables,
            }),
        );
        assert_eq!(code, 201, "create failed: {body}\n{}", self.ferry.log());
    }

    fn status(&self, id: &str) -> Value {
        self.ferry
            .get(&format!("/api/v2/changefeeds/{id}/status"))
            .1
    }

    fn wait_synced(&self, id: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let (code, body) = self.ferry.get(&format!("/api/v2/changefeeds/{id}/synced"));
            if code == 200 && body["synced"] == json!(true) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "{id} not synced after {timeout:?}: {body}\nstatus: {}\n{}",
                self.status(id),
                self.ferry.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `orders` on both sides, one normalized line per row.
    /// `columns` are compared as text, NULL as `~`.
    fn assert_orders_same(&self, columns: &[&str]) {
        let list = |cast: &str| {
            columns
                .iter()
                .map(|c| format!("COALESCE({c}{cast}, '~')"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let source = self.source.sql(&format!(
            "SELECT CONCAT_WS('|', {}) FROM shop.orders ORDER BY id",
            list("")
        ));
        let target = self.target.psql(
            "analytics",
            &format!(
                "SELECT concat_ws('|', {}) FROM shop.orders ORDER BY id",
                list("::text")
            ),
        );
        let (s, t): (Vec<&str>, Vec<&str>) = (source.lines().collect(), target.lines().collect());
        assert!(s.len() > 100, "the workload wrote too little: {}", s.len());
        if s != t {
            let missing: Vec<_> = s.iter().filter(|l| !t.contains(l)).take(5).collect();
            let extra: Vec<_> = t.iter().filter(|l| !s.contains(l)).take(5).collect();
            panic!(
                "orders differ: source {} rows, target {}\nmissing: {missing:?}\nextra: {extra:?}",
                s.len(),
                t.len()
            );
        }
    }
}

const ORDERS: &str = "
CREATE TABLE shop.orders (
    id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
    qty int NOT NULL,
    note varchar(40) CHARACTER SET utf8mb4,
    price decimal(10,2)
);
INSERT INTO shop.orders (qty, note, price)
SELECT seq % 97, CONCAT('n', seq), seq / 7 FROM seq.seq_1_to_3000;
";

/// Writes into `orders` until stopped: inserts, updates, deletes, each statement its own
/// transaction, some several rows.
fn workload(db: &MariaDb, stop: &AtomicBool, round: u64) -> u64 {
    let mut statements = 0;
    let mut i = round * 100_000;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        db.sql(&format!(
            "INSERT INTO shop.orders (qty, note) VALUES ({q}, 'w{i}'), ({q}, NULL);
             UPDATE shop.orders SET qty = qty + 1, note = CONCAT('u', id) WHERE id % 50 = {m};
             DELETE FROM shop.orders WHERE id % 211 = {m} LIMIT 3;",
            q = i % 13,
            m = i % 50
        ));
        statements += 3;
    }
    statements
}

/// Runs `workload` for `run`, calling `during` halfway.
fn under_load(db: &MariaDb, round: u64, run: Duration, during: impl FnOnce()) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let writer = s.spawn(|| workload(db, &stop, round));
        std::thread::sleep(run / 2);
        during();
        std::thread::sleep(run / 2);
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap()
    })
}

#[test]
fn snapshot_and_stream_under_load_with_columns_added_and_dropped_and_a_kill9() {
    let mut setup = Setup::start();
    setup.source.sql(ORDERS);
    let started = Instant::now();
    setup.create("orders", &["shop.*"]);
    let statements = under_load(&setup.source, 1, Duration::from_secs(6), || {});
    let synced = setup.wait_synced("orders", MINUTE);
    setup.assert_orders_same(&["id", "qty", "note", "price"]);
    eprintln!(
        "snapshot of 3000 rows + {statements} statements: synced {:?} after create ({:?} after the load)",
        started.elapsed(),
        synced
    );

    // A column added, then one dropped, while rows keep coming.
    let statements = under_load(&setup.source, 2, Duration::from_secs(4), || {
        setup
            .source
            .sql("ALTER TABLE shop.orders ADD COLUMN extra int NULL");
        setup
            .source
            .sql("UPDATE shop.orders SET extra = id % 5 WHERE id % 3 = 0");
    });
    setup
        .source
        .sql("ALTER TABLE shop.orders DROP COLUMN price");
    setup
        .source
        .sql("UPDATE shop.orders SET extra = 9 WHERE id % 7 = 0");
    // A column the stream has seen, dropped in a burst of changes: rows read after the
    // drop still decode with the definition their TABLE_MAP events give (columns added and
    // dropped while the changefeed was behind: mariadb_behind.rs).
    setup.source.sql(
        "ALTER TABLE shop.orders ADD COLUMN tmp int NULL;
         UPDATE shop.orders SET tmp = 1 WHERE id % 10 = 1;",
    );
    setup.wait_synced("orders", MINUTE);
    setup.source.sql(
        "UPDATE shop.orders SET tmp = 2 WHERE id % 10 = 3;
         ALTER TABLE shop.orders DROP COLUMN tmp;
         UPDATE shop.orders SET qty = qty + 1 WHERE id % 10 = 2",
    );
    setup.wait_synced("orders", MINUTE);
    setup.assert_orders_same(&["id", "qty", "note", "extra"]);
    eprintln!("ddl round: {statements} statements");

    // kill -9 of Ferry mid-load: the restart ends identical.
    let statements = under_load(&setup.source, 3, Duration::from_secs(6), || {
        setup.ferry.kill9();
        std::thread::sleep(Duration::from_millis(500));
        setup.ferry.restart();
    });
    let synced = setup.wait_synced("orders", MINUTE);
    setup.assert_orders_same(&["id", "qty", "note", "extra"]);
    eprintln!("kill -9 round: {statements} statements, synced {synced:?} after the load");

    // Idle, then busy elsewhere: writes to a database the rules leave out still count.
    std::thread::sleep(Duration::from_secs(2));
    setup.wait_synced("orders", Duration::from_secs(10));
    setup.source.sql(
        "CREATE TABLE other.noise (id int PRIMARY KEY); INSERT INTO other.noise VALUES (1), (2)",
    );
    let idle = setup.wait_synced("orders", Duration::from_secs(10));
    eprintln!("filtered writes: synced after {idle:?}");
    assert_eq!(setup.status("orders")["state"], json!("running"));
}

const TYPES: &str = "
CREATE TABLE shop.types (
    id int PRIMARY KEY,
    i8 tinyint, u8 tinyint unsigned, i16 smallint, u16 smallint unsigned,
    i24 mediumint, u24 mediumint unsigned, i32 int, u32 int unsigned,
    i64 bigint, u64 bigint unsigned,
    d decimal(12,4), f float, g double,
    c char(5), vc varchar(20), t text,
    l1 varchar(10) CHARACTER SET latin1, u16s varchar(10) CHARACTER SET utf16,
    b binary(3), vb varbinary(10), bl blob,
    dt date, tm time(6), dtm datetime(6), ts timestamp(3) NULL,
    y year, e enum('small','medium','large'), s set('a','b','c'),
    bt1 bit(1), bt bit(12), j json
);
";

/// One row of every type; the session runs at the server's +02:00.
fn types_row(id: u32) -> String {
    format!(
        "SET NAMES utf8mb4; INSERT INTO shop.types VALUES ({id},
            -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
            -9223372036854775808, 18446744073709551615,
            -12345678.1234, 1.5, 0.1,
            'ab', 'héllo €', 'plain text', 'café', '😀x',
            'abc', x'00ff', 'blob',
            '2024-02-29', '123:45:06.5', '2024-02-29 13:05:00.25', '2024-02-29 13:05:00.125',
            2024, 'medium', 'a,c', b'1', b'101010101010', '{{\"a\": [1, 2.5, \"x\"], \"b\": null}}');
         INSERT INTO shop.types (id) VALUES ({})",
        id + 100
    )
}

const EXPECTED: &[(&str, &str)] = &[
    ("i8", "-128"),
    ("u8", "255"),
    ("i16", "-32768"),
    ("u16", "65535"),
    ("i24", "-8388608"),
    ("u24", "16777215"),
    ("i32", "-2147483648"),
    ("u32", "4294967295"),
    ("i64", "-9223372036854775808"),
    ("u64", "18446744073709551615"),
    ("d", "-12345678.1234"),
    ("f", "1.5"),
    ("g", "0.1"),
    ("c", "ab"),
    ("vc", "héllo €"),
    ("t", "plain text"),
    ("l1", "café"),
    ("u16s", "😀x"),
    ("b", "\\x616263"),
    ("vb", "\\x00ff"),
    ("bl", "\\x626c6f62"),
    ("dt", "2024-02-29"),
    ("tm", "123:45:06.5"),
    ("dtm", "2024-02-29 13:05:00.25"),
    ("ts AT TIME ZONE 'UTC'", "2024-02-29 11:05:00.125"),
    ("y", "2024"),
    ("e", "medium"),
    ("s", "a,c"),
    ("bt1", "true"),
    ("bt", "2730"),
    ("j", "{\"a\": [1, 2.5, \"x\"], \"b\": null}"),
];

fn assert_types(target: &PgCluster, id: u32, path: &str) {
    for (column, expected) in EXPECTED {
        let got = target.psql(
            "analytics",
            &format!("SELECT ({column})::text FROM shop.types WHERE id = {id}"),
        );
        assert_eq!(got, *expected, "{column} of the {path} row");
        let null = target.psql(
            "analytics",
            &format!(
                "SELECT ({column}) IS NULL FROM shop.types WHERE id = {}",
                id + 100
            ),
        );
        assert_eq!(null, "t", "{column} of the {path} NULL row");
    }
}

#[test]
fn every_type_copied_and_streamed_two_changefeeds_and_the_cli() {
    let setup = Setup::start();
    setup.source.sql(TYPES);
    setup.source.sql(&types_row(1));
    setup.source.sql(
        "CREATE TABLE shop.items (id int PRIMARY KEY, v varchar(10));
         INSERT INTO shop.items SELECT seq, CONCAT('v', seq) FROM seq.seq_1_to_200",
    );
    // The types through the API, the items through the CLI: two changefeeds, one source.
    setup.create("types", &["shop.types"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("items.yaml");
    std::fs::write(
        &file,
        format!(
            "id: items\nsource_uri: {}\nsink_uri: {}\ntables: ['shop.items']\n",
            setup.source.uri("shop"),
            setup.target.uri("analytics")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["changefeed", "create", "-f"])
        .arg(&file)
        .env("FERRY_SERVER", setup.ferry.url())
        .env_remove("FERRY_NAMESPACE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    setup.wait_synced("types", MINUTE);
    setup.wait_synced("items", MINUTE);
    assert_types(&setup.target, 1, "copied");

    setup.source.sql(&types_row(2));
    setup
        .source
        .sql("UPDATE shop.items SET v = 'changed' WHERE id % 3 = 0; DELETE FROM shop.items WHERE id > 190");
    setup.wait_synced("types", MINUTE);
    setup.wait_synced("items", MINUTE);
    assert_types(&setup.target, 2, "streamed");
    assert_eq!(
        setup
            .source
            .sql("SELECT CONCAT(COUNT(*), ':', SUM(v = 'changed')) FROM shop.items"),
        setup.target.psql(
            "analytics",
            "SELECT count(*) || ':' || count(*) FILTER (WHERE v = 'changed') FROM shop.items"
        )
    );

    // Truncate follows.
    setup.source.sql("TRUNCATE TABLE shop.items");
    setup.wait_synced("items", MINUTE);
    assert_eq!(
        setup
            .target
            .psql("analytics", "SELECT count(*) FROM shop.items"),
        "0"
    );
    let id_before = setup
        .source
        .sql("SELECT TABLE_ID FROM information_schema.INNODB_SYS_TABLES WHERE NAME = 'shop/items'");
    // Past the engine's look for new tables: the truncated table is still the same one.
    std::thread::sleep(Duration::from_secs(6));
    setup
        .source
        .sql("INSERT INTO shop.items VALUES (1, 'again'), (2, 'again')");
    setup.wait_synced("items", MINUTE);
    assert_eq!(
        setup
            .target
            .psql("analytics", "SELECT string_agg(v, ',') FROM shop.items"),
        "again,again",
        "table id before the truncate {id_before}"
    );
    assert_eq!(setup.status("items")["warnings"], json!([]));
    // Neither changefeed evicted the other's binlog session: two dump threads, each with
    // its own server_id.
    for id in ["types", "items"] {
        let status = setup.status(id);
        assert_eq!(status["state"], json!("running"), "{status}");
    }
    assert_eq!(
        setup.source.sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'"
        ),
        "2"
    );
}

#[test]
fn a_purged_binlog_fails_the_changefeed_with_how_to_resync() {
    let setup = Setup::start();
    setup.source.sql(
        "CREATE TABLE shop.t (id int PRIMARY KEY);
         INSERT INTO shop.t SELECT seq FROM seq.seq_1_to_10",
    );
    setup.create("t", &["shop.t"]);
    setup.wait_synced("t", MINUTE);
    let (code, body) = setup.ferry.post("/api/v2/changefeeds/t/pause", &json!({}));
    assert_eq!(code, 200, "{body}");
    // The server skips a binlog a dump thread still reads: wait until the paused
    // changefeed's is gone (the server notices the closed connection a moment later).
    ferry_testkit::wait_for("the binlog dump to end", MINUTE, || {
        setup.source.sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
        ) == "0"
    });
    setup.source.sql(
        "INSERT INTO shop.t VALUES (11);
         FLUSH BINARY LOGS;
         INSERT INTO shop.t VALUES (12);
         FLUSH BINARY LOGS;
         PURGE BINARY LOGS BEFORE NOW() + INTERVAL 1 DAY",
    );
    let (code, body) = setup.ferry.post("/api/v2/changefeeds/t/resume", &json!({}));
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + MINUTE;
    loop {
        let status = setup.status("t");
        if status["state"] == json!("failed") {
            let text = status.to_string();
            assert!(text.contains("purged"), "{text}");
            assert!(text.contains("re-sync"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "not failed: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Resuming from a position the binlogs no longer hold is refused up front.
    let (code, body) = setup.ferry.post(
        "/api/v2/changefeeds/t/resume",
        &json!({"overwrite_checkpoint_position": "0-1-1"}),
    );
    assert!(
        code >= 400 && body.to_string().contains("purged"),
        "{code} {body}"
    );
    // What the message says to do works.
    let (code, body) = setup.ferry.post("/api/v2/changefeeds/t/resync", &json!({}));
    assert_eq!(code, 200, "{body}");
    setup.source.sql("INSERT INTO shop.t VALUES (13)");
    setup.wait_synced("t", MINUTE);
    assert_eq!(
        setup
            .target
            .psql("analytics", "SELECT count(*) FROM shop.t"),
        "13"
    );
}

#[test]
fn the_check_refuses_a_statement_binlog_and_a_user_without_replication() {
    let source = MariaDb::start_with(
        1,
        &["--binlog-format=STATEMENT", "--binlog-row-metadata=MINIMAL"],
    );
    let target = PgCluster::start();
    target.create_database("analytics");
    source.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id int PRIMARY KEY);
         CREATE USER 'weak'@'%' IDENTIFIED BY 'weak'; GRANT SELECT ON shop.* TO 'weak'@'%';",
    );
    let ferry = FerryServer::start(std::path::Path::new(env!("CARGO_BIN_EXE_ferry")));
    let check = |uri: String| {
        let (code, body) = ferry.post(
            "/api/v2/changefeeds?dry_run=true",
            &json!({
                "id": "t",
                "source_uri": uri,
                "sink_uri": target.uri("analytics"),
                "tables": ["shop.t"],
            }),
        );
        assert!(code >= 400, "{code} {body}");
        body.to_string()
    };
    let text = check(source.uri("shop"));
    assert!(text.contains("set binlog_format=ROW"), "{text}");
    source.sql("SET GLOBAL binlog_format = 'ROW'");
    let text = check(source.uri("shop"));
    assert!(text.contains("set binlog_row_metadata=FULL"), "{text}");
    source.sql("SET GLOBAL binlog_row_metadata = 'FULL'");
    let weak = source.uri("shop").replacen("ferry:ferry@", "weak:weak@", 1);
    let text = check(weak);
    assert!(text.contains("REPLICATION SLAVE"), "{text}");
    assert!(text.contains("BINLOG MONITOR"), "{text}");
}

#[test]
fn a_table_renamed_on_the_source_is_renamed_on_the_target() {
    let setup = Setup::start();
    setup.source.sql(
        "CREATE TABLE shop.items (id int PRIMARY KEY, v int);
         INSERT INTO shop.items SELECT seq, seq FROM seq.seq_1_to_50",
    );
    setup.create("items", &["shop.*"]);
    setup.wait_synced("items", MINUTE);
    setup.source.sql(
        "INSERT INTO shop.items VALUES (51, 51);
         RENAME TABLE shop.items TO shop.goods;
         INSERT INTO shop.goods VALUES (52, 52);
         UPDATE shop.goods SET v = 0 WHERE id = 1",
    );
    setup.wait_synced("items", MINUTE);
    assert_eq!(
        setup
            .target
            .psql("analytics", "SELECT count(*), sum(v) FROM shop.goods"),
        "52|1377"
    );
    assert_eq!(
        setup.target.psql(
            "analytics",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'shop' AND tablename = 'items'"
        ),
        "0"
    );
}

#[test]
fn a_chunked_snapshot_under_writes_resumes_after_a_kill9_by_finished_chunks() {
    let mut setup = Setup::start();
    setup.source.sql(
        "CREATE TABLE shop.big (id int PRIMARY KEY, v int NOT NULL, pad varchar(20));
         INSERT INTO shop.big SELECT seq, seq % 1000, REPEAT('x', 20) FROM seq.seq_1_to_400000",
    );
    let started = Instant::now();
    setup.create("big", &["shop.big"]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                setup.source.sql(&format!(
                    "UPDATE shop.big SET v = v + 1 WHERE id % 997 = {m};
                     DELETE FROM shop.big WHERE id = {d};
                     INSERT INTO shop.big VALUES ({n}, 0, NULL)",
                    m = i % 997,
                    d = i * 13,
                    n = 1_000_000 + i
                ));
            }
        });
        // Kill Ferry once some chunks are done, not all.
        let deadline = Instant::now() + MINUTE;
        loop {
            let status = setup.status("big");
            let done = status["tables"][0]["chunks_done"].as_u64().unwrap_or(0);
            let total = status["tables"][0]["chunks_total"].as_u64().unwrap_or(0);
            if done >= 1 {
                assert!(total >= 4, "the table was not chunked: {status}");
                eprintln!("killed at {done}/{total} chunks");
                break;
            }
            assert!(Instant::now() < deadline, "no chunk done: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
        setup.ferry.kill9();
        setup.ferry.restart();
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    });
    setup.wait_synced("big", MINUTE);
    eprintln!(
        "400000 rows, killed mid-copy: synced {:?} after create",
        started.elapsed()
    );
    let query = "SELECT CONCAT(COUNT(*), ':', SUM(id), ':', SUM(v)) FROM shop.big";
    assert_eq!(
        setup.source.sql(query),
        setup.target.psql(
            "analytics",
            "SELECT count(*) || ':' || sum(id) || ':' || sum(v) FROM shop.big"
        )
    );
}

#[test]
fn a_zero_date_stops_the_changefeed_naming_the_column() {
    let setup = Setup::start();
    setup.source.sql(
        "SET SESSION sql_mode = '';
         CREATE TABLE shop.legacy (id int PRIMARY KEY, born date);
         INSERT INTO shop.legacy VALUES (1, '2024-01-01'), (2, '0000-00-00')",
    );
    setup.create("legacy", &["shop.legacy"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = setup.status("legacy");
        if status["state"] == json!("failed") {
            let text = status["last_error"].to_string();
            assert!(
                text.contains("column born of shop.legacy") && text.contains("zero date"),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not failed: {status}\n{}",
            setup.ferry.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
