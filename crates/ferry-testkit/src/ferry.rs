//! A `ferry server` process for end-to-end tests, and a minimal blocking HTTP client.
//!
//! The server runs the real binary (the test passes its path, from
//! `env!("CARGO_BIN_EXE_ferry")`) on a free loopback port with a temporary data directory,
//! so tests can `kill -9` it (or stop it gracefully) and start it again on the same data.
//! Its resource use ([`FerryServer::peak_rss_kib`], [`FerryServer::cpu_seconds`]) is read
//! from `/proc`, for the benchmarks.
//!
//! [`FerryOptions`] adds flags and environment variables (tokens, HTTPS); the client then
//! sends a bearer token ([`FerryServer::set_token`], [`FerryServer::request_as`]) and speaks
//! HTTPS (rustls with ring) trusting the test's CA, with a client certificate if given.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The log filter tests run the server with: engine decisions at debug, for failure reports.
const TEST_LOG_FILTER: &str = "info,ferry_engine=debug";

/// How long a graceful stop ([`FerryServer::stop`]) may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a [`FerryServer`] beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct FerryOptions {
    /// More flags of `ferry server` (`--auth-token-file`, `--tls-cert` …).
    pub args: Vec<String>,
    /// Environment variables of the server process.
    pub env: Vec<(String, String)>,
    /// The `--log` filter; default: info, engine decisions at debug.
    pub log_filter: Option<String>,
    /// The server serves HTTPS: how the test kit's client connects.
    pub https: Option<HttpsClient>,
    /// The bearer token the client sends (health checks need none).
    pub token: Option<String>,
}

/// The client side of an HTTPS server: the CA to trust and an optional client certificate.
#[derive(Clone, Debug)]
pub struct HttpsClient {
    /// The CA that signed the server's certificate (PEM file).
    pub ca_cert: PathBuf,
    /// A client certificate and its key (PEM files).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl HttpsClient {
    fn config(&self) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_cert).expect("read the CA file") {
            roots
                .add(cert.expect("a PEM certificate"))
                .expect("add the CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .expect("read the client certificate")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("PEM certificates");
                let key = PrivateKeyDer::from_pem_file(key).expect("read the client key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client certificate")
            }
        };
        Arc::new(config)
    }
}

/// A running (or killed) `ferry server`.
pub struct FerryServer {
    binary: PathBuf,
    log_filter: String,
    options: FerryOptions,
    addr: SocketAddr,
    data_dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

impl FerryServer {
    /// Starts `binary server` on a free port with a new data directory; waits for health.
    pub fn start(binary: &Path) -> FerryServer {
        FerryServer::start_with_log(binary, TEST_LOG_FILTER)
    }

    /// Like [`FerryServer::start`], with the server's `--log` filter (the benchmarks run it
    /// with `info`, as in production).
    pub fn start_with_log(binary: &Path, log_filter: &str) -> FerryServer {
        FerryServer::start_with(
            binary,
            FerryOptions {
                log_filter: Some(log_filter.to_owned()),
                ..FerryOptions::default()
            },
        )
    }

    /// Like [`FerryServer::start`], with extra environment variables for the server process
    /// (kept across restarts).
    pub fn start_with_env(binary: &Path, env: &[(&str, &str)]) -> FerryServer {
        FerryServer::start_with(
            binary,
            FerryOptions {
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..FerryOptions::default()
            },
        )
    }

    /// Like [`FerryServer::start_with_log`], with more `ferry server` flags
    /// (`--retained-wal-warning-bytes 1`), kept for restarts.
    pub fn start_with_args(binary: &Path, log_filter: &str, extra_args: &[&str]) -> FerryServer {
        FerryServer::start_with(
            binary,
            FerryOptions {
                args: extra_args.iter().map(|a| a.to_string()).collect(),
                log_filter: Some(log_filter.to_owned()),
                ..FerryOptions::default()
            },
        )
    }

    /// Like [`FerryServer::start`], with more flags, environment, HTTPS or a token.
    pub fn start_with(binary: &Path, options: FerryOptions) -> FerryServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = FerryServer {
            binary: binary.to_path_buf(),
            log_filter: options
                .log_filter
                .clone()
                .unwrap_or_else(|| TEST_LOG_FILTER.to_owned()),
            options,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            data_dir: tempfile::Builder::new()
                .prefix("ferry-data-")
                .tempdir()
                .expect("a temp dir"),
            child: None,
            starts: 0,
        };
        server.restart();
        server
    }

    /// The API's base URL (`https://` when the server serves HTTPS).
    pub fn url(&self) -> String {
        let scheme = if self.options.https.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The token the client sends from now on (`None`: no `Authorization` header).
    pub fn set_token(&mut self, token: Option<&str>) {
        self.options.token = token.map(String::from);
    }

    /// The server's data directory (`--data-dir`); its default secret key file is the
    /// sibling `data.secret-key`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.path().join("data")
    }

    /// The current log file (one per start).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir
            .path()
            .join(format!("server-{}.log", self.starts))
    }

    /// Starts the server again on the same data (after [`FerryServer::kill9`]). It keeps its
    /// port unless another process took it meanwhile (tests run in parallel), then moves.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        for _ in 0..5 {
            if self.spawn_and_wait() {
                return;
            }
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            self.addr = SocketAddr::from(([127, 0, 0, 1], port));
        }
        panic!("ferry server could not bind a port: {}", self.log());
    }

    /// Spawns the server and waits until *it* (not another process on the port) is
    /// healthy; `false` when it exited because the port was taken.
    fn spawn_and_wait(&mut self) -> bool {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("create the server log");
        let child = Command::new(&self.binary)
            .args(["server", "--addr", &self.addr.to_string(), "--data-dir"])
            .arg(self.data_dir.path().join("data"))
            .args(["--log", &self.log_filter])
            .args(&self.options.args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ferry server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let exited = self.child.as_mut().map(Child::try_wait);
            if let Some(Ok(Some(status))) = exited {
                self.child = None;
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                if log.contains("listen on") {
                    return false;
                }
                panic!("ferry server exited with {status}: {}", self.log());
            }
            if let Ok((200, _)) = self.try_request("GET", "/api/v2/health", None, None) {
                // Healthy, and still ours: a server that lost the port race has exited.
                std::thread::sleep(Duration::from_millis(50));
                if let Some(Ok(None)) = self.child.as_mut().map(Child::try_wait) {
                    return true;
                }
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "ferry server did not become healthy: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the server (no shutdown of any kind) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server gracefully (SIGTERM: it finishes its batch and shuts its changefeeds
    /// down) and reaps it; SIGKILL after 30 s. [`FerryServer::restart`] starts it again.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill only sends a signal; `pid` is our child and not yet reaped, so the
            // pid cannot have been reused by another process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The running server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU time (user + system) the running server has used so far, in seconds, from
    /// `/proc/<pid>/stat`.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        cpu_seconds_from_stat(&stat)
    }

    /// The running server's peak resident memory (`VmHWM`) in KiB, if it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Every log of this server so far.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.data_dir.path().join(format!("server-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// `GET path`: status and JSON body. Panics when the server is unreachable.
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.request("POST", path, Some(body.to_string().as_bytes()))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.request("DELETE", path, None)
    }

    /// Any request with a raw body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> (u16, serde_json::Value) {
        self.request_as(self.options.token.as_deref(), method, path, body)
    }

    /// Any request, with `token` as the bearer token (`None`: no `Authorization` header).
    pub fn request_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> (u16, serde_json::Value) {
        self.try_request(method, path, body, token)
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}\n{}", self.log()))
    }

    /// Any request, or the I/O error (a TLS handshake the server refused, …).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> std::io::Result<(u16, serde_json::Value)> {
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        // The configuration is built per request (from files): a rustls configuration is not
        // `RefUnwindSafe`, and tests hold servers across `catch_unwind`.
        let mut stream: Box<dyn ReadWrite> = match &self.options.https {
            None => Box::new(tcp),
            Some(https) => {
                let name = ServerName::IpAddress(self.addr.ip().into());
                let connection = rustls::ClientConnection::new(https.config(), name)
                    .map_err(std::io::Error::other)?;
                Box::new(rustls::StreamOwned::new(connection, tcp))
            }
        };
        let body = body.unwrap_or_default();
        let authorization = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             {authorization}Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        )?;
        stream.write_all(body)?;
        stream.flush()?;
        let mut response = Vec::new();
        match stream.read_to_end(&mut response) {
            Ok(_) => {}
            // rustls reports a peer that closes without close_notify; the answer is complete.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
            Err(e) => return Err(e),
        }
        let text = String::from_utf8_lossy(&response);
        let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad response: {head}")))?;
        let payload = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(payload)
        } else {
            payload.to_string()
        };
        let json = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
        Ok((status, json))
    }
}

/// A plain or TLS stream.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds.
///
/// The command name (field 2) may hold spaces and parentheses, so fields are counted from
/// the last `)`: state is field 3, utime field 14 and stime field 15.
fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_second = if ticks_per_second > 0 {
        ticks_per_second as f64
    } else {
        100.0
    };
    Some((utime + stime) as f64 / ticks_per_second)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for FerryServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_counts_fields_after_the_command_name() {
        let stat = "4242 (ferry (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 9";
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(cpu_seconds_from_stat(stat), Some(300.0 / ticks));
        assert_eq!(cpu_seconds_from_stat("4242 (ferry) S 1"), None);
    }
}
