//! Shaping a target table before Ferry writes it: claim it, then create it, or check and
//! follow it (see [`super::ownership`] and [`super::ddl::reshape`]).

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::{DdlPolicy, ExistingTarget, SinkError, TableId, TableSchema};

use super::{ddl, nullability, ownership, statement_error, PgSink, TargetTable};

/// How long the session writing ahead may stay idle inside its transaction.
const AHEAD_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl PgSink {
    pub(super) async fn shape_table(
        &mut self,
        schema: &Arc<TableSchema>,
        with_key: bool,
    ) -> Result<(), SinkError> {
        let schema = &super::foreign::in_postgres(schema)?;
        self.follow_enum_labels(schema).await?;
        if let Some(t) = self.tables.get_mut(&schema.id) {
            if t.schema.columns == schema.columns && t.schema.key == schema.key {
                t.schema = schema.clone();
                return Ok(());
            }
        }
        // DDL joins the open batch's transaction, after the changes queued before it;
        // outside a batch the claim, the checks and the DDL get a transaction of their own.
        self.flush().await?;
        let own_transaction = !self.in_batch;
        if own_transaction {
            self.client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| statement_error("begin", e))?;
        }
        let shaped = self.claim_and_shape(schema).await;
        if own_transaction {
            let end = if shaped.is_ok() { "COMMIT" } else { "ROLLBACK" };
            let ended = self.client.batch_execute(end).await;
            if shaped.is_ok() {
                ended
                    .map_err(|e| statement_error(format!("shape target table {}", schema.id), e))?;
            }
        }
        let current = shaped?;
        self.note_foreign_keys(&schema.id).await?;
        if with_key {
            self.ensure_key(schema).await?;
        }
        self.tables.insert(
            schema.id.clone(),
            TargetTable {
                schema: schema.clone(),
                casts: casts(schema, &current),
                statements: HashMap::new(),
                binary: loads_binary(schema, &current),
            },
        );
        Ok(())
    }

    /// Learns a table another session of this changefeed shaped (see
    /// [`ferry_core::Sink::adopt_table`]): reads the target's columns, changes nothing.
    pub(super) async fn adopt_shaped(
        &mut self,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        let schema = &super::foreign::in_postgres(schema)?;
        if let Some(t) = self.tables.get_mut(&schema.id) {
            if t.schema.columns == schema.columns && t.schema.key == schema.key {
                t.schema = schema.clone();
                return Ok(());
            }
        }
        if !self.ahead_session {
            // It holds transactions open beside the main session, which commits first:
            // left idle in one (the main session waiting on its locks, a source transaction
            // that pauses), the server ends it, so it never holds locks or the target's
            // vacuum horizon for long; the transaction is then applied at its commit.
            self.client
                .batch_execute(&format!(
                    "SET idle_in_transaction_session_timeout = '{}ms'",
                    AHEAD_IDLE_TIMEOUT.as_millis()
                ))
                .await
                .map_err(|e| {
                    statement_error("limit the idle time of the session writing ahead", e)
                })?;
            self.ahead_session = true;
        }
        let id = &schema.id;
        let unusable = |why: &str| SinkError::Unsupported {
            message: format!("target table {id} cannot be written ahead of a commit: {why}"),
        };
        self.note_foreign_keys(id).await?;
        if self.foreign_keys {
            return Err(unusable("the target has foreign keys"));
        }
        let current = ddl::target_columns(&self.client, schema)
            .await?
            .ok_or_else(|| unusable("it does not exist"))?;
        if schema
            .columns
            .iter()
            .any(|c| !current.iter().any(|t| t.name == c.name))
        {
            return Err(unusable("its columns are not the source's"));
        }
        self.tables.insert(
            id.clone(),
            TargetTable {
                schema: schema.clone(),
                casts: casts(schema, &current),
                statements: HashMap::new(),
                binary: loads_binary(schema, &current),
            },
        );
        Ok(())
    }

    /// Claims the table, then creates it, or checks and follows it: inside a transaction.
    /// Returns the target's columns afterwards.
    async fn claim_and_shape(
        &mut self,
        schema: &Arc<TableSchema>,
    ) -> Result<Vec<ddl::TargetColumn>, SinkError> {
        let id = &schema.id;
        let claim =
            ownership::claim(&self.client, &self.changefeed, &self.policy.server_id, id).await?;
        let change = |e| statement_error(format!("change target table {id}"), e);
        match ddl::target_columns(&self.client, schema).await? {
            None => {
                let generated = self
                    .definitions
                    .get(id)
                    .map_or(&[][..], |d| d.generated.as_slice());
                self.client
                    .batch_execute(&ddl::create_table_sql(schema, generated, false))
                    .await
                    .map_err(change)?;
                super::complete::record_created(&self.client, id).await?;
                let all: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
                ownership::record_columns(&self.client, id, &all, &[]).await?;
                tracing::info!(table = %id, changefeed = %self.changefeed, "target table created");
            }
            Some(current) => {
                if claim == ownership::Claim::Legacy {
                    // Copied by this changefeed before columns were recorded: its columns.
                    let all: Vec<String> = current.iter().map(|c| c.name.clone()).collect();
                    ownership::record_columns(&self.client, id, &all, &[]).await?;
                }
                let first_claim = claim == ownership::Claim::New;
                let created = ownership::created_columns(&self.client, id).await?;
                let reshape = ddl::reshape(schema, &current, &created, first_claim)?;
                for (column, source_type, target_type) in &reshape.kept_types {
                    ownership::check_cast(&self.client, id, column, source_type, target_type, true)
                        .await?;
                }
                if first_claim {
                    self.adopt(schema).await?;
                }
                if self.policy.ddl == DdlPolicy::Stop && !first_claim {
                    // `reshape` lists the statements creating missing types first.
                    let mut changes: Vec<String> = reshape
                        .sql
                        .iter()
                        .skip(schema.user_types.len())
                        .cloned()
                        .collect();
                    let created = ownership::created_columns(&self.client, id).await?;
                    changes.extend(nullability::follow_sql(&self.client, schema, &created).await?);
                    if !changes.is_empty() {
                        return Err(ddl_stop(id, &changes));
                    }
                }
                let unknown: Vec<&str> = reshape
                    .added
                    .iter()
                    .filter(|c| {
                        schema
                            .column(c)
                            .is_some_and(|c| c.has_default && c.missing_value.is_none())
                    })
                    .map(String::as_str)
                    .collect();
                if !unknown.is_empty() && ownership::has_rows(&self.client, id).await? {
                    return Err(SinkError::Unsupported {
                        message: unknown_fill_message(id, &unknown),
                    });
                }
                for statement in &reshape.sql {
                    self.client.batch_execute(statement).await.map_err(change)?;
                }
                ownership::record_columns(&self.client, id, &reshape.added, &reshape.dropped)
                    .await?;
                let created = ownership::created_columns(&self.client, id).await?;
                for statement in nullability::follow_sql(&self.client, schema, &created).await? {
                    self.client
                        .batch_execute(&statement)
                        .await
                        .map_err(change)?;
                    tracing::info!(table = %id, statement = %statement, "target column follows the source");
                }
                if !reshape.added.is_empty() || !reshape.dropped.is_empty() {
                    tracing::info!(table = %id, added = ?reshape.added, dropped = ?reshape.dropped, "target columns follow the source");
                }
            }
        }
        Ok(ddl::target_columns(&self.client, schema)
            .await?
            .expect("the table exists in this transaction"))
    }

    /// Takes over a table that existed before this changefeed, applying its
    /// `existing_target` choice to the rows there.
    async fn adopt(&mut self, schema: &TableSchema) -> Result<(), SinkError> {
        let id = &schema.id;
        if !ownership::has_rows(&self.client, id).await? {
            tracing::info!(table = %id, changefeed = %self.changefeed, "existing empty target table adopted");
            return Ok(());
        }
        match self.policy.existing_target {
            ExistingTarget::Fail => Err(ownership::not_empty(id)),
            ExistingTarget::Truncate => {
                self.client
                    .batch_execute(&format!("TRUNCATE {}", id.quoted()))
                    .await
                    .map_err(|e| statement_error(format!("truncate target table {id}"), e))?;
                tracing::info!(table = %id, changefeed = %self.changefeed, "existing target table emptied (existing_target: truncate)");
                Ok(())
            }
            ExistingTarget::Append => {
                ownership::mark_append_rows(&self.client, id).await?;
                tracing::info!(table = %id, changefeed = %self.changefeed, "existing target rows kept (existing_target: append)");
                Ok(())
            }
        }
    }
}

/// The type each of `schema`'s values is cast to: its target column's.
fn casts(schema: &TableSchema, current: &[ddl::TargetColumn]) -> Vec<String> {
    schema
        .columns
        .iter()
        .map(|c| {
            current
                .iter()
                .find(|t| t.name == c.name)
                .map_or_else(|| c.type_name.clone(), |t| t.type_name.clone())
        })
        .collect()
}

/// Whether chunks of `schema` load in COPY binary: every column's type copies in binary
/// ([`crate::types::binary_copy_columns`]) and its target column is of the same type. (A
/// source other than PostgreSQL has no type OIDs here: see [`super::foreign`].)
pub(super) fn loads_binary(schema: &TableSchema, current: &[ddl::TargetColumn]) -> bool {
    crate::types::binary_copy_columns(schema)
        && schema.columns.iter().all(|c| {
            current
                .iter()
                .any(|t| t.name == c.name && t.type_oid == c.type_oid)
        })
}

/// Why Ferry stops rather than add `columns` to `table` with NULL in its existing rows.
fn unknown_fill_message(table: &TableId, columns: &[&str]) -> String {
    format!(
        "column(s) {} of {table} were added on the source with a default, and the source no \
         longer records the value its existing rows got (the table was rewritten since, e.g. by \
         ALTER COLUMN … TYPE, or the default is volatile); the stream carries no row events for \
         them, so Ferry stops instead of writing NULLs into the target's existing rows. To \
         re-copy the table: exclude {table} from `tables` (update the changefeed) and resume, \
         drop the target table {table}, then include it again (pause, update, resume: it is \
         copied anew)",
        columns.join(", ")
    )
}

/// Why Ferry stops under `options.ddl: stop`: `statements` would make the target follow.
pub(super) fn ddl_stop(table: &TableId, statements: &[String]) -> SinkError {
    SinkError::Unsupported {
        message: format!(
            "table {table} changed on the source and options.ddl is stop, so Ferry changes \
             nothing on the target; make the target match ({}), or set options.ddl to apply, \
             then resume",
            statements.join("; ")
        ),
    }
}

impl PgSink {
    /// Switches to writing every change in source order when `table` has a foreign key on
    /// the target or is referenced by one. A batch merged per key may write a child before
    /// its parent (refused) or delete and re-insert a parent whose `ON DELETE CASCADE`
    /// then removes a child the source kept (silently wrong); in source order each
    /// statement meets the keys as the source's did.
    async fn note_foreign_keys(&mut self, table: &TableId) -> Result<(), SinkError> {
        if self.foreign_keys {
            return Ok(());
        }
        let keyed = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                                WHERE contype = 'f' AND pg_catalog.to_regclass($1)
                                      IN (conrelid, confrelid))",
                &[&table.quoted()],
            )
            .await
            .map_err(|e| statement_error(format!("look for foreign keys on {table}"), e))?
            .get::<_, bool>(0);
        if keyed {
            tracing::info!(table = %table, "the target has foreign keys on a replicated table: changes are written one by one, in source order");
            self.foreign_keys = true;
            self.in_order = true;
        }
        Ok(())
    }
}
