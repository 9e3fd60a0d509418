//! Throwaway PostgreSQL clusters: [`PgCluster`].
//!
//! # Lifecycle
//!
//! ```text
//! PgCluster::start_with(options)
//!   temp dir ──► initdb (superuser `ferry`, UTF8, C locale)
//!            ──► configure (wal_level=logical, loopback only, pg_hba)
//!            ──► postgres -D data  (free port; retried when the port is lost)
//!            ──► ready (postmaster.pid says so)
//! drop / stop()
//!   SIGINT (fast shutdown) ──► SIGKILL after 10 s ──► temp dir removed
//! ```
//!
//! The server runs as a direct child of the test process. Clients reach it over TCP on
//! `127.0.0.1:<port>` as `ferry`, a superuser (so it may also replicate); with
//! [`PgOptions::password`] set, TCP logins need that password. With [`PgOptions::tls`] the
//! server has `ssl = on` (and, `hostssl_only`, refuses unencrypted TCP logins); the test
//! kit's own helpers (`psql`, `connect`) use the Unix socket then, which stays trusted.
//!
//! The private `process` module documents the file layout, port retries and the readiness
//! check; `config` documents the server settings.

mod bin_dir;
mod config;
mod process;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use tempfile::TempDir;
use tokio_postgres::NoTls;

pub use bin_dir::pg_bin_dir;
pub use config::{PgOptions, ServerTls};

use crate::server_user::ServerUser;

/// The superuser `initdb` creates; every client helper logs in as it.
const SUPERUSER: &str = "ferry";

/// A running PostgreSQL cluster in its own temp dir, stopped and deleted on drop.
///
/// Many clusters can run at once, in one process or many; each has its own port, data
/// directory and Unix socket directory.
pub struct PgCluster {
    bin_dir: PathBuf,
    port: u16,
    password: Option<String>,
    /// TCP logins need TLS: the helpers use the Unix socket instead.
    hostssl_only: bool,
    /// The server settings of every start (the TLS files and the caller's `extra_conf`).
    extra_conf: Vec<(String, String)>,
    user: Option<&'static ServerUser>,
    /// `None` while stopped by [`PgCluster::stop_immediate`].
    server: Option<Child>,
    /// Declared last: removed only after `Drop::drop` has stopped the server.
    root: TempDir,
}

impl PgCluster {
    /// Starts a fresh cluster with default options: no password, every login trusted.
    ///
    /// Panics with a clear message (and the server log) if the cluster cannot start.
    pub fn start() -> PgCluster {
        PgCluster::start_with(PgOptions::default())
    }

    /// Starts a fresh cluster: `initdb` in a new temp dir, then `postgres` on a free
    /// `127.0.0.1` port, returning once the server accepts connections.
    ///
    /// Panics with a clear message (and the server log) if the cluster cannot start.
    pub fn start_with(options: PgOptions) -> PgCluster {
        let bin_dir = pg_bin_dir();
        let user = ServerUser::current();
        let root = tempfile::Builder::new()
            .prefix("ferry-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("could not create a temp dir for PostgreSQL: {e}"));
        if let Some(user) = user {
            user.give(root.path()).unwrap_or_else(|e| {
                panic!(
                    "could not chown {} to {}: {e}",
                    root.path().display(),
                    user.name()
                )
            });
        }
        let data_dir = root.path().join("data");
        let password = options.password;
        let hostssl_only = options.tls.as_ref().is_some_and(|t| t.hostssl_only);

        process::initdb(&bin_dir, root.path(), &data_dir, password.as_deref(), user);
        process::configure(&data_dir, password.is_some(), options.tls.as_ref(), user);
        let mut conf = match &options.tls {
            Some(tls) => config::tls_conf(tls),
            None => Vec::new(),
        };
        conf.extend(options.extra_conf);
        let (server, port) = process::start(&bin_dir, root.path(), &data_dir, &conf, user, None);

        PgCluster {
            bin_dir,
            port,
            password,
            hostssl_only,
            extra_conf: conf,
            user,
            server: Some(server),
            root,
        }
    }

    /// The TCP port the server listens on, at `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URI for database `db`: `postgres://ferry[:password]@127.0.0.1:PORT/db`.
    ///
    /// The password and database name are percent-encoded.
    pub fn uri(&self, db: &str) -> String {
        let password = match &self.password {
            Some(password) => format!(":{}", percent_encode(password)),
            None => String::new(),
        };
        format!(
            "postgres://{SUPERUSER}{password}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(db)
        )
    }

    /// The PostgreSQL bin dir that runs this cluster, for other tools (`pg_dump`, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server's log file (stdout and stderr), handy when a test fails.
    pub fn log_path(&self) -> PathBuf {
        self.root.path().join(process::LOG_FILE)
    }

    /// Creates database `name` (quoted as an identifier, so any name works).
    pub fn create_database(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        );
    }

    /// Connects to database `db` as `ferry` and spawns the connection task on the current
    /// tokio runtime. Panics if the connection fails.
    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        let config = match self.hostssl_only {
            true => {
                let mut config = tokio_postgres::Config::new();
                config
                    .host_path(self.root.path())
                    .port(self.port)
                    .user(SUPERUSER)
                    .dbname(db);
                config
            }
            false => self.uri(db).parse().expect("the testkit's URI parses"),
        };
        let (client, connection) = config.connect(NoTls).await.unwrap_or_else(|e| {
            panic!(
                "could not connect to {db} on port {}: {}",
                self.port,
                error_chain(&e)
            )
        });
        let db = db.to_owned();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("ferry-testkit: connection to database {db} ended: {e}");
            }
        });
        client
    }

    /// Runs `sql` with `psql -X -A -t -v ON_ERROR_STOP=1 -c` against database `db`.
    ///
    /// Returns stdout without its trailing newline: unaligned, tuples only, so
    /// `psql(db, "SELECT count(*) FROM t")` is just the number. Panics with stderr on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let output = self
            .client_command("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap_or_else(|e| panic!("could not run {}/psql: {e}", self.bin_dir.display()));
        if !output.status.success() {
            panic!(
                "psql failed ({}) on database {db} running:\n{sql}\nstderr:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
            );
        }
        let mut stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout.truncate(stdout.trim_end_matches('\n').len());
        stdout
    }

    /// Runs `pgbench -h 127.0.0.1 -p PORT -U ferry <args> <db>` and returns its output,
    /// whatever its exit status; the caller decides what failure means.
    pub fn pgbench(&self, db: &str, args: &[&str]) -> Output {
        self.client_command("pgbench")
            .args(args)
            .arg(db)
            .output()
            .unwrap_or_else(|e| panic!("could not run {}/pgbench: {e}", self.bin_dir.display()))
    }

    /// Crashes the server the way `pg_ctl -m immediate stop` does (SIGQUIT: no checkpoint, no
    /// flush of anything not yet written), and waits until it is gone. Its data stays;
    /// [`PgCluster::restart`] starts it again with crash recovery.
    pub fn stop_immediate(&mut self) {
        if let Some(mut server) = self.server.take() {
            process::stop_immediate(&mut server);
        }
    }

    /// Stops the server the way `pg_ctl -m fast stop` does (SIGINT: sessions are ended, a
    /// shutdown checkpoint is written). [`PgCluster::restart`] starts it again.
    pub fn stop_fast(&mut self) {
        if let Some(mut server) = self.server.take() {
            process::stop(&mut server);
        }
    }

    /// Starts a stopped server again on the same data directory and the same port, so URIs
    /// handed out before stay valid. Panics (with the log) if the port was taken meanwhile.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "the server is still running");
        let data_dir = self.root.path().join("data");
        let (server, _) = process::start(
            &self.bin_dir,
            self.root.path(),
            &data_dir,
            &self.extra_conf,
            self.user,
            Some(self.port),
        );
        self.server = Some(server);
    }

    /// Whether the server process runs (false after [`PgCluster::stop_immediate`]).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Stops the server and removes its directory; the same as dropping the cluster.
    pub fn stop(self) {
        drop(self);
    }

    /// A client tool (`psql`, `pgbench`) pointed at this server as `ferry`.
    fn client_command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(tool));
        let host = match self.hostssl_only {
            true => self.root.path().to_string_lossy().into_owned(),
            false => "127.0.0.1".to_owned(),
        };
        command.args(["-h", &host, "-p", &self.port.to_string(), "-U", SUPERUSER]);
        match &self.password {
            Some(password) => command.env("PGPASSWORD", password),
            None => command.env_remove("PGPASSWORD"),
        };
        command
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(server) = &mut self.server {
            process::stop(server);
        }
        // `root` (the temp dir) is removed when the fields drop, now that the server is gone.
    }
}

/// An error and its sources, `: `-separated; tokio-postgres puts the server's message in the
/// source, not in `Display`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        write!(chain, ": {cause}").expect("writing to a String cannot fail");
        source = cause.source();
    }
    chain
}

/// Quotes an SQL identifier: `a"b` → `"a""b"`.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for URI components.
fn percent_encode(component: &str) -> String {
    let mut encoded = String::with_capacity(component.len());
    for byte in component.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            write!(encoded, "%{byte:02X}").expect("writing to a String cannot fail");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encode_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(percent_encode("db_1-a.b~"), "db_1-a.b~");
        assert_eq!(percent_encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn quote_ident_doubles_quotes() {
        assert_eq!(quote_ident("source"), "\"source\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
