//! Following a table renamed on the source: the target table is renamed (and moved to
//! another schema when the source moved it) inside the open batch's transaction, at the
//! rename's position in the stream, and Ferry's bookkeeping of it (owner, created columns,
//! copy markers) moves with it in the same transaction.
//!
//! Idempotent: after a crash between the target's commit and the engine recording the
//! rename, the stream announces it again; the target then has the new name already.

use std::sync::Arc;

use ferry_core::{quote_ident, SinkError, TableId, TableSchema};
use tokio_postgres::Client;

use super::{statement_error, PgSink};

impl PgSink {
    /// Renames target table `from` to `schema.id` in the open batch (opening one), then
    /// follows the table's shape. A definite error when the target cannot follow: another
    /// table holds the new name, or another changefeed writes the old one.
    pub async fn rename_table(
        &mut self,
        from: &TableId,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        let to = &schema.id;
        self.flush().await?;
        self.begin_if_needed();
        let conflict = |problem: String| SinkError::Unsupported {
            message: format!(
                "table {from} was renamed to {to} on the source, but {problem}; Ferry stops \
                 rather than write either table"
            ),
        };
        let from_exists = exists(&self.client, from).await?;
        let to_exists = exists(&self.client, to).await?;
        let from_owner = owner(&self.client, from).await?;
        let to_owner = owner(&self.client, to).await?;
        let ours = |o: &Option<String>| o.as_deref() == Some(self.changefeed.as_str());
        match (from_exists, to_exists) {
            (true, false) if self.policy.ddl == ferry_core::DdlPolicy::Stop => {
                return Err(super::shape::ddl_stop(from, &[rename_sql(from, to)]));
            }
            (true, false) => {
                if from_owner.is_some() && !ours(&from_owner) {
                    return Err(conflict(format!(
                        "target table {from} is written by changefeed {}",
                        from_owner.unwrap_or_default()
                    )));
                }
                if let Some(other) = to_owner.filter(|o| o != &self.changefeed) {
                    return Err(conflict(format!(
                        "changefeed {other} has claimed target table {to}"
                    )));
                }
                let sql = rename_sql(from, to);
                self.client.batch_execute(&sql).await.map_err(|e| {
                    statement_error(format!("rename target table {from} to {to}"), e)
                })?;
                move_bookkeeping(&self.client, &self.changefeed, from, to).await?;
                tracing::info!(from = %from, to = %to, changefeed = %self.changefeed, "target table renamed as on the source");
            }
            // Renamed already (the stream announced it again after a restart).
            (false, true) if ours(&to_owner) => {}
            (true, true) => {
                return Err(conflict(format!(
                    "the target already has a table {to}; rename or drop it on the target, \
                     then resume the changefeed"
                )))
            }
            (false, true) => {
                return Err(conflict(format!(
                    "the target has a table {to} that this changefeed did not create, and no \
                     table {from}; rename or drop it on the target, then resume the changefeed"
                )))
            }
            // Never created on the target: shaping creates it under its new name.
            (false, false) => {}
        }
        self.tables.remove(from);
        self.shape_table(schema, true).await
    }
}

/// The statements that move `from` to `to` (schema first, then name).
fn rename_sql(from: &TableId, to: &TableId) -> String {
    let mut sql = String::new();
    let mut at = from.clone();
    if from.schema != to.schema {
        sql.push_str(&format!(
            "CREATE SCHEMA IF NOT EXISTS {};\nALTER TABLE {} SET SCHEMA {};\n",
            quote_ident(&to.schema),
            at.quoted(),
            quote_ident(&to.schema)
        ));
        at.schema = to.schema.clone();
    }
    if from.name != to.name {
        sql.push_str(&format!(
            "ALTER TABLE {} RENAME TO {};",
            at.quoted(),
            quote_ident(&to.name)
        ));
    }
    sql
}

async fn exists(client: &Client, table: &TableId) -> Result<bool, SinkError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2)",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| statement_error(format!("look up target table {table}"), e))?;
    Ok(row.get(0))
}

async fn owner(client: &Client, table: &TableId) -> Result<Option<String>, SinkError> {
    let row = client
        .query_opt(
            "SELECT changefeed FROM _ferry.table_owners WHERE table_schema = $1 AND table_name = $2",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| statement_error(format!("look up the owner of {table}"), e))?;
    Ok(row.map(|r| r.get(0)))
}

/// Moves the owner, created columns and this changefeed's copy markers of `from` to `to`.
async fn move_bookkeeping(
    client: &Client,
    changefeed: &str,
    from: &TableId,
    to: &TableId,
) -> Result<(), SinkError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&from.schema, &from.name, &to.schema, &to.name];
    for sql in [
        "UPDATE _ferry.table_owners SET table_schema = $3, table_name = $4
         WHERE table_schema = $1 AND table_name = $2",
        "UPDATE _ferry.created_columns SET table_schema = $3, table_name = $4
         WHERE table_schema = $1 AND table_name = $2",
    ] {
        client
            .execute(sql, &params)
            .await
            .map_err(|e| statement_error(format!("record the rename of {from} to {to}"), e))?;
    }
    client
        .execute(
            "UPDATE _ferry.snapshot_chunks SET table_schema = $4, table_name = $5
             WHERE changefeed = $1 AND table_schema = $2 AND table_name = $3",
            &[&changefeed, &from.schema, &from.name, &to.schema, &to.name],
        )
        .await
        .map_err(|e| statement_error(format!("record the rename of {from} to {to}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_within_and_across_schemas() {
        let a = TableId::new("public", "a");
        assert_eq!(
            rename_sql(&a, &TableId::new("public", "b")),
            "ALTER TABLE \"public\".\"a\" RENAME TO \"b\";"
        );
        let sql = rename_sql(&a, &TableId::new("arch", "b"));
        assert!(
            sql.contains("ALTER TABLE \"public\".\"a\" SET SCHEMA \"arch\";"),
            "{sql}"
        );
        assert!(
            sql.ends_with("ALTER TABLE \"arch\".\"a\" RENAME TO \"b\";"),
            "{sql}"
        );
    }
}
