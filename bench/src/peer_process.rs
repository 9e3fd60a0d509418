//! Peers that run as processes of their own (`pg_dump`, `psql`, `pgcopydb`, `pg_recvlogical`)
//! and what they cost.
//!
//! A peer is spawned with its stderr appended to a log file (read back only when it fails),
//! and reaped with `wait4`, which returns the exit status together with the process's
//! resource use: user + system CPU time and peak RSS, including those of the children it
//! waited for itself (pgcopydb's workers, the `pg_dump` it runs). A pipeline sums the CPU of
//! its processes and reports the largest RSS.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// CPU time and peak memory of a process (or a process tree, or a pipeline).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ProcessUsage {
    /// User + system CPU seconds.
    pub(crate) cpu_seconds: f64,
    /// Peak resident set size in KiB.
    pub(crate) peak_rss_kib: u64,
}

impl ProcessUsage {
    /// Two processes together (side by side or one after the other): CPU adds up, the
    /// larger RSS is the peak.
    pub(crate) fn plus(self, other: ProcessUsage) -> ProcessUsage {
        ProcessUsage {
            cpu_seconds: self.cpu_seconds + other.cpu_seconds,
            peak_rss_kib: self.peak_rss_kib.max(other.peak_rss_kib),
        }
    }
}

/// A spawned peer, to be reaped by [`PeerProcess::wait`] or [`PeerProcess::interrupt`].
pub(crate) struct PeerProcess {
    child: Child,
    what: String,
    log: std::path::PathBuf,
}

impl PeerProcess {
    /// Spawns `command` with stderr appended to `log`; stdin and stdout are the caller's
    /// choice (both default to null here unless the caller set them).
    pub(crate) fn spawn(mut command: Command, what: &str, log: &Path) -> anyhow::Result<Self> {
        let log_file = append(log)?;
        let child = command
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("start {what} ({command:?})"))?;
        Ok(PeerProcess {
            child,
            what: what.to_owned(),
            log: log.to_owned(),
        })
    }

    /// Waits for the process to exit; an error unless it exited with status 0.
    pub(crate) fn wait(self) -> anyhow::Result<ProcessUsage> {
        let (status, usage) = reap(&self.child)?;
        if !exited_ok(status) {
            anyhow::bail!(
                "{} failed ({}); last lines of {}:\n{}",
                self.what,
                describe_status(status),
                self.log.display(),
                log_tail(&self.log)
            );
        }
        Ok(usage)
    }

    /// Sends SIGINT (the tools' clean stop) and reaps the process, whatever its status.
    pub(crate) fn interrupt(self) -> anyhow::Result<ProcessUsage> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill only sends a signal; the child is not reaped yet, so the pid is still
        // ours and cannot name another process.
        unsafe { libc::kill(pid, libc::SIGINT) };
        Ok(reap(&self.child)?.1)
    }
}

/// Runs `command` to completion; see [`PeerProcess::spawn`] and [`PeerProcess::wait`].
pub(crate) fn run(command: Command, what: &str, log: &Path) -> anyhow::Result<ProcessUsage> {
    PeerProcess::spawn(command, what, log)?.wait()
}

/// Runs `producer | consumer` to completion; both must exit with status 0.
pub(crate) fn run_pipeline(
    mut producer: Command,
    mut consumer: Command,
    what: &str,
    log: &Path,
) -> anyhow::Result<ProcessUsage> {
    producer.stdout(Stdio::piped());
    let mut upstream = PeerProcess::spawn(producer, &format!("{what} (producer)"), log)?;
    let pipe = upstream
        .child
        .stdout
        .take()
        .expect("stdout was set to piped");
    consumer.stdin(pipe);
    let downstream = PeerProcess::spawn(consumer, &format!("{what} (consumer)"), log)?;
    let consumed = downstream.wait();
    let produced = upstream.wait()?;
    Ok(produced.plus(consumed?))
}

/// A command's stdout redirected to the file at `path` (created or truncated).
pub(crate) fn stdout_to(command: &mut Command, path: &Path) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    command.stdout(file);
    Ok(())
}

fn append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}

/// `wait4` on the child: its raw wait status and resource use.
fn reap(child: &Child) -> anyhow::Result<(i32, ProcessUsage)> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid, exclusively borrowed out-pointers for the
        // duration of the call; `pid` is our own unreaped child (std never waits for it
        // because we never call `Child::wait`).
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).context("wait4");
        }
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((
        status,
        ProcessUsage {
            cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            // Linux reports ru_maxrss in KiB.
            peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        },
    ))
}

fn exited_ok(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// The last lines of a log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_reports_usage_and_failures() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("log");
        let mut producer = Command::new("sh");
        producer.args(["-c", "head -c 1000000 /dev/zero"]);
        let mut consumer = Command::new("wc");
        consumer.arg("-c").stdout(Stdio::null());
        let usage = run_pipeline(producer, consumer, "zeros", &log).expect("pipeline runs");
        assert!(usage.peak_rss_kib > 0);

        let mut failing = Command::new("sh");
        failing.args(["-c", "echo boom >&2; exit 3"]);
        let error = run(failing, "failing", &log).expect_err("exit 3 is a failure");
        let message = format!("{error:#}");
        assert!(
            message.contains("exit status 3") && message.contains("boom"),
            "{message}"
        );
    }
}
