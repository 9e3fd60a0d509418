//! The servers' CPU during a timed part: where the time goes besides the contender.
//!
//! The throughput tables show the contender's own CPU; on a 2-core machine the servers' CPU
//! says as much about a result (native replication's apply worker and walsender, a
//! replica's applier, a loader's COPY all work inside a server, which has no column of its
//! own there). So each suite samples its servers' CPU at the clock's start and stop and
//! reports the differences: the PostgreSQL suite its source and target clusters, the
//! MariaDB suite its two `mariadbd` and its PostgreSQL cluster.
//!
//! A server's CPU is that of its process tree: `mariadbd` is one process (its threads are
//! in its own counters); PostgreSQL is a postmaster with a backend per connection, so its
//! CPU is the postmaster's own and reaped children's (`cutime`, `cstime`) plus every live
//! child's. A backend that ends between two samples is counted by `cutime` at the second,
//! so the difference of two samples is the CPU the tree used in between.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::db::Db;

/// The process ids whose trees are sampled, `N` servers in the suite's order.
pub(crate) struct ServerProcesses<const N: usize> {
    pids: [u32; N],
}

impl<const N: usize> ServerProcesses<N> {
    /// Samples the trees rooted at `pids`.
    pub(crate) fn new(pids: [u32; N]) -> ServerProcesses<N> {
        ServerProcesses { pids }
    }

    /// Each server's CPU seconds so far.
    pub(crate) fn sample(&self) -> [f64; N] {
        let stats = all_stats();
        self.pids.map(|pid| tree_cpu(pid, &stats))
    }

    /// Samples the servers, then starts a clock.
    pub(crate) fn clock(&self) -> Clock<'_, N> {
        let cpu = self.sample();
        Clock {
            servers: self,
            cpu,
            started: Instant::now(),
        }
    }
}

/// The postmaster of the cluster `db` is connected to: the parent of its backend.
pub(crate) fn postmaster_of(db: &Db) -> anyhow::Result<u32> {
    let backend = u32::try_from(db.query_i64("SELECT pg_backend_pid()::bigint")?)?;
    Ok(read_stat(backend)
        .context("read a PostgreSQL backend's /proc stat")?
        .parent)
}

/// A timed part's clock, with the servers' CPU sampled just outside it.
pub(crate) struct Clock<'a, const N: usize> {
    servers: &'a ServerProcesses<N>,
    cpu: [f64; N],
    started: Instant,
}

impl<const N: usize> Clock<'_, N> {
    /// Stops the clock, then samples the servers: the wall time and each server's CPU in
    /// between.
    pub(crate) fn stop(self) -> (Duration, [f64; N]) {
        let wall = self.started.elapsed();
        let now = self.servers.sample();
        let mut used = now;
        for (used, before) in used.iter_mut().zip(self.cpu) {
            *used = (*used - before).max(0.0);
        }
        (wall, used)
    }
}

/// What one `/proc/<pid>/stat` says about CPU, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stat {
    pid: u32,
    parent: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: reaped children.
    reaped: u64,
}

/// CPU seconds of `root` and its children.
fn tree_cpu(root: u32, stats: &[Stat]) -> f64 {
    let ticks: u64 = stats
        .iter()
        .map(|s| match s {
            s if s.pid == root => s.own + s.reaped,
            s if s.parent == root => s.own,
            _ => 0,
        })
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

fn all_stats() -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(read_stat)
        .collect()
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    parse_stat(pid, &text)
}

/// Parses the fields after the command name (which may hold spaces and parentheses).
fn parse_stat(pid: u32, text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name start at field 3 (state): ppid is 4, utime..cstime are 14..17.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        pid,
        parent: u32::try_from(field(4)?).ok()?,
        own: field(14)? + field(15)?,
        reaped: field(16)? + field(17)?,
    })
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_parent_and_cpu() {
        let line = "42 (post gres: a) S 7 42 42 0 -1 4194560 100 0 0 0 150 50 30 20 20 0 1 0";
        let stat = parse_stat(42, line).expect("parses");
        assert_eq!((stat.parent, stat.own, stat.reaped), (7, 200, 50));
        let stats = [
            stat,
            Stat {
                pid: 43,
                parent: 42,
                own: 100,
                reaped: 0,
            },
            Stat {
                pid: 44,
                parent: 1,
                own: 1000,
                reaped: 0,
            },
        ];
        let seconds = tree_cpu(42, &stats) * clock_ticks_per_second();
        assert!((seconds - 350.0).abs() < 1e-9, "{seconds}");
    }
}
