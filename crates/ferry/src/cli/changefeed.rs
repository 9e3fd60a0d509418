//! `ferry changefeed …`: create, list, get, update, pause, resume, delete, status, synced,
//! check; each one request (or two) to `/api/v2/changefeeds`.
//!
//! `get` prints the editable configuration as YAML; `update -f` takes that file back
//! (a URI left masked keeps its stored password, see [`super::spec`]).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::output::{self, print_doc};
use super::spec::{self, ChangefeedSpec, Purpose};
use super::{confirm, exit, read_input, CliError, ClientFlags, Context, OutputFormat};

/// `ferry changefeed`.
#[derive(clap::Args)]
pub(crate) struct ChangefeedArgs {
    #[command(flatten)]
    pub(crate) flags: ClientFlags,
    #[command(subcommand)]
    pub(crate) command: ChangefeedCommand,
}

/// The changefeed commands.
#[derive(clap::Subcommand)]
pub(crate) enum ChangefeedCommand {
    /// Create a changefeed (and start it, unless --start=false) from a file and/or flags.
    Create(SpecFlags),
    /// List changefeeds.
    List {
        /// Only those in this state: running, paused, error, failed, finished, stopped, all.
        #[arg(long)]
        state: Option<String>,
    },
    /// Print a changefeed's configuration as YAML, ready to edit and pass to `update`.
    Get {
        /// Changefeed id.
        name: String,
        /// Write the YAML to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        output_file: Option<PathBuf>,
    },
    /// Change a paused, stopped or failed changefeed's tables, URIs or options.
    Update {
        /// Changefeed id.
        name: String,
        #[command(flatten)]
        spec: SpecFlags,
    },
    /// Pause a changefeed (keeps its slot; the source retains WAL meanwhile).
    Pause {
        /// Changefeed id.
        name: String,
    },
    /// Resume a paused, stopped or failed changefeed.
    Resume {
        /// Changefeed id.
        name: String,
        /// Restart from this source position (`0/16B3748`) instead of the checkpoint.
        #[arg(long, value_name = "LSN")]
        overwrite_checkpoint_position: Option<String>,
    },
    /// Leave out the source transaction the target refused (the status's
    /// last_error_position) and resume; with --table only its changes to that table.
    Skip {
        /// Changefeed id.
        name: String,
        /// The refused transaction's commit position, as the status shows it.
        position: String,
        /// Leave out only the transaction's changes to this table (`schema.table`).
        #[arg(long, value_name = "TABLE")]
        table: Option<String>,
    },
    /// The operator actions taken on a changefeed (also after it was deleted): time,
    /// action, result; `-o json` adds each one's parameters (secrets masked).
    History {
        /// Changefeed id.
        name: String,
    },
    /// Copy every table again from a fresh snapshot (the target tables are emptied first),
    /// keeping the slot, then stream on.
    Resync {
        /// Changefeed id.
        name: String,
    },
    /// One table of a changefeed.
    #[command(subcommand)]
    Table(TableCommand),
    /// The changefeed's tables with their state and copy progress.
    Tables {
        /// Changefeed id.
        name: String,
    },
    /// Delete a changefeed: stops it and drops its slot and publication (target data
    /// stays). Asks for confirmation unless --yes.
    Delete {
        /// Changefeed id.
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Show state, phase, checkpoint, lag, errors and per-table snapshot progress.
    Status {
        /// Changefeed id.
        name: String,
        /// Keep showing it live (progress bars on a terminal) until Ctrl-C.
        #[arg(long, short = 'w')]
        watch: bool,
        /// Time between two refreshes of --watch.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// Whether everything the source committed so far is applied (exit 9 when not).
    Synced {
        /// Changefeed id.
        name: String,
    },
    /// Set every target sequence of the replicated tables to at least the source's value
    /// (logical replication does not carry sequences; run it before writing the target).
    SyncSequences {
        /// Changefeed id.
        name: String,
    },
    /// Create the source's foreign keys between the replicated tables on the target (done
    /// by itself when the changefeed finishes; refused while it runs: pause it first).
    CreateForeignKeys {
        /// Changefeed id.
        name: String,
    },
    /// Validate a configuration without creating anything: errors, warnings and the tables
    /// it would replicate (exit 8 on errors).
    Check(SpecFlags),
}

/// `ferry changefeed table …`.
#[derive(clap::Subcommand)]
pub(crate) enum TableCommand {
    /// Stop applying one table's changes; the others go on.
    Pause {
        /// Changefeed id.
        name: String,
        /// `schema.table`.
        table: String,
    },
    /// Bring back a paused or failed table: copied again, then streamed without a gap.
    Resume {
        /// Changefeed id.
        name: String,
        /// `schema.table`.
        table: String,
    },
    /// Stop replicating one table; its target table stays.
    Remove {
        /// Changefeed id.
        name: String,
        /// `schema.table`.
        table: String,
    },
    /// Copy one table again from a fresh snapshot (emptied on the target first) and hand
    /// over to the stream without a gap.
    Resync {
        /// Changefeed id.
        name: String,
        /// `schema.table`.
        table: String,
    },
}

/// A configuration from `-f FILE` and/or flags (flags win).
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct SpecFlags {
    /// YAML or JSON file with the configuration (`-` reads stdin).
    #[arg(long = "file", short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    /// Changefeed id.
    #[arg(long)]
    id: Option<String>,
    /// Name of a registered source (instead of --source-uri).
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// Source database: postgres://user:password@host:port/db or mariadb://user:password@host:port/db
    #[arg(long, value_name = "URI")]
    source_uri: Option<String>,
    /// Sink: postgres://…, blackhole://, file:///DIR?format=debezium-json or
    /// nats://HOST:PORT?stream=NAME&subject_prefix=PFX
    #[arg(long, value_name = "URI")]
    sink_uri: Option<String>,
    /// Table rules, comma-separated or repeated: 'public.*,!public.audit_*'
    #[arg(long, value_name = "RULES", value_delimiter = ',')]
    tables: Option<Vec<String>>,
    /// Finish once every transaction committed at or before this source position is applied.
    #[arg(long, value_name = "LSN")]
    target_position: Option<String>,
    /// Copy the tables once and finish, without streaming changes.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    snapshot_only: Option<bool>,
    /// Start the changefeed after creating it (create only; --start=false leaves it stopped).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    start: Option<bool>,
}

impl SpecFlags {
    /// The file (if any) overlaid with the flags.
    fn load(&self) -> Result<ChangefeedSpec, CliError> {
        let from_file = match &self.file {
            Some(path) => spec::parse(&read_input(path)?, &path.display().to_string())?,
            None => ChangefeedSpec::default(),
        };
        Ok(from_file.overlay(ChangefeedSpec {
            id: self.id.clone(),
            namespace: None,
            source: self.source.clone(),
            source_uri: self.source_uri.clone(),
            sink_uri: self.sink_uri.clone(),
            tables: self.tables.clone(),
            options: None,
            target_position: self.target_position.clone(),
            snapshot_only: self.snapshot_only,
            start: self.start,
        }))
    }
}

/// Runs one changefeed command; returns the exit code.
pub(crate) async fn run(mut context: Context, command: ChangefeedCommand) -> Result<u8, CliError> {
    // Commands that read a file may move to the namespace it names.
    let spec = match &command {
        ChangefeedCommand::Create(flags)
        | ChangefeedCommand::Check(flags)
        | ChangefeedCommand::Update { spec: flags, .. } => {
            let spec = flags.load()?;
            context.adopt_namespace(spec.namespace.as_deref())?;
            spec
        }
        _ => ChangefeedSpec::default(),
    };
    let client = &context.client;
    let ns = client.namespace().to_string();
    match command {
        ChangefeedCommand::Create(_) => {
            spec::refuse(
                spec.problems(Purpose::Create),
                "the changefeed configuration",
            )?;
            let created = client
                .post(&["changefeeds"], Some(&spec.create_body()))
                .await?;
            report(&context, &created, |s| {
                format!(
                    "changefeed {ns}/{} created ({})",
                    cell(s, "id"),
                    cell(s, "state")
                )
            })
        }
        ChangefeedCommand::List { state } => {
            let query: Vec<(&str, &str)> = state.iter().map(|s| ("state", s.as_str())).collect();
            let list = client.get(&["changefeeds"], &query).await?;
            match context.output {
                OutputFormat::Table => output::changefeed_table(&list).print(),
                format => print_doc(format, &list)?,
            }
            Ok(0)
        }
        ChangefeedCommand::Get { name, output_file } => {
            let doc = client.get(&["changefeeds", &name], &[]).await?;
            let spec = ChangefeedSpec::from_server(&doc);
            let text = match context.output {
                OutputFormat::Json => output::render_doc(OutputFormat::Json, &spec)?,
                _ => format!(
                    "# changefeed {ns}/{name}: edit, then `ferry changefeed update {name} -f FILE`\n\
                     # (passwords show as ***; a URI left unchanged keeps its stored password)\n{}",
                    output::render_doc(OutputFormat::Yaml, &spec)?
                ),
            };
            match output_file {
                Some(path) => {
                    std::fs::write(&path, &text).map_err(|e| {
                        CliError::new(exit::FAILURE, format!("write {}: {e}", path.display()))
                    })?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{}", super::secrets::mask_text(&text)),
            }
            Ok(0)
        }
        ChangefeedCommand::Update { name, .. } => {
            spec::refuse(
                spec.problems(Purpose::Update),
                "the changefeed configuration",
            )?;
            if spec.id.as_deref().is_some_and(|id| id != name) {
                return Err(CliError::usage(format!(
                    "the file is for changefeed {:?}, not {name:?}; ids cannot change",
                    spec.id.unwrap_or_default()
                )));
            }
            let current = client.get(&["changefeeds", &name], &[]).await?;
            let changes = spec.update_body(&ChangefeedSpec::from_server(&current));
            if changes.is_empty() {
                eprintln!("nothing to change in changefeed {ns}/{name}");
                return Ok(0);
            }
            let updated = client
                .put(&["changefeeds", &name], &Value::Object(changes))
                .await
                .map_err(|e| state_hint(e, &name))?;
            report(&context, &updated, |s| {
                format!("changefeed {ns}/{name} updated ({})", state_of(s))
            })
        }
        ChangefeedCommand::Pause { name } => {
            let paused = client.post(&["changefeeds", &name, "pause"], None).await?;
            report(&context, &paused, |s| {
                format!("changefeed {ns}/{name} paused ({})", state_of(s))
            })
        }
        ChangefeedCommand::Skip {
            name,
            position,
            table,
        } => {
            let body = json!({ "position": position, "table": table });
            let resumed = client
                .post(&["changefeeds", &name, "skip"], Some(&body))
                .await?;
            report(&context, &resumed, |s| {
                format!(
                    "changefeed {ns}/{name}: transaction {position} skipped, resumed ({})",
                    state_of(s)
                )
            })
        }
        ChangefeedCommand::Resync { name } => {
            let status = client.post(&["changefeeds", &name, "resync"], None).await?;
            report(&context, &status, |s| {
                format!(
                    "changefeed {ns}/{name}: every table is copied again ({})",
                    state_of(s)
                )
            })
        }
        ChangefeedCommand::Tables { name } => {
            let tables = client.get(&["changefeeds", &name, "tables"], &[]).await?;
            match context.output {
                OutputFormat::Table => output::tables_table(&tables).print(),
                format => print_doc(format, &tables)?,
            }
            Ok(0)
        }
        ChangefeedCommand::Table(table_command) => {
            let (name, table, verb, done) = match table_command {
                TableCommand::Pause { name, table } => (name, table, "pause", "paused"),
                TableCommand::Resume { name, table } => {
                    (name, table, "resume", "copied again, then streamed")
                }
                TableCommand::Resync { name, table } => (name, table, "resync", "copied again"),
                TableCommand::Remove { name, table } => {
                    (name, table, "remove", "no longer replicated")
                }
            };
            let path = ["changefeeds", name.as_str(), "tables", table.as_str(), verb];
            let status = if verb == "remove" {
                client.delete(&path[..4], &[]).await?
            } else {
                client.post(&path, None).await?
            };
            report(&context, &status, |s| {
                format!(
                    "changefeed {ns}/{name}: table {table} {done} ({})",
                    state_of(s)
                )
            })
        }
        ChangefeedCommand::Resume {
            name,
            overwrite_checkpoint_position,
        } => {
            // The server parses the position in the notation of the changefeed's source.
            let body = overwrite_checkpoint_position
                .as_ref()
                .map(|position| json!({ "overwrite_checkpoint_position": position }));
            let resumed = client
                .post(&["changefeeds", &name, "resume"], body.as_ref())
                .await?;
            report(&context, &resumed, |s| {
                format!("changefeed {ns}/{name} resumed ({})", state_of(s))
            })
        }
        ChangefeedCommand::Delete { name, yes } => {
            if !yes {
                confirm(&format!(
                    "delete changefeed {ns}/{name} (drops its replication slot and publication)?"
                ))?;
            }
            let deleted = client.delete(&["changefeeds", &name], &[]).await?;
            report(&context, &deleted, |d| {
                if d.get("deleted") == Some(&Value::Bool(false)) {
                    format!("changefeed {ns}/{name} did not exist")
                } else {
                    format!("changefeed {ns}/{name} deleted")
                }
            })
        }
        ChangefeedCommand::Status {
            name,
            watch,
            interval,
        } => {
            if watch {
                return super::watch::watch(&context, &name, interval).await;
            }
            let status = client.get(&["changefeeds", &name, "status"], &[]).await?;
            match context.output {
                OutputFormat::Table => print!(
                    "{}",
                    super::secrets::mask_text(&output::status_text(&status))
                ),
                format => print_doc(format, &status)?,
            }
            Ok(0)
        }
        ChangefeedCommand::History { name } => {
            let history = client.get(&["changefeeds", &name, "history"], &[]).await?;
            match context.output {
                OutputFormat::Table => output::history_table(&history).print(),
                format => print_doc(format, &history)?,
            }
            Ok(0)
        }
        ChangefeedCommand::Synced { name } => {
            let synced = client.get(&["changefeeds", &name, "synced"], &[]).await?;
            let is_synced = synced.get("synced") == Some(&Value::Bool(true));
            match context.output {
                OutputFormat::Table if is_synced => println!(
                    "synced: checkpoint {} ≥ source {}",
                    cell(&synced, "checkpoint_position"),
                    cell(&synced, "source_position")
                ),
                OutputFormat::Table => println!(
                    "not synced: {} (checkpoint {}, source {})",
                    cell(&synced, "info"),
                    cell(&synced, "checkpoint_position"),
                    cell(&synced, "source_position")
                ),
                format => print_doc(format, &synced)?,
            }
            Ok(if is_synced { 0 } else { exit::NOT_SYNCED })
        }
        ChangefeedCommand::SyncSequences { name } => {
            let synced = client
                .post(&["changefeeds", &name, "sequences", "sync"], None)
                .await?;
            report(&context, &synced, |s| {
                let list = s["sequences"].as_array().cloned().unwrap_or_default();
                let mut lines = vec![format!(
                    "{} sequence(s) of changefeed {ns}/{name}:",
                    list.len()
                )];
                for q in &list {
                    lines.push(format!(
                        "  {}: source {}, target was {}{}",
                        cell(q, "sequence"),
                        cell(q, "source_value"),
                        cell(q, "target_before"),
                        match (q["set"].as_bool(), q.get("missing")) {
                            (_, Some(m)) => format!(" ({})", output::cell(Some(m))),
                            (Some(true), _) => " → set".to_string(),
                            _ => " (kept)".to_string(),
                        }
                    ));
                }
                lines.join("\n")
            })
        }
        ChangefeedCommand::CreateForeignKeys { name } => {
            let created = client
                .post(&["changefeeds", &name, "foreign-keys", "create"], None)
                .await?;
            report(&context, &created, |s| {
                let list = s["foreign_keys"].as_array().cloned().unwrap_or_default();
                let mut lines = vec![format!(
                    "{} foreign key(s) of changefeed {ns}/{name}:",
                    list.len()
                )];
                for k in &list {
                    lines.push(format!(
                        "  {}.{} → {}: {}{}",
                        cell(k, "table"),
                        cell(k, "name"),
                        cell(k, "references"),
                        cell(k, "outcome"),
                        k.get("reason")
                            .map(|r| format!(" ({})", output::cell(Some(r))))
                            .unwrap_or_default()
                    ));
                }
                lines.join("\n")
            })
        }
        ChangefeedCommand::Check(_) => super::check::check(&context, &spec).await,
    }
}

/// Prints a mutation's answer: a sentence (table) or the document (json, yaml).
pub(super) fn report(
    context: &Context,
    answer: &Value,
    sentence: impl FnOnce(&Value) -> String,
) -> Result<u8, CliError> {
    match context.output {
        OutputFormat::Table => println!("{}", super::secrets::mask_text(&sentence(answer))),
        format => print_doc(format, answer)?,
    }
    Ok(0)
}

/// The field `key` of `doc` as a table cell.
pub(super) fn cell(doc: &Value, key: &str) -> String {
    output::cell(doc.get(key))
}

/// `state running` from an answer that has a state, else `done`.
fn state_of(doc: &Value) -> String {
    match doc.get("state").and_then(Value::as_str) {
        Some(state) => format!("state {state}"),
        None => "done".into(),
    }
}

/// A 409 on update is nearly always "still running": say how to get past it.
fn state_hint(err: CliError, name: &str) -> CliError {
    if err.code == exit::CONFLICT {
        err.with_hint(format!(
            "`ferry changefeed pause {name}`, update, then `ferry changefeed resume {name}`"
        ))
    } else {
        err
    }
}
