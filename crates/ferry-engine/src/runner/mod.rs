//! One changefeed's task: snapshot, hand-off, stream; retries and failure.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::{ErrorClass, Lsn, Position, RowChange, Sink, SinkError, SourceEvent, TableId};
use ferry_meta::{Collection, MetaStore};
use ferry_postgres::catalog::{self, SelectedTable};
use ferry_postgres::slot::{self, SlotNames};
use ferry_postgres::snapshot::{self, TablePlan};
use ferry_postgres::source::PgStream;
use ferry_postgres::PgError;
use pgwire_replication::ReplicationClient;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::ChangefeedConfig;
use crate::sink::AnySink;
use crate::status::{now_us, table_entry, FeedState, Phase, StatusCell, TableProgress};

/// What a restart needs to know, persisted in the metadata store.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RuntimeState {
    pub(crate) phase: Option<Phase>,
    pub(crate) plan: Vec<TablePlan>,
}

/// Why one attempt ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error(transparent)]
    Source(#[from] PgError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Meta(#[from] ferry_meta::MetaError),
}

impl RunError {
    fn class(&self) -> ErrorClass {
        match self {
            RunError::Source(e) => e.class,
            RunError::Sink(e) => e.class(),
            RunError::Meta(_) => ErrorClass::Definite,
        }
    }

    /// The error and its causes on one line (no secrets: URIs are always masked).
    fn chain(&self) -> String {
        ferry_core::error_chain(self)
    }
}

/// First and largest retry delays.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub(crate) struct Runner {
    pub(crate) config: ChangefeedConfig,
    pub(crate) meta: Arc<MetaStore>,
    pub(crate) status: StatusCell,
    pub(crate) stop: watch::Receiver<bool>,
}

impl Runner {
    /// Runs until stopped or failed.
    pub(crate) async fn run(mut self) {
        let key = self.config.key();
        let mut delay = BACKOFF_START;
        loop {
            self.status.update(|s| s.state = FeedState::Running);
            let result = self.run_once().await;
            if *self.stop.borrow() {
                self.status.update(|s| s.state = FeedState::Stopped);
                return;
            }
            let Err(err) = result else { return };
            let message = err.chain();
            match err.class() {
                ErrorClass::Transient => {
                    warn!(changefeed = %key, error = %message, retry_in = ?delay, "changefeed error, retrying");
                    self.status.update(|s| {
                        s.state = FeedState::Error;
                        s.last_warning = Some((message, now_us()));
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.changed() => {}
                    }
                    if *self.stop.borrow() {
                        self.status.update(|s| s.state = FeedState::Stopped);
                        return;
                    }
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
                ErrorClass::Definite => {
                    warn!(changefeed = %key, error = %message, "changefeed failed");
                    self.status.update(|s| {
                        s.state = FeedState::Failed;
                        s.last_error = Some((message, now_us()));
                    });
                    return;
                }
            }
        }
    }

    async fn run_once(&mut self) -> Result<(), RunError> {
        let key = self.config.key();
        let names = SlotNames::for_changefeed(&key);
        let catalog_client =
            ferry_postgres::connect::connect(&self.config.source_uri, "ferry-catalog").await?;
        catalog::prepare_session(&catalog_client).await?;
        let state: RuntimeState = self
            .meta
            .get(Collection::ChangefeedState, &key)?
            .unwrap_or_default();
        let mut sink = AnySink::connect(&self.config.sink_uri, &key).await?;
        let session = if state.phase == Some(Phase::Streaming) {
            if slot::slot_state(&catalog_client, &names.slot)
                .await?
                .is_none()
            {
                return Err(PgError::definite(format!(
                    "replication slot {} is gone from the source, so changes since the last \
                     checkpoint are lost; delete and re-create the changefeed to copy the tables again",
                    names.slot
                ))
                .into());
            }
            None
        } else {
            self.status.update(|s| s.phase = Phase::Snapshot);
            self.snapshot(&catalog_client, &mut sink, &names, state)
                .await?
        };
        self.status.update(|s| s.phase = Phase::Streaming);
        self.stream(session, catalog_client, sink, &names).await
    }

    /// Copies every table; returns the main slot's session when this run created it.
    async fn snapshot(
        &mut self,
        catalog_client: &tokio_postgres::Client,
        sink: &mut AnySink,
        names: &SlotNames,
        mut state: RuntimeState,
    ) -> Result<Option<ReplicationClient>, RunError> {
        let key = self.config.key();
        let tables = catalog::selected_tables(catalog_client, &self.config.tables).await?;
        self.note_keyless(&tables);
        let (full, insert_only): (Vec<&SelectedTable>, Vec<&SelectedTable>) =
            tables.iter().partition(|t| t.schema.replicates_updates());
        let ids = |v: &[&SelectedTable]| v.iter().map(|t| t.schema.id.clone()).collect::<Vec<_>>();
        slot::sync_publication(
            catalog_client,
            &names.publication,
            "insert, update, delete, truncate",
            &ids(&full),
        )
        .await?;
        slot::sync_publication(
            catalog_client,
            &names.insert_only_publication,
            "insert, truncate",
            &ids(&insert_only),
        )
        .await?;

        let slot_exists = slot::slot_state(catalog_client, &names.slot)
            .await?
            .is_some();
        let fresh = !slot_exists;
        if fresh || state.plan.is_empty() {
            sink.reset_state().await?;
            state.plan.clear();
            for t in &tables {
                state
                    .plan
                    .push(snapshot::plan_table(catalog_client, t).await?);
            }
            state.phase = Some(Phase::Snapshot);
            self.meta.put(Collection::ChangefeedState, &key, &state)?;
        }
        // Fresh: the main slot's own exported snapshot. Resumed: a temporary slot's, at a
        // later position (see the crate docs for why that is still exact).
        let (main_session, export) = if fresh {
            let config =
                slot::replication_config(&self.config.source_uri, names, Lsn::ZERO, "ferry");
            let created = slot::create_slot_with_snapshot(config, false).await?;
            info!(changefeed = %key, lsn = %created.consistent_point, "slot created");
            let export = (
                created.snapshot_name.clone(),
                created.consistent_point,
                None,
            );
            (Some(created.session), export)
        } else {
            let mut tmp = names.clone();
            tmp.slot = format!("{}_tmp", names.slot);
            let config =
                slot::replication_config(&self.config.source_uri, &tmp, Lsn::ZERO, "ferry-resync");
            let created = slot::create_slot_with_snapshot(config, true).await?;
            info!(changefeed = %key, lsn = %created.consistent_point, "snapshot resumed");
            (
                None,
                (
                    created.snapshot_name.clone(),
                    created.consistent_point,
                    Some(created.session),
                ),
            )
        };
        let (snapshot_name, snapshot_lsn, temp_session) = export;

        let schemas: HashMap<TableId, Arc<ferry_core::TableSchema>> = tables
            .iter()
            .map(|t| (t.schema.id.clone(), Arc::new(t.schema.clone())))
            .collect();
        for schema in schemas.values() {
            sink.ensure_table(schema).await?;
        }
        let finished: HashSet<(TableId, u32)> = sink
            .finished_chunks()
            .await?
            .into_iter()
            .map(|c| (c.table, c.chunk))
            .collect();
        let mut work = VecDeque::new();
        let mut progress = Vec::new();
        for plan in &state.plan {
            let Some(schema) = schemas.get(&plan.table) else {
                continue;
            };
            let done = plan
                .chunks
                .iter()
                .filter(|c| finished.contains(&(plan.table.clone(), c.index)))
                .count();
            progress.push(TableProgress {
                table: plan.table.to_string(),
                state: if done == plan.chunks.len() {
                    "copied"
                } else {
                    "pending"
                },
                rows_copied: 0,
                rows_estimated: plan.estimated_rows,
                chunks_done: done as u32,
                chunks_total: plan.chunks.len() as u32,
            });
            for chunk in &plan.chunks {
                if !finished.contains(&(plan.table.clone(), chunk.index)) {
                    // A single-chunk table copied in a later snapshot replaces what is there.
                    let replace = !fresh && plan.chunks.len() == 1;
                    work.push_back(ChunkJob {
                        schema: schema.clone(),
                        plan: plan.clone(),
                        chunk: chunk.clone(),
                        replace,
                    });
                }
            }
        }
        self.status.update(|s| s.tables = progress);
        let started = std::time::Instant::now();
        let total_chunks = work.len();
        let workers = self.config.options.snapshot_workers.min(work.len()).max(1);
        let work = Arc::new(Mutex::new(work));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let job = SnapshotWorker {
                config: self.config.clone(),
                snapshot_name: snapshot_name.clone(),
                snapshot_lsn,
                work: work.clone(),
                status: self.status.clone(),
            };
            tasks.spawn(job.run());
        }
        let mut rows = 0u64;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(n)) => rows += n,
                Ok(Err(e)) => return Err(e),
                Err(e) => {
                    return Err(PgError::definite(format!("snapshot worker crashed: {e}")).into())
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        info!(changefeed = %key, rows, chunks = total_chunks, seconds = secs, rows_per_sec = rows as f64 / secs.max(1e-9), "snapshot done");
        drop(temp_session);
        state.phase = Some(Phase::Streaming);
        self.meta.put(Collection::ChangefeedState, &key, &state)?;
        Ok(main_session)
    }

    fn note_keyless(&self, tables: &[SelectedTable]) {
        let keyless: Vec<String> = tables
            .iter()
            .filter(|t| !t.schema.replicates_updates())
            .map(|t| t.schema.id.to_string())
            .collect();
        if !keyless.is_empty() {
            let message = format!(
                "tables without a primary key and without REPLICA IDENTITY FULL replicate inserts \
                 and truncates only: {}. Set REPLICA IDENTITY FULL (or add a key) and re-create \
                 the changefeed to replicate their updates and deletes",
                keyless.join(", ")
            );
            self.status.update(|s| s.warnings = vec![message]);
        }
    }

    /// Applies the change stream until stopped or an error.
    async fn stream(
        &mut self,
        session: Option<ReplicationClient>,
        catalog_client: tokio_postgres::Client,
        mut sink: AnySink,
        names: &SlotNames,
    ) -> Result<(), RunError> {
        let key = self.config.key();
        let checkpoint = sink.load_checkpoint().await?;
        // Tables copied whole in one snapshot skip the stream's changes that snapshot
        // already holds (commit before its position).
        let single_chunk: HashSet<TableId> = self
            .meta
            .get::<RuntimeState>(Collection::ChangefeedState, &key)?
            .unwrap_or_default()
            .plan
            .iter()
            .filter(|p| p.chunks.len() == 1)
            .map(|p| p.table.clone())
            .collect();
        let skip_before: HashMap<TableId, Lsn> = sink
            .finished_chunks()
            .await?
            .into_iter()
            .filter(|c| single_chunk.contains(&c.table))
            .map(|c| (c.table, c.snapshot_lsn))
            .collect();
        let session = match session {
            Some(s) => s,
            None => {
                let start = checkpoint.map_or(Lsn::ZERO, Position::lsn);
                let config =
                    slot::replication_config(&self.config.source_uri, names, start, "ferry");
                ReplicationClient::connect_gated(config)
                    .await
                    .map_err(|e| slot::replication_error("open replication session", e))?
            }
        };
        let stream = PgStream::start(session, catalog_client).await?;
        info!(changefeed = %key, checkpoint = ?checkpoint.map(|p| p.to_string()), "streaming");
        self.status.update(|s| {
            if s.checkpoint.is_none() {
                s.checkpoint = checkpoint;
            }
        });
        let (events_tx, events) = mpsc::channel(1024);
        let (confirm_tx, confirms) = watch::channel(Lsn::ZERO);
        let reader = tokio::spawn(stream.run(events_tx, confirms));
        let _abort_reader = AbortOnDrop(reader);
        let applier = Applier {
            sink,
            events,
            confirm: confirm_tx,
            status: self.status.clone(),
            skip_before,
            max_rows: self.config.options.batch_max_rows,
            max_wait: Duration::from_millis(self.config.options.batch_max_wait_ms),
        };
        applier.run(&mut self.stop).await
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct ChunkJob {
    schema: Arc<ferry_core::TableSchema>,
    plan: TablePlan,
    chunk: snapshot::ChunkSpec,
    replace: bool,
}

struct SnapshotWorker {
    config: ChangefeedConfig,
    snapshot_name: String,
    snapshot_lsn: Lsn,
    work: Arc<Mutex<VecDeque<ChunkJob>>>,
    status: StatusCell,
}

impl SnapshotWorker {
    async fn run(self) -> Result<u64, RunError> {
        let source =
            ferry_postgres::connect::connect(&self.config.source_uri, "ferry-snapshot").await?;
        snapshot::enter_snapshot(&source, &self.snapshot_name).await?;
        let mut sink = AnySink::connect(&self.config.sink_uri, &self.config.key()).await?;
        let mut rows = 0;
        loop {
            let job = self.work.lock().expect("work queue lock").pop_front();
            let Some(job) = job else { break };
            self.status.update(|s| {
                if let Some(t) = table_entry(&mut s.tables, &job.schema.id) {
                    t.state = "copying";
                }
            });
            let data = snapshot::copy_out(&source, &job.schema, &job.plan, &job.chunk).await?;
            let n = sink
                .copy_chunk(
                    &job.schema,
                    job.chunk.index,
                    self.snapshot_lsn,
                    job.replace,
                    data,
                )
                .await?;
            rows += n;
            self.status.update(|s| {
                if let Some(t) = table_entry(&mut s.tables, &job.schema.id) {
                    t.rows_copied += n;
                    t.chunks_done += 1;
                    if t.chunks_done >= t.chunks_total {
                        t.state = "copied";
                    }
                }
            });
        }
        Ok(rows)
    }
}

/// Groups source transactions into target batches and keeps the checkpoint invariant.
struct Applier {
    sink: AnySink,
    events: mpsc::Receiver<Result<SourceEvent, PgError>>,
    confirm: watch::Sender<Lsn>,
    status: StatusCell,
    skip_before: HashMap<TableId, Lsn>,
    max_rows: usize,
    max_wait: Duration,
}

/// The open batch.
#[derive(Default)]
struct Batch {
    transactions: u64,
    rows: u64,
    opened: Option<tokio::time::Instant>,
    end: Option<(Position, i64)>,
}

impl Applier {
    async fn run(mut self, stop: &mut watch::Receiver<bool>) -> Result<(), RunError> {
        let mut batch = Batch::default();
        let mut in_transaction = false;
        let mut current_commit = Lsn::ZERO;
        loop {
            let deadline = batch.opened.map(|t| t + self.max_wait);
            let next = tokio::select! {
                ev = self.events.recv() => ev,
                _ = stop.changed() => {
                    self.sink.abort_batch().await;
                    return Ok(());
                }
                _ = sleep_until(deadline), if deadline.is_some() && !in_transaction => {
                    self.commit(&mut batch).await?;
                    continue;
                }
            };
            let Some(event) = next else {
                return Err(PgError::other(
                    "the replication reader stopped",
                    ErrorClass::Transient,
                    "reader ended",
                )
                .into());
            };
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    self.sink.abort_batch().await;
                    return Err(e.into());
                }
            };
            let applied = self
                .on_event(event, &mut batch, &mut in_transaction, &mut current_commit)
                .await;
            if let Err(e) = applied {
                self.sink.abort_batch().await;
                return Err(e);
            }
        }
    }

    async fn on_event(
        &mut self,
        event: SourceEvent,
        batch: &mut Batch,
        in_transaction: &mut bool,
        current_commit: &mut Lsn,
    ) -> Result<(), RunError> {
        match event {
            SourceEvent::Begin { commit, .. } => {
                *in_transaction = true;
                *current_commit = commit.lsn();
                batch.opened.get_or_insert_with(tokio::time::Instant::now);
                self.status.update(|s| s.caught_up = false);
            }
            SourceEvent::Schema(schema) => self.sink.ensure_table(&schema).await?,
            SourceEvent::Change(change) => {
                if let Some(change) = self.filter_skipped(change, *current_commit) {
                    batch.rows += 1;
                    self.sink.apply(change).await?;
                }
            }
            SourceEvent::Commit {
                end,
                commit_time_us,
            } => {
                *in_transaction = false;
                batch.transactions += 1;
                batch.end = Some((end, commit_time_us));
                let waited = batch.opened.is_some_and(|t| t.elapsed() >= self.max_wait);
                if batch.rows as usize >= self.max_rows || waited || self.events.is_empty() {
                    self.commit(batch).await?;
                }
            }
            SourceEvent::Idle {
                position,
                server_time_us,
            } => {
                self.commit(batch).await?;
                if !*in_transaction {
                    // Everything up to `position` was sent and is applied: safe to confirm.
                    self.confirm.send_if_modified(|c| {
                        let raise = position.lsn() > *c;
                        if raise {
                            *c = position.lsn();
                        }
                        raise
                    });
                    self.status.update(|s| {
                        if s.checkpoint.is_none_or(|c| c < position) {
                            s.checkpoint = Some(position);
                        }
                        s.checkpoint_time_us = Some(server_time_us);
                        s.caught_up = true;
                    });
                }
            }
        }
        Ok(())
    }

    /// Drops changes a table's snapshot already holds.
    fn filter_skipped(&self, change: RowChange, commit: Lsn) -> Option<RowChange> {
        if self.skip_before.is_empty() {
            return Some(change);
        }
        let skipped = |id: &TableId| self.skip_before.get(id).is_some_and(|&lsn| commit < lsn);
        match change {
            RowChange::Insert { ref table, .. }
            | RowChange::Update { ref table, .. }
            | RowChange::Delete { ref table, .. } => (!skipped(&table.id)).then_some(change),
            RowChange::Truncate {
                tables,
                restart_identity,
            } => {
                let tables: Vec<_> = tables.into_iter().filter(|t| !skipped(&t.id)).collect();
                (!tables.is_empty()).then_some(RowChange::Truncate {
                    tables,
                    restart_identity,
                })
            }
        }
    }

    /// Commits the batch with its checkpoint, then confirms it to the source.
    async fn commit(&mut self, batch: &mut Batch) -> Result<(), RunError> {
        let Some((end, commit_time_us)) = batch.end else {
            return Ok(());
        };
        self.sink.commit_batch(end).await?;
        self.confirm.send_if_modified(|c| {
            let raise = end.lsn() > *c;
            if raise {
                *c = end.lsn();
            }
            raise
        });
        let caught_up = self.events.is_empty();
        self.status.update(|s| {
            if s.checkpoint.is_none_or(|c| c < end) {
                s.checkpoint = Some(end);
            }
            s.checkpoint_time_us = Some(commit_time_us);
            s.rows_applied += batch.rows;
            s.transactions_applied += batch.transactions;
            s.caught_up = caught_up;
        });
        *batch = Batch::default();
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
