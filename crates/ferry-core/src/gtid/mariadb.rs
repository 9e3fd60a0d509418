//! MariaDB GTID lists: the last transaction of each replication domain.
//!
//! A MariaDB GTID is `domain_id-server_id-seq_no` (`0-1-100`). A position is a list with at
//! most one GTID per domain, as in `@@gtid_current_pos`, `@@gtid_binlog_pos` and
//! `@@gtid_slave_pos`: `0-1-100,1-2-5`. [`MariaDbGtidList`] keeps it sorted by domain.
//!
//! # Why `covers` compares `seq_no` only
//!
//! MariaDB numbers the transactions of a domain with one `seq_no` sequence that increases
//! across servers: after a failover the new primary continues the domain's sequence under
//! its own `server_id` (`0-1-100` is followed by `0-2-101`). So within a domain, "has seen
//! `seq_no` n" implies "has seen everything before n", whichever server wrote it, and the
//! server id tells nothing about inclusion. That holds when one server writes a domain at a
//! time, which `gtid_strict_mode` enforces (a binlog reader asks for it with
//! `@slave_gtid_strict_mode=1`); without it, a misconfigured multi-primary setup can log a
//! lower `seq_no` after a higher one; [`MariaDbGtidList::record`] then makes the list move
//! backwards, which the engine's monotonic-checkpoint check (`new.covers(old)`) refuses
//! rather than skipping data.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::{parse_decimal, serde_as_display, Notation, PositionSyntaxError, EMPTY_ENTRY};

fn syntax(input: &str, reason: &'static str) -> PositionSyntaxError {
    PositionSyntaxError::new(Notation::MariaDbGtidList, input, reason)
}

/// One MariaDB GTID, `domain_id-server_id-seq_no`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MariaDbGtid {
    /// The replication domain (`gtid_domain_id`).
    pub domain_id: u32,
    /// The server that logged the transaction (`server_id`).
    pub server_id: u32,
    /// The transaction's number within its domain.
    pub seq_no: u64,
}

impl fmt::Display for MariaDbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain_id, self.server_id, self.seq_no)
    }
}

impl FromStr for MariaDbGtid {
    type Err = PositionSyntaxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || syntax(s, "expected domain-server-seq such as 0-1-100");
        let mut parts = s.split('-');
        let (Some(domain), Some(server), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        Ok(MariaDbGtid {
            domain_id: parse_decimal(domain).ok_or_else(err)?,
            server_id: parse_decimal(server).ok_or_else(err)?,
            seq_no: parse_decimal(seq).ok_or_else(err)?,
        })
    }
}

/// The last GTID of each domain, as in `@@gtid_current_pos`; see the [module docs](self)
/// for what [`covers`](Self::covers) means. The empty list prints as the empty string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MariaDbGtidList {
    /// Keyed by domain id; each value's `domain_id` equals its key.
    domains: BTreeMap<u32, MariaDbGtid>,
}

impl MariaDbGtidList {
    /// The empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the list has no domain.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// The last GTID of `domain_id`, if the list has that domain.
    pub fn get(&self, domain_id: u32) -> Option<MariaDbGtid> {
        self.domains.get(&domain_id).copied()
    }

    /// The GTIDs, one per domain, by domain id.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = MariaDbGtid> + '_ {
        self.domains.values().copied()
    }

    /// Makes `gtid` the last transaction of its domain, as MariaDB does when it logs it (the
    /// binlog reader calls this for each GTID event). It replaces the domain's entry even if
    /// its `seq_no` is lower, so that an out-of-order binlog shows as a list that no longer
    /// covers its predecessor instead of being hidden.
    pub fn record(&mut self, gtid: MariaDbGtid) {
        self.domains.insert(gtid.domain_id, gtid);
    }

    /// Whether the transaction `gtid` is included: the list has its domain with a `seq_no` at
    /// least as high.
    pub fn contains(&self, gtid: MariaDbGtid) -> bool {
        self.get(gtid.domain_id)
            .is_some_and(|ours| ours.seq_no >= gtid.seq_no)
    }

    /// Whether everything `other` denotes is included in `self`: every domain of `other` is
    /// in `self` with a `seq_no` at least as high. Server ids are not compared (module docs).
    pub fn covers(&self, other: &MariaDbGtidList) -> bool {
        other.iter().all(|gtid| self.contains(gtid))
    }

    /// Takes, for each domain, the higher of the two positions (`self`'s on a tie), so that
    /// the result covers both.
    pub fn union_with(&mut self, other: &MariaDbGtidList) {
        for gtid in other.iter() {
            if !self.contains(gtid) {
                self.record(gtid);
            }
        }
    }
}

impl fmt::Display for MariaDbGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, gtid) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{gtid}")?;
        }
        Ok(())
    }
}

impl FromStr for MariaDbGtidList {
    type Err = PositionSyntaxError;

    /// Parses `domain-server-seq` entries separated by `,` (whitespace allowed around them),
    /// in any order, at most one per domain, as MariaDB accepts for `gtid_slave_pos`. An empty
    /// or blank string is the empty list.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut list = MariaDbGtidList::new();
        if s.trim().is_empty() {
            return Ok(list);
        }
        for entry in s.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(syntax(s, EMPTY_ENTRY));
            }
            let gtid: MariaDbGtid = entry.parse()?;
            if list.domains.insert(gtid.domain_id, gtid).is_some() {
                return Err(syntax(
                    entry,
                    "a domain appears twice; give one GTID per domain",
                ));
            }
        }
        Ok(list)
    }
}

serde_as_display!(MariaDbGtid);
serde_as_display!(MariaDbGtidList);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn list(text: &str) -> MariaDbGtidList {
        text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn gtid(text: &str) -> MariaDbGtid {
        text.parse().unwrap()
    }

    #[test]
    fn prints_sorted_by_domain() {
        assert_eq!(list("1-2-5,0-1-100").to_string(), "0-1-100,1-2-5");
        assert_eq!(
            list(" 7-3-1 ,\n 0-1-18446744073709551615 ").to_string(),
            "0-1-18446744073709551615,7-3-1"
        );
        assert_eq!(
            list("4294967295-4294967295-0").to_string(),
            "4294967295-4294967295-0"
        );
        assert!(list("").is_empty() && list("  ").is_empty());
        assert_eq!(MariaDbGtidList::new().to_string(), "");
    }

    #[test]
    fn rejects_malformed_lists() {
        let bad = [
            "0",
            "0-1",
            "0-1-2-3",
            "0-1-",
            "-1-2",
            "a-1-2",
            "0-1-2,",
            ",0-1-2",
            "0-1-2,,1-1-1",
            "0 - 1 - 2",
            "+0-1-2",
            "4294967296-1-2",
            "0-4294967296-2",
            "0-1-18446744073709551616",
            "0-1-2;1-1-1",
            "0-1-2,0-2-3",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
        ];
        for text in bad {
            let err = text.parse::<MariaDbGtidList>().expect_err(text);
            assert_eq!(err.notation, Notation::MariaDbGtidList);
        }
        let err = "0-1-2,0-2-3".parse::<MariaDbGtidList>().unwrap_err();
        assert_eq!(err.input, "0-2-3");
        assert!(err.reason.contains("twice"), "{err}");
    }

    #[test]
    fn covers_compares_seq_no_per_domain_ignoring_server_id() {
        let ours = list("0-1-100,1-2-5");
        assert!(ours.covers(&list("0-1-100")));
        assert!(
            ours.covers(&list("0-9-42,1-2-5")),
            "server id is not compared"
        );
        assert!(ours.covers(&MariaDbGtidList::new()));
        assert!(!ours.covers(&list("0-1-101")));
        assert!(!ours.covers(&list("2-1-1")), "a domain we have not seen");
        assert!(!list("0-1-100").covers(&ours));
        assert!(ours.contains(gtid("1-7-5")) && !ours.contains(gtid("1-2-6")));
    }

    #[test]
    fn record_replaces_the_domain_entry() {
        let mut pos = list("0-1-100");
        pos.record(gtid("0-2-101"));
        pos.record(gtid("3-1-1"));
        assert_eq!(pos.to_string(), "0-2-101,3-1-1");
        assert_eq!(pos.get(0), Some(gtid("0-2-101")));
        assert_eq!(pos.get(1), None);
        let before = pos.clone();
        pos.record(gtid("0-3-50"));
        assert!(
            !pos.covers(&before),
            "an out-of-order binlog shows, it is not hidden"
        );
    }

    #[test]
    fn union_keeps_the_higher_per_domain() {
        let mut pos = list("0-1-100,1-1-5");
        pos.union_with(&list("0-2-90,1-2-6,2-2-1"));
        assert_eq!(pos.to_string(), "0-1-100,1-2-6,2-2-1");
    }

    #[test]
    fn serializes_as_text() {
        let json = serde_json::to_string(&list("1-2-5,0-1-100")).unwrap();
        assert_eq!(json, "\"0-1-100,1-2-5\"");
        assert_eq!(
            serde_json::from_str::<MariaDbGtidList>(&json).unwrap(),
            list(&json[1..14])
        );
        assert_eq!(serde_json::to_string(&gtid("0-1-2")).unwrap(), "\"0-1-2\"");
    }

    fn lists() -> impl Strategy<Value = MariaDbGtidList> {
        let gtid = (0..4u32, 0..3u32, 0..20u64);
        prop::collection::vec(gtid, 0..6).prop_map(|gtids| {
            let mut list = MariaDbGtidList::new();
            for (domain_id, server_id, seq_no) in gtids {
                list.record(MariaDbGtid {
                    domain_id,
                    server_id,
                    seq_no,
                });
            }
            list
        })
    }

    proptest! {
        #[test]
        fn display_parse_round_trips(pos in lists()) {
            prop_assert_eq!(list(&pos.to_string()), pos.clone());
            let shuffled: Vec<String> = pos.iter().rev().map(|g| g.to_string()).collect();
            prop_assert_eq!(list(&shuffled.join(", ")), pos);
        }

        #[test]
        fn covers_is_reflexive_and_transitive(a in lists(), b in lists(), c in lists()) {
            prop_assert!(a.covers(&a));
            if a.covers(&b) && b.covers(&c) {
                prop_assert!(a.covers(&c));
            }
            let mut middle = c.clone();
            middle.union_with(&b);
            let mut top = middle.clone();
            top.union_with(&a);
            prop_assert!(top.covers(&middle) && middle.covers(&c) && top.covers(&c));
        }

        #[test]
        fn union_covers_both(a in lists(), b in lists()) {
            let mut union = a.clone();
            union.union_with(&b);
            prop_assert!(union.covers(&a) && union.covers(&b));
        }

        #[test]
        fn parse_never_panics(text in ".{0,64}", near in "[0-9, \\-]{0,40}") {
            let _ = text.parse::<MariaDbGtidList>();
            let _ = near.parse::<MariaDbGtidList>();
        }
    }
}
