//! Shaping a target table before Ferry writes it: claim it, then create it (and its
//! database), or check the table found at its first claim, or follow the source's column
//! changes on a table the changefeed owns ([`super::reshape`]); and following a table
//! renamed on the source.
//!
//! Everything here is DDL or bookkeeping that must not join a batch's transaction
//! (MariaDB commits DDL implicitly): it runs on the sink's side connection, each step
//! safe to repeat after a crash.

use std::sync::Arc;

use ferry_core::{DdlPolicy, ExistingTarget, SinkError, TableId, TableSchema};
use mysql_async::prelude::Queryable;

use super::ownership::{self, Claim, Existing};
use super::reshape;
use super::statements::Target;
use super::types::{create_table_sql, quote, quote_table, write_string};
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
        if self.renames.values().any(|to| *to == schema.id) {
            return Err(SinkError::Unsupported {
                message: format!(
                    "table {} changed shape on the source right after a rename, in the same \
                     batch; MariaDB cannot follow both inside one transaction",
                    schema.id
                ),
            });
        }
        // Statements of the changes made at the shape before are made with it.
        if self.segment.contains_key(&schema.id) {
            self.segment_to_queue()?;
        }
        let create = create_table_sql(schema)?;
        let id = &schema.id;
        let (changefeed, server_id) = (self.changefeed.clone(), self.policy.server_id.clone());
        let existing_target = self.policy.existing_target;
        let ddl = self.policy.ddl;
        let known = self.tables.get(id).map(|t| t.schema.clone());
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
                let all: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
                ownership::record_columns(conn, id, &all).await?;
                conn.query_drop(create)
                    .await
                    .map_err(|e| sink_error(format!("create target table {id}"), e))?;
                ownership::adopt(conn, id, false).await?;
                tracing::info!(table = %id, changefeed = %changefeed, "target table created");
            }
            Some(found) if claim == Claim::Adopted => {
                follow(conn, schema, &found, known.as_deref(), ddl).await?;
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

    /// Follows a table renamed on the source. Outside a batch the target table is renamed
    /// at once. Inside one it cannot be (MariaDB's RENAME commits the open transaction):
    /// the batch goes on writing the table under its old name, records the rename in
    /// `_ferry.pending_renames` in its transaction, and renames it once committed
    /// ([`MySqlSink::finish_renames`]); a crash in between finishes it on the next start,
    /// so the intent commits exactly with the changes made under the new name.
    pub(super) async fn rename(
        &mut self,
        from: &TableId,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        let to = &schema.id;
        if !self.in_batch {
            let changefeed = self.changefeed.clone();
            rename_now(self.side().await?, &changefeed, from, to).await?;
            self.tables.remove(from);
            return self.shape_table(schema).await;
        }
        // The table's name on the target now: the original of a rename already pending.
        let physical = self
            .renames
            .iter()
            .find(|(_, pending_to)| *pending_to == from)
            .map_or_else(|| from.clone(), |(physical, _)| physical.clone());
        // Statements already made name the table as it is now.
        self.segment_to_queue()?;
        let mut record = b"DELETE FROM `_ferry`.`pending_renames` WHERE changefeed = ".to_vec();
        write_string(&mut record, self.changefeed.as_bytes());
        record.extend_from_slice(b" AND from_schema = ");
        write_string(&mut record, physical.schema.as_bytes());
        record.extend_from_slice(b" AND from_name = ");
        write_string(&mut record, physical.name.as_bytes());
        record.extend_from_slice(b";INSERT INTO `_ferry`.`pending_renames` VALUES (");
        for (n, part) in [
            &self.changefeed,
            &physical.schema,
            &physical.name,
            &to.schema,
            &to.name,
        ]
        .into_iter()
        .enumerate()
        {
            if n > 0 {
                record.push(b',');
            }
            write_string(&mut record, part.as_bytes());
        }
        record.push(b')');
        // The copy markers name the table as the engine does: the new name, at once.
        record.extend_from_slice(b";UPDATE `_ferry`.`snapshot_chunks` SET table_schema = ");
        write_string(&mut record, to.schema.as_bytes());
        record.extend_from_slice(b", table_name = ");
        write_string(&mut record, to.name.as_bytes());
        record.extend_from_slice(b" WHERE changefeed = ");
        write_string(&mut record, self.changefeed.as_bytes());
        record.extend_from_slice(b" AND table_schema = ");
        write_string(&mut record, from.schema.as_bytes());
        record.extend_from_slice(b" AND table_name = ");
        write_string(&mut record, from.name.as_bytes());
        self.queue(super::apply::Work::Sql(record)).await?;
        self.tables.remove(from);
        self.tables
            .insert(to.clone(), Target::stored_as(schema.clone(), &physical));
        self.touched.insert(to.clone());
        self.renames.insert(physical, to.clone());
        tracing::info!(from = %from, to = %to, "target table to be renamed when the batch commits");
        Ok(())
    }

    /// Renames the tables the committed batch renamed (and any a crash left pending).
    pub(super) async fn finish_renames(&mut self) -> Result<(), SinkError> {
        let changefeed = self.changefeed.clone();
        let conn = self.side().await?;
        let pending: Vec<(String, String, String, String)> = conn
            .exec(
                "SELECT from_schema, from_name, to_schema, to_name FROM `_ferry`.`pending_renames`
                 WHERE changefeed = ?",
                (&changefeed,),
            )
            .await
            .map_err(|e| sink_error("read the pending renames", e))?;
        for (from_schema, from_name, to_schema, to_name) in pending {
            let (from, to) = (
                TableId::new(from_schema, from_name),
                TableId::new(to_schema, to_name),
            );
            rename_now(conn, &changefeed, &from, &to).await?;
            conn.exec_drop(
                "DELETE FROM `_ferry`.`pending_renames`
                 WHERE changefeed = ? AND from_schema = ? AND from_name = ?",
                (&changefeed, &from.schema, &from.name),
            )
            .await
            .map_err(|e| sink_error("forget a finished rename", e))?;
        }
        for (_, to) in std::mem::take(&mut self.renames) {
            if let Some(target) = self.tables.remove(&to) {
                self.tables.insert(to, Target::new(target.schema));
            }
        }
        Ok(())
    }
}

/// Brings an owned table's columns in line with `schema` ([`reshape::plan`]): one
/// autocommitted `ALTER TABLE`, its added columns recorded as Ferry's before it and its
/// dropped ones forgotten after it, so a crash anywhere leaves what the next attempt
/// finishes. Under `options.ddl: stop` nothing changes: the changefeed stops with what
/// would.
async fn follow(
    conn: &mut mysql_async::Conn,
    schema: &TableSchema,
    found: &Existing,
    known: Option<&TableSchema>,
    ddl: DdlPolicy,
) -> Result<(), SinkError> {
    let id = &schema.id;
    let created = ownership::created_columns(conn, id).await?;
    if let Some(why) = ownership::unfilled(schema, &found.columns, &created) {
        return Err(SinkError::Unsupported { message: why });
    }
    let plan = reshape::plan(schema, &found.columns, &created, known)?;
    if plan.is_empty() {
        return Ok(());
    }
    let alter = format!(
        "ALTER TABLE {} {}",
        quote_table(id),
        plan.clauses.join(", ")
    );
    if ddl == DdlPolicy::Stop {
        return Err(SinkError::Unsupported {
            message: format!(
                "table {id} changed on the source and options.ddl is stop, so Ferry changes \
                 nothing on the target; make the target match ({alter}), or set options.ddl \
                 to apply, then resume"
            ),
        });
    }
    if !plan.unknown_fill.is_empty() && ownership::has_rows(conn, id).await? {
        return Err(SinkError::Unsupported {
            message: format!(
                "column(s) {} of {id} were added on the source with a default, and the source \
                 does not tell the value its existing rows got (no row event carries it), so \
                 Ferry stops instead of writing NULLs into the target's existing rows. Add the \
                 column(s) on the target with the same default yourself, then resume; or \
                 re-copy the table (`ferry changefeed table resync`)",
                plan.unknown_fill.join(", ")
            ),
        });
    }
    ownership::record_columns(conn, id, &plan.added).await?;
    conn.query_drop(&alter)
        .await
        .map_err(|e| sink_error(format!("change target table {id} as the source did"), e))?;
    ownership::forget_columns(conn, id, &plan.dropped).await?;
    tracing::info!(table = %id, statement = %alter, "target table follows the source's columns");
    Ok(())
}

/// Renames target table `from` to `to` (creating `to`'s database) unless that was done
/// already, and moves the changefeed's claim (and the record of its columns) with it.
async fn rename_now(
    conn: &mut mysql_async::Conn,
    changefeed: &str,
    from: &TableId,
    to: &TableId,
) -> Result<(), SinkError> {
    if ownership::existing(conn, from).await?.is_some()
        && ownership::existing(conn, to).await?.is_none()
    {
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
        (&to.schema, &to.name, &from.schema, &from.name, changefeed),
    )
    .await
    .map_err(|e| sink_error(format!("move the claim on {from} to {to}"), e))?;
    conn.exec_drop(
        "UPDATE `_ferry`.`snapshot_chunks` SET table_schema = ?, table_name = ?
         WHERE changefeed = ? AND table_schema = ? AND table_name = ?",
        (&to.schema, &to.name, changefeed, &from.schema, &from.name),
    )
    .await
    .map_err(|e| sink_error(format!("move the copy markers of {from} to {to}"), e))?;
    conn.exec_drop(
        "UPDATE IGNORE `_ferry`.`created_columns` SET table_schema = ?, table_name = ?
         WHERE table_schema = ? AND table_name = ?",
        (&to.schema, &to.name, &from.schema, &from.name),
    )
    .await
    .map_err(|e| {
        sink_error(
            format!("move the columns Ferry created in {from} to {to}"),
            e,
        )
    })?;
    Ok(())
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
