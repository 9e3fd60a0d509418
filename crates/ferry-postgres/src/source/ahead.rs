//! Streamed transactions' changes sent ahead of their commit ([`ferry_core::ahead`]).
//!
//! Every message of a stream block still goes to the transaction's spool; while the
//! transaction is *ahead*, its row changes are also decoded at once and sent as
//! [`Ahead::Change`]. A change can only be sent ahead when its table's shape is a
//! committed one, known to the committed path: the block's Relation message must equal the
//! last one the committed path read for the table, or, for a table it has not described
//! yet, the source's committed catalog must show exactly that shape (then it is announced
//! as for any committed transaction, before the change). A shape the transaction itself
//! changed (its own DDL, invisible to other sessions), a TRUNCATE, a subtransaction rolled
//! back or a row that does not fit ends the transaction's ahead changes
//! ([`Ahead::Discard`]); its spool is still whole, and it comes at its commit as before.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ferry_core::{Ahead, AheadReply, Position, RowChange, SourceEvent};
use tokio::sync::oneshot;

use super::PgStream;
use crate::decode::{self, OldTuple, PgOutputMessage, RelationMessage};
use crate::PgError;

/// The transactions whose changes are sent ahead, by top-level xid: the relations each
/// one's blocks described, as they described them (the committed path's message, shared).
pub(super) type AheadTransactions = HashMap<u32, HashMap<u32, Arc<RelationMessage>>>;

impl PgStream {
    /// A streamed transaction's first block: its changes go ahead when asked for.
    pub(super) fn ahead_begin(&mut self, xid: u32) {
        if self.options.ahead {
            self.ahead.insert(xid, HashMap::new());
        }
    }

    /// Ends `xid`'s changes ahead, telling the engine to discard what it has of them.
    pub(super) fn ahead_discard(&mut self, xid: u32, why: &str) {
        if self.ahead.remove(&xid).is_some() {
            tracing::debug!(xid, why, "streamed transaction no longer sent ahead");
            self.pending
                .push_back(SourceEvent::Ahead(Ahead::Discard { xid }));
        }
    }

    /// `xid` committed: when its changes went ahead, asks the engine whether it applied
    /// them (the answer comes on the returned receiver). Unless a table it wrote is now
    /// described otherwise than when its changes went ahead (a NOT NULL, an index, a
    /// default the transaction changed, which no Relation message shows): then what went
    /// ahead is discarded, and the transaction comes whole, described anew.
    pub(super) async fn ahead_commit(
        &mut self,
        xid: u32,
        commit: Position,
        end: Position,
        commit_time_us: i64,
    ) -> Result<Option<oneshot::Receiver<bool>>, PgError> {
        let Some(described) = self.ahead.get(&xid) else {
            return Ok(None);
        };
        for relation in described.clone().into_values() {
            if !self.described_alike(&relation).await? {
                self.ahead_discard(xid, "a table it wrote is described otherwise now");
                return Ok(None);
            }
        }
        self.ahead.remove(&xid);
        let (reply, answer) = AheadReply::new();
        self.pending.push_back(SourceEvent::Ahead(Ahead::Commit {
            xid,
            commit,
            end,
            commit_time_us,
            reply,
        }));
        Ok(Some(answer))
    }

    /// Whether the catalog, as committed now, describes `relation`'s table as the committed
    /// path last announced it: its shape, and its definition.
    async fn described_alike(&self, relation: &RelationMessage) -> Result<bool, PgError> {
        let Some(known) = self.relations.get(&relation.id) else {
            return Ok(false);
        };
        let (schema, dropped) = self.describe(relation).await?;
        if dropped || schema != **known {
            return Ok(false);
        }
        let Some(definition) = self.definitions.get(&relation.id) else {
            // Not followed for this relation (a partition published via its root).
            return Ok(true);
        };
        let now = crate::definition::read(&self.catalog, relation.id, &schema.id).await?;
        Ok(definition
            .0
            .downcast_ref::<crate::definition::TableDefinition>()
            == Some(&now))
    }

    /// A stream block's message of `xid`, as received, already spooled.
    pub(super) async fn ahead_message(&mut self, xid: u32, payload: &Bytes) -> Result<(), PgError> {
        if !self.ahead.contains_key(&xid) {
            return Ok(());
        }
        let Ok(decoded) = decode::decode_streamed(payload) else {
            // The commit path decodes it again, and fails with the decoder's error.
            self.ahead_discard(xid, "a message did not decode");
            return Ok(());
        };
        let change = match decoded {
            PgOutputMessage::Relation(relation) => {
                if !self.ahead_relation(xid, relation).await? {
                    self.ahead_discard(xid, "a table's shape is not a committed one");
                }
                return Ok(());
            }
            PgOutputMessage::Insert { relation_id, new } => {
                self.check_enum_values(relation_id, &new).await?;
                self.ahead_table(xid, relation_id)
                    .map(|table| RowChange::Insert { table, new })
            }
            PgOutputMessage::Update {
                relation_id,
                old,
                new,
            } => {
                self.check_enum_values(relation_id, &new).await?;
                let old = old.map(OldTuple::into_row);
                self.ahead_table(xid, relation_id)
                    .map(|table| RowChange::Update { table, old, new })
            }
            PgOutputMessage::Delete { relation_id, old } => {
                let old = old.into_row();
                self.ahead_table(xid, relation_id)
                    .map(|table| RowChange::Delete { table, old })
            }
            // Types are read from the catalog with the relation; messages and origins need
            // no action (as on the commit path).
            PgOutputMessage::Type { .. }
            | PgOutputMessage::Origin { .. }
            | PgOutputMessage::Message { .. } => return Ok(()),
            _ => None,
        };
        let fits = change.as_ref().is_some_and(|c| match c {
            RowChange::Insert { table, new } | RowChange::Update { table, new, .. } => {
                new.len() == table.columns.len()
            }
            _ => true,
        });
        match change {
            Some(change) if fits => {
                self.pending
                    .push_back(SourceEvent::Ahead(Ahead::Change { xid, change }));
            }
            _ => self.ahead_discard(xid, "a change cannot be sent ahead"),
        }
        Ok(())
    }

    /// The shape `xid`'s changes of relation `id` are decoded with: the committed path's,
    /// while it is the one `xid`'s block described.
    fn ahead_table(&self, xid: u32, id: u32) -> Option<Arc<ferry_core::TableSchema>> {
        let described = self.ahead.get(&xid)?.get(&id)?;
        // Compared by address first: this runs for every change.
        let known = self.relation_messages.get(&id)?;
        (Arc::ptr_eq(known, described) || known == described)
            .then(|| self.relations.get(&id).cloned())
            .flatten()
    }

    /// A Relation message in `xid`'s block: `true` when it describes a committed shape the
    /// committed path knows (announced now, when it did not know it yet).
    async fn ahead_relation(
        &mut self,
        xid: u32,
        relation: RelationMessage,
    ) -> Result<bool, PgError> {
        if self.relation_messages.get(&relation.id).map(|m| &**m) != Some(&relation) {
            if !self.committed_shape(&relation).await? {
                return Ok(false);
            }
            self.on_message(PgOutputMessage::Relation(relation.clone()))
                .await?;
        }
        let known = self.relation_messages.get(&relation.id).cloned();
        if let (Some(described), Some(known)) = (self.ahead.get_mut(&xid), known) {
            described.insert(relation.id, known);
        }
        Ok(true)
    }

    /// Whether the source's catalog, as committed, shows exactly the shape `relation`
    /// describes (name, replica identity, published columns with their types and key
    /// flags): a shape changed inside the streamed transaction is not visible there yet.
    async fn committed_shape(&self, relation: &RelationMessage) -> Result<bool, PgError> {
        let rows = self
            .catalog
            .query(
                "SELECT n.nspname::text, c.relname::text, c.relreplident::text,
                        a.attname::text, a.atttypid, a.atttypmod,
                        c.relreplident = 'f' OR coalesce(a.attnum = ANY (
                            SELECT unnest(i.indkey) FROM pg_catalog.pg_index i
                            WHERE i.indrelid = c.oid
                              AND CASE c.relreplident WHEN 'd' THEN i.indisprimary
                                                      WHEN 'i' THEN i.indisreplident
                                                      ELSE false END), false)
                 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
                 WHERE c.oid = $1 AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attgenerated = ''
                 ORDER BY a.attnum",
                &[&relation.id],
            )
            .await
            .map_err(|e| PgError::new(format!("read relation {}", relation.id), e))?;
        if rows.len() != relation.columns.len() {
            return Ok(false);
        }
        Ok(rows.iter().zip(&relation.columns).all(|(row, column)| {
            row.get::<_, String>(0) == relation.namespace
                && row.get::<_, String>(1) == relation.name
                && row.get::<_, String>(2).as_bytes() == [relation.replica_identity]
                && row.get::<_, String>(3) == column.name
                && row.get::<_, u32>(4) == column.type_oid
                && row.get::<_, i32>(5) == column.type_modifier
                && row.get::<_, bool>(6) == column.is_key
        }))
    }
}
