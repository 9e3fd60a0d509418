//! What one run measured, every run's outcome, and the statistics over runs.
//!
//! A run yields a [`Measurement`] or an error message; [`Results`] keeps them in the order
//! they ran. The report takes medians and min–max over a contender's successful runs;
//! latency percentiles are computed per run from that run's probes.

use std::time::Duration;

use crate::peer_process::ProcessUsage;
use crate::plan::{Contender, Workload};

/// One run of one contender on one workload.
#[derive(Clone, Debug)]
pub(crate) struct Measurement {
    /// The timed part (see each workload for where the clock starts and stops).
    pub(crate) wall: Duration,
    /// Rows (snapshot, big transaction) or row changes (backlog, latency) moved.
    pub(crate) rows: u64,
    /// Bytes moved: the source tables' heap + TOAST size for the snapshot, the WAL written
    /// by the workload for the others.
    pub(crate) bytes: u64,
    /// CPU and peak RSS of the contender's own process(es), where it has any.
    pub(crate) usage: Option<ProcessUsage>,
    /// The source's and the target's server CPU seconds in the timed part (the PostgreSQL
    /// suite's snapshot, backlog and bigtx; the MariaDB suite keeps its own breakdown).
    pub(crate) servers_cpu: Option<[f64; 2]>,
    /// The latency probe's results (latency workload only).
    pub(crate) latency: Option<LatencySummary>,
}

impl Measurement {
    /// Rows (or row changes) per second of wall time.
    pub(crate) fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Megabytes (10^6 bytes) per second of wall time.
    pub(crate) fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// End-to-end latency of the probe rows in one run, in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LatencySummary {
    pub(crate) p50_ms: f64,
    pub(crate) p95_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// Probe rows committed on the source.
    pub(crate) probes_written: usize,
    /// Probe rows seen on the target (the percentiles cover these).
    pub(crate) probes_seen: usize,
    /// The source's pgbench throughput while the replicator ran.
    pub(crate) source_tps: f64,
    /// From the end of the load until the replicator had applied everything.
    pub(crate) catch_up: Duration,
}

impl LatencySummary {
    /// Percentiles of `latencies_ms` (nearest rank); `None` when there is none.
    pub(crate) fn percentiles(latencies_ms: &mut [f64]) -> Option<[f64; 4]> {
        if latencies_ms.is_empty() {
            return None;
        }
        latencies_ms.sort_by(f64::total_cmp);
        let max = *latencies_ms.last().expect("not empty");
        Some([
            nearest_rank(latencies_ms, 50.0),
            nearest_rank(latencies_ms, 95.0),
            nearest_rank(latencies_ms, 99.0),
            max,
        ])
    }
}

/// The value at percentile `p` of `sorted` by the nearest-rank method.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The smallest and largest of `values`.
pub(crate) fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// One run's outcome.
#[derive(Debug)]
pub(crate) struct RunOutcome {
    pub(crate) workload: Workload,
    pub(crate) contender: Contender,
    pub(crate) outcome: Result<Measurement, String>,
}

/// Every run so far, in the order they ran.
#[derive(Debug, Default)]
pub(crate) struct Results {
    runs: Vec<RunOutcome>,
}

impl Results {
    /// Records one run.
    pub(crate) fn push(
        &mut self,
        workload: Workload,
        contender: Contender,
        outcome: Result<Measurement, String>,
    ) {
        self.runs.push(RunOutcome {
            workload,
            contender,
            outcome,
        });
    }

    /// The successful measurements of `contender` on `workload`, in run order.
    pub(crate) fn measurements(
        &self,
        workload: Workload,
        contender: Contender,
    ) -> Vec<&Measurement> {
        self.of(workload, contender)
            .filter_map(|run| run.outcome.as_ref().ok())
            .collect()
    }

    /// The error messages of `contender`'s failed runs on `workload`.
    pub(crate) fn failures(&self, workload: Workload, contender: Contender) -> Vec<&str> {
        self.of(workload, contender)
            .filter_map(|run| run.outcome.as_ref().err().map(String::as_str))
            .collect()
    }

    /// The median of `metric` over `contender`'s successful runs on `workload`.
    pub(crate) fn median_of(
        &self,
        workload: Workload,
        contender: Contender,
        metric: impl Fn(&Measurement) -> Option<f64>,
    ) -> Option<f64> {
        let values: Vec<f64> = self
            .measurements(workload, contender)
            .into_iter()
            .filter_map(metric)
            .collect();
        (!values.is_empty()).then(|| median(values))
    }

    fn of(&self, workload: Workload, contender: Contender) -> impl Iterator<Item = &RunOutcome> {
        self.runs
            .iter()
            .filter(move |run| run.workload == workload && run.contender == contender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_min_max() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
        assert_eq!(min_max(&[2.0, 5.0, 1.0]), (1.0, 5.0));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut latencies: Vec<f64> = (1..=200).map(f64::from).collect();
        latencies.reverse();
        let [p50, p95, p99, max] = LatencySummary::percentiles(&mut latencies).expect("some");
        assert_eq!((p50, p95, p99, max), (100.0, 190.0, 198.0, 200.0));
        assert_eq!(LatencySummary::percentiles(&mut [7.0]), Some([7.0; 4]));
        assert_eq!(LatencySummary::percentiles(&mut []), None);
    }

    #[test]
    fn results_split_successes_and_failures() {
        let mut results = Results::default();
        let run = |secs| Measurement {
            wall: Duration::from_secs(secs),
            rows: 100,
            bytes: 1_000_000,
            usage: None,
            servers_cpu: None,
            latency: None,
        };
        results.push(Workload::Snapshot, Contender::Ferry, Ok(run(2)));
        results.push(Workload::Snapshot, Contender::Native, Ok(run(4)));
        results.push(Workload::Snapshot, Contender::Ferry, Err("boom".into()));
        results.push(Workload::Snapshot, Contender::Ferry, Ok(run(4)));
        assert_eq!(
            results
                .measurements(Workload::Snapshot, Contender::Ferry)
                .len(),
            2
        );
        assert_eq!(
            results.failures(Workload::Snapshot, Contender::Ferry),
            ["boom"]
        );
        let median_wall = results.median_of(Workload::Snapshot, Contender::Ferry, |m| {
            Some(m.wall.as_secs_f64())
        });
        assert_eq!(median_wall, Some(3.0));
        assert_eq!(run(2).rows_per_second(), 50.0);
        assert_eq!(run(2).mb_per_second(), 0.5);
    }
}
