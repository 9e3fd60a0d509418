//! A consumer of Debezium events, as the stream sink tests use it: rebuilds every table
//! (upsert on r/c/u, delete on d, clear on t), drops repeats by event id, and compares the
//! rebuilt tables with the source's.

use std::collections::{BTreeMap, HashMap, HashSet};

use ferry_testkit::PgCluster;
use serde_json::Value;

/// What the consumer saw.
#[derive(Default, Debug)]
pub struct Rebuilt {
    /// Per table (`schema.table`): key → (row, copies; > 1 only for keyless tables).
    pub tables: HashMap<String, BTreeMap<String, (Value, u64)>>,
    pub events: u64,
    pub duplicates: u64,
    pub ops: BTreeMap<String, u64>,
    /// Per commit position, the ordinals seen (gaps are checked on them).
    ordinals: HashMap<String, HashSet<u64>>,
    seen: HashSet<String>,
    /// Every event kept, in order.
    pub lines: Vec<Value>,
}

impl Rebuilt {
    /// Applies one event; `keys` names the key columns by `schema.table` (none: keyless).
    pub fn apply(&mut self, event: Value, keys: &HashMap<&str, &[&str]>) {
        self.events += 1;
        let id = event["source"]["event_id"].as_str().unwrap().to_string();
        if !self.seen.insert(id.clone()) {
            self.duplicates += 1;
            return;
        }
        let op = event["op"].as_str().unwrap().to_string();
        *self.ops.entry(op.clone()).or_default() += 1;
        if !id.starts_with("snapshot:") {
            let (commit, ordinal) = id.rsplit_once(':').unwrap();
            self.ordinals
                .entry(commit.to_string())
                .or_default()
                .insert(ordinal.parse().unwrap());
        }
        let table = format!(
            "{}.{}",
            event["source"]["schema"].as_str().unwrap(),
            event["source"]["table"].as_str().unwrap()
        );
        let key = keys.get(table.as_str()).copied().unwrap_or(&[]);
        let rows = self.tables.entry(table).or_default();
        match op.as_str() {
            "r" | "c" | "u" => {
                if op == "u" && !event["before"].is_null() {
                    // The old row (a key change, or REPLICA IDENTITY FULL) goes.
                    remove_one(rows, &row_key(&event["before"], key));
                }
                let after = event["after"].clone();
                let entry = rows
                    .entry(row_key(&after, key))
                    .or_insert((after.clone(), 0));
                entry.0 = after;
                entry.1 = if key.is_empty() { entry.1 + 1 } else { 1 };
            }
            "d" => remove_one(rows, &row_key(&event["before"], key)),
            "t" => rows.clear(),
            other => panic!("unknown op {other}"),
        }
        self.lines.push(event);
    }

    /// Asserts the rebuilt `public.<table>` equals the source's rows (database `shop`);
    /// `select` lists one JSON expression per column, as the events encode them
    /// (`json_build_object` arguments).
    pub fn assert_table(&self, source: &PgCluster, table: &str, key: &[&str], select: &str) {
        let expected = source_rows(source, table, key, select);
        let empty = BTreeMap::new();
        let got = self
            .tables
            .get(&format!("public.{table}"))
            .unwrap_or(&empty);
        let missing: Vec<_> = expected
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(3)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .take(3)
            .collect();
        let differ: Vec<_> = expected
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .take(3)
            .map(|(k, v)| (k, v, &got[k]))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty() && differ.is_empty(),
            "{table}: {} rows expected, {} rebuilt; missing {missing:?}; extra {extra:?}; differ {differ:?}",
            expected.len(),
            got.len()
        );
    }

    /// Every transaction's events are numbered 0..n without a hole: nothing was lost
    /// between two events that arrived.
    pub fn gaps(&self) -> u64 {
        self.ordinals
            .values()
            .map(|seen| seen.iter().max().map_or(0, |m| m + 1) - seen.len() as u64)
            .sum()
    }
}

/// The source's rows of `table` as the events encode them, by [`row_key`] with their
/// number of copies.
fn source_rows(
    source: &PgCluster,
    table: &str,
    key: &[&str],
    select: &str,
) -> BTreeMap<String, (Value, u64)> {
    let text = source.psql(
        "shop",
        &format!("SELECT json_build_object({select})::text FROM {table}"),
    );
    let mut rows: BTreeMap<String, (Value, u64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let row: Value = serde_json::from_str(line).unwrap();
        rows.entry(row_key(&row, key)).or_insert((row, 0)).1 += 1;
    }
    rows
}

/// A row's identity: its key columns, or the whole row for a keyless table.
fn row_key(row: &Value, key: &[&str]) -> String {
    if key.is_empty() {
        row.to_string()
    } else {
        key.iter()
            .map(|k| row[*k].to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Removes one copy of the row under `key`.
fn remove_one(rows: &mut BTreeMap<String, (Value, u64)>, key: &str) {
    if let Some(entry) = rows.get_mut(key) {
        entry.1 -= 1;
        if entry.1 == 0 {
            rows.remove(key);
        }
    }
}

/// Columns of a table with every type the events encode, as `json_build_object`
/// arguments (see `docs/events.md`).
pub const ITEMS_SELECT: &str = "'id', id, 'name', name, 'price', price::text, 'tags', tags, \
     'doc', doc::text, 'data', encode(data, 'base64'), \
     'at', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
     'day', day - DATE '1970-01-01', \
     'ts', (extract(epoch FROM ts) * 1000000)::bigint, 'ok', ok";

/// pgbench's tables (and a churn table deleted from by key) as the events encode them.
pub const PGBENCH: [(&str, &[&str], &str); 5] = [
    ("pgbench_churn", &["id"], "'id', id, 'v', v"),
    (
        "pgbench_accounts",
        &["aid"],
        "'aid', aid, 'bid', bid, 'abalance', abalance, 'filler', filler",
    ),
    (
        "pgbench_branches",
        &["bid"],
        "'bid', bid, 'bbalance', bbalance, 'filler', filler",
    ),
    (
        "pgbench_tellers",
        &["tid"],
        "'tid', tid, 'bid', bid, 'tbalance', tbalance, 'filler', filler",
    ),
    (
        "pgbench_history",
        &[],
        "'tid', tid, 'bid', bid, 'aid', aid, 'delta', delta, \
         'mtime', (extract(epoch FROM mtime) * 1000000)::bigint, 'filler', filler",
    ),
];
