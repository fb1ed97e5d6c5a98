//! `google.api.http` path templates: parsing and matching.
//!
//! The grammar (googleapis `http.proto`):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```

use std::borrow::Cow;
use std::fmt;

/// One piece of a template after parsing. Variables are flattened into their
/// sub-segments between `Start` and `End` markers, so matching is one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `*`: exactly one segment.
    Single,
    /// `**`: zero or more segments; only last.
    Multi,
    VariableStart(String),
    VariableEnd,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    pieces: Vec<Piece>,
    verb: Option<String>,
    /// The field paths bound by variables, in order.
    variables: Vec<String>,
    /// How many literal segments the template has; more literals win when two
    /// templates match the same path (`/v1/users/me` over `/v1/users/{id}`).
    literal_count: usize,
    /// The literal segments the template starts with, each after its `/`
    /// (`/v1/users` for `/v1/users/{user_id}`): a path that starts otherwise,
    /// and escapes nothing, is turned away without being split.
    literal_prefix: String,
}

/// A path template that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?}: {reason}")]
pub struct TemplateError {
    /// The template as written in the contract.
    pub template: String,
    /// What is wrong with it, in words.
    pub reason: String,
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The values a matched path binds, by field path, in template order.
pub type Bindings = Vec<(String, String)>;

impl PathTemplate {
    /// Parses a template as a contract writes it, or says how it breaks the
    /// grammar: it must start with `/` and not end with one, a variable must
    /// be a whole segment and bind its field only once, and `**` may only be
    /// the last segment.
    pub fn parse(template: &str) -> Result<PathTemplate, TemplateError> {
        let error = |reason: &str| TemplateError {
            template: template.to_owned(),
            reason: reason.to_owned(),
        };
        let Some(rest) = template.strip_prefix('/') else {
            return Err(error("it must start with /"));
        };
        // The verb follows the last ':' that is outside braces.
        let mut depth = 0i32;
        let mut verb_at = None;
        for (index, character) in rest.char_indices() {
            match character {
                '{' => depth += 1,
                '}' => depth -= 1,
                ':' if depth == 0 => verb_at = Some(index),
                _ => {}
            }
        }
        let (path, verb) = match verb_at {
            Some(index) => (&rest[..index], Some(rest[index + 1..].to_owned())),
            None => (rest, None),
        };
        if verb.as_deref() == Some("") {
            return Err(error("the verb after ':' is empty"));
        }

        let mut pieces = Vec::new();
        let mut variables = Vec::new();
        let mut literal_count = 0;
        let mut remaining = path;
        while !remaining.is_empty() {
            if let Some(inside) = remaining.strip_prefix('{') {
                let Some(close) = inside.find('}') else {
                    return Err(error("a '{' is not closed"));
                };
                let variable = &inside[..close];
                let (field_path, sub_template) = match variable.split_once('=') {
                    Some((field_path, sub_template)) => (field_path, sub_template),
                    None => (variable, "*"),
                };
                let valid_path = !field_path.is_empty()
                    && field_path.split('.').all(|ident| {
                        !ident.is_empty()
                            && ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    });
                if !valid_path {
                    return Err(error("a variable's field path is not IDENT{.IDENT}"));
                }
                if variables.iter().any(|existing| existing == field_path) {
                    return Err(error("a field is bound twice"));
                }
                variables.push(field_path.to_owned());
                pieces.push(Piece::VariableStart(field_path.to_owned()));
                for segment in sub_template.split('/') {
                    let piece = segment_piece(segment)
                        .ok_or_else(|| error("a variable's segment is invalid"))?;
                    if matches!(piece, Piece::Literal(_)) {
                        literal_count += 1;
                    }
                    pieces.push(piece);
                }
                pieces.push(Piece::VariableEnd);
                remaining = &inside[close + 1..];
            } else {
                let end = remaining.find('/').unwrap_or(remaining.len());
                let segment = &remaining[..end];
                let piece = segment_piece(segment)
                    .ok_or_else(|| error("a segment is empty or has braces"))?;
                if matches!(piece, Piece::Literal(_)) {
                    literal_count += 1;
                }
                pieces.push(piece);
                remaining = &remaining[end..];
            }
            if let Some(next) = remaining.strip_prefix('/') {
                if next.is_empty() {
                    return Err(error("it ends with /"));
                }
                remaining = next;
            } else if !remaining.is_empty() {
                return Err(error("a variable must be a whole segment"));
            }
        }
        let multi_positions: Vec<usize> = pieces
            .iter()
            .enumerate()
            .filter(|(_, piece)| **piece == Piece::Multi)
            .map(|(index, _)| index)
            .collect();
        let last_segment = pieces
            .iter()
            .rposition(|piece| !matches!(piece, Piece::VariableEnd | Piece::VariableStart(_)));
        if multi_positions.len() > 1
            || multi_positions
                .first()
                .is_some_and(|at| Some(*at) != last_segment)
        {
            return Err(error("** may only be the last segment"));
        }
        let mut literal_prefix = String::new();
        for piece in &pieces {
            let Piece::Literal(literal) = piece else {
                break;
            };
            literal_prefix.push('/');
            literal_prefix.push_str(literal);
        }
        Ok(PathTemplate {
            source: template.to_owned(),
            pieces,
            verb,
            variables,
            literal_count,
            literal_prefix,
        })
    }

    /// The template as written in the contract.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The field paths its variables bind (`channel.id`), in template order.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    /// The custom verb after the last `:` outside braces (`ban` in
    /// `/v1/users/{user_id}:ban`), if there is one.
    pub fn verb(&self) -> Option<&str> {
        self.verb.as_deref()
    }

    /// How many literal segments it has, those inside variables included;
    /// of two templates that match a path, the one with more wins.
    pub fn literal_count(&self) -> usize {
        self.literal_count
    }

    /// Matches a request path (as sent, percent-encoded) and returns the bound
    /// variables, decoded. Single-segment variables decode every escape;
    /// multi-segment ones keep `%2F` as a slash inside a segment.
    pub fn matches(&self, path: &str) -> Option<Bindings> {
        if !path.starts_with(self.literal_prefix.as_str()) && !path.contains('%') {
            return None;
        }
        let rest = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let segments: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let mut bindings = Vec::new();
        let mut open: Option<(String, Vec<String>)> = None;
        let mut position = 0;
        for piece in &self.pieces {
            match piece {
                Piece::Literal(literal) => {
                    let segment = segments.get(position)?;
                    if percent_decode(segment)?.as_ref() != literal {
                        return None;
                    }
                    if let Some((_, parts)) = open.as_mut() {
                        parts.push(literal.clone());
                    }
                    position += 1;
                }
                Piece::Single => {
                    let segment = segments.get(position)?;
                    if segment.is_empty() {
                        return None;
                    }
                    if let Some((_, parts)) = open.as_mut() {
                        parts.push(percent_decode(segment)?.into_owned());
                    }
                    position += 1;
                }
                Piece::Multi => {
                    let tail = &segments[position.min(segments.len())..];
                    let mut decoded_tail = Vec::with_capacity(tail.len());
                    for segment in tail {
                        decoded_tail.push(percent_decode_keep_slash(segment)?.into_owned());
                    }
                    if let Some((_, parts)) = open.as_mut() {
                        parts.extend(decoded_tail);
                    }
                    position = segments.len();
                }
                Piece::VariableStart(field) => open = Some((field.clone(), Vec::new())),
                Piece::VariableEnd => {
                    let (field, parts) = open.take()?;
                    let value = parts.join("/");
                    if value.is_empty() {
                        return None;
                    }
                    bindings.push((field, value));
                }
            }
        }
        if position != segments.len() {
            return None;
        }
        // A custom method (`…/{id}:ban`) is never read as an id ending in ":ban",
        // unless the template ends in `**`, which takes anything.
        let ends_in_multi = self
            .pieces
            .iter()
            .rev()
            .find(|piece| **piece != Piece::VariableEnd)
            == Some(&Piece::Multi);
        if self.verb.is_none()
            && !ends_in_multi
            && segments.last().is_some_and(|last| last.contains(':'))
        {
            return None;
        }
        Some(bindings)
    }
}

fn segment_piece(segment: &str) -> Option<Piece> {
    match segment {
        "" => None,
        "*" => Some(Piece::Single),
        "**" => Some(Piece::Multi),
        literal if literal.contains(['{', '}', '=']) => None,
        literal => Some(Piece::Literal(literal.to_owned())),
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
/// Text without escapes is borrowed as it is.
pub fn percent_decode(text: &str) -> Option<Cow<'_, str>> {
    if !text.contains('%') {
        return Some(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let high = hex_value(*bytes.get(index + 1)?)?;
            let low = hex_value(*bytes.get(index + 2)?)?;
            out.push(high * 16 + low);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn percent_decode_keep_slash(text: &str) -> Option<Cow<'_, str>> {
    if !text.contains('%') {
        return Some(Cow::Borrowed(text));
    }
    let protected = text.replace("%2F", "%252F").replace("%2f", "%252f");
    percent_decode(&protected).map(|decoded| Cow::Owned(decoded.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        PathTemplate::parse(template).unwrap().matches(path)
    }

    fn pairs(list: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn literals_and_simple_variables() {
        assert_eq!(bound("/v1/users/me", "/v1/users/me"), pairs(&[]));
        assert_eq!(
            bound("/v1/users/{user_id}", "/v1/users/abc"),
            pairs(&[("user_id", "abc")])
        );
        assert_eq!(bound("/v1/users/{user_id}", "/v1/users/abc/x"), None);
        assert_eq!(bound("/v1/users/{user_id}", "/v1/users"), None);
        assert_eq!(
            bound("/v1/users/{user_id}", "/v1/users/a%20b"),
            pairs(&[("user_id", "a b")])
        );
    }

    #[test]
    fn dotted_fields_and_sub_templates() {
        assert_eq!(
            bound("/v1/channels/{channel.id}", "/v1/channels/news"),
            pairs(&[("channel.id", "news")])
        );
        assert_eq!(
            bound(
                "/v1/{name=projects/*/topics/*}",
                "/v1/projects/p1/topics/t1"
            ),
            pairs(&[("name", "projects/p1/topics/t1")])
        );
        assert_eq!(
            bound(
                "/v1/{name=projects/*/topics/*}",
                "/v1/projects/p1/queues/t1"
            ),
            None
        );
        assert_eq!(
            bound("/files/{path=**}", "/files/a/b/c.txt"),
            pairs(&[("path", "a/b/c.txt")])
        );
    }

    #[test]
    fn escaped_literals_still_match() {
        assert_eq!(
            bound("/v1/users/{user_id}", "/v1/%75sers/u1"),
            pairs(&[("user_id", "u1")])
        );
        assert_eq!(bound("/v1/users/{user_id}", "/v1/channels/u1"), None);
        assert_eq!(bound("/v1/users/{user_id}", "/v1/user"), None);
    }

    #[test]
    fn verbs() {
        assert_eq!(
            bound("/v1/users/{user_id}:ban", "/v1/users/u1:ban"),
            pairs(&[("user_id", "u1")])
        );
        assert_eq!(bound("/v1/users/{user_id}:ban", "/v1/users/u1:unban"), None);
        assert_eq!(bound("/v1/users/{user_id}:ban", "/v1/users/u1"), None);
        assert_eq!(
            bound("/v1/users:batchGet", "/v1/users:batchGet"),
            pairs(&[])
        );
        assert_eq!(bound("/v1/users/{user_id}", "/v1/users/u1:ban"), None);
    }

    #[test]
    fn invalid_templates_are_refused() {
        for template in [
            "v1/x",
            "/v1/{",
            "/v1/{a}/{a}",
            "/v1/**/x",
            "/v1/x/",
            "/v1/{a b}",
            "/v1/x:",
        ] {
            assert!(PathTemplate::parse(template).is_err(), "{template}");
        }
    }

    #[test]
    fn more_literals_rank_higher() {
        let me = PathTemplate::parse("/v1/users/me").unwrap();
        let by_id = PathTemplate::parse("/v1/users/{user_id}").unwrap();
        assert!(me.literal_count() > by_id.literal_count());
    }
}
