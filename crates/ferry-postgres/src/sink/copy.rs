//! Bulk copy into the target: snapshot chunks, their bookkeeping, and primary keys built
//! after the load.
//!
//! Each chunk's COPY text (from a PostgreSQL source as it comes, or encoded here from the
//! rows of any source) is streamed into `COPY … FROM STDIN` in its own transaction,
//! which also records the chunk in `_ferry.snapshot_chunks`, so a restart knows exactly
//! which chunks are in. Tables this sink creates for a copy get their primary key only
//! when the copy is done: one index build is several times cheaper than maintaining the
//! index row by row.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ferry_core::{
    BulkFormat, ChunkData, ErrorClass, Lsn, Position, SinkError, SourceError, TableId, TableSchema,
    Value,
};
use futures::{Stream, StreamExt};

use super::{ddl, statement_error, PgSink};
use crate::copy_text;
use crate::snapshot::CopyFormat;

/// Raises `maintenance_work_mem` to 512 MB for an index build after a bulk copy (a higher
/// setting of the target's is kept), until `RESET maintenance_work_mem`: a parallel build
/// divides it among its workers, and at 256 MB the 5M keys of the benchmark's largest table
/// already sorted on disk (1.6–1.8 s against 1.2–1.3 s at 512 MB, docs/benchmarks.md).
/// Used only for the length of the build, and only as much as the keys need.
pub(super) const INDEX_BUILD_MEMORY: &str =
    "SELECT pg_catalog.set_config('maintenance_work_mem', CASE \
       WHEN pg_catalog.pg_size_bytes(pg_catalog.current_setting('maintenance_work_mem')) \
            < 512 * 1024 * 1024 THEN '512MB' \
       ELSE pg_catalog.current_setting('maintenance_work_mem') END, false)";

/// Size of the `COPY FROM` messages the rows of a chunk are gathered into.
const COPY_MESSAGE_BYTES: usize = 256 << 10;

/// Rows of the row path encoded together (at most: as many as the source has ready).
const ROWS_PER_MESSAGE: usize = 256;

pub use ferry_core::FinishedChunk;

/// Moves the staged rows into the table, replacing rows of the same key.
fn upsert_staged_sql(schema: &TableSchema, columns: &str) -> String {
    let key: Vec<String> = schema
        .key
        .iter()
        .map(|&i| ferry_core::quote_ident(&schema.columns[i].name))
        .collect();
    let set: Vec<String> = (0..schema.columns.len())
        .filter(|i| !schema.key.contains(i))
        .map(|i| {
            let c = ferry_core::quote_ident(&schema.columns[i].name);
            format!("{c} = EXCLUDED.{c}")
        })
        .collect();
    let action = if set.is_empty() {
        "NOTHING".to_string()
    } else {
        format!("UPDATE SET {}", set.join(", "))
    };
    format!(
        "INSERT INTO {} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM pg_temp._ferry_stage \
         ON CONFLICT ({}) DO {action}; DROP TABLE pg_temp._ferry_stage",
        schema.id.quoted(),
        key.join(", ")
    )
}

impl PgSink {
    /// Forgets this changefeed's checkpoint and snapshot progress (a fresh start).
    pub async fn reset_state(&mut self) -> Result<(), SinkError> {
        for table in ["_ferry.checkpoints", "_ferry.snapshot_chunks"] {
            self.client
                .execute(
                    &format!("DELETE FROM {table} WHERE changefeed = $1"),
                    &[&self.changefeed],
                )
                .await
                .map_err(|e| statement_error(format!("reset {table}"), e))?;
        }
        Ok(())
    }

    /// The snapshot chunks already copied for this changefeed.
    pub async fn finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        let rows = self
            .client
            .query(
                "SELECT table_schema, table_name, chunk, rows, snapshot_lsn
                 FROM _ferry.snapshot_chunks WHERE changefeed = $1",
                &[&self.changefeed],
            )
            .await
            .map_err(|e| statement_error("read snapshot progress", e))?;
        rows.iter()
            .map(|r| {
                Ok(FinishedChunk {
                    table: TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                    chunk: r.get::<_, i32>(2) as u32,
                    rows: r.get::<_, i64>(3) as u64,
                    snapshot: stored_position(&r.get::<_, String>(4))?,
                })
            })
            .collect()
    }

    /// Whether the target can compress TOASTed values with lz4 (PostgreSQL 14 and later,
    /// built with lz4) and its default is PostgreSQL's own, not one its owner set (that one
    /// is kept); asked once per session, `false` when it cannot be told.
    async fn toast_lz4(&mut self) -> bool {
        if let Some(lz4) = self.lz4 {
            return lz4;
        }
        let lz4 = self
            .client
            .query_opt(
                "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' \
                 AND 'lz4' = ANY(enumvals) AND source = 'default'",
                &[],
            )
            .await
            .is_ok_and(|row| row.is_some());
        self.lz4 = Some(lz4);
        lz4
    }

    /// Loads one snapshot chunk: COPY text as it comes, rows encoded as COPY text.
    pub async fn copy_chunk(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot: &Position,
        replace: bool,
        data: ChunkData,
    ) -> Result<u64, SinkError> {
        match data {
            ChunkData::Bulk { format, data } => match CopyFormat::of(format) {
                Some(encoding) => {
                    self.copy_encoded(schema, chunk, snapshot, replace, encoding, data)
                        .await
                }
                None => Err(SinkError::Unsupported {
                    message: format!(
                        "the PostgreSQL sink cannot load snapshot chunks in format {}",
                        format.0
                    ),
                }),
            },
            ChunkData::Rows(rows) => {
                // Encoded as COPY text, a batch of rows per message, so rows from any source
                // load as fast as COPY allows.
                let what = format!("copy {} chunk {chunk}", schema.id);
                let data = rows.ready_chunks(ROWS_PER_MESSAGE).map(move |batch| {
                    let mut out = BytesMut::new();
                    for row in batch {
                        let row = row?;
                        if row.contains(&Value::Unchanged) {
                            return Err(SourceError::message(
                                format!("{what}: the source sent a row with an unchanged value"),
                                ErrorClass::Definite,
                            ));
                        }
                        copy_text::encode_row(&row, &mut out);
                    }
                    Ok(out.freeze())
                });
                self.copy_encoded(schema, chunk, snapshot, replace, CopyFormat::Text, data)
                    .await
            }
        }
    }

    /// Copies one snapshot chunk (COPY text or binary) in its own transaction, recording it
    /// as finished in the same transaction. With `replace`, the table is emptied first (a
    /// table re-copied whole after a restart). Returns the rows copied.
    async fn copy_encoded<S, E>(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot: &Position,
        replace: bool,
        encoding: CopyFormat,
        data: S,
    ) -> Result<u64, SinkError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::error::Error + Send + Sync + 'static,
    {
        let what = format!("copy {} chunk {chunk}", schema.id);
        let fail = |e| statement_error(what.clone(), e);
        // Rows kept from before the changefeed (`existing_target: append`): never emptied,
        // the copy upserts into them by key through a staging table.
        let append = super::ownership::append_rows(&self.client, &schema.id).await?;
        if append && replace && !schema.has_key() {
            return Err(SinkError::Unsupported {
                message: format!(
                    "table {} has no key and its target kept rows from before the changefeed \
                     (existing_target: append); its interrupted copy cannot be redone without \
                     doubling or deleting rows. Empty the target table, then resume",
                    schema.id
                ),
            });
        }
        let staged = append && schema.has_key();
        if staged {
            self.build_key(schema).await?;
        }
        // Values the copy TOASTs compress with lz4, not pglz: the same values, a fraction of
        // the target's CPU (see docs/benchmarks.md).
        let begin = if self.toast_lz4().await {
            "BEGIN; SET LOCAL default_toast_compression = 'lz4'"
        } else {
            "BEGIN"
        };
        self.client.batch_execute(begin).await.map_err(fail)?;
        let loaded = async {
            let rows = (self.load_chunk(schema, chunk, replace && !append, staged, encoding, data))
                .await?;
            self.record_chunk(schema, chunk, snapshot, rows).await
        }
        .await;
        if loaded.is_err() {
            // Nothing of the chunk stays: not its rows, not an emptied table.
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        loaded
    }

    /// Loads a chunk's data inside the open transaction (emptying the table first with
    /// `truncate`; through a staging table with `staged`). Returns the rows loaded.
    async fn load_chunk<S, E>(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        truncate: bool,
        staged: bool,
        encoding: CopyFormat,
        data: S,
    ) -> Result<u64, SinkError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::error::Error + Send + Sync + 'static,
    {
        let what = format!("copy {} chunk {chunk}", schema.id);
        let fail = |e| statement_error(what.clone(), e);
        if truncate {
            self.client
                .batch_execute(&format!("TRUNCATE {}", schema.id.quoted()))
                .await
                .map_err(fail)?;
        }
        let columns: Vec<String> = schema
            .columns
            .iter()
            .map(|c| ferry_core::quote_ident(&c.name))
            .collect();
        let columns = columns.join(", ");
        let into = if staged {
            self.client
                .batch_execute(&format!(
                    "CREATE TEMP TABLE _ferry_stage ON COMMIT DROP AS \
                     SELECT {columns} FROM {} WITH NO DATA",
                    schema.id.quoted()
                ))
                .await
                .map_err(fail)?;
            "pg_temp._ferry_stage".to_string()
        } else {
            schema.id.quoted()
        };
        let sink = self
            .client
            .copy_in::<_, Bytes>(&format!(
                "COPY {into} ({columns}) FROM STDIN{}",
                encoding.option()
            ))
            .await
            .map_err(fail)?;
        // Boxed, not pinned on the stack: on a failure it is dropped (as this returns) before
        // the caller's ROLLBACK, which aborts the COPY (the ROLLBACK would otherwise queue
        // behind it forever).
        let mut sink = Box::pin(sink);
        let mut data = std::pin::pin!(data);
        // The source sends a message per row: gather them into large messages, so the
        // target and Ferry handle a few thousand messages per chunk, not one per row.
        let mut pending = BytesMut::with_capacity(COPY_MESSAGE_BYTES);
        let mut ended = false;
        while !ended {
            let sent = match data.next().await {
                Some(Ok(bytes)) => {
                    // Large enough on its own (a source that gathers rows itself): as it is.
                    let message = if pending.is_empty() && bytes.len() >= COPY_MESSAGE_BYTES / 2 {
                        bytes
                    } else {
                        pending.extend_from_slice(&bytes);
                        if pending.len() < COPY_MESSAGE_BYTES {
                            continue;
                        }
                        pending.split().freeze()
                    };
                    futures::SinkExt::feed(&mut sink, message)
                        .await
                        .map_err(fail)
                }
                Some(Err(e)) => Err(SinkError::Statement {
                    what: format!("{what}: read from the source"),
                    // A source error keeps its class (a value the source refuses is
                    // definite); anything else is a read that may work again.
                    class: (&e as &(dyn std::error::Error + 'static))
                        .downcast_ref::<SourceError>()
                        .map_or(ErrorClass::Transient, |s| s.class),
                    source: Box::new(e),
                }),
                None => {
                    ended = true;
                    let message = pending.split().freeze();
                    if message.is_empty() {
                        Ok(())
                    } else {
                        futures::SinkExt::feed(&mut sink, message)
                            .await
                            .map_err(fail)
                    }
                }
            };
            sent?;
        }
        let rows = sink.as_mut().finish().await.map_err(fail)?;
        if encoding == CopyFormat::Binary {
            self.check_binary_types(schema).await?;
        }
        if staged {
            self.client
                .batch_execute(&upsert_staged_sql(schema, &columns))
                .await
                .map_err(fail)?;
        }
        Ok(rows)
    }

    /// Records the chunk as copied and commits it with its rows.
    async fn record_chunk(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot: &Position,
        rows: u64,
    ) -> Result<u64, SinkError> {
        let fail = |e| statement_error(format!("record {} chunk {chunk}", schema.id), e);
        self.client
            .execute(
                "INSERT INTO _ferry.snapshot_chunks
                 (changefeed, table_schema, table_name, chunk, rows, snapshot_lsn)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (changefeed, table_schema, table_name, chunk)
                 DO UPDATE SET rows = EXCLUDED.rows, snapshot_lsn = EXCLUDED.snapshot_lsn",
                &[
                    &self.changefeed,
                    &schema.id.schema,
                    &schema.id.name,
                    &(chunk as i32),
                    &(rows as i64),
                    &serde_json::to_string(snapshot).expect("a position serializes"),
                ],
            )
            .await
            .map_err(fail)?;
        self.client.batch_execute("COMMIT").await.map_err(fail)?;
        Ok(rows)
    }

    /// Refuses a binary chunk just loaded into `schema`'s table (the caller undoes it)
    /// unless each of its target columns has the source column's type: binary values read
    /// as another type of the same width (an `int8` as a `timestamp`) load wrong without an
    /// error. Checked after the COPY, whose lock no type change gets past until the chunk
    /// commits, so what is read is what the COPY wrote into.
    async fn check_binary_types(&mut self, schema: &TableSchema) -> Result<(), SinkError> {
        let current = super::ddl::target_columns(&self.client, schema).await;
        if current.is_ok_and(|c| super::shape::loads_binary(schema, &c.unwrap_or_default())) {
            return Ok(());
        }
        Err(SinkError::Statement {
            what: format!("check target column types of {}", schema.id),
            // The next attempt reads the target's types anew and decides again.
            class: ErrorClass::Transient,
            source: format!(
                "a column of target table {} changed type since the copy began",
                schema.id
            )
            .into(),
        })
    }

    /// The formats chunks of `schema` load in: binary first when the target's server is
    /// known for it and [`PgSink::ensure_table_for_copy`] found the table's columns of the
    /// source's types ([`super::shape::loads_binary`]).
    pub(super) fn copy_formats(&self, schema: &TableSchema) -> &'static [BulkFormat] {
        let binary = self.binary_server == Some(true)
            && (self.tables.get(&schema.id))
                .is_some_and(|t| t.binary && t.schema.columns == schema.columns);
        if binary {
            &[BulkFormat::PG_COPY_BINARY, BulkFormat::PG_COPY_TEXT]
        } else {
            &[BulkFormat::PG_COPY_TEXT]
        }
    }

    /// Whether the target's server is one whose binary COPY forms are known
    /// ([`crate::types::BINARY_COPY_VERSIONS`]); asked once per session, `false` when it
    /// cannot be told.
    async fn binary_server(&mut self) -> bool {
        if let Some(known) = self.binary_server {
            return known;
        }
        let known = crate::catalog::server_version_num(&self.client)
            .await
            .is_ok_and(|v| crate::types::BINARY_COPY_VERSIONS.contains(&v));
        self.binary_server = Some(known);
        known
    }

    /// Creates the target table of `schema` for a bulk copy, or follows its column changes
    /// when it exists. A table created here has no primary key yet: the copy loads it
    /// faster, and [`PgSink::ensure_key`] adds the key once the copy is done (building an
    /// index once costs a fraction of maintaining it row by row).
    pub async fn ensure_table_for_copy(
        &mut self,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
        self.binary_server().await;
        self.shape_table(schema, false).await
    }

    /// Gives the target table a unique index on the key (its primary key) after a bulk
    /// copy, unless it has one. Also run for every keyed table the stream writes to, so a
    /// build that failed after a copy is retried.
    /// Then completes a table Ferry created with the source's definition (indexes,
    /// constraints, defaults, identity, comments).
    pub async fn ensure_key(&mut self, schema: &TableSchema) -> Result<(), SinkError> {
        self.build_key(schema).await?;
        self.complete_table(schema).await
    }

    async fn build_key(&mut self, schema: &TableSchema) -> Result<(), SinkError> {
        if !schema.has_key() {
            return Ok(());
        }
        let index = ddl::key_index(&self.client, schema).await?;
        if index.usable {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let built = self
            .client
            .batch_execute(&format!(
                "{INDEX_BUILD_MEMORY}; {}; RESET maintenance_work_mem",
                ddl::add_key_sql(schema, index.has_primary_key)
            ))
            .await;
        if let Err(e) = built {
            // A build of a process killed a moment ago may still run on the target (its
            // backend has not noticed the lost client yet), then commit while this one waits
            // for its lock: "multiple primary keys". The key is there: done.
            let _ = self
                .client
                .batch_execute("RESET maintenance_work_mem")
                .await;
            if ddl::key_index(&self.client, schema).await?.usable {
                tracing::info!(table = %schema.id, "primary key built by an earlier session");
                return Ok(());
            }
            return Err(statement_error(
                format!("add the primary key of {}", schema.id),
                e,
            ));
        }
        tracing::info!(table = %schema.id, seconds = started.elapsed().as_secs_f64(), "primary key built");
        Ok(())
    }
}

/// A snapshot position stored in `_ferry.snapshot_chunks`: the tagged JSON of a position,
/// or a bare LSN as versions before positions had kinds stored it.
fn stored_position(text: &str) -> Result<Position, SinkError> {
    let parsed = if text.starts_with('{') {
        serde_json::from_str(text).ok()
    } else {
        text.parse::<Lsn>().ok().map(Position::PgLsn)
    };
    parsed.ok_or_else(|| SinkError::Unsupported {
        message: format!(
            "a snapshot position in _ferry.snapshot_chunks is unreadable ({:?})",
            text.chars().take(64).collect::<String>()
        ),
    })
}
