//! Transactions sent ahead of their commit.
//!
//! A source that learns a large transaction's changes while it is still in progress
//! (PostgreSQL's streaming of in-progress transactions) can hand them on at once, as
//! [`Ahead`] events, besides keeping them for its commit. A sink that can hold one
//! transaction open on a session of its own ([`crate::Sink::applies_ahead`]) then writes
//! them while the source is still producing the rest, and at the commit only the last
//! changes and the commit are left:
//!
//! ```text
//! source:  Ahead::Change(x)… ─ committed transactions ─ Ahead::Change(x)… ─ Ahead::Commit(x)
//! engine:  second session ◄─┘  main session, as ever   second session ◄─┘  main commits,
//!                                                                          then the second
//! ```
//!
//! Nothing sent ahead is ever needed: the engine may leave it unused at any point (it
//! answers the [`Ahead::Commit`] with `false`), and the source then sends the transaction
//! whole, as an ordinary one, in its commit order. A source sends [`Ahead::Discard`] when
//! what it sent ahead must not be used (a subtransaction rolled back, the transaction
//! aborted, something it cannot describe ahead).

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::{Position, RowChange};

/// A piece of a transaction still in progress on the source.
#[derive(Clone, Debug, PartialEq)]
pub enum Ahead {
    /// A row change (insert, update or delete) of transaction `xid`, in its order.
    Change {
        /// The source's id of the (top-level) transaction.
        xid: u32,
        /// The change.
        change: RowChange,
    },
    /// Nothing sent ahead of `xid` may be used: if it commits, it comes whole.
    Discard {
        /// The transaction.
        xid: u32,
    },
    /// `xid` committed. The engine answers through `reply` whether every change sent ahead
    /// of it is applied and durable together with the checkpoint `end`; when it does, the
    /// source does not send the transaction again, else it sends it whole next.
    Commit {
        /// The transaction.
        xid: u32,
        /// Where its commit record lies.
        commit: Position,
        /// Position just after it: the checkpoint to store with it.
        end: Position,
        /// Commit time, microseconds since the Unix epoch.
        commit_time_us: i64,
        /// Where the answer goes.
        reply: AheadReply,
    },
}

/// The engine's answer to an [`Ahead::Commit`]: sent once. Dropped unanswered, it counts as
/// `false` (send the transaction whole).
#[derive(Clone)]
pub struct AheadReply(Arc<Mutex<Option<oneshot::Sender<bool>>>>);

impl AheadReply {
    /// A reply and where the source waits for it.
    pub fn new() -> (AheadReply, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        (AheadReply(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    /// Answers: `true` when the transaction is applied and durable with its checkpoint.
    pub fn answer(&self, applied: bool) {
        let sender = self.0.lock().map(|mut s| s.take()).unwrap_or(None);
        if let Some(sender) = sender {
            let _ = sender.send(applied);
        }
    }
}

impl PartialEq for AheadReply {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for AheadReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AheadReply(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_once_and_unanswered_counts_as_no() {
        let (reply, mut rx) = AheadReply::new();
        let copy = reply.clone();
        reply.answer(true);
        copy.answer(false);
        assert_eq!(rx.try_recv(), Ok(true));

        let (reply, mut rx) = AheadReply::new();
        drop(reply);
        assert!(rx.try_recv().is_err());
    }
}
