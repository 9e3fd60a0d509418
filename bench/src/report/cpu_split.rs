//! Where the time goes: the CPU seconds each part of a run used in its timed part.
//!
//! On a machine of a few cores a replicator's time is bounded by the CPU that it and both
//! servers need: when the three together keep every core busy for the whole timed part,
//! the only way to finish sooner is to need less CPU somewhere. The table gives, per
//! workload and contender (medians of the successful runs), the source's and the target's
//! server CPU ([`crate::servers`]), the contender's own CPU, and how many cores the three
//! kept busy on average (their sum ÷ the wall time). The harness's own polling and anything
//! else on the machine are not in it. The contender's CPU is its processes' whole, as in the
//! throughput tables: a Ferry server that worked before the clock started (bigtx) counts
//! that work too.

use crate::measurement::{median, Measurement, Results};
use crate::plan::{Contender, Plan};
use crate::report::line;

/// One run's split: source CPU, target CPU, the contender's CPU, cores busy.
fn split(m: &Measurement) -> Option<[f64; 4]> {
    let [source, target] = m.servers_cpu?;
    let own = m.usage.map_or(0.0, |u| u.cpu_seconds);
    let busy = (source + target + own) / m.wall.as_secs_f64().max(1e-9);
    Some([source, target, own, busy])
}

/// The table; nothing when no run sampled the servers.
pub(crate) fn table(w: &mut String, plan: &Plan, results: &Results, cores: usize) {
    let mut rows = Vec::new();
    for &workload in &plan.workloads {
        for contender in plan.contenders_for(workload) {
            let runs: Vec<[f64; 4]> = results
                .measurements(workload, contender)
                .into_iter()
                .filter_map(split)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let wall = results
                .median_of(workload, contender, |m| Some(m.wall.as_secs_f64()))
                .unwrap_or(f64::NAN);
            let column = |i: usize| median(runs.iter().map(|r| r[i]).collect());
            let own = if contender == Contender::Native {
                "— (in the servers)".to_owned()
            } else {
                format!("{:.1}", column(2))
            };
            rows.push(format!(
                "| {workload} | {} | {wall:.2} | {:.1} | {:.1} | {own} | {:.2} |",
                contender.label(),
                column(0),
                column(1),
                column(3)
            ));
        }
    }
    if rows.is_empty() {
        return;
    }
    line(w, "### Where the time goes: CPU seconds in the timed part");
    line(w, "");
    line(
        w,
        &format!(
            "Medians. Each server's CPU is its whole cluster's (native replication's walsender \
             and apply worker are in them); cores busy is the three columns' sum ÷ the wall \
             time, out of this machine's {cores}."
        ),
    );
    line(w, "");
    line(
        w,
        "| workload | contender | time s | source postgres CPU s | target postgres CPU s | \
         contender CPU s | cores busy |",
    );
    line(w, "|---|---|---:|---:|---:|---:|---:|");
    for row in rows {
        line(w, &row);
    }
    line(w, "");
}
