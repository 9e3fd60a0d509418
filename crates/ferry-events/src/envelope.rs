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
use serde_json::{json, Map, Value as Json};

use crate::value::{encode, ValueError};

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

/// One event, ready to write: its id and its JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The stable id (also in `source.event_id`).
    pub id: String,
    /// What it is.
    pub kind: EventKind,
    /// The table it belongs to.
    pub table: ferry_core::TableId,
    /// The message key, as Debezium's: the row's key columns as a JSON object (the new
    /// row's, the old one's for a delete); null for a table without a key and for `t`.
    pub key: Json,
    /// The envelope.
    pub json: Json,
}

/// Numbers the events of one source transaction and builds them.
#[derive(Clone, Debug)]
pub struct TransactionEvents {
    pub(crate) tx: TxMeta,
    /// Events so far, to number the next.
    pub(crate) total: u64,
    /// Events so far per table, for `data_collection_order`.
    pub(crate) per_table: std::collections::HashMap<ferry_core::TableId, u64>,
}

impl TransactionEvents {
    /// The transaction's id as Debezium writes it: `txId:lsn`.
    pub fn transaction_id(&self) -> String {
        format!(
            "{}:{}",
            self.tx.source_tx_id,
            position_number(&self.tx.commit)
        )
    }

    /// A transaction begins.
    pub fn new(tx: TxMeta) -> Self {
        TransactionEvents {
            tx,
            total: 0,
            per_table: Default::default(),
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
            let in_table = self.per_table.entry(table.id.clone()).or_default();
            *in_table += 1;
            let in_table = *in_table;
            let id = format!("{}:{ordinal}", self.tx.commit);
            let mut source = source_block(origin, table, &self.tx.commit, &id);
            source.insert(
                "ts_ms".into(),
                json!(self.tx.commit_time_us.div_euclid(1000)),
            );
            source.insert("snapshot".into(), json!("false"));
            source.insert("txId".into(), json!(self.tx.source_tx_id));
            let transaction = json!({
                "id": self.transaction_id(),
                "total_order": ordinal + 1,
                "data_collection_order": in_table,
            });
            events.push(Event {
                kind: EventKind::Change,
                key: key_json(table, after.or(before))?,
                json: envelope(table, op, before, after, source, transaction, now_ms)?,
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
    let mut source = source_block(origin, table, read.snapshot, &id);
    source.insert("ts_ms".into(), json!(now_ms));
    source.insert(
        "snapshot".into(),
        json!(if read.last { "last" } else { "true" }),
    );
    source.insert("txId".into(), Json::Null);
    Ok(Event {
        kind: EventKind::Change,
        key: key_json(table, Some(row))?,
        json: envelope(table, Op::Read, None, Some(row), source, Json::Null, now_ms)?,
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
    let mut source = source_block(origin, table, snapshot, &id);
    source.insert("ts_ms".into(), json!(now_ms));
    source.insert("snapshot".into(), json!("true"));
    source.insert("txId".into(), Json::Null);
    Ok(Event {
        kind: EventKind::Change,
        key: Json::Null,
        json: envelope(table, Op::Truncate, None, None, source, Json::Null, now_ms)?,
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
    let mut source = source_block(origin, &table, snapshot, &id);
    source.insert("ts_ms".into(), json!(now_ms));
    source.insert("snapshot".into(), json!("true"));
    source.insert("txId".into(), Json::Null);
    Ok(Event {
        kind: EventKind::Change,
        key: Json::Null,
        json: envelope(&table, Op::Truncate, None, None, source, Json::Null, now_ms)?,
        table: table.id,
        id,
    })
}

/// The envelope's fields in Debezium's order.
fn envelope(
    table: &TableSchema,
    op: Op,
    before: Option<&Row>,
    after: Option<&Row>,
    source: Map<String, Json>,
    transaction: Json,
    now_ms: i64,
) -> Result<Json, EncodeError> {
    let mut event = Map::new();
    event.insert("before".into(), row_json(table, before)?);
    event.insert("after".into(), row_json(table, after)?);
    event.insert("source".into(), Json::Object(source));
    event.insert("op".into(), json!(op.code()));
    event.insert("ts_ms".into(), json!(now_ms));
    event.insert("transaction".into(), transaction);
    Ok(Json::Object(event))
}

/// The `source` block's fields common to reads and changes, minus `ts_ms`, `snapshot` and
/// `txId` (the caller's).
fn source_block(
    origin: &Origin,
    table: &TableSchema,
    position: &Position,
    id: &str,
) -> Map<String, Json> {
    let mut source = Map::new();
    source.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    source.insert("connector".into(), json!(connector_name(position)));
    source.insert("name".into(), json!(origin.name));
    source.insert("db".into(), json!(origin.db));
    source.insert("schema".into(), json!(table.id.schema));
    source.insert("table".into(), json!(table.id.name));
    match position {
        Position::PgLsn(lsn) => {
            source.insert("lsn".into(), json!(lsn.0));
        }
        // Debezium's MySQL fields: the GTID position, or the binlog file and offset where
        // GTIDs are off; `row` (the row within its binlog event) is not known to Ferry.
        Position::BinlogFile(_) => {
            let text = position.to_string();
            let (file, pos) = text.rsplit_once(':').unwrap_or((text.as_str(), ""));
            source.insert("gtid".into(), Json::Null);
            source.insert("file".into(), json!(file));
            source.insert(
                "pos".into(),
                pos.parse::<u64>().map_or(Json::Null, |p| json!(p)),
            );
            source.insert("row".into(), Json::Null);
        }
        Position::MariaDbGtid(_) | Position::MySqlGtid(_) => {
            source.insert("gtid".into(), json!(position.to_string()));
            source.insert("file".into(), Json::Null);
            source.insert("pos".into(), Json::Null);
            source.insert("row".into(), Json::Null);
        }
    }
    source.insert("event_id".into(), json!(id));
    source
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

fn row_json(table: &TableSchema, row: Option<&Row>) -> Result<Json, EncodeError> {
    let Some(row) = row else {
        return Ok(Json::Null);
    };
    let mut object = Map::new();
    for (column, value) in table.columns.iter().zip(row) {
        object.insert(column.name.clone(), column_json(table, column, value)?);
    }
    Ok(Json::Object(object))
}

/// The key columns of `row` as an object; null without a key or a row.
fn key_json(table: &TableSchema, row: Option<&Row>) -> Result<Json, EncodeError> {
    let Some(row) = row.filter(|_| table.has_key()) else {
        return Ok(Json::Null);
    };
    let mut object = Map::new();
    for &i in &table.key {
        let (Some(column), Some(value)) = (table.columns.get(i), row.get(i)) else {
            continue;
        };
        object.insert(column.name.clone(), column_json(table, column, value)?);
    }
    Ok(Json::Object(object))
}

fn column_json(
    table: &TableSchema,
    column: &ColumnSchema,
    value: &ferry_core::Value,
) -> Result<Json, EncodeError> {
    encode(&column.logical, value).map_err(|source| EncodeError {
        table: table.id.to_string(),
        column: column.name.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_core::{ColumnSchema, LogicalType, Lsn, ReplicaIdentity, TableId, Value};
    use serde_json::json;

    use super::*;

    fn table(name: &str) -> Arc<TableSchema> {
        let column = |name: &str, logical| ColumnSchema {
            name: name.into(),
            type_name: String::new(),
            type_oid: 0,
            logical,
            nullable: true,
            missing_value: None,
            has_default: false,
        };
        Arc::new(TableSchema {
            id: TableId::new("public", name),
            columns: vec![
                column("id", LogicalType::Int { bits: 32 }),
                column(
                    "price",
                    LogicalType::Decimal {
                        precision: None,
                        scale: None,
                    },
                ),
            ],
            key: vec![0],
            identity: ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: vec![],
            dialect: ferry_core::Dialect::Postgres,
        })
    }

    fn text(s: &str) -> Value {
        Value::Text(s.as_bytes().to_vec().into())
    }

    fn origin() -> Origin {
        Origin {
            name: "default/orders".into(),
            db: "shop".into(),
        }
    }

    fn tx() -> TxMeta {
        TxMeta {
            commit: Position::PgLsn(Lsn(0x1_0000_00A0)),
            commit_time_us: 1_700_000_000_123_456,
            source_tx_id: 771,
        }
    }

    #[test]
    fn a_transaction_numbers_its_events_and_truncate_fans_out() {
        let (a, b) = (table("a"), table("b"));
        let mut events = TransactionEvents::new(tx());
        let insert = RowChange::Insert {
            table: a.clone(),
            new: vec![text("1"), text("9.50")],
        };
        let update = RowChange::Update {
            table: a.clone(),
            old: None,
            new: vec![text("1"), Value::Unchanged],
        };
        let delete = RowChange::Delete {
            table: a.clone(),
            old: vec![text("1"), Value::Null],
        };
        let truncate = RowChange::Truncate {
            tables: vec![a, b],
            restart_identity: false,
        };
        let mut all = Vec::new();
        for change in [&insert, &update, &delete, &truncate] {
            all.extend(events.events(&origin(), change, 5).unwrap());
        }
        let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1/A0:0", "1/A0:1", "1/A0:2", "1/A0:3", "1/A0:4"]);
        let ops: Vec<&Json> = all.iter().map(|e| &e.json["op"]).collect();
        assert_eq!(
            ops,
            [
                &json!("c"),
                &json!("u"),
                &json!("d"),
                &json!("t"),
                &json!("t")
            ]
        );
        assert_eq!(
            all[0].json,
            json!({
                "before": null,
                "after": {"id": 1, "price": "9.50"},
                "source": {
                    "version": env!("CARGO_PKG_VERSION"), "connector": "postgresql",
                    "name": "default/orders", "db": "shop", "schema": "public", "table": "a",
                    "lsn": 0x1_0000_00A0u64, "event_id": "1/A0:0", "ts_ms": 1_700_000_000_123i64,
                    "snapshot": "false", "txId": 771,
                },
                "op": "c",
                "ts_ms": 5,
                "transaction": {"id": "771:4294967456", "total_order": 1, "data_collection_order": 1},
            })
        );
        assert_eq!(
            all[1].json["after"]["price"],
            json!(crate::UNAVAILABLE_VALUE)
        );
        assert_eq!(all[2].json["before"], json!({"id": 1, "price": null}));
        assert!(all[2].json["after"].is_null());
        assert_eq!(all[3].json["transaction"]["data_collection_order"], 4);
        assert_eq!(all[4].json["transaction"]["data_collection_order"], 1);
        assert_eq!(all[4].json["source"]["table"], "b");

        // Re-sent: the same ids and the same changes.
        let mut again = TransactionEvents::new(tx());
        let resent = again.events(&origin(), &insert, 99).unwrap();
        assert_eq!(resent[0].id, all[0].id);
        let strip = |mut j: Json| {
            j["ts_ms"] = Json::Null;
            j
        };
        assert_eq!(strip(resent[0].json.clone()), strip(all[0].json.clone()));
    }

    #[test]
    fn snapshot_reads_have_ids_from_their_chunk() {
        let snapshot = Position::PgLsn(Lsn(0x10));
        let read = SnapshotRead {
            snapshot: &snapshot,
            chunk: 2,
            row: 7,
            last: true,
        };
        let event =
            snapshot_event(&origin(), &table("a"), read, &vec![text("3"), text("1")], 1).unwrap();
        assert_eq!(event.id, "snapshot:0/10:public.a:2:7");
        assert_eq!(event.json["op"], "r");
        assert_eq!(event.json["source"]["snapshot"], "last");
        assert!(event.json["transaction"].is_null() && event.json["before"].is_null());
        let t = recopy_truncate_event(&origin(), &table("a"), &snapshot, 0, 1).unwrap();
        assert_eq!(t.json["op"], "t");
        assert_eq!(t.id, "snapshot:0/10:public.a:0:truncate");
    }

    #[test]
    fn a_value_that_is_not_its_type_names_the_column() {
        let bad = RowChange::Insert {
            table: table("a"),
            new: vec![text("x"), Value::Null],
        };
        let err = TransactionEvents::new(tx())
            .events(&origin(), &bad, 0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "column id of table public.a: a value does not read as int32"
        );
    }
}
