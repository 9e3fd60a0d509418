//! `PgCluster` against real PostgreSQL servers: parallel starts, logical WAL, pgbench, and
//! password authentication.

use std::thread;

use ferry_testkit::{PgCluster, PgOptions};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

#[tokio::test]
async fn two_clusters_start_in_parallel_with_logical_wal() {
    let (first, second) = thread::scope(|scope| {
        let first = scope.spawn(PgCluster::start);
        let second = scope.spawn(PgCluster::start);
        (
            first.join().expect("first cluster starts"),
            second.join().expect("second starts"),
        )
    });
    assert_ne!(first.port(), second.port());

    for cluster in [&first, &second] {
        let client = cluster.connect("postgres").await;
        let row = client
            .query_one("SHOW wal_level", &[])
            .await
            .expect("SHOW wal_level");
        assert_eq!(row.get::<_, String>(0), "logical");
        let row = client
            .query_one(
                "SELECT rolsuper AND rolreplication FROM pg_roles WHERE rolname = 'ferry'",
                &[],
            )
            .await
            .expect("ferry's role");
        assert!(
            row.get::<_, bool>(0),
            "ferry must be a superuser with REPLICATION"
        );
    }

    first.create_database("bench");
    let output = first.pgbench("bench", &["-i", "-s", "1", "-q"]);
    assert!(
        output.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        first.psql("bench", "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );

    let data_dir_parent = first
        .log_path()
        .parent()
        .expect("the log is in the temp dir")
        .to_owned();
    first.stop();
    assert!(!data_dir_parent.exists(), "stop removes the temp dir");
    drop(second);
}

#[tokio::test]
async fn password_cluster_rejects_a_wrong_password() {
    let cluster = PgCluster::start_with(PgOptions {
        password: Some("s3cret:@/".to_owned()),
        extra_conf: vec![("wal_sender_timeout".to_owned(), "5s".to_owned())],
        ..PgOptions::default()
    });
    let uri = cluster.uri("postgres");
    assert!(
        uri.starts_with("postgres://ferry:s3cret%3A%40%2F@127.0.0.1:"),
        "{uri}"
    );

    for login in ["ferry:wrong", "ferry"] {
        let uri = format!("postgres://{login}@127.0.0.1:{}/postgres", cluster.port());
        let error = tokio_postgres::connect(&uri, NoTls)
            .await
            .err()
            .unwrap_or_else(|| panic!("{login} must be rejected"));
        // 28P01 invalid_password; a missing password fails on the client side instead.
        if let Some(db_error) = error.as_db_error() {
            assert_eq!(
                db_error.code(),
                &SqlState::INVALID_PASSWORD,
                "{login}: {db_error}"
            );
        }
    }

    let client = cluster.connect("postgres").await;
    let row = client
        .query_one("SHOW wal_sender_timeout", &[])
        .await
        .expect("SHOW");
    assert_eq!(
        row.get::<_, String>(0),
        "5s",
        "extra_conf reaches the server"
    );
    assert_eq!(
        cluster.psql("postgres", "SELECT 1"),
        "1",
        "psql passes the password too"
    );
    let output = cluster.pgbench("postgres", &["-i", "-s", "1", "-q", "-I", "dt"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn immediate_stop_and_restart_keep_the_port_and_committed_data() {
    let mut cluster = PgCluster::start();
    let port = cluster.port();
    cluster.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    cluster.stop_immediate();
    assert!(!cluster.is_running());
    cluster.restart();
    assert_eq!(cluster.port(), port);
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM t"), "1");
}

#[test]
fn comparison_counts_missing_extra_and_different_rows() {
    let (source, target) = thread::scope(|scope| {
        let a = scope.spawn(PgCluster::start);
        let b = scope.spawn(PgCluster::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    let setup = "CREATE TABLE k (id int, sub text, v jsonb, PRIMARY KEY (id, sub));
                 CREATE TABLE h (a int, b text);";
    source.psql("postgres", setup);
    target.psql("postgres", setup);
    source.psql(
        "postgres",
        "INSERT INTO k VALUES (1, 'a', '{\"x\": 1}'), (2, 'b', NULL), (3, 'c', '[]');
         INSERT INTO h VALUES (1, 'x'), (1, 'x'), (2, E'tab\\there')",
    );
    target.psql(
        "postgres",
        "INSERT INTO k VALUES (1, 'a', '{\"x\": 1}'), (2, 'b', '{}'), (4, 'd', NULL);
         INSERT INTO h VALUES (1, 'x'), (2, E'tab\\there'), (9, NULL)",
    );
    let report =
        ferry_testkit::compare_tables(&source, "postgres", &target, "postgres", &["k", "public.h"]);
    let k = &report.tables[0];
    assert_eq!(k.key, ["id", "sub"]);
    assert_eq!((k.missing, k.extra, k.different), (1, 1, 1), "{report}");
    let h = &report.tables[1];
    assert!(h.key.is_empty());
    assert_eq!((h.missing, h.extra, h.different), (1, 1, 0), "{report}");
    assert_eq!(report.totals(), (2, 2, 1));
    assert!(!report.is_identical());
    assert_eq!(
        ferry_testkit::compare::user_tables(&source, "postgres"),
        ["public.h", "public.k"]
    );
    let same = ferry_testkit::compare_tables(&source, "postgres", &source, "postgres", &["k", "h"]);
    same.assert_identical();
}
