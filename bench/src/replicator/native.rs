//! PostgreSQL's built-in logical replication: a publication on the source, a subscription
//! (with `copy_data`, the default) on the target.
//!
//! The target needs the tables' definitions first; they are copied with
//! `pg_dump --schema-only`, keys included, before the clock starts. The subscription's own
//! settings stay at their defaults (PostgreSQL 15: `streaming = off`, `binary = false`, two
//! table-sync workers per subscription), as a user would run it.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::db::{quote_literal, Db, Lsn};
use crate::replicator::{poll_until, wait_slots_idle};
use crate::testbed::{Testbed, SOURCE_DB};

/// Name of the publication, the subscription and (by default) its slot.
const NAME: &str = "bench_native";

/// A publication and, once [`NativeSubscription::subscribe`] ran, its subscription.
pub(crate) struct NativeSubscription {
    source: Db,
    target: Db,
    conninfo: String,
    /// When `CREATE SUBSCRIPTION` launched the apply worker.
    subscribed_at: Cell<Option<Instant>>,
}

impl NativeSubscription {
    /// The untimed set-up: the tables' definitions on the target, a publication of them on
    /// the source.
    pub(crate) fn prepare(testbed: &Testbed, tables: &[&str]) -> anyhow::Result<Self> {
        testbed.copy_schema(tables, false)?;
        let source = testbed.source_db()?;
        source.execute(&format!(
            "CREATE PUBLICATION {NAME} FOR TABLE {}",
            tables.join(", ")
        ))?;
        Ok(NativeSubscription {
            source,
            target: testbed.target_db()?,
            conninfo: format!(
                "host=127.0.0.1 port={} user=ferry dbname={SOURCE_DB}",
                testbed.source.port()
            ),
            subscribed_at: Cell::new(None),
        })
    }

    /// `CREATE SUBSCRIPTION`: creates the slot, then copies every table and streams.
    pub(crate) fn subscribe(&self) -> anyhow::Result<()> {
        self.target.execute(&format!(
            "CREATE SUBSCRIPTION {NAME} CONNECTION {} PUBLICATION {NAME}",
            quote_literal(&self.conninfo)
        ))?;
        self.subscribed_at.set(Some(Instant::now()));
        Ok(())
    }

    /// Waits until every subscribed table is in state `r` (ready): its initial copy is done
    /// and the apply worker has taken it over.
    pub(crate) fn wait_tables_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        poll_until("every table to reach state r", timeout, || {
            let not_ready = self.target.query_i64(
                "SELECT CASE WHEN count(*) = 0 THEN -1 \
                 ELSE count(*) FILTER (WHERE srsubstate <> 'r') END \
                 FROM pg_subscription_rel",
            )?;
            if not_ready != 0 {
                self.check_errors()?;
            }
            Ok(not_ready == 0)
        })
    }

    /// Waits until the tables are ready and the slot has confirmed everything the source
    /// wrote before this call.
    pub(crate) fn wait_caught_up(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_tables_ready(timeout)?;
        let end = self.source.current_wal_lsn()?;
        self.wait_confirmed(end, timeout)
    }

    /// Waits until the subscription has applied everything up to `lsn`: the slot's
    /// `confirmed_flush_lsn` reaches it, or the target's replication origin (the end of the
    /// last transaction applied) does, whichever shows first.
    ///
    /// Both are needed: once idle, the apply worker reports its position to the source only
    /// about once a second (after the target's WAL writer flushed), which would add up to a
    /// second to every timing; the origin moves at each applied commit but never passes the
    /// last commit, so an `lsn` past it (a later non-transactional WAL record) is only ever
    /// reached by the slot.
    pub(crate) fn wait_confirmed(&self, lsn: Lsn, timeout: Duration) -> anyhow::Result<()> {
        let applied = |db: &Db, sql: &str| -> anyhow::Result<bool> {
            match db.query_texts(sql)?.first() {
                Some(position) => Ok(position.parse::<Lsn>()? >= lsn),
                None => Ok(false),
            }
        };
        let slot = format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots \
             WHERE slot_name = '{NAME}' AND confirmed_flush_lsn IS NOT NULL"
        );
        let origin = format!(
            "SELECT o.remote_lsn::text FROM pg_replication_origin_status o \
             JOIN pg_subscription s ON o.external_id = 'pg_' || s.oid \
             WHERE s.subname = '{NAME}' AND o.remote_lsn IS NOT NULL"
        );
        poll_until(
            &format!("the subscription to apply up to {lsn}"),
            timeout,
            || {
                if applied(&self.target, &origin)? || applied(&self.source, &slot)? {
                    return Ok(true);
                }
                self.check_errors()?;
                Ok(false)
            },
        )
    }

    /// `ALTER SUBSCRIPTION … DISABLE`, then waits until the walsender has let go of the slot.
    ///
    /// Also waits until `wal_retrieve_retry_interval` (5 s) has passed since the apply
    /// worker was launched: the launcher starts no worker sooner than that after its
    /// previous start, and that pause would otherwise land in the timed part when the
    /// backlog is small (`--quick`). Full runs write their backlog for longer than that.
    pub(crate) fn disable(&self) -> anyhow::Result<()> {
        self.target
            .execute(&format!("ALTER SUBSCRIPTION {NAME} DISABLE"))?;
        wait_slots_idle(&self.source)?;
        let retry_ms = self.target.query_i64(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_retrieve_retry_interval'",
        )?;
        if let Some(subscribed_at) = self.subscribed_at.get() {
            let ready = subscribed_at + Duration::from_millis(retry_ms.unsigned_abs());
            if let Some(wait) = ready.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        Ok(())
    }

    /// `ALTER SUBSCRIPTION … ENABLE`.
    pub(crate) fn enable(&self) -> anyhow::Result<()> {
        self.target
            .execute(&format!("ALTER SUBSCRIPTION {NAME} ENABLE"))
    }

    /// Drops the subscription (and with it the slot on the source) and the publication.
    pub(crate) fn finish(self) -> anyhow::Result<()> {
        self.target.execute(&format!("DROP SUBSCRIPTION {NAME}"))?;
        self.source.execute(&format!("DROP PUBLICATION {NAME}"))
    }

    /// Fails fast when the subscription's workers report errors (they would retry forever).
    fn check_errors(&self) -> anyhow::Result<()> {
        let errors = self.target.query_i64(&format!(
            "SELECT coalesce(sum(apply_error_count + sync_error_count), 0)::bigint \
             FROM pg_stat_subscription_stats WHERE subname = '{NAME}'"
        ))?;
        anyhow::ensure!(
            errors == 0,
            "the subscription's workers reported {errors} errors (see the target's log)"
        );
        Ok(())
    }
}
