//! Snapshot chunks in COPY binary: the types allowed are ones every server sends and
//! receives in binary, and a chunk never loads in binary into a column whose type changed
//! after the copy was planned (an `int8` read as a `timestamp` would load without error).

use std::sync::Arc;

use ferry_core::{parse_postgres_uri, BulkFormat, ChunkData, ErrorClass, Position, Sink};
use ferry_postgres::sink::{PgSink, TargetPolicy};
use ferry_postgres::snapshot::{self, ChunkSpec, CopyFormat, TablePlan};
use ferry_postgres::types::BINARY_COPY_TYPES;
use ferry_testkit::PgCluster;
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_chunks_load_only_into_the_types_they_were_read_from() {
    let pg = PgCluster::start();
    pg.create_database("shop");

    // Every type allowed has binary send and receive functions, and the list is closed
    // under arrays: each type's array is in it, and each array's element.
    let oids: Vec<String> = BINARY_COPY_TYPES.iter().map(u32::to_string).collect();
    let oids = oids.join(",");
    assert_eq!(
        pg.psql(
            "shop",
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE typsend <> 0 AND typreceive <> 0 \
                   AND typtype IN ('b', 'r') \
                   AND (typelem = 0 OR typelem = ANY('{{{oids}}}')) \
                   AND (typarray = 0 OR typarray = ANY('{{{oids}}}'))) \
                 FROM pg_type WHERE oid = ANY('{{{oids}}}')"
            )
        ),
        format!("{0}|{0}", BINARY_COPY_TYPES.len())
    );

    pg.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, at bigint); \
         INSERT INTO t SELECT g, g * 1000 FROM generate_series(1, 100) g",
    );
    pg.create_database("analytics");
    let source = pg.connect("shop").await;
    let oid: u32 = source
        .query_one("SELECT 't'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    let schema = Arc::new(
        ferry_postgres::catalog::table_schema(&source, oid)
            .await
            .unwrap()
            .unwrap(),
    );
    let plan = TablePlan {
        table: schema.id.clone(),
        key_column: None,
        chunks: vec![ChunkSpec::whole()],
        estimated_rows: 100,
    };
    // Each chunk read on a session of its own, in a transaction as the snapshot's are.
    let chunk = || {
        let schema = schema.clone();
        let plan = plan.clone();
        let pg = &pg;
        async move {
            let client = pg.connect("shop").await;
            client.batch_execute("BEGIN").await.unwrap();
            let data = snapshot::copy_out_within(
                &client,
                &schema,
                &plan,
                &ChunkSpec::whole(),
                CopyFormat::Binary,
                std::time::Duration::from_secs(30),
            )
            .await
            .unwrap()
            .map(move |item| {
                let _session = &client;
                item.map_err(ferry_core::SourceError::from)
            })
            .boxed();
            ChunkData::Bulk {
                format: BulkFormat::PG_COPY_BINARY,
                data,
            }
        }
    };

    let uri = parse_postgres_uri(&pg.uri("analytics")).unwrap();
    let mut sink = PgSink::connect(&uri, "default/cf", sink_policy())
        .await
        .unwrap();
    Sink::ensure_table_for_copy(&mut sink, &schema)
        .await
        .unwrap();
    assert_eq!(
        Sink::bulk_formats(&sink, &schema),
        [BulkFormat::PG_COPY_BINARY, BulkFormat::PG_COPY_TEXT]
    );
    let at = Position::PgLsn(ferry_core::Lsn(1));

    // Someone retypes the column after the copy was planned, keeping its width.
    pg.psql(
        "analytics",
        "ALTER TABLE t ALTER at TYPE timestamp USING to_timestamp(at)",
    );
    let err = Sink::copy_chunk(&mut sink, &schema, 0, &at, false, chunk().await)
        .await
        .expect_err("a binary chunk into a retyped column");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(
        format!("{err:#}").contains("check target column types of public.t"),
        "{err:#}"
    );
    assert_eq!(pg.psql("analytics", "SELECT count(*) FROM t"), "0");

    // Back to the source's type: the chunk loads, every value exact.
    pg.psql(
        "analytics",
        "ALTER TABLE t ALTER at TYPE bigint USING extract(epoch FROM at)::bigint",
    );
    let mut sink = PgSink::connect(&uri, "default/cf", sink_policy())
        .await
        .unwrap();
    Sink::ensure_table_for_copy(&mut sink, &schema)
        .await
        .unwrap();
    let rows = Sink::copy_chunk(&mut sink, &schema, 0, &at, false, chunk().await)
        .await
        .unwrap();
    assert_eq!(rows, 100);
    assert_eq!(
        pg.psql("analytics", "SELECT count(*) FROM t WHERE at = id * 1000"),
        "100"
    );
}

fn sink_policy() -> TargetPolicy {
    TargetPolicy {
        server_id: "test".into(),
        existing_target: Default::default(),
        source: None,
        ddl: Default::default(),
        chunk_ledger: None,
    }
}
