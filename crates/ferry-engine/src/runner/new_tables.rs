//! Tables created on the source while a changefeed streams: a cheap catalog listing on an
//! interval; the first table the rules select with an unknown source id ends the attempt,
//! and the next attempt copies it as it copies tables added by an update.

use std::collections::HashSet;
use std::time::Duration;

use ferry_core::TableId;
use ferry_postgres::catalog;

/// How often a streaming changefeed looks for tables created on the source that its rules
/// select: a cheap catalog listing, and a new table waits at most this long to be copied.
const NEW_TABLES_CHECK: Duration = Duration::from_secs(5);

/// Returns the first table the rules select whose source id is not `known` (created, or
/// renamed into the rules, while streaming). Failures to look are retried quietly: the
/// stream itself reports a source that is gone.
pub(super) async fn watch(
    source: ferry_core::ConnectionUri,
    filter: ferry_core::TableFilter,
    known: HashSet<u32>,
) -> TableId {
    let mut client = None;
    loop {
        tokio::time::sleep(NEW_TABLES_CHECK).await;
        if client.is_none() {
            client = ferry_postgres::connect::connect(&source, "ferry-tables")
                .await
                .ok();
        }
        let Some(c) = &client else { continue };
        match catalog::table_ids(c).await {
            Ok(tables) => {
                if let Some((_, id)) = tables
                    .into_iter()
                    .find(|(oid, id)| !known.contains(oid) && filter.matches(id))
                {
                    return id;
                }
            }
            Err(_) => client = None,
        }
    }
}
