//! Masked secrets sent back: `ferry changefeed get` shows `postgres://app:***@db/shop` (or
//! `…?password=***`), and when that text comes back in an update, `***` means "keep the
//! stored secret".

use ferry_core::uri::{is_secret_param, percent_decode, MASK};
use ferry_core::ConnectionUri;
use url::Url;

/// `uri` with every `***` secret (the userinfo password, a secret query parameter) replaced
/// by `current`'s. Anything else (a new password, no password, an unparsable URI for the
/// caller to reject) passes unchanged.
pub(crate) fn unmask(uri: &str, current: Option<&ConnectionUri>) -> String {
    let Some(current) = current else {
        return uri.to_string();
    };
    let Ok(mut url) = Url::parse(uri.trim()) else {
        return uri.to_string();
    };
    let Ok(stored) = Url::parse(current.expose()) else {
        return uri.to_string();
    };
    // The stored password is already percent-encoded; `set_password` keeps it as is.
    if url.password() == Some(MASK) && url.set_password(stored.password()).is_err() {
        return uri.to_string();
    }
    if let Some(query) = url.query() {
        let restored: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, MASK)) if is_secret_param(&percent_decode(key)) => {
                    stored_pair(&stored, key).unwrap_or_else(|| pair.to_string())
                }
                _ => pair.to_string(),
            })
            .collect();
        url.set_query(Some(&restored.join("&")));
    }
    url.to_string()
}

/// The stored URI's `key=value` pair (still percent-encoded) for query parameter `key`.
fn stored_pair(stored: &Url, key: &str) -> Option<String> {
    stored
        .query()?
        .split('&')
        .find(|pair| {
            pair.split_once('=')
                .is_some_and(|(k, _)| percent_decode(k) == percent_decode(key))
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_password_keeps_the_stored_one() {
        let stored = ferry_core::parse_source_uri("postgres://app:p%40ss@db:5432/shop").unwrap();
        assert_eq!(
            unmask("postgres://app:***@db2:5433/shop", Some(&stored)),
            "postgres://app:p%40ss@db2:5433/shop"
        );
        assert_eq!(
            unmask("postgres://app:new@db:5432/shop", Some(&stored)),
            "postgres://app:new@db:5432/shop"
        );
        assert_eq!(unmask("not a uri", Some(&stored)), "not a uri");
        assert_eq!(
            unmask("postgres://app:***@db/shop", None),
            "postgres://app:***@db/shop"
        );
    }

    #[test]
    fn a_masked_query_secret_keeps_the_stored_one() {
        let stored = ferry_core::parse_source_uri(
            "postgres://app@db/shop?password=p%26ss&sslmode=disable&sslpassword=k",
        )
        .unwrap();
        assert_eq!(
            unmask(
                "postgres://app@db/shop?sslmode=require&password=***&sslpassword=***",
                Some(&stored)
            ),
            "postgres://app@db/shop?sslmode=require&password=p%26ss&sslpassword=k"
        );
        assert_eq!(
            unmask("postgres://app@db/shop?password=new", Some(&stored)),
            "postgres://app@db/shop?password=new"
        );
    }
}
