//! MySQL GTID sets: which transactions a server (or a changefeed) has seen.
//!
//! A MySQL GTID is `source_uuid:gno`, or `source_uuid:tag:gno` since MySQL 8.3 (tagged
//! GTIDs). Each `(uuid, tag)` pair, MySQL's *TSID*, numbers its transactions 1, 2, 3, … and a
//! GTID set holds, per TSID, a list of closed intervals of those numbers (GNOs). The text form
//! is MySQL's `@@gtid_executed`:
//!
//! ```text
//! 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:11-18:blue:1-3,2174b383-5441-11e8-b90a-c80aa9429562:7
//! ```
//!
//! Within one UUID, untagged intervals come first, then each tag followed by its intervals.
//!
//! # Invariants
//!
//! [`MySqlGtidSet`] keeps, for every TSID present, a non-empty list of intervals sorted by
//! start, pairwise disjoint and not adjacent (`1-3:4-5` is stored as `1-5`). So equal sets
//! are equal values and print the same string. A binlog reader extends the set one GTID at
//! a time with [`MySqlGtidSet::add`], which is O(1) in the usual case (the next GNO of a
//! TSID extends its last interval).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::tsid::{GtidTag, ServerUuid};
use super::{parse_decimal, serde_as_display, Notation, PositionSyntaxError, EMPTY_ENTRY};

/// The largest GNO accepted: MySQL's GNO is a signed 64-bit number (MySQL itself assigns at
/// most `2^63 - 2`; anything it prints parses here).
pub const MAX_GNO: u64 = i64::MAX as u64;

fn syntax(input: &str, reason: &'static str) -> PositionSyntaxError {
    PositionSyntaxError::new(Notation::MySqlGtidSet, input, reason)
}

/// A GNO outside `1..=MAX_GNO`, which no MySQL server assigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("GTID number {0} is outside 1..={MAX_GNO}")]
pub struct GnoOutOfRange(pub u64);

/// A transaction source: a server UUID and an optional tag. Untagged sorts first.
type Tsid = (ServerUuid, Option<GtidTag>);

/// A closed interval of GNOs, `first <= last`, both in `1..=MAX_GNO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Interval {
    first: u64,
    last: u64,
}

impl Interval {
    /// The interval of one GNO.
    const fn single(gno: u64) -> Self {
        Interval {
            first: gno,
            last: gno,
        }
    }
}

/// A MySQL GTID set, as in `@@gtid_executed`. See the [module docs](self) for the form and
/// the invariants. The empty set prints as the empty string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MySqlGtidSet {
    intervals: BTreeMap<Tsid, Vec<Interval>>,
}

impl MySqlGtidSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set holds no transaction.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Adds the untagged GTID `uuid:gno`, as read from a binlog GTID event.
    pub fn add(&mut self, uuid: ServerUuid, gno: u64) -> Result<(), GnoOutOfRange> {
        self.insert((uuid, None), gno)
    }

    /// Adds the tagged GTID `uuid:tag:gno`.
    pub fn add_tagged(
        &mut self,
        uuid: ServerUuid,
        tag: GtidTag,
        gno: u64,
    ) -> Result<(), GnoOutOfRange> {
        self.insert((uuid, Some(tag)), gno)
    }

    fn insert(&mut self, tsid: Tsid, gno: u64) -> Result<(), GnoOutOfRange> {
        if !(1..=MAX_GNO).contains(&gno) {
            return Err(GnoOutOfRange(gno));
        }
        let intervals = self.intervals.entry(tsid).or_default();
        match intervals.last_mut() {
            // The common case: the next transaction of this source.
            Some(last) if last.last + 1 == gno => last.last = gno,
            Some(last) if last.last >= gno => insert_interval(intervals, Interval::single(gno)),
            _ => intervals.push(Interval::single(gno)),
        }
        Ok(())
    }

    /// Whether the set holds `uuid[:tag]:gno`.
    pub fn contains(&self, uuid: ServerUuid, tag: Option<GtidTag>, gno: u64) -> bool {
        self.intervals
            .get(&(uuid, tag))
            .is_some_and(|ivs| interval_covered(ivs, Interval::single(gno)))
    }

    /// Whether every transaction of `other` is in `self` (`self ⊇ other`).
    pub fn covers(&self, other: &MySqlGtidSet) -> bool {
        other.intervals.iter().all(|(tsid, theirs)| {
            self.intervals
                .get(tsid)
                .is_some_and(|ours| theirs.iter().all(|&iv| interval_covered(ours, iv)))
        })
    }

    /// Adds every transaction of `other` to `self`.
    pub fn union_with(&mut self, other: &MySqlGtidSet) {
        for (tsid, theirs) in &other.intervals {
            match self.intervals.get_mut(tsid) {
                Some(ours) => *ours = merge_sorted(ours, theirs),
                None => {
                    self.intervals.insert(*tsid, theirs.clone());
                }
            }
        }
    }

    /// The set of transactions in `self` or in `other`.
    pub fn union(&self, other: &MySqlGtidSet) -> MySqlGtidSet {
        let mut union = self.clone();
        union.union_with(other);
        union
    }
}

/// Whether `iv` lies inside one interval of the canonical list `ours`.
fn interval_covered(ours: &[Interval], iv: Interval) -> bool {
    // The last interval starting at or before `iv.first` is the only candidate.
    let after = ours.partition_point(|o| o.first <= iv.first);
    after > 0 && ours[after - 1].last >= iv.last
}

/// Inserts `iv` into the canonical list, merging what it overlaps or touches.
fn insert_interval(intervals: &mut Vec<Interval>, iv: Interval) {
    // `start..end` are the intervals that overlap or touch `iv`.
    let start = intervals.partition_point(|o| o.last + 1 < iv.first);
    let end = intervals.partition_point(|o| o.first <= iv.last + 1);
    if start == end {
        intervals.insert(start, iv);
        return;
    }
    let merged = Interval {
        first: iv.first.min(intervals[start].first),
        last: iv.last.max(intervals[end - 1].last),
    };
    intervals.splice(start..end, [merged]);
}

/// Appends `iv` to a canonical list whose intervals all start at or before `iv.first`.
fn push_coalescing(intervals: &mut Vec<Interval>, iv: Interval) {
    match intervals.last_mut() {
        Some(last) if last.last + 1 >= iv.first => last.last = last.last.max(iv.last),
        _ => intervals.push(iv),
    }
}

/// The canonical union of two canonical lists, in linear time.
fn merge_sorted(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.first <= y.first => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(&iv) => push_coalescing(&mut merged, iv),
            None => return merged,
        }
    }
}

impl fmt::Display for MySqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous_uuid = None;
        for ((uuid, tag), intervals) in &self.intervals {
            if previous_uuid != Some(uuid) {
                if previous_uuid.is_some() {
                    f.write_str(",")?;
                }
                write!(f, "{uuid}")?;
                previous_uuid = Some(uuid);
            }
            if let Some(tag) = tag {
                write!(f, ":{tag}")?;
            }
            for iv in intervals {
                write!(f, ":{}", iv.first)?;
                if iv.last != iv.first {
                    write!(f, "-{}", iv.last)?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for MySqlGtidSet {
    type Err = PositionSyntaxError;

    /// Parses MySQL's text form: entries `uuid[:interval...][:tag:interval...]` separated by
    /// `,` (whitespace, including MySQL's `,\n`, is allowed around every separator). A UUID
    /// or tag may repeat; an empty or blank string is the empty set.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut intervals: BTreeMap<Tsid, Vec<Interval>> = BTreeMap::new();
        if s.trim().is_empty() {
            return Ok(MySqlGtidSet { intervals });
        }
        for entry in s.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(syntax(s, EMPTY_ENTRY));
            }
            let mut parts = entry.split(':').map(str::trim);
            let uuid: ServerUuid = parts.next().unwrap_or_default().parse().map_err(|_| {
                syntax(
                    entry,
                    "expected uuid:interval such as 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
                )
            })?;
            let mut tsid = (uuid, None);
            // Whether the current tag (or the bare UUID) still lacks an interval.
            let mut bare = true;
            for part in parts {
                if part.starts_with(|c: char| c.is_ascii_digit()) {
                    let iv = parse_interval(part).ok_or_else(|| {
                        syntax(
                            entry,
                            "expected intervals such as 1-5 or 7, within 1..=2^63-1",
                        )
                    })?;
                    intervals.entry(tsid).or_default().push(iv);
                    bare = false;
                } else if bare && tsid.1.is_some() {
                    return Err(syntax(entry, "a tag must be followed by an interval"));
                } else {
                    let tag: GtidTag = part
                        .parse()
                        .map_err(|e: PositionSyntaxError| syntax(entry, e.reason))?;
                    tsid = (uuid, Some(tag));
                    bare = true;
                }
            }
            if bare {
                return Err(syntax(
                    entry,
                    "a UUID or tag must be followed by an interval",
                ));
            }
        }
        for list in intervals.values_mut() {
            list.sort_unstable_by_key(|iv| iv.first);
            let unsorted = std::mem::take(list);
            for iv in unsorted {
                push_coalescing(list, iv);
            }
        }
        Ok(MySqlGtidSet { intervals })
    }
}

/// Parses `first-last` or `gno` (whitespace allowed around `-`).
fn parse_interval(text: &str) -> Option<Interval> {
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (first.trim(), last.trim()),
        None => (text, text),
    };
    let (first, last) = (parse_decimal::<u64>(first)?, parse_decimal::<u64>(last)?);
    (1 <= first && first <= last && last <= MAX_GNO).then_some(Interval { first, last })
}

serde_as_display!(MySqlGtidSet);

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::gtid::EMPTY_ENTRY;

    const A: &str = "2174b383-5441-11e8-b90a-c80aa9429562";
    const B: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const C: &str = "f0000000-0000-4000-8000-00000000000c";

    fn set(text: &str) -> MySqlGtidSet {
        text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    /// The canonical form of `text`.
    fn canon(text: &str) -> String {
        set(text).to_string()
    }

    fn uuid(text: &str) -> ServerUuid {
        text.parse().unwrap()
    }

    #[test]
    fn prints_canonical_form() {
        let input = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:11-18, \
                     2174B383-5441-11E8-B90A-C80AA9429562:1-3";
        assert_eq!(set(input).to_string(), format!("{A}:1-3,{B}:1-5:11-18"));
        // MySQL's own separator, and whitespace around every separator.
        let mysql = format!("{B}:1-5:11-18,\n{A}:1-3");
        assert_eq!(set(&mysql), set(input));
        assert_eq!(canon(&format!(" {A} : 1 - 3 :7\t")), format!("{A}:1-3:7"));
    }

    #[test]
    fn merges_and_sorts_intervals() {
        assert_eq!(canon(&format!("{A}:1-3:4-5:7:6")), format!("{A}:1-7"));
        assert_eq!(canon(&format!("{A}:5-10:1-6:20")), format!("{A}:1-10:20"));
        assert_eq!(
            canon(&format!("{A}:9,{B}:1,{A}:1-2:8")),
            format!("{A}:1-2:8-9,{B}:1")
        );
        assert_eq!(canon(&format!("{A}:1-3:2")), format!("{A}:1-3"));
    }

    #[test]
    fn tags_follow_untagged_intervals_sorted_and_lower_case() {
        let text = format!("{A}:Blue:1-3:alpha:2,{A}:1-5,{B}:_x9:4");
        assert_eq!(canon(&text), format!("{A}:1-5:alpha:2:blue:1-3,{B}:_x9:4"));
        assert_eq!(canon(&format!("{A}:t:1:t:2")), format!("{A}:t:1-2"));
        let tag = "a".repeat(32);
        assert_eq!(canon(&format!("{A}:{tag}:1")), format!("{A}:{tag}:1"));
    }

    #[test]
    fn empty_set_is_empty_string() {
        assert!(set("").is_empty());
        assert!(set(" \n").is_empty());
        assert_eq!(MySqlGtidSet::new().to_string(), "");
    }

    #[test]
    fn rejects_malformed_sets() {
        let after_uuid = [
            "", ":", ":0", ":0-3", ":5-3", ":1-", ":-1", ":1-2-3", ":+1", ":1 2", ":1_000", "::1",
            ":t", ":1:t", ":t:u:1", ":a-b:1", ":t!:1", ":1,", ":1;x", ":1,,",
        ];
        let mut bad: Vec<String> = after_uuid.iter().map(|rest| format!("{A}{rest}")).collect();
        bad.extend([
            format!("{A}:{}:1", "a".repeat(33)),
            format!("{A}:1-99999999999999999999"),
            format!("{A}:9223372036854775808"),
            format!(",{A}:1"),
            "3e11fa47-71ca-11e1-9e33-c80aa942956g:1".into(),
            "mysql-bin.000003:1234".into(),
            "0-1-100".into(),
        ]);
        for text in bad {
            let err = text.parse::<MySqlGtidSet>().expect_err(&text);
            assert_eq!(err.notation, Notation::MySqlGtidSet);
            assert!(!err.input.is_empty(), "{text:?}: {err}");
        }
        let err = format!("{A}:1,,{B}:1").parse::<MySqlGtidSet>().unwrap_err();
        assert_eq!(err.reason, EMPTY_ENTRY);
        let err = format!("{A}:1,{B}:7-2")
            .parse::<MySqlGtidSet>()
            .unwrap_err();
        assert_eq!(err.input, format!("{B}:7-2"), "names the bad entry");
    }

    #[test]
    fn accepts_the_largest_gno() {
        let text = format!("{A}:{MAX_GNO}");
        assert_eq!(canon(&text), text);
        let mut gtids = MySqlGtidSet::new();
        gtids.add(uuid(A), MAX_GNO).unwrap();
        assert_eq!(gtids, set(&text));
        assert_eq!(
            gtids.add(uuid(A), MAX_GNO + 1),
            Err(GnoOutOfRange(MAX_GNO + 1))
        );
        assert_eq!(gtids.add(uuid(A), 0), Err(GnoOutOfRange(0)));
    }

    #[test]
    fn add_extends_merges_and_inserts() {
        let mut gtids = MySqlGtidSet::new();
        for gno in [1, 2, 3, 10, 11, 5, 4, 2, 7, 6, 8, 9] {
            gtids.add(uuid(B), gno).unwrap();
        }
        assert_eq!(gtids.to_string(), format!("{B}:1-11"));
        gtids.add(uuid(B), 20).unwrap();
        gtids.add(uuid(A), 3).unwrap();
        gtids
            .add_tagged(uuid(B), "Night".parse().unwrap(), 1)
            .unwrap();
        assert_eq!(gtids.to_string(), format!("{A}:3,{B}:1-11:20:night:1"));
        assert!(gtids.contains(uuid(B), None, 20));
        assert!(!gtids.contains(uuid(B), None, 19));
        assert!(gtids.contains(uuid(B), Some("night".parse().unwrap()), 1));
        assert!(!gtids.contains(uuid(A), Some("night".parse().unwrap()), 3));
    }

    #[test]
    fn covers_is_superset() {
        let big = set(&format!("{A}:1-10:20-30:t:1-5,{B}:1-3"));
        assert!(big.covers(&set(&format!("{A}:2-9:20:25-30,{B}:3"))));
        assert!(big.covers(&set(&format!("{A}:t:5"))));
        assert!(big.covers(&MySqlGtidSet::new()));
        assert!(!big.covers(&set(&format!("{A}:10-11"))), "straddles a gap");
        assert!(!big.covers(&set(&format!("{A}:15"))), "in a gap");
        assert!(!big.covers(&set(&format!("{A}:31"))));
        assert!(
            !big.covers(&set(&format!("{B}:t:1"))),
            "a tag is its own source"
        );
        assert!(!big.covers(&set(&format!("{C}:1"))), "unknown UUID");
        assert!(!set(&format!("{A}:t:1-5")).covers(&set(&format!("{A}:1"))));
        assert!(!MySqlGtidSet::new().covers(&big));
        let (left, right) = (set(&format!("{A}:1-5")), set(&format!("{B}:1-5")));
        assert!(
            !left.covers(&right) && !right.covers(&left),
            "incomparable frontiers"
        );
    }

    #[test]
    fn union_merges_per_source() {
        let left = set(&format!("{A}:1-3:10,{B}:t:1"));
        let right = set(&format!("{A}:4-9:12,{C}:1"));
        let union = left.union(&right);
        assert_eq!(union.to_string(), format!("{A}:1-10:12,{B}:t:1,{C}:1"));
        assert!(union.covers(&left) && union.covers(&right));
    }

    #[test]
    fn serializes_as_text() {
        let gtids = set(&format!("{B}:1-5,{A}:7"));
        let json = serde_json::to_string(&gtids).unwrap();
        assert_eq!(json, format!("\"{A}:7,{B}:1-5\""));
        assert_eq!(serde_json::from_str::<MySqlGtidSet>(&json).unwrap(), gtids);
        assert!(serde_json::from_str::<MySqlGtidSet>("\"nope\"").is_err());
        assert_eq!(serde_json::to_string(&uuid(A)).unwrap(), format!("\"{A}\""));
    }

    /// One generated entry: (UUID index, tag index where 0 is untagged, first GNO, length,
    /// upper-case in the text).
    type Entry = (usize, usize, u64, u64, bool);
    const UUIDS: [&str; 3] = [A, B, C];
    const TAGS: [&str; 4] = ["", "Alpha", "b_2", "_z"];

    fn entries() -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec(
            (0..3usize, 0..4usize, 1..60u64, 0..6u64, any::<bool>()),
            0..10,
        )
    }

    fn entry_text(&(u, t, first, len, upper): &Entry) -> String {
        let tag = if t == 0 {
            String::new()
        } else {
            format!("{}:", TAGS[t])
        };
        let text = format!("{}:{tag}{first}-{}", UUIDS[u], first + len);
        if upper {
            text.to_uppercase()
        } else {
            text
        }
    }

    fn parsed(entries: &[Entry]) -> MySqlGtidSet {
        let text: Vec<String> = entries.iter().map(entry_text).collect();
        set(&text.join(",\n"))
    }

    fn added(entries: &[Entry]) -> MySqlGtidSet {
        let mut gtids = MySqlGtidSet::new();
        for &(u, t, first, len, _) in entries {
            for gno in first..=first + len {
                match t {
                    0 => gtids.add(uuid(UUIDS[u]), gno).unwrap(),
                    _ => gtids
                        .add_tagged(uuid(UUIDS[u]), TAGS[t].parse().unwrap(), gno)
                        .unwrap(),
                }
            }
        }
        gtids
    }

    /// The set as plain (uuid, tag, gno) triples.
    fn model(entries: &[Entry]) -> BTreeSet<(usize, usize, u64)> {
        let gtids = entries
            .iter()
            .flat_map(|&(u, t, first, len, _)| (first..=first + len).map(move |gno| (u, t, gno)));
        gtids.collect()
    }

    proptest! {
        #[test]
        fn canonical_form_is_order_independent(
            (entries, shuffled) in entries()
                .prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle())),
        ) {
            let gtids = parsed(&entries);
            prop_assert_eq!(&parsed(&shuffled), &gtids);
            prop_assert_eq!(&added(&shuffled), &gtids);
            prop_assert_eq!(parsed(&shuffled).to_string(), gtids.to_string());
        }

        #[test]
        fn display_parse_round_trips(entries in entries()) {
            let gtids = parsed(&entries);
            let text = gtids.to_string();
            prop_assert_eq!(&set(&text), &gtids);
            prop_assert_eq!(&set(&text).to_string(), &text);
            prop_assert_eq!(set(&text.replace(',', ",\n")), gtids);
        }

        #[test]
        fn covers_and_contains_match_the_model(a in entries(), b in entries()) {
            let (set_a, set_b) = (parsed(&a), parsed(&b));
            let (model_a, model_b) = (model(&a), model(&b));
            prop_assert_eq!(set_a.covers(&set_b), model_b.is_subset(&model_a));
            for &(u, t, gno) in model_b.iter().chain(&model_a) {
                let tag = (t > 0).then(|| TAGS[t].parse().unwrap());
                let contained = set_a.contains(uuid(UUIDS[u]), tag, gno);
                prop_assert_eq!(contained, model_a.contains(&(u, t, gno)));
            }
        }

        #[test]
        fn covers_is_reflexive_and_transitive(a in entries(), b in entries(), c in entries()) {
            let (a, b, c) = (parsed(&a), parsed(&b), parsed(&c));
            prop_assert!(a.covers(&a));
            if a.covers(&b) && b.covers(&c) {
                prop_assert!(a.covers(&c));
            }
            // A chain that always holds: c ⊆ c ∪ b ⊆ c ∪ b ∪ a.
            let middle = c.union(&b);
            let top = middle.union(&a);
            prop_assert!(top.covers(&middle) && middle.covers(&c) && top.covers(&c));
        }

        #[test]
        fn union_covers_both_and_matches_the_model(a in entries(), b in entries()) {
            let union = parsed(&a).union(&parsed(&b));
            prop_assert!(union.covers(&parsed(&a)) && union.covers(&parsed(&b)));
            let mut both = a.clone();
            both.extend(&b);
            prop_assert_eq!(union, parsed(&both));
        }

        #[test]
        fn parse_never_panics(text in ".{0,80}") {
            let _ = text.parse::<MySqlGtidSet>();
        }

        #[test]
        fn parse_never_panics_near_valid_input(
            entries in entries(),
            noise in "[0-9a-fA-F:,\\- \nt_]{0,6}",
            at in any::<prop::sample::Index>(),
        ) {
            let text = parsed(&entries).to_string();
            let cut = at.index(text.len() + 1);
            let _ = format!("{}{noise}{}", &text[..cut], &text[cut..]).parse::<MySqlGtidSet>();
            let _ = text[..cut].parse::<MySqlGtidSet>();
        }
    }
}
