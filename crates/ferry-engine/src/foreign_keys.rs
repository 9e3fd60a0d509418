//! Foreign keys on the target: created when a changefeed finishes and on request while it
//! does not run, never with the tables (batches merged per table may write a child before
//! its parent). The connectors do the work (`Connectors::create_foreign_keys`).

use ferry_core::{Connectors, ForeignKeyOutcome};
use serde::Serialize;
use tracing::{info, warn};

use crate::config::ChangefeedConfig;

/// One source foreign key a request looked at.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ForeignKeyReport {
    /// The table holding it, schema-qualified.
    pub table: String,
    /// The constraint's name.
    pub name: String,
    /// The table it references, schema-qualified.
    pub references: String,
    /// What became of it.
    pub outcome: Outcome,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a request did with one foreign key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Created and validated against the target's rows.
    Created,
    /// The target table has a constraint of that name already.
    Exists,
    /// Not created: `reason` says why.
    Skipped,
}

/// The answer of `POST /changefeeds/{id}/foreign-keys/create`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ForeignKeysReport {
    /// Every foreign key the source has on the replicated tables.
    pub foreign_keys: Vec<ForeignKeyReport>,
}

/// Creates the source's foreign keys between `config`'s tables on the target; each key
/// skipped is logged with its reason.
pub(crate) async fn create(
    connectors: &dyn Connectors,
    config: &ChangefeedConfig,
) -> Result<ForeignKeysReport, String> {
    let keys = connectors
        .create_foreign_keys(&config.source_uri, &config.sink_uri, &config.filter())
        .await?;
    let mut report = Vec::with_capacity(keys.len());
    for key in keys {
        let (outcome, reason) = match key.outcome {
            ForeignKeyOutcome::Created => (Outcome::Created, None),
            ForeignKeyOutcome::Exists => (Outcome::Exists, None),
            ForeignKeyOutcome::Skipped(why) => {
                warn!(changefeed = %config.key(), table = %key.table, foreign_key = %key.name, reason = %why, "foreign key not created on the target");
                (Outcome::Skipped, Some(why))
            }
        };
        report.push(ForeignKeyReport {
            table: key.table,
            name: key.name,
            references: key.references,
            outcome,
            reason,
        });
    }
    let created = report
        .iter()
        .filter(|k| k.outcome == Outcome::Created)
        .count();
    info!(changefeed = %config.key(), foreign_keys = report.len(), created, "target foreign keys created");
    Ok(ForeignKeysReport {
        foreign_keys: report,
    })
}
