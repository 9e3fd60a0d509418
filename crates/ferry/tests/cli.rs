//! The CLI client (`ferry changefeed …`, `ferry source …`) run as a process against a real
//! `ferry server` and real PostgreSQL clusters: every command's success path, its failure
//! paths with their exit codes (docs/cli.md), and passwords that never reach the terminal.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::{FerryServer, PgCluster, PgOptions};
use serde_json::Value;

/// The password of every cluster here; no command may print it.
const SECRET: &str = "cli-s3cret-Pw";

/// Exit codes, as docs/cli.md lists them.
const USAGE: i32 = 2;
const UNREACHABLE: i32 = 3;
const NOT_FOUND: i32 = 4;
const CONFLICT: i32 = 5;
const REJECTED: i32 = 6;
const CHECK_FAILED: i32 = 8;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

fn cluster() -> PgCluster {
    PgCluster::start_with(PgOptions {
        password: Some(SECRET.into()),
        ..Default::default()
    })
}

/// The CLI pointed at one server, with a scratch directory for files.
struct Cli {
    server: String,
    dir: tempfile::TempDir,
}

/// One finished command.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert!(
            !run.stdout.contains(SECRET) && !run.stderr.contains(SECRET),
            "a password was printed: {run:?}"
        );
        run
    }

    /// Asserts success; returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        &self.stdout
    }

    /// Asserts the exit code and that stderr mentions `text`.
    fn fails(&self, code: i32, text: &str) {
        assert_eq!(self.code, code, "expected exit {code}: {self:?}");
        assert!(
            self.stderr.contains(text),
            "expected {text:?} on stderr: {self:?}"
        );
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

impl Cli {
    fn new(server: &FerryServer) -> Cli {
        Cli {
            server: server.url(),
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .args(args)
            .env("FERRY_SERVER", &self.server)
            .env_remove("FERRY_NAMESPACE")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run ferry"))
    }

    /// Writes a file in the scratch directory; returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path: PathBuf = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a file");
        path.display().to_string()
    }

    /// Polls `ferry changefeed synced ID` until it exits 0.
    fn wait_synced(&self, id: &str, namespace: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let run = self.run(&["changefeed", "synced", id, "-n", namespace]);
            if run.code == 0 {
                assert!(run.stdout.starts_with("synced"), "{run:?}");
                return;
            }
            assert_eq!(run.code, 9, "synced exits 9 while not synced: {run:?}");
            assert!(Instant::now() < deadline, "not synced in time: {run:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Whether a `key  value` summary (as `status` prints) has that line.
fn has_field(text: &str, key: &str, value: &str) -> bool {
    text.lines().any(|line| {
        line.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(' ') && rest.trim() == value)
    })
}

#[test]
fn changefeed_lifecycle_through_the_cli() {
    let (source, target) = std::thread::scope(|s| {
        let a = s.spawn(cluster);
        let b = s.spawn(cluster);
        (a.join().unwrap(), b.join().unwrap())
    });
    source.create_database("shop");
    target.create_database("analytics");
    source.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, item text);
         CREATE TABLE audit_log (at timestamptz DEFAULT now(), msg text);
         INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 1000) g;
         INSERT INTO audit_log (msg) VALUES ('created');",
    );
    let ferry = FerryServer::start(binary());
    let cli = Cli::new(&ferry);
    let cf = cli.file(
        "cf.yaml",
        &format!(
            "id: orders\nsource_uri: {}\nsink_uri: {}\ntables: ['public.*']\n\
             options: {{batch_max_rows: 1000}}\n",
            source.uri("shop"),
            target.uri("analytics")
        ),
    );

    // check: valid, with a warning for the table without a key; then a missing table.
    let checked = cli.run(&["changefeed", "check", "-f", &cf]);
    let text = checked.ok();
    assert!(text.contains("warning: public.audit_log"), "{text}");
    assert!(text.contains("public.orders"), "{text}");
    assert!(text.contains("ok: 0 error(s)"), "{text}");
    let missing = cli.run(&[
        "changefeed",
        "check",
        "-f",
        &cf,
        "--tables",
        "public.orders,public.nope",
    ]);
    assert_eq!(missing.code, CHECK_FAILED, "{missing:?}");
    assert!(
        missing.stdout.contains("no table public.nope"),
        "{missing:?}"
    );
    // check runs create's target checks too: here the sink is the source by another name.
    let itself = source.uri("shop").replace("127.0.0.1", "localhost");
    let looped = cli.run(&["changefeed", "check", "-f", &cf, "--sink-uri", &itself]);
    assert_eq!(looped.code, CHECK_FAILED, "{looped:?}");
    assert!(looped.stdout.contains("SINK_IS_SOURCE"), "{looped:?}");

    // create, and create again.
    let created = cli.run(&["changefeed", "create", "-f", &cf]);
    assert!(
        created.ok().contains("changefeed default/orders created"),
        "{created:?}"
    );
    cli.run(&["changefeed", "create", "-f", &cf])
        .fails(CONFLICT, "CHANGEFEED_ALREADY_EXISTS");
    let again = cli.run(&["changefeed", "check", "-f", &cf]);
    assert!(again.ok().contains("exists"), "{again:?}");
    cli.wait_synced("orders", "default");

    // list, status in every format.
    let listed = cli.run(&["changefeed", "list"]);
    let table = listed.ok();
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("orders") && table.contains("running"),
        "{table}"
    );
    assert_eq!(
        cli.run(&["changefeed", "list", "-o", "json"]).json()["total"],
        1
    );
    let paused_list = cli.run(&["changefeed", "list", "--state", "paused", "-o", "json"]);
    assert_eq!(paused_list.json()["total"], 0);
    let status = cli.run(&["changefeed", "status", "orders"]);
    assert!(has_field(status.ok(), "state", "running"), "{status:?}");
    assert!(status.stdout.contains("public.orders"), "{status:?}");
    let yaml: Value = yaml_serde::from_str(
        cli.run(&["changefeed", "status", "orders", "-o", "yaml"])
            .ok(),
    )
    .expect("status -o yaml is YAML");
    assert_eq!(yaml["phase"], "streaming");

    // get → edit → update: refused while running, accepted once paused.
    let edited = cli.dir.path().join("edited.yaml");
    let edited_path = edited.display().to_string();
    cli.run(&["changefeed", "get", "orders", "--output-file", &edited_path])
        .ok();
    let shown = std::fs::read_to_string(&edited).unwrap();
    assert!(
        shown.contains("id: orders") && shown.contains(":***@"),
        "{shown}"
    );
    assert!(!shown.contains(SECRET), "{shown}");
    std::fs::write(
        &edited,
        shown.replace("batch_max_rows: 1000", "batch_max_rows: 500"),
    )
    .unwrap();
    let refused = cli.run(&["changefeed", "update", "orders", "-f", &edited_path]);
    refused.fails(CONFLICT, "CHANGEFEED_RUNNING");
    assert!(
        refused
            .stderr
            .contains("hint: `ferry changefeed pause orders`"),
        "{refused:?}"
    );
    let paused = cli.run(&["changefeed", "pause", "orders"]);
    assert!(paused.ok().contains("paused"), "{paused:?}");
    assert_eq!(
        cli.run(&["changefeed", "list", "--state", "paused", "-o", "json"])
            .json()["total"],
        1
    );
    let updated = cli.run(&["changefeed", "update", "orders", "-f", &edited_path]);
    assert!(updated.ok().contains("updated"), "{updated:?}");
    let config = cli
        .run(&["changefeed", "get", "orders", "-o", "json"])
        .json();
    assert_eq!(config["options"]["batch_max_rows"], 500, "{config}");
    let unchanged = cli.run(&["changefeed", "update", "orders", "-f", &edited_path]);
    unchanged.ok();
    assert!(
        unchanged.stderr.contains("nothing to change"),
        "{unchanged:?}"
    );

    // resume: a malformed position is refused locally; then resume and stream more rows
    // (which also shows the stored passwords survived the update).
    cli.run(&[
        "changefeed",
        "resume",
        "orders",
        "--overwrite-checkpoint-position",
        "yesterday",
    ])
    .fails(REJECTED, "INVALID_POSITION");
    let resumed = cli.run(&["changefeed", "resume", "orders"]);
    assert!(resumed.ok().contains("resumed"), "{resumed:?}");
    source.psql(
        "shop",
        "INSERT INTO orders SELECT g, 'more ' || g FROM generate_series(1001, 1100) g",
    );
    cli.wait_synced("orders", "default");
    assert_eq!(
        target.psql("analytics", "SELECT count(*) FROM orders"),
        "1100"
    );

    // status --watch prints plain lines when stdout is not a terminal.
    let mut watch = cli
        .command(&[
            "changefeed",
            "status",
            "orders",
            "--watch",
            "--interval",
            "100ms",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn status --watch");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let line = lines.next().expect("a line").expect("readable");
        assert!(line.starts_with("state=running phase=streaming"), "{line}");
        assert!(!line.contains(SECRET));
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
    // On a terminal: progress bars, and Ctrl-C (SIGINT) ends the view with exit 0.
    let command = format!(
        "timeout --preserve-status -s INT 2 {} changefeed status orders --watch --interval 200ms --server {}",
        binary().display(),
        cli.server
    );
    let bars = Run::from(
        Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("script(1) from util-linux"),
    );
    let tail: String = bars
        .stdout
        .chars()
        .rev()
        .take(600)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert_eq!(bars.code, 0, "…{tail}");
    assert!(
        tail.contains("public.orders") && tail.contains("1000/1000") && tail.contains("100%"),
        "…{tail}"
    );

    // delete: refused without --yes off a terminal; then gone, and idempotent.
    cli.run(&["changefeed", "delete", "orders"])
        .fails(USAGE, "refusing without --yes");
    let deleted = cli.run(&["changefeed", "delete", "orders", "--yes"]);
    assert!(deleted.ok().contains("deleted"), "{deleted:?}");
    cli.run(&["changefeed", "get", "orders"])
        .fails(NOT_FOUND, "CHANGEFEED_NOT_FOUND");
    let twice = cli.run(&["changefeed", "delete", "orders", "--yes"]);
    assert!(twice.ok().contains("did not exist"), "{twice:?}");
    assert_eq!(
        source.psql("shop", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}

#[test]
fn sources_namespaces_and_flags() {
    let source = cluster();
    source.create_database("shop");
    source.psql("shop", "CREATE TABLE t (id int PRIMARY KEY)");
    let ferry = FerryServer::start(binary());
    let cli = Cli::new(&ferry);
    let uri = source.uri("shop");

    let created = cli.run(&["source", "create", "--name", "shop-db", "--uri", &uri]);
    assert!(
        created.ok().contains("source default/shop-db created"),
        "{created:?}"
    );
    cli.run(&["source", "create", "--name", "shop-db", "--uri", &uri])
        .fails(CONFLICT, "SOURCE_ALREADY_EXISTS");
    let status = cli.run(&["source", "status", "shop-db"]);
    assert!(has_field(status.ok(), "usable", "true"), "{status:?}");
    // The test cluster has no SSL: the default sslmode=prefer falls back to plain.
    assert!(
        has_field(status.ok(), "connection", "not encrypted"),
        "{status:?}"
    );

    // A changefeed on the named source, created stopped with flags only.
    let cf = cli.run(&[
        "changefeed",
        "create",
        "--id",
        "via-source",
        "--source",
        "shop-db",
        "--sink-uri",
        "blackhole://",
        "--tables",
        "public.t",
        "--start=false",
    ]);
    assert!(cf.ok().contains("(stopped)"), "{cf:?}");
    cli.run(&["changefeed", "pause", "via-source"])
        .fails(CONFLICT, "CHANGEFEED_NOT_RUNNING");
    let shown = cli.run(&["changefeed", "get", "via-source"]);
    assert!(shown.ok().contains("source: shop-db"), "{shown:?}");
    let listed = cli.run(&["source", "list"]);
    let table = listed.ok();
    assert!(table.starts_with("NAME "), "{table}");
    assert!(
        table.contains("shop-db") && table.contains(":***@") && table.contains("via-source"),
        "{table}"
    );
    cli.run(&["source", "delete", "shop-db", "--yes"])
        .fails(CONFLICT, "SOURCE_IN_USE");

    // get → update without edits changes nothing.
    let file = cli.dir.path().join("source.yaml").display().to_string();
    cli.run(&["source", "get", "shop-db", "--output-file", &file])
        .ok();
    let unchanged = cli.run(&["source", "update", "shop-db", "-f", &file]);
    unchanged.ok();
    assert!(
        unchanged.stderr.contains("nothing to change"),
        "{unchanged:?}"
    );

    // Namespaces: from the flag (before or after the resource) or from the file.
    let other = cli.run(&["changefeed", "list", "-n", "team-a", "-o", "json"]);
    assert_eq!(other.json()["total"], 0);
    cli.run(&["--namespace", "team-a", "changefeed", "get", "via-source"])
        .fails(NOT_FOUND, "CHANGEFEED_NOT_FOUND");
    let in_team = cli.file(
        "team.yaml",
        &format!(
            "id: via-source\nnamespace: team-a\nsource_uri: {uri}\nsink_uri: blackhole://\n\
             tables: [public.t]\nstart: false\n"
        ),
    );
    let created = cli.run(&["changefeed", "create", "-f", &in_team]);
    assert!(
        created.ok().contains("team-a/via-source created"),
        "{created:?}"
    );
    assert_eq!(
        cli.run(&["changefeed", "list", "-n", "team-a", "-o", "json"])
            .json()["total"],
        1
    );
    cli.run(&["changefeed", "create", "-f", &in_team, "-n", "team-b"])
        .fails(USAGE, "namespace \"team-a\"");

    // check against an unknown source.
    let unknown = cli.run(&[
        "changefeed",
        "check",
        "--id",
        "x",
        "--source",
        "nope",
        "--sink-uri",
        "blackhole://",
    ]);
    assert_eq!(unknown.code, CHECK_FAILED, "{unknown:?}");
    assert!(unknown.stdout.contains("UNKNOWN_SOURCE"), "{unknown:?}");

    for (namespace, id) in [("default", "via-source"), ("team-a", "via-source")] {
        cli.run(&["changefeed", "delete", id, "--yes", "-n", namespace])
            .ok();
    }
    let deleted = cli.run(&["source", "delete", "shop-db", "--yes"]);
    assert!(deleted.ok().contains("deleted"), "{deleted:?}");
    cli.run(&["source", "get", "shop-db"])
        .fails(NOT_FOUND, "SOURCE_NOT_FOUND");
}

#[test]
fn failures_have_distinct_exit_codes_and_never_print_passwords() {
    let ferry = FerryServer::start(binary());
    let cli = Cli::new(&ferry);

    // No server / a bad server URL.
    cli.run(&["changefeed", "list", "--server", "http://127.0.0.1:1"])
        .fails(UNREACHABLE, "cannot reach the ferry server");
    cli.run(&["changefeed", "list", "--server", "localhost:8300"])
        .fails(USAGE, "expected http://HOST:PORT");

    // Unknown names.
    for args in [
        &["changefeed", "get", "nope"][..],
        &["changefeed", "status", "nope"],
        &["changefeed", "synced", "nope"],
        &["changefeed", "pause", "nope"],
        &[
            "changefeed",
            "resume",
            "nope",
            "--overwrite-checkpoint-position",
            "0/1",
        ],
    ] {
        cli.run(args).fails(NOT_FOUND, "CHANGEFEED_NOT_FOUND");
    }
    cli.run(&["source", "get", "nope"])
        .fails(NOT_FOUND, "SOURCE_NOT_FOUND");

    // Refused by the server: an unreachable source (its password must not show).
    let unreachable_source = format!("postgres://app:{SECRET}@127.0.0.1:1/shop");
    cli.run(&[
        "changefeed",
        "create",
        "--id",
        "x",
        "--source-uri",
        &unreachable_source,
        "--sink-uri",
        "blackhole://",
    ])
    .fails(REJECTED, "SOURCE_UNUSABLE");
    cli.run(&["changefeed", "list", "--state", "sleeping"])
        .fails(REJECTED, "INVALID_PARAMETER");

    // Refused locally, before any request.
    let bad = cli.run(&[
        "changefeed",
        "create",
        "--id=-bad",
        "--source-uri",
        &format!("oracle://app:{SECRET}@h/db"),
        "--sink-uri",
        &format!("amqp://app:{SECRET}@h:5672/t"),
    ]);
    bad.fails(USAGE, "id:");
    assert!(
        bad.stderr.contains("source_uri:") && bad.stderr.contains("sink_uri:"),
        "{bad:?}"
    );
    let unknown_key = cli.file("unknown.yaml", "id: x\nsink: blackhole://\n");
    cli.run(&["changefeed", "create", "-f", &unknown_key])
        .fails(USAGE, "unknown field `sink`");
    let wrong_type = cli.file(
        "wrong.yaml",
        &format!("id: x\ntables: postgres://app:{SECRET}@h/db\n"),
    );
    cli.run(&["changefeed", "create", "-f", &wrong_type])
        .fails(USAGE, "wrong.yaml");
    let masked = cli.file(
        "masked.yaml",
        "id: x\nsource_uri: postgres://app:***@h/db\nsink_uri: blackhole://\n",
    );
    cli.run(&["changefeed", "create", "-f", &masked])
        .fails(USAGE, "the password is the mask");
    cli.run(&["changefeed", "create", "-f", "/nonexistent/cf.yaml"])
        .fails(USAGE, "cannot read");
    cli.run(&["changefeed", "list", "-o", "xml"])
        .fails(USAGE, "invalid value 'xml'");

    // A file from stdin works too.
    let mut child = cli
        .command(&["changefeed", "check", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"id: x\nsink_uri: blackhole://\n")
        .unwrap();
    let from_stdin = Run::from(child.wait_with_output().unwrap());
    assert_eq!(from_stdin.code, CHECK_FAILED, "{from_stdin:?}");
    assert!(
        from_stdin.stdout.contains("source_uri is required"),
        "{from_stdin:?}"
    );
}

/// On a terminal `delete` asks; "n" aborts with exit 10 before any request, "y" goes on
/// (here to a server that is not there: exit 3). `script` (util-linux) provides the terminal.
#[test]
fn delete_asks_for_confirmation_on_a_terminal() {
    let ask = |answer: &str| {
        let command = format!(
            "{} changefeed delete orders --server http://127.0.0.1:1",
            binary().display()
        );
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script(1) from util-linux");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{answer}\n").as_bytes())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    };
    let no = ask("n");
    assert_eq!(no.code, 10, "{no:?}");
    assert!(
        no.stdout.contains("delete changefeed default/orders"),
        "{no:?}"
    );
    assert!(no.stdout.contains("aborted"), "{no:?}");
    let yes = ask("y");
    assert_eq!(yes.code, UNREACHABLE, "{yes:?}");
}
