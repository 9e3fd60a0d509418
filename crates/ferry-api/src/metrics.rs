//! `GET /metrics`: Prometheus text exposition.
//!
//! Three parts, all documented in `docs/metrics.md`:
//! - counters the changefeed tasks increment through the `metrics` facade (rows by table and
//!   operation, transactions, bytes read, errors, retries), rendered by
//!   `metrics-exporter-prometheus`;
//! - gauges read from every changefeed's status at scrape time (state, lag, retained WAL,
//!   snapshot rows), so a deleted changefeed leaves none behind;
//! - process gauges read from `/proc/self`.
//!
//! The facade's recorder is process-global: it is installed once, by the first router.

use std::fmt::Write;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use ferry_engine::metrics as names;
use ferry_engine::{FeedState, TableState};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// The installed recorder's handle (`None` when another recorder was installed first).
pub(crate) fn handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        names::ROWS_APPLIED,
        "Row changes applied to the sink, by table and operation."
    );
    metrics::describe_counter!(
        names::TRANSACTIONS_APPLIED,
        "Source transactions applied to the sink."
    );
    metrics::describe_counter!(
        names::SOURCE_BYTES_READ,
        "Bytes of row data read from the source (snapshot COPY text and change values)."
    );
    metrics::describe_counter!(
        names::ERRORS,
        "Failed attempts, by class (transient or definite)."
    );
    metrics::describe_counter!(names::RETRIES, "Retries after transient failures.");
}

pub(crate) async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = state
        .prometheus
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    changefeed_gauges(&state, &mut out);
    process_gauges(&state, &mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// A label value, escaped for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn changefeed_gauges(state: &AppState, out: &mut String) {
    let feeds = state.engine.list(None, None);
    let labels =
        |ns: &str, id: &str| format!("namespace=\"{}\",changefeed=\"{}\"", escape(ns), escape(id));
    header(
        out,
        "ferry_changefeeds",
        "gauge",
        "Changefeeds of this server, by state.",
    );
    for s in FeedState::ALL {
        let n = feeds.iter().filter(|f| f.state == s).count();
        let _ = writeln!(out, "ferry_changefeeds{{state=\"{s}\"}} {n}");
    }
    header(
        out,
        "ferry_changefeed_state",
        "gauge",
        "1 for the changefeed's current state, 0 for the others.",
    );
    for f in &feeds {
        for s in FeedState::ALL {
            let v = u8::from(f.state == s);
            let _ = writeln!(
                out,
                "ferry_changefeed_state{{{},state=\"{s}\"}} {v}",
                labels(&f.namespace, &f.id)
            );
        }
    }
    header(
        out,
        "ferry_changefeed_tables",
        "gauge",
        "The changefeed's tables, by state (pending, copying, copied, paused, failed).",
    );
    for f in &feeds {
        for s in TableState::ALL {
            let n = f.tables.iter().filter(|t| t.state == s).count();
            let _ = writeln!(
                out,
                "ferry_changefeed_tables{{{},state=\"{}\"}} {n}",
                labels(&f.namespace, &f.id),
                s.as_str()
            );
        }
    }
    let gauge = |out: &mut String,
                 name: &str,
                 help: &str,
                 value: &dyn Fn(&ferry_engine::ChangefeedStatus) -> Option<f64>| {
        header(out, name, "gauge", help);
        for f in &feeds {
            if let Some(v) = value(f) {
                let _ = writeln!(out, "{name}{{{}}} {v}", labels(&f.namespace, &f.id));
            }
        }
    };
    gauge(
        out,
        "ferry_checkpoint_lag_seconds",
        "Seconds between now and the source commit time of the checkpoint (0 when caught up).",
        &|f| f.lag_seconds,
    );
    gauge(
        out,
        "ferry_source_retained_bytes",
        "WAL (or log) the changefeed keeps on its source until it confirms it, in bytes.",
        &|f| f.source_retained_bytes.map(|b| b as f64),
    );
    // The earlier name of the same gauge, kept for existing dashboards and alerts.
    gauge(
        out,
        "ferry_slot_retained_wal_bytes",
        "Deprecated alias of ferry_source_retained_bytes.",
        &|f| f.slot_retained_wal_bytes.map(|b| b as f64),
    );
    gauge(
        out,
        "ferry_snapshot_rows_copied",
        "Snapshot rows copied so far.",
        &|f| Some(f.snapshot_rows_copied as f64),
    );
    gauge(
        out,
        "ferry_snapshot_rows_estimated",
        "Snapshot rows the source estimated when the copy was planned.",
        &|f| Some(f.snapshot_rows_estimated as f64),
    );
}

fn process_gauges(state: &AppState, out: &mut String) {
    let uptime = state
        .options
        .started_at
        .elapsed()
        .map_or(0.0, |d| d.as_secs_f64());
    header(
        out,
        "ferry_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        out,
        "ferry_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    header(
        out,
        "ferry_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(out, "ferry_uptime_seconds {uptime}");
    let Some(proc) = ProcessStats::read() else {
        return;
    };
    header(
        out,
        "ferry_process_cpu_seconds_total",
        "counter",
        "User and system CPU time of the server process.",
    );
    let _ = writeln!(out, "ferry_process_cpu_seconds_total {}", proc.cpu_seconds);
    header(
        out,
        "ferry_process_resident_memory_bytes",
        "gauge",
        "Resident memory of the server process.",
    );
    let _ = writeln!(
        out,
        "ferry_process_resident_memory_bytes {}",
        proc.rss_bytes
    );
    header(
        out,
        "ferry_process_threads",
        "gauge",
        "Threads of the server process.",
    );
    let _ = writeln!(out, "ferry_process_threads {}", proc.threads);
    if let Some(fds) = proc.open_fds {
        header(
            out,
            "ferry_process_open_fds",
            "gauge",
            "Open file descriptors of the server process.",
        );
        let _ = writeln!(out, "ferry_process_open_fds {fds}");
    }
}

/// What `/proc/self` says about this process (Linux).
struct ProcessStats {
    cpu_seconds: f64,
    rss_bytes: u64,
    threads: u64,
    open_fds: Option<usize>,
}

/// Clock ticks per second of `/proc/*/stat` times: 100 on every Linux Ferry runs on.
const CLOCK_TICKS: f64 = 100.0;
/// Page size of `/proc/*/stat`'s RSS: 4 KiB on x86-64 and most arm64 kernels.
const PAGE_BYTES: u64 = 4096;

impl ProcessStats {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // `fields[0]` is field 3 (state) of proc(5).
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        Some(ProcessStats {
            cpu_seconds: (field(14)? + field(15)?) as f64 / CLOCK_TICKS,
            threads: field(20)?,
            rss_bytes: field(24)? * PAGE_BYTES,
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn process_stats_are_read() {
        let stats = ProcessStats::read().expect("Linux /proc");
        assert!(stats.rss_bytes > 0 && stats.threads > 0);
    }
}
