//! Subject and stream-name rules, applied identically by every bus so that code that
//! works in one process also works against NATS.
//!
//! - A subject is one or more tokens separated by `.`; tokens are non-empty and contain
//!   no whitespace or control characters (`channel.7.comment`).
//! - A pattern (for subscribing, stream subjects, replay filters) may use wildcard tokens:
//!   `*` matches exactly one token, `>` matches one or more trailing tokens and must be
//!   last. Wildcards are whole tokens: `a.b*` is rejected rather than silently treated
//!   as a literal.
//! - Published subjects contain no wildcards.
//! - Subjects may not start with `$`, which NATS reserves for its own APIs.

use crate::BusError;

/// Longest stream name accepted; stream names become JetStream names and file names.
pub const MAX_STREAM_NAME_LEN: usize = 64;

/// One token of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternToken {
    /// Must equal the subject's token.
    Literal(String),
    /// `*`: any one token.
    AnyOne,
    /// `>`: one or more remaining tokens.
    Rest,
}

/// A validated subject pattern, parsed once so that matching each published message is
/// a cheap token comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectPattern {
    /// The pattern as written, for messages and for handing to NATS.
    text: String,
    /// Its tokens, in order.
    tokens: Vec<PatternToken>,
}

/// Whether the text being checked is a publish subject or a pattern; changes what
/// wildcards mean and how errors read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Subject,
    Pattern,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Subject => "subject",
            Kind::Pattern => "subject pattern",
        }
    }
}

/// Checks a subject to publish on: no wildcards.
pub fn validate_subject(subject: &str) -> Result<(), BusError> {
    parse_tokens(subject, Kind::Subject).map(|_tokens| ())
}

impl SubjectPattern {
    /// Parses and validates a pattern such as `comment.*.posted` or `ops.>`.
    pub fn parse(pattern: &str) -> Result<Self, BusError> {
        let tokens = parse_tokens(pattern, Kind::Pattern)?;
        Ok(Self {
            text: pattern.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a (valid, wildcard-free) subject matches this pattern.
    pub fn matches(&self, subject: &str) -> bool {
        let mut subject_tokens = subject.split('.');
        for pattern_token in &self.tokens {
            let Some(subject_token) = subject_tokens.next() else {
                return false;
            };
            match pattern_token {
                PatternToken::Rest => return true,
                PatternToken::AnyOne => {}
                PatternToken::Literal(literal) => {
                    if literal != subject_token {
                        return false;
                    }
                }
            }
        }
        subject_tokens.next().is_none()
    }

    /// Whether some subject matches both patterns; two durable streams may not overlap,
    /// as in JetStream.
    pub fn overlaps(&self, other: &SubjectPattern) -> bool {
        let mut index = 0;
        loop {
            let mine = self.tokens.get(index);
            let theirs = other.tokens.get(index);
            match (mine, theirs) {
                (None, None) => return true,
                // `>` needs at least one token, and the other side has one here.
                (Some(PatternToken::Rest), Some(_)) | (Some(_), Some(PatternToken::Rest)) => {
                    return true;
                }
                (None, Some(_)) | (Some(_), None) => return false,
                (Some(PatternToken::Literal(a)), Some(PatternToken::Literal(b))) => {
                    if a != b {
                        return false;
                    }
                }
                (Some(_), Some(_)) => {}
            }
            index += 1;
        }
    }
}

impl std::fmt::Display for SubjectPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_tokens(text: &str, kind: Kind) -> Result<Vec<PatternToken>, BusError> {
    let noun = kind.noun();
    if text.is_empty() {
        return Err(BusError::InvalidSubject(format!(
            "{noun} is empty: use dot-separated tokens such as channel.7.comment"
        )));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BusError::InvalidSubject(format!(
            "{noun} {text:?} contains whitespace or a control character: tokens are separated by dots, not spaces"
        )));
    }
    if text.starts_with('$') {
        return Err(BusError::InvalidSubject(format!(
            "{noun} {text:?} starts with `$`, which is reserved for the server's own subjects"
        )));
    }
    let raw_tokens: Vec<&str> = text.split('.').collect();
    let last_index = raw_tokens.len() - 1;
    let mut tokens = Vec::with_capacity(raw_tokens.len());
    for (index, raw_token) in raw_tokens.into_iter().enumerate() {
        if raw_token.is_empty() {
            return Err(BusError::InvalidSubject(format!(
                "{noun} {text:?} has an empty token (a leading, trailing or double dot)"
            )));
        }
        let token = match raw_token {
            "*" | ">" if kind == Kind::Subject => {
                return Err(BusError::InvalidSubject(format!(
                    "subject {text:?} contains the wildcard {raw_token:?}: wildcards are for subscribing, publish on a concrete subject"
                )));
            }
            "*" => PatternToken::AnyOne,
            ">" if index != last_index => {
                return Err(BusError::InvalidSubject(format!(
                    "{noun} {text:?} has `>` before its last token: `>` matches the rest of a subject, so it must come last"
                )));
            }
            ">" => PatternToken::Rest,
            _ if raw_token.contains(['*', '>']) => {
                return Err(BusError::InvalidSubject(format!(
                    "token {raw_token:?} of {noun} {text:?} mixes a wildcard with other characters: `*` and `>` must stand alone as whole tokens"
                )));
            }
            _ => PatternToken::Literal(raw_token.to_owned()),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

/// Checks a durable stream name: ASCII letters, digits, `-` and `_`, at most
/// [`MAX_STREAM_NAME_LEN`] bytes, because it becomes a JetStream name and a file name.
pub fn validate_stream_name(name: &str) -> Result<(), BusError> {
    if name.is_empty() {
        return Err(BusError::InvalidStream(
            "stream name is empty: use a name such as ops-log".to_owned(),
        ));
    }
    if name.len() > MAX_STREAM_NAME_LEN {
        return Err(BusError::InvalidStream(format!(
            "stream name {name:?} is {} bytes long; the limit is {MAX_STREAM_NAME_LEN}",
            name.len()
        )));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !name.chars().all(allowed) {
        return Err(BusError::InvalidStream(format!(
            "stream name {name:?} may only contain ASCII letters, digits, `-` and `_`"
        )));
    }
    Ok(())
}

/// Validates a whole stream declaration (name, subjects, and no overlap among its own
/// subjects) and returns its parsed subject patterns.
pub(crate) fn parse_stream_subjects(
    name: &str,
    subjects: &[String],
) -> Result<Vec<SubjectPattern>, BusError> {
    validate_stream_name(name)?;
    if subjects.is_empty() {
        return Err(BusError::InvalidStream(format!(
            "stream {name:?} captures no subjects: list at least one subject pattern such as ops.>"
        )));
    }
    let mut patterns: Vec<SubjectPattern> = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let pattern = SubjectPattern::parse(subject)?;
        if let Some(earlier) = patterns.iter().find(|earlier| earlier.overlaps(&pattern)) {
            return Err(BusError::InvalidStream(format!(
                "subjects {earlier} and {pattern} of stream {name:?} overlap: list each subject once"
            )));
        }
        patterns.push(pattern);
    }
    Ok(patterns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> SubjectPattern {
        match SubjectPattern::parse(text) {
            Ok(pattern) => pattern,
            Err(err) => panic!("{text:?} should parse: {err}"),
        }
    }

    #[test]
    fn wildcards_match_like_nats() {
        assert!(pattern("a.*").matches("a.b"));
        assert!(!pattern("a.*").matches("a.b.c"));
        assert!(!pattern("a.*").matches("a"));
        assert!(pattern("a.>").matches("a.b"));
        assert!(pattern("a.>").matches("a.b.c"));
        assert!(!pattern("a.>").matches("a"));
        assert!(pattern("*.b.>").matches("x.b.c.d"));
        assert!(!pattern("*.b.>").matches("x.c.d"));
        assert!(pattern(">").matches("anything.at.all"));
        assert!(pattern("a.b").matches("a.b"));
        assert!(!pattern("a.b").matches("a.b.c"));
        assert!(!pattern("a.b.c").matches("a.b"));
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let cases = [
            ("a.>", "a.b", true),
            ("a.>", "a", false),
            ("a.*", "a.b.c", false),
            ("a.*", "*.b", true),
            ("a.b", "a.c", false),
            ("a.*.c", "a.b.>", true),
            (">", "x", true),
            ("a.*", "a.>", true),
            ("a", "a.>", false),
        ];
        for (left, right, expected) in cases {
            assert_eq!(
                pattern(left).overlaps(&pattern(right)),
                expected,
                "{left} vs {right}"
            );
            assert_eq!(
                pattern(right).overlaps(&pattern(left)),
                expected,
                "{right} vs {left}"
            );
        }
    }

    #[test]
    fn invalid_subjects_are_rejected() {
        for subject in [
            "", ".", "a.", ".a", "a..b", "a b", "a\tb", "a.*", "a.>", "a.b*", "$JS.API",
        ] {
            assert!(
                matches!(validate_subject(subject), Err(BusError::InvalidSubject(_))),
                "{subject:?} should be rejected"
            );
        }
        for text in ["a.>.b", "a.b>", "a..*", "*x"] {
            assert!(
                matches!(
                    SubjectPattern::parse(text),
                    Err(BusError::InvalidSubject(_))
                ),
                "{text:?} should be rejected"
            );
        }
        assert!(validate_subject("channel-7.comment_posted").is_ok());
    }

    #[test]
    fn stream_names_are_checked() {
        assert!(validate_stream_name("ops-log_1").is_ok());
        for name in [
            "",
            "a.b",
            "a*",
            "a b",
            "a/b",
            &"x".repeat(MAX_STREAM_NAME_LEN + 1),
        ] {
            assert!(
                matches!(validate_stream_name(name), Err(BusError::InvalidStream(_))),
                "{name:?} should be rejected"
            );
        }
    }
}
