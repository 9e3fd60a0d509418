//! `ferry`: the one binary.
//!
//! - `ferry server` ([`server`]) runs the HTTP API and the changefeed runtime with an
//!   embedded metadata store, configured by [`settings`] (defaults → file → `FERRY_*`
//!   environment → flags).
//! - `ferry changefeed …` and `ferry source …` ([`cli`]) are the client: each command is a
//!   request to a running server's `/api/v2`, printed as a table, JSON or YAML, with a
//!   distinct exit code per kind of failure ([`cli::exit`], documented in `docs/cli.md`).

mod cli;
mod server;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cli::changefeed::ChangefeedArgs;
use crate::cli::source::SourceArgs;
use crate::cli::LeadingClientFlags;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Change data capture and database replication",
    after_help = "Run `ferry server` for the server; `ferry changefeed --help` and \
                  `ferry source --help` for the client commands. Exit codes: docs/cli.md."
)]
struct Cli {
    #[command(flatten)]
    client: LeadingClientFlags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: HTTP API plus the changefeed runtime.
    Server(server::ServerArgs),
    /// Manage changefeeds on a server.
    #[command(alias = "cf")]
    Changefeed(ChangefeedArgs),
    /// Manage registered sources on a server.
    Source(SourceArgs),
    /// Compare a changefeed's target with its source while it runs, and repair it.
    Diff(cli::diff::DiffArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server::main(args),
        Command::Changefeed(args) => cli::run(args.flags.or(cli.client), |context| {
            cli::changefeed::run(context, args.command)
        }),
        Command::Source(args) => cli::run(args.flags.or(cli.client), |context| {
            cli::source::run(context, args.command)
        }),
        Command::Diff(args) => cli::run(args.flags.or(cli.client), |context| {
            cli::diff::run(context, args.command)
        }),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
