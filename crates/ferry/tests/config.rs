//! `ferry server` configuration: defaults → file (TOML or YAML) → `FERRY_*` environment →
//! flags, unknown keys and bad values refused with exit code 2 and the key's name, and the
//! limits reaching the engine of a real server.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::PgCluster;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

/// `ferry ARGS` with no `FERRY_*` variable but `env`.
fn ferry(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary());
    command.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("FERRY_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = ferry(args, env).output().expect("run ferry");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn layers_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("ferry.toml");
    std::fs::write(
        &toml,
        "addr = \"127.0.0.1:9001\"\nmax_changefeeds = 7\nmax_name_length = 20\n\
         [log]\nformat = \"json\"\n[retry]\nmax_backoff = \"2m\"\n",
    )
    .unwrap();
    let (code, out, err) = run(
        &[
            "server",
            "--config",
            toml.to_str().unwrap(),
            "--retry-max-backoff",
            "3m",
            "--print-config",
        ],
        &[
            ("FERRY_MAX_CHANGEFEEDS", "8"),
            ("FERRY_RETRY_MAX_BACKOFF", "90s"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    for line in [
        "addr = \"127.0.0.1:9001\"",   // file over default
        "max_changefeeds = 8",         // env over file
        "max_backoff = \"3m\"",        // flag over env
        "max_name_length = 20",        // file
        "format = \"json\"",           // file
        "initial_backoff = \"1s\"",    // default
        "data_dir = \"./ferry-data\"", // default
        "cpu_scheduling = \"batch\"",  // default
    ] {
        assert!(out.contains(line), "{line} in:\n{out}");
    }

    // FERRY_CONFIG names the file; YAML by extension.
    let yaml = dir.path().join("ferry.yml");
    std::fs::write(&yaml, "max_changefeeds: 3\nretry:\n  give_up_after: 1h\n").unwrap();
    let (code, out, err) = run(
        &["server", "--print-config"],
        &[("FERRY_CONFIG", yaml.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("max_changefeeds = 3") && out.contains("give_up_after = \"1h\""),
        "{out}"
    );
    let (code, out, err) = run(
        &["server", "--cpu-scheduling", "normal", "--print-config"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cpu_scheduling = \"normal\""), "{out}");
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cases = [
        (
            file("a.toml", "adress = \"x\"\n"),
            vec![],
            "unknown field `adress`",
        ),
        (
            file("b.toml", "[retry]\nbackof = \"1s\"\n"),
            vec![],
            "unknown field `backof`",
        ),
        (
            file("c.yaml", "log:\n  colour: true\n"),
            vec![],
            "unknown field `colour`",
        ),
        (file("d.ini", "addr = 1\n"), vec![], "unknown format"),
        (
            file(
                "e.toml",
                "[retry]\ninitial_backoff = \"2m\"\nmax_backoff = \"1m\"\n",
            ),
            vec![],
            "retry.max_backoff must be >= retry.initial_backoff",
        ),
        (
            file("f.toml", "max_changefeeds = \"many\"\n"),
            vec![],
            "max_changefeeds",
        ),
        (
            file("g.toml", ""),
            vec![("FERRY_ADDR", "nowhere")],
            "environment variable FERRY_ADDR",
        ),
        (
            file("h.toml", ""),
            vec![("FERRY_MAX_NAME_LENGTH", "500")],
            "max_name_length must be between 1 and 128",
        ),
        (
            file("i.toml", "cpu_scheduling = \"realtime\"\n"),
            vec![],
            "unknown variant `realtime`",
        ),
        (
            file("j.toml", ""),
            vec![("FERRY_CPU_SCHEDULING", "fast")],
            "unknown CPU scheduling \"fast\": use batch or normal",
        ),
    ];
    for (path, env, expected) in cases {
        let (code, _, err) = run(&["server", "--config", &path, "--print-config"], &env);
        assert_eq!(code, 2, "{path}: {err}");
        assert!(
            err.contains(expected),
            "{path}: expected {expected:?} in {err}"
        );
    }
    let (code, _, err) = run(&["server", "--config", "/nonexistent.toml"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read the configuration file"), "{err}");
    let (code, _, err) = run(&["server", "--log-format", "xml", "--print-config"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("flag --log-format"), "{err}");
}

/// A server process started from a configuration file; killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn limits_from_the_file_reach_the_engine() {
    let source = PgCluster::start();
    source.create_database("shop");
    source.psql("shop", "CREATE TABLE t (id int PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let config = dir.path().join("ferry.yaml");
    std::fs::write(
        &config,
        format!(
            "addr: 127.0.0.1:{port}\ndata_dir: {}\nmax_changefeeds: 1\nmax_name_length: 12\n\
             log:\n  level: info\n  format: json\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let server_process = ferry(
        &["server", "--config", config.to_str().unwrap()],
        &[("FERRY_NODE_ID", "node-7")],
    )
    .stderr(log)
    .spawn()
    .expect("spawn ferry server");
    let pid = server_process.id();
    let _server = Server(server_process);
    let server = format!("http://127.0.0.1:{port}");
    let client = |args: &[&str]| {
        let mut all = vec!["--server", server.as_str()];
        all.extend_from_slice(args);
        run(&all, &[])
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while client(&["changefeed", "list"]).0 != 0 {
        assert!(
            Instant::now() < deadline,
            "server did not start: {}",
            std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let uri = source.uri("shop");
    let create = |id: &str| {
        client(&[
            "changefeed",
            "create",
            "--id",
            id,
            "--source-uri",
            &uri,
            "--sink-uri",
            "blackhole://",
            "--start=false",
        ])
    };
    let (code, _, err) = create("name-of-13-ch");
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("INVALID_CONFIG") && err.contains("at most 12"),
        "{err}"
    );
    let (code, out, err) = create("first");
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = create("second");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("CHANGEFEED_LIMIT_REACHED"), "{err}");

    // FERRY_NODE_ID reaches the API.
    let status = http_get(port, "/api/v2/status");
    assert!(status.contains("\"node_id\":\"node-7\""), "{status}");

    // cpu_scheduling's default reaches every thread of the running server.
    let policies = thread_policies(pid);
    assert!(
        policies.len() > 1 && policies.iter().all(|&p| p == SCHED_BATCH),
        "{policies:?}"
    );

    // log.format = json from the file: every log line is a JSON object.
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let first = log.lines().next().expect("the server logged");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "{first}"
    );
}

/// Linux's number for `SCHED_BATCH`.
const SCHED_BATCH: u32 = 3;

/// The scheduling policy of each thread of process `pid` (`/proc/PID/task/*/stat`, field 41).
fn thread_policies(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| {
            let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
            // The fields after the command's closing parenthesis start at field 3.
            let after_command = &stat[stat.rfind(')').unwrap() + 2..];
            after_command
                .split(' ')
                .nth(41 - 3)
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// `GET path` on the loopback port: the raw response (head and body).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
