//! Ferry's TLS client against real PostgreSQL with `ssl = on`: ordinary sessions and the
//! replication session (relayed through [`ferry_postgres::slot::ReplicationTarget`]) and the
//! snapshot sessions (with their tap), with verification, client certificates and the
//! `prefer` fallback.

use ferry_core::{parse_postgres_uri, ConnectionUri, ErrorClass, Lsn};
use ferry_postgres::connect::{connect, connect_tapped, connection_security};
use ferry_postgres::slot::{replication_config, SlotNames, Streaming};
use ferry_testkit::certs::{IssuedCert, TestCa};
use ferry_testkit::{PgCluster, PgOptions, ServerTls};
use futures::StreamExt;
use pgwire_replication::ReplicationClient;

fn tls_cluster(cert: &IssuedCert, client_ca: Option<&TestCa>) -> PgCluster {
    let mut tls = ServerTls::hostssl_only(cert);
    tls.client_ca_pem = client_ca.map(|ca| ca.cert_pem().to_owned());
    PgCluster::start_with(PgOptions {
        password: Some("pw".into()),
        tls: Some(tls),
        ..PgOptions::default()
    })
}

fn uri(cluster: &PgCluster, query: &str) -> ConnectionUri {
    parse_postgres_uri(&format!("{}?{query}", cluster.uri("postgres"))).unwrap()
}

fn verify_full(ca: &TestCa) -> String {
    format!(
        "sslmode=verify-full&sslrootcert={}",
        ca.cert_path().display()
    )
}

/// A snapshot session as workers open it (with a tap), its encryption, and 100,000 rows
/// copied through its tap: whole rows, in order, none lost.
async fn tapped_copy(uri: &ConnectionUri) -> Result<bool, ferry_postgres::PgError> {
    let (client, tap) = connect_tapped(uri, "ferry-tls-test").await?;
    let tap = tap.expect("a snapshot session over TCP has a tap");
    let encrypted = connection_security(&client).await?.encrypted;
    let armed = tap.arm();
    let copy = client
        .copy_out(
            "COPY (SELECT g, repeat('x', g % 50) FROM generate_series(1, 100000) g) TO STDOUT",
        )
        .await
        .unwrap();
    let items: Vec<bytes::Bytes> = armed.rows(copy).map(Result::unwrap).collect().await;
    assert!(items.len() > 1, "{} items", items.len());
    assert!(items.iter().all(|item| item.ends_with(b"\n")));
    let text: String = items.iter().map(|i| String::from_utf8_lossy(i)).collect();
    let expected: String = (1..=100_000)
        .map(|g| format!("{g}\t{}\n", "x".repeat(g % 50)))
        .collect();
    assert!(text == expected, "the copy through the tap differs");
    Ok(encrypted)
}

/// Opens a gated replication session and runs IDENTIFY_SYSTEM on it.
async fn replicate(uri: &ConnectionUri) -> Result<ReplicationClient, ferry_postgres::PgError> {
    let names = SlotNames::for_changefeed("default/tls");
    let mut session = replication_config(
        uri,
        &names,
        Lsn::ZERO,
        "ferry-tls-test",
        Streaming::Blocks {
            decoding_work_mem_kb: None,
        },
    )?
    .connect_gated()
    .await?;
    session
        .identify_system()
        .await
        .map_err(|e| ferry_postgres::replication::replication_error("identify system", e))?;
    Ok(session)
}

#[tokio::test]
async fn replication_session_is_encrypted_and_verified() {
    let ca = TestCa::new("ferry test CA");
    let other = TestCa::new("other CA");
    let cluster = tls_cluster(&ca.issue("server", &["localhost", "127.0.0.1"]), None);

    let good = uri(&cluster, &verify_full(&ca));
    let client = connect(&good, "ferry-tls-test").await.unwrap();
    let security = connection_security(&client).await.unwrap();
    assert!(security.encrypted);
    assert_eq!(security.tls_version.as_deref(), Some("TLSv1.3"));

    assert!(tapped_copy(&good).await.unwrap());
    let session = replicate(&good).await.unwrap();
    // The server's view of the walsender: over TLS 1.3.
    let walsender: String = client
        .query_one(
            "SELECT s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'ferry-tls-test' AND a.backend_type = 'walsender'
               AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(walsender, "TLSv1.3");
    drop(session);

    let Err(err) = replicate(&uri(&cluster, &verify_full(&other))).await else {
        panic!("a session with the wrong CA opened");
    };
    let Err(snapshot_err) = tapped_copy(&uri(&cluster, &verify_full(&other))).await else {
        panic!("a snapshot session with the wrong CA opened");
    };
    assert_eq!(snapshot_err.class, ErrorClass::Definite);
    assert!(
        snapshot_err
            .chain()
            .contains("the server's certificate is not trusted"),
        "{}",
        snapshot_err.chain()
    );
    let Err(snapshot_err) = tapped_copy(&uri(&cluster, "sslmode=disable")).await else {
        panic!("a snapshot session without TLS opened on a hostssl-only server");
    };
    assert_eq!(snapshot_err.class, ErrorClass::Definite);
    assert!(
        snapshot_err.chain().contains("the server requires SSL"),
        "{}",
        snapshot_err.chain()
    );
    assert_eq!(err.class, ErrorClass::Definite);
    assert!(
        err.chain()
            .contains("the server's certificate is not trusted"),
        "{}",
        err.chain()
    );
    let Err(err) = replicate(&uri(&cluster, "sslmode=disable")).await else {
        panic!("a session without TLS opened on a hostssl-only server");
    };
    assert_eq!(err.class, ErrorClass::Definite);
    assert!(
        err.chain().contains("the server requires SSL"),
        "{}",
        err.chain()
    );
}

#[tokio::test]
async fn verify_ca_ignores_the_name_and_sni_can_be_off() {
    let ca = TestCa::new("ferry test CA");
    let cluster = tls_cluster(&ca.issue("server", &["db.elsewhere.example"]), None);
    let ca_only = format!(
        "sslmode=verify-ca&sslrootcert={}&sslsni=0",
        ca.cert_path().display()
    );
    connect(&uri(&cluster, &ca_only), "t").await.unwrap();
    replicate(&uri(&cluster, &ca_only)).await.unwrap();
    // `require` with a root certificate verifies the chain, as libpq does.
    let other = TestCa::new("other CA");
    let require = format!(
        "sslmode=require&sslrootcert={}",
        other.cert_path().display()
    );
    let err = connect(&uri(&cluster, &require), "t").await.unwrap_err();
    assert!(err.chain().contains("not trusted"), "{}", err.chain());
    // Plain `require` does not look at the certificate.
    connect(&uri(&cluster, "sslmode=require"), "t")
        .await
        .unwrap();
}

#[tokio::test]
async fn client_certificates_are_presented() {
    let ca = TestCa::new("ferry test CA");
    let cluster = tls_cluster(&ca.issue("server", &["127.0.0.1"]), Some(&ca));
    let err = connect(&uri(&cluster, &verify_full(&ca)), "t")
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Definite);
    assert!(
        err.chain().contains("requires a client certificate"),
        "{}",
        err.chain()
    );

    let client = ca.issue_client("client", "ferry");
    let with_cert = format!(
        "{}&sslcert={}&sslkey={}",
        verify_full(&ca),
        client.cert_path.display(),
        client.key_path.display()
    );
    connect(&uri(&cluster, &with_cert), "t").await.unwrap();
    replicate(&uri(&cluster, &with_cert)).await.unwrap();
}

#[tokio::test]
async fn prefer_falls_back_to_plain_when_the_server_has_no_ssl() {
    let cluster = PgCluster::start();
    let default = parse_postgres_uri(&cluster.uri("postgres")).unwrap();
    let client = connect(&default, "t").await.unwrap();
    assert!(!connection_security(&client).await.unwrap().encrypted);
    replicate(&default).await.unwrap();
    assert!(!tapped_copy(&default).await.unwrap());
}

#[tokio::test]
async fn system_roots_come_from_the_operating_system_store() {
    let ca = TestCa::new("ferry test CA");
    let cluster = tls_cluster(&ca.issue("server", &["127.0.0.1"]), None);
    // rustls-native-certs, like OpenSSL, reads SSL_CERT_FILE first. No other test in this
    // binary uses the system store.
    std::env::set_var("SSL_CERT_FILE", ca.cert_path());
    let system = uri(&cluster, "sslrootcert=system");
    let client = connect(&system, "t").await.unwrap();
    assert!(connection_security(&client).await.unwrap().encrypted);
    replicate(&system).await.unwrap();
}
