//! The change stream: MariaDB's row binlog from a GTID position.
//!
//! ```text
//! COM_REGISTER_SLAVE(server_id of the changefeed) ─► COM_BINLOG_DUMP, GTID mode
//!   GTID (0xA2) ── TABLE_MAP ── WRITE/UPDATE/DELETE_ROWS … ── XID / QUERY COMMIT
//!   GTID (standalone) ── QUERY (DDL)          HEARTBEAT (idle)
//! ```
//!
//! The driver does not model MariaDB's GTID mode: the session sets
//! `@mariadb_slave_capability=4`, `@slave_connect_state` (the position to resume after)
//! and `@slave_gtid_strict_mode=1` itself, and GTID events (0xA2) are parsed here.
//!
//! # Positions
//! The stream keeps the GTID list of everything read (`position`), every domain included,
//! so a commit's position is exactly what `@@gtid_binlog_pos` showed after it. A
//! transaction touching no replicated table is consumed without a word but for an
//! occasional [`SourceEvent::Idle`]; so are server heartbeats (every [`HEARTBEAT`]) while
//! nothing happens, so an idle or filtered source reaches `synced`.
//!
//! # Shapes
//! With `binlog_row_metadata=FULL` every TABLE_MAP event describes its table as it was at
//! that position: column names, types and their metadata, nullability, signedness,
//! collations, ENUM/SET labels, the key. Each TABLE_MAP of a replicated table is read into a
//! shape ([`tablemap`]) unless it is the one read last; what the event does not say (exact
//! `COLUMN_TYPE`, defaults, MariaDB's JSON) comes from the shape the stream knew and, when
//! the event names a column that shape lacks or the table was altered since, the catalog.
//! Rows decode with the kinds of their own TABLE_MAP, never the catalog's, so a stream far
//! behind its source reads columns added and dropped since, and types changed since, as they
//! were. With the shape the stream keeps the TABLE_MAP's row layout ([`image`]); the same
//! event again (every transaction repeats its table maps) is found by its table id and read
//! no further, and so is the table of each rows event. A shape that differs from the one
//! the engine knows is announced with [`SourceEvent::Schema`] before the table's next change,
//! so targets that follow the source's definitions add, drop and retype columns at their
//! positions.
//!
//! # Names
//! The engine knows each table by the name it had at the checkpoint, and so does the
//! binlog from there on: a table renamed since is tracked under that name until the stream
//! reaches the `RENAME`, where it follows with [`SourceEvent::Renamed`], so rows written
//! before the rename are read. Should the rename be a statement the DDL reader does not
//! recognize, the first TABLE_MAP event of a table the stream does not know follows it
//! there when that table's InnoDB id is a replicated table's ([`follow`]).
//!
//! # Drops
//! A replicated table the catalog no longer has was dropped after the checkpoint: the stream
//! still reads its rows up to the `DROP`, decoded with their TABLE_MAP alone, and warns
//! there. A table created again under a dropped one's name is announced with
//! [`SourceEvent::Recreated`] (the engine copies it anew) and read from there on.
//!
//! # Errors
//! The binlog past the position purged (error 1236) is definite, with how to re-sync;
//! a connection cut or a silent source is transient.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry_core::gtid::{MariaDbGtid, MariaDbGtidList};
use ferry_core::source::EventSender;
use ferry_core::{
    ConnectionUri, ErrorClass, Position, RowChange, SourceError, SourceEvent, TableId, TableSchema,
};
use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};

use super::catalog;
use super::image::{canonical_row, ImageReader, Layout, TEXT_CHUNK};
use super::replica::{binlog_error, parse_gtid, server_id, FL_STANDALONE, GTID_EVENT};
use super::tablemap::{self, Collations};
use super::types::Kind;
use super::unreadable;
use crate::connect::{connect, source_error};

mod follow;

/// How often the server sends a heartbeat on a quiet binlog: how stale `synced` and lag
/// may be on an idle source. Why 250 ms: at 1 s every snapshot of an idle source waited
/// about a second after its copy before `synced` (a tenth of a benchmark's snapshot); four
/// tiny events a second per changefeed cost the server nothing it notices.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(250);

/// Least time between two idle reports caused by transactions of other tables.
const IDLE_EVERY: Duration = Duration::from_millis(500);

/// A replicated table as the stream decodes it.
struct Tracked {
    /// Its source id.
    id: u32,
    /// Its shape; no columns for a table the catalog no longer has until its first
    /// TABLE_MAP.
    schema: Arc<TableSchema>,
    kinds: Vec<Kind>,
    /// The engine knows this shape (announced in this session).
    announced: bool,
    /// Altered since the shape was read: consult the catalog at the next TABLE_MAP.
    stale: bool,
    /// The TABLE_MAP event the shape was read from: the same event again needs no reading.
    map: Option<TableMapEvent<'static>>,
    /// How `map`'s row images decode (empty without `map`).
    layout: Layout,
}

/// The transaction being read.
struct Tx {
    gtid: MariaDbGtid,
    standalone: bool,
    commit_time_us: i64,
    /// A `Begin` was sent (the transaction touched a replicated table).
    begun: bool,
}

/// A started binlog stream.
pub(crate) struct MyStream {
    binlog: BinlogStream,
    catalog: Conn,
    collations: Collations,
    position: MariaDbGtidList,
    /// By the table's name on the source.
    tables: HashMap<TableId, Tracked>,
    /// Tables renamed since the checkpoint, by their current name: the name the engine
    /// knows them by. The binlog names them so until it reaches the rename.
    renamed_since: HashMap<TableId, TableId>,
    /// Replicated tables dropped in this session, as they were: a table created under the
    /// name is read as the table created again.
    dropped: HashMap<TableId, Tracked>,
    /// Tables of TABLE_MAP events found to be no replicated table under another name.
    not_ours: HashSet<TableId>,
    timeout: Duration,
    last_idle: Instant,
    /// The tracked table each binlog table id was last mapped to: rows events find their
    /// table without building its name (checked against the table's `map`).
    by_map: HashMap<u64, TableId>,
    /// Reads row images; its buffers are reused from event to event.
    images: ImageReader,
    /// Where decoded values are written: each is split off as its own `Bytes`.
    text: BytesMut,
}

/// Connects and asks for the binlog after `from`.
pub(crate) async fn start(
    uri: &ConnectionUri,
    feed: &str,
    from: MariaDbGtidList,
    tables: HashMap<u32, TableId>,
    timeout: Duration,
) -> Result<MyStream, SourceError> {
    let mut catalog = connect(uri)
        .await
        .map_err(|e| source_error("connect to the source", e))?;
    let ids: Vec<u32> = tables.keys().copied().collect();
    let names = catalog::table_names(&mut catalog, &uri.database(), &ids).await?;
    let mut tracked = HashMap::new();
    let mut renamed_since = HashMap::new();
    for (id, engine_name) in tables {
        let Some(name) = names.get(&id) else {
            // Dropped on the source since: its rows up to the drop are still to read.
            tracked.insert(
                engine_name.clone(),
                Tracked {
                    id,
                    schema: Arc::new(catalog::unknown_shape(engine_name)),
                    kinds: Vec::new(),
                    announced: false,
                    stale: false,
                    map: None,
                    layout: Layout::default(),
                },
            );
            continue;
        };
        let (mut schema, kinds) = catalog::describe(&mut catalog, name).await?;
        // From the checkpoint on, the binlog names the table as the engine knows it, up to
        // a rename: rows written before it are read under that name.
        if *name != engine_name {
            renamed_since.insert(name.clone(), engine_name.clone());
            schema.id = engine_name.clone();
        }
        tracked.insert(
            engine_name,
            Tracked {
                id,
                schema: Arc::new(schema),
                kinds,
                announced: false,
                stale: false,
                map: None,
                layout: Layout::default(),
            },
        );
    }
    let collations = catalog::collations(&mut catalog).await?;
    let what = "start reading the binlog";
    let mut conn = connect(uri).await.map_err(|e| source_error(what, e))?;
    let setup = [
        "SET @mariadb_slave_capability = 4".to_string(),
        format!("SET @slave_connect_state = '{from}'"),
        "SET @slave_gtid_strict_mode = 1".to_string(),
        format!("SET @master_heartbeat_period = {}", HEARTBEAT.as_nanos()),
    ];
    for statement in setup {
        conn.query_drop(statement)
            .await
            .map_err(|e| source_error(what, e))?;
    }
    let binlog = conn
        .get_binlog_stream(BinlogStreamRequest::new(server_id(feed)))
        .await
        .map_err(|e| binlog_error(e, &from))?;
    tracing::info!(changefeed = %feed, server_id = server_id(feed), from = %from, "binlog stream started");
    Ok(MyStream {
        binlog,
        catalog,
        collations,
        position: from,
        tables: tracked,
        renamed_since,
        dropped: HashMap::new(),
        not_ours: HashSet::new(),
        timeout,
        last_idle: Instant::now(),
        by_map: HashMap::new(),
        images: ImageReader::default(),
        text: BytesMut::with_capacity(TEXT_CHUNK),
    })
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Sends `event`; `false` when the receiver is gone (the attempt ends).
async fn send(events: &EventSender, event: SourceEvent) -> bool {
    events.send(Ok(event)).await.is_ok()
}

impl MyStream {
    /// Reads until the receiver is dropped or an error (sent, then the end).
    pub(crate) async fn run(mut self, events: EventSender) {
        if let Err(e) = self.read(&events).await {
            let _ = events.send(Err(e)).await;
        }
    }

    fn here(&self) -> Position {
        Position::MariaDbGtid(self.position.clone())
    }

    async fn read(&mut self, events: &EventSender) -> Result<(), SourceError> {
        let mut tx: Option<Tx> = None;
        loop {
            let event = match tokio::time::timeout(self.timeout, self.binlog.next()).await {
                Err(_) => {
                    return Err(SourceError::message(
                        format!(
                            "the source sent nothing for {:?}, not even a heartbeat",
                            self.timeout
                        ),
                        ErrorClass::Transient,
                    ))
                }
                Ok(None) => {
                    return Err(SourceError::message(
                        "the source ended the binlog stream",
                        ErrorClass::Transient,
                    ))
                }
                Ok(Some(Err(e))) => return Err(binlog_error(e, &self.position)),
                Ok(Some(Ok(event))) => event,
            };
            let header = event.header();
            if header.event_type_raw() == GTID_EVENT {
                let (gtid, flags) = parse_gtid(event.data(), header.server_id())?;
                tx = Some(Tx {
                    gtid,
                    standalone: flags & FL_STANDALONE != 0,
                    commit_time_us: i64::from(header.timestamp()) * 1_000_000,
                    begun: false,
                });
                continue;
            }
            if let Some(e) = unreadable::compressed(header.event_type_raw()) {
                return Err(e);
            }
            let data = event
                .read_data()
                .map_err(|e| SourceError::new("decode a binlog event", ErrorClass::Definite, e))?;
            if data.is_none() {
                unreadable::check_undecoded(header.event_type_raw(), header.flags_raw())?;
            }
            let ended = match data {
                Some(EventData::TableMapEvent(tme)) => {
                    if known_map(&self.by_map, &self.tables, &tme).is_some() {
                        // The shape read last, again (the usual case): nothing to read.
                        continue;
                    }
                    let id = TableId::new(tme.database_name(), tme.table_name());
                    let unrenamed = self
                        .renamed_since
                        .get(&id)
                        .filter(|_| !self.tables.contains_key(&id));
                    if let Some(from) = unrenamed.cloned() {
                        // Renamed by a statement the stream did not recognize: the table
                        // is under its new name from here on.
                        if !self.rename(from, id, events).await {
                            return Ok(());
                        }
                    } else if !self.tables.contains_key(&id)
                        && !self.untracked(id, tx.as_ref(), events).await?
                    {
                        return Ok(());
                    }
                    self.check_shape(&tme).await?;
                    false
                }
                Some(EventData::RowsEvent(rows)) => {
                    let Some(open) = tx.as_mut() else {
                        return Err(SourceError::message(
                            "a rows event outside a transaction (no GTID before it)",
                            ErrorClass::Definite,
                        ));
                    };
                    if !self.rows(&rows, open, events).await? {
                        return Ok(());
                    }
                    false
                }
                Some(EventData::XidEvent(_)) => true,
                Some(EventData::QueryEvent(query)) => {
                    let sql = query.query();
                    let head = sql.trim_start();
                    if head.eq_ignore_ascii_case("BEGIN") {
                        false
                    } else if head.eq_ignore_ascii_case("COMMIT") {
                        true
                    } else if head.eq_ignore_ascii_case("ROLLBACK") {
                        tx = None;
                        false
                    } else {
                        let database = query.schema().to_string();
                        if let Some(open) = tx.as_mut() {
                            let quoting = super::ddl::Quoting::of(&query);
                            if !self.ddl(&sql, &database, quoting, open, events).await? {
                                return Ok(());
                            }
                        }
                        tx.as_ref().is_some_and(|t| t.standalone)
                    }
                }
                Some(EventData::IncidentEvent(incident)) => {
                    return Err(unreadable::incident(&incident.message()));
                }
                Some(
                    EventData::PreGaWriteRowsEvent(_)
                    | EventData::PreGaUpdateRowsEvent(_)
                    | EventData::PreGaDeleteRowsEvent(_),
                ) => return Err(unreadable::pre_ga_rows()),
                Some(EventData::HeartbeatEvent) if tx.is_none() => {
                    let idle = SourceEvent::Idle {
                        position: self.here(),
                        server_time_us: now_us(),
                    };
                    self.last_idle = Instant::now();
                    if !send(events, idle).await {
                        return Ok(());
                    }
                    false
                }
                _ => false,
            };
            if !ended {
                continue;
            }
            let Some(done) = tx.take() else { continue };
            self.position.record(done.gtid);
            let event = if done.begun {
                SourceEvent::Commit {
                    end: self.here(),
                    commit_time_us: done.commit_time_us,
                }
            } else if self.last_idle.elapsed() >= IDLE_EVERY {
                self.last_idle = Instant::now();
                SourceEvent::Idle {
                    position: self.here(),
                    server_time_us: done.commit_time_us,
                }
            } else {
                continue;
            };
            if !send(events, event).await {
                return Ok(());
            }
        }
    }

    /// Sends `Begin` for `tx` unless sent already.
    async fn begin(&self, tx: &mut Tx, events: &EventSender) -> bool {
        if tx.begun {
            return true;
        }
        tx.begun = true;
        let mut end = self.position.clone();
        end.record(tx.gtid);
        send(
            events,
            SourceEvent::Begin {
                commit: Position::MariaDbGtid(end),
                xid: tx.gtid.seq_no as u32,
                commit_time_us: tx.commit_time_us,
            },
        )
        .await
    }

    /// Reads a replicated table's shape from its TABLE_MAP event; a shape that differs from
    /// the one known is announced before the table's next change.
    async fn check_shape(&mut self, tme: &TableMapEvent<'_>) -> Result<(), SourceError> {
        let id = TableId::new(tme.database_name(), tme.table_name());
        let Some(tracked) = self.tables.get(&id) else {
            return Ok(());
        };
        if !tracked.stale && tracked.map.as_ref() == Some(tme) {
            return Ok(());
        }
        let map = tablemap::read(tme, &self.collations)?;
        let unknown = map
            .columns
            .iter()
            .any(|c| tracked.schema.column(&c.name).is_none());
        // The catalog is newer than this position (or as new): it only fills in what the
        // event does not say about columns that match it.
        let catalog = if tracked.stale || unknown {
            catalog::describe_if_exists(&mut self.catalog, &id).await?
        } else {
            None
        };
        let tracked = &self.tables[&id];
        let mut known: Vec<(&TableSchema, &[Kind])> = Vec::with_capacity(2);
        if let Some((schema, kinds)) = &catalog {
            known.push((schema, kinds));
        }
        known.push((&tracked.schema, &tracked.kinds));
        let (schema, kinds) = tablemap::shape(map, &known, &tracked.schema)?;
        let layout = Layout::read(tme).map_err(|e| event_error(&id, e))?;
        self.by_map.insert(tme.table_id(), id.clone());
        let tracked = self.tables.get_mut(&id).expect("looked up above");
        tracked.stale = false;
        tracked.map = Some(tme.clone().into_owned());
        tracked.layout = layout;
        if *tracked.schema != schema {
            tracked.schema = Arc::new(schema);
            tracked.kinds = kinds;
            tracked.announced = false;
        }
        Ok(())
    }

    /// Sends the changes of one rows event of a replicated table; `false` when the
    /// receiver is gone.
    async fn rows(
        &mut self,
        rows: &RowsEventData<'_>,
        tx: &mut Tx,
        events: &EventSender,
    ) -> Result<bool, SourceError> {
        let Some(tme) = self.binlog.get_tme(rows.table_id()) else {
            return Err(SourceError::message(
                "a rows event without its TABLE_MAP event",
                ErrorClass::Definite,
            ));
        };
        let found;
        let (id, tracked) = match known_map(&self.by_map, &self.tables, tme) {
            Some(known) => known,
            None => {
                found = TableId::new(tme.database_name(), tme.table_name());
                match self.tables.get_key_value(&found) {
                    Some(tracked) => tracked,
                    None => return Ok(true),
                }
            }
        };
        // Decoded with the layout of the event's own TABLE_MAP: read again when the shape
        // was not read from it (renamed since, say).
        let read_layout;
        let layout = if tracked.map.as_ref() == Some(tme) {
            &tracked.layout
        } else {
            read_layout = Layout::read(tme).map_err(|e| event_error(id, e))?;
            &read_layout
        };
        let schema = tracked.schema.clone();
        let announce = !tracked.announced;
        let decode_error =
            |e| SourceError::new(format!("decode a row of {id}"), ErrorClass::Definite, e);
        let mut images = self.images.start(rows, layout).map_err(decode_error)?;
        let mut changes = Vec::new();
        while images.next_row().map_err(decode_error)? {
            if let RowsEventData::PartialUpdateRowsEvent(_) = rows {
                return Err(SourceError::message(
                    format!("partial JSON updates of {id} cannot be replicated"),
                    ErrorClass::Definite,
                )
                .with_hint("set binlog_row_value_options='' on the source"));
            }
            let (before, after) = images.values();
            let old = (!before.is_empty())
                .then(|| canonical_row(before, &tracked.kinds, &schema, &mut self.text))
                .transpose()?;
            let new = (!after.is_empty())
                .then(|| canonical_row(after, &tracked.kinds, &schema, &mut self.text))
                .transpose()?;
            let table = schema.clone();
            changes.push(match (old, new) {
                (None, Some(new)) => RowChange::Insert { table, new },
                (Some(old), Some(new)) => RowChange::Update {
                    table,
                    old: Some(old),
                    new,
                },
                (Some(old), None) => RowChange::Delete { table, old },
                (None, None) => continue,
            });
        }
        let id = id.clone();
        if !self.begin(tx, events).await {
            return Ok(false);
        }
        if announce {
            self.tables.get_mut(&id).expect("looked up above").announced = true;
            if !send(events, SourceEvent::Schema(schema)).await {
                return Ok(false);
            }
        }
        for change in changes {
            if !send(events, SourceEvent::Change(change)).await {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The tracked table whose shape was read from `tme` itself, found by the table id alone.
fn known_map<'t>(
    by_map: &HashMap<u64, TableId>,
    tables: &'t HashMap<TableId, Tracked>,
    tme: &TableMapEvent<'_>,
) -> Option<(&'t TableId, &'t Tracked)> {
    let id = by_map.get(&tme.table_id())?;
    let (id, tracked) = tables.get_key_value(id)?;
    (!tracked.stale && tracked.map.as_ref() == Some(tme)).then_some((id, tracked))
}

/// A TABLE_MAP event whose columns cannot be laid out.
fn event_error(id: &TableId, e: std::io::Error) -> SourceError {
    SourceError::new(
        format!("read the TABLE_MAP event of {id}"),
        ErrorClass::Definite,
        e,
    )
}
