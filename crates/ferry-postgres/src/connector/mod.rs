//! PostgreSQL behind the connector traits of `ferry-core`: [`PgSourceConnector`] (and the
//! per-attempt [`PgSource`]) and [`PgSinkConnector`]. Everything the engine once did with
//! slots, publications and catalogs itself happens here.

mod position;
mod source;

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::{
    BacklogRisk, ConnectionSecurity, ConnectionUri, FeedBacklog, ForeignKeyCreated, OrphanObject,
    ParsePositionError, Position, SequenceSynced, Sink, SinkConnector, SinkError, SinkUri, Source,
    SourceCheck, SourceConnector, SourceError, SourceObject, SourceOptions, TableFilter, TableId,
    TableSchema, TableVerdict, TargetPolicy, TargetProblem,
};
use futures::future::BoxFuture;

pub use source::PgSource;

use crate::eligibility;
use crate::slot::{self, SlotNames, WalStatus};
use crate::{catalog, PgError};

/// The PostgreSQL source connector (scheme `postgres`/`postgresql`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PgSourceConnector;

/// The PostgreSQL sink connector.
#[derive(Clone, Copy, Debug, Default)]
pub struct PgSinkConnector;

async fn connect(
    uri: &ConnectionUri,
    application: &str,
) -> Result<tokio_postgres::Client, PgError> {
    crate::connect::connect(uri, application).await
}

#[async_trait]
impl SourceConnector for PgSourceConnector {
    fn parse_position(&self, text: &str) -> Result<Position, ParsePositionError> {
        text.parse().map(Position::PgLsn)
    }

    async fn open(
        &self,
        uri: &ConnectionUri,
        feed: &str,
        options: &SourceOptions,
    ) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(PgSource::open(uri, feed, options).await?))
    }

    async fn check(&self, uri: &ConnectionUri) -> Result<SourceCheck, SourceError> {
        let client = connect(uri, "ferry-check").await?;
        let facts = eligibility::source_facts(&client).await?;
        Ok(SourceCheck {
            problems: facts.problems(),
            facts: serde_json::to_value(&facts).expect("source facts serialize"),
        })
    }

    async fn security(&self, uri: &ConnectionUri) -> Result<ConnectionSecurity, SourceError> {
        let client = connect(uri, "ferry-check").await?;
        Ok(crate::connect::connection_security(&client).await?)
    }

    async fn missing_tables(
        &self,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<Vec<String>, SourceError> {
        let client = connect(uri, "ferry-check").await?;
        let tables = eligibility::table_facts(&client, filter.partitions()).await?;
        Ok(eligibility::missing_tables(filter, &tables))
    }

    async fn table_problems(
        &self,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<Vec<String>, SourceError> {
        let client = connect(uri, "ferry-check").await?;
        let unowned = eligibility::unowned_tables(&client, filter).await?;
        if unowned.is_empty() {
            return Ok(Vec::new());
        }
        let user = uri.user();
        Ok(vec![format!(
            "the source user {user} does not own {}, which a publication needs; make {user} a \
             member of the owning role (GRANT <owner> TO {user}) or exclude the tables",
            unowned.join(", ")
        )])
    }

    async fn verify_tables(
        &self,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<Vec<TableVerdict>, SourceError> {
        let client = connect(uri, "ferry-verify").await?;
        Ok(eligibility::verify_tables(&client, filter)
            .await?
            .into_iter()
            .map(|v| TableVerdict {
                table: v.table,
                reason: v.reason,
                eligible: v.eligible,
            })
            .collect())
    }

    async fn selected_schemas(
        &self,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<(Vec<TableSchema>, Option<ferry_core::ServerIdentity>), SourceError> {
        let client = connect(uri, "ferry-check").await?;
        let identity = match crate::identity::server_identity(&client).await {
            Ok(identity) => Some(identity),
            Err(e) => {
                tracing::warn!(error = %e.chain(), "cannot read the source's identity");
                None
            }
        };
        catalog::prepare_session(&client).await?;
        let tables = catalog::selected_tables(&client, filter).await?;
        Ok((tables.into_iter().map(|t| t.schema).collect(), identity))
    }

    async fn current_position(&self, uri: &ConnectionUri) -> Result<Position, SourceError> {
        Ok(Position::PgLsn(position::current_wal_lsn(uri).await?))
    }

    /// At or after what the slot has confirmed (older WAL may be gone) and not beyond the
    /// source's current WAL.
    async fn check_resume(
        &self,
        uri: &ConnectionUri,
        feed: &str,
        position: &Position,
    ) -> Result<Result<(), String>, SourceError> {
        let Position::PgLsn(position) = *position else {
            return Ok(Err(format!(
                "{position} is a {} position, not a PostgreSQL LSN (such as 0/16B3748)",
                position.kind()
            )));
        };
        let client = connect(uri, "ferry-check").await?;
        let names = SlotNames::for_changefeed(feed);
        let slots = slot::slot_positions(&client, std::slice::from_ref(&names.slot)).await?;
        let Some((_, slot)) = slots.into_iter().next() else {
            return Ok(Err(format!(
                "the changefeed has no replication slot {} on the source, so it cannot start \
                 from {position}",
                names.slot
            )));
        };
        let oldest = slot.confirmed_flush.max(slot.restart_lsn);
        if position < oldest {
            return Ok(Err(format!(
                "position {position} is older than what the slot can serve (confirmed {}, \
                 restart {}); use a position at or after {oldest}",
                slot.confirmed_flush, slot.restart_lsn
            )));
        }
        if position > slot.current_wal {
            return Ok(Err(format!(
                "position {position} is beyond the source's current WAL position {}",
                slot.current_wal
            )));
        }
        Ok(Ok(()))
    }

    async fn backlog(
        &self,
        uri: &ConnectionUri,
        feeds: &[String],
    ) -> Result<Vec<FeedBacklog>, SourceError> {
        let client = connect(uri, "ferry-monitor").await?;
        let names: Vec<String> = feeds
            .iter()
            .map(|f| SlotNames::for_changefeed(f).slot)
            .collect();
        let positions = slot::slot_positions(&client, &names).await?;
        Ok(feeds
            .iter()
            .zip(names)
            .map(|(feed, holder)| {
                let found = positions.iter().find(|(n, _)| *n == holder).map(|(_, p)| p);
                let risk = match found {
                    None => Some(BacklogRisk::Lost(slot::SlotLoss::Missing.describe(&holder))),
                    Some(p) => match p.wal_status {
                        WalStatus::Lost => Some(BacklogRisk::Lost(
                            slot::SlotLoss::Invalidated.describe(&holder),
                        )),
                        WalStatus::Unreserved => Some(BacklogRisk::AtRisk(format!(
                            "replication slot {holder} holds {} bytes of WAL, past the source's \
                             max_slot_wal_keep_size: the source removes WAL the slot still \
                             needs at its next checkpoint unless the changefeed catches up \
                             first (resume it if paused)",
                            p.retained_wal_bytes()
                        ))),
                        _ => None,
                    },
                };
                FeedBacklog {
                    feed: feed.clone(),
                    confirmed: found.map(|p| Position::PgLsn(p.confirmed_flush)),
                    retained_bytes: found.map(slot::SlotPositions::retained_wal_bytes),
                    holder,
                    risk,
                }
            })
            .collect())
    }

    fn objects(&self, feed: &str) -> Vec<SourceObject> {
        let names = SlotNames::for_changefeed(feed);
        let mut out = vec![
            SourceObject {
                kind: "slot",
                name: names.slot.clone(),
            },
            SourceObject {
                kind: "slot",
                name: format!("{}_tmp", names.slot),
            },
        ];
        out.extend(names.publications().into_iter().map(|p| SourceObject {
            kind: "publication",
            name: p.to_string(),
        }));
        out
    }

    async fn release(&self, uri: &ConnectionUri, feed: &str) -> Result<(), SourceError> {
        position::forget(uri);
        let client = connect(uri, "ferry-cleanup").await?;
        Ok(slot::drop_all(&client, &SlotNames::for_changefeed(feed)).await?)
    }

    async fn orphans(
        &self,
        uri: &ConnectionUri,
        owned: &BTreeSet<String>,
    ) -> Result<Vec<OrphanObject>, SourceError> {
        let client = connect(uri, "ferry-check").await?;
        let objects = crate::orphans::ferry_objects(&client).await?;
        let slots: Vec<_> = objects
            .slots
            .into_iter()
            .filter(|s| !owned.contains(&s.name))
            .collect();
        let names: Vec<String> = slots.iter().map(|s| s.name.clone()).collect();
        let positions = slot::slot_positions(&client, &names)
            .await
            .unwrap_or_default();
        let mut out: Vec<OrphanObject> = slots
            .into_iter()
            .map(|s| OrphanObject {
                kind: "slot",
                retained_bytes: positions
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .map(|(_, p)| p.retained_wal_bytes()),
                name: s.name,
                database: s.database,
                active: Some(s.active),
            })
            .collect();
        let database = uri.database();
        out.extend(
            objects
                .publications
                .into_iter()
                .filter(|p| !owned.contains(p))
                .map(|name| OrphanObject {
                    kind: "publication",
                    name,
                    database: Some(database.clone()),
                    active: None,
                    retained_bytes: None,
                }),
        );
        Ok(out)
    }

    fn watch_new_tables(
        &self,
        uri: &ConnectionUri,
        filter: TableFilter,
        known: BTreeSet<u32>,
    ) -> BoxFuture<'static, TableId> {
        Box::pin(watch_new_tables(uri.clone(), filter, known))
    }

    fn heartbeat(
        &self,
        uri: &ConnectionUri,
        every: Duration,
        feed: &str,
    ) -> BoxFuture<'static, ()> {
        Box::pin(heartbeat(uri.clone(), every, feed.to_string()))
    }
}

/// How often a streaming changefeed looks for tables created on the source that its rules
/// select: a cheap catalog listing, and a new table waits at most this long to be copied.
const NEW_TABLES_CHECK: Duration = Duration::from_secs(5);

/// Failures to look are retried quietly: the stream itself reports a source that is gone.
async fn watch_new_tables(
    source: ConnectionUri,
    filter: TableFilter,
    known: BTreeSet<u32>,
) -> TableId {
    let mut client = None;
    loop {
        tokio::time::sleep(NEW_TABLES_CHECK).await;
        if client.is_none() {
            client = connect(&source, "ferry-tables").await.ok();
        }
        let Some(c) = &client else { continue };
        match catalog::selected_ids(c, &filter).await {
            Ok(tables) => {
                if let Some((_, id)) = tables.into_iter().find(|(oid, _)| !known.contains(oid)) {
                    return id;
                }
            }
            Err(_) => client = None,
        }
    }
}

/// Writes a logical message on every tick; a failed write is logged and tried again at the
/// next tick (on a new connection), never an error of the changefeed.
async fn heartbeat(uri: ConnectionUri, every: Duration, changefeed: String) {
    let mut client = None;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if client.is_none() {
            match connect(&uri, "ferry-heartbeat").await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    tracing::debug!(changefeed = %changefeed, error = %e.chain(), "heartbeat connection failed");
                    continue;
                }
            }
        }
        let written = match &client {
            Some(c) => crate::heartbeat::emit_heartbeat(c).await,
            None => continue,
        };
        if let Err(e) = written {
            tracing::debug!(changefeed = %changefeed, error = %e.chain(), "heartbeat failed");
            client = None;
        }
    }
}

/// The LSN of a position read from this source.
pub(crate) fn pg_lsn(position: &Position) -> Result<ferry_core::Lsn, SourceError> {
    match position {
        Position::PgLsn(lsn) => Ok(*lsn),
        other => Err(SourceError::message(
            format!(
                "position {other} is a {} position; a PostgreSQL source needs an LSN",
                other.kind()
            ),
            ferry_core::ErrorClass::Definite,
        )),
    }
}

fn pg_uri(uri: &SinkUri) -> Result<&ConnectionUri, SinkError> {
    match uri {
        SinkUri::Postgres(uri) => Ok(uri),
        other => Err(SinkError::Unsupported {
            message: format!("{} is not a PostgreSQL sink", other.masked()),
        }),
    }
}

#[async_trait]
impl SinkConnector for PgSinkConnector {
    async fn connect(
        &self,
        uri: &SinkUri,
        feed: &str,
        policy: TargetPolicy,
    ) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(
            crate::sink::PgSink::connect(pg_uri(uri)?, feed, policy).await?,
        ))
    }

    async fn preflight(
        &self,
        uri: &SinkUri,
        feed: &str,
        policy: &TargetPolicy,
        tables: &[TableSchema],
        copies: bool,
    ) -> Result<Option<TargetProblem>, SinkError> {
        let client = connect(pg_uri(uri)?, "ferry-check")
            .await
            .map_err(crate::sink::connect_error)?;
        if let Some(source) = &policy.source {
            match crate::identity::server_identity(&client).await {
                Ok(target) if &target == source => {
                    return Ok(Some(TargetProblem::SinkIsSource(
                        crate::identity::sink_is_source_message(&target),
                    )))
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(changefeed = %feed, error = %e.chain(), "cannot compare the target with the source");
                }
            }
        }
        crate::sink::preflight(
            &client,
            feed,
            &policy.server_id,
            tables,
            policy.existing_target,
            copies,
        )
        .await
    }

    async fn release(&self, uri: &SinkUri, feed: &str, server_id: &str) -> Result<(), SinkError> {
        crate::sink::release(pg_uri(uri)?, feed, server_id)
            .await
            .map(drop)
    }

    async fn reader(
        &self,
        uri: &SinkUri,
        feed: &str,
    ) -> Result<Option<Box<dyn ferry_core::TargetReader>>, SinkError> {
        let reader = crate::sink::PgTargetReader::connect(pg_uri(uri)?, feed).await?;
        Ok(Some(Box::new(reader)))
    }
}

/// Moves every target sequence of the tables `filter` selects to at least the source's
/// value.
pub async fn sync_sequences(
    source: &ConnectionUri,
    target: &ConnectionUri,
    filter: &TableFilter,
) -> Result<Vec<SequenceSynced>, String> {
    let client = connect(source, "ferry-sequences")
        .await
        .map_err(|e| e.chain())?;
    catalog::prepare_session(&client)
        .await
        .map_err(|e| e.chain())?;
    let tables: Vec<TableId> = catalog::selected_tables(&client, filter)
        .await
        .map_err(|e| e.chain())?
        .into_iter()
        .map(|t| t.schema.id)
        .collect();
    let synced = crate::sequences::sync(source, target, &tables)
        .await
        .map_err(|e| e.chain())?;
    Ok(synced
        .into_iter()
        .map(|s| SequenceSynced {
            sequence: s.sequence,
            source_value: s.source_value,
            target_before: s.target_before,
            set: s.set,
            missing: s.missing,
        })
        .collect())
}

/// Creates on the target the source's foreign keys between the tables `filter` selects
/// (see [`crate::foreign_keys`]).
pub async fn create_foreign_keys(
    source: &ConnectionUri,
    target: &ConnectionUri,
    filter: &TableFilter,
) -> Result<Vec<ForeignKeyCreated>, String> {
    let client = connect(source, "ferry-foreign-keys")
        .await
        .map_err(|e| e.chain())?;
    catalog::prepare_session(&client)
        .await
        .map_err(|e| e.chain())?;
    let tables = catalog::selected_tables(&client, filter)
        .await
        .map_err(|e| e.chain())?
        .into_iter()
        .map(|t| (t.source_id, t.schema.id))
        .collect();
    drop(client);
    crate::foreign_keys::create(source, target, &tables)
        .await
        .map_err(|e| e.chain())
}
