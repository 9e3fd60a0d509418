//! Transactions the source streams while they are still in progress (pgoutput protocol 2).
//!
//! With `streaming 'on'`, the walsender does not hold a transaction bigger than
//! `logical_decoding_work_mem` until its commit: it sends what it has decoded so far in
//! blocks, and decodes the rest as the source writes it. Ferry writes each block's changes
//! to a [`Spool`] per transaction and, at the transaction's commit, reads them back as one
//! ordinary transaction; so the engine sees nothing new, and the source's decoding overlaps
//! the transaction instead of starting at its commit:
//!
//! ```text
//! Stream Start (xid, first?) ─► later messages belong to xid's spool
//!   R/Y/I/U/D/T/M (xid of the (sub)transaction after the tag) ─► spool, xid removed
//! Stream Stop                ─► back to ordinary messages
//! Stream Commit (xid, LSNs)  ─► Begin, the spool's messages, Commit
//! Stream Abort (xid, subxid) ─► the spool is dropped, or cut back to where subxid began
//! ```
//!
//! A spool holds its first [`MEMORY_LIMIT`] bytes in memory (while all open spools hold
//! less than [`MEMORY_LIMIT_ALL`] together) and moves to an unlinked temporary file (in
//! `$TMPDIR`; on a tmpfs that is memory too) past them, so Ferry's memory stays bounded
//! whatever the transactions' sizes. The file is written and read with blocking calls:
//! sequential, through the page cache, in 1 MB buffers. Nothing here is durable: after a reconnect the source streams every
//! uncommitted transaction again from its start.
//!
//! A subtransaction's changes are recorded from the offset of its first change; when it is
//! rolled back, the spool is cut back to that offset and later subtransactions are
//! forgotten with it (they are its descendants: a subtransaction's changes end before its
//! parent's next ones begin), as PostgreSQL's own subscriber does.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use ferry_core::Lsn;

use crate::decode::DecodeError;

/// Bytes a spool keeps in memory before it moves to a temporary file.
pub const MEMORY_LIMIT: usize = 8 << 20;

/// Bytes all of a stream's spools keep in memory together: past them, the spool written to
/// moves to its file too (many transactions may be streaming at once).
pub const MEMORY_LIMIT_ALL: usize = 32 << 20;

/// A protocol-2 message that opens, closes, commits or aborts a streamed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamControl {
    /// `S`: the messages up to the next Stop belong to `xid`.
    Start {
        /// The top-level transaction's id.
        xid: u32,
        /// The transaction's first block.
        first: bool,
    },
    /// `E`: the end of a block.
    Stop,
    /// `c`: the streamed transaction committed.
    Commit {
        /// The top-level transaction's id.
        xid: u32,
        /// The LSN of the commit record.
        commit_lsn: Lsn,
        /// The LSN just past it: where to resume after this transaction.
        end_lsn: Lsn,
        /// Commit time, in microseconds since 2000-01-01 UTC as sent.
        commit_time_us: i64,
    },
    /// `A`: the transaction (`subxid == xid`) or one of its subtransactions rolled back.
    Abort {
        /// The top-level transaction's id.
        xid: u32,
        /// The rolled-back (sub)transaction's id.
        subxid: u32,
    },
}

/// Reads a stream control message; `None` when `payload` is another message.
pub fn control(payload: &[u8]) -> Result<Option<StreamControl>, DecodeError> {
    let Some((&tag, body)) = payload.split_first() else {
        return Ok(None);
    };
    let mut r = Reader(body);
    let control = match tag {
        b'S' => StreamControl::Start {
            xid: r.u32("stream start xid")?,
            first: r.u8("stream start flag")? == 1,
        },
        b'E' => StreamControl::Stop,
        b'c' => {
            let xid = r.u32("stream commit xid")?;
            let _flags = r.u8("stream commit flags")?;
            StreamControl::Commit {
                xid,
                commit_lsn: Lsn(r.u64("stream commit lsn")?),
                end_lsn: Lsn(r.u64("stream commit end lsn")?),
                commit_time_us: r.u64("stream commit time")? as i64,
            }
        }
        b'A' => StreamControl::Abort {
            xid: r.u32("stream abort xid")?,
            subxid: r.u32("stream abort subxid")?,
        },
        _ => return Ok(None),
    };
    // Protocol 4 appends the abort's LSN and time; protocol 2 (asked for) has nothing more.
    if !r.0.is_empty() {
        return Err(DecodeError::TrailingBytes {
            message: "stream control",
            count: r.0.len(),
        });
    }
    Ok(Some(control))
}

/// Splits a message inside a stream block into the (sub)transaction id it carries and the
/// message as protocol 1 would have sent it (the id removed), in two parts: the type byte
/// and the rest (no copy).
pub fn split_streamed(payload: &[u8]) -> Result<(u32, [&[u8]; 2]), DecodeError> {
    let Some((tag, body)) = payload.split_at_checked(1) else {
        return Err(DecodeError::Truncated {
            what: "message type",
        });
    };
    let xid = Reader(body).u32("streamed message xid")?;
    Ok((xid, [tag, &body[4..]]))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let Some((head, rest)) = self.0.split_first_chunk::<N>() else {
            return Err(DecodeError::Truncated { what });
        };
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take::<1>(what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(what)?))
    }
}

/// The messages of one streamed transaction so far, each as `u32` length + bytes.
pub struct Spool {
    xid: u32,
    memory_limit: usize,
    memory: Vec<u8>,
    file: Option<BufWriter<std::fs::File>>,
    len: u64,
    messages: u64,
    /// Subtransactions in the order their first change came, with the offset and the
    /// number of messages before that change.
    subxacts: Vec<(u32, u64, u64)>,
    /// Where each subtransaction is in `subxacts` (a transaction may have very many).
    subxact_index: HashMap<u32, usize>,
}

impl Spool {
    /// An empty spool for top-level transaction `xid`.
    pub fn new(xid: u32) -> Self {
        Self::with_memory_limit(xid, MEMORY_LIMIT)
    }

    fn with_memory_limit(xid: u32, memory_limit: usize) -> Self {
        Spool {
            xid,
            memory_limit,
            memory: Vec::new(),
            file: None,
            len: 0,
            messages: 0,
            subxacts: Vec::new(),
            subxact_index: HashMap::new(),
        }
    }

    /// Messages held.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Bytes held, in memory or in the file.
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// Whether the spool has moved to a temporary file.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.memory.len()
    }

    /// Moves the spool to a temporary file (from now on, everything goes there).
    pub fn spill(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            let mut file = BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
            file.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        Ok(())
    }

    /// Adds a message (protocol-1 layout, given in `parts`) of (sub)transaction `xid`.
    pub fn push(&mut self, xid: u32, parts: &[&[u8]]) -> std::io::Result<()> {
        if xid != self.xid && !self.subxact_index.contains_key(&xid) {
            self.subxact_index.insert(xid, self.subxacts.len());
            self.subxacts.push((xid, self.len, self.messages));
        }
        let size: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(size).map_err(std::io::Error::other)?;
        if self.memory.len() + 4 + size > self.memory_limit {
            self.spill()?;
        }
        match &mut self.file {
            Some(file) => {
                file.write_all(&len.to_be_bytes())?;
                for part in parts {
                    file.write_all(part)?;
                }
            }
            None => {
                self.memory.extend_from_slice(&len.to_be_bytes());
                for part in parts {
                    self.memory.extend_from_slice(part);
                }
            }
        }
        self.len += 4 + u64::from(len);
        self.messages += 1;
        Ok(())
    }

    /// Drops the changes of subtransaction `subxid` and of those that began after it.
    pub fn abort_subtransaction(&mut self, subxid: u32) -> std::io::Result<()> {
        let Some(&index) = self.subxact_index.get(&subxid) else {
            return Ok(()); // none of its changes came
        };
        let (_, offset, messages) = self.subxacts[index];
        for (gone, _, _) in self.subxacts.drain(index..) {
            self.subxact_index.remove(&gone);
        }
        match &mut self.file {
            Some(file) => {
                file.flush()?;
                let inner = file.get_mut();
                inner.set_len(offset)?;
                inner.seek(SeekFrom::Start(offset))?;
            }
            None => self.memory.truncate(offset as usize),
        }
        self.len = offset;
        self.messages = messages;
        Ok(())
    }

    /// Reads the messages back from the start (at the transaction's commit).
    pub fn into_reader(self) -> std::io::Result<SpoolReader> {
        match self.file {
            Some(file) => {
                let mut file = file.into_inner().map_err(|e| e.into_error())?;
                file.seek(SeekFrom::Start(0))?;
                Ok(SpoolReader::File(BufReader::with_capacity(1 << 20, file)))
            }
            None => Ok(SpoolReader::Memory(Bytes::from(self.memory))),
        }
    }
}

/// The messages of a [`Spool`], in order.
pub enum SpoolReader {
    /// A spool still in memory.
    Memory(Bytes),
    /// A spool in its temporary file.
    File(BufReader<std::fs::File>),
}

impl SpoolReader {
    /// The next message, or `None` at the end.
    pub fn next_message(&mut self) -> std::io::Result<Option<Bytes>> {
        match self {
            SpoolReader::Memory(bytes) => {
                if bytes.is_empty() {
                    return Ok(None);
                }
                let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
                let message = bytes.slice(4..4 + len);
                *bytes = bytes.slice(4 + len..);
                Ok(Some(message))
            }
            SpoolReader::File(reader) => {
                let mut len = [0u8; 4];
                match reader.read_exact(&mut len) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(e),
                }
                let mut message = vec![0; u32::from_be_bytes(len) as usize];
                reader.read_exact(&mut message)?;
                Ok(Some(Bytes::from(message)))
            }
        }
    }
}

#[cfg(test)]
mod tests;
