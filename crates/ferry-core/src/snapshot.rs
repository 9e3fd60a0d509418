//! The vocabulary of a table copy: how a table is cut into chunks ([`TablePlan`],
//! [`ChunkSpec`]), what a chunk's data is on its way from source to sink ([`ChunkData`]),
//! and what the sink reports as copied ([`FinishedChunk`]).
//!
//! # Two paths
//! Any source and sink meet on the row path: [`ChunkData::Rows`], values in canonical text.
//! A source and a sink that share an encoding ([`BulkFormat`]) may skip decoding: the
//! source offers its formats for a table ([`crate::SnapshotExport::bulk_formats`]), the
//! sink names those it loads into that table ([`crate::Sink::bulk_formats`]), and the
//! engine picks the first of the source's that the sink loads, unless the changefeed's
//! `snapshot_bulk` option is off.
//!
//! A chunk commits in the target together with its marker, so a restart copies only the
//! chunks not finished. The plan is persisted in the metadata store: its serialized form
//! stays readable across versions.

use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::{Position, Row, SourceError, TableId};

/// One chunk of a table: a key range, or the whole table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSpec {
    /// The chunk's number within its table.
    pub index: u32,
    /// Inclusive lower bound on the key (`None`: unbounded).
    pub lower: Option<i64>,
    /// Exclusive upper bound on the key (`None`: unbounded).
    pub upper: Option<i64>,
}

impl ChunkSpec {
    /// Up to `count` chunks of about equal width over the integer keys `min..=max`: the
    /// first unbounded below and the last above, so rows whose keys fall outside the bounds
    /// read at planning still belong to a chunk.
    pub fn split(min: i64, max: i64, count: u64) -> Vec<ChunkSpec> {
        let span = (i128::from(max) - i128::from(min) + 1).max(1);
        let step = (span / i128::from(count.max(1))).max(1);
        let mut cuts: Vec<i64> = (1..count)
            .map(|i| (i128::from(min) + step * i128::from(i)) as i64)
            .filter(|b| *b > min && *b <= max)
            .collect();
        cuts.dedup();
        let mut chunks = Vec::with_capacity(cuts.len() + 1);
        let mut lower = None;
        for (i, b) in cuts.iter().enumerate() {
            chunks.push(ChunkSpec {
                index: i as u32,
                lower,
                upper: Some(*b),
            });
            lower = Some(*b);
        }
        chunks.push(ChunkSpec {
            index: chunks.len() as u32,
            lower,
            upper: None,
        });
        chunks
    }

    /// The one chunk of a table copied whole.
    pub fn whole() -> Self {
        ChunkSpec {
            index: 0,
            lower: None,
            upper: None,
        }
    }
}

/// How one table is copied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablePlan {
    /// The table.
    pub table: TableId,
    /// The integer key column chunks are ranges of, if chunked.
    pub key_column: Option<String>,
    /// The chunks (one, unbounded, when not chunked).
    pub chunks: Vec<ChunkSpec>,
    /// The source's row estimate when planned.
    pub estimated_rows: u64,
}

/// A chunk the sink holds, committed with its marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedChunk {
    /// Its table.
    pub table: TableId,
    /// Its number within the table.
    pub chunk: u32,
    /// Rows it copied.
    pub rows: u64,
    /// The position of the snapshot it was read in.
    pub snapshot: Position,
}

/// The bytes of a bulk chunk, as the source streams them.
pub type ByteStream = BoxStream<'static, Result<Bytes, SourceError>>;

/// A bulk format a source reads and a sink loads without decoding rows. The engine never
/// looks inside: it hands a chunk over when the source's format is one the sink loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BulkFormat(pub &'static str);

impl BulkFormat {
    /// PostgreSQL's `COPY … (FORMAT text)`: one row per line.
    pub const PG_COPY_TEXT: BulkFormat = BulkFormat("pg.copy.text");
    /// PostgreSQL's `COPY … (FORMAT binary)`, whole (header, rows, trailer): each value in
    /// its type's binary send form, so offered and loaded only for tables whose columns
    /// have the same built-in type on both sides.
    pub const PG_COPY_BINARY: BulkFormat = BulkFormat("pg.copy.binary");
}

/// The rows of a chunk, decoded, as the source reads them.
pub type RowStream = BoxStream<'static, Result<Row, SourceError>>;

/// A chunk's data on its way from source to sink. The engine asks the source for
/// [`ChunkData::Bulk`] only in a format the sink loads (and the changefeed allows it), and
/// for [`ChunkData::Rows`] otherwise: every sink loads rows.
pub enum ChunkData {
    /// Rows encoded in a bulk format both sides share, passed through untouched.
    Bulk {
        /// The encoding.
        format: BulkFormat,
        /// The encoded rows.
        data: ByteStream,
    },
    /// Rows of typed values (each in its column's canonical text, see [`crate::logical`]),
    /// in the table's column order.
    Rows(RowStream),
}

/// Where a sink whose destination cannot keep snapshot chunk markers (a webhook) keeps
/// them: the engine's metadata store, one ledger per changefeed, handed over in
/// [`crate::TargetPolicy::chunk_ledger`]. A sink records a chunk only once its data is
/// durable at the destination.
pub trait ChunkLedger: Send + Sync {
    /// The chunks recorded.
    fn finished(&self) -> Result<Vec<FinishedChunk>, String>;
    /// Records a chunk (replacing an earlier marker of the same table and chunk).
    fn record(&self, chunk: &FinishedChunk) -> Result<(), String>;
    /// Forgets every chunk.
    fn clear(&self) -> Result<(), String>;
}

/// A shared [`ChunkLedger`].
#[derive(Clone)]
pub struct ChunkLedgerHandle(pub std::sync::Arc<dyn ChunkLedger>);

impl std::fmt::Debug for ChunkLedgerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkLedger(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_every_key_once() {
        let chunks = ChunkSpec::split(1, 100, 4);
        assert_eq!(chunks.len(), 4);
        assert_eq!((chunks[0].lower, chunks[3].upper), (None, None));
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].upper, pair[1].lower);
        }
        assert_eq!(ChunkSpec::split(5, 5, 8).len(), 1);
        assert_eq!(ChunkSpec::split(i64::MIN, i64::MAX, 3).len(), 3);
    }
}
