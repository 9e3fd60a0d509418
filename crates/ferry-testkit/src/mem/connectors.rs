//! The in-memory connectors' control plane, and the registry that hands them out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::{
    ConnectionSecurity, ConnectionUri, Connectors, ErrorClass, FeedBacklog, Lsn, OrphanObject,
    ParsePositionError, Position, SequenceSynced, ServerIdentity, Sink, SinkConnector, SinkError,
    SinkUri, Source, SourceCheck, SourceConnector, SourceError, SourceObject, SourceOptions,
    TableFilter, TableId, TableSchema, TableVerdict, TargetPolicy,
};
use futures::future::BoxFuture;

use super::sink::MemSink;
use super::source::{identity, MemSource};
use super::{lsn_of, MemDb, SourceStep};

/// Every connector of a test: scheme `mem` reads `db`'s source, every sink URI writes its
/// target.
pub struct MemConnectors {
    db: MemDb,
}

impl MemConnectors {
    /// The connectors of `db`.
    pub fn new(db: MemDb) -> Self {
        MemConnectors { db }
    }
}

impl Connectors for MemConnectors {
    fn source(&self, uri: &ConnectionUri) -> Result<Arc<dyn SourceConnector>, SourceError> {
        if uri.scheme() != "mem" {
            return Err(SourceError::message(
                format!("no in-memory source for scheme {}", uri.scheme()),
                ErrorClass::Definite,
            ));
        }
        Ok(Arc::new(MemSourceConnector {
            db: self.db.clone(),
        }))
    }

    fn sink(&self, _uri: &SinkUri) -> Arc<dyn SinkConnector> {
        Arc::new(MemSinkConnector {
            db: self.db.clone(),
        })
    }

    fn sync_sequences<'a>(
        &'a self,
        _source: &'a ConnectionUri,
        _sink: &'a SinkUri,
        _filter: &'a TableFilter,
    ) -> BoxFuture<'a, Result<Vec<SequenceSynced>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Controls the in-memory source.
pub struct MemSourceConnector {
    db: MemDb,
}

#[async_trait]
impl SourceConnector for MemSourceConnector {
    fn parse_position(&self, text: &str) -> Result<Position, ParsePositionError> {
        text.parse::<Lsn>().map(Position::PgLsn)
    }

    async fn open(
        &self,
        _uri: &ConnectionUri,
        feed: &str,
        _options: &SourceOptions,
    ) -> Result<Box<dyn Source>, SourceError> {
        self.db.take_source_fault(SourceStep::Open)?;
        Ok(Box::new(MemSource {
            db: self.db.clone(),
            feed: feed.to_string(),
        }))
    }

    async fn check(&self, _uri: &ConnectionUri) -> Result<SourceCheck, SourceError> {
        Ok(SourceCheck {
            facts: serde_json::json!({ "kind": "mem" }),
            problems: Vec::new(),
        })
    }

    async fn security(&self, _uri: &ConnectionUri) -> Result<ConnectionSecurity, SourceError> {
        Ok(ConnectionSecurity {
            encrypted: false,
            tls_version: None,
            cipher: None,
        })
    }

    async fn missing_tables(
        &self,
        _uri: &ConnectionUri,
        _filter: &TableFilter,
    ) -> Result<Vec<String>, SourceError> {
        Ok(Vec::new())
    }

    async fn verify_tables(
        &self,
        _uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<Vec<TableVerdict>, SourceError> {
        let tables = self.db.select_tables(filter);
        Ok(tables
            .into_iter()
            .map(|t| TableVerdict {
                table: t.schema.id.to_string(),
                reason: "has a primary key".into(),
                eligible: true,
            })
            .collect())
    }

    async fn selected_schemas(
        &self,
        _uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<(Vec<TableSchema>, Option<ServerIdentity>), SourceError> {
        let tables = self.db.select_tables(filter);
        let schemas = tables.into_iter().map(|t| t.schema).collect();
        Ok((schemas, Some(identity())))
    }

    async fn current_position(&self, _uri: &ConnectionUri) -> Result<Position, SourceError> {
        Ok(self.db.current_position())
    }

    async fn check_resume(
        &self,
        _uri: &ConnectionUri,
        feed: &str,
        position: &Position,
    ) -> Result<Result<(), String>, SourceError> {
        let state = self.db.lock();
        let Some(slot) = state.source.slots.get(feed) else {
            return Ok(Err(format!("{feed} has no slot")));
        };
        let current = state.source.current();
        Ok(match lsn_of(position) {
            Some(lsn) if lsn >= slot.confirmed && lsn <= current => Ok(()),
            _ => Err(format!(
                "{position} is not between {} and {current}",
                slot.confirmed
            )),
        })
    }

    async fn backlog(
        &self,
        _uri: &ConnectionUri,
        feeds: &[String],
    ) -> Result<Vec<FeedBacklog>, SourceError> {
        let state = self.db.lock();
        Ok(feeds
            .iter()
            .map(|feed| {
                let slot = state.source.slots.get(feed);
                FeedBacklog {
                    feed: feed.clone(),
                    holder: format!("slot of {feed}"),
                    confirmed: slot.map(|s| Position::PgLsn(s.confirmed)),
                    retained_bytes: slot.map(|_| 0),
                    risk: None,
                }
            })
            .collect())
    }

    fn objects(&self, feed: &str) -> Vec<SourceObject> {
        vec![SourceObject {
            kind: "slot",
            name: feed.to_string(),
        }]
    }

    async fn release(&self, _uri: &ConnectionUri, feed: &str) -> Result<(), SourceError> {
        self.db.release(feed);
        Ok(())
    }

    async fn orphans(
        &self,
        _uri: &ConnectionUri,
        _owned: &BTreeSet<String>,
    ) -> Result<Vec<OrphanObject>, SourceError> {
        Ok(Vec::new())
    }

    fn watch_new_tables(
        &self,
        _uri: &ConnectionUri,
        filter: TableFilter,
        known: BTreeSet<u32>,
    ) -> BoxFuture<'static, TableId> {
        let db = self.db.clone();
        let mut changed = db.shared.changed.subscribe();
        Box::pin(async move {
            loop {
                let tables = db.select_tables(&filter);
                if let Some(new) = tables.iter().find(|t| !known.contains(&t.source_id)) {
                    return new.schema.id.clone();
                }
                if changed.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        })
    }

    fn heartbeat(
        &self,
        _uri: &ConnectionUri,
        _every: Duration,
        _feed: &str,
    ) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// Controls the in-memory target.
pub struct MemSinkConnector {
    db: MemDb,
}

#[async_trait]
impl SinkConnector for MemSinkConnector {
    async fn connect(
        &self,
        _uri: &SinkUri,
        feed: &str,
        _policy: TargetPolicy,
    ) -> Result<Box<dyn Sink>, SinkError> {
        let (settle_after, commit_settles) = {
            let state = self.db.lock();
            (state.settle_after, state.commit_settles)
        };
        Ok(Box::new(MemSink {
            db: self.db.clone(),
            feed: feed.to_string(),
            pending: Vec::new(),
            settle_after,
            commit_settles,
            settled: None,
        }))
    }
}
