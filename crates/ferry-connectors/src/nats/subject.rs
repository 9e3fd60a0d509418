//! Subjects: a table's subject, and whether a stream's subjects take it.

use ferry_core::TableId;

/// `<prefix>.<schema>.<table>`. A subject token holds no `.`, `*`, `>` or whitespace, so
/// those (and `%`, the escape) are written `%XX` per UTF-8 byte: `my.table` → `my%2Etable`.
pub(crate) fn table_subject(prefix: &str, table: &TableId) -> String {
    format!("{prefix}.{}.{}", token(&table.schema), token(&table.name))
}

fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_whitespace() || c.is_control() || ".*>%".contains(c) {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a stream subject (which may hold wildcards) takes every subject matching the
/// wildcard `pattern` (`<prefix>.>`): `>` takes the rest, `*` one token of the prefix.
pub(crate) fn covers(stream_subject: &str, pattern: &str) -> bool {
    let mut pattern = pattern.split('.');
    for token in stream_subject.split('.') {
        match (token, pattern.next()) {
            (">", Some(_)) => return true,
            (_, None) | (_, Some(">")) => return false,
            ("*", Some(_)) => {}
            (literal, Some(p)) if literal == p => {}
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_subjects_escape_what_a_token_cannot_hold() {
        assert_eq!(
            table_subject("cdc.shop", &TableId::new("public", "items")),
            "cdc.shop.public.items"
        );
        assert_eq!(
            table_subject("p", &TableId::new("my schema", "a.b*>%é")),
            "p.my%20schema.a%2Eb%2A%3E%25é"
        );
    }

    #[test]
    fn a_stream_covers_the_prefix_wildcard() {
        for yes in [">", "cdc.>", "*.>", "cdc.shop.>", "*.shop.>"] {
            assert!(covers(yes, "cdc.shop.>"), "{yes}");
        }
        for no in [
            "cdc.shop",
            "cdc.shop.*",
            "cdc.other.>",
            "cdc",
            "other.>",
            "cdc.shop.x.>",
        ] {
            assert!(!covers(no, "cdc.shop.>"), "{no}");
        }
    }
}
