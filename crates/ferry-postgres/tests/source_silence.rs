//! A source that stops answering during a snapshot COPY or a `CREATE_REPLICATION_SLOT` makes
//! them fail as transient errors within a bounded time, while a source that is merely slow
//! (a COPY waiting for a table another session has locked, a slot creation waiting for a
//! running transaction) is waited for. The network is cut with the test kit's proxy, which
//! stops forwarding without closing anything (keepalives cannot tell).

use std::time::{Duration, Instant};

use ferry_core::{parse_postgres_uri, ConnectionUri, ErrorClass, Lsn};
use ferry_postgres::connect::connect_tapped;
use ferry_postgres::slot::{self, SlotNames};
use ferry_postgres::snapshot::{self, ChunkSpec, TablePlan};
use ferry_postgres::tap::Tap;
use ferry_testkit::{PgCluster, TcpProxy};
use futures::StreamExt;

const TIMEOUT: Duration = Duration::from_secs(1);

/// The sessions here stream in-progress transactions, with the server's block size.
const STREAMING: slot::Streaming = slot::Streaming::Blocks {
    decoding_work_mem_kb: None,
};

fn proxied(pg: &PgCluster, proxy: &TcpProxy) -> ConnectionUri {
    let uri = pg
        .uri("shop")
        .replace(&format!(":{}/", pg.port()), &format!(":{}/", proxy.port()));
    parse_postgres_uri(&uri).unwrap()
}

/// The whole table as COPY text, with the tests' read timeout, through the session's tap
/// as a snapshot worker reads it.
async fn copy_text(
    (client, tap): &(tokio_postgres::Client, Option<Tap>),
    schema: &ferry_core::TableSchema,
    plan: &TablePlan,
) -> futures::stream::BoxStream<'static, Result<bytes::Bytes, ferry_postgres::PgError>> {
    assert!(tap.is_some(), "a snapshot session over TCP has a tap");
    snapshot::copy_out_within(
        client,
        tap.as_ref(),
        schema,
        plan,
        &whole(),
        snapshot::CopyFormat::Text,
        TIMEOUT,
    )
    .await
    .unwrap()
}

async fn whole_table_plan(client: &tokio_postgres::Client) -> (ferry_core::TableSchema, TablePlan) {
    let oid: u32 = client
        .query_one("SELECT 'public.t'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    let schema = ferry_postgres::catalog::table_schema(client, oid)
        .await
        .unwrap()
        .unwrap();
    let plan = TablePlan {
        table: schema.id.clone(),
        key_column: None,
        chunks: vec![whole()],
        estimated_rows: 0,
    };
    (schema, plan)
}

fn whole() -> ChunkSpec {
    ChunkSpec {
        index: 0,
        lower: None,
        upper: None,
    }
}

fn source() -> PgCluster {
    let pg = PgCluster::start();
    pg.create_database("shop");
    pg.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 300000) g",
    );
    pg
}

/// The proxy runs its own runtime: it is started and dropped outside the test's.
fn with_proxy<F: std::future::Future>(pg: &PgCluster, test: impl FnOnce(TcpProxy) -> F) {
    let proxy = TcpProxy::start(pg.port());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(test(proxy));
}

#[test]
fn a_copy_from_a_cut_source_fails_transiently_within_the_timeout() {
    let pg = source();
    with_proxy(&pg, |proxy| copy_through_a_cut(&pg, proxy));
}

async fn copy_through_a_cut(pg: &PgCluster, proxy: TcpProxy) {
    let session = connect_tapped(&proxied(pg, &proxy), "ferry-snapshot")
        .await
        .unwrap();
    session
        .0
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .unwrap();
    let (schema, plan) = whole_table_plan(&session.0).await;
    let stream = copy_text(&session, &schema, &plan).await;
    futures::pin_mut!(stream);
    // Some rows arrive, then the network goes silent.
    assert!(stream.next().await.unwrap().is_ok());
    proxy.cut();
    let cut = Instant::now();
    let error = loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("the whole table arrived through a cut network"),
        }
    };
    let waited = cut.elapsed();
    eprintln!(
        "copy through a cut network: failed after {waited:?}: {}",
        error.chain()
    );
    assert_eq!(error.class, ErrorClass::Transient, "{}", error.chain());
    assert!(
        error.chain().contains("did not answer"),
        "{}",
        error.chain()
    );
    assert!(waited < TIMEOUT * 4, "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_waits_for_a_table_locked_longer_than_the_timeout() {
    let pg = source();
    let uri = parse_postgres_uri(&pg.uri("shop")).unwrap();
    let session = connect_tapped(&uri, "ferry-snapshot").await.unwrap();
    session
        .0
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .unwrap();
    let (schema, plan) = whole_table_plan(&session.0).await;
    let locker = pg.connect("shop").await;
    locker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let held = TIMEOUT * 3;
    let release = tokio::spawn(async move {
        tokio::time::sleep(held).await;
        locker.batch_execute("COMMIT").await.unwrap();
    });
    let started = Instant::now();
    let stream = copy_text(&session, &schema, &plan).await;
    let rows: usize = stream
        .map(|b| bytecount(&b.unwrap()))
        .fold(0, |a, b| async move { a + b })
        .await;
    release.await.unwrap();
    assert!(started.elapsed() >= held, "{:?}", started.elapsed());
    assert_eq!(rows, 300_000);
}

fn bytecount(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| **b == b'\n').count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_creation_waiting_for_a_transaction_is_not_a_dead_session() {
    let pg = source();
    let uri = parse_postgres_uri(&pg.uri("shop")).unwrap();
    // A running transaction with an xid: the slot's creation waits until it ends.
    let open = pg.connect("shop").await;
    open.batch_execute("BEGIN; INSERT INTO t VALUES (0, 'open')")
        .await
        .unwrap();
    let held = TIMEOUT * 4;
    let release = tokio::spawn(async move {
        tokio::time::sleep(held).await;
        open.batch_execute("COMMIT").await.unwrap();
    });
    let names = SlotNames::for_changefeed("default/waiting");
    let target = slot::replication_config(&uri, &names, Lsn::ZERO, "ferry", STREAMING).unwrap();
    let started = Instant::now();
    let created = slot::create_slot_with_snapshot_within(target, true, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    release.await.unwrap();
    assert!(started.elapsed() >= held, "{:?}", started.elapsed());
    assert!(!created.snapshot_name.is_empty());
}

#[test]
fn a_slot_creation_on_a_cut_network_fails_transiently() {
    let pg = source();
    with_proxy(&pg, |proxy| slot_creation_through_a_cut(&pg, proxy));
}

async fn slot_creation_through_a_cut(pg: &PgCluster, proxy: TcpProxy) {
    let uri = proxied(pg, &proxy);
    for finished_meanwhile in [false, true] {
        let open = pg.connect("shop").await;
        open.batch_execute("BEGIN; INSERT INTO t VALUES (0, 'open')")
            .await
            .unwrap();
        let names = SlotNames::for_changefeed(&format!("default/cut-{finished_meanwhile}"));
        let target = slot::replication_config(&uri, &names, Lsn::ZERO, "ferry", STREAMING).unwrap();
        let creation = tokio::spawn(slot::create_slot_with_snapshot_within(
            target, false, TIMEOUT,
        ));
        // The creation waits for the open transaction; then the network is cut.
        tokio::time::sleep(TIMEOUT / 2).await;
        proxy.cut();
        let cut = Instant::now();
        if finished_meanwhile {
            // The source finishes the creation, its answer is lost; new connections pass
            // again (the probe's), the creating one stays frozen.
            open.batch_execute("COMMIT").await.unwrap();
            proxy.heal();
        }
        let error = match creation.await.unwrap() {
            Ok(_) => panic!("a slot created through a cut network"),
            Err(e) => e,
        };
        let waited = cut.elapsed();
        eprintln!(
            "slot creation through a cut network (finished on the source: \
             {finished_meanwhile}): failed after {waited:?}: {}",
            error.chain()
        );
        assert_eq!(error.class, ErrorClass::Transient, "{}", error.chain());
        assert!(waited < TIMEOUT * 6, "{waited:?}");
        if !finished_meanwhile {
            open.batch_execute("ROLLBACK").await.unwrap();
            proxy.heal();
        }
    }
}
