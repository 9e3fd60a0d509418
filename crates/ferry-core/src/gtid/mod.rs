//! Positions of MySQL and MariaDB sources, in each database's own notation. Pure values, no I/O.
//!
//! - [`MySqlGtidSet`]: MySQL's executed GTID set (`@@gtid_executed`), a set of transactions
//!   keyed by source UUID (and, since MySQL 8.3, a tag): `3e11fa47-…:1-5:11-18,2174b383-…:1-3`.
//! - [`MariaDbGtidList`]: MariaDB's `@@gtid_current_pos` / `@@gtid_binlog_pos`, the last
//!   transaction of each replication domain: `0-1-100,1-2-5`.
//! - [`BinlogFile`]: a classic binlog coordinate, `mysql-bin.000003:1234`.
//! - [`ServerUuid`], [`GtidTag`]: the parts of a MySQL transaction's source (`tsid`).
//!
//! # One question: `covers`
//!
//! None of these is totally ordered (a GTID set is a frontier: `uuid1:1-5` and `uuid2:1-3`
//! are incomparable), so none implements `Ord`. The engine asks one question instead:
//! `a.covers(&b)`, "everything `b` denotes is included in `a`". It is reflexive and
//! transitive (a preorder); for GTID sets it is a superset test.
//!
//! # Canonical form
//!
//! Every value is kept canonical, so derived `Eq`/`Hash` are set equality and `Display`
//! prints one string per value, whatever order the input came in: MySQL GTID sets with
//! lower-case UUIDs and tags, sorted by UUID then tag, intervals sorted and merged, joined by
//! `,` (MySQL prints `,\n`; both parse); MariaDB lists sorted by domain. Parsing is lenient
//! about whitespace around separators (MySQL's own parser is) and strict about everything
//! else; a parse error is a [`PositionSyntaxError`] naming the offending entry.
//!
//! Serde reads and writes each type as its display string, so a stored checkpoint reads
//! exactly like what the database prints.

mod binlog;
mod mariadb;
mod mysql;
mod tsid;

use std::fmt;

pub use binlog::BinlogFile;
pub use mariadb::{MariaDbGtid, MariaDbGtidList};
pub use mysql::{GnoOutOfRange, MySqlGtidSet, MAX_GNO};
pub use tsid::{GtidTag, ServerUuid};

/// The reason given for `a,,b`, `a,` or `,a`.
const EMPTY_ENTRY: &str = "an entry is empty (two commas in a row, or a comma at either end)";

/// Longest excerpt of bad input an error carries, in characters.
const MAX_ERROR_INPUT_CHARS: usize = 64;

/// The notation a position string was parsed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Notation {
    /// A MySQL GTID set, or one of its parts (server UUID, tag, interval).
    MySqlGtidSet,
    /// A MariaDB GTID list or a single MariaDB GTID.
    MariaDbGtidList,
    /// A binlog `file:offset` coordinate.
    BinlogFile,
}

impl fmt::Display for Notation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Notation::MySqlGtidSet => "MySQL GTID set",
            Notation::MariaDbGtidList => "MariaDB GTID list",
            Notation::BinlogFile => "binlog position",
        })
    }
}

/// A MySQL/MariaDB position string that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {notation} {input:?}: {reason}")]
pub struct PositionSyntaxError {
    /// What the input was parsed as.
    pub notation: Notation,
    /// The offending entry (one comma-separated element where the notation has several),
    /// cut to 64 characters.
    pub input: String,
    /// What is wrong, with the expected form.
    pub reason: &'static str,
}

impl PositionSyntaxError {
    fn new(notation: Notation, input: &str, reason: &'static str) -> Self {
        PositionSyntaxError {
            notation,
            input: input.chars().take(MAX_ERROR_INPUT_CHARS).collect(),
            reason,
        }
    }
}

/// Parses a non-empty run of ASCII digits (no sign, no whitespace) as a number.
fn parse_decimal<T: std::str::FromStr>(digits: &str) -> Option<T> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Implements serde for a type as its `Display` string, read back through `FromStr`.
macro_rules! serde_as_display {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
use serde_as_display;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_notation_and_entry() {
        let err = "0-1".parse::<MariaDbGtidList>().unwrap_err();
        assert_eq!(err.notation, Notation::MariaDbGtidList);
        assert_eq!(err.input, "0-1");
        assert!(
            err.to_string()
                .starts_with("invalid MariaDB GTID list \"0-1\": "),
            "{err}"
        );
    }

    #[test]
    fn error_input_is_cut_to_64_chars() {
        let long = "x".repeat(500);
        let err = long.parse::<MySqlGtidSet>().unwrap_err();
        assert_eq!(err.input.chars().count(), 64);
        let err = format!("{long} x:1").parse::<BinlogFile>().unwrap_err();
        assert_eq!(err.input.chars().count(), 64);
    }

    #[test]
    fn decimal_is_digits_only() {
        assert_eq!(parse_decimal::<u64>("0012"), Some(12));
        for bad in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1_0",
            "0x1",
            "18446744073709551616",
        ] {
            assert_eq!(parse_decimal::<u64>(bad), None, "{bad:?}");
        }
    }
}
