//! Binlog events Ferry cannot read, so the stream stops naming them instead of skipping
//! them: rows a skipped event carried would silently be missing on the target.
//!
//! The binlog parser knows MySQL's event types; MariaDB's own (160 and up) it does not
//! decode. Of those, the GTID event is read by hand ([`super::replica`]) and a few carry
//! nothing a changefeed needs; the compressed ones (`log_bin_compress=ON`) carry rows and
//! DDL that Ferry cannot decompress yet, and MySQL's compressed transactions
//! (`binlog_transaction_compression=ON`) likewise. Any other event the parser does not
//! know stops the stream too, unless the server marked it ignorable; so does an incident
//! event (the server says changes may be missing from its binlog).

use ferry_core::{ErrorClass, SourceError};

/// MariaDB events that carry nothing a changefeed applies: the statement annotating row
/// events, binlog checkpoints, the GTID list at a binlog's start, encryption's start.
const NOTHING_TO_APPLY: [u8; 4] = [160, 161, 163, 164];

/// MariaDB's compressed query event, then its six compressed rows events.
const MARIADB_COMPRESSED: std::ops::RangeInclusive<u8> = 165..=171;

/// MySQL's compressed transaction payload.
const MYSQL_TRANSACTION_PAYLOAD: u8 = 40;

/// The server's flag on events a replica that does not know them may skip.
const IGNORABLE: u16 = 0x0080;

/// Whether the stream may pass over an event the parser did not decode (`raw`: its type,
/// `flags`: its header flags); otherwise the error that stops it.
pub(super) fn check_undecoded(raw: u8, flags: u16) -> Result<(), SourceError> {
    if NOTHING_TO_APPLY.contains(&raw) || flags & IGNORABLE != 0 {
        return Ok(());
    }
    Err(unreadable(raw))
}

/// The error for an event of type `raw` that Ferry cannot read, if it is one of the kinds
/// known to carry changes compressed.
pub(super) fn compressed(raw: u8) -> Option<SourceError> {
    (MARIADB_COMPRESSED.contains(&raw) || raw == MYSQL_TRANSACTION_PAYLOAD).then(|| unreadable(raw))
}

/// The server recorded an incident: events may be missing from its binlog (a change it
/// could not log), so what follows cannot be applied as an exact continuation.
pub(super) fn incident(message: &str) -> SourceError {
    SourceError::message(
        format!(
            "the source's binlog records an incident ({message:?}): changes may be missing \
             from it, as a replica would stop; re-sync the changefeed (`ferry changefeed \
             resync`) once the source is consistent"
        ),
        ErrorClass::Definite,
    )
}

/// Rows events of MySQL 5.1's pre-release format, which the parser does not decode.
pub(super) fn pre_ga_rows() -> SourceError {
    SourceError::message(
        "the source's binlog holds rows events of MySQL 5.1's pre-release format, which Ferry \
         cannot read",
        ErrorClass::Definite,
    )
}

fn unreadable(raw: u8) -> SourceError {
    let (what, fix) = if MARIADB_COMPRESSED.contains(&raw) {
        (
            "a compressed binlog event (log_bin_compress=ON)",
            "set log_bin_compress=OFF on the source (SET GLOBAL and in its configuration)",
        )
    } else if raw == MYSQL_TRANSACTION_PAYLOAD {
        (
            "a compressed transaction (binlog_transaction_compression=ON)",
            "set binlog_transaction_compression=OFF on the source",
        )
    } else {
        (
            "a binlog event of a type Ferry does not know",
            "report it with the source's version; Ferry stops rather than skip rows it may carry",
        )
    };
    // In the message, not a hint: it is what the changefeed's error shows.
    SourceError::message(
        format!(
            "the source's binlog holds {what} (event type {raw}), which Ferry cannot read: \
             {fix}; the events already written that way stay unreadable, so create the \
             changefeed again (delete it, then create it: its tables are copied anew from the \
             source's current position)"
        ),
        ErrorClass::Definite,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_and_unknown_events_stop_the_stream_and_harmless_ones_pass() {
        for raw in [160, 161, 163, 164] {
            assert!(check_undecoded(raw, 0).is_ok(), "{raw}");
        }
        assert!(check_undecoded(200, IGNORABLE).is_ok());
        for raw in [165, 166, 169, 171, 40] {
            let e = compressed(raw).expect("compressed");
            assert_eq!(e.class, ErrorClass::Definite);
        }
        assert!(compressed(30).is_none());
        let e = check_undecoded(172, 0).unwrap_err();
        assert!(e.to_string().contains("event type 172"), "{e}");
        let e = check_undecoded(166, 0).unwrap_err();
        assert!(e.to_string().contains("log_bin_compress"), "{e}");
        let e = incident("LOST_EVENTS");
        assert_eq!(e.class, ErrorClass::Definite);
        assert!(e.to_string().contains("may be missing"), "{e}");
    }
}
