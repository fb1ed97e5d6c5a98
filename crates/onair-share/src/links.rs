//! Share codes and share intents.
//!
//! A code is 12 characters of `[0-9A-Za-z]` drawn from the operating
//! system's generator: 62^12, about 2^71 codes, so links can't be found by
//! trying them. The intents are the documented share URLs of each network,
//! with every parameter percent-encoded as a URI component:
//!
//! - X: `https://twitter.com/intent/tweet?text=…&url=…` (X's Web Intent);
//! - LINE: `https://social-plugins.line.me/lineit/share?url=…` (LINE's share
//!   button, which also works in a desktop browser);
//! - Facebook: `https://www.facebook.com/sharer/sharer.php?u=…`.

use onair_proto::share::v1 as pb;
use rand::Rng as _;

/// The length of a share code.
pub const CODE_LEN: usize = 12;

/// A new share code.
pub fn new_code() -> String {
    let mut generator = rand::rngs::OsRng;
    (0..CODE_LEN)
        .map(|_| char::from(generator.sample(rand::distributions::Alphanumeric)))
        .collect()
}

/// Whether `code` is shaped like a share code (whether it exists is the
/// store's to say).
pub fn is_code(code: &str) -> bool {
    code.len() == CODE_LEN && code.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

/// The share intents of `url`, with `text` as the post's text where the
/// network takes one.
pub fn intents(url: &str, text: &str) -> pb::ShareIntents {
    let url = component(url);
    pb::ShareIntents {
        x: format!(
            "https://twitter.com/intent/tweet?text={}&url={url}",
            component(text)
        ),
        line: format!("https://social-plugins.line.me/lineit/share?url={url}"),
        facebook: format!("https://www.facebook.com/sharer/sharer.php?u={url}"),
    }
}

/// `text` percent-encoded as a URI component: everything but the
/// unreserved characters (RFC 3986) as `%XX` of its UTF-8 bytes.
pub fn component(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = String::with_capacity(text.len() * 3);
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `name` in the query of `url`, decoded.
    fn parameter(url: &str, name: &str) -> String {
        let (_, query) = url.split_once('?').unwrap();
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .unwrap()
    }

    #[test]
    fn codes_are_long_random_and_plain() {
        let codes: std::collections::HashSet<String> = (0..1000).map(|_| new_code()).collect();
        assert_eq!(codes.len(), 1000);
        assert!(codes.iter().all(|code| is_code(code)));
        assert!(!is_code("short"));
        assert!(!is_code("abc/def-ghi."));
        assert!(!is_code("ÅÅÅÅÅÅ"));
    }

    #[test]
    fn each_intent_carries_the_link_whole() {
        let url = "https://tv.example.com/s/AbC123xyz789";
        let text = "Now on News & Talk: \"Morning\" #1 ライブ";
        let intents = intents(url, text);
        assert!(intents.x.starts_with("https://twitter.com/intent/tweet?"));
        assert_eq!(parameter(&intents.x, "url"), url);
        assert_eq!(parameter(&intents.x, "text"), text);
        assert!(
            intents
                .line
                .starts_with("https://social-plugins.line.me/lineit/share?")
        );
        assert_eq!(parameter(&intents.line, "url"), url);
        assert!(
            intents
                .facebook
                .starts_with("https://www.facebook.com/sharer/sharer.php?")
        );
        assert_eq!(parameter(&intents.facebook, "u"), url);
        // Nothing in a parameter can end it or start another.
        assert!(!intents.x["https://twitter.com/intent/tweet?".len()..].contains(['#', ' ', '"']));
        assert_eq!(intents.x.matches('&').count(), 1);
    }

    #[test]
    fn components_keep_only_unreserved_characters() {
        assert_eq!(component("a b&c=d/é~"), "a%20b%26c%3Dd%2F%C3%A9~");
    }
}
