//! One rule for the text every service stores, so that SQLite and PostgreSQL
//! answer the same: what a database can't hold is refused at the edge of the
//! service with `InvalidArgument`, naming the field.
//!
//! PostgreSQL can't store U+0000 in text (`invalid byte sequence for encoding
//! "UTF8": 0x00`); SQLite stores it and then cuts the text short in its own
//! functions. So no string field of any request may carry one.
//! [`CheckedStrings`] applies that to every string of every request of a
//! gRPC service, found from the contracts' descriptors: ids, names, bodies,
//! reasons, page tokens, whatever a message grows later.
//!
//! Text that ends up on one line of something clients parse (a playlist
//! entry, a guide title) is held to more: [`one_line`] also refuses control
//! characters and the Unicode line and paragraph separators, which
//! line-splitting parsers treat as new lines.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Frame;
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use crate::error::{ErrorCode, ServiceError};

/// Why a piece of text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The text holds a NUL character, which databases can't store.
    #[error(
        "{field} contains a NUL character (U+0000), which cannot be stored: remove it and send the request again"
    )]
    Nul {
        /// The field the text was sent in, as the caller names it.
        field: String,
    },
    /// Text that must be one line holds a control character or a line or
    /// paragraph separator.
    #[error(
        "{field} contains {character}, which would break the line it is shown on: {field} must be one line of text without control characters"
    )]
    LineBreak {
        /// The field the text was sent in, as the caller names it.
        field: String,
        /// The first such character, as a person reads it:
        /// `U+000A (line feed)`.
        character: String,
    },
}

/// An id that names something that exists is missing, or is text no id
/// is (too long, a control character, a slash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The field is empty.
    #[error("{field} is required")]
    Missing {
        /// The field, as the caller names it.
        field: String,
    },
    /// The field holds text that is no id.
    #[error("{field} {value:?} is not an id")]
    Malformed {
        /// The field, as the caller names it.
        field: String,
        /// What it holds.
        value: String,
    },
}

/// The longest id a reference may carry, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Checks an id that names something that must exist (a channel, a slot, a
/// comment): present, and not text that no id is. Whether it exists is the
/// service's to say.
pub fn require_id(field: &str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Missing {
            field: field.to_owned(),
        });
    }
    if value.len() > MAX_ID_BYTES || value.chars().any(|c| c.is_control() || c == '/') {
        return Err(IdError::Malformed {
            field: field.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(())
}

impl ServiceError for InputError {
    fn error_code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
}

impl From<InputError> for tonic::Status {
    fn from(error: InputError) -> Self {
        crate::error::into_status(error)
    }
}

/// Refuses what no database can store.
pub fn storable(field: &str, value: &str) -> Result<(), InputError> {
    if value.as_bytes().contains(&0) {
        return Err(InputError::Nul {
            field: field.to_owned(),
        });
    }
    Ok(())
}

/// Refuses what can't be stored, and anything that starts a new line for
/// some parser: control characters (CR, LF, tab, NEL U+0085…) and the line
/// and paragraph separators U+2028 and U+2029.
pub fn one_line(field: &str, value: &str) -> Result<(), InputError> {
    storable(field, value)?;
    if let Some(character) = value.chars().find(|character| breaks_line(*character)) {
        return Err(InputError::LineBreak {
            field: field.to_owned(),
            character: describe(character),
        });
    }
    Ok(())
}

/// Whether a character ends a line for some parser, or is a control
/// character that has no place on one.
pub fn breaks_line(character: char) -> bool {
    character.is_control() || matches!(character, '\u{2028}' | '\u{2029}')
}

/// A character as a person can read it in a message: `U+2028 (line separator)`.
fn describe(character: char) -> String {
    let name = match character {
        '\n' => " (line feed)",
        '\r' => " (carriage return)",
        '\t' => " (tab)",
        '\u{85}' => " (next line)",
        '\u{2028}' => " (line separator)",
        '\u{2029}' => " (paragraph separator)",
        _ => " (a control character)",
    };
    format!("U+{:04X}{name}", u32::from(character))
}

/// The fields of messages that nest this deep are not looked into; prost
/// refuses deeper messages anyway.
const MAX_DEPTH: usize = 100;

/// The first string field of an encoded message (and of the messages in it)
/// that holds a NUL, as a path a person can find it by
/// (`chatSettings.blockedTerms[2]`). Malformed input is left to the
/// decoder, which refuses it with its own message.
pub fn find_nul(message: &MessageDescriptor, encoded: &[u8]) -> Option<String> {
    // A NUL in a string is a zero byte in the encoding: a message without one
    // (nearly every request) needs no walk through its fields.
    memchr::memchr(0, encoded)?;
    find_nul_in(message, encoded, MAX_DEPTH)
}

fn find_nul_in(message: &MessageDescriptor, mut encoded: &[u8], depth: usize) -> Option<String> {
    // How many values each repeated field had so far, to name the one at fault.
    let mut seen: Vec<(u32, usize)> = Vec::new();
    while !encoded.is_empty() {
        let key = prost::encoding::decode_varint(&mut encoded).ok()?;
        let number = u32::try_from(key >> 3).ok()?;
        match key & 0b111 {
            0 => {
                prost::encoding::decode_varint(&mut encoded).ok()?;
            }
            1 => encoded = encoded.get(8..)?,
            5 => encoded = encoded.get(4..)?,
            2 => {
                let length =
                    usize::try_from(prost::encoding::decode_varint(&mut encoded).ok()?).ok()?;
                let value = encoded.get(..length)?;
                encoded = &encoded[length..];
                let Some(field) = message.get_field(number) else {
                    continue;
                };
                let index = if field.is_list() {
                    let count = match seen
                        .iter_mut()
                        .find(|(seen_number, _)| *seen_number == number)
                    {
                        Some((_, count)) => count,
                        None => {
                            seen.push((number, 0));
                            &mut seen.last_mut()?.1
                        }
                    };
                    *count += 1;
                    Some(*count - 1)
                } else {
                    None
                };
                let name = match index {
                    Some(index) => format!("{}[{index}]", field.json_name()),
                    None => field.json_name().to_owned(),
                };
                match field.kind() {
                    Kind::String if memchr::memchr(0, value).is_some() => return Some(name),
                    Kind::Message(nested) if depth > 0 => {
                        if let Some(inner) = find_nul_in(&nested, value, depth - 1) {
                            return Some(format!("{name}.{inner}"));
                        }
                    }
                    _ => {}
                }
            }
            // Groups (proto2) and unknown wire types: the decoder says what is wrong.
            _ => return None,
        }
    }
    None
}

/// A request extension saying that no string of the request's message
/// holds a NUL: code in this process that built the message (the gateway)
/// looked already, so [`CheckedStrings`] lets the request through without
/// a second pass over its body. Only [`StringsChecked::of_json_request`]
/// makes one, and being a type, not a header, nobody outside the process
/// can set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StringsChecked(());

impl StringsChecked {
    /// The mark for a message built from a request URI's path and query and
    /// a JSON body, if neither can put a NUL in a string. A URI carries a
    /// NUL only as `%00` (a raw one is not a valid URI), and JSON only as
    /// the escape `\u0000` (a raw control character is not valid in a JSON
    /// string), so looking for those two is enough and costs far less than
    /// walking the message. `None` when one might be there: [`CheckedStrings`]
    /// then finds it and refuses the request as it refuses any other,
    /// naming the field.
    pub fn of_json_request(path_and_query: &str, json_body: &[u8]) -> Option<StringsChecked> {
        let in_uri = holds(path_and_query.as_bytes(), b'%', b"00");
        let in_body = holds(json_body, b'\\', b"u0000");
        if in_uri || in_body {
            return None;
        }
        Some(StringsChecked(()))
    }
}

/// Whether `haystack` holds `first` followed by `rest`. Requests are short
/// and the first byte rare in them, so finding it with `memchr` costs less
/// than setting up a substring search.
fn holds(haystack: &[u8], first: u8, rest: &[u8]) -> bool {
    memchr::memchr_iter(first, haystack).any(|at| haystack[at + 1..].starts_with(rest))
}

/// The request message of each checked method, by path, looked up on every
/// call. FNV costs a few hundred instructions less a lookup than SipHash; the
/// keys are the contracts' own paths, fixed at start, so a client choosing
/// paths can't make them collide.
type MessagesByPath = HashMap<String, MessageDescriptor, fnv::FnvBuildHasher>;

/// The request message of every method of the contracts, by gRPC path
/// (`/onair.user.v1.UserService/GetUser`).
fn request_messages() -> &'static MessagesByPath {
    static MESSAGES: OnceLock<MessagesByPath> = OnceLock::new();
    MESSAGES.get_or_init(|| {
        let mut messages = MessagesByPath::default();
        let Ok(pool) = DescriptorPool::decode(onair_proto::FILE_DESCRIPTOR_SET) else {
            tracing::error!(
                "the embedded descriptor set does not decode; request strings go unchecked"
            );
            return messages;
        };
        for service in pool.services() {
            for method in service.methods() {
                let input = method.input();
                // A request with no text in it has nothing to check.
                if !holds_text(&input, &mut Vec::new()) {
                    continue;
                }
                let path = format!("/{}/{}", service.full_name(), method.name());
                messages.insert(path, input);
            }
        }
        messages
    })
}

/// Whether a message, or one nested in it, has a string field. `seen`
/// holds the messages looked into already, which also ends recursion.
fn holds_text(message: &MessageDescriptor, seen: &mut Vec<String>) -> bool {
    if seen.iter().any(|name| name == message.full_name()) {
        return false;
    }
    seen.push(message.full_name().to_owned());
    for field in message.fields() {
        let found = match field.kind() {
            Kind::String => true,
            Kind::Message(nested) => holds_text(&nested, seen),
            _ => false,
        };
        if found {
            return true;
        }
    }
    false
}

/// A gRPC service whose requests are refused with `InvalidArgument` when a
/// string field anywhere in them holds what can't be stored, before the
/// service sees them. Streams of requests are checked message by message.
#[derive(Clone)]
pub struct CheckedStrings<S> {
    inner: S,
    /// Messages longer than this are passed on unchecked, for the service's
    /// decoder to refuse: they are never buffered here.
    max_message_bytes: usize,
}

impl<S> CheckedStrings<S> {
    /// Checks the requests of `inner`, buffering messages of up to
    /// `max_message_bytes` bytes.
    pub fn new(inner: S, max_message_bytes: usize) -> CheckedStrings<S> {
        CheckedStrings {
            inner,
            max_message_bytes,
        }
    }
}

impl<S: NamedService> NamedService for CheckedStrings<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for CheckedStrings<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.extensions().get::<StringsChecked>().is_some() {
            return self.inner.call(request);
        }
        let Some(message) = request_messages().get(request.uri().path()) else {
            return self.inner.call(request);
        };
        let message = message.clone();
        let max_message_bytes = self.max_message_bytes;
        let request =
            request.map(|body| Body::new(CheckedBody::new(body, message, max_message_bytes)));
        self.inner.call(request)
    }
}

/// The gRPC header of each message: a compression flag and a length.
const FRAME_HEADER: usize = 5;

/// A request body that lets each gRPC message through once it has arrived
/// whole and its strings are fine. Every part of it is `Unpin` (tonic's
/// body is boxed), so it needs no pin projection.
struct CheckedBody {
    inner: Body,
    message: MessageDescriptor,
    max_message_bytes: usize,
    /// What arrived of messages not yet let through.
    pending: BytesMut,
    /// Set once a message can't be checked (compressed, too large): the rest
    /// passes as it comes, for the decoder to judge.
    unchecked: bool,
    trailers: Option<http::HeaderMap>,
    ended: bool,
}

impl CheckedBody {
    fn new(inner: Body, message: MessageDescriptor, max_message_bytes: usize) -> CheckedBody {
        CheckedBody {
            inner,
            message,
            max_message_bytes,
            pending: BytesMut::new(),
            unchecked: false,
            trailers: None,
            ended: false,
        }
    }
}

/// How many leading bytes of `buffer` are whole messages that may go on,
/// and whether the rest can't be checked; or the refusal of a message.
fn whole_messages(
    buffer: &[u8],
    message: &MessageDescriptor,
    max_message_bytes: usize,
) -> Result<(usize, bool), tonic::Status> {
    let mut offset = 0;
    while buffer.len() - offset >= FRAME_HEADER {
        let compressed = buffer[offset] != 0;
        let mut length_bytes = &buffer[offset + 1..offset + FRAME_HEADER];
        let length = usize::try_from(length_bytes.get_u32()).unwrap_or(usize::MAX);
        if compressed || length > max_message_bytes {
            return Ok((offset, true));
        }
        let end = offset + FRAME_HEADER + length;
        let Some(encoded) = buffer.get(offset + FRAME_HEADER..end) else {
            break;
        };
        if let Some(field) = find_nul(message, encoded) {
            return Err(InputError::Nul { field }.into());
        }
        offset = end;
    }
    Ok((offset, false))
}

impl http_body::Body for CheckedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        loop {
            if this.unchecked && !this.pending.is_empty() {
                let rest = this.pending.split().freeze();
                return Poll::Ready(Some(Ok(Frame::data(rest))));
            }
            if !this.unchecked && !this.pending.is_empty() {
                let (whole, unchecked) =
                    whole_messages(&this.pending, &this.message, this.max_message_bytes)?;
                this.unchecked = unchecked;
                if whole > 0 {
                    let ready = this.pending.split_to(whole).freeze();
                    return Poll::Ready(Some(Ok(Frame::data(ready))));
                }
                if unchecked {
                    continue;
                }
            }
            if this.ended {
                if !this.pending.is_empty() {
                    // A message cut short: the decoder says so.
                    let rest = this.pending.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                return Poll::Ready(
                    this.trailers
                        .take()
                        .map(|trailers| Ok(Frame::trailers(trailers))),
                );
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.ended = true;
                    continue;
                }
                Poll::Ready(Some(Err(status))) => return Poll::Ready(Some(Err(status))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        this.trailers = Some(trailers);
                    }
                    continue;
                }
            };
            if this.unchecked {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if this.pending.is_empty() {
                // The usual case: a chunk of whole messages goes on as it is.
                let (whole, unchecked) =
                    whole_messages(&data, &this.message, this.max_message_bytes)?;
                if whole == data.len() {
                    this.unchecked = unchecked;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            }
            this.pending.extend_from_slice(&data);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.pending.is_empty() && !self.ended {
            return self.inner.size_hint();
        }
        http_body::SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn descriptor(name: &str) -> MessageDescriptor {
        DescriptorPool::decode(onair_proto::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name(name)
            .unwrap()
    }

    #[test]
    fn a_nul_anywhere_in_a_request_is_found_by_its_field() {
        let batch = onair_proto::user::v1::BatchGetUsersRequest {
            user_ids: vec!["ann".to_owned(), "b\0b".to_owned()],
        };
        let found = find_nul(
            &descriptor("onair.user.v1.BatchGetUsersRequest"),
            &batch.encode_to_vec(),
        );
        assert_eq!(found.as_deref(), Some("userIds[1]"));

        let settings = onair_proto::comment::v1::UpdateChatSettingsRequest {
            channel_id: "news".to_owned(),
            chat_settings: Some(onair_proto::comment::v1::ChatSettings {
                blocked_terms: vec!["fine".to_owned(), "\0".to_owned()],
                slow_mode_seconds: 10,
                ..Default::default()
            }),
        };
        let found = find_nul(
            &descriptor("onair.comment.v1.UpdateChatSettingsRequest"),
            &settings.encode_to_vec(),
        );
        assert_eq!(found.as_deref(), Some("chatSettings.blockedTerms[1]"));

        let clean = onair_proto::user::v1::GetUserRequest {
            user_id: "ann".to_owned(),
        };
        let found = find_nul(
            &descriptor("onair.user.v1.GetUserRequest"),
            &clean.encode_to_vec(),
        );
        assert_eq!(found, None);
    }

    #[test]
    fn only_requests_that_cannot_carry_a_nul_are_marked_checked() {
        let clean = br#"{"chatSettings": {"blockedTerms": ["fine", "no escape"]}}"#;
        assert!(StringsChecked::of_json_request("/v1/channels/news/chatSettings", clean).is_some());
        assert!(StringsChecked::of_json_request("/v1/users/a%2500b?x=%2500", b"").is_some());
        let nested = br#"{"chatSettings": {"blockedTerms": ["fine", "\u0000"]}}"#;
        assert!(
            StringsChecked::of_json_request("/v1/channels/news/chatSettings", nested).is_none()
        );
        assert!(StringsChecked::of_json_request("/v1/users/a%00b", b"").is_none());
        assert!(StringsChecked::of_json_request("/v1/programs?pageToken=%00", b"").is_none());
    }

    #[test]
    fn every_request_with_text_is_checked() {
        let messages = request_messages();
        for path in [
            "/onair.user.v1.UserService/GetUser",
            "/onair.user.v1.UserService/CreateUser",
            "/onair.comment.v1.CommentService/PostComment",
            "/onair.comment.v1.CommentService/UpdateChatSettings",
            "/onair.media.v1.MediaService/ImportSchedule",
            "/onair.playout.v1.PlayoutService/UploadAsset",
        ] {
            assert!(messages.contains_key(path), "{path}");
        }
        assert!(!messages.contains_key("/onair.user.v1.UserService/GetJwks"));
    }

    #[test]
    fn names_for_one_line_refuse_what_starts_a_new_line() {
        assert!(one_line("name", "News 24 — 日本").is_ok());
        for bad in [
            "a\nb",
            "a\rb",
            "a\u{85}b",
            "a\u{2028}b",
            "a\u{2029}b",
            "a\tb",
            "a\u{1b}b",
        ] {
            let error = one_line("name", bad).expect_err(bad);
            assert!(error.to_string().starts_with("name contains U+"), "{error}");
        }
        let nul = one_line("name", "a\0b").expect_err("nul");
        assert!(matches!(nul, InputError::Nul { .. }));
        assert!(storable("description", "two\nlines").is_ok());
    }

    fn frame(message: &impl prost::Message) -> Vec<u8> {
        let encoded = message.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(&encoded);
        framed
    }

    #[test]
    fn messages_go_on_whole_and_checked() {
        let message = descriptor("onair.user.v1.GetUserRequest");
        let good = frame(&onair_proto::user::v1::GetUserRequest {
            user_id: "ann".to_owned(),
        });
        let bad = frame(&onair_proto::user::v1::GetUserRequest {
            user_id: "\0".to_owned(),
        });
        assert_eq!(
            whole_messages(&good, &message, 1024).unwrap(),
            (good.len(), false)
        );
        let half = &good[..good.len() - 1];
        assert_eq!(whole_messages(half, &message, 1024).unwrap(), (0, false));
        let mut two = good.clone();
        two.extend_from_slice(&bad);
        let refused = whole_messages(&two, &message, 1024).expect_err("the second has a NUL");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().starts_with("userId contains a NUL"),
            "{}",
            refused.message()
        );
        assert_eq!(whole_messages(&good, &message, 2).unwrap(), (0, true));
    }
}
