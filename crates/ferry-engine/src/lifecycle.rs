//! The changefeed state machine: which state an operator action or a runtime event leads
//! to, and which actions are refused in which state.
//!
//! ```text
//!   create ──► running ◄──────────── resume ──────────── stopped ◄── create(start=false)
//!               │  ▲ ▲                                      ▲
//!   transient   │  │ └── an attempt gets going again        │
//!   failure     ▼  │                                        │
//!              error ── retries exhausted ─┐                │
//!               │  │                       ▼                │
//!               │  └── definite ────────► failed ── resume ─┘(→ running)
//!               │                          ▲
//!   running ────┴── definite failure ──────┘
//!   running/error ── pause ──► paused ── resume ──► running
//!   running ── target_position reached / snapshot-only copy done ──► finished
//! ```
//!
//! | from \ action | pause | resume | update | delete |
//! |---|---|---|---|---|
//! | stopped  | refused `CHANGEFEED_NOT_RUNNING` | → running | ok, stays stopped | gone |
//! | running  | → paused | no-op (with a position: refused `CHANGEFEED_RUNNING`) | refused `CHANGEFEED_RUNNING` | gone |
//! | paused   | no-op | → running | ok, stays paused | gone |
//! | error    | → paused | → running (retry now) | refused `CHANGEFEED_RUNNING` | gone |
//! | failed   | refused `CHANGEFEED_NOT_RUNNING` | → running | ok, stays failed | gone |
//! | finished | refused `CHANGEFEED_FINISHED` | refused `CHANGEFEED_FINISHED` | refused `CHANGEFEED_FINISHED` | gone |
//!
//! Runtime events only happen while a changefeed's task runs (`running` or `error`).
//! `stopped`, `paused`, `failed` and `finished` are settled: they are persisted and survive
//! a server restart; `running` and `error` restart on the next server start.

use ferry_core::{Position, TableId};
use ferry_meta::{Collection, MetaError, MetaStore};
use serde::{Deserialize, Serialize};

use crate::status::{FeedState, Phase, StatusCell, TableProgress, Timed};

/// What an operator asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop replicating for now, keeping the slot (WAL accumulates on the source).
    Pause,
    /// Start (again); `with_position` when it also overwrites the checkpoint.
    Resume {
        /// An `overwrite_checkpoint_position` was given.
        with_position: bool,
    },
    /// Change the configuration.
    Update,
}

/// What an accepted action does to the changefeed's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Start the task (stopping the current one first, if any).
    Start,
    /// Stop the task.
    Stop,
    /// Nothing to do to the task (a configuration change, or already there).
    None,
}

/// An accepted action: the state after it and what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state afterwards.
    pub to: FeedState,
    /// What happens to the task.
    pub effect: Effect,
}

/// Why an action is refused in a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Pausing needs a changefeed that runs (or retries).
    #[error("the changefeed is {0}, not running: there is nothing to pause")]
    NotRunning(FeedState),
    /// Updating (or resuming from another position) needs a changefeed that does not run.
    #[error("the changefeed is {0}; pause it first")]
    Running(FeedState),
    /// A finished changefeed is done; it can only be deleted.
    #[error("the changefeed is finished; it can only be read or deleted")]
    Finished,
    /// Re-syncing needs a changefeed whose first copy is done.
    #[error("the changefeed is still copying its tables; re-sync once it streams")]
    Copying,
}

/// Where `action` takes a changefeed in state `from`, or why it is refused.
pub fn transition(from: FeedState, action: Action) -> Result<Transition, Refusal> {
    use Action::*;
    use FeedState::*;
    let to = |to, effect| Ok(Transition { to, effect });
    match (from, action) {
        (Finished, _) => Err(Refusal::Finished),
        (Running | Error, Pause) => to(Paused, Effect::Stop),
        (Paused, Pause) => to(Paused, Effect::None),
        (Stopped | Failed, Pause) => Err(Refusal::NotRunning(from)),
        (
            Running,
            Resume {
                with_position: false,
            },
        ) => to(Running, Effect::None),
        (
            Running,
            Resume {
                with_position: true,
            },
        ) => Err(Refusal::Running(from)),
        (Stopped | Paused | Failed | Error, Resume { .. }) => to(Running, Effect::Start),
        (Stopped | Paused | Failed, Update) => to(from, Effect::None),
        (Running | Error, Update) => Err(Refusal::Running(from)),
    }
}

/// Something that happened to a running changefeed's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An attempt connected and is copying or streaming.
    Progressing,
    /// A transient failure; the task retries after a backoff.
    Transient,
    /// A definite failure, or retries exhausted.
    Definite,
    /// The `target_position` was reached, or a snapshot-only copy completed.
    Done,
}

/// The state after `event` in state `from`. Events only reach a changefeed whose task runs;
/// one arriving in a settled state (a race with a pause) leaves that state alone.
pub fn on_event(from: FeedState, event: Event) -> FeedState {
    use FeedState::*;
    match (from, event) {
        (Running | Error, Event::Progressing) => Running,
        (Running | Error, Event::Transient) => Error,
        (Running | Error, Event::Definite) => Failed,
        (Running | Error, Event::Done) => Finished,
        (settled, _) => settled,
    }
}

/// Whether a changefeed in `state` has a task (restarted on server start).
pub fn runs(state: FeedState) -> bool {
    matches!(state, FeedState::Running | FeedState::Error)
}

/// The persisted lifecycle of one changefeed (collection `changefeed_lifecycle`): the
/// settled state, the last error, a requested resume position, and the status the task
/// last showed (so a paused changefeed still shows its checkpoint after a restart).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LifecycleDoc {
    pub(crate) state: FeedState,
    #[serde(default)]
    pub(crate) last_error: Option<Timed>,
    #[serde(default)]
    pub(crate) last_warning: Option<Timed>,
    /// Where the next run starts streaming instead of the sink's checkpoint (an operator's
    /// `overwrite_checkpoint_position`); cleared once a batch after it is durable.
    #[serde(default)]
    pub(crate) resume_from: Option<Position>,
    /// A source transaction the next runs leave out (an operator's `skip`); cleared once a
    /// batch after it is durable.
    #[serde(default)]
    pub(crate) skip: Option<SkipTransaction>,
    #[serde(default)]
    pub(crate) last_error_position: Option<Position>,
    #[serde(default)]
    pub(crate) phase: Option<Phase>,
    #[serde(default)]
    pub(crate) checkpoint: Option<Position>,
    #[serde(default)]
    pub(crate) checkpoint_time_us: Option<i64>,
    #[serde(default)]
    pub(crate) tables: Vec<TableProgress>,
}

impl LifecycleDoc {
    pub(crate) fn new(state: FeedState) -> Self {
        LifecycleDoc {
            state,
            last_error: None,
            last_warning: None,
            resume_from: None,
            skip: None,
            last_error_position: None,
            phase: None,
            checkpoint: None,
            checkpoint_time_us: None,
            tables: Vec::new(),
        }
    }

    /// The stored document of `key`; a changefeed stored before lifecycles existed runs.
    pub(crate) fn load(meta: &MetaStore, key: &str) -> Result<Self, MetaError> {
        Ok(meta
            .get(Collection::ChangefeedLifecycle, key)?
            .unwrap_or_else(|| LifecycleDoc::new(FeedState::Running)))
    }

    pub(crate) fn save(&self, meta: &MetaStore, key: &str) -> Result<(), MetaError> {
        meta.put(Collection::ChangefeedLifecycle, key, self)
    }

    /// Copies what the status shows now into the document.
    pub(crate) fn capture(&mut self, status: &StatusCell) {
        status.update(|live| {
            self.last_error = live.last_error.clone();
            self.last_error_position = live.last_error_position.clone();
            self.last_warning = live.last_warning.clone();
            self.phase = Some(live.phase);
            self.checkpoint = live.checkpoint.clone();
            self.checkpoint_time_us = live.checkpoint_time_us;
            self.tables = live.tables.clone();
        });
    }

    /// A status cell showing this document (for a changefeed without a task).
    pub(crate) fn status(&self) -> StatusCell {
        let cell = StatusCell::new(self.state, self.phase.unwrap_or(Phase::Snapshot));
        cell.update(|live| {
            live.last_error = self.last_error.clone();
            live.last_error_position = self.last_error_position.clone();
            live.last_warning = self.last_warning.clone();
            live.checkpoint = self.checkpoint.clone();
            live.checkpoint_time_us = self.checkpoint_time_us;
            live.tables = self.tables.clone();
        });
        cell
    }
}

/// A source transaction the next runs leave out, kept in the changefeed's lifecycle
/// document until a batch after it is durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SkipTransaction {
    /// Its commit position.
    pub(crate) position: Position,
    /// Only its changes to this table; all of it when `None`.
    #[serde(default)]
    pub(crate) table: Option<TableId>,
}

impl SkipTransaction {
    /// Whether a change to `table` of the transaction committed at `commit` is left out.
    pub(crate) fn leaves_out(&self, commit: &Position, table: &TableId) -> bool {
        &self.position == commit && self.table.as_ref().is_none_or(|t| t == table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FeedState::*;

    const STATES: [FeedState; 6] = [Stopped, Running, Paused, Error, Failed, Finished];

    fn name(r: Result<Transition, Refusal>) -> String {
        match r {
            Ok(t) => format!("{:?}/{:?}", t.to, t.effect),
            Err(Refusal::NotRunning(_)) => "NOT_RUNNING".into(),
            Err(Refusal::Running(_)) => "RUNNING".into(),
            Err(Refusal::Finished) => "FINISHED".into(),
            Err(Refusal::Copying) => "COPYING".into(),
        }
    }

    /// Every (state, action) pair, against the table in the module docs.
    #[test]
    fn operator_transition_table() {
        let actions = [
            Action::Pause,
            Action::Resume {
                with_position: false,
            },
            Action::Resume {
                with_position: true,
            },
            Action::Update,
        ];
        let expected: [[&str; 4]; 6] = [
            // pause, resume, resume with position, update
            [
                "NOT_RUNNING",
                "Running/Start",
                "Running/Start",
                "Stopped/None",
            ],
            ["Paused/Stop", "Running/None", "RUNNING", "RUNNING"],
            [
                "Paused/None",
                "Running/Start",
                "Running/Start",
                "Paused/None",
            ],
            ["Paused/Stop", "Running/Start", "Running/Start", "RUNNING"],
            [
                "NOT_RUNNING",
                "Running/Start",
                "Running/Start",
                "Failed/None",
            ],
            ["FINISHED", "FINISHED", "FINISHED", "FINISHED"],
        ];
        for (state, row) in STATES.iter().zip(expected) {
            for (action, want) in actions.iter().zip(row) {
                assert_eq!(
                    name(transition(*state, *action)),
                    want,
                    "{state:?} {action:?}"
                );
            }
        }
    }

    #[test]
    fn runtime_events() {
        let events = [
            Event::Progressing,
            Event::Transient,
            Event::Definite,
            Event::Done,
        ];
        let expected: [[FeedState; 4]; 6] = [
            [Stopped, Stopped, Stopped, Stopped],
            [Running, Error, Failed, Finished],
            [Paused, Paused, Paused, Paused],
            [Running, Error, Failed, Finished],
            [Failed, Failed, Failed, Failed],
            [Finished, Finished, Finished, Finished],
        ];
        for (state, row) in STATES.iter().zip(expected) {
            for (event, want) in events.iter().zip(row) {
                assert_eq!(on_event(*state, *event), want, "{state:?} {event:?}");
            }
        }
    }

    #[test]
    fn only_running_and_error_have_a_task() {
        let with_task: Vec<FeedState> = STATES.into_iter().filter(|s| runs(*s)).collect();
        assert_eq!(with_task, vec![Running, Error]);
    }

    #[test]
    fn refusals_say_what_to_do() {
        assert_eq!(
            Refusal::Running(Running).to_string(),
            "the changefeed is running; pause it first"
        );
        assert!(Refusal::NotRunning(Failed).to_string().contains("failed"));
    }
}
