//! Events of changes, snapshot reads and truncates: ids, ops, the envelope's fields.

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
    let values: Vec<Json> = all.iter().map(Event::value).collect();
    let ops: Vec<&Json> = values.iter().map(|e| &e["op"]).collect();
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
        values[0],
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
    assert_eq!(values[1]["after"]["price"], json!(crate::UNAVAILABLE_VALUE));
    assert_eq!(values[2]["before"], json!({"id": 1, "price": null}));
    assert!(values[2]["after"].is_null());
    assert_eq!(values[3]["transaction"]["data_collection_order"], 4);
    assert_eq!(values[4]["transaction"]["data_collection_order"], 1);
    assert_eq!(values[4]["source"]["table"], "b");

    // Re-sent: the same ids and the same changes.
    let mut again = TransactionEvents::new(tx());
    let resent = again.events(&origin(), &insert, 99).unwrap();
    assert_eq!(resent[0].id, all[0].id);
    let strip = |mut j: Json| {
        j["ts_ms"] = Json::Null;
        j
    };
    assert_eq!(strip(resent[0].value()), strip(values[0].clone()));
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
    let json = event.value();
    assert_eq!(json["op"], "r");
    assert_eq!(json["source"]["snapshot"], "last");
    assert!(json["transaction"].is_null() && json["before"].is_null());
    let t = recopy_truncate_event(&origin(), &table("a"), &snapshot, 0, 1).unwrap();
    assert_eq!(t.value()["op"], "t");
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
