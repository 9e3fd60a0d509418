//! Following a table's definition while streaming: the source announces it with every
//! description of the table (pgoutput describes a table again after an index, constraint
//! or default of it changed). On a table Ferry created:
//!
//! - what the source dropped (or redefined under the same name) is dropped at once, inside
//!   the open batch, before the changes that follow it: a constraint the source no longer
//!   checks must not refuse them;
//! - what it added is created once the batch is committed, outside it, like the
//!   completion after a copy ([`super::complete`]): a statement the target refuses is
//!   logged and skipped, and tried again with the next description.
//!
//! The definition is read from the source's catalog when the description arrives, so it
//! may already hold a later change; an object created early is at worst refused and
//! tried again. What was dropped on the source while no stream ran is not known (there
//! is no earlier definition to compare with): it stays on the target.

use ferry_core::{quote_ident, SinkError, TableId};

use super::{statement_error, PgSink};
use crate::definition::TableDefinition;

impl PgSink {
    /// See [`ferry_core::Sink::follow_definition`].
    pub(super) async fn follow_definition(
        &mut self,
        table: &TableId,
        definition: ferry_core::TableDefinition,
    ) -> Result<(), SinkError> {
        let Some(new) = definition.0.downcast_ref::<TableDefinition>() else {
            return Ok(());
        };
        let old = self.definitions.get(table);
        if old == Some(new) && self.completed.contains(table) {
            return Ok(());
        }
        if !self.created_by_ferry(table).await? {
            return Ok(());
        }
        let drops = old.map(|old| drops(table, old, new)).unwrap_or_default();
        if !drops.is_empty() {
            // The changes queued before the description go first.
            self.flush().await?;
            for (what, sql) in drops {
                self.client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| statement_error(format!("drop {what} on {table}"), e))?;
                tracing::info!(table = %table, object = %what, "dropped on the target, as on the source");
            }
        }
        self.definitions.insert(table.clone(), new.clone());
        self.completed.remove(table);
        self.complete_after_commit.insert(table.clone());
        Ok(())
    }

    /// Completes the tables whose definition changed in the batch just committed. A
    /// failure is logged and the table kept for the next commit: the batch is durable.
    pub(super) async fn complete_changed_tables(&mut self) {
        let tables: Vec<TableId> = self.complete_after_commit.drain().collect();
        for id in tables {
            let Some(schema) = self.tables.get(&id).map(|t| t.schema.clone()) else {
                continue;
            };
            if let Err(e) = self.complete_table(&schema).await {
                tracing::warn!(table = %id, error = %ferry_core::error_chain(&e), "could not follow the source's definition; trying again after the next batch");
                self.complete_after_commit.insert(id);
            }
        }
    }
}

/// What `old` has and `new` lacks (or holds under the same name with another
/// definition), as statements dropping it from `table`, each with what it drops.
fn drops(table: &TableId, old: &TableDefinition, new: &TableDefinition) -> Vec<(String, String)> {
    let quoted = table.quoted();
    let mut out = Vec::new();
    for index in &old.indexes {
        if !new.indexes.contains(index) {
            out.push((
                format!("index {}", index.name),
                format!(
                    "DROP INDEX IF EXISTS {}.{}",
                    quote_ident(&table.schema),
                    quote_ident(&index.name)
                ),
            ));
        }
    }
    for constraint in &old.constraints {
        if !new.constraints.contains(constraint) {
            out.push((
                format!("constraint {}", constraint.name),
                format!(
                    "ALTER TABLE {quoted} DROP CONSTRAINT IF EXISTS {}",
                    quote_ident(&constraint.name)
                ),
            ));
        }
    }
    for default in &old.defaults {
        // Gone, or another expression (set again by the completion).
        if !new.defaults.contains(default) {
            out.push((
                format!("default of {}", default.0),
                format!(
                    "ALTER TABLE {quoted} ALTER COLUMN {} DROP DEFAULT",
                    quote_ident(&default.0)
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::NamedObject;

    fn object(name: &str, sql: &str) -> NamedObject {
        NamedObject {
            name: name.into(),
            sql: sql.into(),
        }
    }

    #[test]
    fn what_the_source_dropped_or_redefined_is_dropped() {
        let t = TableId::new("public", "t");
        let old = TableDefinition {
            indexes: vec![object("t_a", "CREATE INDEX t_a …"), object("t_b", "b")],
            constraints: vec![object("t_check", "CHECK (a > 0)")],
            defaults: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            ..Default::default()
        };
        let new = TableDefinition {
            indexes: vec![object("t_b", "b"), object("t_c", "c")],
            constraints: vec![object("t_check", "CHECK (a > 1)")],
            defaults: vec![("b".into(), "3".into())],
            ..Default::default()
        };
        let sql: Vec<String> = drops(&t, &old, &new).into_iter().map(|d| d.1).collect();
        assert_eq!(
            sql,
            [
                r#"DROP INDEX IF EXISTS "public"."t_a""#,
                r#"ALTER TABLE "public"."t" DROP CONSTRAINT IF EXISTS "t_check""#,
                r#"ALTER TABLE "public"."t" ALTER COLUMN "a" DROP DEFAULT"#,
                r#"ALTER TABLE "public"."t" ALTER COLUMN "b" DROP DEFAULT"#,
            ]
        );
        assert!(drops(&t, &new, &new).is_empty());
    }
}
