//! `ferry source …`: registered source connections (`/api/v2/sources`), which changefeeds
//! name with `source: NAME` instead of repeating a URI and its password.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::output::{self, cell, items, print_doc, Table};
use super::secrets::mask_text;
use super::spec::{self, Purpose, SourceSpec};
use super::{confirm, exit, read_input, CliError, ClientFlags, Context, OutputFormat};

/// `ferry source`.
#[derive(clap::Args)]
pub(crate) struct SourceArgs {
    #[command(flatten)]
    pub(crate) flags: ClientFlags,
    #[command(subcommand)]
    pub(crate) command: SourceCommand,
}

/// The source commands.
#[derive(clap::Subcommand)]
pub(crate) enum SourceCommand {
    /// Register a source from a file and/or flags.
    Create(SourceFlags),
    /// List registered sources.
    List,
    /// Print a source's configuration as YAML, ready to edit and pass to `update`.
    Get {
        /// Source name.
        name: String,
        /// Write the YAML to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        output_file: Option<PathBuf>,
    },
    /// Change a source's URI.
    Update {
        /// Source name.
        name: String,
        #[command(flatten)]
        spec: SourceFlags,
    },
    /// Remove a source (refused while changefeeds use it, unless --force).
    Delete {
        /// Source name.
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Delete it even when changefeeds use it.
        #[arg(long)]
        force: bool,
    },
    /// Whether the source is reachable and set up for logical replication.
    Status {
        /// Source name.
        name: String,
    },
}

/// A source from `-f FILE` and/or flags (flags win).
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct SourceFlags {
    /// YAML or JSON file with the source (`-` reads stdin).
    #[arg(long = "file", short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    /// Source name.
    #[arg(long = "name", id = "source_name", value_name = "NAME")]
    name: Option<String>,
    /// postgres://user:password@host:port/db
    #[arg(long, value_name = "URI")]
    uri: Option<String>,
}

impl SourceFlags {
    fn load(&self) -> Result<SourceSpec, CliError> {
        let from_file: SourceSpec = match &self.file {
            Some(path) => spec::parse(&read_input(path)?, &path.display().to_string())?,
            None => SourceSpec::default(),
        };
        Ok(SourceSpec {
            name: self.name.clone().or(from_file.name),
            namespace: from_file.namespace,
            uri: self.uri.clone().or(from_file.uri),
        })
    }
}

/// Runs one source command; returns the exit code.
pub(crate) async fn run(mut context: Context, command: SourceCommand) -> Result<u8, CliError> {
    // Commands that read a file may move to the namespace it names.
    let spec = match &command {
        SourceCommand::Create(flags) | SourceCommand::Update { spec: flags, .. } => {
            let spec = flags.load()?;
            context.adopt_namespace(spec.namespace.as_deref())?;
            spec
        }
        _ => SourceSpec::default(),
    };
    let client = &context.client;
    let ns = client.namespace().to_string();
    match command {
        SourceCommand::Create(_) => {
            spec::refuse(spec.problems(Purpose::Create), "the source")?;
            let body = json!({ "name": spec.name, "uri": spec.uri });
            let created = client.post(&["sources"], Some(&body)).await?;
            report(
                &context,
                &created,
                format!("source {ns}/{} created", cell(created.get("name"))),
            )
        }
        SourceCommand::List => {
            let list = client.get(&["sources"], &[]).await?;
            match context.output {
                OutputFormat::Table => {
                    let mut table = Table::new(&["NAME", "URI", "CHANGEFEEDS"]);
                    for item in items(&list) {
                        table.row(vec![
                            cell(item.get("name")),
                            cell(item.get("uri")),
                            used_by(item),
                        ]);
                    }
                    table.print();
                }
                format => print_doc(format, &list)?,
            }
            Ok(0)
        }
        SourceCommand::Get { name, output_file } => {
            let doc = client.get(&["sources", &name], &[]).await?;
            let text_of = |key: &str| doc.get(key).and_then(Value::as_str).map(String::from);
            let spec = SourceSpec {
                name: text_of("name"),
                namespace: text_of("namespace"),
                uri: text_of("uri"),
            };
            let text = match context.output {
                OutputFormat::Json => output::render_doc(OutputFormat::Json, &spec)?,
                _ => format!(
                    "# source {ns}/{name}: edit, then `ferry source update {name} -f FILE`\n\
                     # (the password shows as ***, which keeps the stored one)\n{}",
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
                None => print!("{}", mask_text(&text)),
            }
            Ok(0)
        }
        SourceCommand::Update { name, .. } => {
            spec::refuse(spec.problems(Purpose::Update), "the source")?;
            if spec.name.as_deref().is_some_and(|n| n != name) {
                return Err(CliError::usage(format!(
                    "the file is for source {:?}, not {name:?}; names cannot change",
                    spec.name.unwrap_or_default()
                )));
            }
            let current = client.get(&["sources", &name], &[]).await?;
            let Some(uri) = spec
                .uri
                .filter(|uri| current.get("uri").and_then(Value::as_str) != Some(uri.as_str()))
            else {
                eprintln!("nothing to change in source {ns}/{name}");
                return Ok(0);
            };
            let updated = client
                .put(&["sources", &name], &json!({ "uri": uri }))
                .await?;
            report(&context, &updated, format!("source {ns}/{name} updated"))
        }
        SourceCommand::Delete { name, yes, force } => {
            if !yes {
                confirm(&format!("delete source {ns}/{name}?"))?;
            }
            let query: &[(&str, &str)] = if force { &[("force", "true")] } else { &[] };
            let deleted = client.delete(&["sources", &name], query).await?;
            let sentence = if deleted.get("deleted") == Some(&Value::Bool(false)) {
                format!("source {ns}/{name} did not exist")
            } else {
                format!("source {ns}/{name} deleted")
            };
            report(&context, &deleted, sentence)
        }
        SourceCommand::Status { name } => {
            let status = client.get(&["sources", &name, "status"], &[]).await?;
            match context.output {
                OutputFormat::Table => print!("{}", mask_text(&status_text(&status))),
                format => print_doc(format, &status)?,
            }
            Ok(0)
        }
    }
}

/// `encrypted (TLSv1.3, TLS_AES_256_GCM_SHA384)` or `not encrypted`.
fn connection_text(tls: &serde_json::Map<String, Value>) -> String {
    if tls.get("encrypted") != Some(&Value::Bool(true)) {
        return "not encrypted".into();
    }
    let details: Vec<&str> = ["version", "cipher"]
        .iter()
        .filter_map(|k| tls.get(*k).and_then(Value::as_str))
        .collect();
    match details.is_empty() {
        true => "encrypted".into(),
        false => format!("encrypted ({})", details.join(", ")),
    }
}

/// `GET /sources/{name}/status` for people.
fn status_text(status: &Value) -> String {
    let field = |key: &str| cell(status.get(key));
    let mut pairs = vec![
        (
            "source".to_string(),
            format!("{}/{}", field("namespace"), field("name")),
        ),
        ("reachable".into(), field("reachable")),
        ("usable".into(), field("usable")),
    ];
    if let Some(error) = status.get("error").and_then(Value::as_str) {
        pairs.push(("error".into(), error.to_string()));
    }
    if let Some(tls) = status.get("tls").and_then(Value::as_object) {
        pairs.push(("connection".into(), connection_text(tls)));
    }
    if let Some(facts) = status.get("facts").and_then(Value::as_object) {
        for (key, value) in facts {
            pairs.push((key.replace('_', " "), cell(Some(value))));
        }
    }
    pairs.push(("changefeeds".into(), used_by(status)));
    let mut out = output::key_values(&pairs);
    let slots = items(status.get("slots").unwrap_or(&Value::Null));
    if !slots.is_empty() {
        let mut table = Table::new(&["CHANGEFEED", "SLOT", "CONFIRMED", "RETAINED WAL BYTES"]);
        for slot in slots {
            table.row(vec![
                cell(slot.get("changefeed")),
                cell(slot.get("slot")),
                cell(slot.get("confirmed_flush_lsn")),
                cell(slot.get("retained_wal_bytes")),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    let pending = items(status.get("pending_cleanups").unwrap_or(&Value::Null));
    if !pending.is_empty() {
        let mut table = Table::new(&["PENDING CLEAN-UP OF", "SLOT", "SINCE", "LAST ERROR"]);
        for p in pending {
            table.row(vec![
                cell(p.get("changefeed")),
                cell(p.get("slot")),
                cell(p.get("since")),
                cell(p.get("last_error")),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    let orphans = items(status.get("orphans").unwrap_or(&Value::Null));
    if !orphans.is_empty() {
        let mut table = Table::new(&["ORPHAN", "NAME", "DATABASE", "RETAINED WAL BYTES"]);
        for o in orphans {
            table.row(vec![
                cell(o.get("kind")),
                cell(o.get("name")),
                cell(o.get("database")),
                cell(o.get("retained_wal_bytes")),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
        out.push_str(
            "\norphans: ferry_* objects no changefeed of this server owns; drop them once sure \
             no other Ferry server uses them\n",
        );
    }
    out
}

/// The changefeeds that use a source, comma-separated.
fn used_by(item: &Value) -> String {
    match item.get("changefeeds").and_then(Value::as_array) {
        Some(ids) if !ids.is_empty() => ids
            .iter()
            .map(|id| cell(Some(id)))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    }
}

fn report(context: &Context, answer: &Value, sentence: String) -> Result<u8, CliError> {
    match context.output {
        OutputFormat::Table => println!("{}", mask_text(&sentence)),
        format => print_doc(format, answer)?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_text_says_encrypted_and_how() {
        let tls = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            connection_text(&tls(serde_json::json!({
                "encrypted": true, "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"
            }))),
            "encrypted (TLSv1.3, TLS_AES_256_GCM_SHA384)"
        );
        assert_eq!(
            connection_text(&tls(serde_json::json!({"encrypted": false}))),
            "not encrypted"
        );
    }
}
