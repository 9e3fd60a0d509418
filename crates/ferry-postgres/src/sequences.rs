//! Sequences: pgoutput does not carry them, so a target's sequences stay where the copy
//! left them (at their start, for sequences Ferry created) and an INSERT relying on a
//! default id collides with a replicated row. [`sync`] moves every target sequence that
//! belongs to a replicated table (identity columns, serial columns, and sequences named in
//! a column default) to at least the source's value, never backwards.

use ferry_core::{ConnectionUri, TableId};
use serde::Serialize;
use tokio_postgres::Client;

use crate::PgError;

/// One sequence [`sync`] looked at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyncedSequence {
    /// The sequence, schema-qualified.
    pub sequence: String,
    /// The source's last value (`None`: never used there).
    pub source_value: Option<i64>,
    /// The target's last value before the sync (`None`: never used there).
    pub target_before: Option<i64>,
    /// Whether the target's sequence was moved (`setval(…, source_value, true)`).
    pub set: bool,
    /// Why not, when the target has no such sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// The sequences of `tables` on the source with their last values: owned by a column
/// (identity, serial) or named in a column default.
async fn source_sequences(
    client: &Client,
    tables: &[TableId],
) -> Result<Vec<(String, Option<i64>, i64)>, PgError> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let rows = client
        .query(
            "WITH t AS (
               SELECT c.oid FROM unnest($1::text[], $2::text[]) AS r(s, n)
               JOIN pg_catalog.pg_namespace ns ON ns.nspname = r.s
               JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = r.n
             ), seq AS (
               SELECT d.objid AS oid FROM pg_catalog.pg_depend d JOIN t ON t.oid = d.refobjid
               WHERE d.classid = 'pg_catalog.pg_class'::regclass
                 AND d.refclassid = 'pg_catalog.pg_class'::regclass
                 AND d.deptype IN ('a', 'i')
               UNION
               SELECT d.refobjid FROM pg_catalog.pg_attrdef ad JOIN t ON t.oid = ad.adrelid
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::regclass
                 AND d.objid = ad.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass
               JOIN pg_catalog.pg_class sc ON sc.oid = d.refobjid AND sc.relkind = 'S'
             )
             SELECT seq.oid::regclass::text, s.last_value, s.increment_by
             FROM seq JOIN pg_catalog.pg_class c ON c.oid = seq.oid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_catalog.pg_sequences s
               ON s.schemaname = n.nspname AND s.sequencename = c.relname
             ORDER BY 1",
            &[&schemas, &names],
        )
        .await
        .map_err(|e| PgError::new("read the source's sequences", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Sets every target sequence of `tables` to at least the source's value (`setval` with
/// `is_called = true`, so the next `nextval` returns the one after). A sequence the target
/// has further along (or, for a descending one, further down) is left alone.
pub async fn sync(
    source: &ConnectionUri,
    target: &ConnectionUri,
    tables: &[TableId],
) -> Result<Vec<SyncedSequence>, PgError> {
    let source_client = crate::connect::connect(source, "ferry-sequences").await?;
    crate::catalog::prepare_session(&source_client).await?;
    let sequences = source_sequences(&source_client, tables).await?;
    let target_client = crate::connect::connect(target, "ferry-sequences").await?;
    crate::catalog::prepare_session(&target_client).await?;
    let mut out = Vec::with_capacity(sequences.len());
    for (sequence, source_value, increment) in sequences {
        let mut synced = SyncedSequence {
            sequence: sequence.clone(),
            source_value,
            target_before: None,
            set: false,
            missing: None,
        };
        let exists = target_client
            .query_one(
                "SELECT pg_catalog.to_regclass($1) IS NOT NULL",
                &[&sequence],
            )
            .await
            .map_err(|e| PgError::new(format!("look up sequence {sequence} on the target"), e))?;
        if !exists.get::<_, bool>(0) {
            synced.missing = Some("the target has no such sequence".into());
            out.push(synced);
            continue;
        }
        let row = target_client
            .query_one(
                &format!("SELECT last_value, is_called FROM {sequence}"),
                &[],
            )
            .await
            .map_err(|e| PgError::new(format!("read sequence {sequence} on the target"), e))?;
        let (last, called): (i64, bool) = (row.get(0), row.get(1));
        synced.target_before = called.then_some(last);
        if let Some(value) = source_value {
            let behind = match synced.target_before {
                None => true,
                Some(t) if increment > 0 => t < value,
                Some(t) => t > value,
            };
            if behind {
                target_client
                    .query_one(
                        "SELECT pg_catalog.setval($1::text::regclass, $2, true)",
                        &[&sequence, &value],
                    )
                    .await
                    .map_err(|e| {
                        PgError::new(format!("set sequence {sequence} on the target"), e)
                    })?;
                synced.set = true;
            }
        }
        out.push(synced);
    }
    Ok(out)
}
