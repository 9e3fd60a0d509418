//! Throwaway NATS servers with JetStream: [`NatsServer`].
//!
//! ```text
//! NatsServer::start()
//!   temp dir ──► nats-server -js -a 127.0.0.1 -p <free port> -sd <dir>/jetstream
//!            ──► ready (a TCP connect succeeds; retried on another port if the port was lost)
//! kill9() / restart()   SIGKILL, then the same port and store again
//! drop                  SIGKILL ──► temp dir removed
//! ```
//!
//! The binary comes from Debian's `nats-server` package (`scripts/setup` installs it); it is
//! looked up on `PATH`, then in `/usr/sbin` and `/usr/bin`.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binaries::{find_binary, free_port};

/// A running `nats-server -js` in its own temp dir, killed and deleted on drop.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    server: Option<Child>,
    /// Declared last: removed only after `Drop::drop` has killed the server.
    root: TempDir,
}

impl NatsServer {
    /// Starts a fresh server with JetStream on a free `127.0.0.1` port, returning once it
    /// accepts connections.
    ///
    /// Panics with a clear message (and the server log) if it cannot start.
    pub fn start() -> NatsServer {
        let binary = find_binary("nats-server", "nats-server");
        let root = tempfile::Builder::new()
            .prefix("ferry-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("could not create a temp dir for NATS: {e}"));
        let mut server = NatsServer {
            binary,
            port: 0,
            server: None,
            root,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("nats-server did not start:\n{}", server.log());
    }

    /// The client port, at `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server with SIGKILL (what JetStream has not synced may be lost, as on a
    /// crash).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill9();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not restart on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join("nats.log")
    }

    /// Spawns the server and waits until it accepts connections; `false` if it exited
    /// first (its port taken).
    fn spawn(&mut self) -> bool {
        let store = self.root.path().join("jetstream");
        let mut child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&store)
            .arg("-l")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", self.binary.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.log().contains("Server is ready")
            {
                self.server = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
