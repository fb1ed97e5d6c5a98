//! The server side of a WebSocket (RFC 6455), as the live sockets need it.
//!
//! A live frame goes to every viewer of a channel, so it is framed once: the
//! hub builds the header and payload of one text message, and each connection
//! writes those shared bytes to its socket as they are. A general WebSocket
//! library copies every message into a buffer of its own first, once per
//! connection: at ten thousand viewers that copy was an eighth of the core.
//!
//! Viewers have nothing to say on the live stream, so what a client sends is
//! checked and bounded but not kept: data messages are dropped, pings are
//! answered, pongs are reported, and a close is answered and ends the
//! connection. Server frames are never masked and never fragmented, and no
//! extension (compression) is negotiated.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

pub(crate) const OPCODE_CONTINUATION: u8 = 0x0;
pub(crate) const OPCODE_TEXT: u8 = 0x1;
pub(crate) const OPCODE_BINARY: u8 = 0x2;
pub(crate) const OPCODE_CLOSE: u8 = 0x8;
pub(crate) const OPCODE_PING: u8 = 0x9;
pub(crate) const OPCODE_PONG: u8 = 0xA;

/// A ping with no payload, as a server sends it.
pub(crate) const PING: &[u8] = &[0x80 | OPCODE_PING, 0];

/// Control frames carry at most this much (RFC 6455, 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// A read buffer that grew for a large message is let go once it is empty,
/// so an idle connection holds a few bytes, not the largest message it read.
const KEPT_READ_CAPACITY: usize = 4 * 1024;

/// Close codes (RFC 6455, 7.4.1).
pub(crate) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

/// A request to open a WebSocket, checked: HTTP/1.1 `GET` with
/// `Upgrade: websocket`, or HTTP/2's extended `CONNECT` (RFC 8441).
pub(crate) struct Upgrade {
    /// `Sec-WebSocket-Key`, which only HTTP/1.1 sends.
    key: Option<HeaderValue>,
    on_upgrade: OnUpgrade,
}

impl Upgrade {
    /// The upgrade this request asks for, or what is wrong with it.
    pub(crate) fn from_request(parts: &mut http::request::Parts) -> Result<Upgrade, &'static str> {
        let key = if parts.version <= Version::HTTP_11 {
            if parts.method != Method::GET {
                return Err("a WebSocket opens with GET");
            }
            if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
                return Err("a WebSocket needs Connection: upgrade");
            }
            if !header_has_token(&parts.headers, header::UPGRADE, "websocket") {
                return Err("a WebSocket needs Upgrade: websocket");
            }
            let key = parts
                .headers
                .get(header::SEC_WEBSOCKET_KEY)
                .ok_or("a WebSocket needs Sec-WebSocket-Key")?;
            Some(key.clone())
        } else {
            let protocol = parts.extensions.get::<hyper::ext::Protocol>();
            if parts.method != Method::CONNECT
                || protocol.is_none_or(|protocol| protocol.as_str() != "websocket")
            {
                return Err("a WebSocket over HTTP/2 opens with CONNECT and :protocol websocket");
            }
            None
        };
        let version = parts.headers.get(header::SEC_WEBSOCKET_VERSION);
        if version.is_none_or(|version| version.as_bytes() != b"13") {
            return Err("a WebSocket needs Sec-WebSocket-Version: 13");
        }
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or("this connection cannot be upgraded to a WebSocket")?;
        Ok(Upgrade { key, on_upgrade })
    }

    /// Accepts the upgrade: the response to send, and `serve` run on the
    /// socket once the client has it.
    pub(crate) fn accept<F, Fut>(self, max_message: usize, serve: F) -> axum::response::Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => serve(Socket::new(upgraded, max_message)).await,
                Err(error) => tracing::debug!(error = %error, "a WebSocket upgrade failed"),
            }
        });
        // HTTP/1.1 switches protocols; over HTTP/2 the answer is a plain 200
        // (RFC 8441, 5).
        let mut response = axum::response::Response::new(axum::body::Body::empty());
        if let Some(key) = &self.key {
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept_key(key.as_bytes()));
        }
        response
    }
}

/// Whether a comma-separated header holds `token`, in any case.
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455, 4.2.2).
fn accept_key(key: &[u8]) -> HeaderValue {
    use base64::Engine as _;
    use sha1::Digest as _;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut hash = sha1::Sha1::new();
    hash.update(key);
    hash.update(GUID);
    let encoded = base64::engine::general_purpose::STANDARD.encode(hash.finalize());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// One frame's bytes: header and payload, unmasked, as a server sends it.
pub(crate) fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_length(payload.len()) + payload.len());
    put_header(&mut out, opcode, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// The length of the header of a server frame of `payload` bytes.
pub(crate) fn header_length(payload: usize) -> usize {
    match payload {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Writes the header of a final, unmasked frame of `payload` bytes; the
/// payload follows it.
pub(crate) fn put_header(out: &mut BytesMut, opcode: u8, payload: usize) {
    out.put_u8(0x80 | opcode);
    match payload {
        0..=125 => out.put_u8(payload as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(payload as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(payload as u64);
        }
    }
}

/// A close frame with its code and a reason, cut to fit a control frame.
pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OPCODE_CLOSE, &payload)
}

/// The answer to a client's close frame: its code echoed, as the closing
/// handshake asks, unless it is one of the codes that only report a close
/// that had no frame (RFC 6455, 7.4).
pub(crate) fn close_reply(code: Option<u16>) -> Bytes {
    match code {
        Some(code @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => close_frame(code, ""),
        _ => frame(OPCODE_CLOSE, &[]),
    }
}

/// What a client sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A data frame, dropped: viewers have nothing to say on this stream.
    Data,
    /// A ping, with the payload the pong must echo.
    Ping(Bytes),
    Pong,
    /// The client closes, with its code if it gave one.
    Close(Option<u16>),
}

/// Why reading from a client stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The connection ended or failed.
    Gone,
    /// The client broke the protocol; close with this code and reason.
    Refused(u16, &'static str),
}

type Io = TokioIo<Upgraded>;

/// An open WebSocket with a client, in two halves: the connection's task reads
/// what the client sends while its channel's hub writes to it.
pub(crate) struct Socket {
    pub(crate) reader: SocketReader,
    pub(crate) writer: SocketWriter,
}

impl Socket {
    fn new(upgraded: Upgraded, max_message: usize) -> Socket {
        let (read, write) = tokio::io::split(TokioIo::new(upgraded));
        Socket {
            reader: SocketReader {
                io: read,
                frames: FrameReader::new(max_message),
            },
            writer: SocketWriter { io: write },
        }
    }
}

/// The reading half of a WebSocket.
pub(crate) struct SocketReader {
    io: ReadHalf<Io>,
    frames: FrameReader,
}

impl SocketReader {
    /// The next frame from the client. Cancel-safe: nothing is lost if the
    /// future is dropped before it resolves.
    pub(crate) async fn recv(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(incoming) = self.frames.next_frame()? {
                return Ok(incoming);
            }
            match self.io.read_buf(&mut self.frames.read).await {
                Ok(0) | Err(_) => return Err(ReadError::Gone),
                Ok(_) => {}
            }
        }
    }
}

/// The writing half of a WebSocket.
pub(crate) struct SocketWriter {
    io: WriteHalf<Io>,
}

/// How much of a write that may not wait the socket took.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Everything.
    All,
    /// This many bytes, then the socket was full.
    Part(usize),
    /// The connection failed.
    Failed,
}

impl SocketWriter {
    /// Writes whole frames, several in one system call (a vectored write)
    /// where the socket takes them all.
    pub(crate) async fn write(&mut self, frames: &[Bytes]) -> std::io::Result<()> {
        if let [frame] = frames {
            return self.io.write_all(frame).await;
        }
        let mut slices: Vec<IoSlice<'_>> = frames.iter().map(|frame| IoSlice::new(frame)).collect();
        let mut unwritten = &mut slices[..];
        while !unwritten.is_empty() {
            let written = self.io.write_vectored(unwritten).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut unwritten, written);
        }
        Ok(())
    }

    /// Writes what the socket takes of `frames` now, without waiting for room
    /// and without being woken when there is some: whoever writes the rest
    /// waits for that.
    pub(crate) fn write_now(&mut self, frames: &[Bytes]) -> Taken {
        let mut context = Context::from_waker(Waker::noop());
        let mut slices: Vec<IoSlice<'_>>;
        let mut unwritten: &mut [IoSlice<'_>] = match frames {
            // One frame, the common case, is a plain write: no list of slices
            // to build, and a cheaper system call.
            [frame] => return write_now_one(Pin::new(&mut self.io), &mut context, frame),
            _ => {
                slices = frames.iter().map(|frame| IoSlice::new(frame)).collect();
                &mut slices
            }
        };
        let mut taken = 0;
        while !unwritten.is_empty() {
            match Pin::new(&mut self.io).poll_write_vectored(&mut context, unwritten) {
                Poll::Ready(Ok(0) | Err(_)) => return Taken::Failed,
                Poll::Ready(Ok(written)) => {
                    taken += written;
                    IoSlice::advance_slices(&mut unwritten, written);
                }
                Poll::Pending => return Taken::Part(taken),
            }
        }
        Taken::All
    }

    /// Ends the TCP connection after the closing handshake.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

fn write_now_one(
    mut io: Pin<&mut WriteHalf<Io>>,
    context: &mut Context<'_>,
    frame: &[u8],
) -> Taken {
    let mut taken = 0;
    while taken < frame.len() {
        match io.as_mut().poll_write(context, &frame[taken..]) {
            Poll::Ready(Ok(0) | Err(_)) => return Taken::Failed,
            Poll::Ready(Ok(written)) => taken += written,
            Poll::Pending => return Taken::Part(taken),
        }
    }
    Taken::All
}

/// What is left of `frames` once the first `taken` bytes are written.
pub(crate) fn rest(frames: &[Bytes], mut taken: usize) -> Vec<Bytes> {
    let mut left = Vec::new();
    for frame in frames {
        if taken >= frame.len() {
            taken -= frame.len();
            continue;
        }
        left.push(frame.slice(taken..));
        taken = 0;
    }
    left
}

/// Cuts what a client sends into frames.
struct FrameReader {
    /// What the client sent that is not yet a whole frame.
    read: BytesMut,
    /// The largest data message a client may send.
    max_message: usize,
    /// Bytes so far of a data message sent in fragments.
    message_bytes: usize,
    /// A fragmented data message is in progress.
    in_message: bool,
}

impl FrameReader {
    fn new(max_message: usize) -> FrameReader {
        FrameReader {
            read: BytesMut::new(),
            max_message,
            message_bytes: 0,
            in_message: false,
        }
    }

    /// Takes one whole frame off the read buffer, if there is one.
    fn next_frame(&mut self) -> Result<Option<Incoming>, ReadError> {
        let Some(head) = parse_head(&self.read)? else {
            return Ok(None);
        };
        let control = head.opcode >= OPCODE_CLOSE;
        if control {
            if !head.fin || head.length > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ReadError::Refused(
                    CLOSE_PROTOCOL_ERROR,
                    "control frames must be whole and at most 125 bytes",
                ));
            }
        } else {
            let continuation = head.opcode == OPCODE_CONTINUATION;
            if continuation != self.in_message {
                return Err(ReadError::Refused(
                    CLOSE_PROTOCOL_ERROR,
                    "a message must end before the next begins, and only a message in parts has continuations",
                ));
            }
            let total = (self.message_bytes as u64).saturating_add(head.length);
            if total > self.max_message as u64 {
                return Err(ReadError::Refused(
                    CLOSE_TOO_BIG,
                    "message too big: the live stream takes no data from viewers",
                ));
            }
        }
        // Bounded above: a control frame's 125 bytes or the largest message.
        let needed = head.header + head.length as usize;
        if self.read.len() < needed {
            self.read.reserve(needed - self.read.len());
            return Ok(None);
        }
        let mut frame = self.read.split_to(needed);
        if self.read.is_empty() && self.read.capacity() > KEPT_READ_CAPACITY {
            self.read = BytesMut::new();
        }
        frame.advance(head.header);
        if !control {
            self.in_message = !head.fin;
            self.message_bytes = if head.fin {
                0
            } else {
                self.message_bytes + frame.len()
            };
            return Ok(Some(Incoming::Data));
        }
        for (index, byte) in frame.iter_mut().enumerate() {
            *byte ^= head.mask[index % 4];
        }
        match head.opcode {
            OPCODE_PING => Ok(Some(Incoming::Ping(frame.freeze()))),
            OPCODE_PONG => Ok(Some(Incoming::Pong)),
            _ => match frame.len() {
                0 => Ok(Some(Incoming::Close(None))),
                1 => Err(ReadError::Refused(
                    CLOSE_PROTOCOL_ERROR,
                    "a close frame's code takes two bytes",
                )),
                _ => Ok(Some(Incoming::Close(Some(u16::from_be_bytes([
                    frame[0], frame[1],
                ]))))),
            },
        }
    }
}

/// The header of a client frame.
struct Head {
    fin: bool,
    opcode: u8,
    length: u64,
    mask: [u8; 4],
    /// Header bytes, mask included.
    header: usize,
}

/// Reads a client frame's header, if all of it is here.
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, ReadError> {
    let [first, second, rest @ ..] = buffer else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(ReadError::Refused(
            CLOSE_PROTOCOL_ERROR,
            "reserved bits are set, but no extension was agreed",
        ));
    }
    let opcode = first & 0x0F;
    if !matches!(
        opcode,
        OPCODE_CONTINUATION
            | OPCODE_TEXT
            | OPCODE_BINARY
            | OPCODE_CLOSE
            | OPCODE_PING
            | OPCODE_PONG
    ) {
        return Err(ReadError::Refused(CLOSE_PROTOCOL_ERROR, "unknown opcode"));
    }
    if second & 0x80 == 0 {
        return Err(ReadError::Refused(
            CLOSE_PROTOCOL_ERROR,
            "frames from a client must be masked",
        ));
    }
    let (length, extended) = match second & 0x7F {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(bytes) => {
                let mut length = [0; 8];
                length.copy_from_slice(bytes);
                (u64::from_be_bytes(length), 8)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    let Some(mask) = rest.get(extended..extended + 4) else {
        return Ok(None);
    };
    Ok(Some(Head {
        fin: first & 0x80 != 0,
        opcode,
        length,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        header: 2 + extended + 4,
    }))
}

/// The opcode and payload of one server frame, for tests.
#[cfg(test)]
pub(crate) fn unframe(bytes: &[u8]) -> (u8, &[u8]) {
    let (length, start) = match bytes[1] {
        126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
        127 => {
            let mut length = [0; 8];
            length.copy_from_slice(&bytes[2..10]);
            (u64::from_be_bytes(length) as usize, 10)
        }
        short => (usize::from(short), 2),
    };
    assert_eq!(bytes.len(), start + length, "one whole frame");
    (bytes[0] & 0x0F, &bytes[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as browsers send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            0..=125 => out.push(0x80 | payload.len() as u8),
            126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(index, byte)| byte ^ mask[index % 4]),
        );
        out
    }

    /// Feeds `bytes` to a reader one byte at a time, as a slow network
    /// might, and collects what it reads.
    fn read_all(bytes: &[u8], max_message: usize) -> Result<Vec<Incoming>, ReadError> {
        let mut reader = FrameReader::new(max_message);
        let mut out = Vec::new();
        for byte in bytes {
            reader.read.put_u8(*byte);
            while let Some(incoming) = reader.next_frame()? {
                out.push(incoming);
            }
        }
        Ok(out)
    }

    #[test]
    fn server_frames_use_the_shortest_length_encoding() {
        for (length, header) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let payload = vec![b'x'; length];
            let bytes = frame(OPCODE_TEXT, &payload);
            assert_eq!(bytes.len(), header + length);
            assert_eq!(header_length(length), header);
            assert_eq!(bytes[0], 0x81, "final text frame");
            assert_eq!(unframe(&bytes), (OPCODE_TEXT, payload.as_slice()));
        }
    }

    #[test]
    fn the_rest_of_a_partial_write_starts_where_the_socket_stopped() {
        let frames = [Bytes::from_static(b"abc"), Bytes::from_static(b"defg")];
        assert_eq!(rest(&frames, 0), frames);
        assert_eq!(rest(&frames, 2), [&b"c"[..], &b"defg"[..]]);
        assert_eq!(rest(&frames, 3), [&b"defg"[..]]);
        assert_eq!(rest(&frames, 5), [&b"fg"[..]]);
        assert!(rest(&frames, 7).is_empty());
    }

    #[test]
    fn the_ping_is_a_whole_frame() {
        assert_eq!(unframe(PING), (OPCODE_PING, &[][..]));
        assert_eq!(PING, &frame(OPCODE_PING, &[])[..]);
    }

    #[test]
    fn a_close_reason_is_cut_to_fit_a_control_frame_on_a_character_boundary() {
        let reason = "é".repeat(100);
        let bytes = close_frame(1012, &reason);
        let (opcode, payload) = unframe(&bytes);
        assert_eq!(opcode, OPCODE_CLOSE);
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1012);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    #[test]
    fn a_close_is_answered_with_its_code_unless_that_code_may_not_be_sent() {
        let code_of = |bytes: Bytes| {
            let (opcode, payload) = unframe(&bytes);
            assert_eq!(opcode, OPCODE_CLOSE);
            payload.to_vec()
        };
        assert_eq!(code_of(close_reply(Some(1001))), 1001u16.to_be_bytes());
        assert_eq!(code_of(close_reply(Some(4000))), 4000u16.to_be_bytes());
        assert!(code_of(close_reply(Some(1005))).is_empty());
        assert!(code_of(close_reply(None)).is_empty());
    }

    #[test]
    fn the_accept_key_is_the_one_in_the_rfc() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn client_frames_are_read_whatever_their_size_and_pieces() {
        let mut bytes = client_frame(true, OPCODE_PING, b"are you there");
        bytes.extend(client_frame(true, OPCODE_TEXT, &vec![b'a'; 300]));
        bytes.extend(client_frame(false, OPCODE_TEXT, b"part one, "));
        bytes.extend(client_frame(true, OPCODE_PONG, b""));
        bytes.extend(client_frame(true, OPCODE_CONTINUATION, b"part two"));
        bytes.extend(client_frame(true, OPCODE_CLOSE, &1000u16.to_be_bytes()));
        assert_eq!(
            read_all(&bytes, 64 * 1024),
            Ok(vec![
                Incoming::Ping(Bytes::from_static(b"are you there")),
                Incoming::Data,
                Incoming::Data,
                Incoming::Pong,
                Incoming::Data,
                Incoming::Close(Some(1000)),
            ])
        );
    }

    #[test]
    fn broken_or_oversized_client_frames_are_refused_with_the_right_code() {
        let unmasked = [0x81, 0x02, b'h', b'i'];
        let refused = |result: Result<Vec<Incoming>, ReadError>| match result {
            Err(ReadError::Refused(code, _)) => code,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(refused(read_all(&unmasked, 1024)), CLOSE_PROTOCOL_ERROR);
        let too_big = client_frame(true, OPCODE_BINARY, &vec![0; 2048]);
        assert_eq!(refused(read_all(&too_big, 1024)), CLOSE_TOO_BIG);
        // In parts, the whole message counts.
        let mut in_parts = client_frame(false, OPCODE_TEXT, &[b'a'; 600]);
        in_parts.extend(client_frame(true, OPCODE_CONTINUATION, &[b'a'; 600]));
        assert_eq!(refused(read_all(&in_parts, 1024)), CLOSE_TOO_BIG);
        let long_ping = client_frame(true, OPCODE_PING, &[0; 126]);
        assert_eq!(refused(read_all(&long_ping, 1024)), CLOSE_PROTOCOL_ERROR);
        let stray = client_frame(true, OPCODE_CONTINUATION, b"x");
        assert_eq!(refused(read_all(&stray, 1024)), CLOSE_PROTOCOL_ERROR);
        let compressed = [0xC1, 0x80, 0, 0, 0, 0];
        assert_eq!(refused(read_all(&compressed, 1024)), CLOSE_PROTOCOL_ERROR);
        let unknown = client_frame(true, 0x3, b"");
        assert_eq!(refused(read_all(&unknown, 1024)), CLOSE_PROTOCOL_ERROR);
    }
}
