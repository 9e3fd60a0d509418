//! Copying tables: the first snapshot, and later the tables an update added.
//!
//! Both read inside a snapshot the source exports: the first one with the changefeed's
//! stream ([`Source::create_stream`], so the stream starts exactly where the copy ends),
//! every other one at a later position ([`Source::export_snapshot`]: after a restart
//! mid-snapshot, for tables added later, and for snapshot-only changefeeds, which never
//! stream). Chunks go to a few parallel workers; each chunk commits in the target together
//! with its marker.
//!
//! A chunk travels as rows, or in a bulk format when the source offers one the sink loads
//! and the changefeed's `snapshot_bulk` option allows it ([`bulk_format`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use ferry_core::{
    BulkFormat, ChunkData, ChunkSpec, Sink, SnapshotExport, Source, SourceTable, StreamState,
    TableId, TablePlan, TableSchema, TargetPolicy,
};
use ferry_meta::Collection;
use futures::StreamExt;
use tracing::info;

use super::tables::{self, RuntimeState};
use super::{RunError, Runner};
use crate::config::{ChangefeedConfig, SchemaMode};
use crate::metrics::FeedMetrics;
use crate::status::{table_entry, Phase, StatusCell, TableState};

impl Runner {
    /// Copies every selected table. When this run creates the changefeed's stream, the
    /// source keeps it for [`Source::start_stream`].
    pub(super) async fn snapshot(
        &mut self,
        source: &mut dyn Source,
        sink: &mut dyn Sink,
        mut state: RuntimeState,
        selected: &[SourceTable],
    ) -> Result<(), RunError> {
        let key = self.config.key();
        let snapshot_only = self.config.snapshot_only;
        if !snapshot_only {
            source.prepare(selected).await?;
        }
        // A snapshot-only changefeed has no stream of its own: its plan says whether it began.
        let begun = if snapshot_only {
            !state.plan.is_empty()
        } else {
            match source.stream_state().await? {
                StreamState::Absent { .. } => false,
                StreamState::Lost { .. } => {
                    // Begun, and its stream lost: copying on would end in a gap.
                    self.ensure_stream(source).await?;
                    true
                }
                StreamState::Usable => true,
            }
        };
        let fresh = !begun;
        if !self.config.copies() {
            return self
                .start_without_copy(source, sink, state, selected, fresh)
                .await;
        }
        if fresh || state.plan.is_empty() {
            sink.reset_snapshot().await?;
            self.meta.delete(Collection::Checkpoints, &key)?;
            state.plan.clear();
            state.added.clear();
            for t in selected {
                state.plan.push(source.plan_table(t).await?);
            }
            state.phase = Some(Phase::Snapshot);
            self.meta.put(Collection::ChangefeedState, &key, &state)?;
        }
        // Fresh: the stream's own snapshot. Otherwise one at a later position (see the crate
        // docs for why that is still exact).
        let export: Arc<dyn SnapshotExport> = if fresh && !snapshot_only {
            Arc::from(source.create_stream().await?)
        } else {
            let export = source.export_snapshot().await?;
            info!(changefeed = %key, position = %export.position(), "snapshot resumed");
            Arc::from(export)
        };
        self.progressing();

        let schemas: HashMap<TableId, Arc<TableSchema>> = selected
            .iter()
            .map(|t| (t.schema.id.clone(), Arc::new(t.schema.clone())))
            .collect();
        self.use_definitions(source, sink, selected.iter()).await?;
        for schema in schemas.values() {
            sink.ensure_table_for_copy(schema).await?;
        }
        let finished_list = sink.finished_chunks().await?;
        self.status
            .update(|s| tables::refresh(&mut s.tables, tables::progress(&state, &finished_list)));
        let finished: HashSet<(TableId, u32)> = finished_list
            .into_iter()
            .map(|c| (c.table, c.chunk))
            .collect();
        let mut work = VecDeque::new();
        for plan in largest_first(&state.plan) {
            let Some(schema) = schemas.get(&plan.table) else {
                continue;
            };
            for chunk in &plan.chunks {
                if !finished.contains(&(plan.table.clone(), chunk.index)) {
                    work.push_back(ChunkJob {
                        schema: schema.clone(),
                        plan: plan.clone(),
                        chunk: chunk.clone(),
                        // A single-chunk table copied in a later snapshot replaces what is there.
                        replace: !fresh && plan.chunks.len() == 1,
                        format: self.chunk_format(export.as_ref(), sink, schema),
                    });
                }
            }
        }
        self.copy(export, work).await?;
        for schema in schemas.values() {
            sink.finish_table(schema).await?;
        }
        state.phase = Some(Phase::Streaming);
        self.meta.put(Collection::ChangefeedState, &key, &state)?;
        Ok(())
    }

    /// `snapshot: never`: creates the slot (the stream starts at its creation) and the
    /// target tables, copying nothing. Rows that existed before are the user's to copy.
    async fn start_without_copy(
        &mut self,
        source: &mut dyn Source,
        sink: &mut dyn Sink,
        mut state: RuntimeState,
        selected: &[SourceTable],
        fresh: bool,
    ) -> Result<(), RunError> {
        let key = self.config.key();
        if fresh {
            sink.reset_snapshot().await?;
            self.meta.delete(Collection::Checkpoints, &key)?;
            let export = source.create_stream().await?;
            info!(changefeed = %key, position = %export.position(), "stream created; nothing copied (snapshot: never)");
        }
        self.progressing();
        self.use_definitions(source, sink, selected.iter()).await?;
        for t in selected {
            sink.ensure_table(&Arc::new(t.schema.clone())).await?;
        }
        state.plan = selected
            .iter()
            .map(|t| TablePlan {
                table: t.schema.id.clone(),
                key_column: None,
                chunks: Vec::new(),
                estimated_rows: 0,
            })
            .collect();
        state.added.clear();
        state.phase = Some(Phase::Streaming);
        self.meta.put(Collection::ChangefeedState, &key, &state)?;
        self.status
            .update(|s| tables::refresh(&mut s.tables, tables::progress(&state, &[])));
        Ok(())
    }

    /// Copies the added tables whose copy is not done, each whole in one chunk, in a
    /// snapshot taken after they joined the publications (none with `snapshot: never`:
    /// they stream from when they were added).
    pub(super) async fn copy_added(
        &mut self,
        source: &mut dyn Source,
        sink: &mut dyn Sink,
        state: &RuntimeState,
        selected: &[SourceTable],
    ) -> Result<(), RunError> {
        let finished = sink.finished_chunks().await?;
        self.status
            .update(|s| tables::refresh(&mut s.tables, tables::progress(state, &finished)));
        let pending = tables::pending_added(state, &finished);
        if pending.is_empty() || !self.config.copies() {
            return Ok(());
        }
        self.status.update(|s| s.phase = Phase::Snapshot);
        let export: Arc<dyn SnapshotExport> = Arc::from(source.export_snapshot().await?);
        info!(changefeed = %self.config.key(), position = %export.position(), tables = pending.len(), "copying added tables");
        let tables = pending
            .iter()
            .filter_map(|a| selected.iter().find(|t| t.schema.id == a.plan.table));
        self.use_definitions(source, sink, tables).await?;
        let mut work = VecDeque::new();
        for added in pending {
            let Some(table) = selected.iter().find(|t| t.schema.id == added.plan.table) else {
                continue;
            };
            let schema = Arc::new(table.schema.clone());
            sink.ensure_table_for_copy(&schema).await?;
            work.push_back(ChunkJob {
                format: self.chunk_format(export.as_ref(), sink, &schema),
                schema,
                plan: added.plan.clone(),
                chunk: ChunkSpec::whole(),
                replace: true,
            });
        }
        let copied: Vec<Arc<TableSchema>> = work.iter().map(|j| j.schema.clone()).collect();
        self.copy(export, work).await?;
        for schema in &copied {
            sink.finish_table(schema).await?;
        }
        self.status.update(|s| s.phase = Phase::Streaming);
        Ok(())
    }

    /// Reads the source's definitions of `tables` (indexes, constraints, defaults …) for
    /// the sink to complete the tables it creates; none with `schema: tables`.
    async fn use_definitions(
        &self,
        source: &mut dyn Source,
        sink: &mut dyn Sink,
        tables: impl Iterator<Item = &SourceTable>,
    ) -> Result<(), RunError> {
        if self.config.options.schema == SchemaMode::Tables {
            return Ok(());
        }
        let tables: Vec<&SourceTable> = tables.collect();
        sink.use_definitions(source.definitions(&tables).await?);
        Ok(())
    }

    /// The format `schema`'s chunks travel in from `export` to `sink` (see [`bulk_format`]),
    /// once the sink has its table ready for the copy.
    fn chunk_format(
        &self,
        export: &dyn SnapshotExport,
        sink: &dyn Sink,
        schema: &TableSchema,
    ) -> Option<BulkFormat> {
        bulk_format(
            self.config.options.snapshot_bulk,
            export.bulk_formats(schema),
            sink.bulk_formats(schema),
        )
    }

    /// Copies `work` with parallel workers inside `export`, each chunk as rows or in its
    /// job's format.
    async fn copy(
        &mut self,
        export: Arc<dyn SnapshotExport>,
        work: VecDeque<ChunkJob>,
    ) -> Result<(), RunError> {
        let started = std::time::Instant::now();
        let total_chunks = work.len();
        let mut paths: BTreeMap<&str, BTreeSet<&TableId>> = BTreeMap::new();
        for job in &work {
            let path = job.format.map_or("rows", |f| f.0);
            paths.entry(path).or_default().insert(&job.schema.id);
        }
        for (path, tables) in &paths {
            // Named up to a point: a log line, not a catalog.
            let mut named: Vec<String> = tables.iter().take(20).map(|t| t.to_string()).collect();
            if tables.len() > named.len() {
                named.push(format!("and {} more", tables.len() - named.len()));
            }
            info!(changefeed = %self.config.key(), path, count = tables.len(), tables = %named.join(", "), "tables copied in this path");
        }
        let paths: Vec<&str> = paths.keys().copied().collect();
        let paths = paths.join(", ");
        let workers = self.config.options.snapshot_workers.min(work.len()).max(1);
        let mut unfinished: HashMap<TableId, usize> = HashMap::new();
        for job in &work {
            *unfinished.entry(job.schema.id.clone()).or_default() += 1;
        }
        let unfinished = Arc::new(Mutex::new(unfinished));
        // Threads of their own only where a chunk's bulk data goes from one session to the
        // other as it came; rows go through shared per-event work (a stream sink's one
        // writer), where handing it between threads cost more than it saved (a file sink's
        // snapshot: 73 s against 13 s).
        let own_threads = work.iter().all(|job| job.format.is_some());
        let work = Arc::new(Mutex::new(work));
        let mut tasks = tokio::task::JoinSet::new();
        let (copied, copied_rx) = tokio::sync::mpsc::unbounded_channel();
        tasks.spawn(
            KeyBuilder {
                config: self.config.clone(),
                connectors: self.connectors.clone(),
                policy: self.target_policy(),
                copied: copied_rx,
            }
            .run(),
        );
        for _ in 0..workers {
            let job = SnapshotWorker {
                config: self.config.clone(),
                connectors: self.connectors.clone(),
                policy: self.target_policy(),
                export: export.clone(),
                work: work.clone(),
                unfinished: unfinished.clone(),
                copied: copied.clone(),
                status: self.status.clone(),
                metrics: self.metrics.clone(),
            };
            if own_threads {
                tasks.spawn(job.start());
            } else {
                tasks.spawn(job.run());
            }
        }
        // The builder ends once the last worker is done with its sender.
        drop(copied);
        let mut rows = 0u64;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(n)) => rows += n,
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(RunError::Worker(format!("snapshot worker crashed: {e}"))),
            }
        }
        let secs = started.elapsed().as_secs_f64();
        info!(changefeed = %self.config.key(), rows, chunks = total_chunks, path = %paths, seconds = secs, rows_per_sec = rows as f64 / secs.max(1e-9), "snapshot done");
        Ok(())
    }
}

struct ChunkJob {
    schema: Arc<TableSchema>,
    plan: TablePlan,
    chunk: ChunkSpec,
    replace: bool,
    /// `None`: rows.
    format: Option<BulkFormat>,
}

struct SnapshotWorker {
    config: ChangefeedConfig,
    connectors: Arc<dyn ferry_core::Connectors>,
    policy: TargetPolicy,
    export: Arc<dyn SnapshotExport>,
    work: Arc<Mutex<VecDeque<ChunkJob>>>,
    /// Chunks of each table not copied yet: the worker that copies a table's last one
    /// hands the table to the [`KeyBuilder`] (on `copied`) and goes on copying.
    unfinished: Arc<Mutex<HashMap<TableId, usize>>>,
    copied: tokio::sync::mpsc::UnboundedSender<Arc<TableSchema>>,
    status: StatusCell,
    metrics: FeedMetrics,
}

impl SnapshotWorker {
    /// Runs the worker on a thread of its own, with a single-threaded runtime, when this
    /// runtime has several threads (for chunks in a bulk format, see `copy`): the sessions
    /// it opens (their connection tasks) and the copy between them stay on that thread, so
    /// a chunk's data is handed from reader to writer without waking another thread
    /// (docs/benchmarks.md: Ferry's CPU in the snapshot ~14% lower). Dropping the returned
    /// future stops the worker and closes its sessions, as dropping a task would.
    async fn start(self) -> Result<u64, RunError> {
        if tokio::runtime::Handle::current().runtime_flavor()
            != tokio::runtime::RuntimeFlavor::MultiThread
        {
            return self.run().await;
        }
        let (mut done, result) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("ferry-copy".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let message = format!("start a snapshot worker's runtime: {e}");
                        let _ = done.send(Err(RunError::Worker(message)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    tokio::select! {
                        copied = self.run() => {
                            let _ = done.send(copied);
                        }
                        // The snapshot was dropped (paused, deleted, failed elsewhere).
                        () = done.closed() => {}
                    }
                });
            });
        if let Err(e) = spawned {
            return Err(RunError::Worker(format!("start a snapshot worker: {e}")));
        }
        // The sender dropped unanswered: the thread panicked.
        result
            .await
            .unwrap_or_else(|_| Err(RunError::Worker("snapshot worker crashed".into())))
    }

    async fn run(self) -> Result<u64, RunError> {
        let mut reader = self.export.reader().await?;
        let uri = &self.config.sink_uri;
        let mut sink = self
            .connectors
            .sink(uri)
            .connect(uri, &self.config.key(), self.policy.clone())
            .await?;
        let snapshot = self.export.position();
        let mut rows = 0;
        loop {
            let job = self.work.lock().expect("work queue lock").pop_front();
            let Some(job) = job else { break };
            self.status.update(|s| {
                if let Some(t) = table_entry(&mut s.tables, &job.schema.id) {
                    // A table copied again stays `resyncing` until its copy is done.
                    if t.state != TableState::Resyncing {
                        t.state = TableState::Copying;
                    }
                }
            });
            let data = reader
                .read(&job.schema, &job.plan, &job.chunk, job.format)
                .await?;
            let metrics = self.metrics.clone();
            let data = match data {
                ChunkData::Bulk { format, data } => ChunkData::Bulk {
                    format,
                    data: data
                        .inspect(move |item| {
                            if let Ok(bytes) = item {
                                metrics.bytes_read(bytes.len() as u64);
                            }
                        })
                        .boxed(),
                },
                ChunkData::Rows(rows) => ChunkData::Rows(
                    rows.inspect(move |item| {
                        if let Ok(row) = item {
                            metrics.bytes_read(row_bytes(row));
                        }
                    })
                    .boxed(),
                ),
            };
            let n = sink
                .copy_chunk(&job.schema, job.chunk.index, &snapshot, job.replace, data)
                .await?;
            rows += n;
            let last = {
                let mut unfinished = self.unfinished.lock().expect("unfinished lock");
                let left = unfinished.entry(job.schema.id.clone()).or_insert(1);
                *left -= 1;
                *left == 0
            };
            if last {
                // Gone only when the builder failed, whose error ends the copy.
                let _ = self.copied.send(job.schema.clone());
            }
            self.status.update(|s| {
                if let Some(t) = table_entry(&mut s.tables, &job.schema.id) {
                    t.rows_copied += n;
                    t.chunks_done += 1;
                    if t.chunks_done >= t.chunks_total {
                        t.state = TableState::Streaming;
                    }
                }
            });
        }
        Ok(rows)
    }
}

/// Finishes each table whose chunks are all copied (builds its key on the target), one at
/// a time on a session of its own, while the workers go on copying: their source sessions
/// never wait idle in their snapshot's transaction, and the target builds one key at a
/// time. The main session's pass after the copy completes the tables (and builds any key
/// not built here, e.g. of tables whose chunks were all copied before a restart).
struct KeyBuilder {
    config: ChangefeedConfig,
    connectors: Arc<dyn ferry_core::Connectors>,
    policy: TargetPolicy,
    copied: tokio::sync::mpsc::UnboundedReceiver<Arc<TableSchema>>,
}

impl KeyBuilder {
    async fn run(mut self) -> Result<u64, RunError> {
        let uri = &self.config.sink_uri;
        let mut sink: Option<Box<dyn Sink>> = None;
        while let Some(schema) = self.copied.recv().await {
            let sink = match &mut sink {
                Some(sink) => sink,
                None => sink.insert(
                    self.connectors
                        .sink(uri)
                        .connect(uri, &self.config.key(), self.policy.clone())
                        .await?,
                ),
            };
            sink.finish_table(&schema).await?;
        }
        Ok(0)
    }
}

/// The bulk format chunks travel in: the source's first that the sink loads, when the
/// changefeed allows the bulk path; `None` (rows) otherwise.
fn bulk_format(allowed: bool, source: &[BulkFormat], sink: &[BulkFormat]) -> Option<BulkFormat> {
    if !allowed {
        return None;
    }
    source.iter().find(|f| sink.contains(f)).copied()
}

/// `plans` in the order their chunks are copied: the tables the source estimates larger
/// first (then those in more chunks), so that the largest table's copy ends while the others
/// are still copying and its key is built meanwhile (instead of once every chunk is in).
fn largest_first(plans: &[TablePlan]) -> Vec<&TablePlan> {
    let mut plans: Vec<&TablePlan> = plans.iter().collect();
    plans.sort_by_key(|plan| std::cmp::Reverse((plan.estimated_rows, plan.chunks.len())));
    plans
}

/// The value bytes of a row, as the source's bytes-read metric counts them.
fn row_bytes(row: &ferry_core::Row) -> u64 {
    row.iter()
        .map(|v| match v {
            ferry_core::Value::Text(text) => text.len() as u64,
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: BulkFormat = BulkFormat("a");
    const B: BulkFormat = BulkFormat("b");

    #[test]
    fn bulk_only_in_a_shared_format_and_when_allowed() {
        assert_eq!(bulk_format(true, &[A, B], &[B, A]), Some(A));
        assert_eq!(bulk_format(true, &[A], &[B]), None);
        assert_eq!(bulk_format(true, &[], &[A]), None);
        assert_eq!(bulk_format(false, &[A], &[A]), None);
    }

    #[test]
    fn larger_tables_are_copied_first_and_ties_keep_their_order() {
        let plan = |name: &str, chunks: u32, estimated_rows: u64| TablePlan {
            table: TableId::new("s", name),
            key_column: None,
            chunks: (0..chunks)
                .map(|index| ChunkSpec {
                    index,
                    ..ChunkSpec::whole()
                })
                .collect(),
            estimated_rows,
        };
        // A large table in one chunk (its key is not one integer column) goes first too.
        let plans = [
            plan("a", 1, 10),
            plan("b", 5, 500),
            plan("c", 1, 10),
            plan("d", 2, 10),
            plan("e", 1, 900),
        ];
        let order: Vec<&str> = largest_first(&plans)
            .iter()
            .map(|p| p.table.name.as_str())
            .collect();
        assert_eq!(order, ["e", "b", "d", "a", "c"]);
    }
}
