//! Ferry's bookkeeping in the target, and one writer per target table.
//!
//! Database `_ferry` (a name no user table shares by accident) holds:
//! - `checkpoints`: each changefeed's position, written in the batch's transaction;
//! - `snapshot_chunks`: the chunks copied, each written in its chunk's transaction;
//! - `table_owners`: the changefeed (its `namespace/id` and Ferry server id) that writes
//!   each target table, whether it kept rows from before it (`append_rows`), and whether
//!   the table was checked (`adopted`);
//! - `pending_renames`: target tables to rename once their batch committed (see
//!   [`super::shape`]);
//! - `created_columns`: the columns Ferry created (with their table, or added later): only
//!   those are ever dropped or retyped ([`super::reshape`]).
//!
//! MariaDB commits DDL implicitly, so claiming a table is a sequence of autocommitted
//! steps that each can be repeated after a crash: the claim (`INSERT IGNORE`: of two
//! changefeeds racing for a table exactly one wins), then creating the table or applying
//! the changefeed's [`ExistingTarget`] choice to the table found, then `adopted = 1`. A
//! claim not yet adopted is checked again. [`preflight`] runs the checks read-only.

use ferry_core::{ExistingTarget, SinkError, TableId, TableSchema, TargetProblem};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::connect::sink_error;

use super::types::{quote, quote_table};

/// Ferry's bookkeeping database and tables (idempotent).
pub(super) const BOOKKEEPING: [&str; 6] = [
    "CREATE DATABASE IF NOT EXISTS `_ferry` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`checkpoints` (
        changefeed VARCHAR(255) NOT NULL PRIMARY KEY,
        position LONGTEXT NOT NULL,
        updated_at DATETIME(6) NOT NULL
     ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`snapshot_chunks` (
        changefeed VARCHAR(255) NOT NULL,
        table_schema VARCHAR(64) NOT NULL,
        table_name VARCHAR(64) NOT NULL,
        chunk INT NOT NULL,
        `rows` BIGINT NOT NULL,
        snapshot LONGTEXT NOT NULL,
        PRIMARY KEY (changefeed, table_schema, table_name, chunk)
     ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`table_owners` (
        table_schema VARCHAR(64) NOT NULL,
        table_name VARCHAR(64) NOT NULL,
        changefeed VARCHAR(255) NOT NULL,
        server_id VARCHAR(255) NOT NULL,
        adopted BOOLEAN NOT NULL DEFAULT 0,
        append_rows BOOLEAN NOT NULL DEFAULT 0,
        PRIMARY KEY (table_schema, table_name)
     ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`pending_renames` (
        changefeed VARCHAR(255) NOT NULL,
        from_schema VARCHAR(64) NOT NULL,
        from_name VARCHAR(64) NOT NULL,
        to_schema VARCHAR(64) NOT NULL,
        to_name VARCHAR(64) NOT NULL,
        PRIMARY KEY (changefeed, from_schema, from_name)
     ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`created_columns` (
        table_schema VARCHAR(64) NOT NULL,
        table_name VARCHAR(64) NOT NULL,
        column_name VARCHAR(64) NOT NULL,
        PRIMARY KEY (table_schema, table_name, column_name)
     ) ENGINE=InnoDB",
];

/// The message when `table` is owned by another changefeed.
fn owned_message(table: &TableId, changefeed: &str, server_id: &str) -> String {
    format!(
        "target table {table} is written by changefeed {changefeed} (Ferry server {server_id}): \
         one writer per table. Delete that changefeed first (which releases its tables), or \
         choose other tables or another target"
    )
}

/// The message when `table` holds rows under `existing_target: fail`.
fn not_empty_message(table: &TableId) -> String {
    format!(
        "target table {table} already holds rows and options.existing_target is fail; set it \
         to truncate (empty the table before the copy) or append (keep its rows, upsert by \
         key), or choose another target"
    )
}

/// A target table's owner row: `(changefeed, server_id, adopted)`.
async fn owner(
    conn: &mut Conn,
    table: &TableId,
) -> Result<Option<(String, String, bool)>, SinkError> {
    conn.exec_first(
        "SELECT changefeed, server_id, adopted FROM `_ferry`.`table_owners`
         WHERE table_schema = ? AND table_name = ?",
        (&table.schema, &table.name),
    )
    .await
    .map_err(|e| sink_error(format!("look up the owner of {table}"), e))
}

/// A column of a target table.
#[derive(Clone, Debug)]
pub(super) struct FoundColumn {
    pub(super) name: String,
    pub(super) nullable: bool,
    /// A default or `AUTO_INCREMENT`: an insert need not name it.
    pub(super) has_default: bool,
    /// As `information_schema.COLUMNS.COLUMN_TYPE` shows it.
    pub(super) column_type: String,
}

/// What a target table is, as far as claiming goes.
pub(super) struct Existing {
    /// Its columns, in order.
    pub(super) columns: Vec<FoundColumn>,
    /// Its storage engine.
    pub(super) engine: String,
}

/// The target table `table`, if it exists.
pub(super) async fn existing(
    conn: &mut Conn,
    table: &TableId,
) -> Result<Option<Existing>, SinkError> {
    let engine: Option<Option<String>> = conn
        .exec_first(
            "SELECT engine FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            (&table.schema, &table.name),
        )
        .await
        .map_err(|e| sink_error(format!("look for target table {table}"), e))?;
    let Some(engine) = engine else {
        return Ok(None);
    };
    let columns: Vec<(String, String, Option<String>, String, String)> = conn
        .exec(
            "SELECT column_name, is_nullable, column_default, extra, column_type
             FROM information_schema.columns
             WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            (&table.schema, &table.name),
        )
        .await
        .map_err(|e| sink_error(format!("read the columns of {table}"), e))?;
    Ok(Some(Existing {
        columns: columns
            .into_iter()
            .map(
                |(name, nullable, default, extra, column_type)| FoundColumn {
                    has_default: default.is_some() || extra.contains("auto_increment"),
                    nullable: nullable == "YES",
                    name,
                    column_type,
                },
            )
            .collect(),
        engine: engine.unwrap_or_default(),
    }))
}

/// Why the source's columns cannot be written into `found` as it is, if so: checked when
/// a changefeed first claims a table that exists (Ferry adds no column to it then).
pub(super) fn conflict(schema: &TableSchema, found: &Existing) -> Option<String> {
    let id = &schema.id;
    if !found.engine.eq_ignore_ascii_case("InnoDB") {
        return Some(format!(
            "target table {id} uses storage engine {}, which has no transactions: Ferry cannot \
             commit its rows together with its checkpoint. Convert it (ALTER TABLE … \
             ENGINE=InnoDB) or choose another target",
            found.engine
        ));
    }
    // MariaDB compares column names without case.
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let missing: Vec<&str> = schema
        .columns
        .iter()
        .filter(|c| !found.columns.iter().any(|f| same(&f.name, &c.name)))
        .map(|c| c.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "target table {id} lacks column(s) {} of the source; the MySQL sink does not add \
             columns to a table it did not write before: add them on the target (or drop the \
             table to have Ferry create it), then resume",
            missing.join(", ")
        ));
    }
    unfilled(schema, &found.columns, &std::collections::HashSet::new())
}

/// Why no row could be inserted into a table with `found` columns, if so: a NOT NULL
/// column without a default that the source does not have, and that Ferry did not
/// `created` (those it drops).
pub(super) fn unfilled(
    schema: &TableSchema,
    found: &[FoundColumn],
    created: &std::collections::HashSet<String>,
) -> Option<String> {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let unfilled: Vec<&str> = found
        .iter()
        .filter(|f| {
            !f.nullable
                && !f.has_default
                && !schema.columns.iter().any(|c| same(&f.name, &c.name))
                && !created.iter().any(|c| same(c, &f.name))
        })
        .map(|f| f.name.as_str())
        .collect();
    if !unfilled.is_empty() {
        return Some(format!(
            "target table {} has NOT NULL column(s) {} without a default that the source \
             does not have: Ferry could not insert a row. Give them a default or drop them",
            schema.id,
            unfilled.join(", ")
        ));
    }
    None
}

/// The columns of `table` Ferry created.
pub(super) async fn created_columns(
    conn: &mut Conn,
    table: &TableId,
) -> Result<std::collections::HashSet<String>, SinkError> {
    conn.exec(
        "SELECT column_name FROM `_ferry`.`created_columns` WHERE table_schema = ? AND table_name = ?",
        (&table.schema, &table.name),
    )
    .await
    .map_err(|e| sink_error(format!("read the columns Ferry created in {table}"), e))
    .map(|names: Vec<String>| names.into_iter().collect())
}

/// Records `columns` of `table` as Ferry's (before creating them: a crash in between
/// leaves a record of a column not there yet, which the next attempt creates).
pub(super) async fn record_columns(
    conn: &mut Conn,
    table: &TableId,
    columns: &[String],
) -> Result<(), SinkError> {
    for column in columns {
        conn.exec_drop(
            "INSERT IGNORE INTO `_ferry`.`created_columns` VALUES (?, ?, ?)",
            (&table.schema, &table.name, column),
        )
        .await
        .map_err(|e| sink_error(format!("record the columns Ferry creates in {table}"), e))?;
    }
    Ok(())
}

/// Forgets `columns` of `table` (dropped).
pub(super) async fn forget_columns(
    conn: &mut Conn,
    table: &TableId,
    columns: &[String],
) -> Result<(), SinkError> {
    for column in columns {
        conn.exec_drop(
            "DELETE FROM `_ferry`.`created_columns`
             WHERE table_schema = ? AND table_name = ? AND column_name = ?",
            (&table.schema, &table.name, column),
        )
        .await
        .map_err(|e| sink_error(format!("forget a column dropped from {table}"), e))?;
    }
    Ok(())
}

/// Whether `table` holds at least one row.
pub(super) async fn has_rows(conn: &mut Conn, table: &TableId) -> Result<bool, SinkError> {
    let row: Option<u8> = conn
        .query_first(format!("SELECT 1 FROM {} LIMIT 1", quote_table(table)))
        .await
        .map_err(|e| sink_error(format!("look for rows in {table}"), e))?;
    Ok(row.is_some())
}

/// What claiming a table found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Claim {
    /// The changefeed owns the table and has checked it.
    Adopted,
    /// The claim is new or not yet checked.
    Unchecked,
}

/// Claims `table` for `changefeed` on `server_id` (autocommitted); an error naming the
/// owner when another changefeed owns it.
pub(super) async fn claim(
    conn: &mut Conn,
    changefeed: &str,
    server_id: &str,
    table: &TableId,
) -> Result<Claim, SinkError> {
    conn.exec_drop(
        "INSERT IGNORE INTO `_ferry`.`table_owners` (table_schema, table_name, changefeed, server_id)
         VALUES (?, ?, ?, ?)",
        (&table.schema, &table.name, changefeed, server_id),
    )
    .await
    .map_err(|e| sink_error(format!("claim target table {table}"), e))?;
    match owner(conn, table).await? {
        Some((c, s, adopted)) if c == changefeed && s == server_id => Ok(if adopted {
            Claim::Adopted
        } else {
            Claim::Unchecked
        }),
        Some((c, s, _)) => Err(SinkError::Unsupported {
            message: owned_message(table, &c, &s),
        }),
        None => Err(SinkError::Unsupported {
            message: format!("the claim on target table {table} vanished as it was made; retry"),
        }),
    }
}

/// Drops an unchecked claim (the table was refused: it stays the user's).
pub(super) async fn unclaim(
    conn: &mut Conn,
    changefeed: &str,
    table: &TableId,
) -> Result<(), SinkError> {
    conn.exec_drop(
        "DELETE FROM `_ferry`.`table_owners`
         WHERE table_schema = ? AND table_name = ? AND changefeed = ? AND NOT adopted",
        (&table.schema, &table.name, changefeed),
    )
    .await
    .map_err(|e| sink_error(format!("drop the claim on {table}"), e))
}

/// Records the table as checked, and whether it kept rows from before the changefeed.
pub(super) async fn adopt(
    conn: &mut Conn,
    table: &TableId,
    append_rows: bool,
) -> Result<(), SinkError> {
    conn.exec_drop(
        "UPDATE `_ferry`.`table_owners` SET adopted = 1, append_rows = append_rows OR ?
         WHERE table_schema = ? AND table_name = ?",
        (append_rows, &table.schema, &table.name),
    )
    .await
    .map_err(|e| sink_error(format!("record the claim on {table}"), e))
}

/// Whether `table`'s copy must upsert into rows kept from before the changefeed.
pub(super) async fn append_rows(conn: &mut Conn, table: &TableId) -> Result<bool, SinkError> {
    let row: Option<bool> = conn
        .exec_first(
            "SELECT append_rows FROM `_ferry`.`table_owners` WHERE table_schema = ? AND table_name = ?",
            (&table.schema, &table.name),
        )
        .await
        .map_err(|e| sink_error(format!("read the owner of {table}"), e))?;
    Ok(row.unwrap_or(false))
}

/// The error when a claimed table holds rows under `existing_target: fail`.
pub(super) fn not_empty(table: &TableId) -> SinkError {
    SinkError::Unsupported {
        message: not_empty_message(table),
    }
}

/// Whether the target has Ferry's bookkeeping (read-only checks never create it).
async fn has_bookkeeping(conn: &mut Conn) -> Result<bool, SinkError> {
    let found: Option<u8> = conn
        .query_first(
            "SELECT 1 FROM information_schema.tables
             WHERE table_schema = '_ferry' AND table_name = 'table_owners'",
        )
        .await
        .map_err(|e| sink_error("look for Ferry's bookkeeping", e))?;
    Ok(found.is_some())
}

/// Read-only: whether `changefeed` (on `server_id`) may write `tables`, as its sink will
/// check when it first writes them. `copies`: the changefeed copies tables (its
/// `existing_target` applies to rows already there).
pub(super) async fn preflight(
    conn: &mut Conn,
    changefeed: &str,
    server_id: &str,
    tables: &[TableSchema],
    existing_target: ExistingTarget,
    copies: bool,
) -> Result<Option<TargetProblem>, SinkError> {
    let bookkeeping = has_bookkeeping(conn).await?;
    for schema in tables {
        let id = &schema.id;
        if bookkeeping {
            match owner(conn, id).await? {
                Some((c, s, true)) if c == changefeed && s == server_id => continue,
                Some((c, s, _)) if c != changefeed || s != server_id => {
                    return Ok(Some(TargetProblem::Owned(owned_message(id, &c, &s))))
                }
                _ => {}
            }
        }
        if let Err(e) = super::types::check_columns(schema) {
            return Ok(Some(TargetProblem::Conflict(e.to_string())));
        }
        let Some(found) = existing(conn, id).await? else {
            continue;
        };
        if let Some(why) = conflict(schema, &found) {
            return Ok(Some(TargetProblem::Conflict(why)));
        }
        if copies && existing_target == ExistingTarget::Fail && has_rows(conn, id).await? {
            return Ok(Some(TargetProblem::NotEmpty(not_empty_message(id))));
        }
    }
    Ok(None)
}

/// Forgets `changefeed` in the target: releases the tables it owns (on `server_id`) and
/// removes its checkpoint and copy markers. Target tables and their rows stay.
pub(super) async fn release(
    conn: &mut Conn,
    changefeed: &str,
    server_id: &str,
) -> Result<(), SinkError> {
    if !has_bookkeeping(conn).await? {
        return Ok(());
    }
    let fail = |e| sink_error("release the changefeed's target tables", e);
    let mut tx = conn
        .start_transaction(Default::default())
        .await
        .map_err(fail)?;
    tx.exec_drop(
        "DELETE FROM `_ferry`.`table_owners` WHERE changefeed = ? AND server_id = ?",
        (changefeed, server_id),
    )
    .await
    .map_err(fail)?;
    for table in ["checkpoints", "snapshot_chunks", "pending_renames"] {
        tx.exec_drop(
            format!("DELETE FROM `_ferry`.{} WHERE changefeed = ?", quote(table)),
            (changefeed,),
        )
        .await
        .map_err(fail)?;
    }
    tx.commit().await.map_err(fail)
}

/// Releases `tables` (no longer selected): another changefeed may write them now.
pub(super) async fn release_tables(
    conn: &mut Conn,
    changefeed: &str,
    server_id: &str,
    tables: &[TableId],
) -> Result<(), SinkError> {
    for table in tables {
        conn.exec_drop(
            "DELETE FROM `_ferry`.`table_owners`
             WHERE table_schema = ? AND table_name = ? AND changefeed = ? AND server_id = ?",
            (&table.schema, &table.name, changefeed, server_id),
        )
        .await
        .map_err(|e| sink_error(format!("release target table {table}"), e))?;
    }
    Ok(())
}
