//! One writer per target table, and what Ferry may do to a table that existed before it.
//!
//! `_ferry.table_owners` names the changefeed (its `namespace/id` and the id of the Ferry
//! server that runs it) that writes each target table. A changefeed claims a table in the
//! transaction that first shapes it (creates it, or checks and adopts an existing one):
//! the claim is an `INSERT … ON CONFLICT DO NOTHING` on the table's name, so of two
//! changefeeds racing for one table exactly one wins and the other stops with an error
//! naming the winner, before either has written a row. Deleting a changefeed releases its
//! tables ([`release`]).
//!
//! A table that exists when it is first claimed is the user's: Ferry checks it can write
//! the source into it without touching the user's columns ([`super::ddl::reshape`], casts),
//! then applies the changefeed's [`ExistingTarget`] choice to the rows already there.
//! [`preflight`] runs the same checks read-only, for `check` and `create`.

use std::collections::HashSet;
use std::sync::Arc;

use ferry_core::{ConnectionUri, ExistingTarget, SinkError, TableId, TableSchema};
use tokio_postgres::Client;

use super::{ddl, statement_error};

pub use ferry_core::{TargetPolicy, TargetProblem};

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

/// The owner of `table`, if any: `(changefeed, server_id)`.
async fn owner(client: &Client, table: &TableId) -> Result<Option<(String, String)>, SinkError> {
    let row = client
        .query_opt(
            "SELECT changefeed, server_id FROM _ferry.table_owners
             WHERE table_schema = $1 AND table_name = $2",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| statement_error(format!("look up the owner of {table}"), e))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The columns of `table` Ferry created.
pub(crate) async fn created_columns(
    client: &Client,
    table: &TableId,
) -> Result<HashSet<String>, SinkError> {
    let rows = client
        .query(
            "SELECT column_name FROM _ferry.created_columns
             WHERE table_schema = $1 AND table_name = $2",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| statement_error(format!("read the columns Ferry created in {table}"), e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Records columns Ferry added to (or dropped from) `table`.
pub(crate) async fn record_columns(
    client: &Client,
    table: &TableId,
    added: &[String],
    dropped: &[String],
) -> Result<(), SinkError> {
    let fail = |e| statement_error(format!("record the columns Ferry created in {table}"), e);
    if !added.is_empty() {
        client
            .execute(
                "INSERT INTO _ferry.created_columns (table_schema, table_name, column_name)
                 SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING",
                &[&table.schema, &table.name, &added],
            )
            .await
            .map_err(fail)?;
    }
    if !dropped.is_empty() {
        client
            .execute(
                "DELETE FROM _ferry.created_columns
                 WHERE table_schema = $1 AND table_name = $2 AND column_name = ANY($3::text[])",
                &[&table.schema, &table.name, &dropped],
            )
            .await
            .map_err(fail)?;
    }
    Ok(())
}

/// Whether `table` holds at least one row.
pub(crate) async fn has_rows(client: &Client, table: &TableId) -> Result<bool, SinkError> {
    let row = client
        .query_one(
            &format!("SELECT EXISTS (SELECT 1 FROM {})", table.quoted()),
            &[],
        )
        .await
        .map_err(|e| statement_error(format!("look for rows in {table}"), e))?;
    Ok(row.get(0))
}

/// An error unless the target can cast `source_type` values to `target_type` (the type of
/// a column Ferry did not create, which it keeps). Parsing `NULL::a::b` is enough: the
/// target refuses a cast it has no path for when it plans the statement.
pub(crate) async fn check_cast(
    client: &Client,
    table: &TableId,
    column: &str,
    source_type: &str,
    target_type: &str,
    in_transaction: bool,
) -> Result<(), SinkError> {
    let probe = format!("SELECT NULL::{source_type}::{target_type}");
    if in_transaction {
        client
            .batch_execute("SAVEPOINT ferry_cast")
            .await
            .map_err(|e| statement_error("set a savepoint", e))?;
    }
    let result = client.prepare(&probe).await;
    if in_transaction {
        let end = if result.is_ok() {
            "RELEASE SAVEPOINT ferry_cast"
        } else {
            "ROLLBACK TO SAVEPOINT ferry_cast"
        };
        client
            .batch_execute(end)
            .await
            .map_err(|e| statement_error("end a savepoint", e))?;
    }
    result.map(|_| ()).map_err(|e| {
        let reason = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string());
        SinkError::Unsupported {
            message: format!(
                "target table {table} column {column}: the source's type {source_type} does not \
                 cast to the target's type {target_type} ({reason}); Ferry does not change a \
                 column it did not create. Change the target column's type, or let Ferry create \
                 the table; Ferry stops before writing anything"
            ),
        }
    })
}

/// Whether this changefeed wrote `table` before ownership was recorded (its copy markers
/// name it): such a table is Ferry's own, not a table the user made.
async fn copied_before(
    client: &Client,
    changefeed: &str,
    table: &TableId,
) -> Result<bool, SinkError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM _ferry.snapshot_chunks
             WHERE changefeed = $1 AND table_schema = $2 AND table_name = $3)",
            &[&changefeed, &table.schema, &table.name],
        )
        .await
        .map_err(|e| statement_error(format!("read the copy markers of {table}"), e))?;
    Ok(row.get(0))
}

/// What a [`claim`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The changefeed owned the table already.
    Owned,
    /// The claim is new: an existing table is the user's, to check before writing.
    New,
    /// New, but this changefeed copied the table before ownership was recorded (an
    /// upgraded target): the table and its columns are Ferry's.
    Legacy,
}

/// Claims `table` for `changefeed` on `server_id` (inside the caller's transaction); an
/// error naming the owner when another changefeed owns it.
pub(crate) async fn claim(
    client: &Client,
    changefeed: &str,
    server_id: &str,
    table: &TableId,
) -> Result<Claim, SinkError> {
    let inserted = client
        .execute(
            "INSERT INTO _ferry.table_owners (table_schema, table_name, changefeed, server_id)
             VALUES ($1, $2, $3, $4) ON CONFLICT (table_schema, table_name) DO NOTHING",
            &[&table.schema, &table.name, &changefeed, &server_id],
        )
        .await
        .map_err(|e| statement_error(format!("claim target table {table}"), e))?;
    if inserted == 0 {
        return match owner(client, table).await? {
            Some((c, s)) if c == changefeed && s == server_id => Ok(Claim::Owned),
            Some((c, s)) => Err(SinkError::Unsupported {
                message: owned_message(table, &c, &s),
            }),
            // Released between the two statements: claim again.
            None => Box::pin(claim(client, changefeed, server_id, table)).await,
        };
    }
    Ok(if copied_before(client, changefeed, table).await? {
        Claim::Legacy
    } else {
        Claim::New
    })
}

/// Marks `table` as holding rows from before the changefeed (its copy upserts).
pub(crate) async fn mark_append_rows(client: &Client, table: &TableId) -> Result<(), SinkError> {
    client
        .execute(
            "UPDATE _ferry.table_owners SET append_rows = true
             WHERE table_schema = $1 AND table_name = $2",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| statement_error(format!("record the rows kept in {table}"), e))?;
    Ok(())
}

/// Whether `table`'s copy must upsert into rows kept from before the changefeed.
pub(crate) async fn append_rows(client: &Client, table: &TableId) -> Result<bool, SinkError> {
    let row = client
        .query_opt(
            "SELECT append_rows FROM _ferry.table_owners
             WHERE table_schema = $1 AND table_name = $2",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| statement_error(format!("read the owner of {table}"), e))?;
    Ok(row.is_some_and(|r| r.get(0)))
}

impl super::PgSink {
    /// Releases `tables` (no longer selected): another changefeed may write them now.
    pub async fn release_tables(&mut self, tables: &[TableId]) -> Result<(), SinkError> {
        let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        self.client
            .execute(
                "DELETE FROM _ferry.table_owners o
                 USING unnest($3::text[], $4::text[]) AS r(table_schema, table_name)
                 WHERE o.changefeed = $1 AND o.server_id = $2
                   AND o.table_schema = r.table_schema AND o.table_name = r.table_name",
                &[&self.changefeed, &self.policy.server_id, &schemas, &names],
            )
            .await
            .map_err(|e| statement_error("release target tables", e))?;
        Ok(())
    }
}

/// Whether the target has Ferry's bookkeeping (read-only checks never create it).
async fn has_bookkeeping(client: &Client) -> Result<bool, SinkError> {
    let row = client
        .query_one(
            "SELECT pg_catalog.to_regclass('_ferry.table_owners') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| statement_error("look for Ferry's bookkeeping", e))?;
    Ok(row.get(0))
}

/// Read-only: whether `changefeed` (on `server_id`) may write `tables` into the target of
/// `client`, as its sink will check when it first writes them. `copies`: the changefeed
/// copies tables (its `existing_target` applies to rows already there).
pub async fn preflight(
    client: &Client,
    changefeed: &str,
    server_id: &str,
    tables: &[TableSchema],
    existing_target: ExistingTarget,
    copies: bool,
) -> Result<Option<TargetProblem>, SinkError> {
    client
        .batch_execute("SET search_path TO ''")
        .await
        .map_err(|e| statement_error("set session settings", e))?;
    let bookkeeping = has_bookkeeping(client).await?;
    for schema in tables {
        let schema = &*super::foreign::in_postgres(&Arc::new(schema.clone()))?;
        let id = &schema.id;
        let mut created = HashSet::new();
        if bookkeeping {
            match owner(client, id).await? {
                Some((c, s)) if c == changefeed && s == server_id => continue,
                Some((c, s)) => return Ok(Some(TargetProblem::Owned(owned_message(id, &c, &s)))),
                None => {}
            }
            if copied_before(client, changefeed, id).await? {
                continue;
            }
            created = created_columns(client, id).await?;
        }
        let Some(current) = ddl::target_columns(client, schema).await? else {
            continue;
        };
        let reshape = match ddl::reshape(schema, &current, &created, true) {
            Ok(r) => r,
            Err(e) => return Ok(Some(TargetProblem::Conflict(e.to_string()))),
        };
        for (column, source_type, target_type) in &reshape.kept_types {
            if let Err(e) = check_cast(client, id, column, source_type, target_type, false).await {
                return Ok(Some(TargetProblem::Conflict(e.to_string())));
            }
        }
        if copies && existing_target == ExistingTarget::Fail && has_rows(client, id).await? {
            return Ok(Some(TargetProblem::NotEmpty(not_empty_message(id))));
        }
    }
    Ok(None)
}

/// The error when a claimed table holds rows under `existing_target: fail`.
pub(crate) fn not_empty(table: &TableId) -> SinkError {
    SinkError::Unsupported {
        message: not_empty_message(table),
    }
}

/// Forgets `changefeed` in the target of `uri`: releases the tables it owns (on
/// `server_id`) and removes its checkpoint and copy markers. Touches nothing when the
/// target has no `_ferry` bookkeeping. Target tables and their rows stay.
pub async fn release(
    uri: &ConnectionUri,
    changefeed: &str,
    server_id: &str,
) -> Result<u64, SinkError> {
    let client = crate::connect::connect(uri, &format!("ferry-release {changefeed}"))
        .await
        .map_err(super::connect_error)?;
    super::session_settings(&client).await?;
    let row = client
        .query_one(
            "SELECT pg_catalog.to_regclass('_ferry.checkpoints') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| statement_error("look for Ferry's bookkeeping", e))?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    client
        .batch_execute(ddl::BOOKKEEPING)
        .await
        .map_err(|e| statement_error("upgrade _ferry bookkeeping tables", e))?;
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| statement_error("begin", e))?;
    // Its tables are the user's from now on: never completed by another changefeed.
    client
        .execute(
            "DELETE FROM _ferry.created_tables c USING _ferry.table_owners o
             WHERE o.changefeed = $1 AND o.server_id = $2
               AND c.table_schema = o.table_schema AND c.table_name = o.table_name",
            &[&changefeed, &server_id],
        )
        .await
        .map_err(|e| statement_error("forget the tables Ferry created", e))?;
    let released = client
        .execute(
            "DELETE FROM _ferry.table_owners WHERE changefeed = $1 AND server_id = $2",
            &[&changefeed, &server_id],
        )
        .await
        .map_err(|e| statement_error("release target tables", e))?;
    for table in ["_ferry.checkpoints", "_ferry.snapshot_chunks"] {
        client
            .execute(
                &format!("DELETE FROM {table} WHERE changefeed = $1"),
                &[&changefeed],
            )
            .await
            .map_err(|e| statement_error(format!("clear {table}"), e))?;
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| statement_error("commit", e))?;
    Ok(released)
}
