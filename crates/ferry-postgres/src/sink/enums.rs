//! Enum labels added on the source (`ALTER TYPE … ADD VALUE`) follow on the target, in the
//! source's order.
//!
//! PostgreSQL refuses to use a label in the transaction that added it, so while a batch is
//! open the labels are added on a connection of their own, committed before the batch uses
//! them. A label the target has before the source's rows use it changes no row: adding it
//! early never makes the target diverge.

use ferry_core::{SinkError, TableSchema, UserTypeKind};
use tokio_postgres::Client;

use super::{connect_error, statement_error, PgSink};

impl PgSink {
    /// Adds the labels of `schema`'s enums that the target's types lack, when they differ
    /// from what this sink last shaped the table with.
    pub(super) async fn follow_enum_labels(
        &mut self,
        schema: &TableSchema,
    ) -> Result<(), SinkError> {
        let known = self.tables.get(&schema.id).map(|t| &t.schema.user_types);
        if known == Some(&schema.user_types)
            || !schema
                .user_types
                .iter()
                .any(|t| matches!(t.kind, UserTypeKind::Enum { .. }))
        {
            return Ok(());
        }
        let mut statements = Vec::new();
        for t in &schema.user_types {
            let UserTypeKind::Enum { labels } = &t.kind else {
                continue;
            };
            let have = target_labels(&self.client, &t.name).await?;
            statements.extend(add_label_sql(&t.name, labels, &have));
        }
        if statements.is_empty() {
            return Ok(());
        }
        if self.policy.ddl == ferry_core::DdlPolicy::Stop {
            return Err(super::shape::ddl_stop(&schema.id, &statements));
        }
        let side;
        let client = if self.in_batch {
            side = crate::connect::connect(
                &self.uri,
                &format!("ferry-sink {} types", self.changefeed),
            )
            .await
            .map_err(connect_error)?;
            super::session_settings(&side).await?;
            &side
        } else {
            &self.client
        };
        for sql in &statements {
            client.batch_execute(sql).await.map_err(|e| {
                statement_error(format!("add enum labels on the target ({sql})"), e)
            })?;
        }
        tracing::info!(table = %schema.id, labels = statements.len(), "enum labels added on the target as on the source");
        Ok(())
    }
}

/// The target's labels of enum `name` (quoted, schema-qualified), empty when it has no such
/// type (it is created whole with its table).
async fn target_labels(client: &Client, name: &str) -> Result<Vec<String>, SinkError> {
    let rows = client
        .query(
            "SELECT e.enumlabel::text FROM pg_catalog.pg_enum e
             WHERE e.enumtypid = pg_catalog.to_regtype($1)
             ORDER BY e.enumsortorder",
            &[&name],
        )
        .await
        .map_err(|e| statement_error(format!("read the labels of enum {name}"), e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `ALTER TYPE … ADD VALUE` statements giving an enum that has `have` the source's
/// `labels`, each placed after its nearest predecessor the target has (else before its
/// nearest successor). None when the target has no such type.
fn add_label_sql(name: &str, labels: &[String], have: &[String]) -> Vec<String> {
    if have.is_empty() {
        return Vec::new();
    }
    let literal = |l: &str| format!("'{}'", l.replace('\'', "''"));
    let mut present: Vec<&str> = have.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        if present.contains(&label.as_str()) {
            continue;
        }
        let place = match labels[..i]
            .iter()
            .rev()
            .find(|l| present.contains(&l.as_str()))
        {
            Some(before) => format!(" AFTER {}", literal(before)),
            None => match labels[i + 1..]
                .iter()
                .find(|l| present.contains(&l.as_str()))
            {
                Some(after) => format!(" BEFORE {}", literal(after)),
                None => String::new(),
            },
        };
        out.push(format!(
            "ALTER TYPE {name} ADD VALUE IF NOT EXISTS {}{place}",
            literal(label)
        ));
        present.push(label);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn new_labels_keep_the_source_order() {
        let sql = add_label_sql(
            "\"public\".\"mood\"",
            &v(&["first", "ok", "meh", "it's", "happy"]),
            &v(&["ok", "happy"]),
        );
        assert_eq!(
            sql,
            vec![
                "ALTER TYPE \"public\".\"mood\" ADD VALUE IF NOT EXISTS 'first' BEFORE 'ok'",
                "ALTER TYPE \"public\".\"mood\" ADD VALUE IF NOT EXISTS 'meh' AFTER 'ok'",
                "ALTER TYPE \"public\".\"mood\" ADD VALUE IF NOT EXISTS 'it''s' AFTER 'meh'",
            ]
        );
        assert!(add_label_sql("t", &v(&["a"]), &[]).is_empty());
        assert!(add_label_sql("t", &v(&["a"]), &v(&["a"])).is_empty());
    }
}
