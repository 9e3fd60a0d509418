//! What flows from a source to a sink.
//!
//! A source emits a stream of [`SourceEvent`]s: for each committed transaction, in commit
//! order, a `Begin`, its row changes, and a `Commit` that carries the position to resume
//! after it. Values travel in the source's canonical text form, which the PostgreSQL sink
//! feeds to the target's type input functions unchanged, so every type round-trips exactly.

use std::sync::Arc;

use bytes::Bytes;

use crate::{Position, TableDefinition, TableId, TableSchema};

/// One column value of a row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// The value in the canonical text of its column's logical type (see
    /// [`crate::logical`]; a PostgreSQL source's text output is exactly that).
    Text(Bytes),
    /// A large (TOASTed) value the update did not change and the source did not send:
    /// the target must keep the value it has, never write NULL.
    Unchanged,
}

/// A row's values, in the table's column order.
pub type Row = Vec<Value>;

/// One row-level change of a committed transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum RowChange {
    /// A new row.
    Insert {
        /// The table's shape when the change was made.
        table: Arc<TableSchema>,
        /// The new row.
        new: Row,
    },
    /// A changed row.
    Update {
        /// The table's shape when the change was made.
        table: Arc<TableSchema>,
        /// The old row's identity (key columns, or all with REPLICA IDENTITY FULL), when the
        /// key changed or the identity is FULL; `None` when the key is unchanged.
        old: Option<Row>,
        /// The new row; `Value::Unchanged` marks values the source did not send.
        new: Row,
    },
    /// A removed row.
    Delete {
        /// The table's shape when the change was made.
        table: Arc<TableSchema>,
        /// The old row's identity (key columns set, the others NULL, or all columns).
        old: Row,
    },
    /// Tables emptied by one TRUNCATE.
    Truncate {
        /// The tables, each with its shape.
        tables: Vec<Arc<TableSchema>>,
        /// `RESTART IDENTITY` was given.
        restart_identity: bool,
    },
}

impl RowChange {
    /// A short name for metrics and logs: `insert`, `update`, `delete`, `truncate`.
    pub fn kind(&self) -> &'static str {
        match self {
            RowChange::Insert { .. } => "insert",
            RowChange::Update { .. } => "update",
            RowChange::Delete { .. } => "delete",
            RowChange::Truncate { .. } => "truncate",
        }
    }

    /// Bytes of value data this change carries (for batching by size).
    pub fn payload_bytes(&self) -> usize {
        let row_bytes = |row: &Row| {
            row.iter()
                .map(|v| match v {
                    Value::Text(b) => b.len() + 4,
                    _ => 4,
                })
                .sum::<usize>()
        };
        match self {
            RowChange::Insert { new, .. } => row_bytes(new),
            RowChange::Update { old, new, .. } => {
                old.as_ref().map_or(0, row_bytes) + row_bytes(new)
            }
            RowChange::Delete { old, .. } => row_bytes(old),
            RowChange::Truncate { tables, .. } => 16 * tables.len(),
        }
    }
}

/// The stream a source produces.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceEvent {
    /// A transaction starts. `commit` is where its commit record lies.
    Begin {
        /// The transaction's commit position.
        commit: Position,
        /// The source's transaction id, to name the transaction in errors.
        xid: u32,
        /// Commit time, microseconds since the Unix epoch.
        commit_time_us: i64,
    },
    /// A table's shape is (re)announced: before its first change in a session and after
    /// every change of its columns. The sink brings the target table in line.
    Schema(Arc<TableSchema>),
    /// A table the changefeed replicates was renamed on the source (same table, the
    /// source's id for it unchanged): `from` is the name it had, `schema` its shape under
    /// the new name. Announced before the first change under the new name, at its position
    /// in the stream.
    Renamed {
        /// The name the table had.
        from: TableId,
        /// Its shape under the new name.
        schema: Arc<TableSchema>,
    },
    /// The source's definition of a table beyond its columns (indexes, constraints,
    /// defaults …), read when the table is described: first in a session, and again
    /// whenever it changed. The sink completes the tables it created with it.
    Definition {
        /// The table.
        table: TableId,
        /// Its definition, for a sink of the source's kind.
        definition: TableDefinition,
    },
    /// A row change of the open transaction.
    Change(RowChange),
    /// The open transaction committed; resume after `end` once it is applied.
    Commit {
        /// Position just after the transaction: the checkpoint to store with it.
        end: Position,
        /// Commit time, microseconds since the Unix epoch.
        commit_time_us: i64,
    },
    /// A table the changefeed replicates was dropped and created again under its name at
    /// `position` (the end of that transaction): another table, whose rows before the
    /// stream's start are in no change event. Its target table holds the old table's rows:
    /// the engine copies the table again, unless its copy was read at or after `position`.
    Recreated {
        /// The table.
        table: TableId,
        /// Where it was created again.
        position: Position,
    },
    /// A table the changefeed replicates was dropped on the source here: its changes up to
    /// here were sent. The engine remembers it until its next start, where a table found
    /// under the name is another one (created again after the drop) to copy anew.
    Dropped {
        /// The table.
        table: TableId,
    },
    /// A change of a transaction still in progress, or its end, sent ahead of its commit
    /// by a source asked to ([`crate::Source::stream_ahead`]); see [`crate::ahead`].
    /// Outside any ordinary transaction.
    Ahead(crate::Ahead),
    /// Something the operator should know that does not stop the stream (a table dropped
    /// on the source while its changes were unread); shown in the status's warnings.
    Warning(String),
    /// The source has sent everything up to `position` and nothing is in flight: a
    /// changefeed that has applied all it received is caught up to here.
    Idle {
        /// The source's position.
        position: Position,
        /// The source's clock, microseconds since the Unix epoch.
        server_time_us: i64,
    },
}
