//! Named sources: a source connection registered once, which changefeeds refer to by name
//! (`"source": "shop-db"`) instead of repeating credentials.
//!
//! A changefeed naming a source keeps a copy of the source's URI in its own configuration
//! (so it runs without looking the source up), refreshed when the source is updated. A
//! source can only be updated while none of its changefeeds runs (they would keep using the
//! old connection), and only deleted while none uses it, unless forced (then its
//! changefeeds keep their copy of the URI and lose the name).

use ferry_core::ConnectionUri;
use ferry_meta::Collection;
use std::collections::BTreeSet;

use ferry_postgres::eligibility::SourceFacts;
use ferry_postgres::orphans::FerryObjects;
use ferry_postgres::slot::{self, SlotNames};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::cleanup::PendingCleanup;
use crate::config::{validate_id, validate_name_length};
use crate::lifecycle;
use crate::registry::{Engine, EngineError};
use crate::status::rfc3339;
use crate::validate;

/// A named source connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceConfig {
    /// Unique within its namespace.
    pub name: String,
    /// Tenant namespace.
    pub namespace: String,
    /// The connection (password inside; prints masked).
    pub uri: ConnectionUri,
    /// Creation time, microseconds since the Unix epoch.
    pub created_at_us: i64,
}

impl SourceConfig {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A replication slot of one changefeed on a source.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SlotReport {
    /// The changefeed.
    pub changefeed: String,
    /// The slot's name.
    pub slot: String,
    /// What the slot has confirmed.
    pub confirmed_flush_lsn: String,
    /// WAL the source keeps for it, in bytes.
    pub retained_wal_bytes: u64,
}

/// A slot or publication named `ferry_*` on a source that no changefeed of this server owns
/// (left by a changefeed deleted elsewhere, by another Ferry server, or by hand).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OrphanReport {
    /// `slot` or `publication`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// For a slot: the database it decodes (slots belong to the whole cluster).
    pub database: Option<String>,
    /// For a slot: whether a session streams from it now (another server may own it).
    pub active: Option<bool>,
    /// For a slot: WAL the source keeps for it, in bytes.
    pub retained_wal_bytes: Option<u64>,
}

/// The slot and publications of a changefeed deleted while its source was unreachable:
/// dropped by a retry loop once the source answers.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PendingCleanupReport {
    /// The deleted changefeed (`namespace/id`).
    pub changefeed: String,
    /// The slot to drop.
    pub slot: String,
    /// The publications to drop.
    pub publications: Vec<String>,
    /// When the changefeed was deleted (RFC 3339).
    pub since: String,
    /// Why the last try failed.
    pub last_error: Option<String>,
}

/// Whether a connection is encrypted.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TlsReport {
    /// TLS is in use.
    pub encrypted: bool,
    /// `TLSv1.3`, `TLSv1.2`, … when encrypted.
    pub version: Option<String>,
    /// The cipher suite, when encrypted.
    pub cipher: Option<String>,
}

impl From<ferry_core::ConnectionSecurity> for TlsReport {
    fn from(c: ferry_core::ConnectionSecurity) -> Self {
        TlsReport {
            encrypted: c.encrypted,
            version: c.tls_version,
            cipher: c.cipher,
        }
    }
}

/// The answer of `GET /sources/{name}/status`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SourceReport {
    /// The source.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Whether it could be reached and read.
    pub reachable: bool,
    /// Whether it can serve logical replication now.
    pub usable: bool,
    /// Why not, when not (no secrets).
    pub error: Option<String>,
    /// Whether Ferry's connection to it is encrypted, as the server sees it (`pg_stat_ssl`),
    /// when reachable.
    pub tls: Option<TlsReport>,
    /// What the server says about itself, when reachable: `server_version`, `wal_level`,
    /// `can_replicate`, `max_replication_slots`, `replication_slots_used`.
    #[schema(value_type = Option<Object>)]
    pub facts: Option<SourceFacts>,
    /// The changefeeds using it.
    pub changefeeds: Vec<String>,
    /// Their slots on it.
    pub slots: Vec<SlotReport>,
    /// `ferry_*` slots and publications on it that no changefeed of this server owns nor a
    /// pending clean-up covers, when reachable. Drop them by hand once sure no other Ferry
    /// server uses them (`SELECT pg_drop_replication_slot('…')`, `DROP PUBLICATION …`).
    pub orphans: Vec<OrphanReport>,
    /// Clean-ups of deleted changefeeds not done yet (the source was unreachable).
    pub pending_cleanups: Vec<PendingCleanupReport>,
}

impl Engine {
    /// Stores a source after checking it can serve logical replication.
    pub async fn create_source(&self, source: SourceConfig) -> Result<(), EngineError> {
        validate_source_name(&source, self.options.max_name_length)?;
        if self.source_config(&source.namespace, &source.name).is_ok() {
            return Err(EngineError::SourceAlreadyExists(source.name));
        }
        validate::check_password(&source.uri)?;
        validate::check_source(&source.uri).await?;
        let _guard = self.sources_lock.lock().await;
        if self.source_config(&source.namespace, &source.name).is_ok() {
            return Err(EngineError::SourceAlreadyExists(source.name));
        }
        self.meta.put(Collection::Sources, &source.key(), &source)?;
        info!(source = %source.key(), uri = %source.uri, "source created");
        Ok(())
    }

    /// A stored source.
    pub fn source_config(&self, namespace: &str, name: &str) -> Result<SourceConfig, EngineError> {
        self.meta
            .get(Collection::Sources, &format!("{namespace}/{name}"))?
            .ok_or_else(|| EngineError::SourceNotFound(name.to_string()))
    }

    /// Every source of `namespace`, sorted by name.
    pub fn list_sources(&self, namespace: &str) -> Result<Vec<SourceConfig>, EngineError> {
        let all: Vec<(String, SourceConfig)> = self.meta.list(Collection::Sources)?;
        Ok(all
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| s.namespace == namespace)
            .collect())
    }

    /// The changefeeds of `namespace` that name source `name`, sorted by id.
    pub fn source_users(&self, namespace: &str, name: &str) -> Vec<String> {
        self.feeds
            .lock()
            .expect("feeds lock")
            .values()
            .filter(|f| f.config.namespace == namespace && f.config.source.as_deref() == Some(name))
            .map(|f| f.config.id.clone())
            .collect()
    }

    /// Replaces a source's URI (checked first), and the copy in every changefeed using it.
    /// Refused while one of them runs.
    pub async fn update_source(&self, source: SourceConfig) -> Result<(), EngineError> {
        let _guard = self.sources_lock.lock().await;
        let current = self.source_config(&source.namespace, &source.name)?;
        let running: Vec<String> = self
            .feeds
            .lock()
            .expect("feeds lock")
            .values()
            .filter(|f| {
                f.config.namespace == source.namespace
                    && f.config.source.as_deref() == Some(source.name.as_str())
                    && lifecycle::runs(f.status.state())
            })
            .map(|f| f.config.id.clone())
            .collect();
        if !running.is_empty() {
            return Err(EngineError::SourceInUse {
                name: source.name,
                changefeeds: running.join(", "),
                hint: "pause them first",
            });
        }
        validate::check_password(&source.uri)?;
        validate::check_source(&source.uri).await?;
        let source = SourceConfig {
            created_at_us: current.created_at_us,
            ..source
        };
        self.meta.put(Collection::Sources, &source.key(), &source)?;
        let mut feeds = self.feeds.lock().expect("feeds lock");
        for feed in feeds.values_mut().filter(|f| {
            f.config.namespace == source.namespace
                && f.config.source.as_deref() == Some(source.name.as_str())
        }) {
            feed.config.source_uri = source.uri.clone();
            self.meta
                .put(Collection::Changefeeds, &feed.config.key(), &feed.config)?;
        }
        info!(source = %source.key(), uri = %source.uri, "source updated");
        Ok(())
    }

    /// Deletes a source; refused while changefeeds use it unless `force` (they keep their
    /// copy of its URI). Returns whether it existed.
    pub async fn delete_source(
        &self,
        namespace: &str,
        name: &str,
        force: bool,
    ) -> Result<bool, EngineError> {
        let _guard = self.sources_lock.lock().await;
        let key = format!("{namespace}/{name}");
        let users = self.source_users(namespace, name);
        if !users.is_empty() && !force {
            return Err(EngineError::SourceInUse {
                name: name.to_string(),
                changefeeds: users.join(", "),
                hint: "delete them first, or delete the source with ?force=true",
            });
        }
        let mut feeds = self.feeds.lock().expect("feeds lock");
        for feed in feeds
            .values_mut()
            .filter(|f| f.config.namespace == namespace && f.config.source.as_deref() == Some(name))
        {
            feed.config.source = None;
            self.meta
                .put(Collection::Changefeeds, &feed.config.key(), &feed.config)?;
        }
        drop(feeds);
        let existed = self.meta.delete(Collection::Sources, &key)?;
        if existed {
            info!(source = %key, forced = force, "source deleted");
        }
        Ok(existed)
    }

    /// Connects to a source and reports what it says, and its changefeeds' slots.
    pub async fn source_status(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<SourceReport, EngineError> {
        let source = self.source_config(namespace, name)?;
        let changefeeds = self.source_users(namespace, name);
        let mut report = SourceReport {
            name: source.name.clone(),
            namespace: source.namespace.clone(),
            reachable: false,
            usable: false,
            error: None,
            tls: None,
            facts: None,
            changefeeds: changefeeds.clone(),
            slots: Vec::new(),
            orphans: Vec::new(),
            pending_cleanups: Vec::new(),
        };
        let pending: Vec<PendingCleanup> = self
            .pending_cleanups()
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| p.concerns(namespace, name, &source.uri))
            .collect();
        report.pending_cleanups = pending
            .iter()
            .map(|p| PendingCleanupReport {
                changefeed: format!("{}/{}", p.namespace, p.changefeed),
                slot: p.slot.clone(),
                publications: p.publications.clone(),
                since: rfc3339(p.since_us),
                last_error: p.last_error.clone(),
            })
            .collect();
        let client = match validate::connect(&source.uri).await {
            Ok(c) => c,
            Err(e) => {
                report.error = Some(e.to_string());
                return Ok(report);
            }
        };
        let facts = match ferry_postgres::eligibility::source_facts(&client).await {
            Ok(f) => f,
            Err(e) => {
                report.error = Some(e.chain());
                return Ok(report);
            }
        };
        report.reachable = true;
        report.tls = ferry_postgres::connect::connection_security(&client)
            .await
            .ok()
            .map(TlsReport::from);
        let problems = facts.problems();
        report.usable = problems.is_empty();
        report.error = (!problems.is_empty()).then(|| problems.join("; "));
        report.facts = Some(facts);
        let names: Vec<(String, String)> = changefeeds
            .iter()
            .map(|id| {
                let slot = SlotNames::for_changefeed(&format!("{namespace}/{id}")).slot;
                (id.clone(), slot)
            })
            .collect();
        let slot_names: Vec<String> = names.iter().map(|(_, s)| s.clone()).collect();
        if let Ok(positions) = slot::slot_positions(&client, &slot_names).await {
            for (changefeed, slot) in names {
                if let Some((_, p)) = positions.iter().find(|(s, _)| *s == slot) {
                    report.slots.push(SlotReport {
                        changefeed,
                        slot,
                        confirmed_flush_lsn: p.confirmed_flush.to_string(),
                        retained_wal_bytes: p.retained_wal_bytes(),
                    });
                }
            }
        }
        if let Ok(objects) = ferry_postgres::orphans::ferry_objects(&client).await {
            report.orphans = self
                .orphans(objects, &pending, &source.uri.database(), &client)
                .await;
        }
        Ok(report)
    }
}

impl Engine {
    /// The `ferry_*` objects no changefeed of this server owns and no pending clean-up covers.
    async fn orphans(
        &self,
        objects: FerryObjects,
        pending: &[PendingCleanup],
        database: &str,
        client: &tokio_postgres::Client,
    ) -> Vec<OrphanReport> {
        let mut owned: BTreeSet<String> = BTreeSet::new();
        for key in self.feeds.lock().expect("feeds lock").keys() {
            let names = SlotNames::for_changefeed(key);
            owned.extend(names.publications().map(str::to_string));
            owned.insert(format!("{}_tmp", names.slot));
            owned.insert(names.slot);
        }
        for p in pending {
            owned.insert(p.slot.clone());
            owned.extend(p.publications.iter().cloned());
        }
        let slots: Vec<_> = objects
            .slots
            .into_iter()
            .filter(|s| !owned.contains(&s.name))
            .collect();
        let names: Vec<String> = slots.iter().map(|s| s.name.clone()).collect();
        let positions = slot::slot_positions(client, &names)
            .await
            .unwrap_or_default();
        let mut out: Vec<OrphanReport> = slots
            .into_iter()
            .map(|s| OrphanReport {
                kind: "slot",
                retained_wal_bytes: positions
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .map(|(_, p)| p.retained_wal_bytes()),
                name: s.name,
                database: s.database,
                active: Some(s.active),
            })
            .collect();
        out.extend(
            objects
                .publications
                .into_iter()
                .filter(|p| !owned.contains(p))
                .map(|name| OrphanReport {
                    kind: "publication",
                    name,
                    database: Some(database.to_string()),
                    active: None,
                    retained_wal_bytes: None,
                }),
        );
        out
    }
}

fn validate_source_name(source: &SourceConfig, max: usize) -> Result<(), EngineError> {
    validate_id(&source.name)?;
    validate_name_length("name", &source.name, max)?;
    validate_id(&source.namespace)?;
    validate_name_length("namespace", &source.namespace, max)?;
    Ok(())
}
