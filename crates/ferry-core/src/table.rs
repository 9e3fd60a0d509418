//! Table identity and shape, as a source describes them and a sink recreates them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::LogicalType;

/// A table's schema-qualified name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableId {
    /// Schema (PostgreSQL) or database (MySQL) name.
    pub schema: String,
    /// Table name.
    pub name: String,
}

impl TableId {
    /// A table id from its two parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableId {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The name quoted for SQL: `"schema"."table"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes an SQL identifier, doubling embedded quotes.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// What a source sends as the old row of an update or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaIdentity {
    /// The primary key's columns (PostgreSQL's default).
    Default,
    /// Every column.
    Full,
    /// The columns of a chosen unique index.
    Index,
    /// Nothing: updates and deletes cannot be matched on a target.
    Nothing,
}

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// The column's type as SQL, schema-qualified where needed (`numeric(12,2)`, `public.mood`).
    pub type_name: String,
    /// The source's type id (PostgreSQL OID).
    pub type_oid: u32,
    /// What the column holds, for a sink of another database kind; its values travel in
    /// the type's canonical text (see [`crate::logical`]). Schemas stored before it
    /// existed read as [`LogicalType::Other`] with no name.
    #[serde(default)]
    pub logical: LogicalType,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// What rows that existed before the column was added read as (PostgreSQL's
    /// `attmissingval`, from `ADD COLUMN … DEFAULT`), in text form. Such rows change
    /// without any row event, so a target adding the column must fill them the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_value: Option<String>,
    /// The column has a default on the source. Added with a default, rows that existed
    /// before it hold that default without any row event: without `missing_value` (gone
    /// after a table rewrite) a target adding the column cannot know their values.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_default: bool,
}

/// A table's shape: its columns and the key a sink matches rows by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The table.
    pub id: TableId,
    /// Columns in the source's order (the order row values arrive in).
    pub columns: Vec<ColumnSchema>,
    /// Indexes into `columns` of the key that identifies a row: the primary key, else the
    /// replica identity index. Empty for a table without one.
    pub key: Vec<usize>,
    /// What the source sends as an old row.
    pub identity: ReplicaIdentity,
    /// User-defined types the columns use, in creation order (a domain after its base).
    #[serde(default)]
    pub user_types: Vec<UserType>,
    /// The partitioned tables this table is a partition of, its parent first; empty when it
    /// is no partition. Only tables of their own arrive here, so a partition does only when
    /// leaves replicate on their own ([`crate::PartitionMode::Leaves`]): its ancestors
    /// decide whether the rules select it ([`crate::TableFilter::selects`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_of: Vec<TableId>,
    /// The SQL dialect of `type_name`s and of [`LogicalType::Other`] values: a sink of the
    /// same dialect creates columns from `type_name` exactly; any other sink from
    /// [`ColumnSchema::logical`]. Stored schemas without it are PostgreSQL's.
    #[serde(default, skip_serializing_if = "Dialect::is_postgres")]
    pub dialect: Dialect,
}

/// The SQL dialect a table's shape is written in (see [`TableSchema::dialect`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// PostgreSQL.
    #[default]
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

impl Dialect {
    /// Whether this is PostgreSQL's dialect (what schemas stored without one are).
    pub fn is_postgres(&self) -> bool {
        *self == Dialect::Postgres
    }
}

/// A user-defined type a target must create before the table that uses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserType {
    /// Schema-qualified, quoted name (`"public"."mood"`).
    pub name: String,
    /// What it is.
    pub kind: UserTypeKind,
}

/// The definition of a [`UserType`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserTypeKind {
    /// An enum with its labels in sort order.
    Enum {
        /// Labels.
        labels: Vec<String>,
    },
    /// A domain over a base type with its constraints (SQL, as the source prints them).
    Domain {
        /// The base type as SQL.
        base: String,
        /// `NOT NULL` domain.
        not_null: bool,
        /// `CHECK (...)` clauses.
        checks: Vec<String>,
    },
}

impl TableSchema {
    /// Whether rows can be matched by a key (primary key or unique replica identity index).
    pub fn has_key(&self) -> bool {
        !self.key.is_empty()
    }

    /// Whether updates and deletes of this table reach a sink. With `REPLICA IDENTITY
    /// NOTHING`, or without a key and without `REPLICA IDENTITY FULL`, the source must not
    /// publish them: PostgreSQL would refuse the source's own updates and deletes.
    pub fn replicates_updates(&self) -> bool {
        match self.identity {
            ReplicaIdentity::Full => true,
            ReplicaIdentity::Nothing => false,
            ReplicaIdentity::Default | ReplicaIdentity::Index => self.has_key(),
        }
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_replicate_only_with_a_usable_identity() {
        let table = |key: Vec<usize>, identity| TableSchema {
            id: TableId::new("s", "t"),
            columns: vec![],
            key,
            identity,
            user_types: vec![],
            partition_of: vec![],
            dialect: crate::Dialect::Postgres,
        };
        assert!(table(vec![0], ReplicaIdentity::Default).replicates_updates());
        assert!(table(vec![0], ReplicaIdentity::Index).replicates_updates());
        assert!(table(vec![], ReplicaIdentity::Full).replicates_updates());
        assert!(!table(vec![], ReplicaIdentity::Default).replicates_updates());
        assert!(!table(vec![0], ReplicaIdentity::Nothing).replicates_updates());
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(TableId::new("a\"b", "T").quoted(), "\"a\"\"b\".\"T\"");
    }
}
