//! Throwaway MariaDB servers: [`MariaDb`].
//!
//! ```text
//! MariaDb::start()
//!   temp dir ──► mariadb-install-db ──► mariadbd on 127.0.0.1:<free port>
//!            (ROW binlog, FULL row image and metadata, GTIDs, time_zone +02:00)
//!            ──► user `ferry`/`ferry` with every privilege, database `ferry_test`
//! kill9() / restart()   SIGKILL, then the same port and data directory again
//! drop                  SIGKILL ──► temp dir removed
//! ```
//!
//! The server runs at time zone `+02:00` on purpose: Ferry must pin its sessions to UTC,
//! and a test server at UTC would hide a missing pin. Binaries come from Debian's
//! `mariadb-server` package (`scripts/setup` installs it).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tempfile::TempDir;

use crate::binaries::{find_binary, free_port};

/// The user every test server has, with every privilege.
pub const MARIADB_USER: &str = "ferry";
/// Its password.
pub const MARIADB_PASSWORD: &str = "ferry";

/// A running `mariadbd` in its own temp dir, killed and deleted on drop.
pub struct MariaDb {
    port: u16,
    server_id: u32,
    extra_args: Vec<String>,
    server: Option<Child>,
    /// Declared last: removed only after `Drop::drop` has killed the server.
    root: TempDir,
}

impl MariaDb {
    /// Starts a fresh server (server id 1) on a free `127.0.0.1` port.
    pub fn start() -> MariaDb {
        MariaDb::start_with(1, &[])
    }

    /// Starts a fresh server with replication `server_id` and extra `mariadbd` options
    /// (`--binlog-row-metadata=MINIMAL`, …; later options win).
    ///
    /// Panics with a clear message (and the server log) if it cannot start.
    pub fn start_with(server_id: u32, extra_args: &[&str]) -> MariaDb {
        let root = tempfile::Builder::new()
            .prefix("ferry-mariadb-")
            .tempdir()
            .unwrap_or_else(|e| panic!("could not create a temp dir for MariaDB: {e}"));
        let mut server = MariaDb {
            port: 0,
            server_id,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            server: None,
            root,
        };
        server.install();
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                server.create_user();
                return server;
            }
        }
        panic!("mariadbd did not start:\n{}", server.log());
    }

    /// The client port, at `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mariadb://ferry:ferry@127.0.0.1:<port>/<database>` (no database when empty).
    pub fn uri(&self, database: &str) -> String {
        format!(
            "mariadb://{MARIADB_USER}:{MARIADB_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The server's error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("error.log")).unwrap_or_default()
    }

    /// Runs SQL statements through the `mariadb` client as root (over the socket), for
    /// setup; panics with the client's message if one fails. Returns what the client
    /// printed (tab-separated rows, no header).
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(client_binary())
            .args(["--no-defaults", "--batch", "--skip-column-names", "-uroot"])
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-e", sql])
            .output()
            .unwrap_or_else(|e| panic!("could not run the mariadb client: {e}"));
        assert!(
            out.status.success(),
            "mariadb client failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// A connection as `ferry` to `database` (none when empty), session time zone UTC.
    pub async fn connect(&self, database: &str) -> mysql_async::Conn {
        let url = format!(
            "mysql://{MARIADB_USER}:{MARIADB_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        );
        let opts = mysql_async::Opts::from_url(&url).expect("a valid MariaDB URL");
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .unwrap_or_else(|e| panic!("could not connect to MariaDB: {e}"));
        conn.query_drop("SET time_zone = '+00:00'")
            .await
            .expect("set the session time zone");
        conn
    }

    /// Kills the server with SIGKILL (InnoDB recovers on restart, as after a crash).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill9();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not restart on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn socket(&self) -> PathBuf {
        self.root.path().join("mariadb.sock")
    }

    fn install(&self) {
        let out = Command::new(install_binary())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .args(user_arg())
            // Temp tables in the server's own dir: two installs sharing /tmp collided.
            .env("TMPDIR", self.root.path())
            .output()
            .unwrap_or_else(|e| panic!("could not run mariadb-install-db: {e}"));
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn create_user(&self) {
        self.sql(&format!(
            "CREATE USER '{MARIADB_USER}'@'%' IDENTIFIED BY '{MARIADB_PASSWORD}';
             GRANT ALL PRIVILEGES ON *.* TO '{MARIADB_USER}'@'%' WITH GRANT OPTION;
             CREATE DATABASE ferry_test;"
        ));
    }

    /// Spawns the server and waits until it accepts connections; `false` if it exited
    /// first (its port taken).
    fn spawn(&mut self) -> bool {
        let root = self.root.path();
        let mut child = Command::new(server_binary())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", root.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", root.join("error.log").display()))
            .arg(format!("--log-bin={}", root.join("data/binlog").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--server-id={}", self.server_id))
            .args(user_arg())
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--default-time-zone=+02:00",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                "--innodb-buffer-pool-size=128M",
                "--innodb-log-file-size=64M",
                "--max-connections=300",
                "--local-infile=1",
            ])
            .args(&self.extra_args)
            .env("TMPDIR", root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run mariadbd: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.socket().exists() {
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

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `mariadbd` refuses to run as root unless told to; the test process usually is root.
fn user_arg() -> Vec<String> {
    // SAFETY: geteuid has no preconditions, touches no memory and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        vec!["--user=root".into()]
    } else {
        Vec::new()
    }
}

fn server_binary() -> PathBuf {
    find_binary("mariadbd", "mariadb-server")
}

fn install_binary() -> PathBuf {
    find_binary("mariadb-install-db", "mariadb-server")
}

fn client_binary() -> PathBuf {
    find_binary("mariadb", "mariadb-client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_restarts_and_pins_nothing_itself() {
        let mut db = MariaDb::start();
        assert_eq!(
            db.sql("SELECT @@binlog_format, @@binlog_row_metadata"),
            "ROW\tFULL"
        );
        assert_eq!(db.sql("SELECT @@time_zone"), "+02:00");
        db.sql(
            "CREATE TABLE ferry_test.t (id int PRIMARY KEY); INSERT INTO ferry_test.t VALUES (1)",
        );
        db.restart();
        let mut conn = db.connect("ferry_test").await;
        let n: Option<i64> = conn.query_first("SELECT count(*) FROM t").await.unwrap();
        assert_eq!(n, Some(1));
        assert!(db
            .uri("shop")
            .starts_with("mariadb://ferry:ferry@127.0.0.1:"));
    }
}
