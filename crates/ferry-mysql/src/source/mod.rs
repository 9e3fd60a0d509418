//! The MySQL/MariaDB source: row binlog, GTID positions, consistent snapshots.
//!
//! ```text
//! check ──► log_bin, binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL,
//!           GTIDs, privileges
//! snapshot ─► N sessions in one consistent snapshot (snapshot.rs) ─► chunks by integer key
//! stream ───► COM_BINLOG_DUMP after the checkpoint's GTID list (stream.rs)
//!               GTID · TABLE_MAP · ROWS · XID ─► Begin · Schema? · Change… · Commit
//!               heartbeat / other tables' transactions ─► Idle
//! ```
//!
//! - [`catalog`]: tables and shapes from `information_schema`; [`types`]: MySQL types and
//!   their logical types; [`values`]: every value in canonical text.
//! - [`snapshot`]: consistent snapshots shared by parallel readers, chunk plans and reads.
//! - [`stream`]: the binlog; [`replica`]: the replica's server id, GTID events and errors;
//!   [`ddl`]: what a QUERY event does to tables; [`tablemap`]: a table's shape at a
//!   position, from its TABLE_MAP event.
//!
//! # What the source leaves on the server
//! Nothing: no slot, no table, no heartbeat writes (the server's own binlog heartbeats keep
//! an idle changefeed current). A changefeed's place is its checkpoint, in the sink; its
//! binlog connection registers with a `server_id` derived from the changefeed's name
//! ([`replica::server_id`]). Deleting a changefeed therefore leaves nothing to drop, and
//! the binlogs it needs are kept only by the server's expiry (`binlog_expire_logs_seconds`):
//! a changefeed paused longer fails with a message saying so.
//!
//! # MariaDB and MySQL
//! Tested on MariaDB 10.11. Positions are MariaDB GTID lists (`0-1-42`). MySQL's GTID sets
//! and its snapshot position (`performance_schema.log_status`) are not read yet: a MySQL
//! server fails the check with a message saying so.

mod catalog;
mod ddl;
mod image;
mod replica;
mod snapshot;
#[allow(clippy::module_inception)]
mod source;
mod stream;
mod tablemap;
mod types;
mod unreadable;
mod values;

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::gtid::MariaDbGtidList;
use ferry_core::{
    BacklogRisk, ConnectionSecurity, ConnectionUri, ErrorClass, FeedBacklog, OrphanObject,
    ParsePositionError, Position, ServerIdentity, Source, SourceCheck, SourceConnector,
    SourceError, SourceObject, SourceOptions, TableFilter, TableId, TableSchema, TableVerdict,
};
use futures::future::BoxFuture;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

pub use source::MySource;

use crate::connect::{connect, server_identity, source_error};

/// The MySQL/MariaDB source connector (schemes `mysql`, `mariadb`).
#[derive(Clone, Copy, Debug, Default)]
pub struct MySqlSourceConnector;

async fn open_conn(uri: &ConnectionUri) -> Result<Conn, SourceError> {
    connect(uri)
        .await
        .map_err(|e| source_error("connect to the source", e))
}

/// `@@gtid_binlog_pos`: every transaction the server has logged.
async fn current_gtid_pos(conn: &mut Conn) -> Result<Position, SourceError> {
    let pos: Option<String> = conn
        .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .map_err(|e| source_error("read the source's binlog position", e))?;
    let list: MariaDbGtidList = pos.unwrap_or_default().parse().map_err(|e| {
        SourceError::new("read the source's binlog position", ErrorClass::Definite, e)
    })?;
    Ok(Position::MariaDbGtid(list))
}

/// The GTID list of a position read from this source.
fn mariadb_list(position: &Position) -> Result<MariaDbGtidList, SourceError> {
    match position {
        Position::MariaDbGtid(list) => Ok(list.clone()),
        other => Err(source::not_a_gtid_list(other)),
    }
}

/// The server's settings that decide whether it can serve changefeeds.
#[derive(Debug, serde::Serialize)]
struct Facts {
    version: String,
    log_bin: bool,
    binlog_format: String,
    binlog_row_image: String,
    binlog_row_metadata: String,
    /// MariaDB's `log_bin_compress` (false where the server has none).
    log_bin_compress: bool,
    gtid_binlog_pos: String,
    grants: Vec<String>,
}

impl Facts {
    async fn read(conn: &mut Conn) -> Result<Facts, SourceError> {
        let what = "read the source's settings";
        let (version, log_bin, format, image): (String, u8, String, String) = conn
            .query_first("SELECT @@version, @@log_bin, @@binlog_format, @@binlog_row_image")
            .await
            .map_err(|e| source_error(what, e))?
            .unwrap_or_default();
        // MySQL before 8.0.14 and MariaDB before 10.5 have no binlog_row_metadata.
        let metadata: String = conn
            .query_first("SELECT @@binlog_row_metadata")
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "unsupported".into());
        let compress: u8 = conn
            .query_first("SELECT @@log_bin_compress")
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        let gtid: String = conn
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "unsupported".into());
        let grants: Vec<String> = conn
            .query("SHOW GRANTS FOR CURRENT_USER()")
            .await
            .map_err(|e| source_error(what, e))?;
        Ok(Facts {
            version,
            log_bin: log_bin != 0,
            binlog_format: format,
            binlog_row_image: image,
            binlog_row_metadata: metadata,
            log_bin_compress: compress != 0,
            gtid_binlog_pos: gtid,
            grants,
        })
    }

    /// What stops the server from serving changefeeds, each with what to set.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.version.to_ascii_lowercase().contains("mariadb") {
            out.push(format!(
                "the source runs MySQL {}: Ferry reads MariaDB's GTID binlog and snapshots \
                 only so far",
                self.version
            ));
        }
        if !self.log_bin {
            out.push(
                "the binary log is off: start the server with log_bin (and a server_id)".into(),
            );
        }
        if !self.binlog_format.eq_ignore_ascii_case("ROW") {
            out.push(format!(
                "binlog_format is {}: set binlog_format=ROW (SET GLOBAL and in the server's \
                 configuration), so the binlog carries rows rather than statements",
                self.binlog_format
            ));
        }
        if !self.binlog_row_image.eq_ignore_ascii_case("FULL") {
            out.push(format!(
                "binlog_row_image is {}: set binlog_row_image=FULL, so updates and deletes \
                 carry whole rows",
                self.binlog_row_image
            ));
        }
        if !self.binlog_row_metadata.eq_ignore_ascii_case("FULL") {
            out.push(format!(
                "binlog_row_metadata is {}: set binlog_row_metadata=FULL, so every row event \
                 names its columns and columns added or dropped mid-stream decode exactly",
                self.binlog_row_metadata
            ));
        }
        if self.log_bin_compress {
            out.push(
                "log_bin_compress is ON: Ferry cannot read compressed binlog events yet; set \
                 log_bin_compress=OFF (SET GLOBAL and in the server's configuration)"
                    .into(),
            );
        }
        let grants = self.grants.join("\n").to_ascii_uppercase();
        let all = grants.contains("ALL PRIVILEGES ON *.*");
        let mut missing = Vec::new();
        if !all && !grants.contains("REPLICATION SLAVE") {
            missing.push("REPLICATION SLAVE");
        }
        if !all
            && !["BINLOG MONITOR", "REPLICATION CLIENT", "SUPER"]
                .iter()
                .any(|p| grants.contains(p))
        {
            missing.push("BINLOG MONITOR (REPLICATION CLIENT before MariaDB 10.5)");
        }
        if !grants.contains("ALL PRIVILEGES") && !grants.contains("SELECT") {
            missing.push("SELECT on the replicated tables");
        }
        if !missing.is_empty() {
            out.push(format!(
                "the source user lacks {}: GRANT them to the user",
                missing.join(", ")
            ));
        }
        out
    }
}

/// The oldest position the server's binlogs still hold, per domain: the GTID list at the
/// start of its first binlog file (its Gtid_list event).
async fn oldest_gtid_pos(conn: &mut Conn) -> Result<MariaDbGtidList, SourceError> {
    let what = "read the source's binlog files";
    let logs: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| source_error(what, e))?;
    let Some(first) = logs.first().and_then(|r| r.get::<String, _>(0)) else {
        return Ok(MariaDbGtidList::new());
    };
    // Each binlog opens with a Gtid_list event: the GTID state before the file,
    // `[0-1-10,1-2-3]`.
    let events: Vec<mysql_async::Row> = conn
        .query(format!(
            "SHOW BINLOG EVENTS IN {} LIMIT 4",
            catalog::quote_literal(&first)
        ))
        .await
        .map_err(|e| source_error(what, e))?;
    let list = events
        .iter()
        .find(|r| r.get::<String, _>(2).as_deref() == Some("Gtid_list"))
        .and_then(|r| r.get::<String, _>(5))
        .unwrap_or_default();
    list.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|e| SourceError::new(what, ErrorClass::Definite, e))
}

/// Bytes of binlog the server keeps.
async fn binlog_bytes(conn: &mut Conn) -> Result<u64, SourceError> {
    let logs: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| source_error("read the source's binlog files", e))?;
    Ok(logs.iter().filter_map(|r| r.get::<u64, _>(1)).sum())
}

/// How often a changefeed looks for new tables its rules select (as for PostgreSQL).
const NEW_TABLES_CHECK: Duration = Duration::from_secs(5);

#[async_trait]
impl SourceConnector for MySqlSourceConnector {
    fn parse_position(&self, text: &str) -> Result<Position, ParsePositionError> {
        text.parse::<MariaDbGtidList>()
            .map(Position::MariaDbGtid)
            .map_err(|e| ParsePositionError(e.to_string()))
    }

    async fn open(
        &self,
        uri: &ConnectionUri,
        feed: &str,
        options: &SourceOptions,
    ) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(
            MySource::open(uri, feed, options.replication_timeout).await?,
        ))
    }

    async fn check(&self, uri: &ConnectionUri) -> Result<SourceCheck, SourceError> {
        let mut conn = open_conn(uri).await?;
        let facts = Facts::read(&mut conn).await?;
        Ok(SourceCheck {
            problems: facts.problems(),
            facts: serde_json::to_value(&facts).expect("source facts serialize"),
        })
    }

    async fn security(&self, uri: &ConnectionUri) -> Result<ConnectionSecurity, SourceError> {
        let mut conn = open_conn(uri).await?;
        let rows: Vec<(String, String)> = conn
            .query("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
            .await
            .map_err(|e| source_error("read the connection's encryption", e))?;
        let get = |name: &str| {
            rows.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        Ok(ConnectionSecurity {
            encrypted: get("Ssl_cipher").is_some(),
            tls_version: get("Ssl_version"),
            cipher: get("Ssl_cipher"),
        })
    }

    async fn missing_tables(
        &self,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<Vec<String>, SourceError> {
        let mut conn = open_conn(uri).await?;
        let everything = TableFilter::new(&["*.*"]).expect("a valid rule");
        let tables = catalog::selected_ids(&mut conn, &uri.database(), &everything).await?;
        Ok(filter
            .rules()
            .iter()
            .filter(|rule| !rule.starts_with('!') && !rule.contains(['*', '?', '[']))
            .filter(|rule| {
                let Ok(single) = TableFilter::new(&[rule.as_str()]) else {
                    return false;
                };
                !tables.iter().any(|(_, t)| single.selects(t, &[]))
            })
            .cloned()
            .collect())
    }

    async fn verify_tables(
        &self,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<Vec<TableVerdict>, SourceError> {
        let mut conn = open_conn(uri).await?;
        let tables = catalog::selected_tables(&mut conn, &uri.database(), filter).await?;
        Ok(tables
            .into_iter()
            .map(|t| TableVerdict {
                table: t.schema.id.to_string(),
                reason: if t.schema.has_key() {
                    "primary key; the binlog carries whole rows".into()
                } else {
                    "no primary key: rows are matched by all their columns (a multiset)".into()
                },
                eligible: true,
            })
            .collect())
    }

    async fn selected_schemas(
        &self,
        uri: &ConnectionUri,
        filter: &TableFilter,
    ) -> Result<(Vec<TableSchema>, Option<ServerIdentity>), SourceError> {
        let mut conn = open_conn(uri).await?;
        let identity = server_identity(&mut conn, &uri.database())
            .await
            .map_err(|e| source_error("read the source's identity", e))?;
        let tables = catalog::selected_tables(&mut conn, &uri.database(), filter).await?;
        Ok((
            tables.into_iter().map(|t| t.schema).collect(),
            Some(identity),
        ))
    }

    async fn current_position(&self, uri: &ConnectionUri) -> Result<Position, SourceError> {
        current_gtid_pos(&mut open_conn(uri).await?).await
    }

    /// Within what the binlogs hold: at or after the oldest binlog's start in every domain,
    /// and not beyond `@@gtid_binlog_pos`.
    async fn check_resume(
        &self,
        uri: &ConnectionUri,
        _feed: &str,
        position: &Position,
    ) -> Result<Result<(), String>, SourceError> {
        let Position::MariaDbGtid(list) = position else {
            return Ok(Err(source::not_a_gtid_list(position).what));
        };
        let mut conn = open_conn(uri).await?;
        let oldest = oldest_gtid_pos(&mut conn).await?;
        let purged = oldest
            .iter()
            .any(|o| list.get(o.domain_id).is_none_or(|p| p.seq_no < o.seq_no));
        if purged {
            return Ok(Err(format!(
                "position {list} is older than the source's oldest binlog ({oldest}): the \
                 binlogs after it were purged; re-sync the changefeed instead"
            )));
        }
        let current = current_gtid_pos(&mut conn).await?;
        if !current.covers(position) {
            return Ok(Err(format!(
                "position {list} is beyond the source's current binlog position {current}"
            )));
        }
        Ok(Ok(()))
    }

    async fn backlog(
        &self,
        uri: &ConnectionUri,
        feeds: &[String],
    ) -> Result<Vec<FeedBacklog>, SourceError> {
        let mut conn = open_conn(uri).await?;
        let bytes = binlog_bytes(&mut conn).await.ok();
        Ok(feeds
            .iter()
            .map(|feed| FeedBacklog {
                feed: feed.clone(),
                holder: format!("binlog reader server_id {}", replica::server_id(feed)),
                confirmed: None,
                retained_bytes: bytes,
                risk: None::<BacklogRisk>,
            })
            .collect())
    }

    /// Nothing: see the module docs.
    fn objects(&self, _feed: &str) -> Vec<SourceObject> {
        Vec::new()
    }

    /// Nothing to drop: see the module docs.
    async fn release(&self, _uri: &ConnectionUri, _feed: &str) -> Result<(), SourceError> {
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
        uri: &ConnectionUri,
        filter: TableFilter,
        known: BTreeSet<u32>,
    ) -> BoxFuture<'static, TableId> {
        let uri = uri.clone();
        Box::pin(async move {
            let mut conn = None;
            loop {
                tokio::time::sleep(NEW_TABLES_CHECK).await;
                if conn.is_none() {
                    conn = connect(&uri).await.ok();
                }
                let Some(c) = conn.as_mut() else { continue };
                match catalog::selected_ids(c, &uri.database(), &filter).await {
                    Ok(tables) => {
                        if let Some((_, id)) = tables.into_iter().find(|(i, _)| !known.contains(i))
                        {
                            return id;
                        }
                    }
                    Err(_) => conn = None,
                }
            }
        })
    }

    /// No writes: the binlog connection asks the server for heartbeats instead
    /// ([`stream::HEARTBEAT`]), which reach the changefeed whatever its tables.
    fn heartbeat(
        &self,
        _uri: &ConnectionUri,
        _every: Duration,
        _feed: &str,
    ) -> BoxFuture<'static, ()> {
        Box::pin(futures::future::pending())
    }
}
