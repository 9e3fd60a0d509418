//! Who wrote a MySQL transaction: the source server's UUID and, since MySQL 8.3, an optional
//! tag. MySQL calls the pair a TSID (transaction source identifier); each TSID numbers its
//! own transactions 1, 2, 3, …
//!
//! Both parts are case-insensitive and printed lower-case, as MySQL prints them, so equal
//! identifiers are equal values. Both are `Copy` (no heap), so that a binlog reader can look
//! a TSID up for every transaction without allocating.

use std::fmt;
use std::str::FromStr;

use super::{serde_as_display, Notation, PositionSyntaxError};

/// Longest GTID tag, in characters (MySQL's `tag_max_length`).
const MAX_TAG_LEN: usize = 32;

fn syntax(input: &str, reason: &'static str) -> PositionSyntaxError {
    PositionSyntaxError::new(Notation::MySqlGtidSet, input, reason)
}

/// A MySQL server UUID (`@@server_uuid`), the source of a GTID. Printed lower-case with
/// dashes, as MySQL prints it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerUuid([u8; 16]);

impl ServerUuid {
    /// The UUID of these 16 bytes, as a binlog GTID event carries it.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        ServerUuid(bytes)
    }

    /// The 16 bytes of this UUID.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for ServerUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ServerUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ServerUuid {
    type Err = PositionSyntaxError;

    /// Parses the dashed 8-4-4-4-12 form, in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            syntax(
                s,
                "expected a server UUID such as 3e11fa47-71ca-11e1-9e33-c80aa9429562",
            )
        };
        let text = s.as_bytes();
        if text.len() != 36 {
            return Err(err());
        }
        let mut bytes = [0u8; 16];
        let mut hex = text.iter().enumerate().filter_map(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                // A dash, checked below; not a digit.
                None
            } else {
                Some((c as char).to_digit(16))
            }
        });
        for byte in &mut bytes {
            let (Some(Some(hi)), Some(Some(lo))) = (hex.next(), hex.next()) else {
                return Err(err());
            };
            *byte = (hi * 16 + lo) as u8;
        }
        if [8, 13, 18, 23].iter().any(|&i| text[i] != b'-') {
            return Err(err());
        }
        Ok(ServerUuid(bytes))
    }
}

/// A GTID tag (MySQL 8.3+): 1 to 32 characters, a letter or `_` then letters, digits or `_`.
/// Tags are case-insensitive; MySQL stores and prints them lower-case, and so does this type.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GtidTag {
    len: u8,
    /// Lower-case ASCII, zero past `len` (so derived `Eq`/`Hash` compare the text).
    bytes: [u8; MAX_TAG_LEN],
}

impl GtidTag {
    /// The tag's text, lower-case.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("a tag is ASCII")
    }
}

impl Ord for GtidTag {
    /// Text order (the tag is ASCII, so byte order), not length first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes[..usize::from(self.len)].cmp(&other.bytes[..usize::from(other.len)])
    }
}

impl PartialOrd for GtidTag {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for GtidTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for GtidTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl FromStr for GtidTag {
    type Err = PositionSyntaxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = !s.is_empty()
            && s.len() <= MAX_TAG_LEN
            && s.bytes().enumerate().all(|(i, c)| {
                c == b'_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            });
        if !valid {
            return Err(syntax(
                s,
                "expected a GNO interval such as 1-5, or a tag of up to 32 letters, digits or _ \
                 starting with a letter or _",
            ));
        }
        let mut bytes = [0u8; MAX_TAG_LEN];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        bytes.make_ascii_lowercase();
        Ok(GtidTag {
            len: s.len() as u8,
            bytes,
        })
    }
}

serde_as_display!(ServerUuid);
serde_as_display!(GtidTag);

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    #[test]
    fn uuid_prints_lower_case_with_dashes() {
        let uuid: ServerUuid = UUID.to_uppercase().parse().unwrap();
        assert_eq!(uuid.to_string(), UUID);
        assert_eq!(format!("{uuid:?}"), UUID);
        assert_eq!(uuid.as_bytes()[..4], [0x3e, 0x11, 0xfa, 0x47]);
        assert_eq!(ServerUuid::from_bytes(*uuid.as_bytes()), uuid);
        assert_eq!(serde_json::to_string(&uuid).unwrap(), format!("\"{UUID}\""));
    }

    #[test]
    fn uuid_order_is_text_order() {
        let low: ServerUuid = "2174b383-5441-11e8-b90a-c80aa9429562".parse().unwrap();
        let high: ServerUuid = UUID.parse().unwrap();
        assert!(low < high && low.to_string() < high.to_string());
    }

    #[test]
    fn uuid_rejects_other_forms() {
        for bad in [
            "",
            "3e11fa47-71ca-11e1-9e33-c80aa942956",
            "3e11fa47-71ca-11e1-9e33-c80aa94295622",
            "3e11fa4771ca11e19e33c80aa9429562",
            "{3e11fa47-71ca-11e1-9e33-c80aa9429562}",
            "3e11fa47-71ca-11e1-9e33_c80aa9429562",
            "3e11fa4-771ca-11e1-9e33-c80aa9429562",
            "3e11fa47-71ca-11e1-9e33-c80aa942956g",
            "3e11fa47-71ca-11e1-9e33-c80aa94295\u{e9}",
            " 3e11fa47-71ca-11e1-9e33-c80aa942956",
        ] {
            let err = bad.parse::<ServerUuid>().expect_err(bad);
            assert_eq!(err.notation, Notation::MySqlGtidSet);
        }
    }

    #[test]
    fn tag_is_lower_case_and_bounded() {
        let tag: GtidTag = "Night_Batch_2".parse().unwrap();
        assert_eq!(tag.as_str(), "night_batch_2");
        assert_eq!(tag, "NIGHT_BATCH_2".parse().unwrap());
        assert_eq!(format!("{tag:?}"), "\"night_batch_2\"");
        assert!("_".parse::<GtidTag>().is_ok());
        assert!("a".repeat(32).parse::<GtidTag>().is_ok());
        for bad in ["", "1a", "a-b", "a b", "a:b", "\u{e9}t\u{e9}", "a\n"] {
            assert!(bad.parse::<GtidTag>().is_err(), "{bad:?}");
        }
        assert!("a".repeat(33).parse::<GtidTag>().is_err());
    }

    #[test]
    fn tag_order_is_text_order_not_length() {
        let tags: Vec<GtidTag> = ["b", "aa", "a_", "a"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let mut sorted = tags.clone();
        sorted.sort();
        let text: Vec<&str> = sorted.iter().map(GtidTag::as_str).collect();
        assert_eq!(text, ["a", "a_", "aa", "b"]);
    }
}
