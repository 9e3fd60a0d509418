//! `ferry changefeed check -f cf.yaml`: everything `create` would refuse, without creating
//! anything.
//!
//! 1. Local checks ([`ChangefeedSpec::problems`]): keys, id syntax, URI schemes, filter
//!    rules, option ranges. No server needed.
//! 2. The id: a changefeed of that id in the namespace is a warning (`create` would be
//!    refused; `update` is the way).
//! 3. The source and tables, by the server (`POST /api/v2/verify-table`): reachable,
//!    `wal_level = logical`, `REPLICATION`, which tables the rules select and which of
//!    them can replicate updates and deletes. A source the server cannot use and rules
//!    that select no table are errors; tables without a key (insert-only) are warnings.
//! 4. Everything else `create` checks, by the server without creating anything
//!    (`POST /api/v2/changefeeds?dry_run=true`): above all the target — not the source
//!    itself (`SINK_IS_SOURCE`), no table owned by another changefeed
//!    (`TARGET_TABLE_OWNED`), existing tables writable as they are and, under
//!    `existing_target: fail`, empty. Run only when the steps before found no error.
//!
//! Errors exit with [`exit::CHECK_FAILED`]; warnings alone exit 0.

use ferry_core::{PartitionMode, TableFilter, TableId};
use serde::Serialize;
use serde_json::{json, Value};

use super::output::{cell, print_doc};
use super::secrets::mask_text;
use super::spec::{ChangefeedSpec, Purpose};
use super::{exit, CliError, Context, OutputFormat};

/// What `check` found.
#[derive(Debug, Default, Serialize)]
struct Report {
    errors: Vec<String>,
    warnings: Vec<String>,
    /// Tables that replicate fully.
    eligible_tables: Vec<String>,
    /// Tables that replicate inserts only, with why.
    ineligible_tables: Vec<Value>,
}

/// Runs the checks and prints the report; the exit code says whether it found errors.
pub(crate) async fn check(context: &Context, spec: &ChangefeedSpec) -> Result<u8, CliError> {
    let client = &context.client;
    let mut report = Report {
        errors: spec.problems(Purpose::Create),
        ..Report::default()
    };
    let id_ok = !report.errors.iter().any(|e| e.starts_with("id"));
    if let (Some(id), true) = (&spec.id, id_ok) {
        match client.get(&["changefeeds", id], &[]).await {
            Ok(_) => report.warnings.push(format!(
                "changefeed {}/{id} exists: `create` would be refused; use `update`",
                client.namespace()
            )),
            Err(e) if e.code == exit::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    let source_ok = !report
        .errors
        .iter()
        .any(|e| e.starts_with("source") || e.starts_with("tables"));
    if source_ok && (spec.source.is_some() || spec.source_uri.is_some()) {
        let partitions = spec
            .options
            .as_ref()
            .map(|o| o.partitions)
            .unwrap_or_default();
        let mut body = json!({
            "tables": spec.tables.clone().unwrap_or_default(),
            "partitions": partitions,
        });
        if let Some(uri) = &spec.source_uri {
            body["source_uri"] = json!(uri);
        }
        if let Some(source) = &spec.source {
            body["source"] = json!(source);
        }
        match client.post(&["verify-table"], Some(&body)).await {
            Ok(answer) => {
                read_verification(&answer, &mut report);
                let rules = spec.tables.as_deref().unwrap_or_default();
                // Leaves are listed without their partitioned tables, which rules may name:
                // the dry-run create below checks those rules.
                let listed = match partitions {
                    PartitionMode::Root => missing_tables(rules, &report.selected()),
                    PartitionMode::Leaves => Vec::new(),
                };
                for missing in listed {
                    report.errors.push(format!(
                        "tables: the source has no table {missing} (create refuses rules naming \
                         a table that does not exist)"
                    ));
                }
            }
            Err(e) if matches!(e.code, exit::REJECTED | exit::NOT_FOUND) => {
                report.errors.push(format!("source: {}", e.message))
            }
            Err(e) => return Err(e),
        }
    }
    let exists = report
        .warnings
        .iter()
        .any(|w| w.contains("`create` would be refused"));
    if report.errors.is_empty() && !exists && spec.sink_uri.is_some() {
        let body = spec.create_body();
        match client
            .post_with_query(&["changefeeds"], &[("dry_run", "true")], &body)
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(e.code, exit::REJECTED | exit::CONFLICT | exit::NOT_FOUND) => report
                .errors
                .push(format!("create would be refused: {}", e.message)),
            Err(e) => return Err(e),
        }
    }
    match context.output {
        OutputFormat::Table => print!("{}", mask_text(&render(&report))),
        format => print_doc(format, &report)?,
    }
    Ok(if report.errors.is_empty() {
        0
    } else {
        exit::CHECK_FAILED
    })
}

impl Report {
    /// Every table the rules select, eligible or not.
    fn selected(&self) -> Vec<TableId> {
        self.eligible_tables
            .iter()
            .cloned()
            .chain(self.ineligible_tables.iter().map(table_name))
            .filter_map(|name| {
                let (schema, table) = name.split_once('.')?;
                Some(TableId::new(schema, table))
            })
            .collect()
    }
}

/// The include rules naming one exact table (no wildcard) that no selected table matches,
/// as `create` checks them. A rule whose table a later `!` rule excludes is not missing.
fn missing_tables(rules: &[String], selected: &[TableId]) -> Vec<String> {
    let Ok(all) = TableFilter::new(rules) else {
        return Vec::new();
    };
    rules
        .iter()
        .filter(|rule| !rule.starts_with('!') && !rule.contains(['*', '?', '[']))
        .filter(|rule| {
            let Ok(single) = TableFilter::new(&[rule.as_str()]) else {
                return false;
            };
            let excluded_later = rule
                .split_once('.')
                .is_some_and(|(schema, table)| !all.matches(&TableId::new(schema, table)));
            !excluded_later && !selected.iter().any(|t| single.matches(t))
        })
        .cloned()
        .collect()
}

/// Folds the answer of `POST /verify-table` into the report.
fn read_verification(answer: &Value, report: &mut Report) {
    let list = |key: &str| {
        answer
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    report.eligible_tables = list("eligible_tables").iter().map(table_name).collect();
    report.ineligible_tables = list("ineligible_tables");
    for table in &report.ineligible_tables {
        report.warnings.push(format!(
            "{} replicates inserts and truncates only: {}",
            table_name(table),
            cell(table.get("reason"))
        ));
    }
    if report.eligible_tables.is_empty() && report.ineligible_tables.is_empty() {
        report
            .errors
            .push("tables: the rules select no table of the source".into());
    }
    for warning in list("warnings") {
        report.warnings.push(cell(Some(&warning)));
    }
}

/// `schema.table` of an entry that is a string or `{"table": …}`.
fn table_name(entry: &Value) -> String {
    match entry {
        Value::String(s) => s.clone(),
        other => cell(other.get("table")),
    }
}

fn render(report: &Report) -> String {
    let mut out = String::new();
    for error in &report.errors {
        out.push_str(&format!("error: {error}\n"));
    }
    for warning in &report.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    if !report.eligible_tables.is_empty() {
        out.push_str(&format!(
            "tables ({}): {}\n",
            report.eligible_tables.len(),
            report.eligible_tables.join(", ")
        ));
    }
    out.push_str(&format!(
        "{}: {} error(s), {} warning(s)\n",
        if report.errors.is_empty() {
            "ok"
        } else {
            "invalid"
        },
        report.errors.len(),
        report.warnings.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_sorts_tables_into_errors_and_warnings() {
        let mut report = Report::default();
        read_verification(
            &json!({
                "eligible_tables": ["public.a", {"table": "public.b"}],
                "ineligible_tables": [{"table": "public.log", "reason": "no primary key"}]
            }),
            &mut report,
        );
        assert_eq!(report.eligible_tables, ["public.a", "public.b"]);
        assert_eq!(
            report.warnings,
            ["public.log replicates inserts and truncates only: no primary key"]
        );
        assert!(report.errors.is_empty());
        let rules: Vec<String> = [
            "public.a",
            "public.gone",
            "public.x*",
            "public.hidden",
            "!public.hidden",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(missing_tables(&rules, &report.selected()), ["public.gone"]);
        let mut empty = Report::default();
        read_verification(&json!({}), &mut empty);
        assert_eq!(empty.errors.len(), 1);
        assert!(render(&empty).contains("invalid: 1 error(s)"));
    }
}
