//! `ferry changefeed status NAME --watch`: a live view until Ctrl-C.
//!
//! On a terminal: a header line (state, phase, lag, rows applied, checkpoint) and one
//! progress bar per table still being snapshotted, redrawn in place by `indicatif`. When
//! stdout is not a terminal (a pipe, a log file, a test) the bars are not drawn at all and
//! one plain summary line is printed per poll instead, so the output stays readable.
//!
//! The view ends on Ctrl-C (exit 0) or when the changefeed disappears (exit 4).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::output::{cell, lag, one_line};
use super::secrets::mask_text;
use super::{CliError, Context};

/// Polls the status every `interval` and shows it, until Ctrl-C.
pub(crate) async fn watch(context: &Context, id: &str, interval: Duration) -> Result<u8, CliError> {
    let mut view = if std::io::stdout().is_terminal() {
        View::Bars(Bars::new())
    } else {
        View::Lines
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let status = context
            .client
            .get(&["changefeeds", id, "status"], &[])
            .await?;
        match &mut view {
            View::Bars(bars) => bars.show(&status),
            View::Lines => println!("{}", mask_text(&summary_line(&status))),
        }
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    if let View::Bars(bars) = view {
        bars.finish();
    }
    Ok(0)
}

enum View {
    Bars(Bars),
    Lines,
}

/// One line: `state=running phase=snapshot lag=1.2s applied=… snapshot=…/… checkpoint=…`.
fn summary_line(status: &Value) -> String {
    let (copied, estimated) = snapshot_totals(status);
    let mut line = format!(
        "state={} phase={} lag={} rows_applied={} snapshot_rows={copied}/{estimated} checkpoint={}",
        cell(status.get("state")),
        cell(status.get("phase")),
        lag(status.get("lag_seconds")),
        cell(status.get("rows_applied")),
        cell(status.get("checkpoint_position")),
    );
    for key in ["last_error", "last_warning"] {
        if let Some(text) = status.get(key).and_then(Value::as_str) {
            line.push_str(&format!(" {key}={:?}", one_line(text, 120)));
        }
    }
    line
}

/// Rows copied and estimated over every table.
fn snapshot_totals(status: &Value) -> (u64, u64) {
    tables(status).iter().fold((0, 0), |(c, e), t| {
        let copied = t.get("rows_copied").and_then(Value::as_u64).unwrap_or(0);
        let estimated = t.get("rows_estimated").and_then(Value::as_u64).unwrap_or(0);
        (c + copied, e + estimated.max(copied))
    })
}

fn tables(status: &Value) -> &[Value] {
    status
        .get("tables")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The terminal view.
struct Bars {
    multi: MultiProgress,
    header: ProgressBar,
    tables: BTreeMap<String, ProgressBar>,
}

impl Bars {
    fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("{spinner} {msg}").expect("a valid progress template"),
        );
        Bars {
            multi,
            header,
            tables: BTreeMap::new(),
        }
    }

    fn show(&mut self, status: &Value) {
        self.header.set_message(mask_text(&format!(
            "{}/{}  state {}  phase {}  lag {}  applied {} rows  checkpoint {}{}",
            cell(status.get("namespace")),
            cell(status.get("id")),
            cell(status.get("state")),
            cell(status.get("phase")),
            lag(status.get("lag_seconds")),
            cell(status.get("rows_applied")),
            cell(status.get("checkpoint_position")),
            status
                .get("last_error")
                .or_else(|| status.get("last_warning"))
                .and_then(Value::as_str)
                .map(|e| format!("\n  {}", one_line(e, 100)))
                .unwrap_or_default(),
        )));
        self.header.tick();
        let style = ProgressStyle::with_template(
            "  {prefix:<32} [{bar:30}] {pos:>10}/{len:<10} {percent:>3}% {msg}",
        )
        .expect("a valid progress template")
        .progress_chars("=> ");
        for table in tables(status) {
            let name = cell(table.get("table"));
            let copied = table
                .get("rows_copied")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let estimated = table
                .get("rows_estimated")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let state = cell(table.get("state"));
            // The estimate is the planner's guess; a copied table is complete whatever it said.
            let length = estimated.max(copied).max(1);
            let position = if state == "streaming" { length } else { copied };
            let bar = self.tables.entry(name.clone()).or_insert_with(|| {
                // Set up before it is added, so its first frame is already right.
                let bar = ProgressBar::new(length).with_position(position);
                bar.set_style(style.clone());
                bar.set_prefix(name.clone());
                self.multi.add(bar)
            });
            bar.set_length(length);
            bar.set_position(position);
            bar.set_message(state.clone());
            if state == "streaming" && !bar.is_finished() {
                bar.finish();
            }
        }
    }

    fn finish(self) {
        self.header.finish();
        for bar in self.tables.values() {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_line_adds_up_tables() {
        let line = summary_line(&json!({
            "state": "running", "phase": "snapshot", "lag_seconds": null, "rows_applied": 0,
            "checkpoint_position": null,
            "tables": [{"table": "a", "rows_copied": 5, "rows_estimated": 10},
                       {"table": "b", "rows_copied": 7, "rows_estimated": 3}]
        }));
        assert_eq!(
            line,
            "state=running phase=snapshot lag=- rows_applied=0 snapshot_rows=12/17 checkpoint=-"
        );
    }
}
