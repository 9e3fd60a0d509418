//! A running diff: its chunks one after the other, each compared at a consistent point,
//! re-checked, counted, repaired, and saved (see the module docs of [`super`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{
    ChunkData, ChunkSpec, RowChange, SnapshotExport, Source, SourceOptions, SourceTable, TablePlan,
    TableSchema, TargetReader, Value,
};
use ferry_meta::Collection;
use futures::TryStreamExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::compare::{sample, Found, Key, Side};
use super::{DiffRecord, DiffState, SAMPLE_KEYS};
use crate::config::ChangefeedConfig;
use crate::engine::Engine;
use crate::runner::repair::{RepairAnswer, RepairRequest, RepairRows};
use crate::status::{now_us, rfc3339};

/// Times a chunk that differs is read again before its differences count: a row the
/// stream changed between the two sides' reads differs once, not every time.
pub(super) const RECHECKS: usize = 3;

/// How long a diff waits for the changefeed's checkpoint to reach a snapshot's position
/// (or for a stopped changefeed to run again) before it fails.
const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// How often the checkpoint is looked at while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Times a repair is asked again because the changefeed's task restarted meanwhile.
const REPAIR_ATTEMPTS: usize = 5;

/// Why a diff's run ended without finishing.
pub(super) enum Interrupted {
    /// Asked to stop.
    Stopped,
    /// An error, for the diff's `error`.
    Failed(String),
}

impl<E: std::error::Error + 'static> From<E> for Interrupted {
    fn from(e: E) -> Self {
        Interrupted::Failed(ferry_core::error_chain(&e))
    }
}

/// One diff's task.
pub(super) struct DiffTask {
    pub(super) engine: Arc<Engine>,
    pub(super) config: ChangefeedConfig,
    pub(super) key: String,
    pub(super) record: DiffRecord,
    pub(super) stop: watch::Receiver<bool>,
}

impl DiffTask {
    /// Runs until finished, stopped or failed; saves the outcome (a stop is saved by whoever
    /// asked for it).
    pub(super) async fn run(mut self) {
        let outcome = self.compare_all().await;
        let diff = &mut self.record.diff;
        match outcome {
            Ok(()) => {
                diff.state = DiffState::Finished;
                diff.finished_at = Some(rfc3339(now_us()));
                diff.progress.eta_seconds = None;
                info!(diff = %self.key, "diff finished");
            }
            Err(Interrupted::Stopped) => return,
            Err(Interrupted::Failed(error)) => {
                warn!(diff = %self.key, error = %error, "diff failed");
                diff.state = DiffState::Failed;
                diff.error = Some(error);
                diff.progress.eta_seconds = None;
            }
        }
        self.save();
    }

    fn save(&self) {
        if let Err(e) = self
            .engine
            .meta
            .put(Collection::Diffs, &self.key, &self.record)
        {
            warn!(diff = %self.key, error = %ferry_core::error_chain(&e), "could not save the diff");
        }
    }

    fn stopped(&self) -> Result<(), Interrupted> {
        if *self.stop.borrow() {
            return Err(Interrupted::Stopped);
        }
        Ok(())
    }

    async fn compare_all(&mut self) -> Result<(), Interrupted> {
        let feed = self.config.key();
        let uri = &self.config.source_uri;
        let connector = self.engine.connectors.source(uri)?;
        let options = SourceOptions {
            replication_timeout: self.engine.options.replication_timeout,
            partitions: self.config.options.partitions,
        };
        // Its own name: the snapshots' temporary slots never meet the changefeed's.
        let mut source = connector
            .open(
                uri,
                &format!("{feed}/diff/{}", self.record.diff.id),
                &options,
            )
            .await?;
        let selected = source.select_tables(&self.config.filter()).await?;
        let sink = &self.config.sink_uri;
        let mut reader = self
            .engine
            .connectors
            .sink(sink)
            .reader(sink, &feed)
            .await?
            .ok_or_else(|| Interrupted::Failed(format!("{} cannot be read", sink.masked())))?;
        let started = Instant::now();
        let done_at_start = self.record.diff.progress.chunks_done;
        let rows_at_start = self.record.diff.progress.rows_compared;
        for t in 0..self.record.plans.len() {
            let plan = self.record.plans[t].clone();
            let first = self.record.diff.tables[t].chunks_done as usize;
            if first >= plan.chunks.len() {
                continue;
            }
            let schema = table_schema(&selected, &plan)?;
            for chunk in &plan.chunks[first..] {
                self.stopped()?;
                let (found, rows) = self
                    .compare_chunk(source.as_mut(), reader.as_mut(), &schema, &plan, chunk)
                    .await?;
                let repaired = if self.record.diff.repair && !found.is_empty() {
                    self.repair(source.as_mut(), &schema, &plan, chunk, &found)
                        .await?;
                    true
                } else {
                    false
                };
                self.note(t, &found, rows, repaired, started, done_at_start);
                self.save();
                self.pace(started, rows_at_start).await?;
            }
        }
        Ok(())
    }

    /// Records one compared chunk of table number `t`.
    fn note(
        &mut self,
        t: usize,
        found: &Found,
        rows: u64,
        repaired: bool,
        started: Instant,
        done_at_start: u64,
    ) {
        let diff = &mut self.record.diff;
        let table = &mut diff.tables[t];
        table.missing += found.missing.values().sum::<u64>();
        table.extra += found.extra.values().sum::<u64>();
        table.different += found.different.values().sum::<u64>();
        let keys = &mut table.sample_keys;
        for (all, kind) in [
            (&mut keys.missing, &found.missing),
            (&mut keys.extra, &found.extra),
            (&mut keys.different, &found.different),
        ] {
            let room = SAMPLE_KEYS.saturating_sub(all.len());
            all.extend(sample(kind, room));
        }
        table.repaired |= repaired;
        table.chunks_done += 1;
        if table.chunks_done == table.chunks {
            diff.progress.tables_done += 1;
        }
        let progress = &mut diff.progress;
        progress.chunks_done += 1;
        progress.rows_compared += rows;
        let done_now = progress.chunks_done - done_at_start;
        let left = progress.chunks.saturating_sub(progress.chunks_done);
        progress.eta_seconds = (done_now > 0).then(|| {
            let per_chunk = started.elapsed().as_secs_f64() / done_now as f64;
            (per_chunk * left as f64).ceil() as u64
        });
    }

    /// Sleeps as long as the rate limit asks, counting the rows compared since `started`
    /// (when `rows_at_start` were compared).
    async fn pace(&self, started: Instant, rows_at_start: u64) -> Result<(), Interrupted> {
        let Some(rate) = self.record.diff.rate_limit else {
            return Ok(());
        };
        let rows = self.record.diff.progress.rows_compared - rows_at_start;
        let due = started + Duration::from_secs_f64(rows as f64 / rate.max(1) as f64);
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep_until(due) => Ok(()),
            _ = stop.changed() => Err(Interrupted::Stopped),
        }
    }

    /// The persistent differences of one chunk, and the source rows it held.
    async fn compare_chunk(
        &self,
        source: &mut dyn Source,
        reader: &mut dyn TargetReader,
        schema: &TableSchema,
        plan: &TablePlan,
        chunk: &ChunkSpec,
    ) -> Result<(Found, u64), Interrupted> {
        let mut suspects: Option<Found> = None;
        let mut rows = 0;
        for _ in 0..=RECHECKS {
            self.stopped()?;
            let (at, ours) = read_source(source, schema, plan, chunk).await?;
            self.wait_applied(&at).await?;
            let mut theirs = Side::default();
            let mut stream = reader
                .read_chunk(schema, plan.key_column.as_deref(), chunk)
                .await?;
            while let Some(row) = stream.try_next().await? {
                theirs.add(schema, row);
            }
            let found = Found::between(&ours, &theirs);
            let now = match suspects.take() {
                None => {
                    rows = ours.count;
                    found
                }
                Some(before) => before.persisting(found),
            };
            if now.is_empty() {
                return Ok((now, rows));
            }
            suspects = Some(now);
        }
        Ok((suspects.unwrap_or_default(), rows))
    }

    /// Waits until the changefeed's checkpoint covers `at`.
    async fn wait_applied(&self, at: &ferry_core::Position) -> Result<(), Interrupted> {
        let deadline = Instant::now() + WAIT_LIMIT;
        let (namespace, id) = (&self.config.namespace, &self.config.id);
        loop {
            self.stopped()?;
            let checkpoint = self
                .engine
                .with_feed(namespace, id, |f| f.status.checkpoint())?;
            if checkpoint.is_some_and(|c| c.covers(at)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Interrupted::Failed(format!(
                    "the changefeed's checkpoint did not reach the source snapshot's position \
                     {at} within {}: is the changefeed running? Resume the diff once it is",
                    humantime::format_duration(WAIT_LIMIT)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Writes the source's current rows for the keys in `found` through the changefeed's
    /// applier, read while it holds still (see `runner/repair.rs`).
    async fn repair(
        &self,
        source: &mut dyn Source,
        schema: &TableSchema,
        plan: &TablePlan,
        chunk: &ChunkSpec,
        found: &Found,
    ) -> Result<(), Interrupted> {
        let schema = Arc::new(schema.clone());
        let wanted: HashSet<&Key> = found.keys().collect();
        for _ in 0..REPAIR_ATTEMPTS {
            self.stopped()?;
            let (holding, held) = oneshot::channel();
            let (send_rows, rows) = oneshot::channel();
            self.send_repair(RepairRequest { holding, rows }).await?;
            match tokio::time::timeout(WAIT_LIMIT, held).await {
                Ok(Ok(())) => {}
                // The changefeed's task restarted before it held still: ask again.
                Ok(Err(_)) => continue,
                Err(_) => {
                    return Err(Interrupted::Failed(format!(
                        "the changefeed did not take the repair of {} within {} (is it \
                         copying tables?); resume the diff later",
                        schema.id,
                        humantime::format_duration(WAIT_LIMIT)
                    )))
                }
            }
            let export = source.export_snapshot().await?;
            let snapshot = export.position();
            let changes = repair_changes(&schema, &wanted, export.as_ref(), plan, chunk).await?;
            drop(export);
            let (answer, answered) = oneshot::channel();
            let handed = send_rows.send(RepairRows {
                snapshot,
                schema: schema.clone(),
                changes,
                answer,
            });
            if handed.is_err() {
                continue;
            }
            match answered.await {
                Ok(RepairAnswer::Applied) => return Ok(()),
                // The changefeed restarted meanwhile, or moved past the snapshot.
                Err(_) | Ok(RepairAnswer::Stale) => continue,
                Ok(RepairAnswer::Failed(error)) => {
                    return Err(Interrupted::Failed(format!(
                        "the target refused the repair of {}: {error}",
                        schema.id
                    )))
                }
            }
        }
        Err(Interrupted::Failed(format!(
            "the changefeed restarted during every attempt to repair {}; resume the diff",
            schema.id
        )))
    }

    /// Hands `request` to the changefeed's applier, waiting for it to run.
    async fn send_repair(&self, request: RepairRequest) -> Result<(), Interrupted> {
        let deadline = Instant::now() + WAIT_LIMIT;
        let (namespace, id) = (&self.config.namespace, &self.config.id);
        loop {
            self.stopped()?;
            let sender = self.engine.with_feed(namespace, id, |f| {
                f.task.as_ref().and_then(|t| t.repairs.clone())
            })?;
            if let Some(sender) = sender {
                // A task that ended drops the request: the caller sees no answer and asks
                // again.
                let _ = sender.send(request).await;
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Interrupted::Failed(
                    "the changefeed is not running, so it cannot apply repairs; resume it, \
                     then the diff"
                        .into(),
                ));
            }
            tokio::time::sleep(POLL * 10).await;
        }
    }
}

/// The source's rows of `chunk` in `export` for the `wanted` keys, as upserts, and deletes
/// by key for the wanted keys the source no longer has.
async fn repair_changes(
    schema: &Arc<TableSchema>,
    wanted: &HashSet<&Key>,
    export: &dyn SnapshotExport,
    plan: &TablePlan,
    chunk: &ChunkSpec,
) -> Result<Vec<RowChange>, Interrupted> {
    let mut rows = match export
        .reader()
        .await?
        .read(schema, plan, chunk, None)
        .await?
    {
        ChunkData::Rows(rows) => rows,
        ChunkData::Bulk { .. } => {
            return Err(Interrupted::Failed(
                "the source sent a bulk chunk for rows".into(),
            ))
        }
    };
    let mut changes = Vec::new();
    let mut seen = HashSet::new();
    while let Some(row) = rows.try_next().await? {
        let key: Key = schema.key.iter().map(|&k| row[k].clone()).collect();
        if wanted.contains(&key) {
            seen.insert(key);
            changes.push(RowChange::Insert {
                table: schema.clone(),
                new: row,
            });
        }
    }
    for key in wanted.iter().filter(|k| !seen.contains(**k)) {
        let mut old = vec![Value::Null; schema.columns.len()];
        for (&k, value) in schema.key.iter().zip(key.iter()) {
            old[k] = value.clone();
        }
        changes.push(RowChange::Delete {
            table: schema.clone(),
            old,
        });
    }
    Ok(changes)
}

/// The table of `plan` as the source has it now.
fn table_schema(selected: &[SourceTable], plan: &TablePlan) -> Result<TableSchema, Interrupted> {
    selected
        .iter()
        .find(|t| t.schema.id == plan.table)
        .map(|t| t.schema.clone())
        .ok_or_else(|| {
            Interrupted::Failed(format!(
                "table {} is no longer replicated from the source",
                plan.table
            ))
        })
}

/// One chunk's rows in a new source snapshot, with the snapshot's position.
async fn read_source(
    source: &mut dyn Source,
    schema: &TableSchema,
    plan: &TablePlan,
    chunk: &ChunkSpec,
) -> Result<(ferry_core::Position, Side), Interrupted> {
    let export = source.export_snapshot().await?;
    let at = export.position();
    let mut side = Side::default();
    match export
        .reader()
        .await?
        .read(schema, plan, chunk, None)
        .await?
    {
        ChunkData::Rows(mut rows) => {
            while let Some(row) = rows.try_next().await? {
                side.add(schema, row);
            }
        }
        ChunkData::Bulk { .. } => {
            return Err(Interrupted::Failed(
                "the source sent a bulk chunk for rows".into(),
            ))
        }
    }
    Ok((at, side))
}
