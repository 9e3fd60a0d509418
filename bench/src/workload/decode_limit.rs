//! The decode limit: `pg_recvlogical` reading a pgoutput slot (`proto_version=1`, the same
//! publication the replicators would use) and writing the stream to /dev/null.
//!
//! This is what the source can hand to any pgoutput consumer: the walsender reads WAL,
//! reorders it by transaction and encodes it, and the client does nothing with it. Two
//! ways to time it:
//!
//! - [`DecodeLimit::drain`]: start after the backlog is written, stop at `--endpos` (the
//!   backlog workload);
//! - [`DecodeLimit::follow`] + [`DecodeLimit::wait_sent`]: already streaming while the
//!   source writes, done when the walsender's `sent_lsn` passes the end of the writes (the
//!   big-transaction workload, where replicators also run during the write).

use std::process::Stdio;
use std::time::Duration;

use crate::db::{Db, Lsn};
use crate::peer_process::{self, PeerProcess, ProcessUsage};
use crate::replicator::poll_until;
use crate::testbed::{Testbed, SOURCE_DB};

/// Name of the slot and the publication.
const NAME: &str = "bench_decode";

/// A pgoutput slot and publication on the source, created before the workload writes.
pub(super) struct DecodeLimit {
    source: Db,
}

impl DecodeLimit {
    /// Creates the publication of `tables` and the slot (untimed).
    pub(super) fn prepare(testbed: &Testbed, tables: &[&str]) -> anyhow::Result<Self> {
        let source = testbed.source_db()?;
        source.execute(&format!(
            "CREATE PUBLICATION {NAME} FOR TABLE {}",
            tables.join(", ")
        ))?;
        source.execute(&format!(
            "SELECT pg_create_logical_replication_slot('{NAME}', 'pgoutput')"
        ))?;
        Ok(DecodeLimit { source })
    }

    /// Runs `pg_recvlogical` from the slot's start to `end`; returns its resource use.
    pub(super) fn drain(&self, testbed: &Testbed, end: Lsn) -> anyhow::Result<ProcessUsage> {
        let mut command = recvlogical(testbed);
        command.arg(format!("--endpos={end}"));
        let log = testbed.scratch_path("pg_recvlogical.log");
        peer_process::run(command, "pg_recvlogical", &log)
    }

    /// Starts `pg_recvlogical` without an end; returns once its walsender holds the slot.
    pub(super) fn follow(&self, testbed: &Testbed) -> anyhow::Result<PeerProcess> {
        let log = testbed.scratch_path("pg_recvlogical.log");
        let process = PeerProcess::spawn(recvlogical(testbed), "pg_recvlogical", &log)?;
        poll_until("pg_recvlogical to attach", Duration::from_secs(30), || {
            Ok(self.source.query_i64(&format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{NAME}' AND active"
            ))? == 1)
        })?;
        Ok(process)
    }

    /// Waits until the walsender serving the slot has sent everything up to `end`.
    pub(super) fn wait_sent(&self, end: Lsn, timeout: Duration) -> anyhow::Result<()> {
        poll_until(&format!("sent_lsn to reach {end}"), timeout, || {
            let sent = self.source.query_texts(&format!(
                "SELECT r.sent_lsn::text FROM pg_stat_replication r \
                 JOIN pg_replication_slots s ON s.active_pid = r.pid \
                 WHERE s.slot_name = '{NAME}' AND r.sent_lsn IS NOT NULL"
            ))?;
            match sent.first() {
                Some(sent) => Ok(sent.parse::<Lsn>()? >= end),
                None => Ok(false),
            }
        })
    }

    /// Drops the slot (once no walsender holds it) and the publication.
    pub(super) fn finish(self) -> anyhow::Result<()> {
        crate::replicator::wait_slots_idle(&self.source)?;
        self.source
            .execute(&format!("SELECT pg_drop_replication_slot('{NAME}')"))?;
        self.source.execute(&format!("DROP PUBLICATION {NAME}"))
    }
}

/// `pg_recvlogical --start` on the slot, pgoutput protocol 1, output to /dev/null.
fn recvlogical(testbed: &Testbed) -> std::process::Command {
    let mut command = testbed.client_command(&testbed.source, "pg_recvlogical");
    command
        .args(["-d", SOURCE_DB, "--slot", NAME, "--start", "--no-loop"])
        .args(["-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={NAME}"))
        // "-" is stdout, which is /dev/null: no file, so no fsync either.
        .args(["-f", "-"])
        .stdout(Stdio::null());
    command
}
