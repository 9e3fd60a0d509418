//! `SET NOT NULL` / `DROP NOT NULL` on the source follow on the target's columns that Ferry
//! created (a column the user made keeps its constraints). At the change's position the
//! target holds the source's rows, so a `SET NOT NULL` the source accepted holds there too;
//! should it not, the statement fails and the changefeed stops rather than diverge.

use std::collections::HashSet;

use ferry_core::{quote_ident, SinkError, TableSchema};
use tokio_postgres::Client;

use super::statement_error;

/// The statements that give the columns Ferry `created` the source's nullability. Key
/// columns are left alone (the key keeps them NOT NULL).
pub(crate) async fn follow_sql(
    client: &Client,
    schema: &TableSchema,
    created: &HashSet<String>,
) -> Result<Vec<String>, SinkError> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.attnotnull FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0
               AND NOT a.attisdropped",
            &[&schema.id.quoted()],
        )
        .await
        .map_err(|e| statement_error(format!("read the NOT NULL columns of {}", schema.id), e))?;
    let mut out = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let not_null: bool = row.get(1);
        let Some(i) = schema.columns.iter().position(|c| c.name == name) else {
            continue;
        };
        if !created.contains(&name) || schema.key.contains(&i) {
            continue;
        }
        let wanted = !schema.columns[i].nullable;
        if wanted != not_null {
            out.push(format!(
                "ALTER TABLE {} ALTER COLUMN {} {} NOT NULL",
                schema.id.quoted(),
                quote_ident(&name),
                if wanted { "SET" } else { "DROP" }
            ));
        }
    }
    Ok(out)
}
