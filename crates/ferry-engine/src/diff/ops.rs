//! The operations on diffs: create, list, get, stop, resume, delete, and restoring the
//! running ones when the server starts. One diff runs per changefeed at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_core::{SourceOptions, TableId, TablePlan};
use ferry_meta::Collection;
use tokio::sync::watch;
use tracing::info;

use super::task::DiffTask;
use super::{
    diff_key, Diff, DiffOptions, DiffProgress, DiffRecord, DiffState, SampleKeys, TableDiff,
    DEFAULT_ROWS_PER_CHUNK,
};
use crate::config::ConfigError;
use crate::engine::{feed_key, stop, Engine, Task};
use crate::error::EngineError;
use crate::lifecycle::Refusal;
use crate::runner::tables::{self, RuntimeState};
use crate::status::{now_us, rfc3339, FeedState, Phase};

/// Most rows per chunk: a chunk's keys are held in memory.
const MAX_ROWS_PER_CHUNK: u64 = 1_000_000;

impl Engine {
    /// Starts a diff of changefeed `namespace/id` (see [`crate::diff`]).
    pub async fn create_diff(
        self: &Arc<Self>,
        namespace: &str,
        id: &str,
        options: DiffOptions,
    ) -> Result<Diff, EngineError> {
        let config = self.config(namespace, id)?;
        let refused = |refusal| EngineError::Refused {
            id: id.to_string(),
            refusal,
        };
        if self.with_feed(namespace, id, |f| f.status.state())? == FeedState::Finished {
            return Err(refused(Refusal::Finished));
        }
        let key = feed_key(namespace, id);
        let runtime: RuntimeState = self
            .meta
            .get(Collection::ChangefeedState, &key)?
            .unwrap_or_default();
        if runtime.phase != Some(Phase::Streaming) {
            return Err(refused(Refusal::Copying));
        }
        let rows_per_chunk = options.rows_per_chunk.unwrap_or(DEFAULT_ROWS_PER_CHUNK);
        if !(1..=MAX_ROWS_PER_CHUNK).contains(&rows_per_chunk) {
            return Err(EngineError::InvalidConfig(ConfigError::InvalidOption {
                field: "rows_per_chunk",
                problem: "must be between 1 and 1000000",
            }));
        }
        if options.rate_limit == Some(0) {
            return Err(EngineError::InvalidConfig(ConfigError::InvalidOption {
                field: "rate_limit",
                problem: "must be > 0 (rows per second; leave it out for no limit)",
            }));
        }
        let planned = tables::planned_tables(&runtime);
        let wanted = match options.tables {
            Some(wanted) if !wanted.is_empty() => wanted,
            _ => planned.clone(),
        };
        if let Some(unknown) = wanted.iter().find(|t| !planned.contains(t)) {
            return Err(EngineError::TableNotFound(format!(
                "{unknown} in changefeed {id}"
            )));
        }
        if let Some(running) = self.running_diff(namespace, id) {
            return Err(EngineError::DiffRefused(format!(
                "diff {running} of changefeed {id} is running; stop it or wait for it"
            )));
        }
        let sink = &config.sink_uri;
        let readable = self
            .connectors
            .sink(sink)
            .reader(sink, &key)
            .await
            .map_err(|e| EngineError::SinkUnusable(ferry_core::error_chain(&e)))?;
        if readable.is_none() {
            return Err(EngineError::DiffUnsupported(format!(
                "the sink {} cannot be read back, so there is nothing to compare the source \
                 with: a diff needs a database target",
                sink.masked()
            )));
        }
        let plans = self
            .plan_diff(&config, &wanted, rows_per_chunk, options.repair)
            .await?;
        let tables: Vec<TableDiff> = plans
            .iter()
            .map(|plan| TableDiff {
                table: plan.table.to_string(),
                missing: 0,
                extra: 0,
                different: 0,
                sample_keys: SampleKeys::default(),
                repaired: false,
                chunks: plan.chunks.len() as u32,
                chunks_done: 0,
            })
            .collect();
        let repair = options.repair;
        let diff = self.launch(config, |diff_id| DiffRecord {
            diff: Diff {
                id: diff_id,
                changefeed: id.to_string(),
                state: DiffState::Running,
                repair,
                rows_per_chunk,
                rate_limit: options.rate_limit,
                created_at: rfc3339(now_us()),
                finished_at: None,
                error: None,
                progress: DiffProgress {
                    tables: plans.len() as u32,
                    chunks: plans.iter().map(|p| p.chunks.len() as u64).sum(),
                    ..DiffProgress::default()
                },
                tables,
            },
            plans,
        })?;
        info!(changefeed = %key, diff = %diff.id, repair, "diff started");
        Ok(diff)
    }

    /// Every diff of the changefeed, oldest first.
    pub fn diffs(&self, namespace: &str, id: &str) -> Result<Vec<Diff>, EngineError> {
        self.config(namespace, id)?;
        let mut diffs: Vec<Diff> = self
            .stored_diffs(namespace, id)?
            .into_iter()
            .map(|(_, r)| r.diff)
            .collect();
        diffs.sort_by_key(|d| d.id.parse::<u64>().unwrap_or(u64::MAX));
        Ok(diffs)
    }

    /// One diff.
    pub fn diff(&self, namespace: &str, id: &str, diff_id: &str) -> Result<Diff, EngineError> {
        Ok(self.diff_record(namespace, id, diff_id)?.diff)
    }

    /// Stops a running diff; a resume continues after its last finished chunk.
    pub async fn stop_diff(
        &self,
        namespace: &str,
        id: &str,
        diff_id: &str,
    ) -> Result<Diff, EngineError> {
        let record = self.diff_record(namespace, id, diff_id)?;
        if record.diff.state != DiffState::Running {
            return Err(EngineError::DiffRefused(format!(
                "diff {diff_id} is {}, not running",
                state_name(record.diff.state)
            )));
        }
        let key = diff_key(namespace, id, diff_id);
        self.stop_diff_task(&key).await;
        // Read again: the task saved its last chunk before it stopped.
        let mut record = self.diff_record(namespace, id, diff_id)?;
        if record.diff.state == DiffState::Running {
            record.diff.state = DiffState::Stopped;
            record.diff.progress.eta_seconds = None;
            self.meta.put(Collection::Diffs, &key, &record)?;
        }
        info!(diff = %key, "diff stopped");
        Ok(record.diff)
    }

    /// Resumes a stopped or failed diff after its last finished chunk.
    pub fn resume_diff(
        self: &Arc<Self>,
        namespace: &str,
        id: &str,
        diff_id: &str,
    ) -> Result<Diff, EngineError> {
        let config = self.config(namespace, id)?;
        let mut record = self.diff_record(namespace, id, diff_id)?;
        if !matches!(record.diff.state, DiffState::Stopped | DiffState::Failed) {
            return Err(EngineError::DiffRefused(format!(
                "diff {diff_id} is {}: only a stopped or failed diff resumes",
                state_name(record.diff.state)
            )));
        }
        record.diff.state = DiffState::Running;
        record.diff.error = None;
        let diff = self.launch(config, |_| record)?;
        info!(changefeed = %feed_key(namespace, id), diff = %diff_id, "diff resumed");
        Ok(diff)
    }

    /// Deletes a diff (stopping it first when it runs).
    pub async fn delete_diff(
        &self,
        namespace: &str,
        id: &str,
        diff_id: &str,
    ) -> Result<(), EngineError> {
        self.diff_record(namespace, id, diff_id)?;
        let key = diff_key(namespace, id, diff_id);
        self.stop_diff_task(&key).await;
        self.meta.delete(Collection::Diffs, &key)?;
        info!(diff = %key, "diff deleted");
        Ok(())
    }

    /// Stops and forgets every diff of a deleted changefeed.
    pub(crate) async fn drop_diffs(&self, namespace: &str, id: &str) -> Result<(), EngineError> {
        for (key, _) in self.stored_diffs(namespace, id)? {
            self.stop_diff_task(&key).await;
            self.meta.delete(Collection::Diffs, &key)?;
        }
        Ok(())
    }

    /// Starts again the diffs that were running when the server stopped.
    pub(crate) fn restore_diffs(self: &Arc<Self>) -> Result<(), EngineError> {
        let stored: Vec<(String, DiffRecord)> = self.meta.list(Collection::Diffs)?;
        for (key, record) in stored {
            if record.diff.state != DiffState::Running {
                continue;
            }
            let mut parts = key.splitn(3, '/');
            let (Some(namespace), Some(id)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(config) = self.config(namespace, id) else {
                continue;
            };
            info!(diff = %key, chunks_done = record.diff.progress.chunks_done, "resuming diff");
            let task = self.diff_task(config, key.clone(), record);
            self.diffs.lock().expect("diffs lock").insert(key, task);
        }
        Ok(())
    }

    /// Stops every diff task (they stay `running` in the store and resume on the next
    /// start).
    pub(crate) async fn stop_diff_tasks(&self) {
        let tasks: Vec<Task> = std::mem::take(&mut *self.diffs.lock().expect("diffs lock"))
            .into_values()
            .collect();
        futures::future::join_all(tasks.into_iter().map(stop)).await;
    }

    /// Saves and starts the diff `record` makes (given the id of a new diff), unless
    /// another diff of the changefeed runs: checked and started under the diffs lock, so
    /// two requests cannot both start one.
    fn launch(
        self: &Arc<Self>,
        config: crate::ChangefeedConfig,
        record: impl FnOnce(String) -> DiffRecord,
    ) -> Result<Diff, EngineError> {
        let (namespace, id) = (config.namespace.clone(), config.id.clone());
        let mut diffs = self.diffs.lock().expect("diffs lock");
        if let Some(running) = running_in(&diffs, &namespace, &id) {
            return Err(EngineError::DiffRefused(format!(
                "diff {running} of changefeed {id} is running; stop it or wait for it"
            )));
        }
        let record = record(self.next_diff_id(&namespace, &id)?);
        let key = diff_key(&namespace, &id, &record.diff.id);
        self.meta.put(Collection::Diffs, &key, &record)?;
        let diff = record.diff.clone();
        let task = self.diff_task(config, key.clone(), record);
        diffs.insert(key, task);
        Ok(diff)
    }

    /// Spawns the task of a saved diff.
    fn diff_task(
        self: &Arc<Self>,
        config: crate::ChangefeedConfig,
        key: String,
        record: DiffRecord,
    ) -> Task {
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = DiffTask {
            engine: self.clone(),
            config,
            key,
            record,
            stop: stop_rx,
        };
        Task {
            stop: stop_tx,
            handle: tokio::spawn(task.run()),
            repairs: None,
        }
    }

    async fn stop_diff_task(&self, key: &str) {
        let task = self.diffs.lock().expect("diffs lock").remove(key);
        if let Some(task) = task {
            stop(task).await;
        }
    }

    /// The id of the changefeed's running diff, if one runs.
    fn running_diff(&self, namespace: &str, id: &str) -> Option<String> {
        running_in(&self.diffs.lock().expect("diffs lock"), namespace, id)
    }

    fn stored_diffs(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Vec<(String, DiffRecord)>, EngineError> {
        let prefix = format!("{}/", feed_key(namespace, id));
        Ok(self
            .meta
            .list::<DiffRecord>(Collection::Diffs)?
            .into_iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .collect())
    }

    fn diff_record(
        &self,
        namespace: &str,
        id: &str,
        diff_id: &str,
    ) -> Result<DiffRecord, EngineError> {
        self.config(namespace, id)?;
        self.meta
            .get(Collection::Diffs, &diff_key(namespace, id, diff_id))?
            .ok_or_else(|| EngineError::DiffNotFound(format!("{diff_id} of changefeed {id}")))
    }

    /// The next diff id of a changefeed: one more than the highest so far.
    fn next_diff_id(&self, namespace: &str, id: &str) -> Result<String, EngineError> {
        let highest = self
            .stored_diffs(namespace, id)?
            .iter()
            .filter_map(|(_, r)| r.diff.id.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        Ok((highest + 1).to_string())
    }

    /// The chunks of each table, as the source plans them; refuses `repair` for tables
    /// without a key.
    async fn plan_diff(
        &self,
        config: &crate::ChangefeedConfig,
        wanted: &[TableId],
        rows_per_chunk: u64,
        repair: bool,
    ) -> Result<Vec<TablePlan>, EngineError> {
        let uri = &config.source_uri;
        let connector = self.connectors.source(uri).map_err(EngineError::source)?;
        let options = SourceOptions {
            replication_timeout: self.options.replication_timeout,
            partitions: config.options.partitions,
        };
        let mut source = connector
            .open(uri, &format!("{}/diff", config.key()), &options)
            .await
            .map_err(EngineError::source)?;
        let selected = source
            .select_tables(&config.filter())
            .await
            .map_err(EngineError::source)?;
        let mut plans = Vec::new();
        let mut keyless = Vec::new();
        for table in wanted {
            let Some(found) = selected.iter().find(|t| &t.schema.id == table) else {
                return Err(EngineError::TableNotFound(format!(
                    "{table} (no longer selected on the source)"
                )));
            };
            if !found.schema.has_key() {
                keyless.push(table.to_string());
            }
            plans.push(
                source
                    .plan_diff(found, rows_per_chunk)
                    .await
                    .map_err(EngineError::source)?,
            );
        }
        if repair && !keyless.is_empty() {
            return Err(EngineError::DiffUnsupported(format!(
                "repair needs a key to match rows by, and these tables have none: {}; diff \
                 them without repair (and re-sync them if they differ)",
                keyless.join(", ")
            )));
        }
        Ok(plans)
    }
}

/// The id of the running diff of changefeed `namespace/id` among `diffs`.
fn running_in(diffs: &BTreeMap<String, Task>, namespace: &str, id: &str) -> Option<String> {
    let prefix = format!("{}/", feed_key(namespace, id));
    diffs
        .iter()
        .find(|(key, task)| key.starts_with(&prefix) && !task.handle.is_finished())
        .map(|(key, _)| key[prefix.len()..].to_string())
}

fn state_name(state: DiffState) -> &'static str {
    match state {
        DiffState::Running => "running",
        DiffState::Finished => "finished",
        DiffState::Stopped => "stopped",
        DiffState::Failed => "failed",
    }
}
