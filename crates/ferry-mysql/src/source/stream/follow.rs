//! How the stream follows what happens to its tables as tables: renames (recognized
//! statements, or found by the InnoDB id of a table it does not know), `TRUNCATE`, drops,
//! and tables created again under a dropped one's name, which the engine copies anew
//! ([`SourceEvent::Recreated`]).

use std::sync::Arc;

use ferry_core::gtid::MariaDbGtid;
use ferry_core::source::EventSender;
use ferry_core::{ErrorClass, Position, RowChange, SourceError, SourceEvent, TableId};

use super::super::catalog;
use super::super::ddl::{self, Ddl};
use super::{send, MyStream, Tracked, Tx};

impl MyStream {
    /// Follows the rename of a replicated table at this position; `false` when the receiver
    /// is gone.
    pub(super) async fn rename(
        &mut self,
        from: TableId,
        to: TableId,
        events: &EventSender,
    ) -> bool {
        self.renamed_since.remove(&to);
        self.not_ours.remove(&to);
        self.dropped.remove(&to);
        for known_as in self.renamed_since.values_mut() {
            if *known_as == from {
                *known_as = to.clone();
            }
        }
        let Some(tracked) = self.tables.remove(&from) else {
            return true;
        };
        let mut schema = (*tracked.schema).clone();
        schema.id = to.clone();
        let schema = Arc::new(schema);
        self.tables.insert(
            to,
            Tracked {
                schema: schema.clone(),
                announced: true,
                map: None,
                ..tracked
            },
        );
        send(events, SourceEvent::Renamed { from, schema }).await
    }

    /// Follows a DDL statement; `false` when the receiver is gone.
    pub(super) async fn ddl(
        &mut self,
        sql: &str,
        database: &str,
        quoting: ddl::Quoting,
        tx: &mut Tx,
        events: &EventSender,
    ) -> Result<bool, SourceError> {
        match ddl::classify(sql, database, quoting) {
            Ddl::Truncate(id) => {
                let Some(tracked) = self.tables.get(&id) else {
                    return Ok(true);
                };
                let table = tracked.schema.clone();
                if !self.begin(tx, events).await {
                    return Ok(false);
                }
                let truncate = RowChange::Truncate {
                    tables: vec![table],
                    restart_identity: false,
                };
                Ok(send(events, SourceEvent::Change(truncate)).await)
            }
            Ddl::Rename(renames) => {
                for (from, to) in renames {
                    // A table this stream does not read took the name of a replicated table
                    // it saw dropped: that table, created again.
                    let sent = if !self.tables.contains_key(&from) && self.dropped.contains_key(&to)
                    {
                        self.recreate(to, tx.gtid, events).await
                    } else {
                        self.rename(from, to, events).await
                    };
                    if !sent {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Ddl::Drop(ids) => Ok(self.drop_tables(ids, events).await),
            Ddl::DropDatabase(database) => {
                let ids: Vec<TableId> = self
                    .tables
                    .keys()
                    .filter(|id| id.schema == database)
                    .cloned()
                    .collect();
                Ok(self.drop_tables(ids, events).await)
            }
            Ddl::Create { table, replace } => {
                if replace && !self.drop_table(table.clone(), events).await {
                    return Ok(false);
                }
                Ok(self.recreate(table, tx.gtid, events).await)
            }
            Ddl::Alter(id) => {
                let Some(tracked) = self.tables.get(&id) else {
                    return Ok(true);
                };
                // An ALTER that rebuilds the table gives it a new InnoDB id: the one a
                // rename the DDL reader misses is recognized by ([`Self::untracked`]).
                let fresh = if catalog::is_name_hash(tracked.id) {
                    None
                } else {
                    catalog::innodb_id(&mut self.catalog, &id).await
                };
                let tracked = self.tables.get_mut(&id).expect("looked up above");
                tracked.stale = true;
                if let Some(fresh) = fresh {
                    tracked.id = fresh;
                }
                Ok(true)
            }
            Ddl::Other => Ok(true),
        }
    }

    /// Follows the drop of each of `ids`; `false` when the receiver is gone.
    async fn drop_tables(&mut self, ids: Vec<TableId>, events: &EventSender) -> bool {
        for id in ids {
            if !self.drop_table(id, events).await {
                return false;
            }
        }
        true
    }

    /// Follows `DROP TABLE id`: stops reading the table (until a table is created under
    /// its name) and tells the engine; `false` when the receiver is gone.
    async fn drop_table(&mut self, id: TableId, events: &EventSender) -> bool {
        let Some(tracked) = self.tables.remove(&id) else {
            return true;
        };
        self.dropped.insert(id.clone(), tracked);
        send(events, SourceEvent::Dropped { table: id }).await
    }

    /// A table is created under `id`, the name of a replicated table this stream saw
    /// dropped: the new table is read from here on (with the shapes its TABLE_MAP events
    /// give), and the engine told to copy it again, since its target table holds the old
    /// table's rows. `false` when the receiver is gone.
    async fn recreate(&mut self, id: TableId, gtid: MariaDbGtid, events: &EventSender) -> bool {
        let Some(old) = self.dropped.remove(&id) else {
            return true;
        };
        self.not_ours.remove(&id);
        self.tables.insert(
            id.clone(),
            Tracked {
                announced: false,
                stale: true,
                map: None,
                ..old
            },
        );
        let mut position = self.position.clone();
        position.record(gtid);
        let position = Position::MariaDbGtid(position);
        send(
            events,
            SourceEvent::Recreated {
                table: id,
                position,
            },
        )
        .await
    }

    /// Looks at the TABLE_MAP of `id`, a table the stream does not read: one created under
    /// a dropped replicated table's name by a statement the DDL reader did not recognize is
    /// that table created again; a replicated table renamed by such a statement (same
    /// InnoDB id) is followed to its new name. `false` when the receiver is gone.
    pub(super) async fn untracked(
        &mut self,
        id: TableId,
        tx: Option<&Tx>,
        events: &EventSender,
    ) -> Result<bool, SourceError> {
        if self.not_ours.contains(&id) {
            return Ok(true);
        }
        if self.dropped.contains_key(&id) {
            let Some(tx) = tx else {
                return Err(SourceError::message(
                    "a TABLE_MAP event outside a transaction (no GTID before it)",
                    ErrorClass::Definite,
                ));
            };
            return Ok(self.recreate(id, tx.gtid, events).await);
        }
        let renamable = self.tables.values().any(|t| !catalog::is_name_hash(t.id));
        let source_id = if renamable {
            catalog::innodb_id(&mut self.catalog, &id).await
        } else {
            None
        };
        let from = source_id.and_then(|source_id| {
            self.tables
                .iter()
                .find(|(_, t)| t.id == source_id)
                .map(|(name, _)| name.clone())
        });
        match from {
            Some(from) => {
                tracing::info!(from = %from, to = %id, "table renamed by a statement the DDL reader did not recognize: following it");
                Ok(self.rename(from, id, events).await)
            }
            None => {
                self.not_ours.insert(id);
                Ok(true)
            }
        }
    }
}
