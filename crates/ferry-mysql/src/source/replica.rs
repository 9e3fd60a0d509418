//! What makes a binlog connection a MariaDB replica: its `server_id`, the GTID events
//! the driver does not parse, and the server's errors in the terms of a changefeed.

use bytes::Buf;
use ferry_core::gtid::{MariaDbGtid, MariaDbGtidList};
use ferry_core::{ErrorClass, SourceError};

use crate::connect::source_error;

/// MariaDB's GTID event.
pub(crate) const GTID_EVENT: u8 = 0xA2;

/// A GTID event's flag: the transaction is one statement (DDL) with no XID after it.
pub(crate) const FL_STANDALONE: u8 = 1;

/// MariaDB's server error reading the binlog for a replica (position purged, …).
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;

/// The replication `server_id` of changefeed `feed`: deterministic, so a restarted
/// changefeed takes its own place back, and distinct per changefeed (FNV-1a of the name),
/// so two changefeeds on one source never evict each other. In `0x4000_0000..0x8000_0000`,
/// away from the small ids servers are usually given.
pub(crate) fn server_id(feed: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in feed.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    0x4000_0000 | (h & 0x3FFF_FFFF)
}

/// A binlog read error, classified: a purged position is definite and says what to do.
pub(crate) fn binlog_error(e: mysql_async::Error, from: &MariaDbGtidList) -> SourceError {
    if let mysql_async::Error::Server(server) = &e {
        if server.code == ER_MASTER_FATAL_ERROR_READING_BINLOG {
            return SourceError::message(
                format!(
                    "the source's binlog no longer holds the changefeed's position {from} \
                     (binlogs were purged past it, or it is from another server): {}; re-sync \
                     the changefeed (`ferry changefeed resync`, or delete and re-create it)",
                    server.message
                ),
                ErrorClass::Definite,
            )
            .with_hint(
                "re-sync the changefeed (`ferry changefeed resync`, or delete and re-create \
                 it) to copy the tables again; keep binlogs longer (binlog_expire_logs_seconds) \
                 than a changefeed may stay paused",
            );
        }
    }
    source_error("read the binlog", e)
}

/// MariaDB's GTID event body: `seq_no` u64, `domain_id` u32, flags u8 (little-endian).
pub(crate) fn parse_gtid(
    mut data: &[u8],
    server_id: u32,
) -> Result<(MariaDbGtid, u8), SourceError> {
    if data.len() < 13 {
        return Err(SourceError::message(
            "a MariaDB GTID event is shorter than 13 bytes",
            ErrorClass::Definite,
        ));
    }
    let seq_no = data.get_u64_le();
    let domain_id = data.get_u32_le();
    let flags = data.get_u8();
    Ok((
        MariaDbGtid {
            domain_id,
            server_id,
            seq_no,
        },
        flags,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_are_stable_and_distinct_per_changefeed() {
        assert_eq!(server_id("default/a"), server_id("default/a"));
        assert_ne!(server_id("default/a"), server_id("default/b"));
        assert!(server_id("x") >= 0x4000_0000 && server_id("x") < 0x8000_0000);
    }

    #[test]
    fn gtid_events_parse() {
        let mut data = 42u64.to_le_bytes().to_vec();
        data.extend_from_slice(&7u32.to_le_bytes());
        data.push(FL_STANDALONE);
        let (gtid, flags) = parse_gtid(&data, 3).unwrap();
        assert_eq!(gtid.to_string(), "7-3-42");
        assert_eq!(flags, FL_STANDALONE);
        assert!(parse_gtid(&data[..5], 3).is_err());
    }
}
