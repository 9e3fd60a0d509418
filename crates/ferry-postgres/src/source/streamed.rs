//! The stream's side of [`crate::spool`]: stream blocks are spooled per transaction, and a
//! streamed transaction that commits is handed on as an ordinary one.

use ferry_core::{ErrorClass, Position, SourceEvent};

use super::{PgStream, PG_EPOCH_OFFSET_US};
use crate::decode;
use crate::spool::{self, Spool, StreamControl};
use crate::PgError;

/// A streamed transaction that committed: its spool and its Begin and Commit.
pub(super) struct Committed {
    spool: Spool,
    xid: u32,
    commit_lsn: ferry_core::Lsn,
    end_lsn: ferry_core::Lsn,
    commit_time_us: i64,
    /// The engine's answer when the changes went ahead: `true` when it applied them all.
    answer: Option<tokio::sync::oneshot::Receiver<bool>>,
}

fn spool_error(e: std::io::Error) -> PgError {
    PgError::other(
        "spool a transaction the source streams in progress to a temporary file",
        ErrorClass::Transient,
        e,
    )
}

fn decode_error(e: decode::DecodeError) -> PgError {
    PgError::other("decode a pgoutput message", ErrorClass::Definite, e)
}

impl PgStream {
    /// Handles `payload` if it belongs to a streamed transaction (a stream control message
    /// or a message inside a stream block); `false` when it is an ordinary message.
    pub(super) async fn on_streamed(&mut self, payload: &bytes::Bytes) -> Result<bool, PgError> {
        if let Some(control) = spool::control(payload).map_err(decode_error)? {
            self.on_control(control).await?;
            return Ok(true);
        }
        let Some(xid) = self.block else {
            return Ok(false);
        };
        // A block's Origin carries no xid; Ferry takes no action on origins.
        if payload.first() == Some(&b'O') {
            return Ok(true);
        }
        let (subxid, message) = spool::split_streamed(payload).map_err(decode_error)?;
        let size = message[0].len() + message[1].len();
        let in_memory: usize = self.spools.values().map(Spool::memory_bytes).sum();
        let spool = self
            .spools
            .get_mut(&xid)
            .expect("a block's spool exists while the block is open");
        if in_memory + size > spool::MEMORY_LIMIT_ALL {
            spool.spill().map_err(spool_error)?;
        }
        spool.push(subxid, &message).map_err(spool_error)?;
        self.ahead_message(xid, payload).await?;
        Ok(true)
    }

    async fn on_control(&mut self, control: StreamControl) -> Result<(), PgError> {
        match control {
            StreamControl::Start { xid, first } => {
                if first {
                    self.spools.insert(xid, Spool::new(xid));
                    self.ahead_begin(xid);
                } else if !self.spools.contains_key(&xid) {
                    return Err(PgError::other(
                        format!(
                            "the source continued streaming transaction {xid}, whose start \
                             this session did not receive; reconnecting"
                        ),
                        ErrorClass::Transient,
                        "stream start without a first block",
                    ));
                }
                self.block = Some(xid);
            }
            StreamControl::Stop => self.block = None,
            StreamControl::Commit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time_us,
            } => {
                let Some(spool) = self.spools.remove(&xid) else {
                    return Err(PgError::other(
                        format!(
                            "the source committed streamed transaction {xid}, none of whose \
                             blocks this session received; reconnecting"
                        ),
                        ErrorClass::Transient,
                        "stream commit without a stream",
                    ));
                };
                tracing::debug!(
                    xid,
                    messages = spool.messages(),
                    bytes = spool.bytes(),
                    spilled = spool.spilled(),
                    "streamed transaction committed"
                );
                let answer = self
                    .ahead_commit(
                        xid,
                        Position::PgLsn(commit_lsn),
                        Position::PgLsn(end_lsn),
                        commit_time_us.saturating_add(PG_EPOCH_OFFSET_US),
                    )
                    .await?;
                self.committed = Some(Committed {
                    spool,
                    xid,
                    commit_lsn,
                    end_lsn,
                    commit_time_us,
                    answer,
                });
            }
            StreamControl::Abort { xid, subxid } if xid == subxid => {
                self.spools.remove(&xid);
                self.ahead_discard(xid, "it rolled back");
            }
            StreamControl::Abort { xid, subxid } => {
                self.ahead_discard(xid, "a subtransaction rolled back");
                if let Some(spool) = self.spools.get_mut(&xid) {
                    spool.abort_subtransaction(subxid).map_err(spool_error)?;
                }
            }
        }
        Ok(())
    }

    /// Sends a committed streamed transaction on as Begin, its changes and Commit, unless
    /// the engine applied it from the changes sent ahead; `Ok(false)` when the receiver is
    /// gone.
    pub(super) async fn hand_on(
        &mut self,
        mut committed: Committed,
        events: &ferry_core::source::EventSender,
    ) -> Result<bool, PgError> {
        if let Some(answer) = committed.answer.take() {
            // Unanswered (the engine went away or left it): sent whole, as before.
            if answer.await == Ok(true) {
                return Ok(true);
            }
        }
        let commit_time_us = committed.commit_time_us.saturating_add(PG_EPOCH_OFFSET_US);
        self.pending.push_back(SourceEvent::Begin {
            commit: Position::PgLsn(committed.commit_lsn),
            xid: committed.xid,
            commit_time_us,
        });
        let mut reader = committed.spool.into_reader().map_err(spool_error)?;
        while let Some(payload) = reader.next_message().map_err(spool_error)? {
            let message = decode::decode(&payload).map_err(decode_error)?;
            self.on_message(message).await?;
            if !self.flush(events).await {
                return Ok(false);
            }
        }
        self.pending.push_back(SourceEvent::Commit {
            end: Position::PgLsn(committed.end_lsn),
            commit_time_us,
        });
        Ok(self.flush(events).await)
    }
}
