//! One attempt's PostgreSQL source ([`PgSource`]): a catalog connection, the changefeed's
//! slot and publications, exported snapshots and the replication session.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::source::{ChangeStream, Confirmed, EventSender};
use ferry_core::{
    BulkFormat, ChunkData, ChunkReader, ChunkSpec, ConnectionUri, ErrorClass, Lsn, Position,
    SnapshotExport, Source, SourceError, SourceOptions, SourceTable, StreamState, TableDefinition,
    TableFilter, TableId, TablePlan, TableSchema,
};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use pgwire_replication::ReplicationClient;
use tokio_postgres::Client;

use crate::slot::{self, SlotNames, Streaming};
use crate::source::{PgStream, StreamOptions};
use crate::{catalog, definition, snapshot, PgError};

/// Times (100 ms apart) a temporary slot is created again while the previous one of its
/// name is still being released.
const TMP_SLOT_WAITS: u32 = 50;

/// A PostgreSQL source for one attempt of a changefeed.
pub struct PgSource {
    uri: ConnectionUri,
    names: SlotNames,
    options: SourceOptions,
    catalog: Option<Client>,
    /// Whether the source streams transactions in progress (PostgreSQL 14 and later).
    streaming: Streaming,
    /// The server's version is one whose binary COPY forms are known
    /// ([`crate::types::BINARY_COPY_VERSIONS`]).
    binary_copy: bool,
    /// Send streamed transactions' changes ahead of their commit ([`Source::stream_ahead`]).
    ahead: bool,
    /// The session that created the changefeed's slot in this attempt: idle until the
    /// snapshot copy is done (its exported snapshot lives until then), then it streams.
    created: Option<ReplicationClient>,
}

impl PgSource {
    pub(super) async fn open(
        uri: &ConnectionUri,
        feed: &str,
        options: &SourceOptions,
    ) -> Result<Self, PgError> {
        let catalog = crate::connect::connect(uri, "ferry-catalog").await?;
        catalog::prepare_session(&catalog).await?;
        let version = catalog::server_version_num(&catalog).await?;
        let streaming = if version >= 140_000 {
            let server_kb = catalog::decoding_work_mem_kb(&catalog).await?;
            Streaming::Blocks {
                decoding_work_mem_kb: (server_kb > slot::DECODING_WORK_MEM_KB)
                    .then_some(slot::DECODING_WORK_MEM_KB),
            }
        } else {
            Streaming::Off
        };
        Ok(PgSource {
            uri: uri.clone(),
            names: SlotNames::for_changefeed(feed),
            options: options.clone(),
            catalog: Some(catalog),
            streaming,
            binary_copy: crate::types::BINARY_COPY_VERSIONS.contains(&version),
            ahead: false,
            created: None,
        })
    }

    fn catalog(&self) -> &Client {
        self.catalog
            .as_ref()
            .expect("the catalog connection is taken only by start_stream")
    }

    /// Creates a slot with an exported snapshot (`temporary`: the `_tmp` slot that lives as
    /// long as its session).
    async fn create_slot(&self, temporary: bool) -> Result<(slot::CreatedSlot, String), PgError> {
        let mut names = self.names.clone();
        let application = if temporary {
            names.slot = format!("{}_tmp", names.slot);
            "ferry-resync"
        } else {
            "ferry"
        };
        let timeout = self.options.replication_timeout;
        let mut waited = 0;
        loop {
            let config = slot::replication_config(
                &self.uri,
                &names,
                Lsn::ZERO,
                application,
                self.streaming,
            )?;
            match slot::create_slot_with_snapshot_within(config, temporary, timeout).await {
                Ok(created) => return Ok((created, names.slot)),
                // The previous temporary slot of this name goes only once the server's
                // backend of its closed session has exited, a moment after the close
                // (SQLSTATE 42710: duplicate object).
                Err(e) if temporary && waited < TMP_SLOT_WAITS && e.chain().contains("42710") => {
                    waited += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Tables without a key or REPLICA IDENTITY FULL replicate inserts and truncates only.
pub(super) fn table_warnings(tables: &[SourceTable]) -> Vec<String> {
    let mut warnings = Vec::new();
    if tables.is_empty() {
        warnings.push(
            "the table rules select no table of the source; update `tables` or create the \
             tables, then resume the changefeed"
                .to_string(),
        );
    }
    let keyless: Vec<String> = tables
        .iter()
        .filter(|t| !t.schema.replicates_updates())
        .map(|t| t.schema.id.to_string())
        .collect();
    if !keyless.is_empty() {
        warnings.push(format!(
            "tables without a primary key and without REPLICA IDENTITY FULL replicate inserts \
             and truncates only: {}. Set REPLICA IDENTITY FULL (or add a key) and re-create \
             the changefeed to replicate their updates and deletes",
            keyless.join(", ")
        ));
    }
    warnings
}

#[async_trait]
impl Source for PgSource {
    async fn identity(&mut self) -> Result<Option<ferry_core::ServerIdentity>, SourceError> {
        match crate::identity::server_identity(self.catalog()).await {
            Ok(identity) => Ok(Some(identity)),
            Err(e) if e.class == ErrorClass::Transient => Err(e.into()),
            Err(e) => {
                // A source that hides its identity cannot be compared with the sink.
                tracing::warn!(error = %e.chain(), "cannot read the source's identity");
                Ok(None)
            }
        }
    }

    async fn stream_state(&mut self) -> Result<StreamState, SourceError> {
        let state = slot::slot_state(self.catalog(), &self.names.slot).await?;
        Ok(stream_state(state.as_ref(), &self.names.slot))
    }

    async fn select_tables(
        &mut self,
        filter: &TableFilter,
    ) -> Result<Vec<SourceTable>, SourceError> {
        Ok(catalog::selected_tables(self.catalog(), filter).await?)
    }

    fn table_warnings(&self, tables: &[SourceTable]) -> Vec<String> {
        table_warnings(tables)
    }

    async fn table_names(&mut self, ids: &[u32]) -> Result<HashMap<u32, TableId>, SourceError> {
        Ok(catalog::table_names(self.catalog(), ids).await?)
    }

    async fn current_position(&mut self) -> Result<Position, SourceError> {
        Ok(Position::PgLsn(current_wal_lsn(self.catalog()).await?))
    }

    /// Publications: all operations for tables with a replica identity, inserts and
    /// truncates for the others.
    async fn prepare(&mut self, tables: &[SourceTable]) -> Result<Vec<TableId>, SourceError> {
        let client = self.catalog();
        let (full, insert_only): (Vec<&SourceTable>, Vec<&SourceTable>) =
            tables.iter().partition(|t| t.schema.replicates_updates());
        let ids = |v: &[&SourceTable]| v.iter().map(|t| t.schema.id.clone()).collect::<Vec<_>>();
        let was_insert_only =
            slot::publication_tables(client, &self.names.insert_only_publication).await?;
        let upgraded: Vec<TableId> = ids(&full)
            .into_iter()
            .filter(|t| was_insert_only.contains(t))
            .collect();
        slot::sync_publication(
            client,
            &self.names.publication,
            "insert, update, delete, truncate",
            self.options.partitions,
            &ids(&full),
        )
        .await?;
        slot::sync_publication(
            client,
            &self.names.insert_only_publication,
            "insert, truncate",
            self.options.partitions,
            &ids(&insert_only),
        )
        .await?;
        Ok(upgraded)
    }

    async fn plan_table(&mut self, table: &SourceTable) -> Result<TablePlan, SourceError> {
        Ok(snapshot::plan_table(self.catalog(), table).await?)
    }

    async fn plan_diff(
        &mut self,
        table: &SourceTable,
        rows_per_chunk: u64,
    ) -> Result<TablePlan, SourceError> {
        Ok(snapshot::plan_diff(self.catalog(), table, rows_per_chunk).await?)
    }

    async fn definitions(
        &mut self,
        tables: &[&SourceTable],
    ) -> Result<Vec<(TableId, TableDefinition)>, SourceError> {
        let mut out = Vec::new();
        for t in tables {
            let def = definition::read(self.catalog(), t.source_id, &t.schema.id).await?;
            out.push((t.schema.id.clone(), TableDefinition(Arc::new(def))));
        }
        Ok(out)
    }

    async fn create_stream(&mut self) -> Result<Box<dyn SnapshotExport>, SourceError> {
        let (created, slot) = self.create_slot(false).await?;
        tracing::info!(slot = %slot, lsn = %created.consistent_point, "slot created");
        self.created = Some(created.session);
        Ok(Box::new(PgExport {
            uri: self.uri.clone(),
            timeout: self.options.replication_timeout,
            name: created.snapshot_name,
            lsn: created.consistent_point,
            binary_copy: self.binary_copy,
            _session: None,
        }))
    }

    async fn export_snapshot(&mut self) -> Result<Box<dyn SnapshotExport>, SourceError> {
        let (created, _) = self.create_slot(true).await?;
        Ok(Box::new(PgExport {
            uri: self.uri.clone(),
            timeout: self.options.replication_timeout,
            name: created.snapshot_name,
            lsn: created.consistent_point,
            binary_copy: self.binary_copy,
            _session: Some(created.session),
        }))
    }

    fn stream_ahead(&mut self, on: bool) {
        self.ahead = on;
    }

    async fn start_stream(
        &mut self,
        from: Option<Position>,
        tables: HashMap<u32, TableId>,
    ) -> Result<Box<dyn ChangeStream>, SourceError> {
        let session = match self.created.take() {
            Some(s) => s,
            None => {
                let start = match &from {
                    Some(position) => super::pg_lsn(position)?,
                    None => Lsn::ZERO,
                };
                slot::replication_config(&self.uri, &self.names, start, "ferry", self.streaming)?
                    .connect_gated()
                    .await?
            }
        };
        let options = StreamOptions {
            slot: self.names.slot.clone(),
            application_name: "ferry".into(),
            timeout: self.options.replication_timeout,
            partitions: self.options.partitions,
            streaming: self.streaming != Streaming::Off,
            ahead: self.streaming != Streaming::Off && self.ahead,
        };
        let catalog = self
            .catalog
            .take()
            .expect("start_stream is called once per attempt");
        let stream = PgStream::start(session, catalog, options, tables).await?;
        Ok(Box::new(stream))
    }
}

impl ChangeStream for PgStream {
    fn run(self: Box<Self>, events: EventSender, confirmed: Confirmed) -> BoxFuture<'static, ()> {
        Box::pin(PgStream::run(*self, events, confirmed))
    }
}

/// What a slot's row (or its absence) says about the changefeed's stream.
pub(super) fn stream_state(state: Option<&slot::SlotState>, slot_name: &str) -> StreamState {
    match (state, slot::slot_loss(state)) {
        (None, _) => StreamState::Absent {
            description: slot::SlotLoss::Missing.describe(slot_name),
        },
        (Some(_), None) => StreamState::Usable,
        (Some(s), Some(loss)) => StreamState::Lost {
            description: loss.describe(slot_name),
            confirmed: (s.confirmed_flush != Lsn::ZERO)
                .then_some(Position::PgLsn(s.confirmed_flush)),
        },
    }
}

/// The source's current WAL position.
pub(super) async fn current_wal_lsn(client: &Client) -> Result<Lsn, PgError> {
    let row = client
        .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|e| PgError::new("read the current WAL position", e))?;
    let text: String = row.get(0);
    text.parse().map_err(|_| {
        PgError::definite(format!(
            "the source reported an unreadable WAL position {text:?}"
        ))
    })
}

/// An exported snapshot; a temporary slot's session keeps it alive.
struct PgExport {
    uri: ConnectionUri,
    /// See [`SourceOptions::replication_timeout`].
    timeout: std::time::Duration,
    name: String,
    lsn: Lsn,
    /// See [`PgSource::binary_copy`].
    binary_copy: bool,
    _session: Option<ReplicationClient>,
}

#[async_trait]
impl SnapshotExport for PgExport {
    fn position(&self) -> Position {
        Position::PgLsn(self.lsn)
    }

    /// Binary first when every column's type copies in binary between known servers
    /// ([`crate::types::binary_copy_columns`]): the servers neither print nor parse the
    /// values (docs/benchmarks.md, "Snapshot chunks in COPY binary").
    fn bulk_formats(&self, schema: &TableSchema) -> &'static [BulkFormat] {
        if self.binary_copy && crate::types::binary_copy_columns(schema) {
            &[BulkFormat::PG_COPY_BINARY, BulkFormat::PG_COPY_TEXT]
        } else {
            &[BulkFormat::PG_COPY_TEXT]
        }
    }

    async fn reader(&self) -> Result<Box<dyn ChunkReader>, SourceError> {
        let (client, tap) = crate::connect::connect_tapped(&self.uri, "ferry-snapshot").await?;
        snapshot::enter_snapshot(&client, &self.name).await?;
        Ok(Box::new(PgChunkReader {
            client,
            tap,
            timeout: self.timeout,
        }))
    }
}

/// A connection inside an exported snapshot.
struct PgChunkReader {
    client: Client,
    /// The session's COPY data off the wire, when it has a tap.
    tap: Option<crate::tap::Tap>,
    /// Longest silence of the source while a chunk is read.
    timeout: std::time::Duration,
}

#[async_trait]
impl ChunkReader for PgChunkReader {
    async fn read(
        &mut self,
        schema: &TableSchema,
        plan: &TablePlan,
        chunk: &ChunkSpec,
        format: Option<BulkFormat>,
    ) -> Result<ChunkData, SourceError> {
        let what = format!("read {} chunk {}", schema.id, chunk.index);
        let encoding = match format.map(snapshot::CopyFormat::of) {
            None => snapshot::CopyFormat::Text,
            Some(Some(encoding)) => encoding,
            Some(None) => {
                return Err(SourceError::message(
                    format!(
                        "a PostgreSQL source cannot read chunks in format {}",
                        format.map_or("", |f| f.0)
                    ),
                    ErrorClass::Definite,
                ))
            }
        };
        let data = snapshot::copy_out_within(
            &self.client,
            self.tap.as_ref(),
            schema,
            plan,
            chunk,
            encoding,
            self.timeout,
        )
        .await?
        .map_err(SourceError::from)
        .boxed();
        Ok(match format {
            Some(format) => ChunkData::Bulk { format, data },
            // The session's settings print every value in its canonical text: decoding
            // COPY text is all the row path needs.
            None => ChunkData::Rows(crate::copy_text::decode_rows(
                data,
                schema.columns.len(),
                what,
            )),
        })
    }
}
