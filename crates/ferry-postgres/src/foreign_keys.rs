//! Foreign keys, created on request and when a changefeed finishes, never with the tables.
//!
//! Ferry applies changes in batches merged per table, so within a batch a child row can
//! reach the target before its parent; foreign keys on a target still being written would
//! refuse such batches. Once the target is complete (the changefeed finished, or paused
//! for a cut-over), [`create`] adds the source's foreign keys between the replicated
//! tables, each validated against the target's rows. Should a changefeed resume afterwards,
//! a batch the keys refuse is replayed one source transaction at a time in source order,
//! which meets them as the source did.
//!
//! Only keys whose both tables are replicated and were created by Ferry are added: a
//! foreign key also puts triggers on the table it references, and a table the user made
//! is theirs.

use std::collections::HashMap;

use ferry_core::{ConnectionUri, ForeignKeyCreated, ForeignKeyOutcome, TableId};
use tokio_postgres::Client;

use crate::PgError;

/// A foreign key read from the source.
struct SourceKey {
    table: TableId,
    name: String,
    references: Result<TableId, String>,
    definition: String,
}

/// The source's foreign keys held by `tables` (source OID → table). A key referencing a
/// table outside `tables` carries the referenced table's name as an error.
async fn source_keys(
    client: &Client,
    tables: &HashMap<u32, TableId>,
) -> Result<Vec<SourceKey>, PgError> {
    let oids: Vec<u32> = tables.keys().copied().collect();
    // A key referencing a partitioned table has a clone per referenced partition on the
    // referencing table (`conparentid` set, same `conrelid`): the top one stands for all.
    let rows = client
        .query(
            "SELECT k.conrelid, k.conname::text, k.confrelid, k.confrelid::regclass::text,
                    pg_catalog.pg_get_constraintdef(k.oid)
             FROM pg_catalog.pg_constraint k
             WHERE k.contype = 'f' AND k.conrelid = ANY($1::oid[])
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint p
                               WHERE p.oid = k.conparentid AND p.conrelid = k.conrelid)
             ORDER BY k.conrelid::regclass::text, k.conname",
            &[&oids],
        )
        .await
        .map_err(|e| PgError::new("read the source's foreign keys", e))?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let table = tables.get(&row.get::<_, u32>(0))?.clone();
            let referenced: u32 = row.get(2);
            Some(SourceKey {
                table,
                name: row.get(1),
                references: tables.get(&referenced).cloned().ok_or_else(|| row.get(3)),
                definition: row.get(4),
            })
        })
        .collect())
}

/// Whether Ferry created the target table `table`.
async fn created_by_ferry(client: &Client, table: &TableId) -> Result<bool, PgError> {
    let row = client
        .query_one(
            "SELECT pg_catalog.to_regclass('_ferry.created_tables') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| PgError::new("look for _ferry.created_tables", e))?;
    if !row.get::<_, bool>(0) {
        return Ok(false);
    }
    client
        .query_opt(
            "SELECT 1 FROM _ferry.created_tables WHERE table_schema = $1 AND table_name = $2",
            &[&table.schema, &table.name],
        )
        .await
        .map(|row| row.is_some())
        .map_err(|e| PgError::new(format!("look up how {table} was created"), e))
}

/// What to do with one key on the target.
async fn apply(target: &Client, key: &SourceKey) -> Result<ForeignKeyOutcome, PgError> {
    let references = match &key.references {
        Ok(id) => id,
        Err(name) => {
            return Ok(ForeignKeyOutcome::Skipped(format!(
                "it references {name}, which this changefeed does not replicate"
            )))
        }
    };
    for table in [&key.table, references] {
        if !created_by_ferry(target, table).await? {
            return Ok(ForeignKeyOutcome::Skipped(format!(
                "the target table {table} was not created by Ferry; it is yours to change"
            )));
        }
    }
    let exists = target
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_constraint
             WHERE conrelid = pg_catalog.to_regclass($1) AND conname = $2",
            &[&key.table.quoted(), &key.name],
        )
        .await
        .map_err(|e| PgError::new(format!("look up constraint {}", key.name), e))?
        .is_some();
    if exists {
        return Ok(ForeignKeyOutcome::Exists);
    }
    let sql = format!(
        "ALTER TABLE {} ADD CONSTRAINT {} {}",
        key.table.quoted(),
        ferry_core::quote_ident(&key.name),
        key.definition
    );
    Ok(match target.batch_execute(&sql).await {
        Ok(()) => ForeignKeyOutcome::Created,
        // The target's rows (or its catalog) refuse it: said, not fatal to the others.
        Err(e) => ForeignKeyOutcome::Skipped(
            PgError::new(format!("the target refused {}", key.name), e).chain(),
        ),
    })
}

/// Creates on `target` the foreign keys the source has between `tables` (source OID →
/// table), on tables Ferry created; reports every key it looked at.
pub async fn create(
    source: &ConnectionUri,
    target: &ConnectionUri,
    tables: &HashMap<u32, TableId>,
) -> Result<Vec<ForeignKeyCreated>, PgError> {
    let source_client = crate::connect::connect(source, "ferry-foreign-keys").await?;
    crate::catalog::prepare_session(&source_client).await?;
    let keys = source_keys(&source_client, tables).await?;
    drop(source_client);
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let target_client = crate::connect::connect(target, "ferry-foreign-keys").await?;
    crate::catalog::prepare_session(&target_client).await?;
    let mut report = Vec::with_capacity(keys.len());
    for key in &keys {
        let outcome = apply(&target_client, key).await?;
        report.push(ForeignKeyCreated {
            table: key.table.to_string(),
            name: key.name.clone(),
            references: match &key.references {
                Ok(id) => id.to_string(),
                Err(name) => name.clone(),
            },
            outcome,
        });
    }
    Ok(report)
}
