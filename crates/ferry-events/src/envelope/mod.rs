//! Debezium's change-event envelope (the `schemas.enable=false` form) built from Ferry's
//! row changes, with a stable event id in `source.event_id`.
//!
//! # Event ids
//! - A change: `<commit position>:<ordinal>`, the ordinal counting the transaction's events
//!   from 0 (a TRUNCATE of three tables is three events). The same transaction re-sent after
//!   a crash yields the same ids.
//! - A snapshot read: `snapshot:<snapshot position>:<schema>.<table>:<chunk>:<row>`, the row
//!   counting the chunk's rows from 0; a chunk read again in the same snapshot yields the
//!   same ids. Its `t` events: `…:<chunk>:truncate` before a table copied again whole,
//!   `snapshot:<earlier snapshot>:<schema>.<table>:reset` before a new first snapshot.

use ferry_core::{ColumnSchema, Position, Row, RowChange, TableSchema, TxMeta};
use serde_json::Value as Json;

use crate::value::{encode, ValueError};
use crate::write::{put, Object};

/// Debezium's `op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A snapshot read.
    Read,
    /// An insert.
    Create,
    /// An update.
    Update,
    /// A delete.
    Delete,
    /// A truncate.
    Truncate,
}

impl Op {
    /// The one-letter code.
    pub fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
        }
    }
}

/// What every event of one changefeed shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `source.name`: the changefeed id.
    pub name: String,
    /// `source.db`: the source database.
    pub db: String,
}

/// A value a column could not be encoded from: names the table and column, never the value.
#[derive(Debug, thiserror::Error)]
#[error("column {column} of table {table}: {source}")]
pub struct EncodeError {
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// What did not read.
    #[source]
    pub source: ValueError,
}

/// What an event is, for a transport that routes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventKind {
    /// A row change or snapshot read of [`Event::table`]: on the table's topic or subject.
    #[default]
    Change,
    /// A transaction's `BEGIN` or `END` (Debezium's transaction metadata): on the
    /// transaction topic or subject.
    Transaction,
    /// A Kafka tombstone after a delete: the key with no value, so compaction drops the
    /// key.
    Tombstone,
}

/// One event, ready to write: its id and its JSON text.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The stable id (also in `source.event_id`).
    pub id: String,
    /// What it is.
    pub kind: EventKind,
    /// The table it belongs to.
    pub table: ferry_core::TableId,
    /// A change event's `op` (`None` for transaction events and tombstones).
    pub op: Option<Op>,
    /// A change event's `source.connector` (`""` for transaction events).
    pub connector: &'static str,
    /// The message key as JSON text, as Debezium's: the row's key columns as an object
    /// (the new row's, the old one's for a delete); `None` for a table without a key and
    /// for `t`.
    pub key: Option<Vec<u8>>,
    /// The event as JSON text (empty for a tombstone, which has no value).
    pub json: Vec<u8>,
}

impl Event {
    /// The event's JSON, parsed (transports send [`Event::json`] as it is).
    pub fn value(&self) -> Json {
        serde_json::from_slice(&self.json).unwrap_or(Json::Null)
    }

    /// The key's JSON, parsed; null without a key.
    pub fn key_value(&self) -> Json {
        self.key
            .as_deref()
            .and_then(|key| serde_json::from_slice(key).ok())
            .unwrap_or(Json::Null)
    }
}

/// Numbers the events of one source transaction and builds them.
#[derive(Clone, Debug)]
pub struct TransactionEvents {
    pub(crate) tx: TxMeta,
    /// Events so far, to number the next.
    pub(crate) total: u64,
    /// Events so far per table, for `data_collection_order`.
    pub(crate) per_table: std::collections::HashMap<ferry_core::TableId, u64>,
    /// `transaction.id`, written once.
    transaction_id: String,
}

impl TransactionEvents {
    /// The transaction's id as Debezium writes it: `txId:lsn`.
    pub fn transaction_id(&self) -> String {
        self.transaction_id.clone()
    }

    /// A transaction begins.
    pub fn new(tx: TxMeta) -> Self {
        let transaction_id = format!("{}:{}", tx.source_tx_id, position_number(&tx.commit));
        TransactionEvents {
            tx,
            total: 0,
            per_table: Default::default(),
            transaction_id,
        }
    }

    /// The events of one change of the transaction, in order (a TRUNCATE gives one per
    /// table). `now_ms` is the processing time (`ts_ms`).
    pub fn events(
        &mut self,
        origin: &Origin,
        change: &RowChange,
        now_ms: i64,
    ) -> Result<Vec<Event>, EncodeError> {
        let rows: Vec<(&TableSchema, Op, Option<&Row>, Option<&Row>)> = match change {
            RowChange::Insert { table, new } => vec![(table, Op::Create, None, Some(new))],
            RowChange::Update { table, old, new } => {
                vec![(table, Op::Update, old.as_ref(), Some(new))]
            }
            RowChange::Delete { table, old } => vec![(table, Op::Delete, Some(old), None)],
            RowChange::Truncate { tables, .. } => tables
                .iter()
                .map(|t| (t.as_ref(), Op::Truncate, None, None))
                .collect(),
        };
        let mut events = Vec::with_capacity(rows.len());
        for (table, op, before, after) in rows {
            let ordinal = self.total;
            self.total += 1;
            let in_table = match self.per_table.get_mut(&table.id) {
                Some(n) => n,
                None => self.per_table.entry(table.id.clone()).or_default(),
            };
            *in_table += 1;
            let in_table = *in_table;
            let id = format!("{}:{ordinal}", self.tx.commit);
            let head = Head {
                origin,
                table,
                position: &self.tx.commit,
                id: &id,
                ts_ms: self.tx.commit_time_us.div_euclid(1000),
                snapshot: "false",
                tx_id: Some(self.tx.source_tx_id),
            };
            let transaction = Some((self.transaction_id.as_str(), ordinal + 1, in_table));
            events.push(Event {
                kind: EventKind::Change,
                op: Some(op),
                connector: connector_name(&self.tx.commit),
                key: key_json(table, after.or(before))?,
                json: envelope(&head, op, before, after, transaction, now_ms)?,
                table: table.id.clone(),
                id,
            });
        }
        Ok(events)
    }
}

/// Where a snapshot read comes from.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotRead<'a> {
    /// The snapshot's position.
    pub snapshot: &'a Position,
    /// The chunk of the table.
    pub chunk: u32,
    /// The row's number within the chunk, from 0.
    pub row: u64,
    /// The chunk's last row: `source.snapshot` is `last`.
    pub last: bool,
}

/// The `r` event of one snapshot row.
pub fn snapshot_event(
    origin: &Origin,
    table: &TableSchema,
    read: SnapshotRead<'_>,
    row: &Row,
    now_ms: i64,
) -> Result<Event, EncodeError> {
    let id = format!(
        "snapshot:{}:{}:{}:{}",
        read.snapshot, table.id, read.chunk, read.row
    );
    let head = Head {
        origin,
        table,
        position: read.snapshot,
        id: &id,
        ts_ms: now_ms,
        snapshot: if read.last { "last" } else { "true" },
        tx_id: None,
    };
    Ok(Event {
        kind: EventKind::Change,
        op: Some(Op::Read),
        connector: connector_name(read.snapshot),
        key: key_json(table, Some(row))?,
        json: envelope(&head, Op::Read, None, Some(row), None, now_ms)?,
        table: table.id.clone(),
        id,
    })
}

/// The `t` event that tells a consumer to drop what it holds of a table whose copy starts
/// again (so a partial copy is not kept twice); its id names the snapshot and chunk.
pub fn recopy_truncate_event(
    origin: &Origin,
    table: &TableSchema,
    snapshot: &Position,
    chunk: u32,
    now_ms: i64,
) -> Result<Event, EncodeError> {
    let id = format!("snapshot:{snapshot}:{}:{chunk}:truncate", table.id);
    truncate_event(origin, table, snapshot, id, now_ms)
}

/// A snapshot's `t` event of `table`, with id `id`.
fn truncate_event(
    origin: &Origin,
    table: &TableSchema,
    snapshot: &Position,
    id: String,
    now_ms: i64,
) -> Result<Event, EncodeError> {
    let head = Head {
        origin,
        table,
        position: snapshot,
        id: &id,
        ts_ms: now_ms,
        snapshot: "true",
        tx_id: None,
    };
    Ok(Event {
        kind: EventKind::Change,
        op: Some(Op::Truncate),
        connector: connector_name(snapshot),
        key: None,
        json: envelope(&head, Op::Truncate, None, None, None, now_ms)?,
        table: table.id.clone(),
        id,
    })
}

/// The `t` events that go before a new first snapshot: one for each table the earlier
/// snapshot's `finished` chunks copied.
pub fn reset_events(
    origin: &Origin,
    finished: &[ferry_core::FinishedChunk],
    now_ms: i64,
) -> Result<Vec<Event>, EncodeError> {
    let mut seen = std::collections::HashSet::new();
    finished
        .iter()
        .filter(|chunk| seen.insert(&chunk.table))
        .map(|chunk| reset_truncate_event(origin, &chunk.table, &chunk.snapshot, now_ms))
        .collect()
}

/// The `t` event that goes before a new first snapshot for a table an earlier snapshot
/// (at `snapshot`) copied, so a consumer drops rows the new copy may no longer have. Its id
/// ends in `reset`: a recopy's `t` event of the same snapshot and chunk is another event.
pub fn reset_truncate_event(
    origin: &Origin,
    table: &ferry_core::TableId,
    snapshot: &Position,
    now_ms: i64,
) -> Result<Event, EncodeError> {
    let table = TableSchema {
        id: table.clone(),
        columns: Vec::new(),
        key: Vec::new(),
        identity: ferry_core::ReplicaIdentity::Default,
        user_types: Vec::new(),
        partition_of: Vec::new(),
        dialect: ferry_core::Dialect::Postgres,
    };
    let id = format!("snapshot:{snapshot}:{}:reset", table.id);
    truncate_event(origin, &table, snapshot, id, now_ms)
}

/// What an event's `source` block says.
struct Head<'a> {
    origin: &'a Origin,
    table: &'a TableSchema,
    /// The commit position of a change, the snapshot's of a read.
    position: &'a Position,
    id: &'a str,
    /// `source.ts_ms`: commit time of a change, processing time of a read.
    ts_ms: i64,
    /// `source.snapshot`: `true`, `last` or `false`.
    snapshot: &'static str,
    /// `source.txId`: set on changes.
    tx_id: Option<u64>,
}

/// The envelope's JSON text, its fields in Debezium's order; `transaction` is `(id,
/// total_order, data_collection_order)`.
fn envelope(
    head: &Head<'_>,
    op: Op,
    before: Option<&Row>,
    after: Option<&Row>,
    transaction: Option<(&str, u64, u64)>,
    now_ms: i64,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(512);
    let mut event = Object::open(&mut out);
    row_json(event.field("before"), head.table, before)?;
    row_json(event.field("after"), head.table, after)?;
    source_block(event.field("source"), head);
    event.value("op", op.code());
    event.value("ts_ms", &now_ms);
    match transaction {
        Some((id, total_order, in_table)) => {
            let mut block = Object::open(event.field("transaction"));
            block.value("id", id);
            block.value("total_order", &total_order);
            block.value("data_collection_order", &in_table);
            block.close();
        }
        None => event.field("transaction").extend_from_slice(b"null"),
    }
    event.close();
    Ok(out)
}

/// The `source` block, in Debezium's order.
fn source_block(out: &mut Vec<u8>, head: &Head<'_>) {
    let position = head.position;
    let mut source = Object::open(out);
    source.value("version", env!("CARGO_PKG_VERSION"));
    source.value("connector", connector_name(position));
    source.value("name", &head.origin.name);
    source.value("ts_ms", &head.ts_ms);
    source.value("snapshot", head.snapshot);
    source.value("db", &head.origin.db);
    source.value("schema", &head.table.id.schema);
    source.value("table", &head.table.id.name);
    source.value("txId", &head.tx_id);
    match position {
        Position::PgLsn(lsn) => source.value("lsn", &lsn.0),
        // Debezium's MySQL fields: the GTID position, or the binlog file and offset where
        // GTIDs are off; `row` (the row within its binlog event) is not known to Ferry.
        Position::BinlogFile(_) => {
            let text = position.to_string();
            let (file, pos) = text.rsplit_once(':').unwrap_or((text.as_str(), ""));
            source.value("gtid", &None::<()>);
            source.value("file", file);
            source.value("pos", &pos.parse::<u64>().ok());
            source.value("row", &None::<()>);
        }
        Position::MariaDbGtid(_) | Position::MySqlGtid(_) => {
            source.value("gtid", &position.to_string());
            source.value("file", &None::<()>);
            source.value("pos", &None::<()>);
            source.value("row", &None::<()>);
        }
    }
    source.value("event_id", head.id);
    source.close();
}

/// Debezium's `source.connector` for a source of this kind.
fn connector_name(position: &Position) -> &'static str {
    match position {
        Position::PgLsn(_) => "postgresql",
        // Debezium's MariaDB connector (2.7 and later) names itself `mariadb`.
        Position::MariaDbGtid(_) => "mariadb",
        Position::MySqlGtid(_) | Position::BinlogFile(_) => "mysql",
    }
}

/// The position as Debezium's `transaction.id` writes it (`txId:lsn`).
pub(crate) fn position_number(position: &Position) -> String {
    match position {
        Position::PgLsn(lsn) => lsn.0.to_string(),
        other => other.to_string(),
    }
}

/// A row as an object of its columns in table order; null without a row.
fn row_json(out: &mut Vec<u8>, table: &TableSchema, row: Option<&Row>) -> Result<(), EncodeError> {
    let Some(row) = row else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    let mut object = Object::open(out);
    for (column, value) in table.columns.iter().zip(row) {
        column_json(&mut object, table, column, value)?;
    }
    object.close();
    Ok(())
}

/// The key columns of `row` as an object; `None` without a key or a row.
fn key_json(table: &TableSchema, row: Option<&Row>) -> Result<Option<Vec<u8>>, EncodeError> {
    let Some(row) = row.filter(|_| table.has_key()) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(32);
    let mut object = Object::open(&mut out);
    for &i in &table.key {
        let (Some(column), Some(value)) = (table.columns.get(i), row.get(i)) else {
            continue;
        };
        column_json(&mut object, table, column, value)?;
    }
    object.close();
    Ok(Some(out))
}

/// Field `column` with `value` encoded as its logical type.
fn column_json(
    object: &mut Object<'_>,
    table: &TableSchema,
    column: &ColumnSchema,
    value: &ferry_core::Value,
) -> Result<(), EncodeError> {
    let json = encode(&column.logical, value).map_err(|source| EncodeError {
        table: table.id.to_string(),
        column: column.name.clone(),
        source,
    })?;
    put(object.escaped_field(&column.name), &json);
    Ok(())
}

#[cfg(test)]
mod tests;
