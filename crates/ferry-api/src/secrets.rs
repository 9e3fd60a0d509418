//! Masked passwords sent back: `ferry changefeed get` shows `postgres://app:***@db/shop`,
//! and when that text comes back in an update, `***` means "keep the stored password".

use ferry_core::ConnectionUri;
use url::Url;

/// The password placeholder every response shows.
const MASK: &str = "***";

/// `uri` with a `***` password replaced by `current`'s password. Anything else (a new
/// password, no password, an unparsable URI for the caller to reject) passes unchanged.
pub(crate) fn unmask(uri: &str, current: Option<&ConnectionUri>) -> String {
    let Some(current) = current else {
        return uri.to_string();
    };
    let Ok(mut url) = Url::parse(uri.trim()) else {
        return uri.to_string();
    };
    if url.password() != Some(MASK) {
        return uri.to_string();
    }
    let Ok(stored) = Url::parse(current.expose()) else {
        return uri.to_string();
    };
    // The stored password is already percent-encoded; `set_password` keeps it as is.
    if url.set_password(stored.password()).is_err() {
        return uri.to_string();
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_password_keeps_the_stored_one() {
        let stored = ferry_core::parse_postgres_uri("postgres://app:p%40ss@db:5432/shop").unwrap();
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
}
