//! Operator actions on an existing changefeed: pause, resume, update.
//!
//! Each one takes the changefeed's operation lock, asks [`crate::lifecycle::transition`]
//! whether the action is allowed in the current state, runs every check that can fail
//! (positions, the source, the tables) *before* changing anything, and then stops or starts
//! the task and persists the new state. A refused or failed action leaves the changefeed
//! exactly as it was.

use ferry_core::{ConnectionUri, Position};
use ferry_meta::Collection;
use tracing::info;

use crate::config::ChangefeedConfig;
use crate::engine::{feed_key, Engine};
use crate::error::EngineError;
use crate::lifecycle::{self, Action, Effect, LifecycleDoc, Refusal, Transition};
use crate::runner::tables::RuntimeState;
use crate::status::{ChangefeedStatus, FeedState, Phase};

impl Engine {
    /// Parses `text` as a position of the source `uri` (in its database's own notation).
    pub fn parse_position(&self, uri: &ConnectionUri, text: &str) -> Result<Position, String> {
        let connector = self.connectors.source(uri).map_err(|e| e.chain())?;
        connector.parse_position(text).map_err(|e| e.to_string())
    }

    /// Pauses a running (or retrying) changefeed; its slot keeps the source's WAL.
    pub async fn pause(&self, namespace: &str, id: &str) -> Result<ChangefeedStatus, EngineError> {
        let ops = self.ops_lock(namespace, id)?;
        let _guard = ops.lock().await;
        let transition = self.transition(namespace, id, Action::Pause)?;
        self.apply(namespace, id, transition, None).await?;
        self.status(namespace, id)
    }

    /// Starts a stopped, paused or failed changefeed (or retries an `error` one now). With
    /// `position`, streaming restarts there instead of at the checkpoint: it must lie
    /// between what the slot has confirmed and the source's current WAL position.
    pub async fn resume(
        &self,
        namespace: &str,
        id: &str,
        position: Option<Position>,
    ) -> Result<ChangefeedStatus, EngineError> {
        let ops = self.ops_lock(namespace, id)?;
        let _guard = ops.lock().await;
        let transition = self.transition(
            namespace,
            id,
            Action::Resume {
                with_position: position.is_some(),
            },
        )?;
        if let Some(position) = &position {
            let key = feed_key(namespace, id);
            let phase = self
                .meta
                .get::<RuntimeState>(Collection::ChangefeedState, &key)?
                .and_then(|s| s.phase);
            if phase != Some(Phase::Streaming) {
                return Err(EngineError::InvalidPosition(
                    "the changefeed has not finished its snapshot; resume it without a position"
                        .into(),
                ));
            }
            let config = self.config(namespace, id)?;
            self.check_resume_position(&config.source_uri, &key, position)
                .await?;
        }
        self.apply(namespace, id, transition, position).await?;
        self.status(namespace, id)
    }

    /// Replaces the configuration of a stopped, paused or failed changefeed. The state
    /// stays; a resume runs with the new configuration (tables added are copied, then
    /// streamed; tables removed stop replicating).
    pub async fn update(
        &self,
        mut config: ChangefeedConfig,
    ) -> Result<ChangefeedStatus, EngineError> {
        let (namespace, id) = (config.namespace.clone(), config.id.clone());
        let ops = self.ops_lock(&namespace, &id)?;
        let _guard = ops.lock().await;
        self.transition(&namespace, &id, Action::Update)?;
        config.validate(self.options.max_name_length)?;
        let current = self.config(&namespace, &id)?;
        config.created_at_us = current.created_at_us;
        if current.options.snapshot != config.options.snapshot {
            return Err(EngineError::InvalidConfig(
                crate::ConfigError::InvalidOption {
                    field: "options.snapshot",
                    problem: "cannot change after creation",
                },
            ));
        }
        if current.options.partitions != config.options.partitions {
            return Err(EngineError::InvalidConfig(
                crate::ConfigError::InvalidOption {
                    field: "options.partitions",
                    problem: "cannot change after creation (the target tables would change: \
                              delete the changefeed and create it again)",
                },
            ));
        }
        if current.snapshot_only != config.snapshot_only {
            return Err(EngineError::InvalidConfig(
                crate::ConfigError::InvalidOption {
                    field: "snapshot_only",
                    problem: "cannot change after creation",
                },
            ));
        }
        if let Some(name) = &config.source {
            config.source_uri = self
                .source_config(&namespace, name)
                .map_err(|_| EngineError::UnknownSource(name.clone()))?
                .uri;
        }
        crate::validate::check_passwords(&config)?;
        let target_changes = config.sink_uri != current.sink_uri
            || config.options.existing_target != current.options.existing_target;
        if config.source_uri != current.source_uri
            || config.tables != current.tables
            || target_changes
        {
            let source = self.check_source(&config.source_uri).await?;
            self.check_tables(source.as_ref(), &config.source_uri, &config.filter())
                .await?;
            self.check_target(&config, source.as_ref()).await?;
        }
        let key = config.key();
        self.meta.put(Collection::Changefeeds, &key, &config)?;
        info!(changefeed = %key, source = %config.source_uri, sink = %config.sink_uri, "changefeed updated");
        self.with_feed(&namespace, &id, |f| f.config = config)?;
        self.status(&namespace, &id)
    }

    /// The transition `action` makes from the changefeed's current state.
    pub(crate) fn transition(
        &self,
        namespace: &str,
        id: &str,
        action: Action,
    ) -> Result<Transition, EngineError> {
        let state = self.with_feed(namespace, id, |f| f.status.state())?;
        lifecycle::transition(state, action).map_err(|refusal| EngineError::Refused {
            id: id.to_string(),
            refusal,
        })
    }

    /// Carries out an accepted transition (the operation lock is held).
    pub(crate) async fn apply(
        &self,
        namespace: &str,
        id: &str,
        transition: Transition,
        resume_from: Option<Position>,
    ) -> Result<(), EngineError> {
        let key = feed_key(namespace, id);
        match transition.effect {
            Effect::None => Ok(()),
            Effect::Stop => {
                self.stop_task(&key).await;
                let status = self.with_feed(namespace, id, |f| f.status.clone())?;
                // A task that finished while stopping stays finished.
                let to = match status.state() {
                    FeedState::Finished => FeedState::Finished,
                    _ => transition.to,
                };
                // A stopped changefeed falls behind: its lag counts from the checkpoint.
                status.update(|s| {
                    s.state = to;
                    s.caught_up = false;
                });
                let mut doc = LifecycleDoc::load(&self.meta, &key)?;
                doc.state = to;
                doc.capture(&status);
                doc.save(&self.meta, &key)?;
                info!(changefeed = %key, state = %to, "changefeed stopped");
                Ok(())
            }
            Effect::Start => {
                self.stop_task(&key).await;
                let mut doc = LifecycleDoc::load(&self.meta, &key)?;
                doc.state = FeedState::Running;
                if resume_from.is_some() {
                    doc.resume_from = resume_from.clone();
                }
                doc.save(&self.meta, &key)?;
                self.with_feed(namespace, id, |f| {
                    if let Some(position) = &resume_from {
                        f.status.update(|s| s.checkpoint = Some(position.clone()));
                    }
                    f.task = Some(self.spawn(&f.config, &f.status));
                })?;
                info!(changefeed = %key, resume_from = ?resume_from.map(|l| l.to_string()), "changefeed started");
                Ok(())
            }
        }
    }
}

impl Engine {
    /// Sets every target sequence of the changefeed's tables to at least the source's value.
    pub async fn sync_sequences(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<crate::sequences::SequencesReport, EngineError> {
        let config = self.config(namespace, id)?;
        crate::sequences::sync(self.connectors.as_ref(), &config)
            .await
            .map_err(EngineError::SequenceSync)
    }
}

impl Engine {
    /// Creates the source's foreign keys between the changefeed's tables on the target.
    /// Refused while the changefeed runs: its batches would have to meet them.
    pub async fn create_foreign_keys(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<crate::foreign_keys::ForeignKeysReport, EngineError> {
        let (config, state) =
            self.with_feed(namespace, id, |f| (f.config.clone(), f.status.state()))?;
        if matches!(state, FeedState::Running | FeedState::Error) {
            return Err(EngineError::Refused {
                id: id.to_string(),
                refusal: Refusal::Running(state),
            });
        }
        crate::foreign_keys::create(self.connectors.as_ref(), &config)
            .await
            .map_err(EngineError::ForeignKeys)
    }
}
