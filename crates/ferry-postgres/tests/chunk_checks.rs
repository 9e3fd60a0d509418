//! What a snapshot chunk checks before it is read and after it is loaded, so that nothing
//! loads wrong without an error:
//! - a table rewritten on the source after the snapshot was taken reads empty in it
//!   (PostgreSQL's MVCC caveat): the chunk fails instead;
//! - binary values carry no type: a chunk is not read in binary when a column's type changed
//!   on the source since the schema was read, nor loaded in binary into a target column whose
//!   type changed after the copy was planned (an `int8` read as a `timestamp` would load).

use std::sync::Arc;
use std::time::Duration;

use ferry_core::{
    parse_postgres_uri, BulkFormat, ChunkData, ErrorClass, Position, Sink, TableSchema,
};
use ferry_postgres::sink::{PgSink, TargetPolicy};
use ferry_postgres::snapshot::{self, ChunkSpec, CopyFormat, TablePlan};
use ferry_postgres::types::BINARY_COPY_TYPES;
use ferry_testkit::PgCluster;
use futures::StreamExt;

const TIMEOUT: Duration = Duration::from_secs(30);

fn sink_policy() -> TargetPolicy {
    TargetPolicy {
        server_id: "test".into(),
        existing_target: Default::default(),
        source: None,
        ddl: Default::default(),
        chunk_ledger: None,
    }
}

/// `shop.public.t` as the source's catalog describes it, and a plan of one chunk.
async fn source_table(pg: &PgCluster) -> (Arc<TableSchema>, TablePlan) {
    let client = pg.connect("shop").await;
    let oid: u32 = client
        .query_one("SELECT 't'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    let schema = ferry_postgres::catalog::table_schema(&client, oid)
        .await
        .unwrap()
        .unwrap();
    let plan = TablePlan {
        table: schema.id.clone(),
        key_column: None,
        chunks: vec![ChunkSpec::whole()],
        estimated_rows: 0,
    };
    (Arc::new(schema), plan)
}

/// Reads the whole table in `format` on a session of its own, in a transaction as the
/// snapshot's sessions are; `Err` when the read is refused.
async fn read(
    pg: &PgCluster,
    schema: &TableSchema,
    plan: &TablePlan,
    format: CopyFormat,
) -> Result<ChunkData, ferry_postgres::PgError> {
    let client = pg.connect("shop").await;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let data = snapshot::copy_out_within(
        &client,
        None,
        schema,
        plan,
        &ChunkSpec::whole(),
        format,
        TIMEOUT,
    )
    .await?
    .map(move |item| {
        let _session = &client;
        item.map_err(ferry_core::SourceError::from)
    })
    .boxed();
    Ok(ChunkData::Bulk {
        format: match format {
            CopyFormat::Binary => BulkFormat::PG_COPY_BINARY,
            CopyFormat::Text => BulkFormat::PG_COPY_TEXT,
        },
        data,
    })
}

/// The whole table as COPY text on `client`, inside its transaction.
async fn read_text(
    client: &tokio_postgres::Client,
    schema: &TableSchema,
    plan: &TablePlan,
) -> Result<
    futures::stream::BoxStream<'static, Result<bytes::Bytes, ferry_postgres::PgError>>,
    ferry_postgres::PgError,
> {
    snapshot::copy_out_within(
        client,
        None,
        schema,
        plan,
        &ChunkSpec::whole(),
        CopyFormat::Text,
        TIMEOUT,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_chunks_load_only_into_the_types_they_were_read_from() {
    let pg = PgCluster::start();
    pg.create_database("shop");

    // Every type allowed has binary send and receive functions, and the list is closed
    // under arrays: each type's array is in it, and each array's element (on this server).
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
    let (schema, plan) = source_table(&pg).await;
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
    pg.psql(
        "analytics",
        "INSERT INTO t SELECT g, 0 FROM generate_series(1, 3) g",
    );

    // Someone retypes the target's column after the copy was planned, keeping its width:
    // the chunk (replacing the table's rows) is undone, the rows there before are kept.
    pg.psql(
        "analytics",
        "ALTER TABLE t ALTER at TYPE timestamp USING to_timestamp(at)",
    );
    let chunk = read(&pg, &schema, &plan, CopyFormat::Binary).await.unwrap();
    let err = Sink::copy_chunk(&mut sink, &schema, 0, &at, true, chunk)
        .await
        .expect_err("a binary chunk into a retyped column");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(
        format!("{err:#}").contains("check target column types of public.t"),
        "{err:#}"
    );
    assert_eq!(pg.psql("analytics", "SELECT count(*) FROM t"), "3");
    // The session is out of the failed transaction, usable as it was.
    assert_eq!(sink.finished_chunks().await.unwrap(), vec![]);

    // The next attempt reads the target anew: a column Ferry created is its again (the
    // sink refuses what it cannot cast back), then the chunk loads in binary, every value
    // exact.
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
    assert_eq!(
        Sink::bulk_formats(&sink, &schema)[0],
        BulkFormat::PG_COPY_BINARY
    );
    let chunk = read(&pg, &schema, &plan, CopyFormat::Binary).await.unwrap();
    let rows = Sink::copy_chunk(&mut sink, &schema, 0, &at, true, chunk)
        .await
        .unwrap();
    assert_eq!(rows, 100);
    assert_eq!(
        pg.psql("analytics", "SELECT count(*) FROM t WHERE at = id * 1000"),
        "100"
    );

    // A column retyped on the source since its schema was read: not read in binary.
    pg.psql(
        "shop",
        "ALTER TABLE t ALTER at TYPE double precision USING at + 0.5",
    );
    let err = read(&pg, &schema, &plan, CopyFormat::Binary)
        .await
        .err()
        .expect("a binary read with a column retyped since");
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert!(
        err.to_string().contains("changed type on the source"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_rewritten_after_the_snapshot_is_not_read_empty() {
    let pg = PgCluster::start();
    pg.create_database("shop");
    pg.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v int); \
         INSERT INTO t SELECT g, g FROM generate_series(1, 100) g",
    );
    let (schema, plan) = source_table(&pg).await;
    for rewrite in [
        "ALTER TABLE t ALTER v TYPE bigint",
        "VACUUM FULL t",
        "TRUNCATE t",
    ] {
        // The snapshot is taken before the rewrite, the chunk read after it.
        let client = pg.connect("shop").await;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
            .await
            .unwrap();
        pg.psql("shop", rewrite);
        let err = read_text(&client, &schema, &plan)
            .await
            .err()
            .unwrap_or_else(|| panic!("read after {rewrite}"));
        assert_eq!(err.class, ErrorClass::Transient, "{err}");
        assert!(
            err.to_string()
                .contains("rewritten or truncated on the source"),
            "{rewrite}: {err}"
        );
    }
    // Read in a snapshot taken after them: no complaint, and the rows written since.
    pg.psql("shop", "INSERT INTO t VALUES (1, 1), (2, 2)");
    let client = pg.connect("shop").await;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let bytes: Vec<_> = read_text(&client, &schema, &plan)
        .await
        .unwrap()
        .collect()
        .await;
    let text: Vec<u8> = bytes
        .into_iter()
        .flat_map(|b| b.unwrap().to_vec())
        .collect();
    assert_eq!(String::from_utf8(text).unwrap(), "1\t1\n2\t2\n");
}
