//! Events besides row changes: a transaction's `BEGIN` and `END` (Debezium's transaction
//! metadata, `provide.transaction.metadata=true`), and Kafka tombstones after deletes.
//!
//! Their ids are stable like every event's: `<commit position>:begin`, `…:end`, and the
//! deleted row's event id followed by `:tombstone`.

use serde_json::{json, Value as Json};

use crate::envelope::{Event, EventKind, Op, TransactionEvents};

impl TransactionEvents {
    /// The transaction's `BEGIN` event.
    pub fn begin_event(&self) -> Event {
        Event {
            id: format!("{}:begin", self.tx.commit),
            kind: EventKind::Transaction,
            table: ferry_core::TableId::new("", ""),
            op: None,
            connector: "",
            key: Some(text(&json!({ "id": self.transaction_id() }))),
            json: text(&json!({
                "status": "BEGIN",
                "id": self.transaction_id(),
                "ts_ms": self.tx.commit_time_us.div_euclid(1000),
                "event_count": Json::Null,
                "data_collections": Json::Null,
            })),
        }
    }

    /// The transaction's `END` event, with its events counted per table (`schema.table`,
    /// sorted, so a re-sent `END` is the same).
    pub fn end_event(&self) -> Event {
        let mut tables: Vec<_> = self.per_table.iter().collect();
        tables.sort();
        let collections: Vec<Json> = tables
            .into_iter()
            .map(|(table, count)| json!({"data_collection": table.to_string(), "event_count": count}))
            .collect();
        Event {
            id: format!("{}:end", self.tx.commit),
            kind: EventKind::Transaction,
            table: ferry_core::TableId::new("", ""),
            op: None,
            connector: "",
            key: Some(text(&json!({ "id": self.transaction_id() }))),
            json: text(&json!({
                "status": "END",
                "id": self.transaction_id(),
                "ts_ms": self.tx.commit_time_us.div_euclid(1000),
                "event_count": self.total,
                "data_collections": collections,
            })),
        }
    }
}

/// The tombstone that follows `delete` (a `d` event with a key): same key, no value.
/// `None` for any other event.
pub fn tombstone(delete: &Event) -> Option<Event> {
    (delete.kind == EventKind::Change && delete.op == Some(Op::Delete) && delete.key.is_some())
        .then(|| Event {
            id: format!("{}:tombstone", delete.id),
            kind: EventKind::Tombstone,
            table: delete.table.clone(),
            op: None,
            connector: delete.connector,
            key: delete.key.clone(),
            json: Vec::new(),
        })
}

/// The JSON text of a value built whole (the rare events: a few per transaction).
fn text(json: &Json) -> Vec<u8> {
    serde_json::to_vec(json).expect("JSON values always serialize")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_core::{
        ColumnSchema, Dialect, LogicalType, Lsn, Position, ReplicaIdentity, RowChange, TableId,
        TableSchema, TxMeta, Value,
    };

    use super::*;
    use crate::Origin;

    #[test]
    fn begin_and_end_count_the_events_and_deletes_get_tombstones() {
        let table = Arc::new(TableSchema {
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
            dialect: Dialect::Postgres,
        });
        let mut tx = TransactionEvents::new(TxMeta {
            commit: Position::PgLsn(Lsn(0x100)),
            commit_time_us: 5_000_000,
            source_tx_id: 77,
        });
        let origin = Origin {
            name: "ns/f".into(),
            db: "shop".into(),
        };
        assert_eq!(tx.begin_event().value()["status"], "BEGIN");
        let row = vec![Value::Text("1".into())];
        let insert = RowChange::Insert {
            table: table.clone(),
            new: row.clone(),
        };
        let delete = RowChange::Delete { table, old: row };
        let inserted = tx.events(&origin, &insert, 0).unwrap();
        let deleted = tx.events(&origin, &delete, 0).unwrap();
        let end = tx.end_event();
        assert_eq!(end.id, "0/100:end");
        let end = end.value();
        assert_eq!(end["event_count"], 2);
        assert_eq!(end["id"], "77:256");
        assert_eq!(
            end["data_collections"],
            json!([{"data_collection": "public.t", "event_count": 2}])
        );
        assert_eq!(tombstone(&inserted[0]), None);
        let t = tombstone(&deleted[0]).unwrap();
        assert_eq!(
            (t.key_value(), t.json, t.kind),
            (json!({"id": 1}), Vec::new(), EventKind::Tombstone)
        );
    }
}

#[cfg(test)]
mod mysql_tests {
    use std::sync::Arc;

    use ferry_core::gtid::{BinlogFile, MariaDbGtidList};
    use ferry_core::{Dialect, Position, ReplicaIdentity, RowChange, TableId, TableSchema, TxMeta};

    use crate::{Origin, TransactionEvents};

    fn source_of(commit: Position) -> serde_json::Value {
        let table = Arc::new(TableSchema {
            id: TableId::new("shop", "t"),
            columns: vec![],
            key: vec![],
            identity: ReplicaIdentity::Full,
            user_types: vec![],
            partition_of: vec![],
            dialect: Dialect::Mysql,
        });
        let mut tx = TransactionEvents::new(TxMeta {
            commit,
            commit_time_us: 0,
            source_tx_id: 42,
        });
        let origin = Origin {
            name: "ns/f".into(),
            db: String::new(),
        };
        let change = RowChange::Insert { table, new: vec![] };
        tx.events(&origin, &change, 0).unwrap()[0].value()["source"].clone()
    }

    #[test]
    fn mariadb_and_binlog_positions_fill_debeziums_mysql_fields() {
        let gtid: MariaDbGtidList = "0-1-42".parse().unwrap();
        let source = source_of(Position::MariaDbGtid(gtid));
        assert_eq!(source["connector"], "mariadb");
        assert_eq!(source["gtid"], "0-1-42");
        assert!(source["file"].is_null() && source["pos"].is_null());
        assert!(source.get("lsn").is_none());
        let file: BinlogFile = "binlog.000003:4711".parse().unwrap();
        let source = source_of(Position::BinlogFile(file));
        assert_eq!(source["connector"], "mysql");
        assert_eq!(
            (&source["file"], &source["pos"]),
            (&"binlog.000003".into(), &4711.into())
        );
    }
}
