//! Publications and the replication slot of one changefeed.
//!
//! Names derive from the changefeed's key (namespace and id): lowercase, `[a-z0-9_]`, at
//! most 63 bytes, with a hash of the exact key so that ids differing only in case or `-`/`_`
//! never share a slot.
//!
//! Two publications: the main one publishes every operation for tables that have a key or
//! `REPLICA IDENTITY FULL`; the `_ins` one publishes only inserts and truncates for the
//! others. PostgreSQL refuses UPDATE/DELETE on a table without a replica identity once a
//! publication that publishes them contains it, so putting such a table in the main one
//! would break the source's own writes.

use ferry_core::{ConnectionUri, ErrorClass, Lsn, PartitionMode, TableId};
use pgwire_replication::{ReplicationClient, ReplicationConfig, TlsConfig};

use tokio_postgres::Client;

use crate::connect::SESSION_OPTIONS;
use crate::PgError;

/// The source-side object names of one changefeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotNames {
    /// The logical replication slot.
    pub slot: String,
    /// Publication of all operations.
    pub publication: String,
    /// Publication of inserts and truncates only (tables without a replica identity).
    pub insert_only_publication: String,
}

impl SlotNames {
    /// Names for the changefeed identified by `key` (e.g. `default/orders`).
    pub fn for_changefeed(key: &str) -> Self {
        let mut base: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        base.truncate(40);
        let base = format!("ferry_{base}_{:08x}", fnv1a(key.as_bytes()));
        SlotNames {
            slot: base.clone(),
            insert_only_publication: format!("{base}_ins"),
            publication: base,
        }
    }

    /// Both publication names.
    pub fn publications(&self) -> [&str; 2] {
        [&self.publication, &self.insert_only_publication]
    }
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The tables publication `name` contains (none when it does not exist).
pub async fn publication_tables(client: &Client, name: &str) -> Result<Vec<TableId>, PgError> {
    Ok(client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_catalog.pg_publication_tables
             WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(|e| PgError::new(format!("read publication {name}"), e))?
        .iter()
        .map(|r| TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// Makes publication `name` (publishing `publish`) contain exactly `tables`, publishing
/// partitions as `partitions` says.
///
/// - [`PartitionMode::Root`]: `publish_via_partition_root = true`. A partitioned table's
///   changes are published as its root's: one target table per partitioned table, and a
///   partition attached later is published without a restart.
/// - [`PartitionMode::Leaves`]: `publish_via_partition_root = false`, and `tables` are
///   the leaves themselves: each publishes under its own name. A leaf created or attached
///   later is published once Ferry adds it, like any new table (never before Ferry knows
///   it, so no change reaches the stream for a table it has not planned).
pub async fn sync_publication(
    client: &Client,
    name: &str,
    publish: &str,
    partitions: PartitionMode,
    tables: &[TableId],
) -> Result<(), PgError> {
    let quoted = ferry_core::quote_ident(name);
    let via_root = partitions == PartitionMode::Root;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(|e| PgError::new(format!("look up publication {name}"), e))?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {quoted} \
                 WITH (publish = '{publish}', publish_via_partition_root = {via_root})"
            ))
            .await
            .map_err(|e| PgError::new(format!("create publication {name}"), e))?;
    } else {
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION {quoted} SET (publish_via_partition_root = {via_root})"
            ))
            .await
            .map_err(|e| PgError::new(format!("set up publication {name}"), e))?;
    }
    let current = publication_tables(client, name).await?;
    let add: Vec<String> = tables
        .iter()
        .filter(|t| !current.contains(t))
        .map(TableId::quoted)
        .collect();
    let drop: Vec<String> = current
        .iter()
        .filter(|t| !tables.contains(t))
        .map(TableId::quoted)
        .collect();
    if !add.is_empty() {
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION {quoted} ADD TABLE {}",
                add.join(", ")
            ))
            .await
            .map_err(|e| PgError::new(format!("add tables to publication {name}"), e))?;
    }
    if !drop.is_empty() {
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION {quoted} DROP TABLE {}",
                drop.join(", ")
            ))
            .await
            .map_err(|e| PgError::new(format!("drop tables from publication {name}"), e))?;
    }
    Ok(())
}

/// Whether the source still keeps the WAL a slot needs (`pg_replication_slots.wal_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalStatus {
    /// Within `max_wal_size`.
    Reserved,
    /// Past `max_wal_size`, kept by the slot (within `max_slot_wal_keep_size`).
    Extended,
    /// Past `max_slot_wal_keep_size`: the next checkpoint removes WAL the slot needs unless
    /// it catches up first.
    Unreserved,
    /// Invalidated: WAL the slot needs is gone, it can never stream again.
    Lost,
    /// A value this version does not know, or none.
    Unknown,
}

impl WalStatus {
    fn parse(text: Option<&str>) -> WalStatus {
        match text {
            Some("reserved") => WalStatus::Reserved,
            Some("extended") => WalStatus::Extended,
            Some("unreserved") => WalStatus::Unreserved,
            Some("lost") => WalStatus::Lost,
            _ => WalStatus::Unknown,
        }
    }
}

/// The slot's state on the source, if it exists.
#[derive(Clone, Debug)]
pub struct SlotState {
    /// What the slot has confirmed (the oldest position it can still stream from).
    pub confirmed_flush: Lsn,
    /// Whether a walsender holds it now.
    pub active_pid: Option<i32>,
    /// Whether its WAL is still there.
    pub wal_status: WalStatus,
}

/// Reads slot `slot`.
pub async fn slot_state(client: &Client, slot: &str) -> Result<Option<SlotState>, PgError> {
    let row = client
        .query_opt(
            "SELECT COALESCE(confirmed_flush_lsn, '0/0')::text, active_pid, wal_status
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| PgError::new(format!("read slot {slot}"), e))?;
    Ok(row.map(|r| SlotState {
        confirmed_flush: r.get::<_, String>(0).parse().unwrap_or(Lsn::ZERO),
        active_pid: r.get(1),
        wal_status: WalStatus::parse(r.get(2)),
    }))
}

/// Why a changefeed's slot can no longer stream what follows its checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotLoss {
    /// No slot of that name on the source (dropped by someone, or a different database).
    Missing,
    /// The source invalidated it (`wal_status` `lost`): it removed WAL the slot still needed,
    /// because the slot held more than `max_slot_wal_keep_size`.
    Invalidated,
}

impl SlotLoss {
    /// What happened, in the source's terms, for an operator.
    pub fn describe(&self, slot: &str) -> String {
        match self {
            SlotLoss::Missing => format!("replication slot {slot} is gone from the source"),
            SlotLoss::Invalidated => format!(
                "replication slot {slot} was invalidated by the source (wal_status lost): it \
                 held more WAL than the source's max_slot_wal_keep_size allows, and the source \
                 removed WAL the slot still needed"
            ),
        }
    }
}

/// Whether slot `slot` was lost, from the slot's row (`None` when it has no row).
pub fn slot_loss(state: Option<&SlotState>) -> Option<SlotLoss> {
    match state {
        None => Some(SlotLoss::Missing),
        Some(s) if s.wal_status == WalStatus::Lost => Some(SlotLoss::Invalidated),
        Some(_) => None,
    }
}

/// Where a slot can stream from, and the WAL it keeps on the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotPositions {
    /// The oldest WAL the slot still needs.
    pub restart_lsn: Lsn,
    /// What the slot has confirmed: streaming can start no earlier than this.
    pub confirmed_flush: Lsn,
    /// The source's current WAL position.
    pub current_wal: Lsn,
    /// Whether the WAL the slot needs is still there.
    pub wal_status: WalStatus,
}

impl SlotPositions {
    /// Bytes of WAL the source keeps for this slot (0 once it is invalidated: the source
    /// keeps nothing for it any more).
    pub fn retained_wal_bytes(&self) -> u64 {
        if self.restart_lsn == Lsn::ZERO {
            return 0;
        }
        self.current_wal.0.saturating_sub(self.restart_lsn.0)
    }
}

/// Positions of the slots named in `slots` that exist, by name.
pub async fn slot_positions(
    client: &Client,
    slots: &[String],
) -> Result<Vec<(String, SlotPositions)>, PgError> {
    let rows = client
        .query(
            "SELECT slot_name::text, COALESCE(restart_lsn, '0/0')::text,
                    COALESCE(confirmed_flush_lsn, '0/0')::text,
                    pg_catalog.pg_current_wal_lsn()::text, wal_status
             FROM pg_catalog.pg_replication_slots WHERE slot_name = ANY($1)",
            &[&slots],
        )
        .await
        .map_err(|e| PgError::new("read replication slots", e))?;
    let lsn = |r: &tokio_postgres::Row, i| r.get::<_, String>(i).parse().unwrap_or(Lsn::ZERO);
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                SlotPositions {
                    restart_lsn: lsn(r, 1),
                    confirmed_flush: lsn(r, 2),
                    current_wal: lsn(r, 3),
                    wal_status: WalStatus::parse(r.get(4)),
                },
            )
        })
        .collect())
}

/// Drops the slot (ending a walsender that still holds it) and both publications.
/// Objects already gone are fine: this is idempotent.
pub async fn drop_all(client: &Client, names: &SlotNames) -> Result<(), PgError> {
    for _ in 0..50 {
        match slot_state(client, &names.slot).await? {
            None => break,
            Some(SlotState {
                active_pid: Some(pid),
                ..
            }) => {
                let _ = client
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Some(SlotState {
                active_pid: None, ..
            }) => {
                match client
                    .execute("SELECT pg_drop_replication_slot($1)", &[&names.slot])
                    .await
                {
                    Ok(_) => break,
                    // Raced with a walsender that just took it, or another dropper: retry.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
        }
    }
    for publication in names.publications() {
        client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                ferry_core::quote_ident(publication)
            ))
            .await
            .map_err(|e| PgError::new(format!("drop publication {publication}"), e))?;
    }
    Ok(())
}

/// How often a replication session reports its position, also when idle: the source's
/// `pg_stat_replication.reply_time` then tells a live session from a dead one
/// ([`crate::liveness`]).
pub(crate) const FEEDBACK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Where and how to open a replication session: the protocol settings and the source URI
/// (whose TLS options the session follows).
#[derive(Clone)]
pub struct ReplicationTarget {
    config: ReplicationConfig,
    uri: ConnectionUri,
}

impl ReplicationTarget {
    /// The replication slot the session uses.
    pub fn slot(&self) -> &str {
        &self.config.slot
    }

    /// Opens the session without starting replication (see
    /// [`ReplicationClient::connect_gated`]), with TLS as the URI says.
    pub async fn connect_gated(self) -> Result<ReplicationClient, PgError> {
        crate::tunnel::connect_gated(self.config, &self.uri).await
    }
}

/// Whether a replication session asks for in-progress transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streaming {
    /// Protocol 1: each transaction after its commit.
    Off,
    /// Protocol 2 with `streaming 'on'`.
    Blocks {
        /// The walsender's `logical_decoding_work_mem` for this session, when lower than
        /// the server's: a transaction is streamed once the walsender holds this much of
        /// it, so less of it is left to decode and apply after its commit.
        decoding_work_mem_kb: Option<i32>,
    },
}

/// The largest block Ferry has the walsender stream: 2 MB. With the server's 64 MB default
/// the last block of a 1M-row transaction (up to 64 MB) was decoded and applied only after
/// its commit; with 2 MB blocks its commit-to-caught-up time was 3.35–4.21 s (six runs)
/// against 4.63 and 4.90 s with 64 MB, smaller blocks no better within the noise
/// (`docs/benchmarks.md`). A transaction smaller than this is never streamed.
pub const DECODING_WORK_MEM_KB: i32 = 2048;

/// A replication-protocol configuration for `slot` on the source `uri`. Reads the password
/// now when the URI gives it by reference; fails (definite) when it cannot. `streaming`:
/// ask for protocol 2 with in-progress transactions streamed (PostgreSQL 14 and later; see
/// [`crate::spool`]), in blocks of at most the walsender's `logical_decoding_work_mem`.
pub fn replication_config(
    uri: &ConnectionUri,
    names: &SlotNames,
    start: Lsn,
    application_name: &str,
    streaming: Streaming,
) -> Result<ReplicationTarget, PgError> {
    let password = uri.password().map_err(|e| {
        PgError::other(
            format!("open replication session to {}", uri.masked()),
            ErrorClass::Definite,
            e,
        )
    })?;
    let config = ReplicationConfig::new(
        uri.host(),
        uri.user(),
        password.unwrap_or_default(),
        uri.database(),
        names.slot.clone(),
        [
            names.publication.clone(),
            names.insert_only_publication.clone(),
        ],
    )
    .with_port(uri.port_or(5432))
    .with_tls(TlsConfig::disabled())
    .with_start_lsn(pgwire_replication::Lsn(start.0))
    .with_options(match streaming {
        Streaming::Blocks {
            decoding_work_mem_kb: Some(kb),
        } => format!("{SESSION_OPTIONS} -c logical_decoding_work_mem={kb}kB"),
        _ => SESSION_OPTIONS.to_string(),
    })
    .with_application_name(application_name)
    .with_status_interval(FEEDBACK_INTERVAL)
    .with_wakeup_interval(FEEDBACK_INTERVAL)
    .with_buffer_size(4096)
    .with_streaming(streaming != Streaming::Off);
    Ok(ReplicationTarget {
        config,
        uri: uri.clone(),
    })
}

/// A slot just created, with the snapshot it exported.
pub struct CreatedSlot {
    /// The replication session that created it. Its snapshot lives until this session runs
    /// its next command, so it stays idle until the snapshot copy is done; then it starts
    /// streaming (or, for a temporary slot, is dropped).
    pub session: ReplicationClient,
    /// Where the slot starts: the snapshot shows every transaction committed before it.
    pub consistent_point: Lsn,
    /// The exported snapshot's name for `SET TRANSACTION SNAPSHOT`.
    pub snapshot_name: String,
}

/// Opens a gated replication session and creates the slot named in `config` with an
/// exported snapshot. A `temporary` slot disappears with the session. The source's silence
/// is bounded by [`DEFAULT_REPLICATION_TIMEOUT`](crate::replication::DEFAULT_REPLICATION_TIMEOUT)
/// (see [`create_slot_with_snapshot_within`]).
pub async fn create_slot_with_snapshot(
    target: ReplicationTarget,
    temporary: bool,
) -> Result<CreatedSlot, PgError> {
    create_slot_with_snapshot_within(
        target,
        temporary,
        crate::replication::DEFAULT_REPLICATION_TIMEOUT,
    )
    .await
}

/// [`create_slot_with_snapshot`], watched every `timeout`: creating a slot legitimately
/// waits for the source's running transactions to end, for as long as they run, so silence
/// alone says nothing. Each time the command has been silent for `timeout`, a separate
/// session asks the source whether the walsender still runs it
/// ([`crate::liveness::probe_slot_creation`]); two answers in a row saying it does not (it
/// finished, and its answer never came; or it never arrived), or no answer within
/// `timeout`, make the session dead: a transient error, and the changefeed retries.
pub async fn create_slot_with_snapshot_within(
    target: ReplicationTarget,
    temporary: bool,
    timeout: std::time::Duration,
) -> Result<CreatedSlot, PgError> {
    let slot = target.slot().to_owned();
    let uri = target.uri.clone();
    let application_name = target.config.application_name.clone().unwrap_or_default();
    let mut session = target.connect_gated().await?;
    let sql = format!(
        "CREATE_REPLICATION_SLOT {} {} LOGICAL pgoutput (SNAPSHOT 'export')",
        ferry_core::quote_ident(&slot),
        if temporary { "TEMPORARY" } else { "" }
    );
    let rows = {
        let command = session.simple_query(&sql);
        tokio::pin!(command);
        let mut not_running = 0;
        loop {
            let probe = async {
                tokio::time::sleep(timeout).await;
                crate::liveness::probe_slot_creation(&uri, &slot, &application_name, timeout).await
            };
            tokio::select! {
                rows = &mut command => break rows,
                probe = probe => match probe? {
                    crate::liveness::SlotCreation::Running => not_running = 0,
                    // Alive, and silent about the walsender: no evidence either way.
                    crate::liveness::SlotCreation::Unknown => {}
                    other => {
                        not_running += 1;
                        if not_running >= 2 {
                            return Err(PgError::other(
                                format!(
                                    "create replication slot {slot}: no answer for {} s \
                                     although the source {other}: the network to it may \
                                     be cut; reconnecting",
                                    timeout.as_secs_f64() * 2.0
                                ),
                                ErrorClass::Transient,
                                "timed out",
                            ));
                        }
                    }
                },
            }
        }
    }
    .map_err(|e| {
        crate::replication::replication_error(&format!("create replication slot {slot}"), e)
    })?;
    let text = |row: &[Option<bytes::Bytes>], i: usize| {
        row.get(i)
            .and_then(|v| v.as_ref())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let row = rows
        .first()
        .ok_or_else(|| PgError::definite("CREATE_REPLICATION_SLOT returned no row"))?;
    let consistent_point = text(row, 1)
        .parse()
        .map_err(|_| PgError::definite("CREATE_REPLICATION_SLOT returned no consistent point"))?;
    Ok(CreatedSlot {
        snapshot_name: text(row, 2),
        consistent_point,
        session,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        let a = SlotNames::for_changefeed("default/Orders-1");
        let b = SlotNames::for_changefeed("default/orders_1");
        assert_ne!(a.slot, b.slot);
        for n in [&a.slot, &a.publication, &a.insert_only_publication] {
            assert!(n.len() <= 63, "{n}");
            assert!(n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
        let long = SlotNames::for_changefeed(&format!("default/{}", "x".repeat(128)));
        assert!(long.insert_only_publication.len() <= 63);
    }
}
