//! A table's definition beyond its columns and key, read from the source's catalog, so a
//! target table Ferry creates becomes a complete replacement of the source's:
//! generated columns (created as generated columns, never written by the copy or the
//! stream), column defaults, identity columns and serial sequences, secondary indexes,
//! UNIQUE, CHECK and EXCLUDE constraints, and comments.
//!
//! Everything is the source's own SQL text (`pg_get_indexdef`, `pg_get_constraintdef`,
//! `pg_get_expr`), read with an empty `search_path` so every name is qualified. Foreign
//! keys are not part of it: they come once the target is complete ([`crate::foreign_keys`]).
//!
//! The sink applies a definition only to tables it created ([`crate::sink`]): generated
//! columns with the table, everything else after the table's bulk copy (one index build
//! costs a fraction of maintaining the index row by row).

use ferry_core::{quote_ident, TableId};
use tokio_postgres::Client;

use crate::PgError;

/// A column computed by the database (`GENERATED ALWAYS AS (…) STORED`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedColumn {
    /// Column name.
    pub name: String,
    /// Its type as SQL.
    pub type_name: String,
    /// The generation expression.
    pub expression: String,
    /// How many replicated (non-generated) columns precede it on the source.
    pub position: usize,
}

/// An identity column's sequence, or a serial column's owned sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedSequence {
    /// The column that owns it.
    pub column: String,
    /// The sequence's qualified, quoted name.
    pub sequence: String,
    /// `Some(always)` for an identity column (`GENERATED ALWAYS` or `BY DEFAULT`); `None`
    /// for a sequence owned by a column with a `nextval` default (serial).
    pub identity: Option<bool>,
    /// The sequence's type (`bigint`).
    pub type_name: String,
    /// `START WITH … INCREMENT BY … MINVALUE … MAXVALUE … CACHE … [NO] CYCLE`.
    pub options: String,
    /// Owned by the same column of a partitioned table this table is a partition of (a
    /// serial column declared on the parent): every leaf's default draws from it, so on
    /// a target holding the leaves as tables of their own it belongs to none of them.
    pub shared: bool,
}

/// A named object and the SQL that creates it on the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedObject {
    /// The object's name (for idempotence and logs).
    pub name: String,
    /// The statement creating it.
    pub sql: String,
}

/// What a complete target table has beyond columns and key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableDefinition {
    /// Generated columns, created with the table.
    pub generated: Vec<GeneratedColumn>,
    /// `(column, expression)` of each column default (identity columns have none).
    pub defaults: Vec<(String, String)>,
    /// Identity and serial sequences.
    pub sequences: Vec<OwnedSequence>,
    /// Secondary indexes (not those behind the key or a constraint).
    pub indexes: Vec<NamedObject>,
    /// UNIQUE, CHECK and EXCLUDE constraints.
    pub constraints: Vec<NamedObject>,
    /// `COMMENT ON` statements for the table and its columns.
    pub comments: Vec<String>,
}

/// Reads the definition of the table `table` (OID `oid`) from the source.
pub async fn read(client: &Client, oid: u32, table: &TableId) -> Result<TableDefinition, PgError> {
    let fail = |what: &str| {
        let what = format!("read the {what} of {table}");
        move |e| PgError::new(what, e)
    };
    let quoted = table.quoted();
    let mut def = TableDefinition::default();

    for row in client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),
                    pg_catalog.pg_get_expr(d.adbin, d.adrelid),
                    (SELECT count(*) FROM pg_catalog.pg_attribute b
                     WHERE b.attrelid = a.attrelid AND b.attnum > 0 AND b.attnum < a.attnum
                       AND NOT b.attisdropped AND b.attgenerated = '')
             FROM pg_catalog.pg_attribute a
             JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = $1 AND a.attgenerated <> '' AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(fail("generated columns"))?
    {
        def.generated.push(GeneratedColumn {
            name: row.get(0),
            type_name: row.get(1),
            expression: row.get(2),
            position: row.get::<_, i64>(3) as usize,
        });
    }

    for row in client
        .query(
            "SELECT a.attname::text, pg_catalog.pg_get_expr(d.adbin, d.adrelid)
             FROM pg_catalog.pg_attrdef d
             JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
             WHERE d.adrelid = $1 AND a.attgenerated = '' AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(fail("column defaults"))?
    {
        def.defaults.push((row.get(0), row.get(1)));
    }

    for row in client
        .query(
            "SELECT a.attname::text, s.seqrelid::regclass::text, a.attidentity::text,
                    pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
                    s.seqmin, s.seqmax, s.seqcache, s.seqcycle, d.refobjid <> $1
             FROM pg_catalog.pg_depend d
             JOIN pg_catalog.pg_sequence s ON s.seqrelid = d.objid
             JOIN pg_catalog.pg_attribute a
               ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_catalog.pg_class'::regclass
               AND d.refclassid = 'pg_catalog.pg_class'::regclass
               AND NOT a.attisdropped
               AND ((d.refobjid = $1 AND d.deptype IN ('a', 'i'))
                    OR (d.deptype = 'a'
                        AND d.refobjid IN (SELECT relid FROM pg_catalog.pg_partition_ancestors($1)
                                           WHERE relid <> $1)
                        AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute t
                                    WHERE t.attrelid = $1 AND t.attname = a.attname
                                      AND NOT t.attisdropped)))
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(fail("sequences"))?
    {
        let identity: String = row.get(2);
        let cycle: bool = row.get(9);
        def.sequences.push(OwnedSequence {
            column: row.get(0),
            sequence: row.get(1),
            identity: match identity.as_str() {
                "a" => Some(true),
                "d" => Some(false),
                _ => None,
            },
            type_name: row.get(3),
            options: format!(
                "START WITH {} INCREMENT BY {} MINVALUE {} MAXVALUE {} CACHE {}{}",
                row.get::<_, i64>(4),
                row.get::<_, i64>(5),
                row.get::<_, i64>(6),
                row.get::<_, i64>(7),
                row.get::<_, i64>(8),
                if cycle { " CYCLE" } else { " NO CYCLE" }
            ),
            shared: row.get(10),
        });
    }

    // Indexes behind the key (the sink builds it) or a constraint (created with it) are
    // left out.
    for row in client
        .query(
            "SELECT c.relname::text, pg_catalog.pg_get_indexdef(i.indexrelid)
             FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = $1 AND NOT i.indisprimary AND NOT i.indisreplident
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                               WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid)
             ORDER BY c.relname",
            &[&oid],
        )
        .await
        .map_err(fail("indexes"))?
    {
        let name: String = row.get(0);
        let sql: String = row.get(1);
        def.indexes.push(NamedObject {
            sql: if_not_exists(&sql),
            name,
        });
    }

    for row in client
        .query(
            "SELECT conname::text, pg_catalog.pg_get_constraintdef(oid)
             FROM pg_catalog.pg_constraint
             WHERE conrelid = $1 AND contype IN ('u', 'c', 'x')
             ORDER BY conname",
            &[&oid],
        )
        .await
        .map_err(fail("constraints"))?
    {
        let name: String = row.get(0);
        let body: String = row.get(1);
        def.constraints.push(NamedObject {
            sql: format!(
                "ALTER TABLE {quoted} ADD CONSTRAINT {} {body}",
                quote_ident(&name)
            ),
            name,
        });
    }

    for row in client
        .query(
            "SELECT a.attname::text, d.description
             FROM pg_catalog.pg_description d
             LEFT JOIN pg_catalog.pg_attribute a
               ON a.attrelid = d.objoid AND a.attnum = d.objsubid AND d.objsubid > 0
             WHERE d.objoid = $1 AND d.classoid = 'pg_catalog.pg_class'::regclass
             ORDER BY d.objsubid",
            &[&oid],
        )
        .await
        .map_err(fail("comments"))?
    {
        let column: Option<String> = row.get(0);
        let text = literal(&row.get::<_, String>(1));
        def.comments.push(match column {
            Some(c) => format!("COMMENT ON COLUMN {quoted}.{} IS {text}", quote_ident(&c)),
            None => format!("COMMENT ON TABLE {quoted} IS {text}"),
        });
    }
    Ok(def)
}

/// `CREATE [UNIQUE] INDEX name …` → `CREATE [UNIQUE] INDEX IF NOT EXISTS name …`.
fn if_not_exists(indexdef: &str) -> String {
    match indexdef.find(" INDEX ") {
        Some(at) => format!(
            "{} INDEX IF NOT EXISTS {}",
            &indexdef[..at],
            &indexdef[at + " INDEX ".len()..]
        ),
        None => indexdef.to_string(),
    }
}

/// A string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_definitions_become_idempotent() {
        assert_eq!(
            if_not_exists("CREATE UNIQUE INDEX t_a ON public.t USING btree (a)"),
            "CREATE UNIQUE INDEX IF NOT EXISTS t_a ON public.t USING btree (a)"
        );
        assert_eq!(literal("it's"), "'it''s'");
    }
}
