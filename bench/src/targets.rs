//! Issue 4's targets, and issue 13's for the stream sinks, checked against a run's medians;
//! issue 15's, every workload against its best peer ([`check_issue15`]); issue 12's for the
//! MariaDB suite ([`check_mariadb`]).
//!
//! Each target compares Ferry with a peer measured in the same run (or with an absolute
//! number for the source side and memory); each stream sink's backlog rate is compared with
//! the blackhole's, and its snapshot rate is reported (issue 13 asks for the number, with no
//! bound). A target whose inputs were not measured (a contender or workload left out) is
//! left out of the list rather than reported as missed.

use crate::measurement::{Measurement, Results};
use crate::plan::{Contender, Workload};

/// Target: snapshot in at most this fraction of native replication's time.
const SNAPSHOT_VS_NATIVE_MAX: f64 = 0.6;
/// Target: drain a backlog at least this many times native replication's rate.
const BACKLOG_VS_NATIVE_MIN: f64 = 1.5;
/// Target: drain at least this fraction of the pgoutput decode limit.
const BACKLOG_VS_DECODE_MIN: f64 = 0.5;
/// Target: the source side alone snapshots at least this many rows per second.
const BLACKHOLE_SNAPSHOT_ROWS_MIN: f64 = 1_000_000.0;
/// Target: the source side alone drains at least this many row changes per second.
const BLACKHOLE_BACKLOG_CHANGES_MIN: f64 = 100_000.0;
/// Target: each stream sink drains a backlog at least this fraction of the blackhole's rate.
const STREAM_BACKLOG_VS_BLACKHOLE_MIN: f64 = 0.8;
/// Target: median end-to-end latency under load at most this many milliseconds.
const LATENCY_P50_MAX_MS: f64 = 20.0;
/// Target: peak RSS at most this many megabytes (10^6 bytes) in every workload.
const PEAK_RSS_MAX_MB: f64 = 150.0;

/// One target and how this run did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TargetCheck {
    pub(crate) target: String,
    pub(crate) measured: String,
    /// `None` for a number reported without a bound.
    pub(crate) met: Option<bool>,
}

/// A run's wall time in seconds.
fn seconds(m: &Measurement) -> Option<f64> {
    Some(m.wall.as_secs_f64())
}

/// A run's rows (or row changes) per second.
fn rate(m: &Measurement) -> Option<f64> {
    Some(m.rows_per_second())
}

/// A latency run's median, in milliseconds.
fn p50(m: &Measurement) -> Option<f64> {
    m.latency.as_ref().map(|l| l.p50_ms)
}

/// A latency run's 99th percentile, in milliseconds.
fn p99(m: &Measurement) -> Option<f64> {
    m.latency.as_ref().map(|l| l.p99_ms)
}

/// Every target this run has the numbers for.
pub(crate) fn check(results: &Results) -> Vec<TargetCheck> {
    let med = |w, c, metric: &dyn Fn(&Measurement) -> Option<f64>| results.median_of(w, c, metric);
    let mut checks = Vec::new();
    let mut push = |target: String, measured: String, met: Option<bool>| {
        checks.push(TargetCheck {
            target,
            measured,
            met,
        });
    };

    use Contender::*;
    use Workload::*;
    if let Some(ferry) = med(Snapshot, Ferry, &seconds) {
        if let Some(native) = med(Snapshot, Native, &seconds) {
            let ratio = ferry / native;
            push(
                format!("snapshot ≤ {SNAPSHOT_VS_NATIVE_MAX}× native replication's time"),
                format!("{ratio:.2}× ({ferry:.1} s vs {native:.1} s)"),
                Some(ratio <= SNAPSHOT_VS_NATIVE_MAX),
            );
        }
        for (peer, name) in [(PgDump, "pg_dump | psql"), (Pgcopydb, "pgcopydb clone")] {
            if let Some(theirs) = med(Snapshot, peer, &seconds) {
                push(
                    format!("snapshot faster than {name}"),
                    format!("{ferry:.1} s vs {theirs:.1} s"),
                    Some(ferry < theirs),
                );
            }
        }
    }
    if let Some(ferry) = med(Backlog, Ferry, &rate) {
        for (peer, name, min) in [
            (Native, "native replication's rate", BACKLOG_VS_NATIVE_MIN),
            (
                Recvlogical,
                "the pgoutput decode limit",
                BACKLOG_VS_DECODE_MIN,
            ),
        ] {
            if let Some(theirs) = med(Backlog, peer, &rate) {
                let ratio = ferry / theirs;
                push(
                    format!("backlog ≥ {min}× {name}"),
                    format!("{ratio:.2}× ({ferry:.0} vs {theirs:.0} changes/s)"),
                    Some(ratio >= min),
                );
            }
        }
    }
    if let Some(rows) = med(Snapshot, FerryBlackhole, &rate) {
        push(
            format!("blackhole snapshot ≥ {BLACKHOLE_SNAPSHOT_ROWS_MIN:.0} rows/s"),
            format!("{rows:.0} rows/s"),
            Some(rows >= BLACKHOLE_SNAPSHOT_ROWS_MIN),
        );
    }
    if let Some(changes) = med(Backlog, FerryBlackhole, &rate) {
        push(
            format!("blackhole backlog ≥ {BLACKHOLE_BACKLOG_CHANGES_MIN:.0} changes/s"),
            format!("{changes:.0} changes/s"),
            Some(changes >= BLACKHOLE_BACKLOG_CHANGES_MIN),
        );
    }
    for stream in Contender::STREAMS {
        let name = stream.label();
        if let Some(changes) = med(Backlog, stream, &rate) {
            if let Some(blackhole) = med(Backlog, FerryBlackhole, &rate) {
                let ratio = changes / blackhole;
                push(
                    format!(
                        "{name}: backlog ≥ {STREAM_BACKLOG_VS_BLACKHOLE_MIN}× blackhole's rate"
                    ),
                    format!("{ratio:.2}× ({changes:.0} vs {blackhole:.0} changes/s)"),
                    Some(ratio >= STREAM_BACKLOG_VS_BLACKHOLE_MIN),
                );
            }
        }
        if let Some(events) = med(Snapshot, stream, &rate) {
            let versus = med(Snapshot, FerryBlackhole, &rate)
                .map(|blackhole| format!(" ({:.2}× blackhole's)", events / blackhole))
                .unwrap_or_default();
            push(
                format!("{name}: snapshot events/s (reported)"),
                format!("{events:.0} events/s{versus}"),
                None,
            );
        }
    }
    if let (Some(ferry), Some(native)) = (med(Latency, Ferry, &p99), med(Latency, Native, &p99)) {
        push(
            "latency p99 ≤ native replication's".to_owned(),
            format!("{ferry:.0} ms vs {native:.0} ms"),
            Some(ferry <= native),
        );
    }
    if let Some(ferry) = med(Latency, Ferry, &p50) {
        push(
            format!("latency p50 ≤ {LATENCY_P50_MAX_MS:.0} ms"),
            format!("{ferry:.1} ms"),
            Some(ferry <= LATENCY_P50_MAX_MS),
        );
    }
    if let Some((mb, workload, contender)) = peak_rss(results, &Workload::POSTGRES) {
        push(
            format!("peak RSS ≤ {PEAK_RSS_MAX_MB:.0} MB in every workload"),
            format!("max {mb:.0} MB ({workload}, {contender})"),
            Some(mb <= PEAK_RSS_MAX_MB),
        );
    }
    checks
}

/// Issue 15: snapshot in at most this fraction of the fastest peer's time.
const SNAPSHOT_VS_FASTEST_PEER_MAX: f64 = 0.85;
/// Issue 15: drain a backlog at least this many times native replication's rate.
const BACKLOG_VS_NATIVE_MIN_15: f64 = 2.0;
/// Issue 15: one big transaction in at most this fraction of native replication's time.
const BIGTX_VS_NATIVE_MAX: f64 = 1.0;
/// Issue 15: median latency under load at most this many milliseconds.
const LATENCY_P50_MAX_MS_15: f64 = 3.0;
/// Issue 15: p99 latency at most native replication's p99 plus this many milliseconds.
const LATENCY_P99_OVER_NATIVE_MAX_MS: f64 = 5.0;

/// Issue 15's targets: every workload against the best of its peers in the same run.
pub(crate) fn check_issue15(results: &Results) -> Vec<TargetCheck> {
    let med = |w, c, metric: &dyn Fn(&Measurement) -> Option<f64>| results.median_of(w, c, metric);
    let mut checks = Vec::new();
    let mut push = |target: String, measured: String, met: bool| {
        checks.push(TargetCheck {
            target,
            measured,
            met: Some(met),
        });
    };

    use Contender::*;
    use Workload::*;
    let fastest_peer = [Native, Pgcopydb, PgDump]
        .into_iter()
        .filter_map(|peer| Some((med(Snapshot, peer, &seconds)?, peer)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if let (Some(ferry), Some((theirs, peer))) = (med(Snapshot, Ferry, &seconds), fastest_peer) {
        let ratio = ferry / theirs;
        push(
            format!("snapshot ≤ {SNAPSHOT_VS_FASTEST_PEER_MAX}× the fastest peer's time"),
            format!("{ratio:.2}× ({ferry:.2} s vs {peer}'s {theirs:.2} s)"),
            ratio <= SNAPSHOT_VS_FASTEST_PEER_MAX,
        );
    }
    if let (Some(ferry), Some(native)) = (med(Backlog, Ferry, &rate), med(Backlog, Native, &rate)) {
        let ratio = ferry / native;
        push(
            format!("backlog ≥ {BACKLOG_VS_NATIVE_MIN_15}× native replication's rate"),
            format!("{ratio:.2}× ({ferry:.0} vs {native:.0} changes/s)"),
            ratio >= BACKLOG_VS_NATIVE_MIN_15,
        );
    }
    if let (Some(ferry), Some(native)) = (med(Bigtx, Ferry, &seconds), med(Bigtx, Native, &seconds))
    {
        let ratio = ferry / native;
        push(
            format!("one big transaction ≤ {BIGTX_VS_NATIVE_MAX}× native replication's time"),
            format!("{ratio:.2}× ({ferry:.2} s vs {native:.2} s)"),
            ratio <= BIGTX_VS_NATIVE_MAX,
        );
    }
    if let Some(ferry) = med(Latency, Ferry, &p50) {
        push(
            format!("latency p50 ≤ {LATENCY_P50_MAX_MS_15:.0} ms"),
            format!("{ferry:.1} ms"),
            ferry <= LATENCY_P50_MAX_MS_15,
        );
    }
    if let (Some(ferry), Some(native)) = (med(Latency, Ferry, &p99), med(Latency, Native, &p99)) {
        push(
            format!("latency p99 ≤ native replication's + {LATENCY_P99_OVER_NATIVE_MAX_MS:.0} ms"),
            format!("{ferry:.1} ms vs {native:.1} ms"),
            ferry <= native + LATENCY_P99_OVER_NATIVE_MAX_MS,
        );
    }
    checks
}

/// Issue 12's targets for the MariaDB suite: drain a MariaDB backlog at least 1.5× as fast
/// as a native replica, snapshot faster than mydumper + myloader (into MariaDB) and than
/// pgloader (into PostgreSQL); and issue 4's memory bound.
pub(crate) fn check_mariadb(results: &Results) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    use Contender::*;
    use Workload::*;
    let backlog = (
        results.median_of(MariadbBacklog, FerryMaria, rate),
        results.median_of(MariadbBacklog, MariaReplica, rate),
    );
    if let (Some(ferry), Some(replica)) = backlog {
        let ratio = ferry / replica;
        checks.push(TargetCheck {
            target: format!("backlog ≥ {BACKLOG_VS_NATIVE_MIN}× the MariaDB replica's rate"),
            measured: format!("{ratio:.2}× ({ferry:.0} vs {replica:.0} changes/s)"),
            met: Some(ratio >= BACKLOG_VS_NATIVE_MIN),
        });
    }
    for (workload, ferry, peer, name) in [
        (MariadbSnapshot, FerryMaria, Mydumper, "mydumper + myloader"),
        (MariadbPgSnapshot, FerryMariaPg, Pgloader, "pgloader"),
    ] {
        let times = (
            results.median_of(workload, ferry, seconds),
            results.median_of(workload, peer, seconds),
        );
        if let (Some(ours), Some(theirs)) = times {
            checks.push(TargetCheck {
                target: format!("snapshot ({workload}) faster than {name}"),
                measured: format!("{:.2}× ({ours:.1} s vs {theirs:.1} s)", ours / theirs),
                met: Some(ours < theirs),
            });
        }
    }
    if let Some((mb, workload, contender)) = peak_rss(results, &Workload::MARIADB) {
        checks.push(TargetCheck {
            target: format!("peak RSS ≤ {PEAK_RSS_MAX_MB:.0} MB in every workload (issue 4)"),
            measured: format!("max {mb:.0} MB ({workload}, {contender})"),
            met: Some(mb <= PEAK_RSS_MAX_MB),
        });
    }
    checks
}

/// Ferry's largest peak RSS over every run of `workloads` and every sink, in MB, and where.
fn peak_rss(results: &Results, workloads: &[Workload]) -> Option<(f64, Workload, Contender)> {
    workloads
        .iter()
        .copied()
        .flat_map(|w| {
            Contender::ALL
                .into_iter()
                .filter(|c| c.is_ferry())
                .map(move |c| (w, c))
        })
        .flat_map(|(w, c)| {
            results
                .measurements(w, c)
                .into_iter()
                .filter_map(move |m| Some((m.usage?.peak_rss_kib as f64 * 1024.0 / 1e6, w, c)))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::peer_process::ProcessUsage;

    fn run(secs: f64, rows: u64, rss_mb: u64) -> Measurement {
        Measurement {
            wall: Duration::from_secs_f64(secs),
            rows,
            bytes: 0,
            usage: Some(ProcessUsage {
                cpu_seconds: 1.0,
                peak_rss_kib: rss_mb * 1_000_000 / 1024,
            }),
            servers_cpu: None,
            latency: None,
        }
    }

    #[test]
    fn snapshot_ratio_and_memory_are_checked() {
        let mut results = Results::default();
        results.push(Workload::Snapshot, Contender::Ferry, Ok(run(5.0, 100, 120)));
        results.push(Workload::Snapshot, Contender::Native, Ok(run(10.0, 100, 0)));
        results.push(Workload::Bigtx, Contender::Ferry, Ok(run(1.0, 100, 200)));
        let checks = check(&results);
        assert_eq!(checks.len(), 2, "{checks:?}");
        assert_eq!(checks[0].met, Some(true), "0.5 ≤ 0.6: {:?}", checks[0]);
        assert_eq!(checks[0].measured, "0.50× (5.0 s vs 10.0 s)");
        assert_eq!(checks[1].met, Some(false));
        assert!(
            checks[1].measured.contains("(bigtx, ferry)"),
            "{:?}",
            checks[1]
        );
    }

    #[test]
    fn issue_15_compares_with_the_fastest_peer() {
        let mut results = Results::default();
        for (workload, contender, secs) in [
            (Workload::Snapshot, Contender::Ferry, 8.0),
            (Workload::Snapshot, Contender::Native, 12.0),
            (Workload::Snapshot, Contender::Pgcopydb, 10.0),
            (Workload::Bigtx, Contender::Ferry, 3.0),
            (Workload::Bigtx, Contender::Native, 3.5),
        ] {
            results.push(workload, contender, Ok(run(secs, 100, 10)));
        }
        let checks = check_issue15(&results);
        assert_eq!(checks.len(), 2, "{checks:?}");
        assert_eq!(checks[0].measured, "0.80× (8.00 s vs pgcopydb's 10.00 s)");
        assert_eq!(checks[0].met, Some(true));
        assert_eq!(checks[1].measured, "0.86× (3.00 s vs 3.50 s)");
        assert_eq!(checks[1].met, Some(true));
    }

    #[test]
    fn stream_sinks_are_held_to_the_blackhole() {
        let mut results = Results::default();
        // 100 changes in 1 s for the blackhole, 1.25 s (0.8×) for files, 2 s for NATS.
        for (workload, contender, secs, rows) in [
            (Workload::Backlog, Contender::FerryBlackhole, 1.0, 100),
            (Workload::Backlog, Contender::FerryFile, 1.25, 100),
            (Workload::Backlog, Contender::FerryNats, 2.0, 100),
            (Workload::Snapshot, Contender::FerryNats, 4.0, 1000),
        ] {
            results.push(workload, contender, Ok(run(secs, rows, 10)));
        }
        let checks = check(&results);
        let find = |what: &str| {
            checks
                .iter()
                .find(|c| c.target.contains(what))
                .unwrap_or_else(|| panic!("no {what} in {checks:?}"))
        };
        assert_eq!(find("→ file").met, Some(true));
        let nats = find("NATS JetStream (nats-server, file store): backlog");
        assert_eq!(nats.met, Some(false));
        assert_eq!(nats.measured, "0.50× (50 vs 100 changes/s)");
        let snapshot = find("snapshot events/s");
        assert_eq!(
            (snapshot.met, snapshot.measured.as_str()),
            (None, "250 events/s")
        );
        assert!(!checks.iter().any(|c| c.target.contains("Kafka")));
    }

    #[test]
    fn mariadb_targets_pair_each_ferry_with_its_peer() {
        let mut results = Results::default();
        for (workload, contender, secs, rss) in [
            (Workload::MariadbBacklog, Contender::FerryMaria, 2.0, 30),
            (Workload::MariadbBacklog, Contender::MariaReplica, 2.5, 0),
            (Workload::MariadbSnapshot, Contender::FerryMaria, 4.0, 40),
            (Workload::MariadbSnapshot, Contender::Mydumper, 5.0, 10),
            (
                Workload::MariadbPgSnapshot,
                Contender::FerryMariaPg,
                6.0,
                50,
            ),
            (Workload::MariadbPgSnapshot, Contender::Pgloader, 3.0, 200),
        ] {
            results.push(workload, contender, Ok(run(secs, 100, rss)));
        }
        let checks = check_mariadb(&results);
        let met: Vec<Option<bool>> = checks.iter().map(|c| c.met).collect();
        assert_eq!(
            met,
            [Some(false), Some(true), Some(false), Some(true)],
            "{checks:?}"
        );
        assert_eq!(checks[0].measured, "1.25× (50 vs 40 changes/s)");
        assert!(checks[3]
            .measured
            .contains("(mariadb-pg-snapshot, ferry-maria-pg)"));
        assert!(
            check(&results).is_empty(),
            "the PostgreSQL targets see none of it"
        );
    }
}
