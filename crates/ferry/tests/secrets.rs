//! Secrets end to end, against real PostgreSQL and the real `ferry server`: one sentinel
//! password, given every way a URI can carry it (userinfo, `?password=`, `password_file`,
//! `password_env`, a named source), for working and failing changefeeds; then every API
//! response, `/metrics`, the CLI's output, the server's log and the store file on disk are
//! searched for it. Also: reference errors at create and at connect time, file modes, and
//! a `password_file` changefeed replicating end to end.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::dump;
use ferry_testkit::{wait_for, FerryServer, PgCluster, PgOptions};
use serde_json::{json, Value};

/// The password of both clusters; must never show anywhere.
const SENTINEL: &str = "Sntl9x7Qw3zPass";
/// The server's environment variable holding it.
const PASSWORD_VAR: &str = "FERRY_TEST_PG_PASSWORD";
const MINUTE: Duration = Duration::from_secs(60);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

fn cluster() -> PgCluster {
    PgCluster::start_with(PgOptions {
        password: Some(SENTINEL.into()),
        ..Default::default()
    })
}

/// `postgres://ferry@127.0.0.1:PORT/db` followed by `suffix` (`?…`): no password yet.
fn bare(cluster: &PgCluster, db: &str, suffix: &str) -> String {
    format!("postgres://ferry@127.0.0.1:{}/{db}{suffix}", cluster.port())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[track_caller]
fn created(reply: (u16, Value)) -> Value {
    assert_eq!(reply.0, 201, "{}", reply.1);
    reply.1
}

#[track_caller]
fn refused(reply: &(u16, Value), status: u16, code: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["error_code"], json!(code), "{}", reply.1);
}

fn changefeed(id: &str, source_uri: &str, sink_uri: &str, table: &str) -> Value {
    json!({"id": id, "source_uri": source_uri, "sink_uri": sink_uri, "tables": [table]})
}

#[test]
fn a_password_given_any_way_never_shows() {
    let (source, target) = std::thread::scope(|s| {
        let a = s.spawn(cluster);
        let b = s.spawn(cluster);
        (a.join().unwrap(), b.join().unwrap())
    });
    source.create_database("shop");
    target.create_database("analytics");
    let tables = [
        "t_userinfo",
        "t_query",
        "t_file",
        "t_env",
        "t_named",
        "t_down",
    ];
    for t in tables {
        source.psql(
            "shop",
            &format!(
                "CREATE TABLE {t} (id int PRIMARY KEY, v text);
                 INSERT INTO {t} SELECT g, 'row ' || g FROM generate_series(1, 100) g;"
            ),
        );
    }
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("pg-password");
    std::fs::write(&password_file, format!("{SENTINEL}\n")).unwrap();
    let file_ref = format!("?password_file={}", password_file.display());
    let mut ferry = FerryServer::start_with_env(binary(), &[(PASSWORD_VAR, SENTINEL)]);
    let mut responses: Vec<String> = Vec::new();
    let mut record = |reply: (u16, Value)| {
        responses.push(reply.1.to_string());
        reply
    };

    // Working changefeeds, the password given one way in both source and sink.
    let ways = [
        ("userinfo", source.uri("shop"), target.uri("analytics")),
        (
            "query",
            bare(&source, "shop", &format!("?password={SENTINEL}")),
            bare(
                &target,
                "analytics",
                &format!("?sslmode=disable&password={SENTINEL}"),
            ),
        ),
        (
            "file",
            bare(&source, "shop", &file_ref),
            bare(&target, "analytics", &file_ref),
        ),
        (
            "env",
            bare(&source, "shop", &format!("?password_env={PASSWORD_VAR}")),
            bare(
                &target,
                "analytics",
                &format!("?password_env={PASSWORD_VAR}"),
            ),
        ),
    ];
    for (way, source_uri, sink_uri) in &ways {
        let body = changefeed(way, source_uri, sink_uri, &format!("public.t_{way}"));
        created(record(ferry.post("/api/v2/changefeeds", &body)));
    }
    created(record(ferry.post(
        "/api/v2/sources",
        &json!({"name": "shop", "uri": bare(&source, "shop", &format!("?password={SENTINEL}"))}),
    )));
    created(record(ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "named", "source": "shop", "sink_uri": target.uri("analytics"),
                "tables": ["public.t_named"]}),
    )));

    // Failing ones: the sink's host does not answer (accepted at create: it may be down
    // for a while), the sink refuses the password.
    let down_sink = format!("postgres://ferry:{SENTINEL}@127.0.0.1:1/analytics?password_env=X");
    refused(
        &record(ferry.post(
            "/api/v2/changefeeds",
            &changefeed("bad", &source.uri("shop"), &down_sink, "public.t_down"),
        )),
        400,
        "INVALID_CONFIG",
    );
    let down_sink = format!("postgres://ferry@127.0.0.1:1/analytics?password={SENTINEL}");
    created(record(ferry.post(
        "/api/v2/changefeeds",
        &changefeed("down", &source.uri("shop"), &down_sink, "public.t_down"),
    )));
    // A sink refusing the password is refused at create (retrying cannot help) ...
    let wrong_sink = bare(&target, "analytics", &format!("?password={SENTINEL}-wrong"));
    refused(
        &record(ferry.post(
            "/api/v2/changefeeds",
            &changefeed("x", &source.uri("shop"), &wrong_sink, "public.t_down"),
        )),
        400,
        "SINK_UNUSABLE",
    );
    // ... and when the password changes after create, the changefeed fails at its start.
    let sink_password = secrets.path().join("sink-password");
    std::fs::write(&sink_password, format!("{SENTINEL}\n")).unwrap();
    let changing_sink = bare(
        &target,
        "analytics",
        &format!("?password_file={}", sink_password.display()),
    );
    created(record(ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "wrongpw", "start": false, "tables": ["public.t_down"],
                "source_uri": source.uri("shop"), "sink_uri": changing_sink}),
    )));
    std::fs::write(&sink_password, format!("{SENTINEL}-wrong\n")).unwrap();
    record(ferry.post("/api/v2/changefeeds/wrongpw/resume", &json!({})));
    // Refused at create: unreachable source, a missing file, an unset variable.
    let unreachable = format!("postgres://ferry@127.0.0.1:1/shop?password={SENTINEL}");
    refused(
        &record(ferry.post(
            "/api/v2/changefeeds",
            &changefeed("x", &unreachable, &target.uri("analytics"), "public.t_down"),
        )),
        400,
        "SOURCE_UNUSABLE",
    );
    let missing = secrets.path().join("missing");
    let reply = record(ferry.post(
        "/api/v2/changefeeds",
        &changefeed(
            "x",
            &source.uri("shop"),
            &bare(
                &target,
                "analytics",
                &format!("?password_file={}", missing.display()),
            ),
            "public.t_down",
        ),
    ));
    refused(&reply, 400, "SECRET_UNAVAILABLE");
    let message = reply.1["error_msg"].as_str().unwrap();
    assert!(
        message.starts_with("sink_uri: cannot read password_file") && message.contains("missing"),
        "{message}"
    );
    let reply = record(ferry.post(
        "/api/v2/sources",
        &json!({"name": "nope", "uri": bare(&source, "shop", "?password_env=FERRY_TEST_UNSET")}),
    ));
    refused(&reply, 400, "SECRET_UNAVAILABLE");
    assert!(
        reply.1["error_msg"]
            .as_str()
            .unwrap()
            .contains("FERRY_TEST_UNSET"),
        "{}",
        reply.1
    );

    // Every working changefeed syncs; the password_file one also streams.
    for id in ["userinfo", "query", "file", "env", "named"] {
        wait_for(&format!("{id} synced"), MINUTE, || {
            ferry.get(&format!("/api/v2/changefeeds/{id}/synced")).1["synced"] == json!(true)
        });
    }
    source.psql(
        "shop",
        "INSERT INTO t_file VALUES (1000, 'streamed'); UPDATE t_file SET v = 'x' WHERE id = 1;",
    );
    wait_for("t_file streamed", MINUTE, || {
        dump(&source, "shop", "t_file") == dump(&target, "analytics", "t_file")
    });
    for (id, cause) in [
        ("down", "?password=***: error connecting to server"),
        ("wrongpw", "password authentication failed"),
    ] {
        wait_for(&format!("{id} reports its failure"), MINUTE, || {
            let status = ferry.get(&format!("/api/v2/changefeeds/{id}/status")).1;
            [&status["last_warning"], &status["last_error"]]
                .iter()
                .any(|m| m.as_str().is_some_and(|m| m.contains(cause)))
        });
    }

    // A password_file that disappears: a definite failure naming the file.
    created(record(ferry.post(
        "/api/v2/changefeeds",
        &json!({"id": "vanishing", "start": false, "tables": ["public.t_down"],
                "source_uri": bare(&source, "shop", &file_ref),
                "sink_uri": target.uri("analytics")}),
    )));
    std::fs::rename(&password_file, secrets.path().join("moved")).unwrap();
    record(ferry.post("/api/v2/changefeeds/vanishing/resume", &json!({})));
    wait_for("vanishing fails", MINUTE, || {
        ferry.get("/api/v2/changefeeds/vanishing/status").1["state"] == json!("failed")
    });
    let status = ferry.get("/api/v2/changefeeds/vanishing/status").1;
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "cannot read password_file {}",
            password_file.display()
        )),
        "{status}"
    );
    std::fs::rename(secrets.path().join("moved"), &password_file).unwrap();
    record(ferry.post("/api/v2/changefeeds/vanishing/resume", &json!({})));
    wait_for("vanishing runs again once the file is back", MINUTE, || {
        let status = ferry.get("/api/v2/changefeeds/vanishing/status").1;
        status["state"] == json!("running") && status["phase"] == json!("streaming")
    });

    // Every read of the API.
    let mut paths: Vec<String> = [
        "/api/v2/changefeeds",
        "/api/v2/sources",
        "/api/v2/sources/shop",
        "/api/v2/sources/shop/status",
        "/api/v2/status",
        "/metrics",
    ]
    .map(String::from)
    .to_vec();
    let ids = [
        "userinfo",
        "query",
        "file",
        "env",
        "named",
        "down",
        "wrongpw",
        "vanishing",
    ];
    for id in ids {
        for suffix in ["", "/status", "/synced", "/history"] {
            paths.push(format!("/api/v2/changefeeds/{id}{suffix}"));
        }
    }
    for path in &paths {
        let (code, body) = record(ferry.get(path));
        assert!(code == 200, "{path}: {code} {body}");
    }
    let query = ferry.get("/api/v2/changefeeds/query").1;
    assert_eq!(
        query["config"]["sink_uri"],
        json!(bare(&target, "analytics", "?sslmode=disable&password=***"))
    );
    let file = ferry.get("/api/v2/changefeeds/file").1;
    assert_eq!(
        file["config"]["source_uri"],
        json!(bare(&source, "shop", &file_ref))
    );

    // The CLI, in every output format.
    let mut cli_output = String::new();
    for args in [
        &["changefeed", "list"][..],
        &["changefeed", "list", "-o", "json"],
        &["source", "list"],
        &["source", "get", "shop"],
        &["source", "status", "shop"],
    ]
    .into_iter()
    .map(<[&str]>::to_vec)
    .chain(ids.into_iter().flat_map(|id| {
        [
            vec!["changefeed", "get", id],
            vec!["changefeed", "get", id, "-o", "json"],
            vec!["changefeed", "status", id],
            vec!["changefeed", "status", id, "-o", "json"],
            vec!["changefeed", "history", id, "-o", "json"],
        ]
    })) {
        let output = Command::new(binary())
            .args(&args)
            .env("FERRY_SERVER", ferry.url())
            .env_remove("FERRY_NAMESPACE")
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        cli_output.push_str(&String::from_utf8_lossy(&output.stdout));
        cli_output.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    assert!(cli_output.contains("password=***"), "{cli_output}");

    // Search everything for the sentinel.
    let responses = responses.join("\n");
    assert!(
        responses.contains("***"),
        "masked, not dropped: {responses}"
    );
    ferry.stop();
    let log = ferry.log();
    let store = std::fs::read(ferry.data_dir().join("meta.redb")).unwrap();
    for (what, text) in [
        ("API responses", responses.as_str()),
        ("CLI output", cli_output.as_str()),
        ("server log", log.as_str()),
        ("store file", &String::from_utf8_lossy(&store)),
    ] {
        assert_eq!(
            text.matches(SENTINEL).count(),
            0,
            "{what} shows the password"
        );
    }
    assert!(
        log.contains("password=***"),
        "the log does quote masked URIs: {log}"
    );

    // File modes.
    let data_dir = ferry.data_dir();
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&data_dir.join("meta.redb")), 0o600);
    let key_file = data_dir.with_file_name("data.secret-key");
    assert_eq!(mode(&key_file), 0o600);
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

/// The key file beside the data directory: generated once with mode 0600; a wrong key, a
/// lost key and a key readable by others each stop the server at startup with a clear
/// message, and nothing is generated over a lost key.
#[test]
fn the_secret_key_guards_the_store() {
    let mut ferry = FerryServer::start(binary());
    ferry.stop();
    assert!(
        ferry.log().contains("generated a new secret key"),
        "{}",
        ferry.log()
    );
    let data_dir = ferry.data_dir();
    let key_file = data_dir.with_file_name("data.secret-key");
    assert_eq!(mode(&key_file), 0o600);
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(key.trim().len(), 64, "64 hexadecimal digits");

    let start = |key: &Path| {
        Command::new(binary())
            .args(["server", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .arg("--secret-key-file")
            .arg(key)
            .env_remove("FERRY_SECRET_KEY_FILE")
            .output()
            .unwrap()
    };
    let other = data_dir.with_file_name("other.key");
    std::fs::write(&other, format!("{}\n", "0f".repeat(32))).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let lost = data_dir.with_file_name("lost.key");
    std::fs::copy(&key_file, data_dir.with_file_name("backup.key")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (key, expected) in [
        (&other, "does not decrypt the metadata store"),
        (&lost, "restore the key file from your backup"),
        (&key_file, "run chmod 600 on it"),
    ] {
        let output = start(key);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains(&key.display().to_string()), "{stderr}");
    }
    assert!(!lost.exists(), "no key is generated over a sealed store");

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    ferry.restart();
    ferry.stop();
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key, "kept");
}
