//! A relation's shape as of a change: the Relation message's columns, completed from the
//! catalog (or, for a table dropped since, from what the session knew).

use ferry_core::{ReplicaIdentity, TableId, TableSchema};

use super::PgStream;
use crate::catalog;
use crate::decode::RelationMessage;
use crate::PgError;

impl PgStream {
    /// The relation's shape: its name and columns as pgoutput lists them (as of the
    /// change's position: a table renamed since keeps its name until the rename), completed
    /// from the catalog (types, nullability, key, user types). `true` when the table is gone from the
    /// catalog (dropped after these changes): its shape then comes from the message and what
    /// this session knew of it.
    pub(super) async fn describe(
        &self,
        relation: &RelationMessage,
    ) -> Result<(TableSchema, bool), PgError> {
        let (mut schema, dropped) = match catalog::table_schema(&self.catalog, relation.id).await? {
            Some(schema) => (schema, false),
            None => (self.dropped_table_schema(relation), true),
        };
        schema.id = TableId::new(relation.namespace.clone(), relation.name.clone());
        let key_names: Vec<String> = schema
            .key
            .iter()
            .map(|&i| schema.columns[i].name.clone())
            .collect();
        let mut columns = Vec::with_capacity(relation.columns.len());
        for col in &relation.columns {
            match schema
                .columns
                .iter()
                .find(|c| c.name == col.name && c.type_oid == col.type_oid)
            {
                Some(c) => columns.push(c.clone()),
                None => {
                    // The catalog moved on since this change: describe it from the message.
                    let row = self
                        .catalog
                        .query_one(
                            "SELECT pg_catalog.format_type($1, $2), $1 >= 16384",
                            &[&col.type_oid, &col.type_modifier],
                        )
                        .await
                        .map_err(|e| PgError::new("describe a column type", e))?;
                    let user: bool = row.get(1);
                    let type_name: String = row.get(0);
                    // A dropped table's user-typed columns exist on the target with that
                    // type already (created with the table): keep its name if it resolves.
                    let keep_user_type = dropped && type_name != "???";
                    let logical =
                        crate::types::describe(&self.catalog, col.type_oid, col.type_modifier)
                            .await?;
                    columns.push(ferry_core::ColumnSchema {
                        name: col.name.clone(),
                        type_name: if user && !keep_user_type {
                            "text".into()
                        } else {
                            type_name
                        },
                        type_oid: col.type_oid,
                        logical,
                        nullable: true,
                        missing_value: None,
                        has_default: false,
                    });
                }
            }
        }
        schema.key = key_names
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        schema.columns = columns;
        Ok((schema, dropped))
    }

    /// What is known of a relation the catalog no longer has: the shape this session last
    /// saw, else the message's (name, key columns for a primary-key or index identity).
    /// Columns the shape lacks are described from the message by the caller.
    fn dropped_table_schema(&self, relation: &RelationMessage) -> TableSchema {
        if let Some(known) = self.relations.get(&relation.id) {
            return known.as_ref().clone();
        }
        let identity = match relation.replica_identity {
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            b'n' => ReplicaIdentity::Nothing,
            _ => ReplicaIdentity::Default,
        };
        // With FULL every column is flagged, which says nothing about the key.
        let key_columns: Vec<ferry_core::ColumnSchema> = relation
            .columns
            .iter()
            .filter(|c| c.is_key && identity != ReplicaIdentity::Full)
            .map(|c| ferry_core::ColumnSchema {
                name: c.name.clone(),
                type_name: String::new(),
                type_oid: u32::MAX,
                logical: ferry_core::LogicalType::default(),
                nullable: true,
                missing_value: None,
                has_default: false,
            })
            .collect();
        TableSchema {
            id: TableId::new(relation.namespace.clone(), relation.name.clone()),
            key: (0..key_columns.len()).collect(),
            // Placeholders that only carry the key's names: no message column matches their
            // type, so each is described from the message.
            columns: key_columns,
            identity,
            user_types: Vec::new(),
            partition_of: Vec::new(),
            dialect: ferry_core::Dialect::Postgres,
        }
    }
}
