//! Frames: a channel's events as JSON, batched into frames that are encoded
//! once per transport (a WebSocket text message holding a JSON array, or
//! server-sent events) and shared by every connection, and the control
//! events (`ready`, `reset`, `lagged`, `closing`) a connection gets alone.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::websocket;

/// One event, as JSON, ready to send.
#[derive(Clone)]
pub(super) struct Event {
    /// Its position in the hub (see the hub's `position`).
    pub(super) offset: u64,
    /// Its offset on the wire: the live stream's sequence.
    pub(super) sequence: u64,
    /// The epoch of that sequence.
    pub(super) epoch: u64,
    pub(super) json: Bytes,
}

/// Why a connection is told `reset`: events after its offset may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResetReason {
    /// The resume asked for events older than the history holds.
    History,
    /// The resume named another epoch of the live stream.
    Epoch,
    /// The resume named an offset the live stream has not reached.
    Ahead,
    /// Live delivery was down; events published meanwhile may be missing.
    Interrupted,
}

impl ResetReason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ResetReason::History => "history",
            ResetReason::Epoch => "epoch",
            ResetReason::Ahead => "ahead",
            ResetReason::Interrupted => "interrupted",
        }
    }

    pub(super) fn message(self) -> &'static str {
        match self {
            ResetReason::History => {
                "some events after the requested offset are no longer kept; reload the channel's state"
            }
            ResetReason::Epoch => {
                "the live stream started over (the station or its message broker restarted), so events after the requested offset may be missing; reload the channel's state and go on from here"
            }
            ResetReason::Ahead => {
                "the requested offset is ahead of the live stream, which must have started over; reload the channel's state and go on from here"
            }
            ResetReason::Interrupted => {
                "live delivery was interrupted (the message broker could not be reached), so events may be missing; reload the channel's state"
            }
        }
    }
}

/// A batch of events, encoded once per transport.
pub(super) struct EventFrame {
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) events: Vec<Event>,
    /// A JSON array of the events as one WebSocket text frame, header
    /// included: written to every connection as it is.
    pub(super) websocket: Bytes,
    /// The events as server-sent events.
    pub(super) sse: Bytes,
}

impl EventFrame {
    pub(super) fn new(events: Vec<Event>) -> EventFrame {
        let first = events.first().map_or(0, |event| event.offset);
        let last = events.last().map_or(0, |event| event.offset);
        EventFrame {
            first,
            last,
            websocket: text_message(&events),
            sse: sse_events(&events),
            events,
        }
    }
}

/// How a connection receives frames.
#[derive(Clone, Copy)]
pub(super) enum Transport {
    WebSocket,
    Sse,
}

impl Transport {
    /// A whole frame, as every connection of this transport gets it.
    fn shared(self, frame: &EventFrame) -> Bytes {
        match self {
            Transport::WebSocket => frame.websocket.clone(),
            Transport::Sse => frame.sse.clone(),
        }
    }

    /// Some of a frame's events, put together for one connection.
    fn encode(self, events: &[Event]) -> Bytes {
        match self {
            Transport::WebSocket => text_message(events),
            Transport::Sse => sse_events(events),
        }
    }
}

/// What a connection that has every event up to offset `sent` still needs
/// of `frames`: each frame as its shared bytes, or, for a frame it has partly
/// seen (right after a resume), the rest of it encoded for it alone. Returns
/// the bytes, how many events they carry and the newest offset among them.
pub(super) fn unseen(
    frames: &[Arc<EventFrame>],
    sent: u64,
    transport: Transport,
) -> (Vec<Bytes>, usize, u64) {
    let mut out = Vec::with_capacity(frames.len());
    let mut events = 0;
    let mut newest = sent;
    for frame in frames {
        if frame.last <= newest {
            continue;
        }
        if frame.first > newest {
            out.push(transport.shared(frame));
            events += frame.events.len();
        } else {
            let rest: Vec<Event> = frame
                .events
                .iter()
                .filter(|event| event.offset > newest)
                .cloned()
                .collect();
            events += rest.len();
            out.push(transport.encode(&rest));
        }
        newest = frame.last;
    }
    (out, events, newest)
}

/// A WebSocket text frame holding the events as a JSON array. The events'
/// JSON comes from serde_json, so the text is UTF-8.
pub(super) fn text_message(events: &[Event]) -> Bytes {
    let commas = events.len().saturating_sub(1);
    let length = events.iter().map(|event| event.json.len()).sum::<usize>() + commas + 2;
    let mut out = BytesMut::with_capacity(websocket::header_length(length) + length);
    websocket::put_header(&mut out, websocket::OPCODE_TEXT, length);
    out.put_u8(b'[');
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&event.json);
    }
    out.put_u8(b']');
    out.freeze()
}

/// The events as server-sent events, each with its `EPOCH:OFFSET` id.
pub(super) fn sse_events(events: &[Event]) -> Bytes {
    let mut out = BytesMut::new();
    for event in events {
        sse_event(
            &mut out,
            Some((event.epoch, event.sequence)),
            event_type(&event.json),
            &event.json,
        );
    }
    out.freeze()
}

/// The `type` of an event's JSON, which always starts `{"type":"…"`.
fn event_type(json: &[u8]) -> &str {
    json.strip_prefix(br#"{"type":""#)
        .and_then(|rest| {
            let end = rest.iter().position(|byte| *byte == b'"')?;
            std::str::from_utf8(&rest[..end]).ok()
        })
        .unwrap_or("message")
}

/// One server-sent event; its id, if any, is `EPOCH:OFFSET`, which a browser
/// sends back as `Last-Event-ID` when it reconnects.
pub(super) fn sse_event(out: &mut BytesMut, id: Option<(u64, u64)>, kind: &str, data: &[u8]) {
    if let Some((epoch, sequence)) = id {
        out.put_slice(format!("id: {epoch}:{sequence}\n").as_bytes());
    }
    out.put_slice(format!("event: {kind}\ndata: ").as_bytes());
    // JSON from serde_json holds no raw newlines.
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

/// A control event for one connection, at a wire offset of an epoch. The
/// epoch is a string: its microseconds do not fit a JavaScript number.
pub(super) fn control(kind: &str, (epoch, offset): (u64, u64), extra: serde_json::Value) -> Bytes {
    let mut event = serde_json::json!({"type": kind, "offset": offset, "epoch": epoch.to_string()});
    if let (Some(event), serde_json::Value::Object(extra)) = (event.as_object_mut(), extra) {
        event.extend(extra);
    }
    Bytes::from(serde_json::to_vec(&event).unwrap_or_default())
}

/// A control event for one connection only, outside the hub's positions.
pub(super) fn connection_event(json: Bytes) -> Event {
    Event {
        offset: 0,
        sequence: 0,
        epoch: 0,
        json,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::live) const EPOCH: u64 = 1_764_000_000_000_000;

    pub(in crate::live) fn event(offset: u64) -> Event {
        Event {
            offset,
            sequence: offset,
            epoch: EPOCH,
            json: Bytes::from(format!(
                r#"{{"type":"comment","offset":{offset},"data":{{}}}}"#
            )),
        }
    }

    #[test]
    fn frames_carry_their_events_in_both_encodings() {
        let frame = EventFrame::new(vec![event(3), event(7)]);
        assert_eq!((frame.first, frame.last), (3, 7));
        let (opcode, text) = websocket::unframe(&frame.websocket);
        assert_eq!(opcode, websocket::OPCODE_TEXT);
        let parsed: serde_json::Value = serde_json::from_slice(text).unwrap();
        assert_eq!(parsed[1]["offset"], 7);
        let sse = std::str::from_utf8(&frame.sse).unwrap();
        assert!(sse.starts_with(&format!("id: {EPOCH}:3\nevent: comment\ndata: {{")));
        assert!(sse.contains(&format!("\n\nid: {EPOCH}:7\n")));
    }

    #[test]
    fn a_frame_partly_seen_is_finished_for_that_connection_alone() {
        let frames = [
            Arc::new(EventFrame::new(vec![event(1), event(2)])),
            Arc::new(EventFrame::new(vec![event(3), event(4), event(5)])),
            Arc::new(EventFrame::new(vec![event(6)])),
        ];
        let (bytes, events, newest) = unseen(&frames, 3, Transport::WebSocket);
        assert_eq!((events, newest), (3, 6));
        assert_eq!(bytes.len(), 2);
        let (_, text) = websocket::unframe(&bytes[0]);
        let rest: serde_json::Value = serde_json::from_slice(text).unwrap();
        assert_eq!(rest.as_array().map(Vec::len), Some(2));
        assert_eq!(rest[0]["offset"], 4);
        assert_eq!(
            bytes[1], frames[2].websocket,
            "a whole frame is the shared one"
        );

        let (bytes, events, newest) = unseen(&frames, 6, Transport::Sse);
        assert!(bytes.is_empty());
        assert_eq!((events, newest), (0, 6));
    }
}
