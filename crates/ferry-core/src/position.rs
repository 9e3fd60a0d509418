//! Positions in a source's log.
//!
//! A [`Position`] is opaque to the engine except for one question, [`Position::covers`]:
//! stored checkpoints never move backwards. Each source kind has its own variant, printed
//! and parsed in its database's own notation by its connector.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::gtid::{BinlogFile, MariaDbGtidList, MySqlGtidSet};

/// A PostgreSQL WAL position (log sequence number), printed as PostgreSQL does: `0/16B3748`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The zero position, which PostgreSQL reads as "from wherever the slot is".
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A position string that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid position {0:?}: expected a PostgreSQL LSN such as 0/16B3748")]
pub struct ParsePositionError(pub String);

impl FromStr for Lsn {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError(s.chars().take(64).collect());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 {
                return Err(err());
            }
            u32::from_str_radix(p, 16).map_err(|_| err())
        };
        Ok(Lsn((u64::from(part(hi)?) << 32) | u64::from(part(lo)?)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a changefeed is in its source's log.
///
/// For PostgreSQL it is the end LSN of the last transaction applied: streaming resumes there
/// and the server skips every transaction whose commit record lies before it.
///
/// Positions have no total order (a MySQL GTID set is not a number); the engine asks one
/// question, [`Position::covers`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
#[serde(remote = "Self")]
pub enum Position {
    /// PostgreSQL logical replication: the end of the last transaction applied.
    PgLsn(Lsn),
    /// MySQL with GTIDs: the set of transactions applied (`gtid_executed` notation).
    MySqlGtid(MySqlGtidSet),
    /// MariaDB with GTIDs: the last transaction applied per replication domain.
    MariaDbGtid(MariaDbGtidList),
    /// A MySQL or MariaDB binlog without GTIDs: a file and an offset in it.
    BinlogFile(BinlogFile),
}

impl Position {
    /// Whether everything `other` denotes is included in `self`: for LSNs `self >= other`.
    /// Positions of different kinds never cover each other.
    pub fn covers(&self, other: &Position) -> bool {
        match (self, other) {
            (Position::PgLsn(a), Position::PgLsn(b)) => a >= b,
            (Position::MySqlGtid(a), Position::MySqlGtid(b)) => a.covers(b),
            (Position::MariaDbGtid(a), Position::MariaDbGtid(b)) => a.covers(b),
            (Position::BinlogFile(a), Position::BinlogFile(b)) => a.covers(b),
            _ => false,
        }
    }

    /// The kind's name, as serialized (`pg_lsn`, `my_sql_gtid`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Position::PgLsn(_) => "pg_lsn",
            Position::MySqlGtid(_) => "my_sql_gtid",
            Position::MariaDbGtid(_) => "maria_db_gtid",
            Position::BinlogFile(_) => "binlog_file",
        }
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Position::serialize(self, s)
    }
}

/// Reads the tagged form (`{"kind":"pg_lsn","value":"0/16B3748"}`) and, for state stored
/// before positions had kinds, a bare PostgreSQL LSN (`"0/16B3748"`).
impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            #[serde(with = "Position")]
            Tagged(Position),
            Legacy(Lsn),
        }
        Ok(match Stored::deserialize(d)? {
            Stored::Tagged(p) => p,
            Stored::Legacy(lsn) => Position::PgLsn(lsn),
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::PgLsn(lsn) => lsn.fmt(f),
            Position::MySqlGtid(set) => set.fmt(f),
            Position::MariaDbGtid(list) => list.fmt(f),
            Position::BinlogFile(file) => file.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lsn_prints_like_postgres() {
        assert_eq!(Lsn(0x16B3748).to_string(), "0/16B3748");
        assert_eq!(Lsn((0x16 << 32) | 0xB374D848).to_string(), "16/B374D848");
        assert_eq!(Lsn::ZERO.to_string(), "0/0");
    }

    #[test]
    fn lsn_rejects_garbage() {
        for bad in ["", "0", "/1", "1/", "x/1", "1/123456789", "-1/0", "0/ 1"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn lsn_round_trips(v: u64) {
            let lsn = Lsn(v);
            prop_assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
        }

        #[test]
        fn lsn_parse_never_panics(s in ".{0,24}") {
            let _ = s.parse::<Lsn>();
        }
    }

    #[test]
    fn position_serializes_as_tagged_text() {
        let json = serde_json::to_string(&Position::PgLsn(Lsn(0x16B3748))).unwrap();
        assert_eq!(json, r#"{"kind":"pg_lsn","value":"0/16B3748"}"#);
        let back: Position = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Position::PgLsn(Lsn(0x16B3748)));
    }

    #[test]
    fn position_reads_a_bare_lsn_stored_by_earlier_versions() {
        let back: Position = serde_json::from_str(r#""0/16B3748""#).unwrap();
        assert_eq!(back, Position::PgLsn(Lsn(0x16B3748)));
        assert!(serde_json::from_str::<Position>(r#""nope""#).is_err());
    }

    #[test]
    fn positions_of_every_kind_round_trip_and_never_cover_another_kind() {
        let all = [
            Position::PgLsn(Lsn(5)),
            Position::MySqlGtid("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5".parse().unwrap()),
            Position::MariaDbGtid("0-1-100".parse().unwrap()),
            Position::BinlogFile("mysql-bin.000003:1234".parse().unwrap()),
        ];
        for (i, a) in all.iter().enumerate() {
            let json = serde_json::to_string(a).unwrap();
            assert_eq!(
                &serde_json::from_str::<Position>(&json).unwrap(),
                a,
                "{json}"
            );
            for (j, b) in all.iter().enumerate() {
                assert_eq!(a.covers(b), i == j, "{a} covers {b}");
            }
        }
        let json = serde_json::to_string(&all[1]).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"my_sql_gtid","value":"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"}"#
        );
    }

    #[test]
    fn covers_is_at_or_after_for_lsns() {
        let (a, b) = (Position::PgLsn(Lsn(5)), Position::PgLsn(Lsn(7)));
        assert!(b.covers(&a) && b.covers(&b) && !a.covers(&b));
    }
}
