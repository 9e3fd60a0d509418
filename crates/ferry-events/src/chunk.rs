//! A snapshot chunk's events, built row by row as the rows stream in: the chunk's last
//! row is `snapshot: last`, which takes one row of look-ahead, kept here so every sink
//! numbers and marks a chunk's rows the same way.

use ferry_core::{Position, Row, TableSchema};

use crate::envelope::{recopy_truncate_event, snapshot_event, EncodeError, Event, Origin};
use crate::SnapshotRead;

/// Builds the events of one chunk of `table` read in the snapshot at `snapshot`.
pub struct ChunkEvents<'a> {
    origin: &'a Origin,
    table: &'a TableSchema,
    snapshot: &'a Position,
    chunk: u32,
    /// Rows turned into events so far.
    rows: u64,
    /// The row read last, whose event waits to learn whether it is the chunk's last.
    pending: Option<Row>,
}

impl<'a> ChunkEvents<'a> {
    /// A chunk begins.
    pub fn new(
        origin: &'a Origin,
        table: &'a TableSchema,
        snapshot: &'a Position,
        chunk: u32,
    ) -> Self {
        ChunkEvents {
            origin,
            table,
            snapshot,
            chunk,
            rows: 0,
            pending: None,
        }
    }

    /// The `t` event that goes first when the chunk is the whole table copied again.
    pub fn replace_event(&self, now_ms: i64) -> Result<Event, EncodeError> {
        recopy_truncate_event(self.origin, self.table, self.snapshot, self.chunk, now_ms)
    }

    /// The next row; gives the event of the row before it.
    pub fn push(&mut self, row: Row, now_ms: i64) -> Result<Option<Event>, EncodeError> {
        match self.pending.replace(row) {
            Some(previous) => self.event(&previous, false, now_ms).map(Some),
            None => Ok(None),
        }
    }

    /// The chunk is read: the last row's event (`snapshot: last`), if there was a row, and
    /// the number of rows.
    pub fn finish(mut self, now_ms: i64) -> Result<(Option<Event>, u64), EncodeError> {
        let last = match self.pending.take() {
            Some(row) => Some(self.event(&row, true, now_ms)?),
            None => None,
        };
        Ok((last, self.rows))
    }

    fn event(&mut self, row: &Row, last: bool, now_ms: i64) -> Result<Event, EncodeError> {
        let read = SnapshotRead {
            snapshot: self.snapshot,
            chunk: self.chunk,
            row: self.rows,
            last,
        };
        self.rows += 1;
        snapshot_event(self.origin, self.table, read, row, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::{ColumnSchema, LogicalType, Lsn, ReplicaIdentity, TableId, Value};

    use super::*;

    fn origin() -> Origin {
        Origin {
            name: "default/feed".into(),
            db: "shop".into(),
        }
    }

    fn table() -> TableSchema {
        TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![ColumnSchema {
                name: "id".into(),
                type_name: "integer".into(),
                type_oid: 23,
                logical: LogicalType::Int { bits: 32 },
                nullable: false,
                missing_value: None,
                has_default: false,
            }],
            key: vec![0],
            identity: ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: vec![],
            dialect: ferry_core::Dialect::Postgres,
        }
    }

    #[test]
    fn the_last_row_waits_for_the_end_and_is_marked_last() {
        let (origin, table) = (origin(), table());
        let snapshot = Position::PgLsn(Lsn(0x10));
        let mut chunk = ChunkEvents::new(&origin, &table, &snapshot, 2);
        let mut events = Vec::new();
        for i in 0..3 {
            let row = vec![Value::Text(i.to_string().into_bytes().into())];
            events.extend(chunk.push(row, 0).unwrap());
        }
        assert_eq!(events.len(), 2, "the third row waits");
        let (last, rows) = chunk.finish(0).unwrap();
        events.extend(last);
        assert_eq!(rows, 3);
        let marks: Vec<_> = events
            .iter()
            .map(|e| {
                e.value()["source"]["snapshot"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(marks, ["true", "true", "last"]);
        assert_eq!(events[2].id, "snapshot:0/10:public.t:2:2");

        let empty = ChunkEvents::new(&origin, &table, &snapshot, 3);
        assert_eq!(
            empty.replace_event(0).unwrap().id,
            "snapshot:0/10:public.t:3:truncate"
        );
        assert!(matches!(empty.finish(0).unwrap(), (None, 0)));
    }

    #[test]
    fn a_reset_truncate_is_not_a_recopy_truncate() {
        let (origin, table) = (origin(), table());
        let snapshot = Position::PgLsn(Lsn(0x10));
        let reset = crate::reset_truncate_event(&origin, &table.id, &snapshot, 0).unwrap();
        let recopy = ChunkEvents::new(&origin, &table, &snapshot, 0)
            .replace_event(0)
            .unwrap();
        assert_ne!(
            reset.id, recopy.id,
            "a consumer would drop the second as a repeat"
        );
        assert_eq!(reset.value()["op"], "t");
        assert_eq!(reset.value()["source"]["table"], "t");
    }
}
