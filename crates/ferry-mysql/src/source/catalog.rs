//! Tables and their shapes, read from `information_schema`.
//!
//! A MySQL database is the schema of a [`TableId`]; a database in the source URI's path
//! limits the source to it. A table's source id is InnoDB's table id
//! (`INNODB_SYS_TABLES`, MySQL 8: `INNODB_TABLES`), which survives `RENAME TABLE`; where
//! it cannot be read (another engine, no `PROCESS` privilege) it is a hash of the name,
//! which renames do not survive (the renamed table is copied again).

use std::collections::{HashMap, HashSet};

use ferry_core::{
    ColumnSchema, Dialect, ReplicaIdentity, SourceError, SourceTable, TableFilter, TableId,
    TableSchema,
};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::tablemap::{Collation, Collations};
use super::types::{self, Kind};
use crate::connect::source_error;

/// Databases of the server itself, never replicated.
const SYSTEM_DATABASES: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";

/// Every base table of `database` (all user databases when empty): name → (source id,
/// row estimate, bytes).
async fn list_tables(
    conn: &mut Conn,
    database: &str,
) -> Result<Vec<(TableId, u32, u64, u64)>, SourceError> {
    let scope = if database.is_empty() {
        format!("t.TABLE_SCHEMA NOT IN ({SYSTEM_DATABASES})")
    } else {
        format!("t.TABLE_SCHEMA = {}", quote_literal(database))
    };
    let rows: Vec<(String, String, Option<u64>, Option<u64>)> = conn
        .query(format!(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME, t.TABLE_ROWS, \
                    COALESCE(t.DATA_LENGTH, 0) + COALESCE(t.INDEX_LENGTH, 0) \
             FROM information_schema.TABLES t \
             WHERE t.TABLE_TYPE = 'BASE TABLE' AND {scope} \
             ORDER BY t.TABLE_SCHEMA, t.TABLE_NAME"
        ))
        .await
        .map_err(|e| source_error("list the source's tables", e))?;
    let ids = innodb_ids(conn).await;
    Ok(rows
        .into_iter()
        .map(|(schema, name, rows, bytes)| {
            let id = TableId::new(schema, name);
            let source_id = ids
                .get(&format!("{}/{}", id.schema, id.name))
                .copied()
                .unwrap_or_else(|| name_hash(&id));
            (id, source_id, rows.unwrap_or(0), bytes.unwrap_or(0))
        })
        .collect())
}

/// InnoDB's table ids by `database/table`; empty when unreadable.
async fn innodb_ids(conn: &mut Conn) -> HashMap<String, u32> {
    for table in ["INNODB_SYS_TABLES", "INNODB_TABLES"] {
        let rows: Result<Vec<(String, u64)>, _> = conn
            .query(format!(
                "SELECT NAME, TABLE_ID FROM information_schema.{table}"
            ))
            .await;
        if let Ok(rows) = rows {
            return rows
                .into_iter()
                .map(|(name, id)| (name, (id & 0x7FFF_FFFF) as u32))
                .collect();
        }
    }
    HashMap::new()
}

/// InnoDB's id of table `id`, as [`list_tables`] reports it; `None` when it has none (no
/// such table, another engine, no `PROCESS` privilege).
pub(crate) async fn innodb_id(conn: &mut Conn, id: &TableId) -> Option<u32> {
    let name = quote_literal(&format!("{}/{}", id.schema, id.name));
    for table in ["INNODB_SYS_TABLES", "INNODB_TABLES"] {
        let found: Result<Option<u64>, _> = conn
            .query_first(format!(
                "SELECT TABLE_ID FROM information_schema.{table} WHERE NAME = {name}"
            ))
            .await;
        if let Ok(found) = found {
            return found.map(|id| (id & 0x7FFF_FFFF) as u32);
        }
    }
    None
}

/// Whether source id `id` is a hash of its table's name ([`name_hash`]), which does not
/// tell a table from another created under the same name.
pub(crate) fn is_name_hash(id: u32) -> bool {
    id & 0x8000_0000 != 0
}

/// A shape with no columns: a table the catalog no longer has, described by the binlog
/// alone.
pub(crate) fn unknown_shape(id: TableId) -> TableSchema {
    TableSchema {
        id,
        columns: Vec::new(),
        key: Vec::new(),
        identity: ReplicaIdentity::Full,
        user_types: Vec::new(),
        partition_of: Vec::new(),
        dialect: Dialect::Mysql,
    }
}

/// A stable id from a table's name (FNV-1a), with the top bit set so it never equals an
/// InnoDB id (those are small and masked to 31 bits).
fn name_hash(id: &TableId) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.schema.bytes().chain([0]).chain(id.name.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h | 0x8000_0000
}

/// `'text'` with quotes and backslashes escaped.
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// `` `name` `` quoted for MySQL.
pub(crate) fn quote_name(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `` `db`.`table` ``.
pub(crate) fn quote_table(id: &TableId) -> String {
    format!("{}.{}", quote_name(&id.schema), quote_name(&id.name))
}

/// The ids and names of the tables `filter` selects.
pub(crate) async fn selected_ids(
    conn: &mut Conn,
    database: &str,
    filter: &TableFilter,
) -> Result<Vec<(u32, TableId)>, SourceError> {
    Ok(list_tables(conn, database)
        .await?
        .into_iter()
        .filter(|(id, ..)| filter.selects(id, &[]))
        .map(|(id, source_id, ..)| (source_id, id))
        .collect())
}

/// The tables `filter` selects, with their shapes. A column of a type Ferry cannot read
/// is an error naming it (never a table silently left out).
pub(crate) async fn selected_tables(
    conn: &mut Conn,
    database: &str,
    filter: &TableFilter,
) -> Result<Vec<SourceTable>, SourceError> {
    let mut out = Vec::new();
    for (id, source_id, rows, bytes) in list_tables(conn, database).await? {
        if !filter.selects(&id, &[]) {
            continue;
        }
        let (schema, _) = describe(conn, &id).await?;
        out.push(SourceTable {
            schema,
            source_id,
            estimated_rows: Some(rows),
            total_bytes: bytes,
        });
    }
    Ok(out)
}

/// The current names of the tables with these source ids.
pub(crate) async fn table_names(
    conn: &mut Conn,
    database: &str,
    ids: &[u32],
) -> Result<HashMap<u32, TableId>, SourceError> {
    let wanted: HashSet<u32> = ids.iter().copied().collect();
    Ok(list_tables(conn, database)
        .await?
        .into_iter()
        .filter(|(_, source_id, ..)| wanted.contains(source_id))
        .map(|(id, source_id, ..)| (source_id, id))
        .collect())
}

/// A table's shape and its columns' kinds as the catalog shows them now; an error when the
/// table does not exist.
pub(crate) async fn describe(
    conn: &mut Conn,
    id: &TableId,
) -> Result<(TableSchema, Vec<Kind>), SourceError> {
    describe_if_exists(conn, id).await?.ok_or_else(|| {
        SourceError::message(
            format!("table {id} does not exist on the source"),
            ferry_core::ErrorClass::Transient,
        )
    })
}

/// As [`describe`]; `None` when the table does not exist (any more).
pub(crate) async fn describe_if_exists(
    conn: &mut Conn,
    id: &TableId,
) -> Result<Option<(TableSchema, Vec<Kind>)>, SourceError> {
    let what = || format!("read the columns of {id}");
    // MariaDB shows a column without a default as the text `NULL` (a default of the
    // string 'NULL' reads as `'NULL'`, quoted).
    type ColumnRow = (String, String, String, Option<String>, String, u8);
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, COLUMN_KEY, \
                    COALESCE(COLUMN_DEFAULT <> 'NULL', 0) \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (&id.schema, &id.name),
        )
        .await
        .map_err(|e| source_error(what(), e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let json_checked = json_checked_columns(conn, id).await;
    let key_columns: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' \
             ORDER BY SEQ_IN_INDEX",
            (&id.schema, &id.name),
        )
        .await
        .map_err(|e| source_error(what(), e))?;
    let mut columns = Vec::with_capacity(rows.len());
    let mut kinds = Vec::with_capacity(rows.len());
    for (name, column_type, nullable, charset, _key, has_default) in rows {
        let (kind, logical) = types::classify(
            &column_type,
            charset.as_deref(),
            json_checked.contains(&name),
        )
        .map_err(|u| {
            SourceError::message(
                format!("column {name} of {id} has {}", u.0),
                ferry_core::ErrorClass::Definite,
            )
            .with_hint(format!(
                "exclude the table with a rule such as !{id}, or change the column's type"
            ))
        })?;
        kinds.push(kind);
        columns.push(ColumnSchema {
            name,
            type_name: column_type,
            type_oid: 0,
            logical,
            nullable: nullable == "YES",
            missing_value: None,
            has_default: has_default != 0,
        });
    }
    let key = key_columns
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    let schema = TableSchema {
        id: id.clone(),
        columns,
        key,
        // Row events carry whole rows (binlog_row_image=FULL): old rows are complete.
        identity: ReplicaIdentity::Full,
        user_types: Vec::new(),
        partition_of: Vec::new(),
        dialect: Dialect::Mysql,
    };
    Ok(Some((schema, kinds)))
}

/// Every collation the server knows, by id: TABLE_MAP events name a column's collation by
/// id, and give a string's length in bytes. MariaDB 10.10 and later list the collations of
/// each character set (`utf8mb4_uca1400_ai_ci`) only in
/// `COLLATION_CHARACTER_SET_APPLICABILITY`, with their ids; older servers in `COLLATIONS`.
pub(crate) async fn collations(conn: &mut Conn) -> Result<Collations, SourceError> {
    let query = |table: &str| {
        format!(
            "SELECT co.ID, co.CHARACTER_SET_NAME, cs.MAXLEN \
             FROM information_schema.{table} co \
             JOIN information_schema.CHARACTER_SETS cs \
               ON cs.CHARACTER_SET_NAME = co.CHARACTER_SET_NAME \
             WHERE co.ID IS NOT NULL"
        )
    };
    let rows: Vec<(u16, String, u8)> = match conn
        .query(query("COLLATION_CHARACTER_SET_APPLICABILITY"))
        .await
    {
        Ok(rows) => rows,
        Err(_) => conn
            .query(query("COLLATIONS"))
            .await
            .map_err(|e| source_error("read the source's collations", e))?,
    };
    Ok(Collations(
        rows.into_iter()
            .map(|(id, charset, max_len)| (id, Collation { charset, max_len }))
            .collect(),
    ))
}

/// Columns guarded by `CHECK (json_valid(col))`: MariaDB's JSON. Empty where the catalog
/// has no check constraints (MySQL's JSON is a type of its own).
async fn json_checked_columns(conn: &mut Conn, id: &TableId) -> HashSet<String> {
    let clauses: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (&id.schema, &id.name),
        )
        .await
        .unwrap_or_default();
    clauses
        .iter()
        .filter_map(|c| {
            let rest = c.trim().strip_prefix("json_valid(")?.strip_suffix(')')?;
            Some(rest.trim().trim_matches('`').replace("``", "`"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_hashes_never_meet_innodb_ids() {
        let a = name_hash(&TableId::new("shop", "a"));
        assert_ne!(a, name_hash(&TableId::new("sho", "pa")));
        assert!(a & 0x8000_0000 != 0);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("a'b\\"), "'a''b\\\\'");
        assert_eq!(quote_table(&TableId::new("s", "t`x")), "`s`.`t``x`");
    }
}
