//! What the CLI prints on stdout: the API's documents as JSON or YAML for scripts, aligned
//! tables and short summaries for people.
//!
//! Everything printed comes from the server (URIs already masked there) or from a local
//! spec; [`print_doc`] and [`Table::print`] still pass it through
//! [`super::secrets::mask_text`], so a password cannot reach the terminal even from an old
//! or buggy server.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::secrets::mask_text;
use super::{exit, CliError, OutputFormat};

/// Prints `doc` as JSON (pretty) or YAML; `Table` prints YAML too (for documents that have
/// no table shape).
pub(crate) fn print_doc<T: Serialize>(format: OutputFormat, doc: &T) -> Result<(), CliError> {
    print!("{}", mask_text(&render_doc(format, doc)?));
    Ok(())
}

/// `doc` as text in `format` (YAML for `Table`), ending with a newline. Keys keep the
/// order of `doc`'s type (a [`Value`] from the server has them sorted).
pub(crate) fn render_doc<T: Serialize>(format: OutputFormat, doc: &T) -> Result<String, CliError> {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(doc)
            .map(|s| s + "\n")
            .map_err(|e| CliError::new(exit::FAILURE, format!("render JSON: {e}"))),
        OutputFormat::Yaml | OutputFormat::Table => yaml_serde::to_string(doc)
            .map_err(|e| CliError::new(exit::FAILURE, format!("render YAML: {e}"))),
    }
}

/// A table of text cells with a header row, printed with aligned columns.
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, columns separated by two spaces.
    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table.
    pub(crate) fn print(&self) {
        print!("{}", mask_text(&self.render()));
    }
}

/// `key  value` lines with the values aligned.
pub(crate) fn key_values(pairs: &[(String, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {value}\n"))
        .collect()
}

/// The text of a JSON value for a table cell: strings bare, null as `-`.
pub(crate) fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A lag in seconds for people: `0.4s`, `12s`, `3m 20s`, `2h 5m`; `-` when unknown.
pub(crate) fn lag(value: Option<&Value>) -> String {
    let Some(seconds) = value.and_then(Value::as_f64) else {
        return "-".into();
    };
    if seconds < 10.0 {
        format!("{seconds:.1}s")
    } else if seconds < 3600.0 {
        let s = seconds as u64;
        if s < 60 {
            format!("{s}s")
        } else {
            format!("{}m {}s", s / 60, s % 60)
        }
    } else {
        let s = seconds as u64;
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    }
}

/// `GET /changefeeds` as a table.
pub(crate) fn changefeed_table(list: &Value) -> Table {
    let mut table = Table::new(&["ID", "STATE", "PHASE", "CHECKPOINT", "LAG", "ERROR"]);
    for item in items(list) {
        let error = item
            .get("error")
            .filter(|e| !e.is_null())
            .or_else(|| item.get("last_error"));
        table.row(vec![
            cell(item.get("id")),
            cell(item.get("state")),
            cell(item.get("phase")),
            cell(item.get("checkpoint_position")),
            lag(item.get("lag_seconds")),
            one_line(&cell(error), 80),
        ]);
    }
    table
}

/// A changefeed's tables: state, copy progress and error.
pub(crate) fn tables_table(tables: &Value) -> Table {
    let mut table = Table::new(&[
        "TABLE",
        "STATE",
        "ROWS COPIED",
        "CHUNKS",
        "ROWS APPLIED",
        "ERROR",
    ]);
    for item in items(tables) {
        table.row(vec![
            cell(item.get("table")),
            cell(item.get("state")),
            cell(item.get("rows_copied")),
            format!(
                "{}/{}",
                cell(item.get("chunks_done")),
                cell(item.get("chunks_total"))
            ),
            cell(item.get("rows_applied")),
            one_line(&cell(item.get("error")), 80),
        ]);
    }
    table
}

/// A changefeed's history: one action a row, oldest first.
pub(crate) fn history_table(history: &Value) -> Table {
    let mut table = Table::new(&["AT", "ACTION", "RESULT"]);
    for item in items(history) {
        table.row(vec![
            cell(item.get("at")),
            cell(item.get("action")),
            one_line(&cell(item.get("result")), 100),
        ]);
    }
    table
}

/// The `items` of a list answer (or the answer itself when it is an array).
pub(crate) fn items(list: &Value) -> &[Value] {
    list.get("items")
        .unwrap_or(list)
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// The first line of `text`, cut to `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// A changefeed's status for people: a summary block, then per-table snapshot progress.
pub(crate) fn status_text(status: &Value) -> String {
    let field = |key: &str| cell(status.get(key));
    let checkpoint = match status.get("checkpoint_time").and_then(Value::as_str) {
        Some(time) => format!("{} (source time {time})", field("checkpoint_position")),
        None => field("checkpoint_position"),
    };
    let mut pairs: Vec<(String, String)> = vec![
        (
            "changefeed".into(),
            format!("{}/{}", field("namespace"), field("id")),
        ),
        ("state".into(), field("state")),
        ("phase".into(), field("phase")),
        ("checkpoint".into(), checkpoint),
        ("lag".into(), lag(status.get("lag_seconds"))),
        (
            "applied".into(),
            format!(
                "{} rows in {} transactions",
                field("rows_applied"),
                field("transactions_applied")
            ),
        ),
        (
            "snapshot".into(),
            format!("{} rows copied", field("snapshot_rows_copied")),
        ),
    ];
    for (label, key) in [
        ("last error", "last_error"),
        ("last warning", "last_warning"),
    ] {
        if let Some(text) = status.get(key).and_then(Value::as_str) {
            let at = cell(status.get(format!("{key}_time")));
            pairs.push((label.into(), format!("{text} (at {at})")));
        }
    }
    for warning in status
        .get("warnings")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        pairs.push(("warning".into(), cell(Some(warning))));
    }
    let mut out = key_values(&pairs);
    let tables = status
        .get("tables")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if !tables.is_empty() {
        let mut table = Table::new(&["TABLE", "STATE", "ROWS COPIED", "ESTIMATED", "CHUNKS"]);
        for t in tables {
            table.row(vec![
                cell(t.get("table")),
                cell(t.get("state")),
                cell(t.get("rows_copied")),
                cell(t.get("rows_estimated")),
                format!(
                    "{}/{}",
                    cell(t.get("chunks_done")),
                    cell(t.get("chunks_total"))
                ),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["ID", "STATE"]);
        t.row(vec!["orders-long".into(), "running".into()]);
        assert_eq!(t.render(), "ID           STATE\norders-long  running\n");
    }

    #[test]
    fn lags_read_well() {
        assert_eq!(lag(Some(&json!(0.0))), "0.0s");
        assert_eq!(lag(Some(&json!(42.7))), "42s");
        assert_eq!(lag(Some(&json!(200))), "3m 20s");
        assert_eq!(lag(Some(&json!(7500))), "2h 5m");
        assert_eq!(lag(Some(&Value::Null)), "-");
    }

    #[test]
    fn status_summary_shows_progress_and_problems() {
        let text = status_text(&json!({
            "id": "orders", "namespace": "default", "state": "error", "phase": "snapshot",
            "checkpoint_position": null, "lag_seconds": null,
            "last_warning": "connection refused", "last_warning_time": "2026-11-21T10:00:00Z",
            "warnings": ["public.log has no key"],
            "rows_applied": 0, "transactions_applied": 0, "snapshot_rows_copied": 10,
            "tables": [{"table": "public.orders", "state": "copying", "rows_copied": 10,
                        "rows_estimated": 100, "chunks_done": 1, "chunks_total": 10}]
        }));
        assert!(text.contains("state         error\n"), "{text}");
        assert!(text.contains("last warning  connection refused"), "{text}");
        assert!(
            text.contains("warning       public.log has no key"),
            "{text}"
        );
        assert!(text.contains("public.orders  copying  10"), "{text}");
    }
}
