//! Target DDL: Ferry's bookkeeping tables, missing schemas, types and tables, and column
//! changes that follow the source.
//!
//! A target table may hold columns Ferry did not create (the user's, on a table made
//! beforehand): Ferry records the columns it creates in `_ferry.created_columns` and only
//! ever drops or retypes those ([`reshape`]). Another column keeps its values, type and
//! default; statements never name it.

use std::collections::HashSet;

use ferry_core::{quote_ident, SinkError, TableSchema, UserType, UserTypeKind};
use tokio_postgres::Client;

use super::statement_error;
use crate::definition::GeneratedColumn;

/// Ferry's bookkeeping in the target: the checkpoint of each changefeed, written in the
/// same transaction as the data it covers, the snapshot chunks already copied, which
/// changefeed owns (is the one writer of) each target table, and the columns and tables
/// Ferry created (only those get the source's indexes, constraints, defaults …).
pub(crate) const BOOKKEEPING: &str = "
CREATE SCHEMA IF NOT EXISTS _ferry;
CREATE TABLE IF NOT EXISTS _ferry.checkpoints (
    changefeed text PRIMARY KEY,
    position   text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS _ferry.snapshot_chunks (
    changefeed   text NOT NULL,
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    chunk        int  NOT NULL,
    rows         bigint NOT NULL,
    snapshot_lsn text NOT NULL,
    PRIMARY KEY (changefeed, table_schema, table_name, chunk)
);
CREATE TABLE IF NOT EXISTS _ferry.table_owners (
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    changefeed   text NOT NULL,
    server_id    text NOT NULL,
    append_rows  boolean NOT NULL DEFAULT false,
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_schema, table_name)
);
CREATE TABLE IF NOT EXISTS _ferry.created_columns (
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    column_name  text NOT NULL,
    PRIMARY KEY (table_schema, table_name, column_name)
);
CREATE TABLE IF NOT EXISTS _ferry.created_tables (
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    PRIMARY KEY (table_schema, table_name)
);";

/// One column as the target has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TargetColumn {
    pub(crate) name: String,
    pub(crate) type_name: String,
    /// The type's OID (`atttypid`).
    pub(crate) type_oid: u32,
    /// `GENERATED ALWAYS AS (…) STORED`: nothing may write it.
    pub(crate) generated: bool,
    /// `NOT NULL` without a default or identity: an insert must name it.
    pub(crate) required: bool,
}

/// The target's columns of `schema.id`, or `None` when the table does not exist.
pub(crate) async fn target_columns(
    client: &Client,
    schema: &TableSchema,
) -> Result<Option<Vec<TargetColumn>>, SinkError> {
    let rows = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),
                    a.attgenerated <> '', a.attnotnull AND NOT a.atthasdef AND a.attidentity = '',
                    a.atttypid
             FROM pg_catalog.pg_attribute a
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&schema.id.schema, &schema.id.name],
        )
        .await
        .map_err(|e| statement_error(format!("read target columns of {}", schema.id), e))?;
    if rows.is_empty() {
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema.id.schema, &schema.id.name],
            )
            .await
            .map_err(|e| statement_error(format!("look up target table {}", schema.id), e))?;
        if exists.is_none() {
            return Ok(None);
        }
    }
    Ok(Some(
        rows.iter()
            .map(|r| TargetColumn {
                name: r.get(0),
                type_name: r.get(1),
                type_oid: r.get(4),
                generated: r.get(2),
                required: r.get(3),
            })
            .collect(),
    ))
}

/// SQL that creates `schema`'s types (when missing) and table, with the source's
/// `generated` columns at their places; the primary key only `with_key` (a bulk copy adds
/// it afterwards with [`add_key_sql`]).
pub(crate) fn create_table_sql(
    schema: &TableSchema,
    generated: &[GeneratedColumn],
    with_key: bool,
) -> String {
    let mut sql = format!(
        "CREATE SCHEMA IF NOT EXISTS {};\n",
        quote_ident(&schema.id.schema)
    );
    for t in &schema.user_types {
        sql.push_str(&create_type_sql(t));
    }
    let mut defs: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                quote_ident(&c.name),
                c.type_name,
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    // Later positions first, so earlier insertions do not shift them.
    for g in generated.iter().rev() {
        defs.insert(
            g.position.min(defs.len()),
            format!(
                "{} {} GENERATED ALWAYS AS ({}) STORED",
                quote_ident(&g.name),
                g.type_name,
                g.expression
            ),
        );
    }
    if with_key && schema.has_key() {
        defs.push(format!("PRIMARY KEY ({})", key_columns(schema)));
    }
    sql.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS {} (\n    {}\n);",
        schema.id.quoted(),
        defs.join(",\n    ")
    ));
    sql
}

fn key_columns(schema: &TableSchema) -> String {
    let key: Vec<String> = schema
        .key
        .iter()
        .map(|&i| quote_ident(&schema.columns[i].name))
        .collect();
    key.join(", ")
}

/// SQL that gives the target table a unique index on the key: its primary key, or a
/// unique index when the table has a primary key on other columns (a user-made table).
pub(crate) fn add_key_sql(schema: &TableSchema, has_primary_key: bool) -> String {
    if has_primary_key {
        format!(
            "CREATE UNIQUE INDEX ON {} ({})",
            schema.id.quoted(),
            key_columns(schema)
        )
    } else {
        format!(
            "ALTER TABLE {} ADD PRIMARY KEY ({})",
            schema.id.quoted(),
            key_columns(schema)
        )
    }
}

/// What the target table has for `ON CONFLICT (key)`.
pub(crate) struct KeyIndex {
    /// A unique, non-partial index on exactly the key's columns exists.
    pub(crate) usable: bool,
    /// The table has a primary key (on these columns or others).
    pub(crate) has_primary_key: bool,
}

/// Looks up the target table's unique indexes for `schema`'s key.
pub(crate) async fn key_index(
    client: &Client,
    schema: &TableSchema,
) -> Result<KeyIndex, SinkError> {
    let mut key: Vec<String> = schema
        .key
        .iter()
        .map(|&i| schema.columns[i].name.clone())
        .collect();
    key.sort();
    let row = client
        .query_one(
            "SELECT
               COALESCE(bool_or(i.indisunique AND i.indpred IS NULL
                 AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
                      FROM unnest(i.indkey) AS k(attnum)
                      JOIN pg_catalog.pg_attribute a
                        ON a.attrelid = i.indrelid AND a.attnum = k.attnum) = $2::text[]), false),
               COALESCE(bool_or(i.indisprimary), false)
             FROM pg_catalog.pg_index i
             WHERE i.indrelid = pg_catalog.to_regclass($1)",
            &[&schema.id.quoted(), &key],
        )
        .await
        .map_err(|e| statement_error(format!("look up the key of {}", schema.id), e))?;
    Ok(KeyIndex {
        usable: row.get(0),
        has_primary_key: row.get(1),
    })
}

/// Creates a type unless one of that name exists (another table may have created it).
fn create_type_sql(t: &UserType) -> String {
    let body = match &t.kind {
        UserTypeKind::Enum { labels } => {
            let labels: Vec<String> = labels
                .iter()
                .map(|l| format!("'{}'", l.replace('\'', "''")))
                .collect();
            format!("CREATE TYPE {} AS ENUM ({})", t.name, labels.join(", "))
        }
        UserTypeKind::Domain {
            base,
            not_null,
            checks,
        } => {
            let mut s = format!("CREATE DOMAIN {} AS {}", t.name, base);
            if *not_null {
                s.push_str(" NOT NULL");
            }
            for c in checks {
                s.push(' ');
                s.push_str(c);
            }
            s
        }
    };
    let schema = t.name.split('.').next().unwrap_or("public");
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};\n\
         DO $ferry$ BEGIN {body}; EXCEPTION WHEN duplicate_object THEN NULL; END $ferry$;\n"
    )
}

/// What [`reshape`] does to an existing target table.
#[derive(Debug, Default)]
pub(crate) struct Reshape {
    /// The statements, in order.
    pub(crate) sql: Vec<String>,
    /// Columns it adds (Ferry's from then on).
    pub(crate) added: Vec<String>,
    /// Columns of Ferry's it drops.
    pub(crate) dropped: Vec<String>,
    /// Source columns whose target column (not Ferry's) has another type, which it keeps:
    /// `(column, source type, target type)`. Their values must cast.
    pub(crate) kept_types: Vec<(String, String, String)>,
}

/// The changes that bring the target's `current` columns in line with `schema`, touching
/// only the columns Ferry `created`; or a definite error (naming table and column) when
/// the source cannot be written into the table as it is. `first_claim`: the table existed
/// before this changefeed, so its key columns must be there already.
pub(crate) fn reshape(
    schema: &TableSchema,
    current: &[TargetColumn],
    created: &HashSet<String>,
    first_claim: bool,
) -> Result<Reshape, SinkError> {
    let table = schema.id.quoted();
    let conflict = |column: &str, problem: String| SinkError::Unsupported {
        message: format!(
            "target table {} column {column}: {problem}; Ferry stops before writing anything",
            schema.id
        ),
    };
    let added: Vec<_> = schema
        .columns
        .iter()
        .filter(|c| !current.iter().any(|t| t.name == c.name))
        .collect();
    let removed: Vec<_> = current
        .iter()
        .filter(|t| schema.column(&t.name).is_none() && created.contains(&t.name))
        .collect();
    if !added.is_empty() && !removed.is_empty() {
        return Err(SinkError::Unsupported {
            message: format!(
                "table {}: columns {} disappeared and {} appeared in one change (a rename?); \
                 Ferry stops rather than drop data. Rename the target columns to match, then \
                 resume the changefeed",
                schema.id,
                names(removed.iter().map(|c| c.name.as_str())),
                names(added.iter().map(|c| c.name.as_str())),
            ),
        });
    }
    if first_claim {
        if let Some(&k) = schema
            .key
            .iter()
            .find(|&&k| added.iter().any(|c| c.name == schema.columns[k].name))
        {
            return Err(conflict(
                &schema.columns[k].name,
                "the source's key column is missing from the existing table (Ferry does not \
                 add a key column to a table it did not create); add it, or let Ferry create \
                 the table"
                    .into(),
            ));
        }
    }
    for t in current {
        let in_source = schema.column(&t.name).is_some();
        if in_source && t.generated {
            return Err(conflict(
                &t.name,
                "it is a generated column on the target but a plain column on the source, so \
                 it cannot be written; rename or drop one of them"
                    .into(),
            ));
        }
        if !in_source && !created.contains(&t.name) && t.required {
            return Err(conflict(
                &t.name,
                "the source has no such column and it is NOT NULL without a default, so every \
                 insert would fail; give it a default or allow NULL"
                    .into(),
            ));
        }
    }
    let mut out = Reshape {
        sql: schema.user_types.iter().map(create_type_sql).collect(),
        ..Reshape::default()
    };
    for c in &added {
        let col = quote_ident(&c.name);
        match &c.missing_value {
            // Existing rows got a value without a row event: give them the same one.
            Some(value) => {
                let literal = value.replace('\'', "''");
                out.sql.push(format!(
                    "ALTER TABLE {table} ADD COLUMN {col} {ty} DEFAULT '{literal}'::{ty}",
                    ty = c.type_name
                ));
                out.sql.push(format!(
                    "ALTER TABLE {table} ALTER COLUMN {col} DROP DEFAULT"
                ));
            }
            None => out.sql.push(format!(
                "ALTER TABLE {table} ADD COLUMN {col} {}",
                c.type_name
            )),
        }
        out.added.push(c.name.clone());
    }
    for c in &removed {
        out.sql.push(format!(
            "ALTER TABLE {table} DROP COLUMN {}",
            quote_ident(&c.name)
        ));
        out.dropped.push(c.name.clone());
    }
    for c in &schema.columns {
        let Some(t) = current.iter().find(|t| t.name == c.name) else {
            continue;
        };
        if t.type_name == c.type_name {
            continue;
        }
        if created.contains(&c.name) {
            let col = quote_ident(&c.name);
            out.sql.push(format!(
                "ALTER TABLE {table} ALTER COLUMN {col} TYPE {ty} USING {col}::{ty}",
                ty = c.type_name
            ));
        } else {
            out.kept_types
                .push((c.name.clone(), c.type_name.clone(), t.type_name.clone()));
        }
    }
    Ok(out)
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{ColumnSchema, ReplicaIdentity, TableId};

    fn schema(cols: &[(&str, &str)]) -> TableSchema {
        TableSchema {
            id: TableId::new("public", "t"),
            columns: cols
                .iter()
                .map(|(n, t)| ColumnSchema {
                    name: n.to_string(),
                    type_name: t.to_string(),
                    type_oid: 0,
                    logical: ferry_core::LogicalType::default(),
                    nullable: *n != "id",
                    missing_value: None,
                    has_default: false,
                })
                .collect(),
            key: vec![0],
            identity: ReplicaIdentity::Default,
            user_types: vec![],
            partition_of: Vec::new(),
            dialect: ferry_core::Dialect::Postgres,
        }
    }

    fn current(cols: &[(&str, &str)]) -> Vec<TargetColumn> {
        cols.iter()
            .map(|(n, t)| TargetColumn {
                name: n.to_string(),
                type_name: t.to_string(),
                type_oid: 0,
                generated: false,
                required: false,
            })
            .collect()
    }

    #[test]
    fn create_has_key_and_not_null() {
        let sql = create_table_sql(&schema(&[("id", "integer"), ("v", "text")]), &[], true);
        assert!(sql.contains("\"id\" integer NOT NULL"), "{sql}");
        assert!(sql.contains("PRIMARY KEY (\"id\")"), "{sql}");
    }

    #[test]
    fn bulk_copy_tables_get_their_key_afterwards() {
        let s = schema(&[("id", "integer"), ("v", "text")]);
        let sql = create_table_sql(&s, &[], false);
        assert!(sql.contains("\"id\" integer NOT NULL"), "{sql}");
        assert!(!sql.contains("PRIMARY KEY"), "{sql}");
        assert_eq!(
            add_key_sql(&s, false),
            "ALTER TABLE \"public\".\"t\" ADD PRIMARY KEY (\"id\")"
        );
        assert_eq!(
            add_key_sql(&s, true),
            "CREATE UNIQUE INDEX ON \"public\".\"t\" (\"id\")"
        );
    }

    fn all(cols: &[&str]) -> HashSet<String> {
        cols.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn follows_add_drop_and_type_change_of_its_own_columns() {
        let s = schema(&[("id", "integer"), ("v", "bigint"), ("w", "text")]);
        let cur = current(&[("id", "integer"), ("v", "integer")]);
        let r = reshape(&s, &cur, &all(&["id", "v"]), false).unwrap();
        assert_eq!(r.sql.len(), 2, "{:?}", r.sql);
        assert!(r.sql[0].contains("ADD COLUMN \"w\" text"));
        assert!(r.sql[1].contains("ALTER COLUMN \"v\" TYPE bigint USING \"v\"::bigint"));
        assert_eq!(r.added, vec!["w"]);
        let s = schema(&[("id", "integer")]);
        let r = reshape(&s, &cur, &all(&["id", "v"]), false).unwrap();
        assert_eq!(
            r.sql,
            vec!["ALTER TABLE \"public\".\"t\" DROP COLUMN \"v\"".to_string()]
        );
        assert_eq!(r.dropped, vec!["v"]);
    }

    #[test]
    fn never_drops_or_retypes_a_column_it_did_not_create() {
        let s = schema(&[("id", "integer"), ("v", "bigint")]);
        let mut cur = current(&[("id", "integer"), ("v", "integer"), ("note", "text")]);
        cur.push(TargetColumn {
            name: "g".into(),
            type_name: "integer".into(),
            type_oid: 0,
            generated: true,
            required: false,
        });
        let r = reshape(&s, &cur, &all(&[]), true).unwrap();
        assert!(r.sql.is_empty(), "{:?}", r.sql);
        assert_eq!(
            r.kept_types,
            vec![("v".to_string(), "bigint".to_string(), "integer".to_string())]
        );
    }

    #[test]
    fn refuses_what_cannot_be_written() {
        let s = schema(&[("id", "integer"), ("v", "text")]);
        let mut generated = current(&[("id", "integer")]);
        generated.push(TargetColumn {
            name: "v".into(),
            type_name: "text".into(),
            type_oid: 0,
            generated: true,
            required: false,
        });
        let err = reshape(&s, &generated, &all(&[]), true).unwrap_err();
        assert!(
            err.to_string().contains("column v: it is a generated"),
            "{err}"
        );
        let err = reshape(&s, &current(&[("v", "text")]), &all(&[]), true).unwrap_err();
        assert!(
            err.to_string().contains("column id: the source's key"),
            "{err}"
        );
        let mut required = current(&[("id", "integer"), ("v", "text")]);
        required.push(TargetColumn {
            name: "r".into(),
            type_name: "text".into(),
            type_oid: 0,
            generated: false,
            required: true,
        });
        let err = reshape(&s, &required, &all(&[]), true).unwrap_err();
        assert!(
            err.to_string().contains("column r: the source has no"),
            "{err}"
        );
    }

    #[test]
    fn refuses_ambiguous_rename() {
        let s = schema(&[("id", "integer"), ("b", "text")]);
        let cur = current(&[("id", "integer"), ("a", "text")]);
        let err = reshape(&s, &cur, &all(&["id", "a"]), false).unwrap_err();
        assert!(err.to_string().contains("rename"), "{err}");
    }
}
