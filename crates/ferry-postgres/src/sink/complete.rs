//! Completing the tables Ferry created with the source's definition
//! ([`crate::definition`]): sequences, defaults, identity, UNIQUE/CHECK/EXCLUDE
//! constraints, secondary indexes and comments, once the table's copy is done (generated
//! columns come with the table itself, see [`super::ddl::create_table_sql`]).
//!
//! Only tables recorded in `_ferry.created_tables` are completed: a table the user made is
//! never given an index, constraint or default. Every statement is idempotent (an object
//! already there is skipped), so a restart completes a table half-done. A statement the
//! target refuses (an operator class or a function it lacks) is logged and skipped: the
//! data still replicates.

use ferry_core::{quote_ident, SinkError, TableId, TableSchema};

use super::{statement_error, PgSink};
use crate::definition::TableDefinition;

/// Records that Ferry created `table` (inside the caller's transaction).
pub(crate) async fn record_created(
    client: &tokio_postgres::Client,
    table: &TableId,
) -> Result<(), SinkError> {
    client
        .execute(
            "INSERT INTO _ferry.created_tables (table_schema, table_name) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| statement_error(format!("record target table {table} as created"), e))?;
    Ok(())
}

impl PgSink {
    /// Gives the sink the source's definitions of the tables it may create: created tables
    /// get them, once copied.
    pub fn use_definitions(
        &mut self,
        definitions: impl IntoIterator<Item = (TableId, TableDefinition)>,
    ) {
        self.definitions.extend(definitions);
    }

    /// [`PgSink::use_definitions`] for definitions handed over by the engine: those a
    /// PostgreSQL source read; any other kind is not for this sink.
    pub(super) fn use_source_definitions(
        &mut self,
        definitions: Vec<(TableId, ferry_core::TableDefinition)>,
    ) {
        let ours = definitions.into_iter().filter_map(|(id, d)| {
            d.0.downcast_ref::<TableDefinition>()
                .map(|d| (id, d.clone()))
        });
        self.definitions.extend(ours);
    }

    /// Completes the table of `schema` with its definition, when Ferry created it and has
    /// not completed it in this session.
    pub(super) async fn complete_table(&mut self, schema: &TableSchema) -> Result<(), SinkError> {
        let id = &schema.id;
        if self.completed.contains(id) {
            return Ok(());
        }
        let Some(def) = self.definitions.get(id).cloned() else {
            return Ok(());
        };
        let mut skipped = 0;
        if self.created_by_ferry(id).await? {
            let started = std::time::Instant::now();
            let statements = self.completion_sql(schema, &def).await?;
            for (what, sql) in &statements {
                if let Err(e) = self
                    .client
                    .batch_execute(&format!(
                        "{}; {sql}; RESET maintenance_work_mem",
                        super::copy::INDEX_BUILD_MEMORY
                    ))
                    .await
                {
                    if e.as_db_error().is_none() {
                        return Err(statement_error(format!("create {what} on {id}"), e));
                    }
                    skipped += 1;
                    tracing::warn!(table = %id, object = %what, error = %ferry_core::error_chain(&e), "target refused an object of the source's definition; skipped");
                }
            }
            if !statements.is_empty() {
                tracing::info!(table = %id, objects = statements.len() - skipped, skipped, seconds = started.elapsed().as_secs_f64(), "target table completed with the source's definition");
            }
        }
        // A table the target refused an object of is completed again with the next
        // definition the stream announces.
        if skipped == 0 {
            self.completed.insert(id.clone());
        }
        Ok(())
    }

    /// Whether Ferry created the target table `id` (it is recorded in
    /// `_ferry.created_tables`).
    pub(super) async fn created_by_ferry(&self, id: &TableId) -> Result<bool, SinkError> {
        self.client
            .query_opt(
                "SELECT 1 FROM _ferry.created_tables WHERE table_schema = $1 AND table_name = $2",
                &[&id.schema, &id.name],
            )
            .await
            .map(|row| row.is_some())
            .map_err(|e| statement_error(format!("look up how {id} was created"), e))
    }

    /// The statements still missing on the target for `def`, each with what it creates.
    async fn completion_sql(
        &self,
        schema: &TableSchema,
        def: &TableDefinition,
    ) -> Result<Vec<(String, String)>, SinkError> {
        let id = &schema.id;
        let table = id.quoted();
        let present = self
            .client
            .query_one(
                "SELECT
                   ARRAY(SELECT conname::text FROM pg_catalog.pg_constraint
                         WHERE conrelid = pg_catalog.to_regclass($1)),
                   ARRAY(SELECT attname::text FROM pg_catalog.pg_attribute
                         WHERE attrelid = pg_catalog.to_regclass($1) AND attidentity <> ''),
                   ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.atthasdef
                           AND a.attgenerated = ''),
                   ARRAY(SELECT attname::text FROM pg_catalog.pg_attribute
                         WHERE attrelid = pg_catalog.to_regclass($1) AND attnum > 0
                           AND NOT attisdropped)",
                &[&table],
            )
            .await
            .map_err(|e| statement_error(format!("read the definition of target table {id}"), e))?;
        let constraints: Vec<String> = present.get(0);
        let identities: Vec<String> = present.get(1);
        let defaults: Vec<String> = present.get(2);
        let columns: Vec<String> = present.get(3);
        let mut out = Vec::new();
        // Generated columns come with the table; one added on the source since comes last,
        // as it did there.
        for g in &def.generated {
            if !columns.contains(&g.name) {
                out.push((
                    format!("generated column {}", g.name),
                    format!(
                        "ALTER TABLE {table} ADD COLUMN {} {} GENERATED ALWAYS AS ({}) STORED",
                        quote_ident(&g.name),
                        g.type_name,
                        g.expression
                    ),
                ));
            }
        }
        for s in &def.sequences {
            let column = quote_ident(&s.column);
            match s.identity {
                Some(always) if !identities.contains(&s.column) => {
                    // Ferry's upserts write every non-key column: one that is GENERATED
                    // ALWAYS would refuse them, so it becomes BY DEFAULT on the target.
                    let in_key = schema
                        .key
                        .iter()
                        .any(|&k| schema.columns[k].name == s.column);
                    let kind = if always && in_key {
                        "ALWAYS"
                    } else {
                        "BY DEFAULT"
                    };
                    out.push((
                        format!("identity {}", s.column),
                        format!(
                            "ALTER TABLE {table} ALTER COLUMN {column} ADD GENERATED {kind} AS \
                             IDENTITY (SEQUENCE NAME {} {})",
                            s.sequence, s.options
                        ),
                    ));
                }
                Some(_) => {}
                // Leaves completed side by side may race to create it: the loser finds
                // it there.
                None if s.shared => out.push((
                    format!("sequence {}", s.sequence),
                    format!(
                        "DO $$ BEGIN CREATE SEQUENCE IF NOT EXISTS {} AS {} {}; \
                         EXCEPTION WHEN unique_violation OR duplicate_table THEN NULL; END $$",
                        s.sequence, s.type_name, s.options
                    ),
                )),
                None => out.push((
                    format!("sequence {}", s.sequence),
                    format!(
                        "CREATE SEQUENCE IF NOT EXISTS {seq} AS {} {}; \
                         ALTER SEQUENCE {seq} OWNED BY {table}.{column}",
                        s.type_name,
                        s.options,
                        seq = s.sequence
                    ),
                )),
            }
        }
        for (column, expression) in &def.defaults {
            if !defaults.contains(column) && schema.column(column).is_some() {
                out.push((
                    format!("default of {column}"),
                    format!(
                        "ALTER TABLE {table} ALTER COLUMN {} SET DEFAULT {expression}",
                        quote_ident(column)
                    ),
                ));
            }
        }
        for c in &def.constraints {
            if !constraints.contains(&c.name) {
                out.push((format!("constraint {}", c.name), c.sql.clone()));
            }
        }
        for i in &def.indexes {
            out.push((format!("index {}", i.name), i.sql.clone()));
        }
        for (n, comment) in def.comments.iter().enumerate() {
            out.push((format!("comment {n}"), comment.clone()));
        }
        Ok(out)
    }
}
