//! The files `create`, `update` and `check` read and `get` writes: a changefeed's or a
//! source's configuration in YAML (JSON is YAML too).
//!
//! ```yaml
//! id: orders
//! source_uri: postgres://app:secret@127.0.0.1:5432/shop   # or: source: shop-db
//! sink_uri: postgres://app:secret@127.0.0.1:5433/analytics
//! tables: ["public.*", "!public.audit_*"]
//! options: {snapshot_workers: 4}
//! target_position: 0/16B3748                              # optional: finish there
//! snapshot_only: false                                    # optional: copy once, finish
//! start: false                                            # create only
//! ```
//!
//! Unknown keys are refused by name. [`ChangefeedSpec::problems`] checks locally what needs
//! no server (id syntax, URI schemes, filter rules, option ranges) so `check` and `create`
//! fail fast and offline on a typo. URIs stay plain strings here and are never put in an
//! error message: only [`ferry_core`]'s parse errors (which never quote the URI) are.
//!
//! Passwords: `get` prints URIs masked (`postgres://app:***@…`). A masked URI left exactly
//! as printed means "unchanged" to `update`, which then does not send it; a masked URI
//! anywhere else is refused, since `***` is not the password.

use ferry_core::{parse_source_uri, SinkUri, TableFilter};
use ferry_engine::config::{validate_id, ChangefeedConfig, Options};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::secrets::{has_masked_password, mask_text};
use super::CliError;

/// A changefeed's configuration as written in a file or given by flags.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangefeedSpec {
    /// Changefeed id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// Namespace; when given it must agree with `--namespace` (or is taken from here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<String>,
    /// A registered source's name (instead of `source_uri`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) source: Option<String>,
    /// The source database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) source_uri: Option<String>,
    /// The sink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sink_uri: Option<String>,
    /// Table filter rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tables: Option<Vec<String>>,
    /// Tuning; omitted keys take their defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) options: Option<Options>,
    /// Finish once the source position `0/…` is applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) target_position: Option<String>,
    /// Copy the tables once and finish, without streaming.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot_only: Option<bool>,
    /// `create` only: `false` creates the changefeed `stopped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) start: Option<bool>,
}

/// A source's configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceSpec {
    /// Source name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// Namespace; when given it must agree with `--namespace` (or is taken from here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<String>,
    /// The database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uri: Option<String>,
}

/// Parses a spec file; `what` names it in errors (`cf.yaml`).
pub(crate) fn parse<T: serde::de::DeserializeOwned + Default>(
    text: &str,
    what: &str,
) -> Result<T, CliError> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    yaml_serde::from_str(text)
        .map_err(|e| CliError::usage(format!("{what}: {}", mask_text(&e.to_string()))))
}

/// Which request a spec is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// `create` and `check`: everything required.
    Create,
    /// `update`: every key optional; `id`, `start` not allowed to change.
    Update,
}

impl ChangefeedSpec {
    /// `other`'s keys where it has them, else `self`'s (flags over a file).
    pub(crate) fn overlay(self, other: ChangefeedSpec) -> ChangefeedSpec {
        ChangefeedSpec {
            id: other.id.or(self.id),
            namespace: other.namespace.or(self.namespace),
            source: other.source.or(self.source),
            source_uri: other.source_uri.or(self.source_uri),
            sink_uri: other.sink_uri.or(self.sink_uri),
            tables: other.tables.or(self.tables),
            options: other.options.or(self.options),
            target_position: other.target_position.or(self.target_position),
            snapshot_only: other.snapshot_only.or(self.snapshot_only),
            start: other.start.or(self.start),
        }
    }

    /// Everything wrong with the spec that can be seen without a server, one message each,
    /// naming the key.
    pub(crate) fn problems(&self, purpose: Purpose) -> Vec<String> {
        let mut problems = Vec::new();
        match (&self.id, purpose) {
            (Some(id), _) => {
                if let Err(e) = validate_id(id) {
                    problems.push(format!("id: {e}"));
                }
            }
            (None, Purpose::Create) => problems.push("id is required".into()),
            (None, Purpose::Update) => {}
        }
        if let Some(namespace) = &self.namespace {
            if let Err(e) = validate_id(namespace) {
                problems.push(format!("namespace: {e}"));
            }
        }
        match (&self.source, &self.source_uri) {
            (Some(_), Some(_)) => {
                problems.push("give either source (a registered source) or source_uri".into())
            }
            (None, None) if purpose == Purpose::Create => problems
                .push("source_uri is required (or source: the name of a registered source)".into()),
            _ => {}
        }
        if let Some(source) = &self.source {
            if let Err(e) = validate_id(source) {
                problems.push(format!("source: {e}"));
            }
        }
        if let Some(uri) = &self.source_uri {
            if let Err(e) = parse_source_uri(uri) {
                problems.push(format!("source_uri: {e}"));
            } else if has_masked_password(uri) && purpose == Purpose::Create {
                problems.push(masked_problem("source_uri"));
            }
        }
        match &self.sink_uri {
            Some(uri) => {
                if let Err(e) = uri.parse::<SinkUri>() {
                    problems.push(format!("sink_uri: {e}"));
                } else if has_masked_password(uri) && purpose == Purpose::Create {
                    problems.push(masked_problem("sink_uri"));
                }
            }
            None if purpose == Purpose::Create => problems.push("sink_uri is required".into()),
            None => {}
        }
        if let Some(tables) = &self.tables {
            if let Err(e) = TableFilter::new(tables) {
                problems.push(format!("tables: {e}"));
            }
        }
        if let Some(Err(e)) = self.parsed_target_position() {
            problems.push(format!("target_position: {e}"));
        }
        if let Err(e) = engine_checks(self) {
            problems.push(e);
        }
        if purpose == Purpose::Update && self.start.is_some() {
            problems
                .push("start applies to create only; use `ferry changefeed pause|resume`".into());
        }
        problems
    }

    /// The body of `POST /changefeeds` (after [`ChangefeedSpec::problems`] found none),
    /// without `namespace` (the request names it).
    pub(crate) fn create_body(&self) -> Value {
        let spec = ChangefeedSpec {
            namespace: None,
            ..self.clone()
        };
        serde_json::to_value(&spec).expect("a spec is plain JSON")
    }

    /// The body of `PUT /changefeeds/{id}`: the keys given whose value differs from
    /// `current` (the server's masked configuration), without `id` and `namespace` (the
    /// request names them). A URI left exactly as `get` printed it is therefore not sent;
    /// the server merges the body into the stored configuration and reads a `***` password
    /// as "keep the stored one". Empty when nothing changes.
    pub(crate) fn update_body(&self, current: &ChangefeedSpec) -> serde_json::Map<String, Value> {
        let given = ChangefeedSpec {
            id: None,
            namespace: None,
            ..self.clone()
        };
        let current = serde_json::to_value(current).expect("a spec is plain JSON");
        let Value::Object(given) = serde_json::to_value(&given).expect("a spec is plain JSON")
        else {
            unreachable!("a spec serializes as an object");
        };
        given
            .into_iter()
            .filter(|(key, value)| current.get(key) != Some(value))
            .collect()
    }

    /// The editable configuration out of `GET /changefeeds/{id}` (masked URIs).
    pub(crate) fn from_server(doc: &Value) -> ChangefeedSpec {
        let config = doc.get("config").unwrap_or(doc);
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(String::from);
        ChangefeedSpec {
            id: text(config, "id").or_else(|| text(doc, "id")),
            namespace: text(config, "namespace").or_else(|| text(doc, "namespace")),
            source: text(config, "source"),
            source_uri: text(config, "source_uri"),
            sink_uri: text(config, "sink_uri"),
            tables: config
                .get("tables")
                .and_then(|t| serde_json::from_value(t.clone()).ok()),
            options: config
                .get("options")
                .and_then(|o| serde_json::from_value(o.clone()).ok()),
            target_position: text(config, "target_position"),
            snapshot_only: config.get("snapshot_only").and_then(Value::as_bool),
            start: None,
        }
    }
}

/// Option ranges (and the combination of `snapshot_only` and `target_position`), checked
/// by the engine's own validation on a probe configuration whose source and sink are
/// placeholders. Built through serde so that keys the engine adds with defaults need no
/// change here.
fn engine_checks(spec: &ChangefeedSpec) -> Result<(), String> {
    let target_position = spec.parsed_target_position().and_then(Result::ok);
    let probe = json!({
        "id": "probe",
        "namespace": "default",
        "source_uri": "postgres://probe@localhost/probe",
        "sink_uri": "blackhole://",
        "tables": [],
        "options": spec.options.clone().unwrap_or_default(),
        "target_position": target_position,
        "snapshot_only": spec.snapshot_only.unwrap_or(false),
        "created_at_us": 0,
    });
    // A probe the engine's configuration no longer reads is this CLI's bug, not the
    // user's: the server checks the same things again on create.
    let Ok(probe) = serde_json::from_value::<ChangefeedConfig>(probe) else {
        return Ok(());
    };
    probe.validate(usize::MAX).map_err(|e| e.to_string())
}

impl ChangefeedSpec {
    /// The target position parsed by the connector of the source URI's scheme; `None`
    /// without a position, or with a named source (the server parses it then).
    fn parsed_target_position(&self) -> Option<Result<ferry_core::Position, String>> {
        use ferry_core::Connectors;
        let text = self.target_position.as_deref()?;
        let uri = parse_source_uri(self.source_uri.as_deref()?).ok()?;
        let connector = ferry_connectors::Registry.source(&uri).ok()?;
        Some(connector.parse_position(text).map_err(|e| e.to_string()))
    }
}

fn masked_problem(field: &str) -> String {
    format!(
        "{field}: the password is the mask *** (copied from `get`?): write the real password \
         (`update` keeps the stored password for ***; `create` has none to keep)"
    )
}

impl SourceSpec {
    /// Problems found without a server.
    pub(crate) fn problems(&self, purpose: Purpose) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.name {
            Some(name) => {
                if let Err(e) = validate_id(name) {
                    problems.push(format!("name: {e}"));
                }
            }
            None if purpose == Purpose::Create => problems.push("name is required".into()),
            None => {}
        }
        if let Some(namespace) = &self.namespace {
            if let Err(e) = validate_id(namespace) {
                problems.push(format!("namespace: {e}"));
            }
        }
        match &self.uri {
            Some(uri) => {
                if let Err(e) = parse_source_uri(uri) {
                    problems.push(format!("uri: {e}"));
                } else if has_masked_password(uri) && purpose == Purpose::Create {
                    problems.push(masked_problem("uri"));
                }
            }
            None if purpose == Purpose::Create => problems.push("uri is required".into()),
            None => {}
        }
        problems
    }
}

/// Turns local problems into one usage error (or none).
pub(crate) fn refuse(problems: Vec<String>, what: &str) -> Result<(), CliError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "{what} is invalid:\n  - {}",
        problems.join("\n  - ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2-secret";

    fn spec(yaml: &str) -> ChangefeedSpec {
        parse(yaml, "cf.yaml").unwrap()
    }

    #[test]
    fn a_complete_spec_has_no_problems() {
        let s = spec(
            "id: orders\nsource_uri: postgres://app:pw@h:5432/shop\n\
             sink_uri: blackhole://\ntables: ['public.*']\noptions: {snapshot_workers: 2}\n",
        );
        assert_eq!(s.problems(Purpose::Create), Vec::<String>::new());
        assert_eq!(s.options.unwrap().snapshot_workers, 2);
    }

    #[test]
    fn problems_name_the_key_and_never_the_password() {
        let s = spec(&format!(
            "id: -bad\nsource_uri: oracle://u:{SECRET}@h/db\nsink_uri: amqp://u:{SECRET}@h/t\n\
             tables: [no_schema]\noptions: {{snapshot_workers: 0}}\ntarget_position: soon\n"
        ));
        let problems = s.problems(Purpose::Create).join("\n");
        for key in [
            "id:",
            "source_uri:",
            "sink_uri:",
            "tables:",
            "options.snapshot_workers",
        ] {
            assert!(problems.contains(key), "{key} in {problems}");
        }
        assert!(!problems.contains(SECRET), "{problems}");
        // A position is parsed in the notation of the source's scheme.
        let s = spec("id: a\nsource_uri: postgres://u@h/db\nsink_uri: blackhole://\ntables: ['public.*']\ntarget_position: soon\n");
        let problems = s.problems(Purpose::Create).join("\n");
        assert!(
            problems.contains("target_position: invalid position"),
            "{problems}"
        );
        let missing = spec("").problems(Purpose::Create).join("\n");
        assert!(missing.contains("id is required") && missing.contains("sink_uri is required"));
        assert!(spec("").problems(Purpose::Update).is_empty());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_masked() {
        let err = parse::<ChangefeedSpec>("id: x\nsink: blackhole://\n", "cf.yaml").unwrap_err();
        assert!(
            err.message.contains("unknown field `sink`"),
            "{}",
            err.message
        );
        let err = parse::<ChangefeedSpec>(
            &format!("id: x\ntables: postgres://u:{SECRET}@h/db\n"),
            "cf.yaml",
        )
        .unwrap_err();
        assert!(!err.message.contains(SECRET), "{}", err.message);
        let err =
            parse::<ChangefeedSpec>("options: {snapshot_wrkers: 1}\n", "cf.yaml").unwrap_err();
        assert!(err.message.contains("snapshot_wrkers"), "{}", err.message);
    }

    #[test]
    fn update_leaves_out_what_does_not_change() {
        let current = ChangefeedSpec {
            id: Some("orders".into()),
            namespace: Some("default".into()),
            source_uri: Some("postgres://app:***@h/shop".into()),
            sink_uri: Some("postgres://app:***@h2/analytics".into()),
            ..Default::default()
        };
        let edited = ChangefeedSpec {
            sink_uri: Some("blackhole://".into()),
            tables: Some(vec!["public.orders".into()]),
            ..current.clone()
        };
        assert_eq!(
            Value::Object(edited.update_body(&current)),
            serde_json::json!({"sink_uri": "blackhole://", "tables": ["public.orders"]})
        );
        assert!(edited.problems(Purpose::Update).is_empty());
        assert!(current.update_body(&current).is_empty());
        let moved = ChangefeedSpec {
            source_uri: Some("postgres://app:***@elsewhere/shop".into()),
            ..Default::default()
        };
        assert_eq!(
            Value::Object(moved.update_body(&current)),
            serde_json::json!({"source_uri": "postgres://app:***@elsewhere/shop"})
        );
        assert!(!moved.problems(Purpose::Create).is_empty());
    }

    #[test]
    fn the_servers_view_becomes_an_editable_spec() {
        let doc = serde_json::json!({
            "config": {"id": "orders", "namespace": "default", "source": "shop-db",
                       "sink_uri": "blackhole://", "tables": ["public.*"],
                       "options": {"snapshot_workers": 2, "batch_max_rows": 10,
                                   "batch_max_wait_ms": 5},
                       "target_position": null, "snapshot_only": false},
            "id": "orders", "state": "running"
        });
        let spec = ChangefeedSpec::from_server(&doc);
        assert_eq!(spec.source.as_deref(), Some("shop-db"));
        assert_eq!(spec.source_uri, None);
        assert_eq!(spec.options.unwrap().batch_max_rows, 10);
        assert_eq!(spec.snapshot_only, Some(false));
    }

    #[test]
    fn flags_override_the_file() {
        let file = spec("id: a\nsink_uri: blackhole://\ntables: [x.y]\n");
        let flags = ChangefeedSpec {
            id: Some("b".into()),
            start: Some(false),
            ..Default::default()
        };
        let merged = file.overlay(flags);
        assert_eq!(merged.id.as_deref(), Some("b"));
        assert_eq!(merged.sink_uri.as_deref(), Some("blackhole://"));
        assert_eq!(merged.start, Some(false));
    }
}
