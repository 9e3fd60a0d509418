//! Which parts of a URI are secret, and how they are masked.
//!
//! A URI carries a secret in its userinfo (`user:password@`) or in a query parameter whose
//! name says so: libpq's `password` and `sslpassword` (the client key's passphrase), and
//! any `*password*`, `*passwd*`, `*secret*`, `*token*` or `*api_key*` a future connector
//! accepts. The references `password_file` and `password_env` name a file and a variable,
//! which are not secret, and print as given.

/// The mask every secret prints as.
pub const MASK: &str = "***";

/// Whether query parameter `key` carries a secret value.
pub fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.ends_with("_file") || key.ends_with("_env") {
        return false;
    }
    ["password", "passwd", "secret", "token", "apikey", "api_key"]
        .iter()
        .any(|word| key.contains(word))
}

/// `query` (the text after `?`, still percent-encoded) with the value of every secret
/// parameter replaced by [`MASK`]; other parameters keep their exact text.
pub(super) fn mask_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_param(&super::percent_decode(key)) => {
                format!("{key}={MASK}")
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `text` with the value of every `key=value` whose key is secret replaced by [`MASK`]:
/// the query parameters of URIs quoted in a message, and libpq's `key=value` connection
/// strings. A value ends at `&`, whitespace, a quote, a backtick or a closing bracket.
pub fn mask_secret_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (head, tail) = rest.split_at(eq);
        let is_key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        // Key characters are ASCII, so the key starts one byte after the last other char
        // ends: the end of that char, which may be several bytes long.
        let key_start = head
            .char_indices()
            .rfind(|&(_, c)| !is_key_char(c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        out.push_str(head);
        out.push('=');
        let tail = &tail[1..];
        let value_end = tail
            .find(|c: char| {
                c == '&' || c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ')' | ']' | '}')
            })
            .unwrap_or(tail.len());
        if is_secret_param(&head[key_start..]) && value_end > 0 {
            out.push_str(MASK);
            rest = &tail[value_end..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_parameters() {
        for key in [
            "password",
            "sslpassword",
            "PASSWORD",
            "sasl.password",
            "api_token",
        ] {
            assert!(is_secret_param(key), "{key}");
        }
        for key in [
            "password_file",
            "password_env",
            "passfile",
            "sslmode",
            "user",
        ] {
            assert!(!is_secret_param(key), "{key}");
        }
    }

    #[test]
    fn masks_query_values() {
        assert_eq!(
            mask_query("sslmode=require&password=p%40ss&sslpassword=k&password_file=/x"),
            "sslmode=require&password=***&sslpassword=***&password_file=/x"
        );
        assert_eq!(mask_query("a=%2F&b"), "a=%2F&b");
    }

    #[test]
    fn masks_parameters_in_text() {
        for (text, expected) in [
            (
                "connect to postgres://app@db/shop?password=s3cret&sslmode=disable failed",
                "connect to postgres://app@db/shop?password=***&sslmode=disable failed",
            ),
            (
                "host=db user=app password=s3cret dbname=x",
                "host=db user=app password=*** dbname=x",
            ),
            ("\"sslpassword=k\"", "\"sslpassword=***\""),
            ("password_file=/run/pw a=b", "password_file=/run/pw a=b"),
            ("password= x", "password= x"),
            ("no secrets == here", "no secrets == here"),
            ("\u{80}=null é=x", "\u{80}=null é=x"),
            ("ü password=x", "ü password=***"),
        ] {
            assert_eq!(mask_secret_params(text), expected, "{text}");
        }
    }

    proptest::proptest! {
        /// Any text (the fuzzer found a multibyte character before `=`) masks without a
        /// panic, and a secret value after `password=` never survives.
        #[test]
        fn masking_any_text(prefix in "\\PC*", secret in "[a-zA-Z0-9]{12}", suffix in "\\PC*") {
            let _ = mask_secret_params(&prefix);
            let _ = mask_query(&prefix);
            let text = format!("{prefix} password={secret} {suffix}");
            let masked = mask_secret_params(&text);
            proptest::prop_assert!(
                masked.matches(&secret).count() < text.matches(&secret).count(),
                "{masked}"
            );
        }
    }
}
