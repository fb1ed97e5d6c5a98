//! Paging: how many items a list call returns, and the opaque tokens that
//! say where the next page starts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::MediaError;

/// How many items a list call returns when the caller does not say.
pub const DEFAULT_PAGE_SIZE: i32 = 100;
/// The most items one list call returns; larger page sizes are lowered to it.
pub const MAX_PAGE_SIZE: i32 = 1000;

/// Page tokens are opaque to clients: base64url of `<kind>:<position>`, where
/// the position is the last channel number or program id of the page.
pub(super) fn page_token(kind: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}

pub(super) fn page_position(kind: &str, token: &str) -> Result<Option<String>, MediaError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        MediaError::InvalidArgument(
            "page_token is not one this list returned: pass next_page_token from the previous page, or nothing for the first".to_owned(),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let Some(position) = text
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
    else {
        return Err(invalid());
    };
    Ok(Some(position.to_owned()))
}

pub(super) fn page_size(requested: i32) -> Result<i64, MediaError> {
    if requested < 0 {
        return Err(MediaError::InvalidArgument(format!(
            "page_size {requested} is negative: use 1 to {MAX_PAGE_SIZE}, or 0 for {DEFAULT_PAGE_SIZE}"
        )));
    }
    let size = if requested == 0 {
        DEFAULT_PAGE_SIZE
    } else {
        requested.min(MAX_PAGE_SIZE)
    };
    Ok(i64::from(size))
}

/// Cuts a page read with one item more than `limit` back to `limit`, and
/// gives the token of the page after it (empty after the last page).
pub(super) fn finish_page<T>(
    items: &mut Vec<T>,
    limit: i64,
    kind: &str,
    position: impl Fn(&T) -> String,
) -> String {
    let mut next_page_token = String::new();
    if i64::try_from(items.len()).unwrap_or(i64::MAX) > limit {
        items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        if let Some(last) = items.last() {
            next_page_token = page_token(kind, &position(last));
        }
    }
    next_page_token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_refused() {
        let token = page_token("channels", "42");
        assert_eq!(
            page_position("channels", &token).unwrap(),
            Some("42".to_owned())
        );
        assert!(page_position("programs", &token).is_err());
        assert!(page_position("channels", "not base64!").is_err());
        assert_eq!(page_position("channels", "").unwrap(), None);
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0).unwrap(), 100);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert!(page_size(-1).is_err());
    }
}
