//! Copying tables: the first snapshot, and later the tables an update added.
//!
//! Both read inside a snapshot exported by `CREATE_REPLICATION_SLOT`: the first one by the
//! changefeed's own slot (so the stream starts exactly where the copy ends), every other
//! one by a temporary slot at a later position (after a restart mid-snapshot, for tables
//! added later, and for snapshot-only changefeeds, which never stream). Chunks go to a few
//! parallel workers; each chunk commits in the target together with its marker.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use ferry_core::{Lsn, Sink, TableId, TableSchema};
use ferry_meta::Collection;
use ferry_postgres::catalog::SelectedTable;
use ferry_postgres::definition;
use ferry_postgres::sink::TargetPolicy;
use ferry_postgres::slot::{self, SlotNames};
use ferry_postgres::snapshot::{self, ChunkSpec, TablePlan};
use ferry_postgres::PgError;
use futures::StreamExt;
use pgwire_replication::ReplicationClient;
use tracing::info;

use super::tables::{self, RuntimeState};
use super::{RunError, Runner};
use crate::config::{ChangefeedConfig, SchemaMode};
use crate::metrics::FeedMetrics;
use crate::sink::AnySink;
use crate::status::{table_entry, Phase, StatusCell, TableState};

/// An exported snapshot to read chunks in.
struct Export {
    name: String,
    lsn: Lsn,
}

impl Runner {
    /// Copies every selected table. Returns the main slot's session when this run created
    /// the slot (the stream continues on it), `None` otherwise.
    pub(super) async fn snapshot(
        &mut self,
        catalog_client: &tokio_postgres::Client,
        sink: &mut AnySink,
        names: &SlotNames,
        mut state: RuntimeState,
        selected: &[SelectedTable],
    ) -> Result<Option<ReplicationClient>, RunError> {
        let key = self.config.key();
        let snapshot_only = self.config.snapshot_only;
        if !snapshot_only {
            self.sync_publications(catalog_client, names, selected)
                .await?;
        }
        // A snapshot-only changefeed has no slot of its own: its plan says whether it began.
        let begun = if snapshot_only {
            !state.plan.is_empty()
        } else {
            match slot::slot_state(catalog_client, &names.slot).await? {
                None => false,
                Some(state) if slot::slot_loss(Some(&state)).is_some() => {
                    // Begun, and its slot invalidated: copying on would end in a gap.
                    self.ensure_slot(catalog_client, names).await?;
                    true
                }
                Some(_) => true,
            }
        };
        let fresh = !begun;
        if !self.config.copies() {
            return self
                .start_without_copy(catalog_client, sink, names, state, selected, fresh)
                .await;
        }
        if fresh || state.plan.is_empty() {
            sink.reset_state().await?;
            state.plan.clear();
            state.added.clear();
            for t in selected {
                state
                    .plan
                    .push(snapshot::plan_table(catalog_client, t).await?);
            }
            state.phase = Some(Phase::Snapshot);
            self.meta.put(Collection::ChangefeedState, &key, &state)?;
        }
        // Fresh: the main slot's own exported snapshot. Otherwise a temporary slot's, at a
        // later position (see the crate docs for why that is still exact).
        let (main_session, temp_session, export) = if fresh && !snapshot_only {
            let config =
                slot::replication_config(&self.config.source_uri, names, Lsn::ZERO, "ferry")?;
            let created = slot::create_slot_with_snapshot(config, false).await?;
            info!(changefeed = %key, lsn = %created.consistent_point, "slot created");
            let export = Export {
                name: created.snapshot_name.clone(),
                lsn: created.consistent_point,
            };
            (Some(created.session), None, export)
        } else {
            let (session, export) = self.temporary_export(names).await?;
            info!(changefeed = %key, lsn = %export.lsn, "snapshot resumed");
            (None, Some(session), export)
        };
        self.progressing();

        let schemas: HashMap<TableId, Arc<TableSchema>> = selected
            .iter()
            .map(|t| (t.schema.id.clone(), Arc::new(t.schema.clone())))
            .collect();
        self.use_definitions(catalog_client, sink, selected.iter())
            .await?;
        for schema in schemas.values() {
            sink.ensure_table_for_copy(schema).await?;
        }
        let finished_list = sink.finished_chunks().await?;
        self.status
            .update(|s| s.tables = tables::progress(&state, &finished_list));
        let finished: HashSet<(TableId, u32)> = finished_list
            .into_iter()
            .map(|c| (c.table, c.chunk))
            .collect();
        let mut work = VecDeque::new();
        for plan in &state.plan {
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
                    });
                }
            }
        }
        self.copy(&export, work).await?;
        drop(temp_session);
        for schema in schemas.values() {
            sink.ensure_key(schema).await?;
        }
        state.phase = Some(Phase::Streaming);
        self.meta.put(Collection::ChangefeedState, &key, &state)?;
        Ok(main_session)
    }

    /// `snapshot: never`: creates the slot (the stream starts at its creation) and the
    /// target tables, copying nothing. Rows that existed before are the user's to copy.
    async fn start_without_copy(
        &mut self,
        catalog_client: &tokio_postgres::Client,
        sink: &mut AnySink,
        names: &SlotNames,
        mut state: RuntimeState,
        selected: &[SelectedTable],
        fresh: bool,
    ) -> Result<Option<ReplicationClient>, RunError> {
        let key = self.config.key();
        let session = if fresh {
            sink.reset_state().await?;
            let config =
                slot::replication_config(&self.config.source_uri, names, Lsn::ZERO, "ferry")?;
            let created = slot::create_slot_with_snapshot(config, false).await?;
            info!(changefeed = %key, lsn = %created.consistent_point, "slot created; nothing copied (snapshot: never)");
            Some(created.session)
        } else {
            None
        };
        self.progressing();
        self.use_definitions(catalog_client, sink, selected.iter())
            .await?;
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
            .update(|s| s.tables = tables::progress(&state, &[]));
        Ok(session)
    }

    /// Copies the added tables whose copy is not done, each whole in one chunk, in a
    /// snapshot taken after they joined the publications (none with `snapshot: never`:
    /// they stream from when they were added).
    pub(super) async fn copy_added(
        &mut self,
        catalog_client: &tokio_postgres::Client,
        sink: &mut AnySink,
        names: &SlotNames,
        state: &RuntimeState,
        selected: &[SelectedTable],
    ) -> Result<(), RunError> {
        let finished = sink.finished_chunks().await?;
        self.status
            .update(|s| s.tables = tables::progress(state, &finished));
        let pending = tables::pending_added(state, &finished);
        if pending.is_empty() || !self.config.copies() {
            return Ok(());
        }
        self.status.update(|s| s.phase = Phase::Snapshot);
        let (session, export) = self.temporary_export(names).await?;
        info!(changefeed = %self.config.key(), lsn = %export.lsn, tables = pending.len(), "copying added tables");
        let tables = pending
            .iter()
            .filter_map(|a| selected.iter().find(|t| t.schema.id == a.plan.table));
        self.use_definitions(catalog_client, sink, tables).await?;
        let mut work = VecDeque::new();
        for added in pending {
            let Some(table) = selected.iter().find(|t| t.schema.id == added.plan.table) else {
                continue;
            };
            let schema = Arc::new(table.schema.clone());
            sink.ensure_table_for_copy(&schema).await?;
            work.push_back(ChunkJob {
                schema,
                plan: added.plan.clone(),
                chunk: ChunkSpec {
                    index: 0,
                    lower: None,
                    upper: None,
                },
                replace: true,
            });
        }
        let copied: Vec<Arc<TableSchema>> = work.iter().map(|j| j.schema.clone()).collect();
        self.copy(&export, work).await?;
        drop(session);
        for schema in &copied {
            sink.ensure_key(schema).await?;
        }
        self.status.update(|s| s.phase = Phase::Streaming);
        Ok(())
    }

    /// Makes the publications hold exactly the selected tables: all operations for tables
    /// with a replica identity, inserts and truncates for the others.
    /// Returns the tables that were streamed insert-only and now move to the publication
    /// of every operation (REPLICA IDENTITY FULL or a key was set meanwhile).
    pub(super) async fn sync_publications(
        &self,
        catalog_client: &tokio_postgres::Client,
        names: &SlotNames,
        selected: &[SelectedTable],
    ) -> Result<Vec<TableId>, RunError> {
        let (full, insert_only): (Vec<&SelectedTable>, Vec<&SelectedTable>) =
            selected.iter().partition(|t| t.schema.replicates_updates());
        let ids = |v: &[&SelectedTable]| v.iter().map(|t| t.schema.id.clone()).collect::<Vec<_>>();
        let was_insert_only =
            slot::publication_tables(catalog_client, &names.insert_only_publication).await?;
        let upgraded: Vec<TableId> = ids(&full)
            .into_iter()
            .filter(|t| was_insert_only.contains(t))
            .collect();
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
        Ok(upgraded)
    }

    /// Reads the source's definitions of `tables` (indexes, constraints, defaults …) for
    /// the sink to complete the tables it creates; none with `schema: tables`.
    async fn use_definitions(
        &self,
        catalog_client: &tokio_postgres::Client,
        sink: &mut AnySink,
        tables: impl Iterator<Item = &SelectedTable>,
    ) -> Result<(), RunError> {
        if self.config.options.schema == SchemaMode::Tables {
            return Ok(());
        }
        let mut definitions = Vec::new();
        for t in tables {
            let definition = definition::read(catalog_client, t.oid, &t.schema.id).await?;
            definitions.push((t.schema.id.clone(), definition));
        }
        sink.use_definitions(definitions);
        Ok(())
    }

    /// A temporary slot's exported snapshot; it lives as long as the returned session.
    async fn temporary_export(
        &self,
        names: &SlotNames,
    ) -> Result<(ReplicationClient, Export), RunError> {
        let mut tmp = names.clone();
        tmp.slot = format!("{}_tmp", names.slot);
        let config =
            slot::replication_config(&self.config.source_uri, &tmp, Lsn::ZERO, "ferry-resync")?;
        let created = slot::create_slot_with_snapshot(config, true).await?;
        let export = Export {
            name: created.snapshot_name.clone(),
            lsn: created.consistent_point,
        };
        Ok((created.session, export))
    }

    /// Copies `work` with parallel workers inside `export`.
    async fn copy(&mut self, export: &Export, work: VecDeque<ChunkJob>) -> Result<(), RunError> {
        let started = std::time::Instant::now();
        let total_chunks = work.len();
        let workers = self.config.options.snapshot_workers.min(work.len()).max(1);
        let work = Arc::new(Mutex::new(work));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let job = SnapshotWorker {
                config: self.config.clone(),
                policy: self.target_policy(),
                snapshot_name: export.name.clone(),
                snapshot_lsn: export.lsn,
                work: work.clone(),
                status: self.status.clone(),
                metrics: self.metrics.clone(),
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
        info!(changefeed = %self.config.key(), rows, chunks = total_chunks, seconds = secs, rows_per_sec = rows as f64 / secs.max(1e-9), "snapshot done");
        Ok(())
    }
}

struct ChunkJob {
    schema: Arc<TableSchema>,
    plan: TablePlan,
    chunk: ChunkSpec,
    replace: bool,
}

struct SnapshotWorker {
    config: ChangefeedConfig,
    policy: TargetPolicy,
    snapshot_name: String,
    snapshot_lsn: Lsn,
    work: Arc<Mutex<VecDeque<ChunkJob>>>,
    status: StatusCell,
    metrics: FeedMetrics,
}

impl SnapshotWorker {
    async fn run(self) -> Result<u64, RunError> {
        let source =
            ferry_postgres::connect::connect(&self.config.source_uri, "ferry-snapshot").await?;
        snapshot::enter_snapshot(&source, &self.snapshot_name).await?;
        let mut sink =
            AnySink::connect(&self.config.sink_uri, &self.config.key(), self.policy).await?;
        let mut rows = 0;
        loop {
            let job = self.work.lock().expect("work queue lock").pop_front();
            let Some(job) = job else { break };
            self.status.update(|s| {
                if let Some(t) = table_entry(&mut s.tables, &job.schema.id) {
                    t.state = TableState::Copying;
                }
            });
            let data = snapshot::copy_out(&source, &job.schema, &job.plan, &job.chunk).await?;
            let metrics = self.metrics.clone();
            let data = data.inspect(move |item| {
                if let Ok(bytes) = item {
                    metrics.bytes_read(bytes.len() as u64);
                }
            });
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
                        t.state = TableState::Copied;
                    }
                }
            });
        }
        Ok(rows)
    }
}
