//! Shaping a target table before Ferry writes it: claim it, then create it (and its
//! database), or check the table found; and following a table renamed on the source.
//!
//! Everything here is DDL or bookkeeping that must not join a batch's transaction
//! (MariaDB commits DDL implicitly): it runs on the sink's side connection, each step
//! safe to repeat after a crash.

use std::sync::Arc;

use ferry_core::{ExistingTarget, SinkError, TableId, TableSchema};
use mysql_async::prelude::Queryable;

use super::ownership::{self, Claim};
use super::statements::Target;
use super::types::{create_table_sql, quote, quote_table};
use super::MySqlSink;
use crate::connect::sink_error;

impl MySqlSink {
    pub(super) async fn shape_table(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        if let Some(t) = self.tables.get_mut(&schema.id) {
            if t.schema.columns == schema.columns && t.schema.key == schema.key {
                t.schema = schema.clone();
                return Ok(());
            }
        }
        let create = create_table_sql(schema)?;
        let id = &schema.id;
        let (changefeed, server_id) = (self.changefeed.clone(), self.policy.server_id.clone());
        let existing_target = self.policy.existing_target;
        let conn = self.side().await?;
        let claim = ownership::claim(conn, &changefeed, &server_id, id).await?;
        match ownership::existing(conn, id).await? {
            None => {
                conn.query_drop(format!(
                    "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin",
                    quote(&id.schema)
                ))
                .await
                .map_err(|e| sink_error(format!("create database {}", id.schema), e))?;
                conn.query_drop(create)
                    .await
                    .map_err(|e| sink_error(format!("create target table {id}"), e))?;
                ownership::adopt(conn, id, false).await?;
                tracing::info!(table = %id, changefeed = %changefeed, "target table created");
            }
            Some(found) => {
                if let Some(why) = ownership::conflict(schema, &found) {
                    if claim == Claim::Unchecked {
                        ownership::unclaim(conn, &changefeed, id).await?;
                    }
                    return Err(SinkError::Unsupported { message: why });
                }
                if claim == Claim::Unchecked {
                    let kept = adopt(conn, id, existing_target).await;
                    if kept.is_err() {
                        ownership::unclaim(conn, &changefeed, id).await?;
                    }
                    ownership::adopt(conn, id, kept?).await?;
                }
            }
        }
        self.tables.insert(id.clone(), Target::new(schema.clone()));
        Ok(())
    }

    /// Follows a table renamed on the source: renames the target table (unless a replay
    /// finds it renamed already) and moves its claim.
    pub(super) async fn rename(
        &mut self,
        from: &TableId,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        let to = &schema.id;
        if self.written.contains(from) {
            return Err(SinkError::Unsupported {
                message: format!(
                    "table {from} was renamed to {to} on the source after changes to it in the \
                     same batch; MariaDB cannot rename a table inside the batch's transaction"
                ),
            });
        }
        let changefeed = self.changefeed.clone();
        let conn = self.side().await?;
        let had_from = ownership::existing(conn, from).await?.is_some();
        if had_from && ownership::existing(conn, to).await?.is_none() {
            conn.query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin",
                quote(&to.schema)
            ))
            .await
            .map_err(|e| sink_error(format!("create database {}", to.schema), e))?;
            conn.query_drop(format!(
                "RENAME TABLE {} TO {}",
                quote_table(from),
                quote_table(to)
            ))
            .await
            .map_err(|e| sink_error(format!("rename target table {from} to {to}"), e))?;
            tracing::info!(from = %from, to = %to, "target table renamed");
        }
        conn.exec_drop(
            "UPDATE `_ferry`.`table_owners` SET table_schema = ?, table_name = ?
             WHERE table_schema = ? AND table_name = ? AND changefeed = ?",
            (&to.schema, &to.name, &from.schema, &from.name, &changefeed),
        )
        .await
        .map_err(|e| sink_error(format!("move the claim on {from} to {to}"), e))?;
        self.tables.remove(from);
        self.shape_table(schema).await
    }
}

/// Applies `existing_target` to a table found on the target at its first claim; returns
/// whether its rows are kept (`append`).
async fn adopt(
    conn: &mut mysql_async::Conn,
    id: &TableId,
    existing_target: ExistingTarget,
) -> Result<bool, SinkError> {
    if !ownership::has_rows(conn, id).await? {
        tracing::info!(table = %id, "existing empty target table adopted");
        return Ok(false);
    }
    match existing_target {
        ExistingTarget::Fail => Err(ownership::not_empty(id)),
        ExistingTarget::Truncate => {
            conn.query_drop(format!("TRUNCATE TABLE {}", quote_table(id)))
                .await
                .map_err(|e| sink_error(format!("truncate target table {id}"), e))?;
            tracing::info!(table = %id, "existing target table emptied (existing_target: truncate)");
            Ok(false)
        }
        ExistingTarget::Append => {
            tracing::info!(table = %id, "existing target rows kept (existing_target: append)");
            Ok(true)
        }
    }
}
