//! The replication stream, turned into [`SourceEvent`]s.
//!
//! pgwire-replication frames the protocol, answers keepalives and sends standby status
//! updates (also when idle); it hands over `Begin`/`Commit` boundaries and raw pgoutput
//! payloads, which [`crate::decode`] turns into messages and this module into events:
//!
//! ```text
//! Relation ─► catalog lookup ─► SourceEvent::Schema (cached per relation id), or
//!            SourceEvent::Renamed when a known relation id arrives under another name
//! Insert/Update/Delete/Truncate ─► SourceEvent::Change (values stay zero-copy Bytes)
//! Begin/Commit ─► SourceEvent::Begin/Commit (Commit carries end_lsn, the resume point)
//! KeepAlive outside a transaction ─► SourceEvent::Idle (lets `synced` work on a quiet source)
//! Stream Start … Stream Commit ─► spooled, then Begin, its changes, Commit ([`crate::spool`]);
//!   asked to, also sent ahead of the commit ([`ahead`])
//! ```
//!
//! A row holding an enum label the relation's description did not know (added by
//! `ALTER TYPE … ADD VALUE`, which the stream does not announce) makes the relation be
//! described again first, so the sink adds the label before the row.
//!
//! The slot learns what it may discard only through the `confirms` channel of
//! [`PgStream::run`], which the engine feeds after a batch and its checkpoint are durable.
//!
//! A stream silent for [`StreamOptions::timeout`] is probed over the catalog connection; a
//! dead session ends the stream with a transient error, and a slot still held by this
//! changefeed's own dead session is taken back at start ([`crate::liveness`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{
    ErrorClass, Lsn, PartitionMode, Position, Row, RowChange, SourceEvent, TableId, TableSchema,
    Value,
};
use futures::FutureExt;
use pgwire_replication::{ReplicationClient, ReplicationEvent};
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::catalog;
use crate::decode::{self, OldTuple, PgOutputMessage, RelationMessage};
use crate::liveness::{self, Probe};
use crate::replication::replication_error;
use crate::spool::Spool;
use crate::PgError;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

pub use crate::replication::DEFAULT_REPLICATION_TIMEOUT;

/// How a stream watches its session.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// The slot the session streams from.
    pub slot: String,
    /// The session's `application_name` (a stale walsender is recognised by it).
    pub application_name: String,
    /// See [`DEFAULT_REPLICATION_TIMEOUT`].
    pub timeout: Duration,
    /// How the publications publish partitions (see [`crate::slot::sync_publication`]).
    pub partitions: PartitionMode,
    /// The session asked for protocol 2 with in-progress transactions streamed
    /// ([`crate::spool`]).
    pub streaming: bool,
    /// Streamed transactions' changes are also sent ahead of their commit
    /// ([`ferry_core::Ahead`]; needs `streaming`).
    pub ahead: bool,
}

/// An enum column of a relation: its index in rows, and the labels known for its type.
type EnumColumn = (usize, catalog::EnumLabels);

/// A started replication stream.
pub struct PgStream {
    session: ReplicationClient,
    catalog: Client,
    options: StreamOptions,
    relations: HashMap<u32, Arc<TableSchema>>,
    /// The name each replicated table (by the source's OID) had when last announced: seeded
    /// with what the target holds, so a rename is seen across sessions too.
    names: HashMap<u32, TableId>,
    /// Per relation, per enum column: the labels known when it was described. A value
    /// outside them was added since (`ALTER TYPE … ADD VALUE`, which the stream does not
    /// announce): the relation is described again first, from its last Relation message.
    enums: HashMap<u32, Vec<EnumColumn>>,
    in_transaction: bool,
    pending: std::collections::VecDeque<SourceEvent>,
    /// Transactions the source streams in progress, by top-level xid ([`crate::spool`]).
    spools: HashMap<u32, Spool>,
    /// The transaction whose stream block is open.
    block: Option<u32>,
    /// A streamed transaction that committed, to be handed on as an ordinary one.
    committed: Option<streamed::Committed>,
    /// The last Relation message the committed path read, per relation.
    relation_messages: HashMap<u32, Arc<RelationMessage>>,
    /// The definition last announced per relation.
    definitions: HashMap<u32, ferry_core::TableDefinition>,
    /// Streamed transactions whose changes go ahead of their commit ([`ahead`]).
    ahead: ahead::AheadTransactions,
}

mod ahead;
mod describe;
mod streamed;

impl PgStream {
    /// Starts streaming on a gated `session` (its slot and publications set up), using
    /// `catalog` (a normal connection to the source) to describe relations and to probe a
    /// silent stream. `names`: the name each table (by OID) has on the target; a relation
    /// announced under another name is a rename ([`SourceEvent::Renamed`]).
    ///
    /// A slot still held by a walsender of this changefeed's own dead session (after a
    /// network cut) is taken back, and the start fails as transient so the retry gets it.
    pub async fn start(
        mut session: ReplicationClient,
        catalog: Client,
        options: StreamOptions,
        names: HashMap<u32, TableId>,
    ) -> Result<Self, PgError> {
        let timeout = options.timeout;
        tokio::time::timeout(timeout, catalog::prepare_session(&catalog))
            .await
            .map_err(|_| liveness::silent_source(timeout))??;
        let started = async {
            session.start().await?;
            session.wait_started().await
        };
        match tokio::time::timeout(timeout, started).await {
            Err(_) => return Err(liveness::silent_source(timeout)),
            Ok(Err(e)) if liveness::is_slot_active_error(&e.to_string()) => {
                let released = liveness::release_stale_slot(
                    &catalog,
                    &options.slot,
                    &options.application_name,
                    timeout,
                )
                .await?;
                let what = match released {
                    Some(pid) => {
                        tracing::warn!(slot = %options.slot, pid, "ended the walsender of a dead replication session");
                        format!(
                            "start replication: slot {} was held by the walsender (PID {pid}) \
                             of a dead session of this changefeed; it was ended, retrying",
                            options.slot
                        )
                    }
                    None => format!(
                        "start replication: slot {} is held by another session; retrying",
                        options.slot
                    ),
                };
                return Err(PgError::other(what, ErrorClass::Transient, e));
            }
            Ok(Err(e)) => return Err(replication_error("start replication", e)),
            Ok(Ok(())) => {}
        }
        Ok(PgStream {
            session,
            catalog,
            options,
            relations: HashMap::new(),
            names,
            enums: HashMap::new(),
            in_transaction: false,
            pending: Default::default(),
            spools: HashMap::new(),
            block: None,
            committed: None,
            relation_messages: HashMap::new(),
            definitions: HashMap::new(),
            ahead: HashMap::new(),
        })
    }

    /// Reads the stream until it ends, the receiver of `events` goes away, or an error
    /// (sent as the last item). Positions received on `confirms` are reported to the slot
    /// as durably applied; only the raw receive is ever raced against them or dropped
    /// unfinished (it is cancel-safe: vendor/pgwire-replication/PATCHES.md), so no decoded
    /// event is lost to cancellation.
    pub async fn run(
        mut self,
        events: ferry_core::source::EventSender,
        mut confirms: ferry_core::source::Confirmed,
    ) {
        let timeout = self.options.timeout;
        let mut last_heard = Instant::now();
        // Whether a message came since `last_heard`: the clock is read once per wait rather
        // than once per message (a backlog brings hundreds of thousands a second).
        let mut heard = false;
        loop {
            // Positions confirmed while messages kept coming; the wait below sees the rest.
            match confirms.has_changed() {
                Err(_) => {
                    // The engine is gone; what it confirmed last is still reported.
                    self.report_applied(&mut confirms);
                    return;
                }
                Ok(true) => self.report_applied(&mut confirms),
                Ok(false) => {}
            }
            // A message already received is taken at once: no timer armed, no clock read.
            let raw = match self.session.recv().now_or_never() {
                Some(raw) => raw,
                None => {
                    if heard {
                        last_heard = Instant::now();
                        heard = false;
                    }
                    tokio::select! {
                        biased;
                        changed = confirms.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            self.report_applied(&mut confirms);
                            continue;
                        }
                        raw = self.session.recv() => raw,
                        _ = tokio::time::sleep_until(last_heard + timeout) => {
                            match self.check_alive().await {
                                Ok(()) => {
                                    last_heard = Instant::now();
                                    continue;
                                }
                                Err(e) => {
                                    let _ = events.send(Err(e.into())).await;
                                    return;
                                }
                            }
                        }
                    }
                }
            };
            heard = true;
            let handled = match raw {
                Ok(Some(event)) => self.translate_within(event, timeout).await,
                Ok(None) => Err(PgError::other(
                    "the replication stream ended",
                    ErrorClass::Transient,
                    "server closed the stream",
                )),
                Err(e) => Err(replication_error("read the replication stream", e)),
            };
            if let Err(e) = handled {
                let _ = events.send(Err(e.into())).await;
                return;
            }
            if !self.flush(&events).await {
                return;
            }
            if let Some(committed) = self.committed.take() {
                match self.hand_on(committed, &events).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        let _ = events.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        }
    }

    /// Reports the position last confirmed on `confirms` to the slot as durably applied.
    fn report_applied(&self, confirms: &mut ferry_core::source::Confirmed) {
        if let Some(Position::PgLsn(lsn)) = *confirms.borrow_and_update() {
            self.session
                .update_applied_lsn(pgwire_replication::Lsn(lsn.0));
        }
    }

    /// Translates `event`, failing when that takes longer than `timeout` (a catalog query
    /// the source does not answer). Most events need no query: those finish at their first
    /// poll, before any timer is armed.
    async fn translate_within(
        &mut self,
        event: ReplicationEvent,
        timeout: Duration,
    ) -> Result<(), PgError> {
        let mut translating = std::pin::pin!(self.translate(event));
        if let Some(done) = translating.as_mut().now_or_never() {
            return done;
        }
        tokio::time::timeout(timeout, translating)
            .await
            .unwrap_or_else(|_| Err(liveness::silent_source(timeout)))
    }

    /// Sends the pending events; `false` when the receiver is gone.
    async fn flush(&mut self, events: &ferry_core::source::EventSender) -> bool {
        while let Some(event) = self.pending.pop_front() {
            if events.send(Ok(event)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// After a silence of the replication timeout: whether the session is still alive, as the
    /// source sees it (see [`crate::liveness`]).
    async fn check_alive(&self) -> Result<(), PgError> {
        let timeout = self.options.timeout;
        let slot = &self.options.slot;
        let dead = |why: String| PgError::other(why, ErrorClass::Transient, "session lost");
        match liveness::probe(&self.catalog, slot, timeout).await? {
            Probe::Alive { reply_age_seconds }
                if reply_age_seconds < liveness::stale_after(timeout).as_secs_f64() =>
            {
                Ok(())
            }
            Probe::Alive { reply_age_seconds } => Err(dead(format!(
                "the replication session is cut: the source's walsender has not heard from \
                 Ferry for {reply_age_seconds:.0} s (replication_timeout {} s); reconnecting",
                timeout.as_secs_f64()
            ))),
            Probe::NoWalsender => Err(dead(format!(
                "the replication session ended on the source (no walsender holds slot {slot}); \
                 reconnecting"
            ))),
            Probe::NoSlot => Err(dead(format!("replication slot {slot} is gone"))),
        }
    }

    async fn translate(&mut self, event: ReplicationEvent) -> Result<(), PgError> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                commit_time_micros,
                xid,
            } => {
                self.in_transaction = true;
                self.pending.push_back(SourceEvent::Begin {
                    commit: Position::PgLsn(Lsn(final_lsn.0)),
                    xid,
                    commit_time_us: commit_time_micros.saturating_add(PG_EPOCH_OFFSET_US),
                });
            }
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                self.in_transaction = false;
                self.pending.push_back(SourceEvent::Commit {
                    end: Position::PgLsn(Lsn(end_lsn.0)),
                    commit_time_us: commit_time_micros.saturating_add(PG_EPOCH_OFFSET_US),
                });
            }
            ReplicationEvent::KeepAlive {
                wal_end,
                server_time_micros,
                ..
            } => {
                if !self.in_transaction {
                    self.pending.push_back(SourceEvent::Idle {
                        position: Position::PgLsn(Lsn(wal_end.0)),
                        server_time_us: server_time_micros.saturating_add(PG_EPOCH_OFFSET_US),
                    });
                }
            }
            ReplicationEvent::XLogData { data, .. } => {
                if self.options.streaming && self.on_streamed(&data).await? {
                    return Ok(());
                }
                let message = decode::decode(&data).map_err(|e| {
                    PgError::other("decode a pgoutput message", ErrorClass::Definite, e)
                })?;
                self.on_message(message).await?;
            }
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    async fn on_message(&mut self, message: PgOutputMessage) -> Result<(), PgError> {
        match message {
            PgOutputMessage::Relation(relation) => {
                let (schema, dropped) = self.describe(&relation).await?;
                self.note_enums(&relation).await?;
                let schema = Arc::new(schema);
                if dropped {
                    self.pending.push_back(SourceEvent::Warning(format!(
                        "table {} was dropped on the source while changes to it were still \
                         unread: they were applied as the stream describes the table, and its \
                         target table is kept but gets no further changes",
                        schema.id
                    )));
                }
                self.relations.insert(relation.id, schema.clone());
                self.relation_messages
                    .insert(relation.id, Arc::new(relation.clone()));
                // Published via its root, a partition's changes name the root, but pgoutput
                // describes the partition too: nothing is written under its name. Leaves
                // published on their own are tables like any other.
                if self.options.partitions == PartitionMode::Leaves
                    || !self.is_partition(relation.id).await?
                {
                    let id = schema.id.clone();
                    match self.names.insert(relation.id, id.clone()) {
                        Some(from) if from != schema.id => {
                            self.pending
                                .push_back(SourceEvent::Renamed { from, schema });
                        }
                        _ => self.pending.push_back(SourceEvent::Schema(schema)),
                    }
                    // pgoutput describes a table again after an index, constraint or
                    // default changed too (they invalidate it): its definition goes with
                    // it. A dropped table's target table is kept as it is.
                    if !dropped {
                        let read = crate::definition::read(&self.catalog, relation.id, &id).await?;
                        // The same value as last time: the same announcement, which the
                        // engine recognizes by its address.
                        let definition = match self.definitions.get(&relation.id) {
                            Some(known)
                                if known.0.downcast_ref::<crate::definition::TableDefinition>()
                                    == Some(&read) =>
                            {
                                known.clone()
                            }
                            _ => ferry_core::TableDefinition(Arc::new(read)),
                        };
                        self.definitions.insert(relation.id, definition.clone());
                        self.pending.push_back(SourceEvent::Definition {
                            table: id,
                            definition,
                        });
                    }
                }
            }
            PgOutputMessage::Insert { relation_id, new } => {
                self.check_enum_values(relation_id, &new).await?;
                let table = self.relation(relation_id)?;
                check_width(&table, &new)?;
                self.pending
                    .push_back(SourceEvent::Change(RowChange::Insert { table, new }));
            }
            PgOutputMessage::Update {
                relation_id,
                old,
                new,
            } => {
                self.check_enum_values(relation_id, &new).await?;
                let table = self.relation(relation_id)?;
                check_width(&table, &new)?;
                let old = old.map(OldTuple::into_row);
                self.pending
                    .push_back(SourceEvent::Change(RowChange::Update { table, old, new }));
            }
            PgOutputMessage::Delete { relation_id, old } => {
                let table = self.relation(relation_id)?;
                let old: Row = old.into_row();
                self.pending
                    .push_back(SourceEvent::Change(RowChange::Delete { table, old }));
            }
            PgOutputMessage::Truncate {
                relation_ids,
                restart_identity,
                ..
            } => {
                let tables = relation_ids
                    .iter()
                    .map(|id| self.relation(*id))
                    .collect::<Result<Vec<_>, _>>()?;
                self.pending
                    .push_back(SourceEvent::Change(RowChange::Truncate {
                        tables,
                        restart_identity,
                    }));
            }
            // Begin/Commit/Message arrive as the client's own events; types and origins
            // need no action (types are read from the catalog with the relation).
            _ => {}
        }
        Ok(())
    }

    async fn is_partition(&self, oid: u32) -> Result<bool, PgError> {
        let row = self
            .catalog
            .query_one(
                "SELECT COALESCE((SELECT relispartition FROM pg_catalog.pg_class
                                  WHERE oid = $1), false)",
                &[&oid],
            )
            .await
            .map_err(|e| PgError::new(format!("read table {oid}"), e))?;
        Ok(row.get(0))
    }

    /// Remembers the labels of `relation`'s enum columns.
    async fn note_enums(&mut self, relation: &RelationMessage) -> Result<(), PgError> {
        let user: Vec<u32> = relation
            .columns
            .iter()
            .map(|c| c.type_oid)
            .filter(|&t| t >= 16384)
            .collect();
        let labels = if user.is_empty() {
            HashMap::new()
        } else {
            catalog::enum_labels(&self.catalog, &user).await?
        };
        let columns: Vec<EnumColumn> = relation
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| labels.get(&c.type_oid).map(|l| (i, l.clone())))
            .collect();
        if columns.is_empty() {
            self.enums.remove(&relation.id);
        } else {
            self.enums.insert(relation.id, columns);
        }
        Ok(())
    }

    /// Describes the relation again (announcing its new shape) when `row` holds an enum
    /// label added since it was described.
    async fn check_enum_values(&mut self, id: u32, row: &Row) -> Result<(), PgError> {
        let Some(columns) = self.enums.get(&id) else {
            return Ok(());
        };
        let added = columns.iter().any(|(i, labels)| match row.get(*i) {
            Some(Value::Text(v)) => labels.misses_label_of(v),
            _ => false,
        });
        if !added {
            return Ok(());
        }
        let Some(relation) = self.relation_messages.get(&id).cloned() else {
            return Ok(());
        };
        let (schema, _) = self.describe(&relation).await?;
        self.note_enums(&relation).await?;
        let schema = Arc::new(schema);
        self.relations.insert(id, schema.clone());
        self.pending.push_back(SourceEvent::Schema(schema));
        Ok(())
    }

    fn relation(&self, id: u32) -> Result<Arc<TableSchema>, PgError> {
        self.relations.get(&id).cloned().ok_or_else(|| {
            PgError::definite(format!("pgoutput sent a change for unknown relation {id}"))
        })
    }
}

fn check_width(table: &TableSchema, row: &Row) -> Result<(), PgError> {
    if row.len() != table.columns.len() {
        return Err(PgError::definite(format!(
            "pgoutput sent {} values for {} which has {} columns",
            row.len(),
            table.id,
            table.columns.len()
        )));
    }
    Ok(())
}
