//! Applying a batch: changes compacted per key into a segment ([`ferry_core::compact`]) or
//! queued as row statements of their own, in source order, sent as multi-statement
//! queries; the segment and the queue are flushed at a row or byte bound, so memory stays
//! bounded whatever a transaction's size.

use std::sync::Arc;

use ferry_core::compact;
use ferry_core::{RowChange, SinkError, TableId, TableSchema, Value};
use mysql_async::prelude::Queryable;

use super::{check_packet, MySqlSink};
use crate::connect::sink_error;

/// Row statements are sent when this many bytes of SQL are waiting…
const FLUSH_BYTES: usize = 4 << 20;
/// …and a segment is applied when it holds this many changes or bytes of values.
const SEGMENT_ROWS: usize = 20_000;
const SEGMENT_BYTES: usize = 16 << 20;

fn sql_work(statements: Vec<Vec<u8>>) -> Vec<Work> {
    statements.into_iter().map(Work::Sql).collect()
}

/// One piece of queued work.
pub(super) enum Work {
    /// Statements that may travel together.
    Sql(Vec<u8>),
    /// A statement that must change exactly one row (a row of a table without a key).
    OneRow(Vec<u8>, TableId),
}

impl MySqlSink {
    /// Turns the segment into queued statements and sends everything queued.
    pub(super) async fn flush(&mut self) -> Result<(), SinkError> {
        self.segment_to_queue()?;
        let work = std::mem::take(&mut self.queue);
        self.queued_bytes = 0;
        self.run(work, None).await
    }

    /// Queues the segment's statements: per table its deletes, its upserts, its updates.
    pub(super) fn segment_to_queue(&mut self) -> Result<(), SinkError> {
        let segment = std::mem::take(&mut self.segment);
        self.segment_rows = 0;
        self.segment_bytes = 0;
        for (id, changes) in segment {
            let target = self.target(&id)?;
            let sets = changes.into_sets();
            let mut statements = target.deletes(&sets.deletes)?;
            let rows: Vec<_> = sets.inserts.into_iter().chain(sets.upserts).collect();
            statements.extend(target.inserts(&rows, true)?);
            for rows in sets.updates.values() {
                for row in rows {
                    statements.extend(target.update(row, row, false)?);
                }
            }
            for sql in statements {
                self.queued_bytes += sql.len();
                self.queue.push(Work::Sql(sql));
            }
        }
        Ok(())
    }

    /// Sends `work` in order (then `finish`): statements that may travel together as
    /// multi-statement queries, a one-row statement alone, checking it changed one row.
    pub(super) async fn run(
        &mut self,
        work: Vec<Work>,
        finish: Option<Vec<u8>>,
    ) -> Result<(), SinkError> {
        let mut query: Vec<u8> = Vec::new();
        let fail = |e| sink_error("apply a batch of changes", e);
        let query_bytes = FLUSH_BYTES.min(self.max_packet / 2);
        for item in work.into_iter().chain(finish.map(Work::Sql)) {
            let (Work::Sql(sql) | Work::OneRow(sql, _)) = &item;
            check_packet(sql.len(), self.max_packet, "a change")?;
            match item {
                Work::Sql(sql) => {
                    if !query.is_empty() && query.len() + sql.len() > query_bytes {
                        self.conn
                            .query_drop(std::mem::take(&mut query))
                            .await
                            .map_err(fail)?;
                    }
                    if !query.is_empty() {
                        query.push(b';');
                    }
                    query.extend_from_slice(&sql);
                }
                Work::OneRow(sql, table) => {
                    if !query.is_empty() {
                        self.conn
                            .query_drop(std::mem::take(&mut query))
                            .await
                            .map_err(fail)?;
                    }
                    self.conn.query_drop(sql).await.map_err(fail)?;
                    if self.conn.affected_rows() != 1 {
                        return Err(SinkError::Unsupported {
                            message: format!(
                                "a row of {table} (a table without a key) that the source \
                                 changed is not on the target: the target diverged from the \
                                 source. Re-sync the table"
                            ),
                        });
                    }
                }
            }
        }
        if !query.is_empty() {
            self.conn.query_drop(query).await.map_err(fail)?;
        }
        Ok(())
    }

    pub(super) async fn queue(&mut self, work: Work) -> Result<(), SinkError> {
        if !self.segment.is_empty() {
            self.segment_to_queue()?;
        }
        self.queued_bytes += match &work {
            Work::Sql(s) | Work::OneRow(s, _) => s.len(),
        };
        self.queue.push(work);
        if self.queued_bytes >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Adds a change to the segment, or queues its own statements when it cannot be merged.
    pub(super) async fn compact(
        &mut self,
        table: &Arc<TableSchema>,
        change: RowChange,
    ) -> Result<(), SinkError> {
        let bytes = change.payload_bytes();
        if compact::shape_changed(&self.segment, table) {
            self.segment_to_queue()?;
        }
        let changes = compact::entry(&mut self.segment, table);
        match changes.absorb(change) {
            Ok(()) => {
                self.segment_rows += 1;
                self.segment_bytes += bytes;
                if self.segment_rows >= SEGMENT_ROWS || self.segment_bytes >= SEGMENT_BYTES {
                    self.flush().await?;
                }
                Ok(())
            }
            Err(change) => self.apply_alone(change).await,
        }
    }

    /// Queues the statements of one change, as the source made it.
    pub(super) async fn apply_alone(&mut self, change: RowChange) -> Result<(), SinkError> {
        let work: Vec<Work> = match &change {
            RowChange::Insert { table, new } => sql_work(
                self.target(&table.id)?
                    .inserts(std::slice::from_ref(new), true)?,
            ),
            RowChange::Update { table, old, new } => self.update_work(table, old.as_ref(), new)?,
            RowChange::Delete { table, old } => {
                let target = self.target(&table.id)?;
                if table.has_key() {
                    let key: Vec<Value> = table.key.iter().map(|&k| old[k].clone()).collect();
                    sql_work(target.deletes(&[key])?)
                } else {
                    vec![Work::OneRow(target.delete_row(old)?, table.id.clone())]
                }
            }
            RowChange::Truncate { .. } => unreachable!("truncates are applied by `apply`"),
        };
        for w in work {
            self.queue(w).await?;
        }
        Ok(())
    }

    /// The statements of an update applied on its own.
    pub(super) fn update_work(
        &self,
        table: &TableSchema,
        old: Option<&ferry_core::Row>,
        new: &ferry_core::Row,
    ) -> Result<Vec<Work>, SinkError> {
        let target = self.target(&table.id)?;
        if !table.has_key() {
            let old = old
                .filter(|o| !o.contains(&Value::Unchanged))
                .ok_or_else(|| SinkError::Unsupported {
                    message: format!(
                        "an update of {} (a table without a key) came without the whole old row; \
                     set REPLICA IDENTITY FULL on the source table",
                        table.id
                    ),
                })?;
            return Ok(target
                .update(old, new, true)?
                .map(|sql| Work::OneRow(sql, table.id.clone()))
                .into_iter()
                .collect());
        }
        let complete = !new.contains(&Value::Unchanged);
        let key_of = |row: &ferry_core::Row| -> Vec<Value> {
            table.key.iter().map(|&k| row[k].clone()).collect()
        };
        let old_key = old.map(key_of).filter(|k| *k != key_of(new));
        Ok(match (old_key, complete) {
            (Some(old_key), true) => {
                let mut work: Vec<Work> = target
                    .deletes(&[old_key])?
                    .into_iter()
                    .map(Work::Sql)
                    .collect();
                work.extend(
                    target
                        .inserts(std::slice::from_ref(new), true)?
                        .into_iter()
                        .map(Work::Sql),
                );
                work
            }
            // The key moves and unsent values stay with the row.
            (Some(_), false) => target
                .update(old.expect("an old key came from it"), new, true)?
                .map(Work::Sql)
                .into_iter()
                .collect(),
            (None, true) => target
                .inserts(std::slice::from_ref(new), true)?
                .into_iter()
                .map(Work::Sql)
                .collect(),
            (None, false) => target
                .update(new, new, false)?
                .map(Work::Sql)
                .into_iter()
                .collect(),
        })
    }

    /// Discards the open batch: nothing of it stays.
    pub(super) async fn rollback(&mut self) {
        self.touched.clear();
        self.queue.clear();
        self.queued_bytes = 0;
        self.segment.clear();
        self.segment_rows = 0;
        self.segment_bytes = 0;
        if !self.renames.is_empty() {
            // Their targets point at names the rollback restored: shaped again on use.
            self.renames.clear();
            self.tables.clear();
        }
        if self.in_batch {
            let _ = self.conn.query_drop("ROLLBACK").await;
            self.in_batch = false;
        }
    }
}
