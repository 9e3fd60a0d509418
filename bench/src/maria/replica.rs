//! MariaDB's own replication as a contender: the target server made a replica of the source
//! with `CHANGE MASTER TO … MASTER_USE_GTID=slave_pos`, everything else at its defaults
//! (one SQL applier thread: `slave_parallel_threads=0`).
//!
//! The set-up is untimed and mirrors what Ferry's snapshot does before a backlog run: with
//! the source idle, its `@@gtid_binlog_pos` is read, the tables are copied with
//! `mariadb-dump --single-transaction | mariadb`, and the replica starts from that position
//! (`SET GLOBAL gtid_slave_pos`). Pausing is `STOP SLAVE`, resuming `START SLAVE`; "applied
//! up to `end`" means the replica's `@@gtid_slave_pos` has reached `end` in every domain.

use std::process::Command;
use std::time::Duration;

use ferry_testkit::mariadb::{MARIADB_PASSWORD, MARIADB_USER};

use crate::maria::testbed::{MariaTestbed, Session, DATABASE};
use crate::peer_process;
use crate::replicator::poll_until;

/// How often the replica's threads are checked for an error while waiting.
const ERROR_CHECK_EVERY: u32 = 50;

/// The target server, replicating the source.
pub(crate) struct Replica {
    target: Session,
}

impl Replica {
    /// Copies `tables` to the target at a known GTID position, starts replicating from it
    /// and waits until caught up. The source must be idle.
    pub(crate) fn start(
        testbed: &MariaTestbed,
        tables: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Replica> {
        let mut source = testbed.source_session()?;
        let position = source.query_text("SELECT @@gtid_binlog_pos")?;
        let mut target = testbed.target_session()?;
        target.execute(&format!("CREATE DATABASE {DATABASE}"))?;
        let mut dump = client(testbed.source.port(), "mariadb-dump");
        dump.args(["--single-transaction", DATABASE]);
        dump.args(tables.iter().map(|t| t.trim_start_matches("bench.")));
        let mut load = client(testbed.target.port(), "mariadb");
        load.arg(DATABASE);
        let log = testbed.scratch_path("replica-copy.log");
        peer_process::run_pipeline(dump, load, "mariadb-dump | mariadb", &log)?;
        target.execute(&format!(
            "SET GLOBAL gtid_slave_pos = '{position}';
             CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {},
                 MASTER_USER = '{MARIADB_USER}', MASTER_PASSWORD = '{MARIADB_PASSWORD}',
                 MASTER_USE_GTID = slave_pos;
             START SLAVE",
            testbed.source.port()
        ))?;
        let mut replica = Replica { target };
        let end = GtidList::parse(&source.query_text("SELECT @@gtid_binlog_pos")?)?;
        replica.wait_applied(&end, timeout)?;
        Ok(replica)
    }

    /// `STOP SLAVE`: both threads stop; the source keeps its binlog.
    pub(crate) fn pause(&mut self) -> anyhow::Result<()> {
        self.target.execute("STOP SLAVE")
    }

    /// `START SLAVE`: fetching and applying resume at the replica's position.
    pub(crate) fn resume(&mut self) -> anyhow::Result<()> {
        self.target.execute("START SLAVE")
    }

    /// Waits until the replica's `@@gtid_slave_pos` reaches `end`; fails at once when a
    /// replication thread stops with an error.
    pub(crate) fn wait_applied(&mut self, end: &GtidList, timeout: Duration) -> anyhow::Result<()> {
        let mut polls = 0u32;
        poll_until(
            &format!("the replica to apply up to {end}"),
            timeout,
            || {
                let applied = GtidList::parse(&self.target.query_text("SELECT @@gtid_slave_pos")?)?;
                if applied.reaches(end) {
                    return Ok(true);
                }
                polls += 1;
                if polls.is_multiple_of(ERROR_CHECK_EVERY) {
                    self.check_errors()?;
                }
                Ok(false)
            },
        )
    }

    /// Stops replicating and forgets the source.
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
        self.target.execute("STOP SLAVE; RESET SLAVE ALL")
    }

    fn check_errors(&mut self) -> anyhow::Result<()> {
        let rows: Vec<mysql_async::Row> = self.target.query("SHOW SLAVE STATUS")?;
        let Some(row) = rows.into_iter().next() else {
            anyhow::bail!("the replica is not configured any more");
        };
        for (errno, error) in [
            ("Last_IO_Errno", "Last_IO_Error"),
            ("Last_SQL_Errno", "Last_SQL_Error"),
        ] {
            let number: Option<u32> = row.get_opt(errno).and_then(Result::ok);
            if number.unwrap_or(0) != 0 {
                let text: String = row.get_opt(error).and_then(Result::ok).unwrap_or_default();
                anyhow::bail!("the replica stopped: {errno} {number:?}: {text}");
            }
        }
        Ok(())
    }
}

/// A MariaDB client tool (`mariadb`, `mariadb-dump`) on `127.0.0.1:port` as `ferry`.
pub(crate) fn client(port: u16, tool: &str) -> Command {
    let mut command = Command::new(tool);
    command
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &port.to_string()])
        .arg(format!("--user={MARIADB_USER}"))
        .arg(format!("--password={MARIADB_PASSWORD}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    command
}

/// A MariaDB GTID list (`0-1-42,1-2-7`): the last sequence number per replication domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GtidList(Vec<(u32, u64)>);

impl GtidList {
    /// Parses `domain-server-sequence` items separated by commas; empty is the empty list.
    pub(crate) fn parse(text: &str) -> anyhow::Result<GtidList> {
        let mut list = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let parts: Vec<&str> = item.split('-').collect();
            let [domain, _server, sequence] = parts.as_slice() else {
                anyhow::bail!("not a GTID: {item:?}");
            };
            list.push((domain.parse()?, sequence.parse()?));
        }
        Ok(GtidList(list))
    }

    /// Whether every domain of `end` is here with a sequence number at least as high.
    pub(crate) fn reaches(&self, end: &GtidList) -> bool {
        end.0.iter().all(|(domain, sequence)| {
            self.0
                .iter()
                .any(|(here, reached)| here == domain && reached >= sequence)
        })
    }
}

impl std::fmt::Display for GtidList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self.0.iter().map(|(d, s)| format!("{d}-*-{s}")).collect();
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_lists_compare_per_domain() {
        let end = GtidList::parse("0-1-42,1-2-7").expect("valid");
        assert!(GtidList::parse("1-9-7,0-1-43")
            .expect("valid")
            .reaches(&end));
        assert!(!GtidList::parse("0-1-42").expect("valid").reaches(&end));
        assert!(!GtidList::parse("0-1-41,1-2-7")
            .expect("valid")
            .reaches(&end));
        assert!(GtidList::parse("")
            .expect("empty")
            .reaches(&GtidList::default()));
        assert!(GtidList::parse("0-1").is_err());
        assert_eq!(end.to_string(), "0-*-42,1-*-7");
    }
}
