//! Table filter rules in TiCDC's syntax.
//!
//! A rule is `schema.table` where each part is a glob (`*` any run, `?` one character,
//! `[abc]`/`[a-z]`/`[!a]` a class). A leading `!` makes it an exclusion. Rules are read in
//! order and the **last** rule that matches a table decides; a table no rule matches is not
//! selected. With no rules at all, every table of every non-system schema is selected.
//!
//! A filter also says how partitioned tables replicate ([`PartitionMode`]): through their
//! root into one table (the default), or leaf by leaf. In leaf mode a rule that names a
//! partitioned table (or a pattern matching it) selects its leaves at any depth: for a
//! leaf, the last rule matching its own name *or the name of a table it is a partition of*
//! decides ([`TableFilter::selects`]).

use serde::{Deserialize, Serialize};

use crate::TableId;

/// Schemas never replicated: the catalogs and Ferry's own bookkeeping.
pub const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema", "pg_toast", "_ferry"];

/// A rule that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// The rule is not `schema.table`.
    #[error(
        "table rule {rule:?} must have the form schema.table (e.g. public.* or !public.audit_*)"
    )]
    NotQualified {
        /// The offending rule.
        rule: String,
    },
    /// A `[` class is not closed.
    #[error("table rule {rule:?} has an unclosed [ character class")]
    UnclosedClass {
        /// The offending rule.
        rule: String,
    },
}

/// How a partitioned table replicates. Carried by the [`TableFilter`] because it decides
/// which tables the filter chooses from: every call that lists a changefeed's tables takes
/// the filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionMode {
    /// Through its root, into one table named as the root (PostgreSQL:
    /// `publish_via_partition_root`). Partitions are not tables of their own.
    #[default]
    Root,
    /// Every leaf partition into a table of its own, named as the leaf. Partitioned tables
    /// (the root and any intermediate level) are not tables of their own.
    Leaves,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    exclude: bool,
    schema: String,
    table: String,
}

/// An ordered list of table rules, and how partitioned tables replicate. Serialized as the
/// list of rules alone: the partition mode is a changefeed option, set with
/// [`TableFilter::with_partitions`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct TableFilter {
    source: Vec<String>,
    rules: Vec<Rule>,
    partitions: PartitionMode,
}

impl TableFilter {
    /// Parses rules; an empty list selects every table of every non-system schema.
    pub fn new<S: AsRef<str>>(rules: &[S]) -> Result<Self, FilterError> {
        let mut parsed = Vec::with_capacity(rules.len());
        for raw in rules {
            let raw = raw.as_ref().trim();
            let (exclude, body) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, raw),
            };
            let (schema, table) = split_rule(body).ok_or_else(|| FilterError::NotQualified {
                rule: raw.to_string(),
            })?;
            for part in [schema, table] {
                if !classes_closed(part) {
                    return Err(FilterError::UnclosedClass {
                        rule: raw.to_string(),
                    });
                }
            }
            parsed.push(Rule {
                exclude,
                schema: schema.to_string(),
                table: table.to_string(),
            });
        }
        Ok(TableFilter {
            source: rules
                .iter()
                .map(|r| r.as_ref().trim().to_string())
                .collect(),
            rules: parsed,
            partitions: PartitionMode::Root,
        })
    }

    /// The same rules, with partitioned tables replicated as `mode` says.
    pub fn with_partitions(mut self, mode: PartitionMode) -> Self {
        self.partitions = mode;
        self
    }

    /// How partitioned tables replicate.
    pub fn partitions(&self) -> PartitionMode {
        self.partitions
    }

    /// The rules as given.
    pub fn rules(&self) -> &[String] {
        &self.source
    }

    /// Whether `table` is selected.
    pub fn matches(&self, table: &TableId) -> bool {
        if SYSTEM_SCHEMAS.contains(&table.schema.as_str()) || table.schema.starts_with("pg_temp") {
            return false;
        }
        if self.rules.is_empty() {
            return true;
        }
        self.rules
            .iter()
            .rev()
            .find(|r| glob(&r.schema, &table.schema) && glob(&r.table, &table.name))
            .is_some_and(|r| !r.exclude)
    }

    /// Whether `table`, a partition of the tables `partition_of` (its parent first; empty
    /// when it is no partition), is a table of its own that the rules select. A partition
    /// never is in [`PartitionMode::Root`] (its rows travel as its root's); in
    /// [`PartitionMode::Leaves`] the last rule matching its name or any of theirs decides,
    /// so a rule naming the parent selects every leaf and `!schema.leaf` leaves one out.
    pub fn selects(&self, table: &TableId, partition_of: &[TableId]) -> bool {
        if partition_of.is_empty() {
            return self.matches(table);
        }
        if self.partitions == PartitionMode::Root
            || SYSTEM_SCHEMAS.contains(&table.schema.as_str())
            || table.schema.starts_with("pg_temp")
        {
            return false;
        }
        if self.rules.is_empty() {
            return true;
        }
        let named = |r: &Rule, t: &TableId| glob(&r.schema, &t.schema) && glob(&r.table, &t.name);
        self.rules
            .iter()
            .rev()
            .find(|r| {
                std::iter::once(table)
                    .chain(partition_of)
                    .any(|t| named(r, t))
            })
            .is_some_and(|r| !r.exclude)
    }
}

impl TryFrom<Vec<String>> for TableFilter {
    type Error = FilterError;
    fn try_from(rules: Vec<String>) -> Result<Self, Self::Error> {
        TableFilter::new(&rules)
    }
}

impl From<TableFilter> for Vec<String> {
    fn from(filter: TableFilter) -> Self {
        filter.source
    }
}

/// Splits `schema.table` at the one dot outside a character class.
fn split_rule(body: &str) -> Option<(&str, &str)> {
    let mut depth = false;
    let mut dot = None;
    for (i, c) in body.char_indices() {
        match c {
            '[' => depth = true,
            ']' => depth = false,
            '.' if !depth => {
                if dot.is_some() {
                    return None;
                }
                dot = Some(i);
            }
            _ => {}
        }
    }
    let i = dot?;
    let (schema, table) = (&body[..i], &body[i + 1..]);
    (!schema.is_empty() && !table.is_empty()).then_some((schema, table))
}

fn classes_closed(pattern: &str) -> bool {
    let mut open = false;
    for c in pattern.chars() {
        match c {
            '[' if !open => open = true,
            ']' if open => open = false,
            _ => {}
        }
    }
    !open
}

/// Glob match with `*`, `?` and `[...]` classes, iterative with one backtrack point.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class_match(&p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`; returns (matched, index after `]`).
fn class_match(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let first = i;
    while i < p.len() && (p[i] != ']' || i == first) {
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            matched |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            matched |= p[i] == c;
            i += 1;
        }
    }
    (i < p.len()).then_some((matched != negate, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sel(rules: &[&str], schema: &str, table: &str) -> bool {
        TableFilter::new(rules)
            .unwrap()
            .matches(&TableId::new(schema, table))
    }

    #[test]
    fn empty_selects_all_user_tables() {
        assert!(sel(&[], "public", "orders"));
        assert!(sel(&[], "sales", "x"));
        assert!(!sel(&[], "pg_catalog", "pg_class"));
        assert!(!sel(&[], "_ferry", "checkpoints"));
    }

    #[test]
    fn later_rules_win() {
        let rules = ["public.*", "!public.audit_*"];
        assert!(sel(&rules, "public", "orders"));
        assert!(!sel(&rules, "public", "audit_log"));
        assert!(!sel(&rules, "other", "orders"));
        let rules = ["public.*", "!public.audit_*", "public.audit_keep"];
        assert!(sel(&rules, "public", "audit_keep"));
    }

    #[test]
    fn globs() {
        assert!(sel(&["s.t?"], "s", "t1"));
        assert!(!sel(&["s.t?"], "s", "t12"));
        assert!(sel(&["s.t[0-9]"], "s", "t7"));
        assert!(!sel(&["s.t[!0-9]"], "s", "t7"));
        assert!(sel(&["*.*"], "any", "thing"));
        assert!(sel(&["s*.a*b"], "sx", "axxb"));
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(matches!(
            TableFilter::new(&["orders"]),
            Err(FilterError::NotQualified { .. })
        ));
        assert!(matches!(
            TableFilter::new(&["a.b.c"]),
            Err(FilterError::NotQualified { .. })
        ));
        assert!(matches!(
            TableFilter::new(&[".b"]),
            Err(FilterError::NotQualified { .. })
        ));
        assert!(matches!(
            TableFilter::new(&["a.[b"]),
            Err(FilterError::UnclosedClass { .. })
        ));
    }

    #[test]
    fn leaves_are_selected_through_their_partitioned_tables() {
        let leaf = TableId::new("public", "events_2025");
        let up = [
            TableId::new("public", "events_by_year"),
            TableId::new("public", "events"),
        ];
        let leaves = |rules: &[&str]| {
            TableFilter::new(rules)
                .unwrap()
                .with_partitions(PartitionMode::Leaves)
        };
        // Root mode: a partition is never a table of its own.
        assert!(!TableFilter::new(&["public.*"]).unwrap().selects(&leaf, &up));
        assert!(leaves(&[]).selects(&leaf, &up));
        assert!(leaves(&["public.events"]).selects(&leaf, &up));
        assert!(leaves(&["public.events_2025"]).selects(&leaf, &up));
        assert!(!leaves(&["public.other"]).selects(&leaf, &up));
        assert!(!leaves(&["public.events", "!public.events_2025"]).selects(&leaf, &up));
        assert!(!leaves(&["public.*", "!public.events"]).selects(&leaf, &up));
        assert!(leaves(&["public.*", "!public.events", "public.events_20*"]).selects(&leaf, &up));
        // Not a partition: its name alone decides, in either mode.
        assert!(leaves(&["public.events_2025"]).selects(&leaf, &[]));
        assert!(!leaves(&["public.events"]).selects(&leaf, &[]));
    }

    proptest! {
        #[test]
        fn literal_pattern_matches_itself(s in "[a-z_]{1,12}", t in "[a-z_]{1,12}") {
            let rule = format!("{}.{}", s, t);
            let selected = sel(&[rule.as_str()], &s, &t);
            prop_assert!(selected || SYSTEM_SCHEMAS.contains(&s.as_str()));
        }

        #[test]
        fn glob_never_panics(p in ".{0,16}", t in ".{0,16}") {
            let _ = glob(&p, &t);
        }
    }
}
