//! What a comment says: the validated body, and the folded form that filters
//! compare, so that "ｂａｄ", "B A D", "b\u{200b}ad" and "バッド"/"ばっど" each read
//! the same to a blocked-terms list.

use aho_corasick::AhoCorasick;
use unicode_normalization::UnicodeNormalization;

use crate::error::CommentError;

/// A comment's text as stored and shown: trimmed, not empty, at most the
/// station's length, with no control characters. It is plain text; clients
/// must never interpret it as HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentBody(String);

impl CommentBody {
    /// Checks a posted body. `max_chars` counts Unicode scalar values, as a
    /// person counts characters.
    pub fn parse(raw: &str, max_chars: usize) -> Result<CommentBody, CommentError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(CommentError::InvalidArgument(
                "the comment is empty: write some text in `body`".to_owned(),
            ));
        }
        let length = trimmed.chars().count();
        if length > max_chars {
            return Err(CommentError::InvalidArgument(format!(
                "the comment is {length} characters long; the most is {max_chars}"
            )));
        }
        for (position, character) in trimmed.chars().enumerate() {
            if character.is_control() || matches!(character, '\u{2028}' | '\u{2029}') {
                return Err(CommentError::InvalidArgument(format!(
                    "the comment contains a control character (U+{:04X}) at character {}; comments are one line of text",
                    u32::from(character),
                    position + 1
                )));
            }
        }
        Ok(CommentBody(trimmed.to_owned()))
    }

    /// The checked body.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The checked body, as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The form filters compare: NFKC (full-width and half-width forms become
/// one), lower case, katakana as hiragana, and only letters and digits
/// (spaces, punctuation, zero-width and other invisible characters are
/// dropped, so spacing tricks fold away).
pub fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for character in text.nfkc() {
        for lower in character.to_lowercase() {
            let kana = katakana_to_hiragana(lower);
            if kana.is_alphanumeric() {
                folded.push(kana);
            }
        }
    }
    folded
}

/// The hiragana of a katakana letter; any other character unchanged.
fn katakana_to_hiragana(character: char) -> char {
    // ァ (U+30A1) to ヶ (U+30F6) sit 0x60 above their hiragana.
    let code = u32::from(character);
    if (0x30A1..=0x30F6).contains(&code) {
        return char::from_u32(code - 0x60).unwrap_or(character);
    }
    character
}

/// A channel's blocked terms, folded and compiled for one pass over a body.
#[derive(Debug, Clone)]
pub struct BlockedTerms {
    /// The terms as the moderator wrote them, in the order of the matcher's
    /// patterns, to say which one matched.
    terms: Vec<String>,
    matcher: Option<AhoCorasick>,
}

impl BlockedTerms {
    /// Compiles a list; terms that fold to nothing (only punctuation) are
    /// dropped, since they would match every comment.
    pub fn new(terms: &[String]) -> BlockedTerms {
        let mut kept = Vec::new();
        let mut patterns = Vec::new();
        for term in terms {
            let folded = fold(term);
            if folded.is_empty() {
                continue;
            }
            kept.push(term.clone());
            patterns.push(folded);
        }
        let matcher = if patterns.is_empty() {
            None
        } else {
            match AhoCorasick::new(&patterns) {
                Ok(matcher) => Some(matcher),
                Err(error) => {
                    // Only a pattern set too large for the automaton fails; the
                    // settings bound the list far below that.
                    tracing::error!(error = %error, "cannot compile blocked terms; none are applied");
                    None
                }
            }
        };
        BlockedTerms {
            terms: kept,
            matcher,
        }
    }

    /// The first blocked term found in a folded body.
    pub fn find(&self, folded_body: &str) -> Option<&str> {
        let matcher = self.matcher.as_ref()?;
        let found = matcher.find(folded_body)?;
        self.terms
            .get(found.pattern().as_usize())
            .map(String::as_str)
    }
}

/// Whether a body carries a link: a scheme, a `www.` host, or a word shaped
/// like `name.tld` with a common top-level domain.
pub fn has_link(body: &str) -> bool {
    let normalized: String = body.nfkc().collect::<String>().to_lowercase();
    normalized.split_whitespace().any(|word| {
        if word.contains("://") || word.starts_with("www.") {
            return true;
        }
        let word = word.trim_matches(|c: char| !c.is_alphanumeric());
        let Some((name, tld)) = word.rsplit_once('.') else {
            return false;
        };
        let tld = tld.split('/').next().unwrap_or(tld);
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && COMMON_TLDS.contains(&tld)
    })
}

/// Top-level domains that spam links use most; a dotted word ending in one
/// of them is taken for a link.
const COMMON_TLDS: &[&str] = &[
    "com", "net", "org", "io", "jp", "co", "ly", "gg", "tv", "me", "info", "biz", "xyz", "app",
    "link", "site", "online", "ru", "cn", "uk", "de",
];

/// The longest run of one repeated character, for the spam rule.
pub fn longest_run(body: &str) -> usize {
    let mut longest = 0;
    let mut current = 0;
    let mut previous = None;
    for character in body.chars() {
        if Some(character) == previous {
            current += 1;
        } else {
            current = 1;
            previous = Some(character);
        }
        longest = longest.max(current);
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(terms: &[&str]) -> BlockedTerms {
        let terms: Vec<String> = terms.iter().map(|term| (*term).to_owned()).collect();
        BlockedTerms::new(&terms)
    }

    #[test]
    fn evasions_fold_to_the_blocked_term() {
        let terms = blocked(&["bad", "ばか"]);
        for evasion in [
            "bad",
            "BAD",
            "ｂａｄ",
            "Ｂ Ａ Ｄ",
            "b a d",
            "b\u{200b}ad",
            "b\u{feff}a\u{2060}d",
            "b.a.d",
            "so b-a-d!",
            "バカ",
            "ﾊﾞｶ",
            "ば か",
        ] {
            assert!(
                terms.find(&fold(evasion)).is_some(),
                "{evasion:?} got through"
            );
        }
        assert_eq!(terms.find(&fold("good show")), None);
    }

    #[test]
    fn terms_of_punctuation_only_are_ignored() {
        let terms = blocked(&["!!!", "  "]);
        assert_eq!(terms.find(&fold("hello!!!")), None);
    }

    #[test]
    fn bodies_are_checked() {
        assert!(CommentBody::parse("   ", 10).is_err());
        assert!(CommentBody::parse("", 10).is_err());
        assert!(CommentBody::parse("12345678901", 10).is_err());
        assert_eq!(
            CommentBody::parse("  日本語のコメント  ", 10)
                .expect("valid")
                .as_str(),
            "日本語のコメント"
        );
        let error = CommentBody::parse("a\u{7}b", 10).expect_err("control character");
        assert!(error.to_string().contains("U+0007"), "{error}");
        assert!(CommentBody::parse("line\nbreak", 20).is_err());
        assert_eq!(
            CommentBody::parse("<b>bold</b>", 20)
                .expect("html is text")
                .as_str(),
            "<b>bold</b>"
        );
    }

    #[test]
    fn links_are_recognised() {
        assert!(has_link("see https://spam.example"));
        assert!(has_link("go to www.example.org now"));
        assert!(has_link("cheap-pills.com"));
        assert!(has_link("ｃｈｅａｐ．ｃｏｍ"));
        assert!(!has_link("that was 2.5 goals"));
        assert!(!has_link("wwwwww"));
        assert!(!has_link("e.g. this"));
    }

    #[test]
    fn runs_are_counted() {
        assert_eq!(longest_run("wwwwwa"), 5);
        assert_eq!(longest_run("abc"), 1);
        assert_eq!(longest_run(""), 0);
    }
}
