//! Classic binlog coordinates, `file:offset`, for MySQL and MariaDB servers without GTIDs.
//!
//! A server names its binlogs `<base>.<index>` (`mysql-bin.000003`) and numbers them in
//! order; the index is zero-padded to six digits and grows a seventh after `999999`. So
//! [`BinlogFile::covers`] compares the numeric index, never the text, and only within one
//! base name: two base names are two different logs, and nothing can be said across them.

use std::fmt;
use std::str::FromStr;

use super::{parse_decimal, serde_as_display, Notation, PositionSyntaxError};

/// A position in a server's binlog: the file and the byte offset in it. Printed
/// `mysql-bin.000003:1234`, as `SHOW MASTER STATUS` (MySQL 8.4:
/// `SHOW BINARY LOG STATUS`) gives `File` and `Position`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BinlogFile {
    /// The binlog file name, such as `mysql-bin.000003` (no directory).
    pub file: String,
    /// The byte offset in that file.
    pub offset: u64,
}

impl BinlogFile {
    /// `file` split at its last `.` into the base name and the numeric index, if the part
    /// after the dot is all digits; otherwise the whole name and no index.
    fn base_and_index(&self) -> (&str, Option<u64>) {
        match self.file.rsplit_once('.') {
            Some((base, index)) => match parse_decimal(index) {
                Some(index) => (base, Some(index)),
                None => (&self.file, None),
            },
            None => (&self.file, None),
        }
    }

    /// Whether everything up to `other` is included up to `self`: same base name, and
    /// `(index, offset)` at least `other`'s. A file name without a numeric index only covers
    /// positions in the same file.
    pub fn covers(&self, other: &BinlogFile) -> bool {
        let (base, index) = self.base_and_index();
        let (other_base, other_index) = other.base_and_index();
        base == other_base
            && match (index, other_index) {
                (Some(index), Some(other_index)) => {
                    (index, self.offset) >= (other_index, other.offset)
                }
                (None, None) => self.offset >= other.offset,
                _ => false,
            }
    }
}

impl fmt::Display for BinlogFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)
    }
}

impl FromStr for BinlogFile {
    type Err = PositionSyntaxError;

    /// Parses `file:offset`; the offset is after the last `:`. Whitespace around the whole is
    /// ignored; the file name must be non-empty, without whitespace, control characters or
    /// `/` (binlog positions name a file, not a path).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let err = || {
            PositionSyntaxError::new(
                Notation::BinlogFile,
                text,
                "expected file:offset such as mysql-bin.000003:1234",
            )
        };
        let (file, offset) = text.rsplit_once(':').ok_or_else(err)?;
        let file_ok = !file.is_empty()
            && !file
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/');
        if !file_ok {
            return Err(err());
        }
        Ok(BinlogFile {
            file: file.to_owned(),
            offset: parse_decimal(offset).ok_or_else(err)?,
        })
    }
}

serde_as_display!(BinlogFile);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pos(text: &str) -> BinlogFile {
        text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn prints_file_colon_offset() {
        let p = BinlogFile {
            file: "mysql-bin.000003".into(),
            offset: 1234,
        };
        assert_eq!(p.to_string(), "mysql-bin.000003:1234");
        assert_eq!(pos("mysql-bin.000003:1234"), p);
        assert_eq!(
            pos(" host:with:colons.000001:4 ").file,
            "host:with:colons.000001"
        );
    }

    #[test]
    fn rejects_malformed_positions() {
        for bad in [
            "",
            "mysql-bin.000003",
            ":4",
            "mysql-bin.000003:",
            "bin.1:-4",
            "bin.1:+4",
            "bin.1: 4",
            "my bin.1:4",
            "dir/bin.1:4",
            "bin.1:18446744073709551616",
            "bin\u{0}.1:4",
        ] {
            let err = bad.parse::<BinlogFile>().expect_err(bad);
            assert_eq!(err.notation, Notation::BinlogFile);
        }
    }

    #[test]
    fn covers_compares_index_then_offset_within_one_base_name() {
        let at = pos("mysql-bin.000003:1234");
        assert!(at.covers(&pos("mysql-bin.000003:1234")));
        assert!(at.covers(&pos("mysql-bin.000003:4")));
        assert!(at.covers(&pos("mysql-bin.000002:999999")));
        assert!(!at.covers(&pos("mysql-bin.000003:1235")));
        assert!(!at.covers(&pos("mysql-bin.000004:4")));
        assert!(!at.covers(&pos("other-bin.000001:4")), "another log");
        // The index is a number: the seventh digit comes after 999999.
        assert!(pos("b.1000000:4").covers(&pos("b.999999:100")));
        assert!(!pos("b.999999:100").covers(&pos("b.1000000:4")));
        // Without a numeric index, only the same file compares.
        assert!(pos("relay:10").covers(&pos("relay:9")));
        assert!(!pos("relay:10").covers(&pos("relay.1:9")));
        assert!(!pos("relay.x:10").covers(&pos("relay.y:9")));
    }

    #[test]
    fn serializes_as_text() {
        let json = serde_json::to_string(&pos("mysql-bin.000003:1234")).unwrap();
        assert_eq!(json, "\"mysql-bin.000003:1234\"");
        assert_eq!(
            serde_json::from_str::<BinlogFile>(&json).unwrap(),
            pos("mysql-bin.000003:1234")
        );
    }

    fn positions() -> impl Strategy<Value = BinlogFile> {
        let base = prop::sample::select(vec!["mysql-bin", "log", "relay"]);
        (base, 1..4u32, any::<bool>(), 0..5u64).prop_map(|(base, index, padded, offset)| {
            let file = if padded {
                format!("{base}.{index:06}")
            } else {
                format!("{base}.{index}")
            };
            BinlogFile { file, offset }
        })
    }

    proptest! {
        #[test]
        fn display_parse_round_trips(p in positions()) {
            prop_assert_eq!(pos(&p.to_string()), p);
        }

        #[test]
        fn covers_is_reflexive_and_transitive(
            a in positions(),
            b in positions(),
            c in positions(),
        ) {
            prop_assert!(a.covers(&a));
            if a.covers(&b) && b.covers(&c) {
                prop_assert!(a.covers(&c));
            }
        }

        #[test]
        fn parse_never_panics(text in ".{0,64}") {
            let _ = text.parse::<BinlogFile>();
        }
    }
}
