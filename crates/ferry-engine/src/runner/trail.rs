//! What the open batch holds, to name it when the target refuses it: the source
//! transactions (id and commit position) and, per table, the operations and the key
//! columns' names. Never row values: errors end up in the status, logs and metrics.

use std::fmt::Write as _;
use std::sync::Arc;

use ferry_core::{Position, RowChange, TableId, TableSchema};

/// Most distinct (table, operation) pairs listed; more are counted.
const MAX_OPS: usize = 8;

/// The open batch's source transactions and what they touch.
///
/// On the hot path (every change) it compares a pointer and an operation against at most
/// [`MAX_OPS`] entries; text is built only when an error is described.
#[derive(Debug, Default)]
pub(crate) struct Trail {
    /// (transaction id, commit position) of the batch's first and last transaction.
    first: Option<(u32, Position)>,
    last: Option<(u32, Position)>,
    transactions: u64,
    /// Distinct (table shape, operation) pairs, in first-seen order.
    ops: Vec<(Arc<TableSchema>, &'static str)>,
    more_ops: bool,
}

impl Trail {
    /// A transaction of the batch begins.
    pub(crate) fn begin(&mut self, xid: u32, commit: &Position) {
        if self.first.is_none() {
            self.first = Some((xid, commit.clone()));
        }
        self.last = Some((xid, commit.clone()));
        self.transactions += 1;
    }

    /// A change of the current transaction.
    pub(crate) fn change(&mut self, change: &RowChange) {
        match change {
            RowChange::Insert { table, .. } => self.note("INSERT", table),
            RowChange::Update { table, .. } => self.note("UPDATE", table),
            RowChange::Delete { table, .. } => self.note("DELETE", table),
            RowChange::Truncate { tables, .. } => {
                for table in tables {
                    self.note("TRUNCATE", table);
                }
            }
        }
    }

    fn note(&mut self, op: &'static str, table: &Arc<TableSchema>) {
        let seen = self
            .ops
            .iter()
            .any(|(t, o)| *o == op && (Arc::ptr_eq(t, table) || t.id == table.id));
        if seen {
            return;
        }
        if self.ops.len() >= MAX_OPS {
            self.more_ops = true;
        } else {
            self.ops.push((table.clone(), op));
        }
    }

    /// The tables the batch changed (as far as it noted them).
    pub(crate) fn tables(&self) -> Vec<TableId> {
        let mut tables: Vec<TableId> = Vec::new();
        for (t, _) in &self.ops {
            if !tables.contains(&t.id) {
                tables.push(t.id.clone());
            }
        }
        tables
    }

    /// How many transactions the batch holds.
    pub(crate) fn transactions(&self) -> u64 {
        self.transactions
    }

    /// The last transaction's commit position.
    pub(crate) fn last_commit(&self) -> Option<Position> {
        self.last.as_ref().map(|(_, p)| p.clone())
    }

    /// `source transaction 1234 (commit 0/16B3748): UPDATE public.t (key id)`, or the range
    /// of a batch of several.
    pub(crate) fn describe(&self) -> String {
        let mut text = match (&self.first, &self.last) {
            (Some((xid, commit)), _) if self.transactions == 1 => {
                format!("source transaction {xid} (commit {commit})")
            }
            (Some((first_xid, first)), Some((last_xid, last))) => format!(
                "one of {} source transactions, from {first_xid} (commit {first}) to \
                 {last_xid} (commit {last})",
                self.transactions
            ),
            _ => return "no source transaction".to_string(),
        };
        if !self.ops.is_empty() {
            let ops: Vec<String> = self.ops.iter().map(|(t, op)| describe_op(op, t)).collect();
            let _ = write!(text, ": {}", ops.join(", "));
            if self.more_ops {
                text.push_str(", …");
            }
        }
        text
    }
}

/// `UPDATE public.t (key id, sub)`: the key columns' names, never values.
fn describe_op(op: &str, table: &TableSchema) -> String {
    let key: Vec<&str> = table
        .key
        .iter()
        .filter_map(|&i| table.columns.get(i).map(|c| c.name.as_str()))
        .collect();
    if key.is_empty() {
        format!("{op} {} (no key)", table.id)
    } else {
        format!("{op} {} (key {})", table.id, key.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{ColumnSchema, Lsn, ReplicaIdentity, TableId};

    fn table() -> Arc<TableSchema> {
        let column = |name: &str| ColumnSchema {
            name: name.into(),
            type_name: "integer".into(),
            type_oid: 23,
            logical: ferry_core::LogicalType::Int { bits: 32 },
            nullable: false,
            missing_value: None,
            has_default: false,
        };
        Arc::new(TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![column("id"), column("sub"), column("v")],
            key: vec![0, 1],
            identity: ReplicaIdentity::Default,
            user_types: Vec::new(),
            partition_of: Vec::new(),
            dialect: ferry_core::Dialect::Postgres,
        })
    }

    #[test]
    fn names_one_transaction_its_operations_and_key_columns() {
        let mut trail = Trail::default();
        assert_eq!(trail.describe(), "no source transaction");
        trail.begin(1234, &Position::PgLsn(Lsn(0x16B3748)));
        let truncate = RowChange::Truncate {
            tables: vec![table()],
            restart_identity: false,
        };
        trail.change(&truncate);
        trail.change(&truncate);
        assert_eq!(
            trail.describe(),
            "source transaction 1234 (commit 0/16B3748): TRUNCATE public.t (key id, sub)"
        );
        trail.begin(1240, &Position::PgLsn(Lsn(0x16B4000)));
        assert_eq!(trail.transactions(), 2);
        assert!(trail.describe().starts_with(
            "one of 2 source transactions, from 1234 (commit 0/16B3748) to 1240 (commit 0/16B4000)"
        ));
        assert_eq!(trail.last_commit(), Some(Position::PgLsn(Lsn(0x16B4000))));
    }
}
