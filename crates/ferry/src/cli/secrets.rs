//! Masking of passwords in text the CLI prints.
//!
//! The server masks URIs in every response, and [`ferry_core::ConnectionUri`] prints
//! masked, but the CLI also prints text it did not build: parser errors about a local file
//! (serde quotes a string of the wrong type whole) and the server's error messages. Every
//! message goes through [`mask_text`] on its way to the terminal, which replaces the
//! password of anything shaped like `scheme://user:password@host` with `***` (the same
//! function the server masks its messages with).

/// `text` with the password of every `scheme://user:password@…` replaced by `***` and
/// serde's quoting of a bad value (`string "…"`) dropped: the API's own masking, so the
/// CLI and the server hide the same things.
pub(crate) fn mask_text(text: &str) -> String {
    ferry_api::mask_secrets(text)
}

/// Whether a URI's password (or another secret parameter) is the mask `***` (a URI copied
/// from `get` output).
pub(crate) fn has_masked_password(uri: &str) -> bool {
    uri.parse::<ferry_core::ConnectionUri>()
        .is_ok_and(|u| u.has_masked_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords_in_uris() {
        for (text, expected) in [
            (
                "bad source_uri \"postgres://app:s3cret@db:5432/shop\" here",
                "bad source_uri \"postgres://app:***@db:5432/shop\" here",
            ),
            (
                "postgres://app:p%40ss@db/x and mysql://u:pw@h",
                "postgres://app:***@db/x and mysql://u:***@h",
            ),
            ("postgres://app@db/shop", "postgres://app@db/shop"),
            ("http://127.0.0.1:8300/api", "http://127.0.0.1:8300/api"),
            ("postgres://u:pa@ss@h/db", "postgres://u:***@h/db"),
            (
                "invalid type: string \"postgres-ish s3cret\", expected a sequence",
                "invalid type: string, expected a sequence",
            ),
            ("no uri at all: a:b@c", "no uri at all: a:b@c"),
            (
                "postgres://app@db/shop?password=s3cret&sslmode=disable",
                "postgres://app@db/shop?password=***&sslmode=disable",
            ),
            ("ends with ://", "ends with ://"),
        ] {
            assert_eq!(mask_text(text), expected, "{text}");
        }
    }

    #[test]
    fn recognises_masked_uris() {
        assert!(has_masked_password("postgres://app:***@db/shop"));
        assert!(has_masked_password("postgres://app@db/shop?password=***"));
        assert!(has_masked_password(
            "postgres://app@db/shop?sslpassword=***"
        ));
        assert!(!has_masked_password("postgres://app:x@db/shop"));
        assert!(!has_masked_password("blackhole://"));
    }
}
