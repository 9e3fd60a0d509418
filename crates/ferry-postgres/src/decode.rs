//! Decoding of pgoutput messages (logical replication protocol version 1).
//!
//! The walsender wraps each pgoutput message in an XLogData frame; the replication client
//! unwraps it and hands over the payload as [`Bytes`]. [`decode`] turns one payload into
//! one [`PgOutputMessage`]:
//!
//! ```text
//! walsender ─XLogData─▶ pgwire-replication ─payload: Bytes─▶ decode() ─▶ PgOutputMessage
//!                                                                         │
//!                      Begin, Relation, Insert/Update/Delete, ..., Commit ◀┘
//! ```
//!
//! The layouts are those of PostgreSQL's "Logical Replication Message Formats", version 1:
//! big-endian integers, NUL-terminated strings, no streamed-transaction fields. Ferry
//! requests text-format values and protocol 1, or protocol 2 with streaming from a
//! PostgreSQL 14+ source: [`crate::spool`] then takes the stream control messages and
//! removes the transaction id from the messages inside a stream block, which leaves
//! version-1 messages. Anything else (prepare messages, binary values) is rejected rather
//! than guessed at.
//!
//! # Invariants
//!
//! - **Zero copy.** Every [`Value::Text`] and every [`PgOutputMessage::Message`] content is a
//!   [`Bytes::slice`] of the payload: decoding a row allocates its `Vec` of values and
//!   nothing per value. Names (relations, columns, types, origins, prefixes) are the only
//!   owned copies.
//! - **Bounded by the input.** No input makes [`decode`] panic or allocate more than a small
//!   multiple of the payload's length: a length or count that runs past the payload is
//!   [`DecodeError::Truncated`], and `Vec` capacities are capped by the bytes that remain.
//! - **Whole payload.** A payload holds exactly one message; bytes left over are
//!   [`DecodeError::TrailingBytes`].
//!
//! # Error handling
//!
//! Every [`DecodeError`] is definite: the bytes are not the pgoutput version Ferry asked for,
//! and reading the same position again yields the same bytes. Errors name the field that
//! failed and carry tag bytes and counts, never value bytes, which may be sensitive row data.

use bytes::Bytes;
use ferry_core::{Lsn, Value};

/// Microseconds from the Unix epoch (1970-01-01) to the PostgreSQL epoch (2000-01-01).
const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;

/// Converts a PostgreSQL timestamp (microseconds since 2000-01-01 UTC) to microseconds since
/// the Unix epoch, saturating at the `i64` bounds (PostgreSQL's `infinity` timestamps).
pub fn pg_epoch_to_unix_us(us_since_2000: i64) -> i64 {
    us_since_2000.saturating_add(PG_EPOCH_UNIX_US)
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    /// The start of a committed transaction (`B`).
    Begin {
        /// The LSN of the transaction's commit record.
        final_lsn: Lsn,
        /// Commit time, in microseconds since 2000-01-01 UTC as sent; see
        /// [`pg_epoch_to_unix_us`].
        commit_time_us: i64,
        /// The transaction id.
        xid: u32,
    },
    /// The end of a transaction (`C`).
    Commit {
        /// Flags; unused by PostgreSQL so far, kept as sent.
        flags: u8,
        /// The LSN of the commit record.
        commit_lsn: Lsn,
        /// The LSN just past the commit record: where to resume after this transaction.
        end_lsn: Lsn,
        /// Commit time, in microseconds since 2000-01-01 UTC as sent.
        commit_time_us: i64,
    },
    /// The replication origin a transaction came from (`O`).
    Origin {
        /// The commit's LSN on the origin server.
        commit_lsn: Lsn,
        /// The origin's name.
        name: String,
    },
    /// A table's shape, sent before its first change and after every schema change (`R`).
    Relation(RelationMessage),
    /// A non-built-in type a relation uses (`Y`).
    Type {
        /// The type's OID.
        oid: u32,
        /// The type's schema; empty for `pg_catalog`.
        namespace: String,
        /// The type's name.
        name: String,
    },
    /// A new row (`I`).
    Insert {
        /// The OID of the relation, as announced by a prior [`PgOutputMessage::Relation`].
        relation_id: u32,
        /// The new row.
        new: TupleData,
    },
    /// A changed row (`U`).
    Update {
        /// The OID of the relation.
        relation_id: u32,
        /// The old key (`K`, when the key changed) or the whole old row (`O`, with
        /// `REPLICA IDENTITY FULL`); `None` when neither was sent.
        old: Option<OldTuple>,
        /// The new row; unchanged TOASTed columns are [`Value::Unchanged`].
        new: TupleData,
    },
    /// A removed row (`D`).
    Delete {
        /// The OID of the relation.
        relation_id: u32,
        /// The removed row's key or, with `REPLICA IDENTITY FULL`, the whole row.
        old: OldTuple,
    },
    /// `TRUNCATE` of one or more relations (`T`).
    Truncate {
        /// The OIDs of the truncated relations.
        relation_ids: Vec<u32>,
        /// `TRUNCATE ... CASCADE` (option bit 1).
        cascade: bool,
        /// `TRUNCATE ... RESTART IDENTITY` (option bit 2).
        restart_identity: bool,
    },
    /// A `pg_logical_emit_message` (`M`).
    Message {
        /// Emitted inside the transaction (delivered with it) rather than immediately.
        transactional: bool,
        /// The LSN of the message.
        lsn: Lsn,
        /// The prefix the emitter chose.
        prefix: String,
        /// The content, a slice of the payload.
        content: Bytes,
    },
}

/// A relation's identity and columns, as sent in a Relation (`R`) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationMessage {
    /// The relation's OID, which later row messages refer to.
    pub id: u32,
    /// The relation's schema; empty for `pg_catalog`, kept as sent.
    pub namespace: String,
    /// The relation's name.
    pub name: String,
    /// `relreplident`: `d` (default: primary key), `n` (nothing), `f` (full), `i` (index).
    pub replica_identity: u8,
    /// The published columns, in the order row messages carry their values.
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`RelationMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity key (flag bit 1).
    pub is_key: bool,
    /// The column's name.
    pub name: String,
    /// The OID of the column's type.
    pub type_oid: u32,
    /// The type modifier (`atttypmod`), `-1` when there is none.
    pub type_modifier: i32,
}

/// The old row an Update or Delete carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// Only the replica identity columns, others [`Value::Null`] (`K`).
    Key(TupleData),
    /// The whole old row, with `REPLICA IDENTITY FULL` (`O`).
    Full(TupleData),
}

impl OldTuple {
    /// The old row's values, whichever form it came in.
    pub fn into_row(self) -> TupleData {
        match self {
            OldTuple::Key(row) | OldTuple::Full(row) => row,
        }
    }
}

/// A row's values in the relation's column order.
pub type TupleData = Vec<Value>;

/// Why a payload is not a pgoutput version 1 message.
///
/// Every variant is definite: retrying yields the same bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ends inside a field, or a length or count runs past its end.
    #[error("pgoutput message truncated while reading {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// The first byte names no pgoutput version 1 message.
    #[error("unknown pgoutput message type {0:#04x}")]
    UnknownMessage(u8),
    /// A column value's kind is none of `n`, `u`, `t`, `b`.
    #[error("unknown tuple column kind {0:#04x}")]
    UnknownTupleKind(u8),
    /// A row message's tuple marker is not one its message type allows.
    #[error("unexpected tuple marker {found:#04x} in {message} message, expected {expected}")]
    UnexpectedTupleMarker {
        /// The message type.
        message: &'static str,
        /// The marker found.
        found: u8,
        /// The markers allowed there.
        expected: &'static str,
    },
    /// A column value in binary format, which Ferry never requests.
    #[error("binary column value; Ferry requests text format only")]
    BinaryValue,
    /// A name or prefix that is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
        /// Where the invalid sequence starts.
        #[source]
        source: std::str::Utf8Error,
    },
    /// A length field below zero.
    #[error("negative length for {what}")]
    NegativeLength {
        /// The field whose length was read.
        what: &'static str,
    },
    /// A replica identity setting other than `d`, `n`, `f`, `i`.
    #[error("unknown replica identity {0:#04x}")]
    UnknownReplicaIdentity(u8),
    /// Bytes left after a complete message.
    #[error("{count} unexpected bytes after {message} message")]
    TrailingBytes {
        /// The message type decoded.
        message: &'static str,
        /// How many bytes were left.
        count: usize,
    },
}

/// Decodes one pgoutput payload (the contents of one XLogData frame).
///
/// Text values and message contents share `payload`'s buffer.
pub fn decode(payload: &Bytes) -> Result<PgOutputMessage, DecodeError> {
    decode_message(payload, false)
}

/// Decodes a message of a stream block (protocol 2): the (sub)transaction's xid that
/// follows the tag is skipped, and the rest shares `payload`'s buffer as [`decode`]'s does.
pub fn decode_streamed(payload: &Bytes) -> Result<PgOutputMessage, DecodeError> {
    decode_message(payload, true)
}

fn decode_message(payload: &Bytes, streamed: bool) -> Result<PgOutputMessage, DecodeError> {
    let mut cursor = Cursor {
        buf: payload,
        pos: 0,
    };
    let tag = cursor.u8("message type")?;
    if streamed {
        cursor.u32("streamed message xid")?;
    }
    let (message, kind) = match tag {
        b'B' => (cursor.begin()?, "begin"),
        b'C' => (cursor.commit()?, "commit"),
        b'O' => (cursor.origin()?, "origin"),
        b'R' => (cursor.relation()?, "relation"),
        b'Y' => (cursor.type_message()?, "type"),
        b'I' => (cursor.insert()?, "insert"),
        b'U' => (cursor.update()?, "update"),
        b'D' => (cursor.delete()?, "delete"),
        b'T' => (cursor.truncate()?, "truncate"),
        b'M' => (cursor.logical_message()?, "logical decoding"),
        other => return Err(DecodeError::UnknownMessage(other)),
    };
    match cursor.remaining() {
        0 => Ok(message),
        count => Err(DecodeError::TrailingBytes {
            message: kind,
            count,
        }),
    }
}

/// Smallest encoding of one tuple column: its kind byte (`n` or `u`).
const MIN_TUPLE_COLUMN_LEN: usize = 1;
/// Smallest encoding of one relation column: flags, empty name, type OID, type modifier.
const MIN_RELATION_COLUMN_LEN: usize = 1 + 1 + 4 + 4;
/// Encoding of one truncated relation's OID.
const RELATION_ID_LEN: usize = 4;

/// A read position in one payload. `pos <= buf.len()` always holds.
struct Cursor<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn rest(&self) -> &'a [u8] {
        let buf: &'a Bytes = self.buf;
        buf.get(self.pos..).unwrap_or_default()
    }

    /// Capacity for `count` elements of at least `min_len` bytes each: never more than the
    /// remaining bytes could hold, so a hostile count cannot reserve memory.
    fn capacity(&self, count: usize, min_len: usize) -> usize {
        count.min(self.remaining() / min_len)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let (head, _) = self
            .rest()
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated { what })?;
        self.pos += N;
        Ok(*head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.array(what).map(u16::from_be_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        self.array(what).map(i32::from_be_bytes)
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.array(what).map(i64::from_be_bytes)
    }

    fn lsn(&mut self, what: &'static str) -> Result<Lsn, DecodeError> {
        self.array(what).map(|b| Lsn(u64::from_be_bytes(b)))
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let rest = self.rest();
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated { what })?;
        let text = std::str::from_utf8(&rest[..len])
            .map_err(|source| DecodeError::InvalidUtf8 { what, source })?;
        self.pos += len + 1;
        Ok(text.to_owned())
    }

    /// An Int32 length followed by that many bytes, as a slice of the payload.
    fn length_prefixed(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.i32(what)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::NegativeLength { what })?;
        if len > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        let start = self.pos;
        self.pos += len;
        Ok(self.buf.slice(start..self.pos))
    }

    fn begin(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::Begin {
            final_lsn: self.lsn("begin final LSN")?,
            commit_time_us: self.i64("begin commit timestamp")?,
            xid: self.u32("begin xid")?,
        })
    }

    fn commit(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::Commit {
            flags: self.u8("commit flags")?,
            commit_lsn: self.lsn("commit LSN")?,
            end_lsn: self.lsn("commit end LSN")?,
            commit_time_us: self.i64("commit timestamp")?,
        })
    }

    fn origin(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::Origin {
            commit_lsn: self.lsn("origin commit LSN")?,
            name: self.string("origin name")?,
        })
    }

    fn relation(&mut self) -> Result<PgOutputMessage, DecodeError> {
        let id = self.u32("relation id")?;
        let namespace = self.string("relation namespace")?;
        let name = self.string("relation name")?;
        let replica_identity = match self.u8("replica identity")? {
            setting @ (b'd' | b'n' | b'f' | b'i') => setting,
            other => return Err(DecodeError::UnknownReplicaIdentity(other)),
        };
        let count = usize::from(self.u16("relation column count")?);
        let mut columns = Vec::with_capacity(self.capacity(count, MIN_RELATION_COLUMN_LEN));
        for _ in 0..count {
            columns.push(RelationColumn {
                is_key: self.u8("column flags")? & 1 != 0,
                name: self.string("column name")?,
                type_oid: self.u32("column type OID")?,
                type_modifier: self.i32("column type modifier")?,
            });
        }
        Ok(PgOutputMessage::Relation(RelationMessage {
            id,
            namespace,
            name,
            replica_identity,
            columns,
        }))
    }

    fn type_message(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::Type {
            oid: self.u32("type OID")?,
            namespace: self.string("type namespace")?,
            name: self.string("type name")?,
        })
    }

    fn insert(&mut self) -> Result<PgOutputMessage, DecodeError> {
        let relation_id = self.u32("insert relation id")?;
        match self.u8("insert tuple marker")? {
            b'N' => {}
            found => return Err(unexpected_marker("insert", found, "'N'")),
        }
        Ok(PgOutputMessage::Insert {
            relation_id,
            new: self.tuple()?,
        })
    }

    fn update(&mut self) -> Result<PgOutputMessage, DecodeError> {
        let relation_id = self.u32("update relation id")?;
        let (old, marker) = match self.u8("update tuple marker")? {
            b'K' => (
                Some(OldTuple::Key(self.tuple()?)),
                self.u8("update new tuple marker")?,
            ),
            b'O' => (
                Some(OldTuple::Full(self.tuple()?)),
                self.u8("update new tuple marker")?,
            ),
            marker => (None, marker),
        };
        if marker != b'N' {
            let expected = if old.is_some() {
                "'N'"
            } else {
                "'K', 'O' or 'N'"
            };
            return Err(unexpected_marker("update", marker, expected));
        }
        Ok(PgOutputMessage::Update {
            relation_id,
            old,
            new: self.tuple()?,
        })
    }

    fn delete(&mut self) -> Result<PgOutputMessage, DecodeError> {
        let relation_id = self.u32("delete relation id")?;
        let old = match self.u8("delete tuple marker")? {
            b'K' => OldTuple::Key(self.tuple()?),
            b'O' => OldTuple::Full(self.tuple()?),
            found => return Err(unexpected_marker("delete", found, "'K' or 'O'")),
        };
        Ok(PgOutputMessage::Delete { relation_id, old })
    }

    fn truncate(&mut self) -> Result<PgOutputMessage, DecodeError> {
        // A u32 count always fits the usize of the 32- and 64-bit targets Ferry builds for;
        // saturate rather than assume, the capacity cap and the reads bound it anyway.
        let count = usize::try_from(self.u32("truncate relation count")?).unwrap_or(usize::MAX);
        let options = self.u8("truncate options")?;
        let mut relation_ids = Vec::with_capacity(self.capacity(count, RELATION_ID_LEN));
        for _ in 0..count {
            relation_ids.push(self.u32("truncate relation id")?);
        }
        Ok(PgOutputMessage::Truncate {
            relation_ids,
            cascade: options & 1 != 0,
            restart_identity: options & 2 != 0,
        })
    }

    fn logical_message(&mut self) -> Result<PgOutputMessage, DecodeError> {
        Ok(PgOutputMessage::Message {
            transactional: self.u8("message flags")? & 1 != 0,
            lsn: self.lsn("message LSN")?,
            prefix: self.string("message prefix")?,
            content: self.length_prefixed("message content")?,
        })
    }

    /// TupleData: an Int16 column count, then per column a kind byte and, for `t`, the value.
    fn tuple(&mut self) -> Result<TupleData, DecodeError> {
        let count = usize::from(self.u16("tuple column count")?);
        let mut values = Vec::with_capacity(self.capacity(count, MIN_TUPLE_COLUMN_LEN));
        for _ in 0..count {
            values.push(match self.u8("tuple column kind")? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => Value::Text(self.length_prefixed("text column value")?),
                b'b' => return Err(DecodeError::BinaryValue),
                other => return Err(DecodeError::UnknownTupleKind(other)),
            });
        }
        Ok(values)
    }
}

fn unexpected_marker(message: &'static str, found: u8, expected: &'static str) -> DecodeError {
    DecodeError::UnexpectedTupleMarker {
        message,
        found,
        expected,
    }
}

#[cfg(test)]
mod tests;
