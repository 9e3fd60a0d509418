//! The streaming phase of an attempt: where to start (checkpoint, resume position, target
//! position), the replication session, the reader task, the optional heartbeat, and the
//! [`Applier`] that applies batches until the attempt ends.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use ferry_core::{CheckpointStore, Sink, Source, SourceConnector, TableId};
use ferry_meta::{Collection, MetaStore};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::apply::{Applier, StreamEnd};
use super::tables::{self, RuntimeState};
use super::{RunError, Runner};
use crate::lifecycle::LifecycleDoc;

impl Runner {
    /// Applies the change stream until stopped, finished or an error.
    pub(super) async fn stream(
        &mut self,
        connector: &dyn SourceConnector,
        mut source: Box<dyn Source>,
        mut sink: Box<dyn Sink>,
        state: &RuntimeState,
    ) -> Result<StreamEnd, RunError> {
        let key = self.config.key();
        let external = sink.checkpoint_store() == CheckpointStore::External;
        let checkpoint = if external {
            self.meta.get(Collection::Checkpoints, &key)?
        } else {
            sink.load_checkpoint().await?
        };
        let finished = sink.finished_chunks().await?;
        let skip_before = tables::skip_before(state, &finished);
        let lifecycle = LifecycleDoc::load(&self.meta, &key)?;
        let resume_from = lifecycle.resume_from.clone();
        let start = resume_from.clone().or(checkpoint.clone()).or_else(|| {
            // A source that keeps no place of its own resumes where the copy was read.
            (!source.keeps_position())
                .then(|| earliest_snapshot(&finished))
                .flatten()
        });
        if let (Some(target), Some(start)) = (&self.config.target_position, &start) {
            if start.covers(target) {
                return Ok(StreamEnd::Finished);
            }
        }
        let (names, forgotten) = self.stream_tables(state, start.as_ref())?;
        // Dropped tables whose last changes are written: another changefeed may claim them.
        sink.release_tables(&forgotten).await?;
        let ahead = (!external && sink.applies_ahead()).then(|| {
            let (connectors, uri) = (self.connectors.clone(), self.config.sink_uri.clone());
            let (key, policy) = (key.clone(), self.target_policy());
            super::apply::ahead::AheadApply::new(Box::new(move || {
                let (connectors, uri) = (connectors.clone(), uri.clone());
                let (key, policy) = (key.clone(), policy.clone());
                Box::pin(async move { connectors.sink(&uri).connect(&uri, &key, policy).await })
            }))
        });
        source.stream_ahead(ahead.is_some());
        let stream = source.start_stream(start.clone(), names).await?;
        drop(source);
        info!(changefeed = %key, start = ?start.as_ref().map(ToString::to_string), overwritten = resume_from.is_some(), "streaming");
        self.progressing();
        self.status.update(|s| match &resume_from {
            // The operator moved the position: show it, even when it is older.
            Some(position) => s.checkpoint = Some(position.clone()),
            None if s.checkpoint.is_none() => s.checkpoint = checkpoint,
            None => {}
        });
        let (events_tx, events) = mpsc::channel(1024);
        let (confirm_tx, confirms) = watch::channel(None);
        let reader = tokio::spawn(reader_task(stream, events_tx, confirms));
        let _abort_reader = AbortOnDrop(reader);
        let _abort_heartbeat = self.config.options.heartbeat_interval_ms.map(|ms| {
            AbortOnDrop(tokio::spawn(connector.heartbeat(
                &self.config.source_uri,
                Duration::from_millis(ms),
                &key,
            )))
        });
        let on_first_commit = resume_from.map(|_| {
            let meta = self.meta.clone();
            Box::new(move || clear_resume_from(&meta, &key)) as Box<dyn FnOnce() + Send>
        });
        let applier = Applier {
            sink,
            events,
            confirm: confirm_tx,
            status: self.status.clone(),
            skip_before,
            max_rows: self.config.options.batch_max_rows,
            max_wait: Duration::from_millis(self.config.options.batch_max_wait_ms),
            target: self.config.target_position.clone(),
            metrics: self.metrics.clone(),
            on_first_commit,
            save_checkpoint: external.then(|| {
                let (meta, key) = (self.meta.clone(), self.config.key());
                Box::new(move |position: &ferry_core::Position| {
                    meta.put(Collection::Checkpoints, &key, position)
                }) as super::apply::SaveCheckpoint
            }),
            isolate_until: self.isolate_until.clone(),
            filter: self.config.filter(),
            replicated: state.source_ids.values().cloned().collect(),
            excluded: Default::default(),
            follow_definitions: self.config.options.schema != crate::config::SchemaMode::Tables,
            skip: lifecycle.skip.map(|skip| {
                let (meta, key) = (self.meta.clone(), self.config.key());
                let forget = Box::new(move || clear_skip(&meta, &key)) as Box<dyn FnOnce() + Send>;
                (skip, forget)
            }),
            skipped_changes: 0,
            held: state.held.iter().map(|h| h.table.clone()).collect(),
            copies: self.config.copies(),
            sealed: Default::default(),
            counts: Default::default(),
            deferred_shapes: HashSet::new(),
            shaped: Default::default(),
            defined: Default::default(),
            ahead,
            on_renamed: {
                let meta = self.meta.clone();
                let key = self.config.key();
                Box::new(move |from: &TableId, to: &TableId| {
                    let mut state: RuntimeState = meta
                        .get(Collection::ChangefeedState, &key)?
                        .unwrap_or_default();
                    tables::rename(&mut state, from, to);
                    meta.put(Collection::ChangefeedState, &key, &state)
                })
            },
            last_commit: tokio::time::Instant::now(),
            on_table: {
                let meta = self.meta.clone();
                let key = self.config.key();
                Box::new(move |note: tables::TableNote<'_>| {
                    let mut state: RuntimeState = meta
                        .get(Collection::ChangefeedState, &key)?
                        .unwrap_or_default();
                    tables::note(&mut state, note);
                    meta.put(Collection::ChangefeedState, &key, &state)
                })
            },
        };
        let known: BTreeSet<u32> = state.source_ids.keys().copied().collect();
        // Under `ddl: stop` new tables wait for the next start, as any other change waits.
        let follow = self.config.options.ddl == ferry_core::DdlPolicy::Apply;
        let watch =
            connector.watch_new_tables(&self.config.source_uri, self.config.filter(), known);
        tokio::select! {
            end = applier.run(&mut self.stop, &mut self.repairs) => end,
            table = watch, if follow => {
                info!(changefeed = %self.config.key(), table = %table, "table created on the source; copying it, then streaming on");
                Ok(StreamEnd::NewTable)
            }
        }
    }

    /// The tables the stream reads (source id → target name): the replicated ones, and
    /// those dropped on the source before a position the stream has yet to pass (their last
    /// changes are still to apply). Forgets the dropped ones `start` is past, and returns
    /// those no planned table has the name of (to release).
    #[allow(clippy::type_complexity)]
    fn stream_tables(
        &self,
        state: &RuntimeState,
        start: Option<&ferry_core::Position>,
    ) -> Result<(std::collections::HashMap<u32, TableId>, Vec<TableId>), RunError> {
        let past = |d: &tables::DroppedTable| start.is_some_and(|p| p.covers(&d.until));
        if state.dropped.iter().any(past) {
            let key = self.config.key();
            let mut saved: RuntimeState = self
                .meta
                .get(Collection::ChangefeedState, &key)?
                .unwrap_or_default();
            saved.dropped.retain(|d| !past(d));
            self.meta.put(Collection::ChangefeedState, &key, &saved)?;
        }
        let forgotten = state
            .dropped
            .iter()
            .filter(|d| past(d) && !state.source_ids.values().any(|n| *n == d.table))
            .map(|d| d.table.clone())
            .collect();
        let dropped = state.dropped.iter().filter(|d| !past(d));
        let names = state
            .source_ids
            .iter()
            .map(|(id, name)| (*id, name.clone()))
            .chain(dropped.map(|d| (d.id, d.table.clone())))
            .collect();
        Ok((names, forgotten))
    }
}

/// The snapshot position every finished chunk's snapshot covers (none when there are no
/// chunks, or their positions are incomparable).
fn earliest_snapshot(finished: &[ferry_core::FinishedChunk]) -> Option<ferry_core::Position> {
    finished
        .iter()
        .map(|c| &c.snapshot)
        .find(|p| finished.iter().all(|c| c.snapshot.covers(p)))
        .cloned()
}

/// The resume position is behind us once a batch after it is durable.
fn clear_resume_from(meta: &MetaStore, key: &str) {
    let cleared = LifecycleDoc::load(meta, key).and_then(|mut doc| {
        doc.resume_from = None;
        doc.save(meta, key)
    });
    if let Err(e) = cleared {
        warn!(changefeed = %key, error = %ferry_core::error_chain(&e), "could not clear the resume position");
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The skipped transaction is behind us once a batch after it is durable.
fn clear_skip(meta: &MetaStore, key: &str) {
    let cleared = LifecycleDoc::load(meta, key).and_then(|mut doc| {
        doc.skip = None;
        doc.save(meta, key)
    });
    if let Err(e) = cleared {
        warn!(changefeed = %key, error = %ferry_core::error_chain(&e), "could not clear the skipped transaction");
    }
}

/// Runs a source's stream; a panic in it (a bug in Ferry or in a driver) becomes a definite
/// error naming it, sent to the applier, instead of a reader that stopped without a word
/// and is retried forever.
async fn reader_task(
    stream: Box<dyn ferry_core::ChangeStream>,
    events: ferry_core::source::EventSender,
    confirms: ferry_core::source::Confirmed,
) {
    use futures::FutureExt;
    let report = events.clone();
    let Err(panic) = std::panic::AssertUnwindSafe(stream.run(events, confirms))
        .catch_unwind()
        .await
    else {
        return;
    };
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    let error = ferry_core::SourceError::message(
        format!("the source's stream reader panicked: {what}"),
        ferry_core::ErrorClass::Definite,
    )
    .with_hint("a bug in Ferry or its database driver: report it with the server log");
    let _ = report.send(Err(error)).await;
}

#[cfg(test)]
mod tests {
    use ferry_core::{FinishedChunk, Lsn, Position, TableId};

    use super::earliest_snapshot;

    #[test]
    fn the_earliest_snapshot_is_the_one_every_chunk_covers() {
        let chunk = |lsn| FinishedChunk {
            table: TableId::new("s", "t"),
            chunk: 0,
            rows: 1,
            snapshot: Position::PgLsn(Lsn(lsn)),
        };
        assert_eq!(earliest_snapshot(&[]), None);
        assert_eq!(
            earliest_snapshot(&[chunk(9), chunk(5), chunk(7)]),
            Some(Position::PgLsn(Lsn(5)))
        );
    }
}
