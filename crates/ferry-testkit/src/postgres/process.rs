//! The PostgreSQL server process: `initdb`, start on a free port, readiness, shutdown.
//!
//! ```text
//! temp dir (0700, owned by the server account)
//! ├── data/                 initdb output; postgresql.conf includes ferry_testkit.conf
//! ├── postgres.log          server stdout + stderr (logging_collector=off)
//! └── .s.PGSQL.<port>       the Unix socket, private to this cluster
//! ```
//!
//! # Ports
//!
//! A free port is found by binding `127.0.0.1:0` and closing the listener; another process
//! can take the port before the server binds it, which is likely when many test processes
//! start clusters at once. The server then exits with "could not create any TCP/IP sockets",
//! and the start is retried on a new port, up to [`START_ATTEMPTS`] times.
//!
//! # Readiness
//!
//! Like `pg_ctl -w`, the server counts as up when `postmaster.pid` names our child process
//! and its status line says `ready`. Checking the pid rules out a different server that holds
//! the same port.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::config::{
    hba_conf, server_conf, ServerTls, CLIENT_CA_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE,
    TESTKIT_CONF_FILE,
};
use super::SUPERUSER;
use crate::server_user::ServerUser;

/// Start attempts before giving up; each failed one lost its port to another process.
const START_ATTEMPTS: u32 = 5;

/// How long a starting server may take to accept connections; generous for loaded CI machines.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a fast shutdown (SIGINT) may take before the server is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Delay between two checks of a starting or stopping server.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Name of the server log file in the cluster's temp dir.
pub(super) const LOG_FILE: &str = "postgres.log";

/// Creates a cluster in `data_dir` with `initdb`, owned by the `ferry` superuser.
pub(super) fn initdb(
    bin_dir: &Path,
    root: &Path,
    data_dir: &Path,
    password: Option<&str>,
    user: Option<&ServerUser>,
) {
    let mut command = server_command(bin_dir, "initdb", root, user);
    command.arg("-D").arg(data_dir).args([
        "-U",
        SUPERUSER,
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]);
    let pwfile = root.join("pwfile");
    match password {
        None => {
            command.arg("--auth=trust");
        }
        Some(password) => {
            write_server_file(&pwfile, password, user);
            command
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["--auth-host=scram-sha-256", "--auth-local=trust"]);
        }
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {}/initdb: {e}", bin_dir.display()));
    let _ = fs::remove_file(&pwfile);
    if !output.status.success() {
        panic!(
            "initdb failed ({}){}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            user.map(|u| format!(
                " running as `{}`, who must be able to reach {}",
                u.name(),
                root.display()
            ))
            .unwrap_or_default(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

/// Points `postgresql.conf` at the testkit's settings file and replaces `pg_hba.conf`.
pub(super) fn configure(
    data_dir: &Path,
    password_required: bool,
    tls: Option<&ServerTls>,
    user: Option<&ServerUser>,
) {
    let conf_path = data_dir.join("postgresql.conf");
    let mut conf = OpenOptions::new()
        .append(true)
        .open(&conf_path)
        .unwrap_or_else(|e| panic!("could not open {}: {e}", conf_path.display()));
    writeln!(conf, "\ninclude '{TESTKIT_CONF_FILE}'")
        .unwrap_or_else(|e| panic!("could not write {}: {e}", conf_path.display()));
    write_server_file(
        &data_dir.join("pg_hba.conf"),
        &hba_conf(
            password_required,
            tls.is_some_and(|t| t.hostssl_only),
            tls.is_some_and(|t| t.hostssl_only && t.client_ca_pem.is_some()),
        ),
        user,
    );
    if let Some(tls) = tls {
        write_server_file(&data_dir.join(SERVER_CERT_FILE), &tls.cert_pem, user);
        if let Some(ca) = &tls.client_ca_pem {
            write_server_file(&data_dir.join(CLIENT_CA_FILE), ca, user);
        }
        let key = data_dir.join(SERVER_KEY_FILE);
        write_server_file(&key, &tls.key_pem, user);
        // PostgreSQL refuses a key file others can read.
        fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("could not chmod {}: {e}", key.display()));
    }
}

/// Starts `postgres -D data_dir` and waits until it accepts connections: on `port` when
/// given (a restart keeps its port, so clients' URIs stay valid), else on a free port.
///
/// Returns the running child and its port; panics with the server log if it does not come up.
pub(super) fn start(
    bin_dir: &Path,
    root: &Path,
    data_dir: &Path,
    extra_conf: &[(String, String)],
    user: Option<&ServerUser>,
    port: Option<u16>,
) -> (Child, u16) {
    let log_path = root.join(LOG_FILE);
    let mut attempt = 1;
    loop {
        let fixed_port = port;
        let port = fixed_port.unwrap_or_else(free_loopback_port);
        let conf = server_conf(port, root, extra_conf);
        write_server_file(&data_dir.join(TESTKIT_CONF_FILE), &conf, user);

        // A restart (fixed port) appends, so its log follows the crashed server's.
        let log = OpenOptions::new()
            .create(true)
            .write(true)
            .append(fixed_port.is_some())
            .truncate(fixed_port.is_none())
            .open(&log_path)
            .unwrap_or_else(|e| panic!("could not create {}: {e}", log_path.display()));
        let log_for_stderr = log
            .try_clone()
            .expect("a freshly created file can be duplicated");
        let mut command = server_command(bin_dir, "postgres", root, user);
        command
            .arg("-D")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}/postgres: {e}", bin_dir.display()));

        match wait_ready(&mut child, data_dir) {
            Startup::Ready => return (child, port),
            Startup::Exited(status) => {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                if lost_port(&log) && fixed_port.is_none() && attempt < START_ATTEMPTS {
                    attempt += 1;
                    continue;
                }
                panic!("postgres exited during startup ({status}) on port {port}; log:\n{log}");
            }
            Startup::TimedOut => {
                stop(&mut child);
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                panic!(
                    "postgres did not accept connections within {READY_TIMEOUT:?} on port \
                     {port}; log:\n{log}"
                );
            }
        }
    }
}

/// Fast shutdown: SIGINT, then SIGKILL if the server is still up after [`SHUTDOWN_TIMEOUT`].
pub(super) fn stop(child: &mut Child) {
    signal_and_wait(child, libc::SIGINT);
}

/// Immediate shutdown, what `pg_ctl -m immediate stop` does: SIGQUIT, so the server exits
/// without a checkpoint and without flushing anything, like a crash; the next start runs
/// crash recovery. SIGKILL after [`SHUTDOWN_TIMEOUT`].
pub(super) fn stop_immediate(child: &mut Child) {
    signal_and_wait(child, libc::SIGQUIT);
}

/// Sends `signal` to a running server and waits for it to exit; SIGKILL after
/// [`SHUTDOWN_TIMEOUT`].
fn signal_and_wait(child: &mut Child, signal: libc::c_int) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let pid = libc::pid_t::try_from(child.id()).expect("Linux pids fit in pid_t");
    // SAFETY: kill only sends a signal. `pid` is our own child and has not been waited for,
    // so it cannot have been reused by another process.
    unsafe { libc::kill(pid, signal) };
    let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        thread::sleep(POLL_INTERVAL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// How a start attempt ended.
enum Startup {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

fn wait_ready(child: &mut Child, data_dir: &Path) -> Startup {
    let pid_file = data_dir.join("postmaster.pid");
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Startup::Exited(status);
        }
        let pid_file = fs::read_to_string(&pid_file).unwrap_or_default();
        if pid_file_says_ready(&pid_file, child.id()) {
            return Startup::Ready;
        }
        thread::sleep(POLL_INTERVAL);
    }
    Startup::TimedOut
}

/// Whether `postmaster.pid` names `pid` (line 1) with status `ready` (line 8).
fn pid_file_says_ready(pid_file: &str, pid: u32) -> bool {
    let lines: Vec<&str> = pid_file.lines().collect();
    lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(pid)
        && lines.get(7).map(|l| l.trim()) == Some("ready")
}

/// Whether a failed start's log shows that the TCP port was taken by someone else.
fn lost_port(log: &str) -> bool {
    [
        "could not create any TCP/IP sockets",
        "Address already in use",
        "could not bind",
    ]
    .iter()
    .any(|symptom| log.contains(symptom))
}

/// A loopback port that was free a moment ago.
fn free_loopback_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("could not bind a free port on 127.0.0.1: {e}"))
}

/// A server-side command (`initdb`, `postgres`), run as the server account from `root`.
fn server_command(
    bin_dir: &Path,
    program: &str,
    root: &Path,
    user: Option<&ServerUser>,
) -> Command {
    let mut command = Command::new(bin_dir.join(program));
    // The server account may not be able to enter the test's working directory.
    command.current_dir(root);
    if let Some(user) = user {
        user.apply(&mut command);
    }
    command
}

/// Writes a file the server reads, and hands it to the server account.
fn write_server_file(path: &Path, contents: &str, user: Option<&ServerUser>) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("could not write {}: {e}", path.display()));
    if let Some(user) = user {
        user.give(path).unwrap_or_else(|e| {
            panic!("could not chown {} to {}: {e}", path.display(), user.name())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY_PID_FILE: &str =
        "4242\n/tmp/ferry-pg-x/data\n1700000000\n5555\n/tmp/ferry-pg-x\n127.0.0.1\n0 0\nready   \n";

    #[test]
    fn ready_needs_our_pid_and_the_ready_status() {
        assert!(pid_file_says_ready(READY_PID_FILE, 4242));
        assert!(!pid_file_says_ready(READY_PID_FILE, 4243));
        assert!(!pid_file_says_ready(
            &READY_PID_FILE.replace("ready", "starting"),
            4242
        ));
        assert!(!pid_file_says_ready("4242\n/tmp/ferry-pg-x/data\n", 4242));
        assert!(!pid_file_says_ready("", 4242));
    }

    #[test]
    fn lost_port_recognises_bind_failures_only() {
        let log = "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n\
                   FATAL:  could not create any TCP/IP sockets\n";
        assert!(lost_port(log));
        assert!(!lost_port(
            "FATAL:  data directory \"x\" has invalid permissions\n"
        ));
    }
}
