//! The servers' CPU during a timed part: where the time goes besides the contender.
//!
//! The throughput tables show the contender's own CPU; on a 2-core machine the servers' CPU
//! says as much about a result (a replica's applier and a myloader both work inside the
//! target server, which has no column of its own there). So the MariaDB suite samples the
//! CPU of the source `mariadbd`, the target `mariadbd` and the PostgreSQL cluster at the
//! clock's start and stop, and the report shows the differences.
//!
//! A server's CPU is that of its process tree: `mariadbd` is one process (its threads are
//! in its own counters); PostgreSQL is a postmaster with a backend per connection, so its
//! CPU is the postmaster's own and reaped children's (`cutime`, `cstime`) plus every live
//! child's. A backend that ends between two samples is counted by `cutime` at the second,
//! so the difference of two samples is the CPU the tree used in between.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::maria::testbed::MariaTestbed;

/// CPU seconds of each server, in [`SERVERS`] order.
pub(crate) type ServersCpu = [f64; 3];

/// The servers sampled, as the report names them.
pub(crate) const SERVERS: [&str; 3] = ["source mariadbd", "target mariadbd", "target postgres"];

/// The process ids whose trees are sampled.
pub(crate) struct ServerProcesses {
    pids: [u32; 3],
}

impl ServerProcesses {
    /// Finds the servers' processes: each `mariadbd` from its `@@pid_file`, the postmaster
    /// as the parent of a backend.
    pub(crate) fn find(testbed: &MariaTestbed) -> anyhow::Result<ServerProcesses> {
        let pid_of = |session: &mut crate::maria::testbed::Session| -> anyhow::Result<u32> {
            let file = session.query_text("SELECT @@pid_file")?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("read {file}"))?;
            text.trim()
                .parse()
                .with_context(|| format!("a pid in {file}"))
        };
        let source = pid_of(&mut testbed.source_session()?)?;
        let target = pid_of(&mut testbed.target_session()?)?;
        let db = crate::db::Db::connect(testbed.handle(), &testbed.pg.uri("postgres"))?;
        let backend = u32::try_from(db.query_i64("SELECT pg_backend_pid()::bigint")?)?;
        let postmaster = read_stat(backend)
            .context("read a PostgreSQL backend's /proc stat")?
            .parent;
        Ok(ServerProcesses {
            pids: [source, target, postmaster],
        })
    }

    /// Each server's CPU seconds so far.
    pub(crate) fn sample(&self) -> ServersCpu {
        let stats = all_stats();
        self.pids.map(|pid| tree_cpu(pid, &stats))
    }
}

/// A timed part's clock, with the servers' CPU sampled just outside it.
pub(crate) struct Clock<'a> {
    servers: &'a ServerProcesses,
    cpu: ServersCpu,
    started: Instant,
}

impl<'a> Clock<'a> {
    /// Samples the servers, then starts the clock.
    pub(crate) fn start(servers: &'a ServerProcesses) -> Clock<'a> {
        let cpu = servers.sample();
        Clock {
            servers,
            cpu,
            started: Instant::now(),
        }
    }

    /// Stops the clock, then samples the servers: the wall time and each server's CPU in
    /// between.
    pub(crate) fn stop(self) -> (Duration, ServersCpu) {
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
