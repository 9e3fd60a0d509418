//! A segment's compacted changes turned into set statements ([`super::statements`]).

use ferry_core::SinkError;

use super::pipeline::{self, Segment};
use super::statements::{self, Shape};
use super::PgSink;

impl PgSink {
    /// Takes the segment and turns it into statements (preparing new shapes).
    pub(super) async fn segment_statements(&mut self) -> Result<Segment, SinkError> {
        let segment = std::mem::take(&mut self.segment);
        self.segment_rows = 0;
        self.segment_bytes = 0;
        let mut out = Segment::default();
        for (id, changes) in segment {
            let schema = changes.schema.clone();
            let mut sets = changes.into_sets();
            let all = || 0..schema.columns.len();
            if !sets.deletes.is_empty() {
                let statement = self.statement(&schema, Shape::DeleteSet).await?;
                let keys: Vec<_> = (0..schema.key.len()).collect();
                let params = statements::column_arrays(&sets.deletes, keys.into_iter()).collect();
                out.work.push((statement, params));
            }
            if sets.inserts.len() < pipeline::PLAIN_INSERT_ROWS {
                sets.upserts.append(&mut sets.inserts);
            } else {
                let insert = self.statement(&schema, Shape::InsertSet).await?;
                let upsert = self.statement(&schema, Shape::UpsertSet).await?;
                let params = statements::column_arrays(&sets.inserts, all()).collect();
                out.fallbacks.push((out.work.len(), upsert));
                out.work.push((insert, params));
            }
            if !sets.upserts.is_empty() {
                let shape = if schema.has_key() {
                    Shape::UpsertSet
                } else {
                    Shape::InsertSet
                };
                let statement = self.statement(&schema, shape).await?;
                let params = statements::column_arrays(&sets.upserts, all()).collect();
                out.work.push((statement, params));
            }
            for (sent, rows) in sets.updates {
                let set: Vec<usize> = (0..sent.len())
                    .filter(|i| sent[*i] && !schema.key.contains(i))
                    .collect();
                if set.is_empty() {
                    continue;
                }
                let statement = self.statement(&schema, Shape::UpdateSet(sent)).await?;
                let columns = schema.key.iter().copied().chain(set);
                let params = statements::column_arrays(&rows, columns).collect();
                out.work.push((statement, params));
            }
            tracing::trace!(table = %id, "segment statements");
        }
        Ok(out)
    }
}
