//! `ferry diff …`: online diffs of a changefeed's target with its source (Vitess's VDiff):
//! create, show, list, stop, resume, delete; each one request to
//! `/api/v2/changefeeds/{id}/diffs`.

use serde_json::{json, Value};

use super::changefeed::{cell, report};
use super::output::{self, print_doc, Table};
use super::{confirm, CliError, ClientFlags, Context, OutputFormat};

/// `ferry diff`.
#[derive(clap::Args)]
pub(crate) struct DiffArgs {
    #[command(flatten)]
    pub(crate) flags: ClientFlags,
    #[command(subcommand)]
    pub(crate) command: DiffCommand,
}

/// The diff commands.
#[derive(clap::Subcommand)]
pub(crate) enum DiffCommand {
    /// Start comparing a changefeed's target with its source while it runs.
    Create {
        /// Changefeed id.
        changefeed: String,
        /// Compare only this table (`schema.table`; repeat for several). Default: all.
        #[arg(long = "table", value_name = "TABLE")]
        tables: Vec<String>,
        /// Fix what differs through the changefeed's sink (tables with a key only).
        #[arg(long)]
        repair: bool,
        /// Rows per chunk (default 10000).
        #[arg(long, value_name = "ROWS")]
        rows_per_chunk: Option<u64>,
        /// Most source rows compared per second (default: no limit).
        #[arg(long, value_name = "ROWS_PER_SECOND")]
        rate_limit: Option<u64>,
    },
    /// Show a diff: state, progress and what differs per table.
    Show {
        /// Changefeed id.
        changefeed: String,
        /// Diff id.
        diff: String,
    },
    /// List a changefeed's diffs.
    List {
        /// Changefeed id.
        changefeed: String,
    },
    /// Stop a running diff (a resume continues after its last finished chunk).
    Stop {
        /// Changefeed id.
        changefeed: String,
        /// Diff id.
        diff: String,
    },
    /// Resume a stopped or failed diff.
    Resume {
        /// Changefeed id.
        changefeed: String,
        /// Diff id.
        diff: String,
    },
    /// Delete a diff and what it found. Asks for confirmation unless --yes.
    Delete {
        /// Changefeed id.
        changefeed: String,
        /// Diff id.
        diff: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Runs one diff command.
pub(crate) async fn run(context: Context, command: DiffCommand) -> Result<u8, CliError> {
    let client = &context.client;
    let answer = match command {
        DiffCommand::Create {
            changefeed,
            tables,
            repair,
            rows_per_chunk,
            rate_limit,
        } => {
            let mut body = json!({ "repair": repair });
            if !tables.is_empty() {
                body["tables"] = json!(tables);
            }
            if let Some(rows) = rows_per_chunk {
                body["rows_per_chunk"] = json!(rows);
            }
            if let Some(rate) = rate_limit {
                body["rate_limit"] = json!(rate);
            }
            let diff = client
                .post(&["changefeeds", &changefeed, "diffs"], Some(&body))
                .await?;
            return report(&context, &diff, |d| {
                format!(
                    "diff {} of changefeed {changefeed} started{}; follow it with `ferry diff \
                     show {changefeed} {}`",
                    cell(d, "id"),
                    if repair { " (repairing)" } else { "" },
                    cell(d, "id")
                )
            });
        }
        DiffCommand::Show { changefeed, diff } => {
            client
                .get(&["changefeeds", &changefeed, "diffs", &diff], &[])
                .await?
        }
        DiffCommand::List { changefeed } => {
            let list = client
                .get(&["changefeeds", &changefeed, "diffs"], &[])
                .await?;
            match context.output {
                OutputFormat::Table => list_table(&list).print(),
                format => print_doc(format, &list)?,
            }
            return Ok(0);
        }
        DiffCommand::Stop { changefeed, diff } => {
            let stopped = client
                .post(&["changefeeds", &changefeed, "diffs", &diff, "stop"], None)
                .await?;
            return report(&context, &stopped, |d| {
                format!(
                    "diff {diff} of changefeed {changefeed} stopped after {} of {} chunks",
                    output::cell(d["progress"].get("chunks_done")),
                    output::cell(d["progress"].get("chunks"))
                )
            });
        }
        DiffCommand::Resume { changefeed, diff } => {
            let resumed = client
                .post(
                    &["changefeeds", &changefeed, "diffs", &diff, "resume"],
                    None,
                )
                .await?;
            return report(&context, &resumed, |_| {
                format!("diff {diff} of changefeed {changefeed} resumed")
            });
        }
        DiffCommand::Delete {
            changefeed,
            diff,
            yes,
        } => {
            if !yes {
                confirm(&format!("delete diff {diff} of changefeed {changefeed}?"))?;
            }
            client
                .delete(&["changefeeds", &changefeed, "diffs", &diff], &[])
                .await?;
            return report(&context, &json!({ "deleted": true }), |_| {
                format!("diff {diff} of changefeed {changefeed} deleted")
            });
        }
    };
    match context.output {
        OutputFormat::Table => print!("{}", diff_text(&answer)),
        format => print_doc(format, &answer)?,
    }
    Ok(0)
}

/// One line per diff.
fn list_table(list: &Value) -> Table {
    let mut table = Table::new(&[
        "ID",
        "STATE",
        "REPAIR",
        "CHUNKS",
        "ROWS",
        "MISSING",
        "EXTRA",
        "DIFFERENT",
        "CREATED",
    ]);
    for diff in output::items(list) {
        let sum = |kind: &str| {
            diff["tables"]
                .as_array()
                .map_or(0, |t| {
                    t.iter().filter_map(|t| t[kind].as_u64()).sum::<u64>()
                })
                .to_string()
        };
        let progress = &diff["progress"];
        table.row(vec![
            cell(diff, "id"),
            cell(diff, "state"),
            cell(diff, "repair"),
            format!(
                "{}/{}",
                output::cell(progress.get("chunks_done")),
                output::cell(progress.get("chunks"))
            ),
            output::cell(progress.get("rows_compared")),
            sum("missing"),
            sum("extra"),
            sum("different"),
            cell(diff, "created_at"),
        ]);
    }
    table
}

/// A diff for people: its state and progress, then one line per table, then the sample
/// keys of tables that differ.
fn diff_text(diff: &Value) -> String {
    let progress = &diff["progress"];
    let mut out =
        format!(
        "diff {} of changefeed {}: {}{}\nprogress: {}/{} chunks, {}/{} tables, {} rows compared",
        cell(diff, "id"),
        cell(diff, "changefeed"),
        cell(diff, "state"),
        if diff["repair"] == Value::Bool(true) { " (repair)" } else { "" },
        output::cell(progress.get("chunks_done")),
        output::cell(progress.get("chunks")),
        output::cell(progress.get("tables_done")),
        output::cell(progress.get("tables")),
        output::cell(progress.get("rows_compared")),
    );
    if let Some(eta) = progress["eta_seconds"].as_u64() {
        out.push_str(&format!(", about {eta}s left"));
    }
    out.push('\n');
    if let Some(error) = diff["error"].as_str() {
        out.push_str(&format!("error: {}\n", super::secrets::mask_text(error)));
    }
    let mut table = Table::new(&[
        "TABLE",
        "MISSING",
        "EXTRA",
        "DIFFERENT",
        "REPAIRED",
        "CHUNKS",
    ]);
    let tables = diff["tables"].as_array().cloned().unwrap_or_default();
    for t in &tables {
        table.row(vec![
            cell(t, "table"),
            cell(t, "missing"),
            cell(t, "extra"),
            cell(t, "different"),
            cell(t, "repaired"),
            format!("{}/{}", cell(t, "chunks_done"), cell(t, "chunks")),
        ]);
    }
    out.push_str(&table.render());
    for t in &tables {
        for kind in ["missing", "extra", "different"] {
            let keys: Vec<&str> = t["sample_keys"][kind]
                .as_array()
                .map(|keys| keys.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !keys.is_empty() {
                out.push_str(&format!(
                    "{} {kind}: {}\n",
                    cell(t, "table"),
                    keys.join(", ")
                ));
            }
        }
    }
    out
}
