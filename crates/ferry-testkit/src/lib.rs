//! Throwaway servers for Ferry's integration tests.
//!
//! Every test gets its own server process on a free loopback port in a fresh temporary
//! directory, so tests run in parallel (threads or `cargo nextest` processes) without sharing
//! state. Servers come from the machine's packages (`scripts/setup` installs them); there is no
//! Docker. A server lives as long as its handle: dropping it stops the process and deletes its
//! directory.
//!
//! - [`postgres`]: [`PgCluster`], an `initdb`-fresh PostgreSQL cluster with `wal_level=logical`,
//!   a superuser `ferry` and optional password authentication.
//!   [`PgCluster::stop_immediate`] and [`PgCluster::restart`] crash and recover it in place.
//! - [`compare`]: the oracle fault tests end with: [`compare_tables`] matches source and
//!   target rows by key (whole rows for keyless tables) and counts missing, extra and
//!   different rows per table.
//! - [`ferry`]: [`FerryServer`], the real `ferry server` binary on a free port, with
//!   `kill -9` and restart, and a tiny blocking HTTP(S) client for its API, with flags,
//!   environment, tokens and HTTPS from [`FerryOptions`].
//! - [`mariadb`]: [`MariaDb`], a fresh MariaDB server (ROW binlog with full metadata, GTIDs,
//!   time zone `+02:00`) with a user `ferry`, `kill -9` and restart in place.
//! - [`nats`]: [`NatsServer`], a `nats-server -js` (JetStream) with `kill -9` and restart
//!   in place, for the NATS sink's tests.
//! - [`proxy`]: [`TcpProxy`], a TCP proxy that [`TcpProxy::cut`]s the network silently
//!   (stops forwarding, closes nothing), for network-cut tests.
//! - [`certs`]: [`certs::TestCa`], a throwaway CA that issues server and client certificates
//!   as PEM files, for TLS tests.
//! - [`mem`] (cargo feature `mem`): in-memory source and sink connectors ([`mem::MemDb`],
//!   [`mem::MemConnectors`]) that drive the engine without a database.
//! - [`workload`]: write loads besides pgbench, riding out source restarts: a bank whose
//!   total the target must show in every consistent read ([`workload::bank`], checked every
//!   second by a [`workload::bank::BankChecker`]), and TOASTed rows updated in their other
//!   columns ([`workload::toast`]).
//! - [`wait`]: [`wait_for`] and [`wait_for_async`], deadline-bounded polling for assertions on
//!   eventually-true conditions (a checkpoint saved, rows arrived).
//!
//! ```no_run
//! use ferry_testkit::PgCluster;
//!
//! # async fn example() {
//! let pg = PgCluster::start();
//! pg.create_database("source");
//! let client = pg.connect("source").await;
//! client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
//! assert_eq!(pg.psql("source", "SELECT count(*) FROM t"), "0");
//! # }
//! ```
//!
//! Helpers panic with a descriptive message (including the server log where useful) instead of
//! returning errors: they are test fixtures, and a panic is the clearest failure a test can
//! report.
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root, and CI containers usually are root. The testkit then runs
//! server processes as an unprivileged account (the `postgres` system user, else `nobody`) and
//! hands it the temporary directory; client tools such as `psql` and `pgbench` stay as the
//! current user and connect over TCP.

mod binaries;
pub mod certs;
pub mod compare;
pub mod ferry;
pub mod mariadb;
#[cfg(feature = "mem")]
pub mod mem;
pub mod nats;
pub mod postgres;
pub mod proxy;
mod server_user;
pub mod wait;
pub mod workload;

pub use compare::{compare_tables, Comparison, TableDiff};
pub use ferry::{FerryOptions, FerryServer, HttpsClient};
pub use mariadb::MariaDb;
pub use nats::NatsServer;
pub use postgres::{pg_bin_dir, PgCluster, PgOptions, ServerTls};
pub use proxy::TcpProxy;
pub use wait::{wait_for, wait_for_async};
