//! Regression (found by fault scenario 1 at full size): a server killed while the target
//! built a table's primary key leaves that build running on the target (its backend has not
//! noticed the lost client); the restarted server's build waits for its lock, and the old
//! one commits first. The new build must then find the key and carry on, not fail the
//! changefeed with "multiple primary keys".

use ferry_core::parse_postgres_uri;
use ferry_postgres::sink::{PgSink, TargetPolicy};
use ferry_testkit::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_built_meanwhile_by_an_earlier_session_is_kept() {
    let pg = PgCluster::start();
    pg.create_database("analytics");
    pg.psql(
        "analytics",
        "CREATE TABLE t (id int NOT NULL, v text); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g",
    );
    let uri = parse_postgres_uri(&pg.uri("analytics")).unwrap();
    let catalog = ferry_postgres::connect::connect(&uri, "test")
        .await
        .unwrap();
    let oid: u32 = catalog
        .query_one("SELECT 't'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    let mut schema = ferry_postgres::catalog::table_schema(&catalog, oid)
        .await
        .unwrap()
        .unwrap();
    schema.key = vec![0];

    // The earlier session: its key build holds the table's lock, uncommitted.
    let earlier = pg.connect("analytics").await;
    earlier
        .batch_execute("BEGIN; ALTER TABLE t ADD PRIMARY KEY (id)")
        .await
        .unwrap();
    let policy = TargetPolicy {
        server_id: "test".into(),
        existing_target: Default::default(),
        source: None,
        ddl: Default::default(),
        chunk_ledger: None,
    };
    let mut sink = PgSink::connect(&uri, "default/cf", policy).await.unwrap();
    let build = tokio::spawn(async move { sink.ensure_key(&schema).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !build.is_finished(),
        "the build waits for the earlier one's lock"
    );
    earlier.batch_execute("COMMIT").await.unwrap();
    build
        .await
        .unwrap()
        .expect("the key built meanwhile is accepted");
    assert_eq!(
        pg.psql(
            "analytics",
            "SELECT count(*) FROM pg_index WHERE indrelid = 't'::regclass"
        ),
        "1"
    );
}
