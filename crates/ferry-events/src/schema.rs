//! The envelope with its `schema` part, as Debezium's JSON converter writes it with
//! `schemas.enable=true`: every message is `{"schema": …, "payload": …}`, the schema a Kafka
//! Connect struct describing the payload. Keys get the same form.
//!
//! Column schemas follow the value encoding of [`crate::value`]: Debezium's names for the
//! semantic types (`io.debezium.time.MicroTimestamp`, `io.debezium.data.Json`, …), decimals
//! as strings (`decimal.handling.mode=string`).

use std::collections::HashMap;

use ferry_core::{ColumnSchema, LogicalType, TableId, TableSchema};
use serde_json::{json, Value as Json};

use crate::envelope::{Event, EventKind, Origin};

/// The schema form's `schema` parts, written once per table shape and connector and kept
/// as JSON text: an event is wrapped by splicing texts, not by building its schema again.
#[derive(Default)]
pub struct SchemaCache {
    tables: HashMap<(TableId, &'static str), Shape>,
    /// The transaction events' key and value schemas, written at their first use.
    transaction: Option<(Vec<u8>, Vec<u8>)>,
}

/// One table shape's schemas.
struct Shape {
    columns: Vec<ColumnSchema>,
    key: Vec<usize>,
    value: Vec<u8>,
    key_schema: Vec<u8>,
}

impl SchemaCache {
    /// `event` in the schema form: its value (and its key, when it has one) wrapped with
    /// their schemas. `table` is the event's table (ignored for transaction events).
    pub fn attach(&mut self, event: &mut Event, table: &TableSchema, origin: &Origin) {
        if event.kind == EventKind::Transaction {
            let (key_schema, value_schema) = self.transaction.get_or_insert_with(|| {
                (text(&transaction_key_schema()), text(&transaction_schema()))
            });
            if let Some(key) = &event.key {
                event.key = Some(wrap(key_schema, key));
            }
            event.json = wrap(value_schema, &event.json);
            return;
        }
        let connector = if event.connector.is_empty() {
            "postgresql"
        } else {
            event.connector
        };
        let shape = self.shape(table, origin, connector);
        if let Some(key) = &event.key {
            event.key = Some(wrap(&shape.key_schema, key));
        }
        if event.kind == EventKind::Change {
            event.json = wrap(&shape.value, &event.json);
        }
    }

    /// The schemas of `table` as it is now.
    fn shape(&mut self, table: &TableSchema, origin: &Origin, connector: &'static str) -> &Shape {
        let entry = self
            .tables
            .entry((table.id.clone(), connector))
            .or_insert_with(|| Shape {
                columns: Vec::new(),
                key: Vec::new(),
                value: Vec::new(),
                key_schema: Vec::new(),
            });
        if entry.value.is_empty() || entry.columns != table.columns || entry.key != table.key {
            let names = Names::new(origin, table);
            *entry = Shape {
                columns: table.columns.clone(),
                key: table.key.clone(),
                value: text(&envelope_schema(table, &names, connector)),
                key_schema: text(&key_schema(table, &names)),
            };
        }
        entry
    }
}

/// `{"schema": schema, "payload": payload}`, from their JSON texts.
fn wrap(schema: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(schema.len() + payload.len() + 24);
    out.extend_from_slice(b"{\"schema\":");
    out.extend_from_slice(schema);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload);
    out.push(b'}');
    out
}

fn text(json: &Json) -> Vec<u8> {
    serde_json::to_vec(json).expect("JSON values always serialize")
}

fn transaction_key_schema() -> Json {
    json!({"type": "struct", "optional": false, "name": "io.debezium.connector.common.TransactionMetadataKey",
           "fields": [{"type": "string", "optional": false, "field": "id"}]})
}

/// Connect schema names: `<changefeed>.<schema>.<table>.<Part>`, the changefeed's
/// `namespace/id` with `/` as `.` (Debezium uses its `topic.prefix`).
struct Names {
    prefix: String,
}

impl Names {
    fn new(origin: &Origin, table: &TableSchema) -> Self {
        Names {
            prefix: format!(
                "{}.{}.{}",
                origin.name.replace('/', "."),
                table.id.schema,
                table.id.name
            ),
        }
    }

    fn part(&self, part: &str) -> String {
        format!("{}.{part}", self.prefix)
    }
}

fn key_schema(table: &TableSchema, names: &Names) -> Json {
    let fields: Vec<Json> = table
        .key
        .iter()
        .filter_map(|&i| table.columns.get(i))
        .map(column_schema)
        .collect();
    json!({"type": "struct", "fields": fields, "optional": false, "name": names.part("Key")})
}

fn envelope_schema(table: &TableSchema, names: &Names, connector: &str) -> Json {
    let columns: Vec<Json> = table.columns.iter().map(column_schema).collect();
    let row = |field: &str| {
        json!({"type": "struct", "fields": columns, "optional": true,
               "name": names.part("Value"), "field": field})
    };
    json!({
        "type": "struct",
        "fields": [
            row("before"),
            row("after"),
            source_schema(connector),
            {"type": "string", "optional": false, "field": "op"},
            {"type": "int64", "optional": true, "field": "ts_ms"},
            {"type": "struct", "optional": true, "name": "event.block", "version": 1, "field": "transaction",
             "fields": [
                {"type": "string", "optional": false, "field": "id"},
                {"type": "int64", "optional": false, "field": "total_order"},
                {"type": "int64", "optional": false, "field": "data_collection_order"}]},
        ],
        "optional": false,
        "name": names.part("Envelope"),
        "version": 1,
    })
}

/// The `source` block's schema for Debezium connector `connector` (`postgresql`, `mysql`,
/// `mariadb`).
fn source_schema(connector: &str) -> Json {
    let postgres = connector == "postgresql";
    let field = |kind: &str, name: &str, optional: bool| json!({"type": kind, "optional": optional, "field": name});
    let mut fields = vec![
        field("string", "version", false),
        field("string", "connector", false),
        field("string", "name", false),
        field("string", "db", false),
        field("string", "schema", false),
        field("string", "table", false),
    ];
    if postgres {
        fields.push(field("int64", "lsn", true));
    } else {
        fields.extend([
            field("string", "gtid", true),
            field("string", "file", true),
            field("int64", "pos", true),
            field("int32", "row", true),
        ]);
    }
    fields.extend([
        field("string", "event_id", false),
        field("int64", "ts_ms", false),
        json!({"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
               "parameters": {"allowed": "true,last,false"}, "default": "false", "field": "snapshot"}),
        field("int64", "txId", true),
    ]);
    json!({"type": "struct", "fields": fields, "optional": false,
           "name": format!("io.debezium.connector.{connector}.Source"), "field": "source"})
}

fn transaction_schema() -> Json {
    json!({
        "type": "struct",
        "optional": false,
        "name": "io.debezium.connector.common.TransactionMetadataValue",
        "version": 1,
        "fields": [
            {"type": "string", "optional": false, "field": "status"},
            {"type": "string", "optional": false, "field": "id"},
            {"type": "int64", "optional": true, "field": "ts_ms"},
            {"type": "int64", "optional": true, "field": "event_count"},
            {"type": "array", "optional": true, "field": "data_collections",
             "items": {"type": "struct", "optional": false, "fields": [
                {"type": "string", "optional": false, "field": "data_collection"},
                {"type": "int64", "optional": false, "field": "event_count"}]}},
        ],
    })
}

fn column_schema(column: &ColumnSchema) -> Json {
    let mut schema = type_schema(&column.logical);
    let object = schema.as_object_mut().expect("type schemas are objects");
    object.insert("optional".into(), Json::Bool(column.nullable));
    object.insert("field".into(), Json::String(column.name.clone()));
    schema
}

/// The Connect schema of one logical type's values, as [`crate::value`] encodes them.
fn type_schema(logical: &LogicalType) -> Json {
    let named = |kind: &str, name: &str| json!({"type": kind, "name": name, "version": 1});
    match logical {
        LogicalType::Bool => json!({"type": "boolean"}),
        LogicalType::Int { bits: 16 } => json!({"type": "int16"}),
        LogicalType::Int { bits: 32 } => json!({"type": "int32"}),
        LogicalType::Int { .. } => json!({"type": "int64"}),
        LogicalType::Float { bits: 32 } => json!({"type": "float"}),
        LogicalType::Float { .. } => json!({"type": "double"}),
        LogicalType::Decimal { .. } | LogicalType::Text | LogicalType::Other { .. } => {
            json!({"type": "string"})
        }
        LogicalType::Enum => named("string", "io.debezium.data.Enum"),
        LogicalType::Bytes => json!({"type": "bytes"}),
        LogicalType::Date => named("int32", "io.debezium.time.Date"),
        LogicalType::Time { tz: false } => named("int64", "io.debezium.time.MicroTime"),
        LogicalType::Time { tz: true } => named("string", "io.debezium.time.ZonedTime"),
        LogicalType::Timestamp { tz: false } => named("int64", "io.debezium.time.MicroTimestamp"),
        LogicalType::Timestamp { tz: true } => named("string", "io.debezium.time.ZonedTimestamp"),
        LogicalType::Interval => named("int64", "io.debezium.time.MicroDuration"),
        LogicalType::Json => named("string", "io.debezium.data.Json"),
        LogicalType::Uuid => named("string", "io.debezium.data.Uuid"),
        LogicalType::Array(element) => {
            let mut items = type_schema(element);
            if let Some(object) = items.as_object_mut() {
                object.insert("optional".into(), Json::Bool(true));
            }
            json!({"type": "array", "items": items})
        }
    }
}

/// The field `name` of a struct schema.
pub fn field<'a>(schema: &'a Json, name: &str) -> Option<&'a Json> {
    schema["fields"]
        .as_array()?
        .iter()
        .find(|f| f["field"] == name)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_core::{Dialect, Lsn, Position, ReplicaIdentity, RowChange, TableId, TxMeta, Value};

    use super::*;
    use crate::TransactionEvents;

    #[test]
    fn changes_and_keys_carry_their_schemas() {
        let column = |name: &str, logical: LogicalType, nullable: bool| ColumnSchema {
            name: name.into(),
            type_name: String::new(),
            type_oid: 0,
            logical,
            nullable,
            missing_value: None,
            has_default: false,
        };
        let table = Arc::new(TableSchema {
            id: TableId::new("public", "items"),
            columns: vec![
                column("id", LogicalType::Int { bits: 64 }, false),
                column("at", LogicalType::Timestamp { tz: true }, true),
                column(
                    "tags",
                    LogicalType::Array(Box::new(LogicalType::Int { bits: 32 })),
                    true,
                ),
            ],
            key: vec![0],
            identity: ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: vec![],
            dialect: Dialect::Postgres,
        });
        let origin = Origin {
            name: "default/orders".into(),
            db: "shop".into(),
        };
        let mut tx = TransactionEvents::new(TxMeta {
            commit: Position::PgLsn(Lsn(0x20)),
            commit_time_us: 0,
            source_tx_id: 9,
        });
        let change = RowChange::Insert {
            table: table.clone(),
            new: vec![
                Value::Text("5".into()),
                Value::Null,
                Value::Text("{1,2}".into()),
            ],
        };
        let mut cache = SchemaCache::default();
        let mut event = tx.events(&origin, &change, 0).unwrap().remove(0);
        let bare = event.value();
        cache.attach(&mut event, &table, &origin);
        let json = event.value();
        assert_eq!(json["payload"], bare);
        assert_eq!(json["payload"]["after"]["id"], 5);
        assert_eq!(
            json["schema"]["name"],
            "default.orders.public.items.Envelope"
        );
        let after = field(&json["schema"], "after").unwrap();
        let at = field(after, "at").unwrap();
        assert_eq!(at["name"], "io.debezium.time.ZonedTimestamp");
        assert_eq!(at["optional"], true);
        let key = event.key_value();
        assert_eq!(key["payload"], json!({"id": 5}));
        assert_eq!(key["schema"]["fields"][0]["type"], "int64");
        let mut end = tx.end_event();
        cache.attach(&mut end, &table, &origin);
        let end = end.value();
        assert_eq!(end["payload"]["status"], "END");
        assert_eq!(
            end["schema"]["name"],
            "io.debezium.connector.common.TransactionMetadataValue"
        );

        // A column added: the next event's schema has it.
        let mut wider = (*table).clone();
        wider.columns.push(column("note", LogicalType::Text, true));
        let mut row = vec![Value::Text("6".into()), Value::Null, Value::Null];
        row.push(Value::Text("hi".into()));
        let change = RowChange::Insert {
            table: Arc::new(wider.clone()),
            new: row,
        };
        let mut event = tx.events(&origin, &change, 0).unwrap().remove(0);
        cache.attach(&mut event, &wider, &origin);
        let json = event.value();
        assert_eq!(json["payload"]["after"]["note"], "hi");
        assert!(field(field(&json["schema"], "after").unwrap(), "note").is_some());
    }
}
