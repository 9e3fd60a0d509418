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

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::cleanup::PendingCleanup;
use crate::config::{validate_id, validate_name_length};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::lifecycle;
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
    pub facts: Option<serde_json::Value>,
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
        self.check_source(&source.uri).await?;
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
        self.check_source(&source.uri).await?;
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
        let connector = match self.source_connector(&source.uri) {
            Ok(c) => c,
            Err(e) => {
                report.error = Some(e.to_string());
                return Ok(report);
            }
        };
        let check = match connector.check(&source.uri).await {
            Ok(c) => c,
            Err(e) => {
                report.error = Some(EngineError::source(e).to_string());
                return Ok(report);
            }
        };
        report.reachable = true;
        report.tls = connector
            .security(&source.uri)
            .await
            .ok()
            .map(TlsReport::from);
        report.usable = check.problems.is_empty();
        report.error = (!check.problems.is_empty()).then(|| check.problems.join("; "));
        report.facts = Some(check.facts);
        let keys: Vec<String> = changefeeds
            .iter()
            .map(|id| crate::engine::feed_key(namespace, id))
            .collect();
        if let Ok(backlogs) = connector.backlog(&source.uri, &keys).await {
            for (changefeed, b) in changefeeds.iter().zip(backlogs) {
                if let (Some(confirmed), Some(retained)) = (b.confirmed, b.retained_bytes) {
                    report.slots.push(SlotReport {
                        changefeed: changefeed.clone(),
                        slot: b.holder,
                        confirmed_flush_lsn: confirmed.to_string(),
                        retained_wal_bytes: retained,
                    });
                }
            }
        }
        let owned = self.owned_objects(connector.as_ref(), &pending);
        if let Ok(orphans) = connector.orphans(&source.uri, &owned).await {
            report.orphans = orphans
                .into_iter()
                .map(|o| OrphanReport {
                    kind: o.kind,
                    name: o.name,
                    database: o.database,
                    active: o.active,
                    retained_wal_bytes: o.retained_bytes,
                })
                .collect();
        }
        Ok(report)
    }
}

impl Engine {
    /// The names of the source objects a changefeed of this server owns or a pending
    /// clean-up covers.
    fn owned_objects(
        &self,
        connector: &dyn ferry_core::SourceConnector,
        pending: &[PendingCleanup],
    ) -> BTreeSet<String> {
        let mut owned: BTreeSet<String> = BTreeSet::new();
        for key in self.feeds.lock().expect("feeds lock").keys() {
            owned.extend(connector.objects(key).into_iter().map(|o| o.name));
        }
        for p in pending {
            owned.insert(p.slot.clone());
            owned.extend(p.publications.iter().cloned());
        }
        owned
    }
}

fn validate_source_name(source: &SourceConfig, max: usize) -> Result<(), EngineError> {
    validate_id(&source.name)?;
    validate_name_length("name", &source.name, max)?;
    validate_id(&source.namespace)?;
    validate_name_length("namespace", &source.namespace, max)?;
    Ok(())
}
