//! Can this source be replicated, and which of its tables fully?
//!
//! - [`source_facts`]: server version, `wal_level`, whether the user may replicate, slot
//!   room: what creating a changefeed or a source checks before anything is stored.
//! - [`verify_tables`]: for filter rules, each matching table with a verdict: *eligible*
//!   when its updates and deletes can be replicated (a primary key, or `REPLICA IDENTITY
//!   FULL`/`USING INDEX`), *ineligible* with the reason and what to do otherwise.
//! - [`missing_tables`]: the rules that name one exact table that does not exist.
//!
//! The verdict itself ([`judge`]) is a pure function of catalog facts, unit-tested here.

use ferry_core::{PartitionMode, TableFilter, TableId};
use serde::Serialize;
use tokio_postgres::Client;

use crate::{catalog, PgError};

/// What a source server says about itself and the connecting user.
#[derive(Clone, Debug, Serialize)]
pub struct SourceFacts {
    /// `server_version`, e.g. `15.8 (Debian 15.8-0+deb12u1)`.
    pub server_version: String,
    /// `wal_level`: must be `logical`.
    pub wal_level: String,
    /// The user has `REPLICATION` or is a superuser.
    pub can_replicate: bool,
    /// `max_replication_slots`.
    pub max_replication_slots: i64,
    /// Replication slots in use.
    pub replication_slots_used: i64,
    /// The user may create publications in the database (`CREATE` on it, or superuser).
    pub can_create_publications: bool,
    /// The database's name.
    pub database: String,
    /// The user's name.
    pub user: String,
}

impl SourceFacts {
    /// What stops this source from being used for logical replication, with what to do.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.wal_level != "logical" {
            out.push(format!(
                "wal_level is {}; set wal_level = logical on the source and restart it",
                self.wal_level
            ));
        }
        if !self.can_replicate {
            out.push(
                "the source user lacks the REPLICATION attribute; ALTER ROLE … WITH REPLICATION"
                    .to_string(),
            );
        }
        if !self.can_create_publications {
            out.push(format!(
                "the source user {user} cannot create publications in database {db}; GRANT \
                 CREATE ON DATABASE {db} TO {user}",
                user = self.user,
                db = self.database
            ));
        }
        out
    }
}

/// Reads [`SourceFacts`].
pub async fn source_facts(client: &Client) -> Result<SourceFacts, PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('wal_level'),
                    (SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles
                     WHERE rolname = current_user),
                    current_setting('max_replication_slots')::int8,
                    (SELECT count(*) FROM pg_catalog.pg_replication_slots),
                    pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')
                      OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),
                    pg_catalog.current_database()::text, current_user::text",
            &[],
        )
        .await
        .map_err(|e| PgError::new("read the source's settings", e))?;
    Ok(SourceFacts {
        server_version: row.get(0),
        wal_level: row.get(1),
        can_replicate: row.get::<_, Option<bool>>(2).unwrap_or(false),
        max_replication_slots: row.get(3),
        replication_slots_used: row.get(4),
        can_create_publications: row.get::<_, Option<bool>>(5).unwrap_or(false),
        database: row.get(6),
        user: row.get(7),
    })
}

/// The tables `filter` selects that the user may not add to a publication: PostgreSQL
/// wants their owner (or a member of the owning role, or a superuser).
pub async fn unowned_tables(client: &Client, filter: &TableFilter) -> Result<Vec<String>, PgError> {
    let sql = catalog::listing_sql(
        filter.partitions(),
        ", pg_catalog.pg_get_userbyid(c.relowner)::text",
        "c.relpersistence = 'p' AND NOT pg_catalog.pg_has_role(c.relowner, 'USAGE')
         AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)",
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| PgError::new("list table owners", e))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let (_, table, partition_of) = catalog::listed(r);
            filter
                .selects(&table, &partition_of)
                .then(|| format!("{table} (owned by {})", r.get::<_, String>(5)))
        })
        .collect())
}

/// Catalog facts about one table that decide whether it replicates fully.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableFacts {
    /// The table.
    pub table: TableId,
    /// The partitioned tables it is a partition of, parent first (empty for none).
    pub partition_of: Vec<TableId>,
    /// `pg_class.relpersistence = 'u'`.
    pub unlogged: bool,
    /// `pg_class.relreplident`: `d`, `n`, `f` or `i`.
    pub replica_identity: char,
    /// Primary key columns (empty without one).
    pub primary_key: Vec<String>,
    /// Columns of the replica identity index, when `replica_identity` is `i`.
    pub identity_index: Vec<String>,
}

/// A table's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableVerdict {
    /// `schema.table`.
    pub table: String,
    /// Why it is (in)eligible, and for an ineligible one what to do.
    pub reason: String,
    /// Whether updates and deletes replicate.
    #[serde(skip)]
    pub eligible: bool,
}

/// Whether `facts` describe a fully replicable table.
pub fn judge(facts: &TableFacts) -> TableVerdict {
    let t = &facts.table;
    let (eligible, reason) = if facts.unlogged {
        (
            false,
            format!(
                "unlogged: its changes are not written to the WAL, so they cannot be \
                 replicated; ALTER TABLE {} SET LOGGED",
                t.quoted()
            ),
        )
    } else {
        match facts.replica_identity {
            'n' => (
                false,
                format!(
                    "REPLICA IDENTITY NOTHING: updates and deletes cannot be replicated; \
                     ALTER TABLE {} REPLICA IDENTITY DEFAULT (with a primary key) or FULL",
                    t.quoted()
                ),
            ),
            'f' => (true, "REPLICA IDENTITY FULL".to_string()),
            'i' if !facts.identity_index.is_empty() => (
                true,
                format!(
                    "REPLICA IDENTITY USING INDEX ({})",
                    facts.identity_index.join(", ")
                ),
            ),
            _ if !facts.primary_key.is_empty() => (
                true,
                format!("primary key ({})", facts.primary_key.join(", ")),
            ),
            _ => (
                false,
                format!(
                    "no primary key and REPLICA IDENTITY DEFAULT: only inserts and truncates \
                     replicate; add a primary key or ALTER TABLE {} REPLICA IDENTITY FULL",
                    t.quoted()
                ),
            ),
        }
    };
    TableVerdict {
        table: t.to_string(),
        reason,
        eligible,
    }
}

/// Every table of the source outside the system schemas a filter in `mode` chooses from
/// (see [`catalog::listing_sql`]), unlogged ones too, with its facts.
pub async fn table_facts(client: &Client, mode: PartitionMode) -> Result<Vec<TableFacts>, PgError> {
    let sql = catalog::listing_sql(
        mode,
        ", c.relpersistence = 'u', c.relreplident::text,
           COALESCE((SELECT array_agg(a.attname::text ORDER BY k.ord)
                     FROM pg_catalog.pg_index i
                     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                     JOIN pg_catalog.pg_attribute a
                       ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                     WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
           COALESCE((SELECT array_agg(a.attname::text ORDER BY k.ord)
                     FROM pg_catalog.pg_index i
                     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                     JOIN pg_catalog.pg_attribute a
                       ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                     WHERE i.indrelid = c.oid AND i.indisreplident), '{}')",
        "c.relpersistence IN ('p', 'u')",
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| PgError::new("list source tables", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (_, table, partition_of) = catalog::listed(r);
            TableFacts {
                table,
                partition_of,
                unlogged: r.get(5),
                replica_identity: r.get::<_, String>(6).chars().next().unwrap_or('d'),
                primary_key: r.get(7),
                identity_index: r.get(8),
            }
        })
        .collect())
}

/// The verdicts for every table `filter` selects, sorted by name.
pub async fn verify_tables(
    client: &Client,
    filter: &TableFilter,
) -> Result<Vec<TableVerdict>, PgError> {
    Ok(table_facts(client, filter.partitions())
        .await?
        .iter()
        .filter(|f| filter.selects(&f.table, &f.partition_of))
        .map(judge)
        .collect())
}

/// The include rules of `filter` that name one exact table (no wildcard) which `tables`
/// (listed in the filter's partition mode) lacks. In leaf mode a rule naming a partitioned
/// table is met by its leaves.
pub fn missing_tables(filter: &TableFilter, tables: &[TableFacts]) -> Vec<String> {
    filter
        .rules()
        .iter()
        .filter(|rule| !rule.starts_with('!') && !rule.contains(['*', '?', '[']))
        .filter(|rule| {
            let Ok(single) = TableFilter::new(&[rule.as_str()]) else {
                return false;
            };
            let single = single.with_partitions(filter.partitions());
            !tables
                .iter()
                .any(|t| single.selects(&t.table, &t.partition_of))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(identity: char, pk: &[&str], index: &[&str]) -> TableFacts {
        TableFacts {
            table: TableId::new("public", "t"),
            partition_of: vec![],
            unlogged: false,
            replica_identity: identity,
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
            identity_index: index.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn verdicts() {
        let cases = [
            (facts('d', &["id"], &[]), true, "primary key (id)"),
            (facts('d', &["a", "b"], &[]), true, "primary key (a, b)"),
            (facts('f', &[], &[]), true, "REPLICA IDENTITY FULL"),
            (
                facts('i', &[], &["code"]),
                true,
                "REPLICA IDENTITY USING INDEX (code)",
            ),
            (facts('d', &[], &[]), false, "no primary key"),
            (facts('n', &["id"], &[]), false, "REPLICA IDENTITY NOTHING"),
        ];
        for (f, eligible, reason) in cases {
            let v = judge(&f);
            assert_eq!(v.eligible, eligible, "{f:?}");
            assert!(v.reason.starts_with(reason), "{f:?}: {}", v.reason);
            assert_eq!(v.table, "public.t");
        }
        let mut unlogged = facts('d', &["id"], &[]);
        unlogged.unlogged = true;
        assert!(!judge(&unlogged).eligible);
        assert!(judge(&unlogged).reason.contains("SET LOGGED"));
    }

    #[test]
    fn exact_rules_must_name_existing_tables() {
        let tables = vec![facts('d', &["id"], &[])];
        let filter =
            TableFilter::new(&["public.t", "public.nope", "!public.gone", "s.*", "x.y?"]).unwrap();
        assert_eq!(missing_tables(&filter, &tables), vec!["public.nope"]);
        // In leaf mode a partitioned table is met by its leaves.
        let mut leaf = facts('d', &["id"], &[]);
        leaf.table = TableId::new("public", "events_2025");
        leaf.partition_of = vec![TableId::new("public", "events")];
        let filter = TableFilter::new(&["public.events", "public.events_2025", "public.x"])
            .unwrap()
            .with_partitions(PartitionMode::Leaves);
        assert_eq!(missing_tables(&filter, &[leaf]), vec!["public.x"]);
    }

    #[test]
    fn problems_name_the_fix() {
        let facts = SourceFacts {
            server_version: "15".into(),
            wal_level: "replica".into(),
            can_replicate: false,
            max_replication_slots: 10,
            replication_slots_used: 0,
            can_create_publications: false,
            database: "shop".into(),
            user: "ferry".into(),
        };
        let problems = facts.problems();
        assert_eq!(problems.len(), 3);
        assert!(problems[0].contains("wal_level = logical"));
        assert!(problems[1].contains("REPLICATION"));
        assert!(problems[2].contains("GRANT CREATE ON DATABASE shop TO ferry"));
    }
}
