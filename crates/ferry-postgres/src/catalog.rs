//! What the source's catalog says: selected tables, their columns, keys and user types.
//!
//! Catalog sessions run with an empty `search_path`, so `format_type` qualifies every type
//! outside `pg_catalog` (`public.mood`), and the SQL we generate for a target is unambiguous.

use ferry_core::{
    quote_ident, ColumnSchema, PartitionMode, ReplicaIdentity, TableFilter, TableId, TableSchema,
    UserType, UserTypeKind,
};
use tokio_postgres::Client;

use crate::{types, PgError};

/// A table the filter selects, with the facts needed to plan its replication (its
/// `source_id` is its OID).
pub use ferry_core::SourceTable as SelectedTable;

/// Makes a catalog session qualify type names.
pub async fn prepare_session(client: &Client) -> Result<(), PgError> {
    client
        .batch_execute("SET search_path TO ''")
        .await
        .map_err(|e| PgError::new("set search_path", e))
}

/// The server's version as a number (`150004` for 15.4).
pub async fn server_version_num(client: &Client) -> Result<i32, PgError> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(|e| PgError::new("read the server's version", e))?;
    Ok(row.get(0))
}

/// The server's `logical_decoding_work_mem`, in kB.
pub async fn decoding_work_mem_kb(client: &Client) -> Result<i32, PgError> {
    let row = client
        .query_one(
            "SELECT setting::int4 FROM pg_catalog.pg_settings
             WHERE name = 'logical_decoding_work_mem'",
            &[],
        )
        .await
        .map_err(|e| PgError::new("read the server's logical_decoding_work_mem", e))?;
    Ok(row.get(0))
}

/// The tables a filter chooses from in `mode`, by OID, with the partitioned tables each is
/// a partition of (parent first): in [`PartitionMode::Root`] ordinary and partitioned
/// tables that are no partitions (a partition's rows travel as its root's:
/// `publish_via_partition_root`); in [`PartitionMode::Leaves`] ordinary tables, leaf
/// partitions included, and no partitioned table (it holds no rows of its own).
///
/// The columns are `oid, schema, name, ancestor schemas, ancestor names`, then `columns`;
/// `condition` (on `c`, the table's `pg_class` row) narrows the list.
pub(crate) fn listing_sql(mode: PartitionMode, columns: &str, condition: &str) -> String {
    let kinds = match mode {
        PartitionMode::Root => "c.relkind IN ('r', 'p') AND NOT c.relispartition",
        PartitionMode::Leaves => "c.relkind = 'r'",
    };
    format!(
        "SELECT c.oid, n.nspname::text, c.relname::text,
                ARRAY(SELECT an.nspname::text {ANCESTORS}),
                ARRAY(SELECT ac.relname::text {ANCESTORS}){columns}
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE {kinds} AND {condition}
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_ferry')
           AND n.nspname NOT LIKE 'pg\\_%'
         ORDER BY 2, 3"
    )
}

/// A row of [`listing_sql`]: the table's OID, name, and the tables it is a partition of.
pub(crate) fn listed(row: &tokio_postgres::Row) -> (u32, TableId, Vec<TableId>) {
    let schemas: Vec<String> = row.get(3);
    let names: Vec<String> = row.get(4);
    let partition_of = schemas
        .into_iter()
        .zip(names)
        .map(|(schema, name)| TableId::new(schema, name))
        .collect();
    (
        row.get(0),
        TableId::new(row.get::<_, String>(1), row.get::<_, String>(2)),
        partition_of,
    )
}

/// Every table `filter` selects (in its partition mode, see [`listing_sql`]), sorted by
/// name.
pub async fn selected_tables(
    client: &Client,
    filter: &TableFilter,
) -> Result<Vec<SelectedTable>, PgError> {
    let sql = listing_sql(
        filter.partitions(),
        ", c.reltuples::float8, pg_catalog.pg_total_relation_size(c.oid)",
        "c.relpersistence = 'p'",
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| PgError::new("list source tables", e))?;
    let mut tables = Vec::new();
    for row in rows {
        let (oid, id, partition_of) = listed(&row);
        if !filter.selects(&id, &partition_of) {
            continue;
        }
        let reltuples: f64 = row.get(5);
        let total_bytes: i64 = row.get(6);
        // Dropped since it was listed: not selected any more.
        let Some(schema) = table_schema(client, oid).await? else {
            continue;
        };
        tables.push(SelectedTable {
            schema,
            source_id: oid,
            estimated_rows: (reltuples >= 0.0).then_some(reltuples as u64),
            total_bytes: total_bytes.max(0) as u64,
        });
    }
    Ok(tables)
}

/// Every table `filter` selects, with its OID: a cheap listing to notice tables created
/// while streaming (in leaf mode, partitions created or attached too).
pub async fn selected_ids(
    client: &Client,
    filter: &TableFilter,
) -> Result<Vec<(u32, TableId)>, PgError> {
    let sql = listing_sql(filter.partitions(), "", "c.relpersistence = 'p'");
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| PgError::new("list source tables", e))?;
    Ok(rows
        .iter()
        .map(listed)
        .filter(|(_, id, partition_of)| filter.selects(id, partition_of))
        .map(|(oid, id, _)| (oid, id))
        .collect())
}

/// The current names of the tables with OIDs `oids` (those that still exist), to tell a
/// renamed table from a dropped one.
pub async fn table_names(
    client: &Client,
    oids: &[u32],
) -> Result<std::collections::HashMap<u32, TableId>, PgError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = ANY($1::oid[])",
            &[&oids],
        )
        .await
        .map_err(|e| PgError::new("read table names", e))?;
    Ok(oids_and_names(&rows))
}

/// The labels of the enum types among `type_oids`, by type OID.
pub async fn enum_labels(
    client: &Client,
    type_oids: &[u32],
) -> Result<std::collections::HashMap<u32, EnumLabels>, PgError> {
    let rows = client
        .query(
            // An array of an enum gets its element's labels.
            "SELECT t.oid, t.typcategory = 'A', array_agg(e.enumlabel::text)
             FROM pg_catalog.pg_type t JOIN pg_catalog.pg_enum e ON e.enumtypid =
               CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE t.oid END
             WHERE t.oid = ANY($1::oid[]) GROUP BY 1, 2",
            &[&type_oids],
        )
        .await
        .map_err(|e| PgError::new("read enum labels", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let labels = EnumLabels {
                array: r.get(1),
                labels: r.get(2),
            };
            (r.get(0), labels)
        })
        .collect())
}

/// The labels of an enum type, or of an array of one's element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnumLabels {
    /// The type is an array of the enum.
    pub array: bool,
    /// The enum's labels.
    pub labels: Vec<String>,
}

impl EnumLabels {
    /// Whether the text of a value of this type (an array's too) holds a label this list
    /// does not know.
    pub fn misses_label_of(&self, text: &[u8]) -> bool {
        let known = |v: &[u8]| self.labels.iter().any(|l| l.as_bytes() == v);
        if self.array {
            array_elements(text).iter().any(|e| !known(e))
        } else {
            !known(text)
        }
    }
}

/// The elements of a one-dimensional array's text form (`{a,"b c",NULL}`), unquoted;
/// NULLs left out. Multi-dimensional arrays' elements are found at any depth.
fn array_elements(text: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'{' | b'}' | b',' => i += 1,
            b'"' => {
                let mut element = Vec::new();
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    if text[i] == b'\\' {
                        i += 1;
                    }
                    if let Some(&c) = text.get(i) {
                        element.push(c);
                    }
                    i += 1;
                }
                i += 1;
                out.push(element);
            }
            _ => {
                let start = i;
                while i < text.len() && !matches!(text[i], b',' | b'}') {
                    i += 1;
                }
                let element = &text[start..i];
                if element != b"NULL" {
                    out.push(element.to_vec());
                }
            }
        }
    }
    out
}

/// The tail of a subquery over the tables `c` is a partition of, parent first, as `an`
/// (namespace) and `ac` (class).
const ANCESTORS: &str =
    "FROM pg_catalog.pg_partition_ancestors(c.oid) WITH ORDINALITY AS a(relid, level)
     JOIN pg_catalog.pg_class ac ON ac.oid = a.relid
     JOIN pg_catalog.pg_namespace an ON an.oid = ac.relnamespace
     WHERE a.relid <> c.oid ORDER BY a.level";

/// The shape of the table with OID `oid`, as the catalog says now; `None` when no such table
/// exists any more (dropped).
pub async fn table_schema(client: &Client, oid: u32) -> Result<Option<TableSchema>, PgError> {
    let head = client
        .query_opt(
            &"SELECT n.nspname::text, c.relname::text, c.relreplident::text,
                    ARRAY(SELECT an.nspname::text {ANCESTORS}),
                    ARRAY(SELECT ac.relname::text {ANCESTORS})
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = $1"
                .replace("{ANCESTORS}", ANCESTORS),
            &[&oid],
        )
        .await
        .map_err(|e| PgError::new(format!("read table {oid}"), e))?;
    let Some(head) = head else {
        return Ok(None);
    };
    let id = TableId::new(head.get::<_, String>(0), head.get::<_, String>(1));
    let identity = match head.get::<_, String>(2).as_str() {
        "f" => ReplicaIdentity::Full,
        "i" => ReplicaIdentity::Index,
        "n" => ReplicaIdentity::Nothing,
        _ => ReplicaIdentity::Default,
    };
    let partition_of = head
        .get::<_, Vec<String>>(3)
        .into_iter()
        .zip(head.get::<_, Vec<String>>(4))
        .map(|(schema, name)| TableId::new(schema, name))
        .collect();
    let cols = client
        .query(
            &format!(
                "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid,
                    NOT a.attnotnull, t.typtype::text, t.oid >= 16384 AS user_defined,
                    COALESCE(et.typtype::text, ''), COALESCE(et.oid, 0),
                    CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END,
                    a.atthasdef, {facts}
             FROM pg_catalog.pg_attribute a
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_catalog.pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
             {joins}
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = ''
             ORDER BY a.attnum",
                facts = types::FACTS_COLUMNS.replace("TYPMOD", "a.atttypmod"),
                joins = types::FACTS_JOINS,
            ),
            &[&oid],
        )
        .await
        .map_err(|e| PgError::new(format!("read columns of {id}"), e))?;
    let mut columns = Vec::with_capacity(cols.len());
    let mut user_types: Vec<UserType> = Vec::new();
    for row in &cols {
        let mut type_name: String = row.get(1);
        let type_oid: u32 = row.get(2);
        let typtype: String = row.get(4);
        let user_defined: bool = row.get(5);
        let elem_typtype: String = row.get(6);
        let elem_oid: u32 = row.get(7);
        let logical = types::logical_type(&types::TypeFacts {
            oid: row.get(10),
            typmod: row.get(11),
            kind: row.get(12),
            element_oid: row.get(13),
            element_kind: row.get(14),
            name: type_name.clone(),
        });
        // Enums and domains (and arrays of them) are recreated on the target; any other
        // type the target may not have (extension or composite types) travels as text.
        let (def_oid, def_kind) = if !elem_typtype.is_empty() && elem_oid >= 16384 {
            (elem_oid, elem_typtype.as_str())
        } else {
            (type_oid, typtype.as_str())
        };
        match def_kind {
            "e" | "d" if def_oid >= 16384 => {
                collect_user_type(client, def_oid, &mut user_types).await?;
            }
            _ if user_defined || (elem_oid >= 16384) => type_name = "text".into(),
            _ => {}
        }
        columns.push(ColumnSchema {
            name: row.get(0),
            type_name,
            type_oid,
            logical,
            nullable: row.get(3),
            missing_value: row.get(8),
            has_default: row.get(9),
        });
    }
    let key_names = key_columns(client, oid).await?;
    let key = key_names
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    Ok(Some(TableSchema {
        id,
        columns,
        key,
        identity,
        user_types,
        partition_of,
        dialect: ferry_core::Dialect::Postgres,
    }))
}

/// The key rows are matched by: the replica identity index's columns with `REPLICA IDENTITY
/// USING INDEX` (old rows carry only those), else the primary key's, else none.
async fn key_columns(client: &Client, oid: u32) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "SELECT i.indisprimary, array_agg(a.attname::text ORDER BY k.ord)
             FROM pg_catalog.pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = $1 AND (i.indisprimary OR i.indisreplident)
             GROUP BY i.indexrelid, i.indisprimary, i.indisreplident
             ORDER BY i.indisreplident DESC, i.indisprimary DESC
             LIMIT 1",
            &[&oid],
        )
        .await
        .map_err(|e| PgError::new(format!("read key of table {oid}"), e))?;
    Ok(rows
        .first()
        .map(|r| r.get::<_, Vec<String>>(1))
        .unwrap_or_default())
}

/// Adds the enum or domain `oid` (and a domain's user-defined base first) to `out`.
async fn collect_user_type(
    client: &Client,
    oid: u32,
    out: &mut Vec<UserType>,
) -> Result<(), PgError> {
    let mut pending = vec![oid];
    let mut chain = Vec::new();
    while let Some(oid) = pending.pop() {
        let row = client
            .query_one(
                "SELECT n.nspname::text, t.typname::text, t.typtype::text, t.typnotnull,
                        t.typbasetype, pg_catalog.format_type(t.typbasetype, t.typtypmod)
                 FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
                 WHERE t.oid = $1",
                &[&oid],
            )
            .await
            .map_err(|e| PgError::new(format!("read type {oid}"), e))?;
        let name = format!(
            "{}.{}",
            quote_ident(&row.get::<_, String>(0)),
            quote_ident(&row.get::<_, String>(1))
        );
        let kind = if row.get::<_, String>(2) == "e" {
            let labels = client
                .query(
                    "SELECT enumlabel::text FROM pg_catalog.pg_enum WHERE enumtypid = $1
                     ORDER BY enumsortorder",
                    &[&oid],
                )
                .await
                .map_err(|e| PgError::new(format!("read enum {name}"), e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            UserTypeKind::Enum { labels }
        } else {
            let base_oid: u32 = row.get(4);
            if base_oid >= 16384 {
                pending.push(base_oid);
            }
            let checks = client
                .query(
                    "SELECT pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint
                     WHERE contypid = $1 AND contype = 'c' ORDER BY conname",
                    &[&oid],
                )
                .await
                .map_err(|e| PgError::new(format!("read domain {name}"), e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            UserTypeKind::Domain {
                base: row.get(5),
                not_null: row.get(3),
                checks,
            }
        };
        chain.push(UserType { name, kind });
    }
    // Bases were discovered after the types that use them: create them first.
    for t in chain.into_iter().rev() {
        if !out.iter().any(|u| u.name == t.name) {
            out.push(t);
        }
    }
    Ok(())
}

/// `(oid, schema, name)` rows as table ids by OID.
fn oids_and_names<C: FromIterator<(u32, TableId)>>(rows: &[tokio_postgres::Row]) -> C {
    rows.iter()
        .map(|r| {
            (
                r.get::<_, u32>(0),
                TableId::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            )
        })
        .collect()
}

#[cfg(test)]
mod enum_tests {
    use super::*;

    #[test]
    fn array_elements_are_unquoted_and_nulls_left_out() {
        let got = array_elements(br#"{ok,"two words",NULL,"a\"q\\b",{x,y}}"#);
        let want: Vec<&[u8]> = vec![b"ok", b"two words", br#"a"q\b"#, b"x", b"y"];
        assert_eq!(got, want);
        assert!(array_elements(b"{}").is_empty());
    }

    #[test]
    fn a_label_not_known_is_found_in_scalars_and_arrays() {
        let scalar = EnumLabels {
            array: false,
            labels: vec!["ok".into(), "{odd".into()],
        };
        assert!(!scalar.misses_label_of(b"{odd"));
        assert!(scalar.misses_label_of(b"new"));
        let array = EnumLabels {
            array: true,
            labels: vec!["ok".into(), "so so".into()],
        };
        assert!(!array.misses_label_of(br#"{ok,"so so",NULL}"#));
        assert!(array.misses_label_of(b"{ok,new}"));
    }
}
