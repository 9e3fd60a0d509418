//! Snapshot chunks: multi-row INSERTs in one transaction per chunk, with the chunk's marker
//! in `_ferry.snapshot_chunks`, so a restart copies exactly the chunks not finished.
//!
//! The target table has its primary key from the start: InnoDB stores rows in key order,
//! so adding the key after the load would rebuild the whole table, while inserting into
//! it in the source's (key) order appends. Rows kept from before the changefeed
//! (`existing_target: append`) are upserted instead.

use ferry_core::{ChunkData, ErrorClass, FinishedChunk, Position, SinkError, TableId, TableSchema};
use futures::StreamExt;
use mysql_async::prelude::Queryable;

use super::statements::{Target, STATEMENT_BYTES};
use super::types::{quote_table, write_string};
use super::{ownership, MySqlSink};
use crate::connect::sink_error;

impl MySqlSink {
    /// Forgets this changefeed's checkpoint and snapshot progress (a fresh start).
    pub(super) async fn reset_state(&mut self) -> Result<(), SinkError> {
        for table in ["checkpoints", "snapshot_chunks"] {
            self.conn
                .exec_drop(
                    format!("DELETE FROM `_ferry`.`{table}` WHERE changefeed = ?"),
                    (&self.changefeed,),
                )
                .await
                .map_err(|e| sink_error(format!("reset _ferry.{table}"), e))?;
        }
        Ok(())
    }

    /// The snapshot chunks copied for this changefeed.
    pub(super) async fn read_finished_chunks(&mut self) -> Result<Vec<FinishedChunk>, SinkError> {
        let rows: Vec<(String, String, u32, u64, String)> = self
            .conn
            .exec(
                "SELECT table_schema, table_name, chunk, `rows`, snapshot
                 FROM `_ferry`.`snapshot_chunks` WHERE changefeed = ?",
                (&self.changefeed,),
            )
            .await
            .map_err(|e| sink_error("read snapshot progress", e))?;
        rows.into_iter()
            .map(|(schema, name, chunk, rows, snapshot)| {
                Ok(FinishedChunk {
                    table: TableId::new(schema, name),
                    chunk,
                    rows,
                    snapshot: serde_json::from_str(&snapshot).map_err(|e| {
                        SinkError::Unsupported {
                            message: format!(
                                "a snapshot position in _ferry.snapshot_chunks is unreadable: {e}"
                            ),
                        }
                    })?,
                })
            })
            .collect()
    }

    /// Loads one chunk in its own transaction with its marker; with `replace`, the table
    /// is emptied first (a table copied whole again). Returns the rows loaded.
    pub(super) async fn copy(
        &mut self,
        schema: &TableSchema,
        chunk: u32,
        snapshot: &Position,
        replace: bool,
        data: ChunkData,
    ) -> Result<u64, SinkError> {
        let what = format!("copy {} chunk {chunk}", schema.id);
        let ChunkData::Rows(mut rows) = data else {
            return Err(SinkError::Unsupported {
                message: "the MySQL sink loads snapshot chunks as rows only".into(),
            });
        };
        let append = ownership::append_rows(&mut self.conn, &schema.id).await?;
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
        let target = Target::new(std::sync::Arc::new(schema.clone()));
        let fail = |e| sink_error(what.clone(), e);
        self.conn
            .query_drop("START TRANSACTION")
            .await
            .map_err(fail)?;
        let loaded = async {
            if replace && !append {
                self.conn
                    .query_drop(format!("DELETE FROM {}", quote_table(&schema.id)))
                    .await
                    .map_err(fail)?;
            }
            let tail = if append { target.upsert_tail() } else { String::new() };
            let mut count = 0u64;
            let mut sql = Vec::with_capacity(STATEMENT_BYTES + (64 << 10));
            loop {
                let row = match rows.next().await {
                    Some(Ok(row)) => Some(row),
                    Some(Err(e)) => {
                        return Err(SinkError::Statement {
                            what: format!("{what}: read from the source"),
                            class: ErrorClass::Transient,
                            source: Box::new(e),
                        })
                    }
                    None => None,
                };
                if let Some(row) = &row {
                    if sql.is_empty() {
                        sql.extend_from_slice(&target.insert_head());
                    } else {
                        sql.push(b',');
                    }
                    target.row(row, &mut sql)?;
                    count += 1;
                }
                if !sql.is_empty() && (row.is_none() || sql.len() >= STATEMENT_BYTES) {
                    sql.extend_from_slice(tail.as_bytes());
                    super::check_packet(sql.len(), self.max_packet, &what)?;
                    self.conn.query_drop(&sql).await.map_err(fail)?;
                    sql.clear();
                }
                if row.is_none() {
                    break;
                }
            }
            let mut marker = b"INSERT INTO `_ferry`.`snapshot_chunks` \
                (changefeed, table_schema, table_name, chunk, `rows`, snapshot) VALUES ("
                .to_vec();
            for text in [&self.changefeed, &schema.id.schema, &schema.id.name] {
                write_string(&mut marker, text.as_bytes());
                marker.push(b',');
            }
            marker.extend_from_slice(format!("{chunk},{count},").as_bytes());
            let position = serde_json::to_string(snapshot).expect("a position serializes");
            write_string(&mut marker, position.as_bytes());
            marker.extend_from_slice(
                b") ON DUPLICATE KEY UPDATE `rows` = VALUES(`rows`), snapshot = VALUES(snapshot);COMMIT",
            );
            self.conn.query_drop(marker).await.map_err(fail)?;
            Ok(count)
        }
        .await;
        if loaded.is_err() {
            let _ = self.conn.query_drop("ROLLBACK").await;
        }
        loaded
    }
}
