//! The CLI client: `ferry <resource> <command> [flags] [args]`, a thin layer over the HTTP
//! API (`/api/v2`) of a running server.
//!
//! ```text
//!  flags / -f FILE ──► spec (local checks, secrets kept masked) ──► client ──► /api/v2/…
//!                                                                   │
//!  stdout ◄── output (table | json | yaml, progress bars) ◄─────────┘  stderr ◄── errors
//! ```
//!
//! - [`changefeed`]: `ferry changefeed create|list|get|update|pause|resume|delete|status|
//!   synced|check`.
//! - [`diff`]: `ferry diff create|show|list|stop|resume|delete`, online diffs of a
//!   changefeed's target with its source.
//! - [`source`]: `ferry source create|list|get|update|delete|status`.
//! - [`client`]: the HTTP client; turns API errors (`error_code`, `error_msg`) into
//!   [`CliError`]s with an exit code each.
//! - [`spec`]: the YAML/JSON files `create`, `update` and `check` read and `get` writes.
//! - [`check`]: `changefeed check`, validation without creating anything.
//! - [`output`]: tables, JSON and YAML; [`watch`]: the live `status --watch` view.
//! - [`secrets`]: masking of passwords in everything the CLI prints.
//! - [`credentials`]: the API token (`--token`, `FERRY_TOKEN`, `--token-file`) and HTTPS
//!   (`--ca`, `--cert`, `--key`): a rustls client configuration with the ring provider.
//!
//! # Exit codes
//! Stable and documented in `docs/cli.md`; see [`exit`].

pub(crate) mod changefeed;
mod check;
mod client;
mod credentials;
pub(crate) mod diff;
mod output;
mod secrets;
pub(crate) mod source;
mod spec;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use self::client::ApiClient;

/// Process exit codes of every `ferry` command.
pub(crate) mod exit {
    /// Something failed that has no more specific code (an I/O error, a server that died
    /// while running).
    pub(crate) const FAILURE: u8 = 1;
    /// Bad flags or arguments, an invalid local file, an invalid server configuration, or a
    /// confirmation that was required and not given.
    pub(crate) const USAGE: u8 = 2;
    /// The server cannot be reached (connection refused, timeout).
    pub(crate) const UNREACHABLE: u8 = 3;
    /// The changefeed or source does not exist (HTTP 404).
    pub(crate) const NOT_FOUND: u8 = 4;
    /// The request conflicts with the current state: the id exists, the changefeed is not
    /// in a state that allows the operation, the source is in use (HTTP 409).
    pub(crate) const CONFLICT: u8 = 5;
    /// The server refused the request as invalid (HTTP 400, 413, 422): a bad configuration,
    /// an unusable source.
    pub(crate) const REJECTED: u8 = 6;
    /// The server failed (HTTP 5xx) or answered something that is not the API.
    pub(crate) const SERVER_ERROR: u8 = 7;
    /// `check` found errors.
    pub(crate) const CHECK_FAILED: u8 = 8;
    /// `synced`: the changefeed is not (yet) synced.
    pub(crate) const NOT_SYNCED: u8 = 9;
    /// The user answered "no" to a confirmation.
    pub(crate) const ABORTED: u8 = 10;
    /// The server refused the credentials: no token or an unknown one (HTTP 401), or a
    /// token whose role does not allow the request (HTTP 403).
    pub(crate) const UNAUTHORIZED: u8 = 11;
}

/// The default server URL.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:8300";
/// The default namespace.
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned columns and short sentences, for people.
    #[default]
    Table,
    /// The API's JSON documents, for scripts.
    Json,
    /// The same documents as YAML.
    Yaml,
}

/// Flags every client command takes. They may stand before the resource
/// (`ferry --server URL changefeed list`) or after it; the later one wins.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct ClientFlags {
    /// Ferry server URL [env: FERRY_SERVER] [default: http://127.0.0.1:8300]
    #[arg(
        long,
        value_name = "URL",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) server: Option<String>,
    /// Namespace of changefeeds and sources [env: FERRY_NAMESPACE] [default: default]
    #[arg(
        long,
        short = 'n',
        value_name = "NAME",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) namespace: Option<String>,
    /// Output format
    #[arg(
        long,
        short = 'o',
        value_enum,
        value_name = "FORMAT",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) output: Option<OutputFormat>,
    /// API token (prefer FERRY_TOKEN or --token-file: a flag shows in `ps`) [env: FERRY_TOKEN]
    #[arg(
        long,
        value_name = "TOKEN",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) token: Option<String>,
    /// File holding the API token [env: FERRY_TOKEN_FILE]
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed an https:// server's certificate, instead of the
    /// system's roots [env: FERRY_CA]
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) ca: Option<PathBuf>,
    /// Client certificate (PEM) for a server that requires one [env: FERRY_CERT]
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) cert: Option<PathBuf>,
    /// Private key (PEM) of --cert [env: FERRY_KEY]
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) key: Option<PathBuf>,
}

/// The same flags before the resource name (`ferry --server URL changefeed list`). Not
/// global: `ferry server` has no use for them.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct LeadingClientFlags {
    /// Ferry server URL, for client commands [env: FERRY_SERVER]
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Namespace of changefeeds and sources, for client commands [env: FERRY_NAMESPACE]
    #[arg(long, short = 'n', value_name = "NAME")]
    namespace: Option<String>,
    /// Output format of client commands
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    output: Option<OutputFormat>,
    /// API token, for client commands [env: FERRY_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// File holding the API token, for client commands [env: FERRY_TOKEN_FILE]
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) of an https:// server, for client commands [env: FERRY_CA]
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), for client commands [env: FERRY_CERT]
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert, for client commands [env: FERRY_KEY]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

impl ClientFlags {
    /// `self` where given, else the flags given before the resource name.
    pub(crate) fn or(self, leading: LeadingClientFlags) -> ClientFlags {
        ClientFlags {
            server: self.server.or(leading.server),
            namespace: self.namespace.or(leading.namespace),
            output: self.output.or(leading.output),
            token: self.token.or(leading.token),
            token_file: self.token_file.or(leading.token_file),
            ca: self.ca.or(leading.ca),
            cert: self.cert.or(leading.cert),
            key: self.key.or(leading.key),
        }
    }
}

/// What every command runs with: a client and the output format.
pub(crate) struct Context {
    /// The API client (server and namespace).
    pub(crate) client: ApiClient,
    /// How to print.
    pub(crate) output: OutputFormat,
    /// Whether `--namespace` or `FERRY_NAMESPACE` chose the namespace.
    namespace_given: bool,
}

impl Context {
    fn new(flags: ClientFlags) -> Result<Context, CliError> {
        let server = flags
            .server
            .or_else(|| std::env::var("FERRY_SERVER").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let namespace = flags.namespace.or_else(|| {
            std::env::var("FERRY_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        });
        let credentials = credentials::Credentials::from_flags(
            flags.token,
            flags.token_file,
            flags.ca,
            flags.cert,
            flags.key,
        )?;
        Ok(Context {
            client: ApiClient::new(
                &server,
                namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
                &credentials,
            )?,
            output: flags.output.unwrap_or_default(),
            namespace_given: namespace.is_some(),
        })
    }

    /// Takes the namespace a file names: it must agree with `--namespace` (or
    /// `FERRY_NAMESPACE`) when one was given; otherwise requests go to the file's.
    pub(crate) fn adopt_namespace(&mut self, from_file: Option<&str>) -> Result<(), CliError> {
        match from_file {
            Some(ns) if ns != self.client.namespace() && self.namespace_given => {
                Err(CliError::usage(format!(
                    "the file is for namespace {ns:?}, the command runs in {:?}: \
                     pass --namespace {ns} or remove namespace from the file",
                    self.client.namespace()
                )))
            }
            Some(ns) => {
                self.client.set_namespace(ns);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// A failed command: what to print on stderr and the exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    /// One of [`exit`].
    pub(crate) code: u8,
    /// The message (already free of secrets).
    pub(crate) message: String,
    /// A suggestion of what to do next, if there is one.
    pub(crate) hint: Option<String>,
}

impl CliError {
    /// An error with an exit code and a message.
    pub(crate) fn new(code: u8, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// A usage error (exit code 2).
    pub(crate) fn usage(message: impl Into<String>) -> CliError {
        CliError::new(exit::USAGE, message)
    }

    /// Adds a hint.
    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }
}

/// Runs a client command: builds the context, runs `command` on a single-threaded runtime,
/// prints the error (masked) and returns the exit code.
pub(crate) fn run<F, Fut>(flags: ClientFlags, command: F) -> ExitCode
where
    F: FnOnce(Context) -> Fut,
    Fut: std::future::Future<Output = Result<u8, CliError>>,
{
    let result = Context::new(flags).and_then(|context| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::new(exit::FAILURE, format!("start the async runtime: {e}")))?
            .block_on(command(context))
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", secrets::mask_text(&err.message));
            if let Some(hint) = &err.hint {
                eprintln!("hint: {}", secrets::mask_text(hint));
            }
            ExitCode::from(err.code)
        }
    }
}

/// An error and its sources, `: `-separated.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a local file named by `-f`; `-` is standard input.
pub(crate) fn read_input(path: &std::path::Path) -> Result<String, CliError> {
    let read = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))
}

/// Asks `question` on the terminal; `Ok(())` when answered yes. Refuses when stdin is not
/// a terminal (a script must say `--yes`).
pub(crate) fn confirm(question: &str) -> Result<(), CliError> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(format!(
            "{question}: refusing without --yes when standard input is not a terminal"
        )));
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::new(exit::FAILURE, format!("read the answer: {e}")))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::new(exit::ABORTED, "aborted"))
    }
}
