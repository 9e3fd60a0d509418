//! TLS to sources and sinks against real PostgreSQL with `ssl = on`, a throwaway CA and
//! `hostssl`-only access: a changefeed over `verify-full` end to end, and each kind of TLS
//! failure with its own message.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Pair;
use ferry_testkit::certs::TestCa;
use ferry_testkit::{wait_for, FerryServer, PgCluster, PgOptions, ServerTls};
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);
const PASSWORD: &str = "tls-s3cret";

/// A cluster with `ssl = on`, this certificate, TCP over TLS only and a password.
fn tls_cluster(cert: &ferry_testkit::certs::IssuedCert) -> PgCluster {
    PgCluster::start_with(PgOptions {
        password: Some(PASSWORD.into()),
        tls: Some(ServerTls::hostssl_only(cert)),
        ..PgOptions::default()
    })
}

/// `cluster`'s URI for `db` with TLS parameters `query`.
fn uri(cluster: &PgCluster, db: &str, query: &str) -> String {
    format!("{}?{query}", cluster.uri(db))
}

fn verify_full(ca: &Path) -> String {
    format!("sslmode=verify-full&sslrootcert={}", ca.display())
}

fn ferry() -> FerryServer {
    FerryServer::start(Path::new(env!("CARGO_BIN_EXE_ferry")))
}

#[test]
fn changefeed_over_verify_full_replicates_snapshot_and_stream() {
    let ca = TestCa::new("ferry test CA");
    let cert = ca.issue("server", &["localhost", "127.0.0.1"]);
    let (source, target) = std::thread::scope(|s| {
        let a = s.spawn(|| tls_cluster(&cert));
        let b = s.spawn(|| tls_cluster(&cert));
        (a.join().unwrap(), b.join().unwrap())
    });
    source.create_database("shop");
    target.create_database("analytics");
    source.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, note text);
         INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 500) g;",
    );
    let pair = Pair::from_parts(source, target, ferry());
    let tls = verify_full(&ca.cert_path());
    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "secure",
            "source_uri": uri(&pair.source, "shop", &tls),
            "sink_uri": uri(&pair.target, "analytics", &tls),
            "tables": ["public.orders"],
        }),
    );
    assert_eq!(code, 201, "{body}\n{}", pair.ferry.log());
    pair.wait_synced("secure", MINUTE);
    pair.assert_same("public.orders");

    pair.source.psql(
        "shop",
        "INSERT INTO orders VALUES (501, 'streamed'); UPDATE orders SET note = 'u' WHERE id = 1;",
    );
    wait_for("the streamed rows", MINUTE, || {
        pair.target.psql(
            "analytics",
            "SELECT count(*) FROM public.orders WHERE note IN ('streamed', 'u')",
        ) == "2"
    });
    pair.assert_same("public.orders");

    // Every session Ferry holds is encrypted, the walsender's included (the server
    // refuses unencrypted TCP anyway: hostssl only).
    let sessions = "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s \
                    JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE 'ferry%'";
    let walsenders = "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s \
                      USING (pid) WHERE s.ssl";
    assert_eq!(pair.source.psql("postgres", walsenders), "1");
    let counts = pair.source.psql("postgres", sessions);
    let (encrypted, all) = counts.split_once('|').unwrap();
    assert_eq!(encrypted, all, "{counts}");

    // A named source reports its connection's TLS.
    let (code, body) = pair.ferry.post(
        "/api/v2/sources",
        &json!({"name": "shop", "uri": uri(&pair.source, "shop", &tls)}),
    );
    assert_eq!(code, 201, "{body}");
    let (code, status) = pair.ferry.get("/api/v2/sources/shop/status");
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["tls"]["encrypted"], json!(true), "{status}");
    assert_eq!(status["tls"]["version"], json!("TLSv1.3"), "{status}");
    assert!(!status.to_string().contains(PASSWORD));
}

/// The API's answer to registering `uri` as a source.
fn refused_source(ferry: &FerryServer, uri: &str) -> (u16, Value) {
    let reply = ferry.post("/api/v2/sources", &json!({"name": "s", "uri": uri}));
    assert!(!reply.1.to_string().contains(PASSWORD), "{}", reply.1);
    reply
}

#[track_caller]
fn assert_refused(reply: (u16, Value), code: &str, message: &str) {
    assert_eq!(reply.0, 400, "{}", reply.1);
    assert_eq!(reply.1["error_code"], json!(code), "{}", reply.1);
    let text = reply.1["error_msg"].as_str().unwrap_or_default();
    assert!(text.contains(message), "expected {message:?} in {text:?}");
}

#[test]
fn tls_failures_are_named() {
    let ca = TestCa::new("ferry test CA");
    let other_ca = TestCa::new("someone else's CA");
    let good = ca.issue("server", &["localhost", "127.0.0.1"]);
    let elsewhere = ca.issue("elsewhere", &["db.elsewhere.example"]);
    let (secure, misnamed, plain) = std::thread::scope(|s| {
        let a = s.spawn(|| tls_cluster(&good));
        let b = s.spawn(|| tls_cluster(&elsewhere));
        let c = s.spawn(|| {
            PgCluster::start_with(PgOptions {
                password: Some(PASSWORD.into()),
                ..PgOptions::default()
            })
        });
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    let ferry = ferry();

    // Options are checked before anything connects.
    assert_refused(
        refused_source(
            &ferry,
            &uri(&secure, "postgres", "sslmode=verify-everything"),
        ),
        "INVALID_CONFIG",
        "sslmode=\"verify-everything\" is not supported",
    );
    assert_refused(
        refused_source(&ferry, &uri(&secure, "postgres", "sslmode=verify-full")),
        "INVALID_CONFIG",
        "needs sslrootcert",
    );

    // A CA that did not sign the server's certificate.
    assert_refused(
        refused_source(
            &ferry,
            &uri(&secure, "postgres", &verify_full(&other_ca.cert_path())),
        ),
        "SOURCE_UNUSABLE",
        "the server's certificate is not trusted",
    );
    // A certificate for another host name; verify-ca accepts it, verify-full does not.
    let wrong_name = refused_source(
        &ferry,
        &uri(&misnamed, "postgres", &verify_full(&ca.cert_path())),
    );
    assert_refused(wrong_name, "SOURCE_UNUSABLE", "host name mismatch");
    let verify_ca = format!("sslmode=verify-ca&sslrootcert={}", ca.cert_path().display());
    let (code, body) = ferry.post(
        "/api/v2/sources",
        &json!({"name": "ca-only", "uri": uri(&misnamed, "postgres", &verify_ca)}),
    );
    assert_eq!(code, 201, "{body}");

    // No TLS against a hostssl-only server, and TLS required from a server without it.
    assert_refused(
        refused_source(&ferry, &uri(&secure, "postgres", "sslmode=disable")),
        "SOURCE_UNUSABLE",
        "the server requires SSL",
    );
    assert_refused(
        refused_source(&ferry, &uri(&plain, "postgres", "sslmode=require")),
        "SOURCE_UNUSABLE",
        "the server does not support SSL",
    );
    // The default (prefer) falls back to plain there, and says so in the status.
    let (code, body) = ferry.post(
        "/api/v2/sources",
        &json!({"name": "plain", "uri": plain.uri("postgres")}),
    );
    assert_eq!(code, 201, "{body}");
    let (_, status) = ferry.get("/api/v2/sources/plain/status");
    assert_eq!(status["tls"]["encrypted"], json!(false), "{status}");

    // An unreadable client key is named, not retried.
    assert_refused(
        refused_source(
            &ferry,
            &uri(
                &secure,
                "postgres",
                "sslmode=require&sslcert=/nonexistent/client.crt&sslkey=/nonexistent/client.key",
            ),
        ),
        "SOURCE_UNUSABLE",
        "cannot read the sslcert file /nonexistent/client.crt",
    );

    // A sink that does not trust the target is refused at create, with the reason.
    secure.psql("postgres", "CREATE TABLE t (id int PRIMARY KEY)");
    let (code, body) = ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "untrusted-sink",
            "source_uri": uri(&secure, "postgres", &verify_full(&ca.cert_path())),
            "sink_uri": uri(&secure, "postgres", &verify_full(&other_ca.cert_path())),
            "tables": ["public.t"],
        }),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error_code"], json!("SINK_UNUSABLE"), "{body}");
    let error = body["error_msg"].as_str().unwrap_or_default();
    assert!(
        error.contains("the server's certificate is not trusted"),
        "{body}"
    );
    let status = body;
    assert!(!status.to_string().contains(PASSWORD));
}
