//! A test cluster's configuration: the caller's [`PgOptions`] and the files rendered from them.
//!
//! `initdb` writes a stock `postgresql.conf`; the testkit appends one `include` line pointing
//! at its own file, rewritten for every start attempt (the port may change between attempts),
//! so the stock file stays untouched and `ALTER SYSTEM` keeps working on top.

use std::fmt;
use std::path::Path;

/// The file, inside the data directory, that holds the testkit's settings.
pub(super) const TESTKIT_CONF_FILE: &str = "ferry_testkit.conf";

/// How to build a [`PgCluster`](super::PgCluster) differently from the defaults.
#[derive(Clone, Default)]
pub struct PgOptions {
    /// `postgresql.conf` settings applied after the testkit's own, so they override them.
    /// A value is quoted for the file unless it is already wrapped in single quotes.
    pub extra_conf: Vec<(String, String)>,
    /// Password of the `ferry` superuser. With one, TCP connections need it (SCRAM-SHA-256);
    /// without one, every connection is trusted.
    pub password: Option<String>,
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("extra_conf", &self.extra_conf)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The testkit's server settings for one start attempt on `port`.
///
/// Tuned for throwaway clusters: durability off (`fsync`, `full_page_writes`) because a crashed
/// test cluster is discarded anyway, but `synchronous_commit` stays on so that a committed
/// transaction is in WAL before the client hears of it, as in production.
pub(super) fn server_conf(port: u16, socket_dir: &Path, extra_conf: &[(String, String)]) -> String {
    let socket_dir = socket_dir.to_string_lossy();
    let port = port.to_string();
    let testkit_settings = [
        ("listen_addresses", "127.0.0.1"),
        ("port", port.as_str()),
        ("unix_socket_directories", socket_dir.as_ref()),
        ("wal_level", "logical"),
        ("max_replication_slots", "20"),
        ("max_wal_senders", "20"),
        ("fsync", "off"),
        ("full_page_writes", "off"),
        ("shared_buffers", "128MB"),
        ("max_connections", "200"),
        ("logging_collector", "off"),
        ("log_min_messages", "warning"),
    ];
    let extra = extra_conf
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()));
    let mut conf = String::from("# Written by ferry-testkit; rewritten on every start.\n");
    for (name, value) in testkit_settings.into_iter().chain(extra) {
        conf.push_str(&format!("{name} = {}\n", quote_conf_value(value)));
    }
    conf
}

/// `pg_hba.conf`: local sockets trusted; TCP from loopback for databases and replication,
/// trusted or, with a password, SCRAM-SHA-256.
pub(super) fn hba_conf(password_required: bool) -> String {
    let method = if password_required {
        "scram-sha-256"
    } else {
        "trust"
    };
    format!(
        "# Written by ferry-testkit.\n\
         local all         all                trust\n\
         local replication all                trust\n\
         host  all         all  127.0.0.1/32  {method}\n\
         host  replication all  127.0.0.1/32  {method}\n"
    )
}

/// Quotes a value for `postgresql.conf`, doubling embedded quotes, unless it is quoted already.
fn quote_conf_value(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_conf_has_logical_wal_port_socket_and_extras_last() {
        let extra = vec![("wal_sender_timeout".to_owned(), "5s".to_owned())];
        let conf = server_conf(54321, Path::new("/tmp/ferry-pg-x"), &extra);
        assert!(conf.contains("port = '54321'\n"));
        assert!(conf.contains("wal_level = 'logical'\n"));
        assert!(conf.contains("unix_socket_directories = '/tmp/ferry-pg-x'\n"));
        assert!(!conf.contains("synchronous_commit"));
        assert!(conf.ends_with("wal_sender_timeout = '5s'\n"));
    }

    #[test]
    fn conf_values_are_quoted_once() {
        assert_eq!(quote_conf_value("on"), "'on'");
        assert_eq!(quote_conf_value("it's"), "'it''s'");
        assert_eq!(quote_conf_value("'already'"), "'already'");
        assert_eq!(quote_conf_value("'"), "''''");
    }

    #[test]
    fn hba_method_follows_password() {
        assert!(hba_conf(false).contains("host  replication all  127.0.0.1/32  trust"));
        assert!(hba_conf(true).contains("host  all         all  127.0.0.1/32  scram-sha-256"));
        assert!(hba_conf(true).contains("local all         all                trust"));
    }

    #[test]
    fn debug_masks_the_password() {
        let options = PgOptions {
            password: Some("hunter2".to_owned()),
            ..PgOptions::default()
        };
        assert!(!format!("{options:?}").contains("hunter2"));
    }
}
