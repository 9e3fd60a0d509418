//! The four workloads, each a function from a contender to one [`Measurement`].
//!
//! | workload | data | clock starts | clock stops |
//! |---|---|---|---|
//! | snapshot | pgbench tables + `bench_wide` | the contender starts (CREATE SUBSCRIPTION, POST, pg_dump, …) | every table is on the target |
//! | backlog | `pgbench -c 4 -t N` written while the replicator is paused | the replicator resumes | caught up (slot confirmed / `/synced`) |
//! | latency | `pgbench -c 4 -T S` plus a probe row every 50 ms | — (the window is fixed) | — (per-probe latency) |
//! | bigtx | one `INSERT … SELECT` of N rows, replicator running | the transaction commits | caught up |
//!
//! Every run starts from [`Testbed::prepare_run`]: an empty target database and a source
//! without slots or publications. Runs that fill a real target end with a check that the
//! target holds what the source holds ([`verify`]), so a contender cannot win by losing rows;
//! the check is outside the timed part. Stream sinks' runs count the events their destination
//! got instead (at least one per row or row change).

mod backlog;
mod bigtx;
mod decode_limit;
mod latency;
mod snapshot;
mod verify;

use crate::measurement::Measurement;
use crate::plan::Contender;
use crate::plan::{Plan, Workload};
use crate::testbed::Testbed;

/// Runs `contender` once on `workload`.
pub(crate) fn run(
    testbed: &Testbed,
    plan: &Plan,
    workload: Workload,
    contender: Contender,
) -> anyhow::Result<Measurement> {
    match workload {
        Workload::Snapshot => snapshot::run(testbed, plan, contender),
        Workload::Backlog => backlog::run(testbed, plan, contender),
        Workload::Latency => latency::run(testbed, plan, contender),
        Workload::Bigtx => bigtx::run(testbed, plan, contender),
        Workload::MariadbSnapshot | Workload::MariadbPgSnapshot | Workload::MariadbBacklog => {
            anyhow::bail!("{workload} runs in the MariaDB suite (crate::maria)")
        }
    }
}
