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
    /// `ssl = on` with this certificate; see [`ServerTls`].
    pub tls: Option<ServerTls>,
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("extra_conf", &self.extra_conf)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls.as_ref().map(|t| t.hostssl_only))
            .finish()
    }
}

/// TLS for a test cluster: `ssl = on` with a certificate (from
/// [`TestCa`](crate::certs::TestCa)), copied into the data directory as `server.crt` and
/// `server.key` (owned by the server's account, mode 0600).
#[derive(Clone)]
pub struct ServerTls {
    /// The server certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// TCP logins only over TLS (`hostssl` lines, no `host` lines): a client that does not
    /// encrypt is refused with "no pg_hba.conf entry … no encryption".
    pub hostssl_only: bool,
    /// A CA (PEM) whose client certificates TCP logins must present (`ssl_ca_file`, and
    /// `clientcert=verify-ca` on the `hostssl` lines); only with `hostssl_only`.
    pub client_ca_pem: Option<String>,
}

impl ServerTls {
    /// `issued` as the server certificate, with TCP logins over TLS only.
    pub fn hostssl_only(issued: &crate::certs::IssuedCert) -> ServerTls {
        ServerTls {
            cert_pem: issued.cert_pem.clone(),
            key_pem: issued.key_pem.clone(),
            hostssl_only: true,
            client_ca_pem: None,
        }
    }
}

/// The certificate files in the data directory, as `ssl_cert_file`/`ssl_key_file` name them.
pub(super) const SERVER_CERT_FILE: &str = "server.crt";
/// See [`SERVER_CERT_FILE`].
pub(super) const SERVER_KEY_FILE: &str = "server.key";
/// See [`SERVER_CERT_FILE`]: the CA of client certificates, when asked for.
pub(super) const CLIENT_CA_FILE: &str = "client_ca.crt";

/// The settings that turn TLS on with the files above.
pub(super) fn tls_conf(tls: &ServerTls) -> Vec<(String, String)> {
    let mut conf = vec![
        ("ssl", "on"),
        ("ssl_cert_file", SERVER_CERT_FILE),
        ("ssl_key_file", SERVER_KEY_FILE),
    ];
    if tls.client_ca_pem.is_some() {
        conf.push(("ssl_ca_file", CLIENT_CA_FILE));
    }
    conf.into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
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
/// trusted or, with a password, SCRAM-SHA-256; with `hostssl_only`, TCP over TLS only, and
/// with `client_cert` also a client certificate signed by the server's `ssl_ca_file`.
pub(super) fn hba_conf(password_required: bool, hostssl_only: bool, client_cert: bool) -> String {
    let method = match (password_required, client_cert) {
        (true, false) => "scram-sha-256",
        (true, true) => "scram-sha-256 clientcert=verify-ca",
        (false, false) => "trust",
        (false, true) => "trust clientcert=verify-ca",
    };
    let tcp = if hostssl_only { "hostssl" } else { "host   " };
    format!(
        "# Written by ferry-testkit.\n\
         local   all         all                trust\n\
         local   replication all                trust\n\
         {tcp} all         all  127.0.0.1/32  {method}\n\
         {tcp} replication all  127.0.0.1/32  {method}\n"
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
        assert!(
            hba_conf(false, false, false).contains("host    replication all  127.0.0.1/32  trust")
        );
        let scram = hba_conf(true, false, false);
        assert!(scram.contains("host    all         all  127.0.0.1/32  scram-sha-256"));
        assert!(scram.contains("local   all         all                trust"));
        let ssl = hba_conf(true, true, false);
        assert!(hba_conf(true, true, true).contains("scram-sha-256 clientcert=verify-ca"));
        assert!(ssl.contains("hostssl all         all  127.0.0.1/32  scram-sha-256"));
        assert!(!ssl.contains("host "));
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
