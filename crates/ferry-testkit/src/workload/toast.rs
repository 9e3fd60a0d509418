//! TOASTed rows updated in their other columns.
//!
//! `toast_docs (id, counter, doc text, meta jsonb)`: `doc` and `meta` hold about 5 kB of
//! incompressible text each, so PostgreSQL stores them out of line (TOAST). An UPDATE that
//! leaves them alone makes pgoutput send an "unchanged TOAST" marker instead of the value (with
//! the default replica identity): the target must keep the value it has. The writer mixes:
//!
//! - counter updates of one row (the common case), and of one row twice in a transaction;
//! - a new row inserted and then updated in the same transaction (the marker's value is in
//!   the same transaction's insert);
//! - a new `doc` (the value itself travels), and deletes of rows the writer inserted.

use std::time::Duration;

use super::Writer;
use crate::PgCluster;

/// The table.
pub const TABLE: &str = "toast_docs";

/// About 5 kB of incompressible text (md5 hex), different on every call: over the 2 kB
/// TOAST threshold even after compression is tried.
pub const LARGE_TEXT_SQL: &str =
    "(SELECT string_agg(md5(random()::text || g::text), '') FROM generate_series(1, 160) g)";

/// The TOAST table on one source database.
#[derive(Clone, Debug)]
pub struct ToastDocs {
    uri: String,
    rows: i64,
}

impl ToastDocs {
    /// Creates `toast_docs` in `db` with `rows` rows whose `doc` and `meta` are TOASTed.
    pub fn create(source: &PgCluster, db: &str, rows: i64) -> ToastDocs {
        assert!(rows >= 1, "at least one row");
        source.psql(
            db,
            &format!(
                "CREATE TABLE {TABLE} (id bigint PRIMARY KEY, counter int NOT NULL,
                     doc text, meta jsonb, note text);
                 INSERT INTO {TABLE} SELECT g, 0, {LARGE_TEXT_SQL},
                     jsonb_build_object('blob', {LARGE_TEXT_SQL}, 'n', g), 'start'
                 FROM generate_series(1, {rows}) g"
            ),
        );
        ToastDocs {
            uri: source.uri(db),
            rows,
        }
    }

    /// The number of rows created (the writer adds and deletes others).
    pub fn rows(&self) -> i64 {
        self.rows
    }

    /// Rows of `db` on `cluster` whose `doc` and `meta` are both stored out of line or
    /// compressed beyond 2 kB (`pg_column_size`), and all rows: proof the workload's values
    /// are TOASTed (on the source) and kept (on the target).
    pub fn toasted_rows(cluster: &PgCluster, db: &str) -> (u64, u64) {
        let counts = cluster.psql(
            db,
            &format!(
                "SELECT count(*) FILTER (WHERE pg_column_size(doc) > 2000
                                         AND pg_column_size(meta) > 2000), count(*)
                 FROM {TABLE}"
            ),
        );
        let (toasted, all) = counts.split_once('|').expect("two counts");
        (toasted.parse().unwrap(), all.parse().unwrap())
    }

    /// Starts `clients` writers with `pause` between two transactions of each.
    pub fn start_writer(&self, clients: usize, pause: Duration) -> Writer {
        let rows = self.rows as u64;
        Writer::start(
            &self.uri,
            clients,
            pause,
            move |client, mut rng| async move {
                let id = 1 + rng.below(rows) as i64;
                client.batch_execute("BEGIN").await?;
                let bump = format!("UPDATE {TABLE} SET counter = counter + 1 WHERE id = $1");
                match rng.below(20) {
                    0..=11 => {
                        client.execute(&bump, &[&id]).await?;
                    }
                    12..=13 => {
                        client.execute(&bump, &[&id]).await?;
                        client
                            .execute(
                                &format!("UPDATE {TABLE} SET note = 'twice' WHERE id = $1"),
                                &[&id],
                            )
                            .await?;
                    }
                    14..=16 => {
                        // A new row, then an update of it in the same transaction. Its id is
                        // above the created rows, unique to this draw.
                        let new_id = rows as i64 + 1 + (rng.next_u64() >> 20) as i64;
                        client
                            .execute(
                                &format!(
                                    "INSERT INTO {TABLE} VALUES ($1, 0, {LARGE_TEXT_SQL},
                                     jsonb_build_object('blob', {LARGE_TEXT_SQL}), 'new')
                                 ON CONFLICT (id) DO NOTHING"
                                ),
                                &[&new_id],
                            )
                            .await?;
                        client.execute(&bump, &[&new_id]).await?;
                    }
                    17 => {
                        client
                            .execute(
                                &format!(
                                    "UPDATE {TABLE} SET doc = {LARGE_TEXT_SQL}, note = 'new doc'
                                 WHERE id = $1"
                                ),
                                &[&id],
                            )
                            .await?;
                    }
                    18 => {
                        client
                            .execute(
                                &format!(
                                    "UPDATE {TABLE} SET meta = meta || jsonb_build_object('n', \
                                 counter) WHERE id = $1"
                                ),
                                &[&id],
                            )
                            .await?;
                    }
                    _ => {
                        // Delete one of the writer's own rows, if any.
                        client
                            .execute(
                                &format!(
                                    "DELETE FROM {TABLE} WHERE id = (SELECT min(id) FROM {TABLE}
                                 WHERE id > $1)"
                                ),
                                &[&(rows as i64)],
                            )
                            .await?;
                    }
                }
                client.batch_execute("COMMIT").await
            },
        )
    }
}
