//! API authentication and HTTPS with the real `ferry server` binary: every route of the
//! OpenAPI document without a token, with a `read` and with an `admin` token; open health,
//! open or protected metrics; the secure default on a non-loopback address; the CLI over
//! HTTPS with a private CA and a token; client certificates with an allow-list of CNs; and
//! tokens that never reach the log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::certs::TestCa;
use ferry_testkit::{FerryOptions, FerryServer, HttpsClient, PgCluster};

const ADMIN_TOKEN: &str = "adm-7f3c9e1b5d2a4c6e8f0a";
const READ_TOKEN: &str = "rd-2b4d6f8a0c1e3a5c7e9b";
/// Exit code of `unauthorized/forbidden` (docs/cli.md).
const UNAUTHORIZED: i32 = 11;
const UNREACHABLE: i32 = 3;
const USAGE: i32 = 2;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

/// A token file with `alice` (admin) and `bob` (read), in a directory kept by the caller.
fn token_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(
        &path,
        format!("# NAME ROLE TOKEN\nalice admin {ADMIN_TOKEN}\nbob   read  {READ_TOKEN}  # ci\n"),
    )
    .unwrap();
    (dir, path.display().to_string())
}

fn with_tokens(path: &str, more: &[&str]) -> FerryOptions {
    let mut args = vec!["--auth-token-file".to_string(), path.to_string()];
    args.extend(more.iter().map(|a| a.to_string()));
    FerryOptions {
        args,
        ..FerryOptions::default()
    }
}

/// Asserts the server log holds no token, and returns it.
fn log_without_tokens(server: &FerryServer) -> String {
    let log = server.log();
    assert!(
        !log.contains(ADMIN_TOKEN) && !log.contains(READ_TOKEN),
        "a token reached the log:\n{log}"
    );
    log
}

/// The status line and headers of a raw `GET path` (no token), for header checks.
fn raw_head(server: &FerryServer, path: &str) -> String {
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase()
}

#[test]
fn every_route_of_the_openapi_document_checks_the_token() {
    let (_dir, tokens) = token_file();
    let server = FerryServer::start_with(binary(), with_tokens(&tokens, &[]));

    let (status, doc) = server.request_as(Some(READ_TOKEN), "GET", "/api/v2/openapi.json", None);
    assert_eq!(status, 200, "{doc}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "{doc}"
    );
    let mut operations = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = template.replace("{id}", "nope").replace("{name}", "nope");
        for (method, operation) in item.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let writes = method != "GET" && method != "HEAD";
            let body = writes.then_some(&b"{}"[..]);
            let call = |token| server.request_as(token, &method, &path, body);
            let what = format!("{method} {template}");
            let declared = |code: &str| operation["responses"].get(code).is_some();

            if template == "/api/v2/health" {
                assert_eq!(call(None).0, 200, "{what} is open");
                assert!(!declared("401"), "{what}");
                continue;
            }
            let (status, body) = call(None);
            assert_eq!(status, 401, "{what} without a token: {body}");
            assert_eq!(body["error_code"], "UNAUTHORIZED", "{what}: {body}");
            assert_eq!(call(Some("not-a-token-at-all-xx")).0, 401, "{what}");
            assert!(declared("401"), "{what} declares 401");

            let (status, body) = call(Some(READ_TOKEN));
            if writes {
                assert_eq!(status, 403, "{what} with a read token: {body}");
                assert_eq!(body["error_code"], "FORBIDDEN", "{what}: {body}");
                assert!(declared("403"), "{what} declares 403");
            } else {
                assert!(
                    !matches!(status, 401 | 403),
                    "{what} with a read token: {status} {body}"
                );
            }
            let (status, body) = call(Some(ADMIN_TOKEN));
            assert!(
                !matches!(status, 401 | 403),
                "{what} with an admin token: {status} {body}"
            );
        }
    }
    assert!(operations >= 18, "walked only {operations} operations");

    // Unknown routes and ids look alike without a token; the answer invites a bearer token.
    for path in ["/api/v2/nowhere", "/api/v2/changefeeds/nope", "/"] {
        let head = raw_head(&server, path);
        assert!(head.starts_with("http/1.1 401"), "{path}: {head}");
        assert!(head.contains("www-authenticate: bearer"), "{path}: {head}");
    }
    // Metrics stay open by default.
    let (status, _) = server.request_as(None, "GET", "/metrics", None);
    assert_eq!(status, 200);
    // A server without tokens declares no security requirement (its requests succeed).
    let open = FerryServer::start(binary());
    let (_, open_doc) = open.get("/api/v2/openapi.json");
    assert!(open_doc.get("security").is_none(), "{open_doc}");
    assert!(doc["security"].is_array(), "{doc}");

    let log = log_without_tokens(&server);
    assert!(
        log.lines()
            .any(|l| l.contains("caller=alice") && l.contains("method=DELETE")),
        "the request log names the admin token:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("caller=bob") && l.contains("status=403")),
        "refusals are logged with the token's name:\n{log}"
    );
}

#[test]
fn metrics_can_require_a_token() {
    let (_dir, tokens) = token_file();
    let server = FerryServer::start_with(binary(), with_tokens(&tokens, &["--metrics-auth"]));
    assert_eq!(server.request_as(None, "GET", "/metrics", None).0, 401);
    assert_eq!(
        server
            .request_as(Some(READ_TOKEN), "GET", "/metrics", None)
            .0,
        200
    );
    assert_eq!(
        server.request_as(None, "GET", "/api/v2/health", None).0,
        200
    );
}

fn ferry(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("FERRY_") {
            command.env_remove(name);
        }
    }
    command
}

fn run(command: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run ferry");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_non_loopback_address_needs_tokens_or_the_insecure_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let port = free_port();
    let addr = format!("0.0.0.0:{port}");

    let (code, _, err) = run(&mut ferry(&[
        "server",
        "--addr",
        &addr,
        "--data-dir",
        &data,
    ]));
    assert_eq!(code, USAGE, "{err}");
    assert!(err.contains("is not a loopback address"), "{err}");
    assert!(err.contains("--insecure-no-auth"), "{err}");

    // A malformed token file: the line is named, the token is not.
    let bad = dir.path().join("tokens");
    std::fs::write(
        &bad,
        format!("alice admin {ADMIN_TOKEN}\nbob reader {READ_TOKEN}\n"),
    )
    .unwrap();
    let (code, _, err) = run(&mut ferry(&[
        "server",
        "--addr",
        &addr,
        "--data-dir",
        &data,
        "--auth-token-file",
        bad.to_str().unwrap(),
    ]));
    assert_eq!(code, USAGE, "{err}");
    assert!(err.contains("line 2: ROLE must be admin or read"), "{err}");
    assert!(
        !err.contains(READ_TOKEN) && !err.contains(ADMIN_TOKEN),
        "{err}"
    );

    // --insecure-no-auth starts, and says so loudly. Reached over loopback only.
    let log = dir.path().join("server.log");
    let mut child = ferry(&[
        "server",
        "--addr",
        &addr,
        "--data-dir",
        &data,
        "--insecure-no-auth",
    ])
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("ferry server listening") || Instant::now() > deadline {
            break text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the server exited with {status}: {text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(started.contains("ferry server listening"), "{started}");
    assert!(
        started.contains("WARN") && started.contains("INSECURE"),
        "{started}"
    );
}

/// `ferry ARGS` against `server` with the CA, and `token` through `FERRY_TOKEN`.
fn cli(server: &str, ca: Option<&Path>, token: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut command = ferry(args);
    command.env("FERRY_SERVER", server);
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    if let Some(token) = token {
        command.env("FERRY_TOKEN", token);
    }
    let (code, out, err) = run(&mut command);
    let text = format!("{out}{err}");
    assert!(
        !text.contains(ADMIN_TOKEN) && !text.contains(READ_TOKEN),
        "the CLI printed a token: {text}"
    );
    (code, text)
}

#[test]
fn the_cli_talks_https_with_a_private_ca_and_a_token() {
    let pg = std::thread::spawn(PgCluster::start);
    let ca = TestCa::new("ferry test CA");
    let cert = ca.issue("server", &["localhost", "127.0.0.1"]);
    let (dir, tokens) = token_file();
    let mut options = with_tokens(
        &tokens,
        &[
            "--tls-cert",
            cert.cert_path.to_str().unwrap(),
            "--tls-key",
            cert.key_path.to_str().unwrap(),
        ],
    );
    options.https = Some(HttpsClient {
        ca_cert: ca.cert_path(),
        client_cert: None,
    });
    let server = FerryServer::start_with(binary(), options);
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca_path = ca.cert_path();
    let ca_file = Some(ca_path.as_path());

    let (code, out) = cli(&url, ca_file, Some(READ_TOKEN), &["source", "list"]);
    assert_eq!(code, 0, "{out}");
    // A token file works as well as the variable.
    let token_path = dir.path().join("cli-token");
    std::fs::write(&token_path, format!("# bob\n{READ_TOKEN}\n")).unwrap();
    let path = token_path.to_str().unwrap();
    let (code, out) = cli(
        &url,
        ca_file,
        None,
        &["source", "list", "--token-file", path],
    );
    assert_eq!(code, 0, "{out}");

    let (code, out) = cli(
        &url,
        ca_file,
        Some("wrong-token-0123456789"),
        &["source", "list"],
    );
    assert_eq!(code, UNAUTHORIZED, "{out}");
    assert!(out.contains("UNAUTHORIZED"), "{out}");
    let (code, out) = cli(&url, ca_file, None, &["changefeed", "get", "nope"]);
    assert_eq!(
        code, UNAUTHORIZED,
        "no token, and no hint whether it exists: {out}"
    );
    let (code, out) = cli(
        &url,
        ca_file,
        Some(READ_TOKEN),
        &["changefeed", "pause", "x"],
    );
    assert_eq!(code, UNAUTHORIZED, "read token on a write: {out}");
    assert!(out.contains("FORBIDDEN"), "{out}");
    // Without the private CA the server's certificate is not trusted.
    let (code, out) = cli(&url, None, Some(READ_TOKEN), &["source", "list"]);
    assert_eq!(code, UNREACHABLE, "{out}");
    // Plain HTTP to the HTTPS port gets nothing.
    let plain = url.replace("https://", "http://");
    let (code, out) = cli(&plain, None, Some(READ_TOKEN), &["source", "list"]);
    assert_ne!(code, 0, "{out}");

    // An operator action: its log lines carry the token's name, never the token.
    let pg = pg.join().unwrap();
    pg.create_database("shop");
    let uri = pg.uri("shop");
    let (code, out) = cli(
        &url,
        ca_file,
        Some(ADMIN_TOKEN),
        &["source", "create", "--name", "shop", "--uri", &uri],
    );
    assert_eq!(code, 0, "{out}");
    let log = log_without_tokens(&server);
    assert!(
        log.lines()
            .any(|l| l.contains("caller=alice") && l.contains("source created")),
        "the operator action names the token:\n{log}"
    );
}

#[test]
fn client_certificates_must_carry_an_allowed_cn() {
    let ca = TestCa::new("ferry test CA");
    let other_ca = TestCa::new("another CA");
    let cert = ca.issue("server", &["127.0.0.1"]);
    let ops = ca.issue_client("ops", "ops");
    let deploy = ca.issue_client("deploy", "deploy");
    let impostor = other_ca.issue_client("impostor", "ops");
    let (_dir, tokens) = token_file();
    let mut options = with_tokens(
        &tokens,
        &[
            "--tls-cert",
            cert.cert_path.to_str().unwrap(),
            "--tls-key",
            cert.key_path.to_str().unwrap(),
            "--tls-client-ca",
            ca.cert_path().to_str().unwrap(),
            "--tls-allowed-cn",
            "ops",
            "--tls-allowed-cn",
            "backup",
        ],
    );
    options.https = Some(HttpsClient {
        ca_cert: ca.cert_path(),
        client_cert: Some((ops.cert_path.clone(), ops.key_path.clone())),
    });
    options.token = Some(READ_TOKEN.to_string());
    let server = FerryServer::start_with(binary(), options);
    assert_eq!(server.get("/api/v2/status").0, 200, "the ops certificate");

    let url = server.url();
    let ca_path = ca.cert_path();
    let with_cert = |cert: Option<&ferry_testkit::certs::IssuedCert>| {
        let mut args = vec!["source", "list"];
        if let Some(cert) = cert {
            args.extend([
                "--cert",
                cert.cert_path.to_str().unwrap(),
                "--key",
                cert.key_path.to_str().unwrap(),
            ]);
        }
        cli(&url, Some(&ca_path), Some(READ_TOKEN), &args)
    };
    let (code, out) = with_cert(Some(&ops));
    assert_eq!(code, 0, "{out}");
    for (what, cert) in [
        ("a CN not in the list", Some(&deploy)),
        ("another CA", Some(&impostor)),
        ("no certificate", None),
    ] {
        let (code, out) = with_cert(cert);
        assert_eq!(code, UNREACHABLE, "{what}: {out}");
    }
    // SIGTERM shuts the HTTPS server down gracefully.
    let mut server = server;
    server.stop();
    let log = log_without_tokens(&server);
    assert!(log.contains("its CN is not in tls.allowed_cn"), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}
