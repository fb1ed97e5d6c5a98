//! Live sockets: `GET /v1/channels/{channelId}/live` as a WebSocket or as
//! server-sent events, one stream of typed JSON events with offsets.
//!
//! Built for linear TV, where everybody watches the same channel:
//!
//! - One bus subscription per channel per gateway process (a [`ChannelHub`]),
//!   opened when the first viewer comes and closed a while after the last one
//!   leaves.
//! - Each event is turned into JSON once. Events that arrive within the batch
//!   window become one frame, encoded once per transport, and the same bytes go to
//!   every connection.
//! - The hub's writers, one per runtime worker, write each frame to the
//!   WebSocket connections themselves, one socket after the other, as long
//!   as a socket takes the whole frame at once: a delivery costs a system
//!   call, not a task wake-up. Between turns a writer takes in the frames that
//!   came meanwhile, so the connections it has not reached yet get them in
//!   the same write.
//! - A socket that is full goes back to its connection's task, which waits
//!   for room and catches up from the channel's ring of
//!   [`LiveSettings::queue_frames`] frames, so memory does not grow with a slow
//!   reader. A connection that falls further behind than the ring is told
//!   `lagged` with the last offset it received and closed; it reconnects with
//!   `?after=OFFSET` and gets what it missed from the hub's history, without a
//!   gap. The others never wait for it. SSE connections read the same ring.
//! - Offsets are the sequences of the bus's live stream
//!   ([`onair_kit::events`]), the same on every gateway pod, so a viewer may resume
//!   on any of them. They belong to the stream's epoch: a live stream that
//!   starts over (the station restarted on the embedded bus, or NATS restarted
//!   and lost it) has another epoch, and a resume from the old one is told
//!   `reset` instead of being skipped silently.
//! - A watcher asks the bus about the live stream every
//!   [`LiveSettings::check_interval`]: `/readyz` fails while it is down, a lost
//!   stream is declared again, and when it comes back each hub reopens its
//!   feed and tells its connections `reset` in the stream itself, since events
//!   published while it was down may be missing.
//! - WebSocket pings keep connections alive and find dead ones; SSE gets comment
//!   lines. On shutdown every connection gets a `closing` event with the offset to
//!   resume from and a reconnect delay, then a clean close.
//!
//! On the wire, a WebSocket text message is a JSON array of events; with SSE each
//! event is its own message (`id:` is its offset, so `EventSource` resumes by
//! itself with `Last-Event-ID`; the id is `EPOCH:OFFSET`). An event is
//! `{"type": "comment", "offset": 17, "data": {…}}`; `data` is the service's
//! message in the proto3 JSON mapping. Besides the five event types
//! (`comment`, `viewers`, `poll`, `moderation`, `schedule`) a connection sees
//! `ready` (first, with the offset it starts after and the `epoch`), `reset`
//! (events may be missing: a resume asked for events this gateway no longer
//! has or from another epoch, or live delivery was interrupted; reload the
//! channel's state and go on from there), `lagged` and `closing`. A resume is
//! `?after=OFFSET&epoch=EPOCH` (or `?after=EPOCH:OFFSET`); without an epoch the
//! offset is taken to be of the current one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use http::{HeaderValue, StatusCode};
use onair_kit::bus::{BusError, DurableStream, Message as BusMessage, SharedBus, Subscription};
use onair_kit::events::{
    LIVE_STREAM, LiveKind, channel_pattern, decode_live_payload, parse_subject, type_name,
};
use onair_kit::metrics::Registry;
use prost_reflect::{DescriptorPool, DynamicMessage};
use tokio::sync::{Notify, watch};

use crate::status_response;
use crate::websocket::{self, Incoming, ReadError, Socket, SocketReader, SocketWriter, Taken};

/// Settings of the live sockets.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// How long events are gathered into one frame; zero sends each at once.
    pub batch_window: Duration,
    /// The most events in one frame.
    pub max_batch_events: usize,
    /// How many frames a connection may fall behind before it is told it lagged.
    pub queue_frames: usize,
    /// Events per channel kept for `?after=` resumes.
    pub history_events: usize,
    /// How often connections are pinged; a WebSocket whose ping is still
    /// unanswered at the next one is closed, and so is one whose writes stall
    /// for two intervals.
    pub ping_interval: Duration,
    /// What clients are told to wait before they reconnect after a shutdown.
    pub reconnect_delay: Duration,
    /// How often the live stream is checked on the bus: how soon a lost stream
    /// is noticed, declared again and the feeds reopened.
    pub check_interval: Duration,
    /// The live stream's declaration, to declare it again when the bus lost it.
    pub stream: Option<DurableStream>,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            batch_window: Duration::from_millis(30),
            max_batch_events: 512,
            queue_frames: 256,
            history_events: 10_000,
            ping_interval: Duration::from_secs(20),
            reconnect_delay: Duration::from_secs(2),
            check_interval: Duration::from_millis(500),
            stream: None,
        }
    }
}

/// Whether a channel may be watched: `Ok` if it exists, the service's status
/// (NotFound, Unavailable…) if not.
pub type ChannelCheck =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<(), tonic::Status>> + Send + Sync>;

/// The live sockets of one gateway process. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    bus: SharedBus,
    pool: DescriptorPool,
    settings: LiveSettings,
    check_channel: ChannelCheck,
    /// The open hubs by channel id. An async lock, because opening a hub asks the
    /// bus; joining happens under it too, so a hub never closes under a joiner.
    hubs: tokio::sync::Mutex<HashMap<String, Arc<ChannelHub>>>,
    /// Set once, on shutdown.
    closing: watch::Sender<bool>,
    /// What the watcher last learnt of the live stream.
    path: watch::Sender<LivePath>,
    stats: Stats,
}

/// The state of live delivery as the watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LivePath {
    /// Not asked yet.
    Unchecked,
    /// The live stream answers, under this epoch. `outages` counts the times
    /// it was down before: a hub that saw fewer may have missed events.
    Up { epoch: u64, outages: u64 },
    /// The bus or the stream cannot be reached.
    Down { problem: String, outages: u64 },
}

impl LivePath {
    fn outages(&self) -> u64 {
        match self {
            LivePath::Unchecked => 0,
            LivePath::Up { outages, .. } | LivePath::Down { outages, .. } => *outages,
        }
    }
}

/// Hot-path metrics, held as handles so a delivery costs one atomic add.
struct Stats {
    websocket_connections: Arc<AtomicI64>,
    sse_connections: Arc<AtomicI64>,
    channels: Arc<AtomicI64>,
    frames: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
    deliveries: Arc<AtomicU64>,
    lagged: Arc<AtomicU64>,
    undecodable: Arc<AtomicU64>,
}

impl Stats {
    fn new(metrics: &Registry) -> Stats {
        let connections = |transport| {
            metrics.gauge_handle(
                "onair_live_connections",
                "Open live socket connections.",
                &[("transport", transport)],
            )
        };
        Stats {
            websocket_connections: connections("websocket"),
            sse_connections: connections("sse"),
            channels: metrics.gauge_handle(
                "onair_live_channels",
                "Channels with a live bus subscription in this process.",
                &[],
            ),
            frames: metrics.counter_handle(
                "onair_live_frames_total",
                "Frames built for live sockets (each encoded once and shared by every connection).",
                &[],
            ),
            events: metrics.counter_handle(
                "onair_live_events_total",
                "Live events received from the bus.",
                &[],
            ),
            deliveries: metrics.counter_handle(
                "onair_live_deliveries_total",
                "Live events written to connections.",
                &[],
            ),
            lagged: metrics.counter_handle(
                "onair_live_lagged_total",
                "Connections closed because they fell too far behind.",
                &[],
            ),
            undecodable: metrics.counter_handle(
                "onair_live_undecodable_events_total",
                "Live events skipped because their payload did not decode.",
                &[],
            ),
        }
    }
}

/// One event, as JSON, ready to send.
#[derive(Clone)]
struct Event {
    /// Its position in the hub (see [`position`]).
    offset: u64,
    /// Its offset on the wire: the live stream's sequence.
    sequence: u64,
    /// The epoch of that sequence.
    epoch: u64,
    json: Bytes,
}

/// How many bits of a position hold the sequence; the rest count segments.
const SEGMENT_BITS: u32 = 40;

/// Where an event sits in a hub: its sequence within the hub's segment. A hub
/// starts a segment each time its feed starts over (another epoch) or may have
/// missed events (the bus was down), so positions keep growing across them and
/// the first segment's positions are its sequences.
fn position(segment: u64, sequence: u64) -> u64 {
    (segment << SEGMENT_BITS) | (sequence & ((1 << SEGMENT_BITS) - 1))
}

/// Why a connection is told `reset`: events after its offset may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetReason {
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
    fn as_str(self) -> &'static str {
        match self {
            ResetReason::History => "history",
            ResetReason::Epoch => "epoch",
            ResetReason::Ahead => "ahead",
            ResetReason::Interrupted => "interrupted",
        }
    }

    fn message(self) -> &'static str {
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

/// A viewer's resume: the last offset it saw, and its epoch if it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    epoch: Option<u64>,
    after: u64,
}

/// One run of a hub's positions, fed from one epoch of the live stream.
#[derive(Debug, Clone, Copy)]
struct Segment {
    epoch: u64,
    /// The first sequence the segment's feed asked for.
    first_sequence: u64,
}

/// The most frames a connection's task (or an SSE connection) takes from the
/// ring at once: a connection that fell behind gets what it missed in writes
/// of up to this many frames.
const MAX_COALESCED_FRAMES: usize = 16;

/// The largest message a viewer may send on a live WebSocket. Viewers have
/// nothing to say there; this only bounds what a misbehaving client costs.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// How many connections a hub writer serves before it lets other tasks run.
/// A write to a socket costs a few microseconds, so this keeps each turn well
/// under half a millisecond.
const WRITES_PER_TURN: usize = 64;

/// A batch of events, encoded once per transport.
struct EventFrame {
    first: u64,
    last: u64,
    events: Vec<Event>,
    /// A JSON array of the events as one WebSocket text frame, header
    /// included: written to every connection as it is.
    websocket: Bytes,
    /// The events as server-sent events.
    sse: Bytes,
}

impl EventFrame {
    fn new(events: Vec<Event>) -> EventFrame {
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
enum Transport {
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
fn unseen(frames: &[Arc<EventFrame>], sent: u64, transport: Transport) -> (Vec<Bytes>, usize, u64) {
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
fn text_message(events: &[Event]) -> Bytes {
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

fn sse_events(events: &[Event]) -> Bytes {
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
fn sse_event(out: &mut BytesMut, id: Option<(u64, u64)>, kind: &str, data: &[u8]) {
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
fn control(kind: &str, (epoch, offset): (u64, u64), extra: serde_json::Value) -> Bytes {
    let mut event = serde_json::json!({"type": kind, "offset": offset, "epoch": epoch.to_string()});
    if let (Some(event), serde_json::Value::Object(extra)) = (event.as_object_mut(), extra) {
        event.extend(extra);
    }
    Bytes::from(serde_json::to_vec(&event).unwrap_or_default())
}

/// One channel's subscription, history and ring of frames.
struct ChannelHub {
    channel_id: String,
    state: Mutex<HubState>,
    /// The sequence number of the newest frame (frames count from 1), for the
    /// hub's writers and the SSE connections to wait on.
    head: watch::Sender<u64>,
    /// Set when the hub stops: its connections close with a reconnect hint.
    ended: watch::Sender<bool>,
    /// The last offset in the stream when the hub opened: a viewer who joins
    /// without `after` starts after it, even while older events are still
    /// being loaded into the history.
    live_from: u64,
    /// The hub's writers, each with its share of the WebSocket connections.
    writers: Vec<HubWriter>,
    /// Which writer the next WebSocket connection goes to.
    next_writer: AtomicUsize,
    /// Open connections; the hub closes a while after this reaches zero.
    viewers: AtomicUsize,
}

struct HubState {
    /// The newest events, oldest first.
    history: VecDeque<Event>,
    /// Every event of the channel after this offset is in `history` (or still
    /// on its way from the bus); older ones may be missing.
    complete_after: u64,
    /// The newest offset handed to connections.
    head: u64,
    /// The newest [`LiveSettings::queue_frames`] frames, oldest first: what a
    /// connection that fell behind catches up from. One that falls further
    /// behind is told it lagged.
    frames: VecDeque<Arc<EventFrame>>,
    /// The sequence number of the oldest frame in `frames`.
    first_frame: u64,
    /// The hub's segments, oldest first; a segment's index is its place here.
    /// One is added per outage of the live stream, so there are few.
    segments: Vec<Segment>,
}

impl HubState {
    fn newest_frame(&self) -> u64 {
        self.first_frame + self.frames.len() as u64 - 1
    }

    /// The epoch and wire offset of a position.
    fn wire(&self, at: u64) -> (u64, u64) {
        let segment = usize::try_from(at >> SEGMENT_BITS).unwrap_or(usize::MAX);
        let epoch = self
            .segments
            .get(segment)
            .or(self.segments.last())
            .map_or(0, |segment| segment.epoch);
        (epoch, at & ((1 << SEGMENT_BITS) - 1))
    }

    /// The position a resume stands for, or why it cannot be honoured. An
    /// offset of an epoch the hub saw twice (the bus was down in between)
    /// belongs to the segment that holds it, so a viewer that left before the
    /// outage is told of it when it comes back.
    fn locate(&self, resume: Resume) -> Result<u64, ResetReason> {
        let current = self.segments.len().saturating_sub(1);
        let epoch = match (resume.epoch, self.segments.get(current)) {
            (Some(epoch), _) => epoch,
            (None, Some(segment)) => segment.epoch,
            (None, None) => return Ok(resume.after),
        };
        let candidates: Vec<(usize, &Segment)> = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, segment)| segment.epoch == epoch)
            .collect();
        let Some(&(first, _)) = candidates.first() else {
            return Err(ResetReason::Epoch);
        };
        let index = candidates
            .iter()
            .rev()
            .find(|(_, segment)| segment.first_sequence <= resume.after)
            .map_or(first, |(index, _)| *index);
        Ok(position(index as u64, resume.after))
    }
}

/// A connection fell behind the ring by this many frames.
struct Missed(u64);

/// Where a new connection starts.
struct Joined {
    /// Events it missed, from the history, to send before the frames.
    backlog: Vec<Event>,
    /// The position it has everything up to, once the backlog is sent.
    sent: u64,
    /// `sent` on the wire.
    sent_wire: (u64, u64),
    /// The first frame it gets.
    next_frame: u64,
    /// Why the resume cannot be honoured in full, if it cannot.
    reset: Option<ResetReason>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChannelHub {
    /// A hub whose first segment is fed from `epoch`, with every event after
    /// sequence `complete_after` coming, and new viewers starting after
    /// `live_from`.
    fn new(
        channel_id: &str,
        epoch: u64,
        complete_after: u64,
        live_from: u64,
        writers: usize,
    ) -> ChannelHub {
        let (head, _) = watch::channel(0);
        let (ended, _) = watch::channel(false);
        ChannelHub {
            channel_id: channel_id.to_owned(),
            state: Mutex::new(HubState {
                history: VecDeque::new(),
                complete_after,
                head: complete_after,
                frames: VecDeque::new(),
                first_frame: 1,
                segments: vec![Segment {
                    epoch,
                    first_sequence: complete_after + 1,
                }],
            }),
            head,
            ended,
            live_from,
            writers: (0..writers.max(1)).map(|_| HubWriter::default()).collect(),
            next_writer: AtomicUsize::new(0),
            viewers: AtomicUsize::new(0),
        }
    }

    /// A place for a new connection: after the newest event, or after a
    /// resume's offset with what it missed. `ahead_ok` says the live stream
    /// has reached a resume's offset although this hub has not seen it yet.
    fn join(&self, resume: Option<Resume>, ahead_ok: bool) -> Joined {
        // Under the state lock, which the hub holds while it records a frame:
        // the connection gets each event exactly once, from the backlog or
        // from a frame.
        let state = lock(&self.state);
        let next_frame = state.newest_frame() + 1;
        let head = state.head.max(self.live_from);
        let from_head = |reset| Joined {
            backlog: Vec::new(),
            sent: head,
            sent_wire: state.wire(head),
            next_frame,
            reset,
        };
        let Some(resume) = resume else {
            return from_head(None);
        };
        let after = match state.locate(resume) {
            Ok(after) => after,
            Err(reason) => return from_head(Some(reason)),
        };
        if after < head {
            let backlog = state
                .history
                .iter()
                .filter(|event| event.offset > after)
                .cloned()
                .collect();
            let sent = state.head.max(after);
            return Joined {
                backlog,
                sent,
                sent_wire: state.wire(sent),
                next_frame,
                reset: (after < state.complete_after).then_some(ResetReason::History),
            };
        }
        if after > head && !ahead_ok {
            return from_head(Some(ResetReason::Ahead));
        }
        Joined {
            backlog: Vec::new(),
            sent: after,
            sent_wire: state.wire(after),
            next_frame,
            reset: None,
        }
    }

    /// Whether a resume names an offset beyond what this hub has seen.
    fn is_ahead(&self, resume: Resume) -> bool {
        let state = lock(&self.state);
        let head = state.head.max(self.live_from);
        state.locate(resume).is_ok_and(|after| after > head)
    }

    /// The epoch and wire offset of a position.
    fn wire(&self, at: u64) -> (u64, u64) {
        lock(&self.state).wire(at)
    }

    /// Starts a segment fed from `epoch` from `first_sequence` on, and tells
    /// every connection, in the stream itself, that events before it may be
    /// missing. Returns the segment's index.
    fn begin_segment(&self, epoch: u64, first_sequence: u64, settings: &LiveSettings) -> u64 {
        let index = {
            let mut state = lock(&self.state);
            state.segments.push(Segment {
                epoch,
                first_sequence,
            });
            state.segments.len() as u64 - 1
        };
        let sequence = first_sequence.saturating_sub(1);
        let reason = ResetReason::Interrupted;
        let json = control(
            "reset",
            (epoch, sequence),
            serde_json::json!({"reason": reason.as_str(), "message": reason.message()}),
        );
        let marker = Event {
            offset: position(index, sequence),
            sequence,
            epoch,
            json,
        };
        self.publish(vec![marker], settings);
        index
    }

    /// Records a batch and tells the writers and SSE connections about it.
    fn publish(&self, events: Vec<Event>, settings: &LiveSettings) {
        let frame = Arc::new(EventFrame::new(events));
        let newest_frame = {
            let mut state = lock(&self.state);
            for event in &frame.events {
                state.history.push_back(event.clone());
            }
            while state.history.len() > settings.history_events {
                if let Some(dropped) = state.history.pop_front() {
                    state.complete_after = dropped.offset;
                }
            }
            state.head = state.head.max(frame.last);
            state.frames.push_back(frame);
            while state.frames.len() > settings.queue_frames.max(1) {
                state.frames.pop_front();
                state.first_frame += 1;
            }
            state.newest_frame()
        };
        self.head.send_replace(newest_frame);
    }

    /// Up to `limit` frames from sequence number `next` on, or how many frames
    /// from `next` on the ring no longer holds.
    fn frames_from(&self, next: u64, limit: usize) -> Result<Vec<Arc<EventFrame>>, Missed> {
        let state = lock(&self.state);
        if next < state.first_frame {
            return Err(Missed(state.first_frame - next));
        }
        let skip = usize::try_from(next - state.first_frame).unwrap_or(usize::MAX);
        Ok(state
            .frames
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect())
    }

    fn newest_frame(&self) -> u64 {
        lock(&self.state).newest_frame()
    }

    /// Hands a new WebSocket connection to one of the writers.
    fn add_outlet(&self, outlet: Arc<Outlet>) {
        let index = self.next_writer.fetch_add(1, Ordering::Relaxed) % self.writers.len();
        lock(&self.writers[index].joining).push(outlet);
    }

    fn end(&self) {
        self.ended.send_replace(true);
    }
}

/// One of a hub's writers: a task that writes each new frame to its share of
/// the channel's WebSocket connections itself, one after the other, with no
/// wake-up of the connections' tasks. There is one per runtime worker, so a
/// channel's writes use every core.
#[derive(Default)]
struct HubWriter {
    /// Connections given to this writer since its last pass.
    joining: Mutex<Vec<Arc<Outlet>>>,
}

/// The writing side of one WebSocket connection. The hub writes new frames to
/// it directly while the socket takes them whole. The connection's task
/// writes when that takes waiting: it catches up after a full socket, sends
/// the first frames, its pings and pongs, and the goodbye.
#[derive(Default)]
struct Outlet {
    state: Mutex<OutletState>,
    /// Tells the connection's task that the hub gave the writing back to it.
    handed_back: Notify,
}

#[derive(Default)]
struct OutletState {
    /// The socket's writing half while the hub writes; `None` while the
    /// connection's task holds it.
    writer: Option<SocketWriter>,
    /// Whether the hub writes to this connection (`writer` is then here).
    hub_writes: bool,
    /// What the hub wrote that the socket did not take, for the task to write
    /// first, and how many events it completes.
    unwritten: Vec<Bytes>,
    unwritten_events: usize,
    /// The newest offset written (or in `unwritten`).
    sent: u64,
    /// The sequence number of the next frame to write.
    next_frame: u64,
    /// A write failed: the connection is gone.
    failed: bool,
    /// The connection has ended; its writer forgets it.
    closed: bool,
}

/// The frames a hub writer is writing: a run of the ring, with each frame's
/// WebSocket bytes ready to hand to a vectored write.
struct Window {
    /// The sequence number of `frames[0]`.
    first_frame: u64,
    frames: Vec<Arc<EventFrame>>,
    shared: Vec<Bytes>,
}

impl Window {
    fn starting_at(first_frame: u64) -> Window {
        Window {
            first_frame,
            frames: Vec::new(),
            shared: Vec::new(),
        }
    }

    /// Appends the frames recorded since the window's newest. If the ring no
    /// longer holds the next one, the writer has fallen behind it: between
    /// passes (`between_passes`) the window starts again at the oldest frame
    /// kept, and the connections that miss frames are handed back to their
    /// tasks, which tell them they lagged; during a pass it waits for the pass
    /// to end.
    fn take_in(&mut self, hub: &ChannelHub, between_passes: bool) {
        let next = self.first_frame + self.frames.len() as u64;
        match hub.frames_from(next, usize::MAX) {
            Ok(frames) => {
                self.shared
                    .extend(frames.iter().map(|frame| frame.websocket.clone()));
                self.frames.extend(frames);
            }
            Err(Missed(missed)) if between_passes => {
                self.frames.clear();
                self.shared.clear();
                self.first_frame = next + missed;
                self.take_in(hub, false);
            }
            Err(Missed(_)) => {}
        }
    }

    /// Lets go of the first `count` frames, which every connection has had.
    fn pass_done(&mut self, count: usize) {
        self.frames.drain(..count);
        self.shared.drain(..count);
        self.first_frame += count as u64;
    }
}

/// What became of a connection in a writer's pass.
enum Pass {
    /// Nothing more to do this time; the number of events written.
    Written(usize),
    /// The connection has ended.
    Closed,
}

impl Outlet {
    /// Writes what the connection has not had of `window` if the hub writes to
    /// this connection and the socket takes it now. Otherwise hands the
    /// writing back to the connection's task.
    fn offer(&self, window: &Window) -> Pass {
        let mut state = lock(&self.state);
        if state.closed {
            return Pass::Closed;
        }
        if !state.hub_writes {
            return Pass::Written(0);
        }
        if state.writer.is_none() {
            return self.hand_back(&mut state);
        }
        let Some(skip) = state
            .next_frame
            .checked_sub(window.first_frame)
            .and_then(|skip| usize::try_from(skip).ok())
        else {
            // It missed frames this writer has passed; its task catches up
            // from the ring.
            return self.hand_back(&mut state);
        };
        let (Some(frames), Some(shared)) = (window.frames.get(skip..), window.shared.get(skip..))
        else {
            return Pass::Written(0);
        };
        let Some(newest_frame) = frames.last() else {
            return Pass::Written(0);
        };
        let newest = newest_frame.last;
        let (bytes, events) = if frames[0].first > state.sent {
            let events = frames.iter().map(|frame| frame.events.len()).sum();
            (std::borrow::Cow::Borrowed(shared), events)
        } else {
            let (bytes, events, _) = unseen(frames, state.sent, Transport::WebSocket);
            (std::borrow::Cow::Owned(bytes), events)
        };
        state.next_frame = window.first_frame + window.frames.len() as u64;
        state.sent = state.sent.max(newest);
        if bytes.is_empty() {
            return Pass::Written(0);
        }
        let Some(writer) = state.writer.as_mut() else {
            return Pass::Written(0);
        };
        match writer.write_now(&bytes) {
            Taken::All => Pass::Written(events),
            Taken::Part(taken) => {
                state.unwritten = websocket::rest(&bytes, taken);
                state.unwritten_events = events;
                self.hand_back(&mut state)
            }
            Taken::Failed => {
                state.failed = true;
                self.hand_back(&mut state)
            }
        }
    }

    fn hand_back(&self, state: &mut OutletState) -> Pass {
        state.hub_writes = false;
        self.handed_back.notify_one();
        Pass::Written(0)
    }
}

impl Live {
    /// Live sockets fed from `bus`, with event payloads decoded by `pool`.
    pub fn new(
        bus: SharedBus,
        pool: DescriptorPool,
        check_channel: ChannelCheck,
        metrics: &Registry,
        settings: LiveSettings,
    ) -> Live {
        let (closing, _) = watch::channel(false);
        let (path, _) = watch::channel(LivePath::Unchecked);
        let live = Live {
            inner: Arc::new(Inner {
                bus,
                pool,
                settings,
                check_channel,
                hubs: tokio::sync::Mutex::new(HashMap::new()),
                closing,
                path,
                stats: Stats::new(metrics),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(watch_live_stream(Arc::downgrade(&live.inner)));
        }
        live
    }

    /// Whether live delivery works: the live stream answers on the bus. For
    /// `/readyz`.
    pub async fn check(&self) -> Result<(), String> {
        let path = self.inner.path.borrow().clone();
        match path {
            LivePath::Up { .. } => Ok(()),
            LivePath::Down { problem, .. } => Err(format!("live delivery is down: {problem}")),
            LivePath::Unchecked => match self.inner.bus.stream_bounds(LIVE_STREAM).await {
                Ok(_bounds) => Ok(()),
                Err(error) => Err(format!("live delivery is down: {error}")),
            },
        }
    }

    /// Tells every connection to reconnect later and closes it; resolves when
    /// they are all closed.
    pub fn shutdown(&self) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.closing.send_replace(true);
            while inner.stats.websocket_connections.load(Ordering::Relaxed) > 0
                || inner.stats.sse_connections.load(Ordering::Relaxed) > 0
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    /// Answers `GET /v1/channels/{channelId}/live` (already admitted: rate
    /// limits and credentials are checked by the caller).
    pub async fn serve(&self, channel_id: String, request: axum::extract::Request) -> Response {
        let (mut parts, _body) = request.into_parts();
        let resume = match resume_position(&parts) {
            Ok(resume) => resume,
            Err(message) => {
                return status_response(
                    tonic::Code::InvalidArgument,
                    &message,
                    StatusCode::BAD_REQUEST,
                );
            }
        };
        if *self.inner.closing.borrow() {
            return status_response(
                tonic::Code::Unavailable,
                "the server is shutting down; reconnect in a moment",
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
        if let Err(status) = (self.inner.check_channel)(channel_id.clone()).await {
            return crate::error_response(&status);
        }
        let sse = parts.method == http::Method::GET && crate::accepts_event_stream(&parts.headers);
        let upgrade = if sse {
            None
        } else {
            match websocket::Upgrade::from_request(&mut parts) {
                Ok(upgrade) => Some(upgrade),
                Err(problem) => {
                    let mut response = status_response(
                        tonic::Code::InvalidArgument,
                        &format!(
                            "the live stream is a WebSocket (send the upgrade headers) or server-sent events (send Accept: text/event-stream): {problem}"
                        ),
                        StatusCode::UPGRADE_REQUIRED,
                    );
                    response
                        .headers_mut()
                        .insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
                    return response;
                }
            }
        };
        let (viewing, joined) = match self.join(&channel_id, resume).await {
            Ok(joined) => joined,
            Err(error) => {
                tracing::warn!(channel = %channel_id, error = %error, "cannot open the live feed");
                return status_response(
                    tonic::Code::Unavailable,
                    &format!("the live feed of channel {channel_id} is unavailable: {error}"),
                    StatusCode::SERVICE_UNAVAILABLE,
                );
            }
        };
        match upgrade {
            None => self.sse_response(viewing, joined),
            Some(upgrade) => {
                let live = self.clone();
                upgrade.accept(MAX_CLIENT_MESSAGE, move |socket| {
                    live.websocket(socket, viewing, joined)
                })
            }
        }
    }

    /// The channel's hub (opened if needed) and a place in it.
    async fn join(
        &self,
        channel_id: &str,
        resume: Option<Resume>,
    ) -> Result<(Viewing, Joined), BusError> {
        let mut hubs = self.inner.hubs.lock().await;
        if let Some(hub) = hubs.get(channel_id) {
            // Counted as a viewer before the lock goes, so the hub stays open.
            let viewing = Viewing::new(hub.clone());
            drop(hubs);
            let ahead_ok = self.stream_reached(&viewing.hub, resume).await;
            let joined = viewing.hub.join(resume, ahead_ok);
            return Ok((viewing, joined));
        }
        let outages = self.inner.path.borrow().outages();
        let bounds = self.inner.bus.stream_bounds(LIVE_STREAM).await?;
        // Load the tail of the stream into the history, so resumes work on a
        // gateway that has just opened the channel.
        let wanted = u64::try_from(self.inner.settings.history_events).unwrap_or(u64::MAX);
        let start = (bounds.last + 1).saturating_sub(wanted).max(bounds.first);
        let feed = self
            .inner
            .bus
            .replay(LIVE_STREAM, start, Some(&channel_pattern(channel_id)))
            .await?;
        let writers = tokio::runtime::Handle::current().metrics().num_workers();
        let hub = Arc::new(ChannelHub::new(
            channel_id,
            bounds.epoch,
            start.saturating_sub(1),
            bounds.last,
            writers,
        ));
        hubs.insert(channel_id.to_owned(), hub.clone());
        self.inner.stats.channels.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(channel = channel_id, from = start, "live feed opened");
        for index in 0..hub.writers.len() {
            tokio::spawn(self.clone().run_writer(hub.clone(), index));
        }
        let fed = Fed {
            segment: 0,
            epoch: bounds.epoch,
            last_sequence: start.saturating_sub(1),
            outages,
        };
        tokio::spawn(self.clone().run_hub(hub.clone(), feed, fed));
        // A hub that has just opened has not seen more than the stream held.
        let joined = hub.join(resume, false);
        Ok((Viewing::new(hub), joined))
    }

    /// Whether the live stream has reached a resume's offset that the hub
    /// has not seen yet: a viewer coming from a gateway a little ahead of
    /// this one. Asks the bus, which is rare.
    async fn stream_reached(&self, hub: &ChannelHub, resume: Option<Resume>) -> bool {
        let Some(resume) = resume else {
            return false;
        };
        if !hub.is_ahead(resume) {
            return false;
        }
        match self.inner.bus.stream_bounds(LIVE_STREAM).await {
            Ok(bounds) => {
                resume.epoch.is_none_or(|epoch| epoch == bounds.epoch)
                    && resume.after <= bounds.last
            }
            Err(_) => false,
        }
    }

    /// Opens a hub's feed again after it ended or live delivery was down:
    /// from where it was if the stream is the same and nothing can have been
    /// missed, otherwise in a new segment, announced to every connection.
    async fn reopen_feed(
        &self,
        hub: &ChannelHub,
        fed: &mut Fed,
        pending: &mut Vec<Event>,
        epoch: u64,
        outages: u64,
    ) -> Result<Subscription, BusError> {
        let same_stream = epoch == fed.epoch;
        let from = if same_stream {
            fed.last_sequence + 1
        } else {
            1
        };
        let feed = self
            .inner
            .bus
            .replay(LIVE_STREAM, from, Some(&channel_pattern(&hub.channel_id)))
            .await?;
        self.flush(hub, pending);
        if !same_stream || outages != fed.outages {
            fed.segment = hub.begin_segment(epoch, from, &self.inner.settings);
            tracing::info!(channel = %hub.channel_id, epoch, from, "live feed reopened after an interruption; viewers were told to reload");
        } else {
            tracing::info!(channel = %hub.channel_id, from, "live feed reopened");
        }
        fed.epoch = epoch;
        fed.last_sequence = from - 1;
        fed.outages = outages;
        Ok(feed)
    }

    /// Reads the channel's events from the bus, batches them and records the
    /// frames, until nobody has watched for two ping intervals or the server
    /// shuts down.
    async fn run_hub(self, hub: Arc<ChannelHub>, feed: Subscription, mut fed: Fed) {
        let settings = &self.inner.settings;
        let mut feed = Some(feed);
        let mut path = self.inner.path.subscribe();
        // Set while the feed must be opened again: it ended, or live delivery
        // came back after an outage or under another epoch.
        let mut reopen = false;
        let mut retry = tokio::time::interval(settings.check_interval);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = self.inner.closing.subscribe();
        let mut idle_check = tokio::time::interval(settings.ping_interval);
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        idle_check.tick().await;
        let mut idle_ticks = 0;
        let mut pending: Vec<Event> = Vec::new();
        let flush_at = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(flush_at);
        loop {
            tokio::select! {
                message = next_message(&mut feed) => {
                    let Some(message) = message else {
                        tracing::warn!(channel = %hub.channel_id, "the live feed ended; opening it again");
                        feed = None;
                        reopen = true;
                        continue;
                    };
                    let Some(sequence) = message.sequence else {
                        continue;
                    };
                    // A reopened feed may deliver again what it had delivered.
                    if sequence <= fed.last_sequence {
                        continue;
                    }
                    fed.last_sequence = sequence;
                    if let Some(event) = self.event(&message, &fed) {
                        if pending.is_empty() {
                            flush_at.as_mut().reset(tokio::time::Instant::now() + settings.batch_window);
                        }
                        pending.push(event);
                    }
                    if pending.len() >= settings.max_batch_events || settings.batch_window.is_zero() {
                        self.flush(&hub, &mut pending);
                    }
                }
                () = &mut flush_at, if !pending.is_empty() => {
                    self.flush(&hub, &mut pending);
                }
                changed = path.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = path.borrow_and_update().clone();
                    if let LivePath::Up { epoch, outages } = now
                        && (epoch != fed.epoch || outages != fed.outages)
                    {
                        reopen = true;
                        retry.reset_immediately();
                    }
                }
                _ = retry.tick(), if reopen => {
                    let LivePath::Up { epoch, outages } = path.borrow().clone() else {
                        continue;
                    };
                    match self.reopen_feed(&hub, &mut fed, &mut pending, epoch, outages).await {
                        Ok(reopened) => {
                            feed = Some(reopened);
                            reopen = false;
                        }
                        Err(error) => {
                            tracing::warn!(channel = %hub.channel_id, error = %error, "cannot reopen the live feed yet");
                        }
                    }
                }
                _ = idle_check.tick() => {
                    if hub.viewers.load(Ordering::Relaxed) > 0 {
                        idle_ticks = 0;
                        continue;
                    }
                    idle_ticks += 1;
                    if idle_ticks >= 2 {
                        let mut hubs = self.inner.hubs.lock().await;
                        // Joins happen under this lock: nobody can be joining now.
                        if hub.viewers.load(Ordering::Relaxed) == 0 {
                            hubs.remove(&hub.channel_id);
                            tracing::debug!(channel = %hub.channel_id, "live feed closed: no viewers");
                            break;
                        }
                    }
                }
                () = shutting_down(&mut closing) => break,
            }
        }
        let mut hubs = self.inner.hubs.lock().await;
        if hubs
            .get(&hub.channel_id)
            .is_some_and(|open| Arc::ptr_eq(open, &hub))
        {
            hubs.remove(&hub.channel_id);
        }
        hub.end();
        self.inner.stats.channels.fetch_sub(1, Ordering::Relaxed);
    }

    fn flush(&self, hub: &ChannelHub, pending: &mut Vec<Event>) {
        if pending.is_empty() {
            return;
        }
        self.inner.stats.frames.fetch_add(1, Ordering::Relaxed);
        hub.publish(std::mem::take(pending), &self.inner.settings);
    }

    /// One of a hub's writers: writes each new frame to its connections, in
    /// passes over all of them, until the hub stops. Between turns of a pass it
    /// takes in the frames that came meanwhile, so the connections it has not
    /// reached yet get them in the same write; a writer that falls behind
    /// catches up in fewer, larger writes.
    async fn run_writer(self, hub: Arc<ChannelHub>, index: usize) {
        let stats = &self.inner.stats;
        let joining = &hub.writers[index].joining;
        let mut head = hub.head.subscribe();
        let mut ended = hub.ended.subscribe();
        let mut outlets: Vec<Arc<Outlet>> = Vec::new();
        let mut window = Window::starting_at(*head.borrow_and_update() + 1);
        loop {
            head.mark_unchanged();
            window.take_in(&hub, true);
            if window.frames.is_empty() {
                tokio::select! {
                    changed = head.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                    () = shutting_down(&mut ended) => break,
                    // A quiet channel still lets go of the connections that
                    // ended.
                    () = tokio::time::sleep(self.inner.settings.ping_interval) => {
                        outlets.append(&mut lock(joining));
                        outlets.retain(|outlet| !lock(&outlet.state).closed);
                    }
                }
                continue;
            }
            // Every connection gets these in this pass; what comes during it
            // goes only to the connections the pass has not reached yet.
            let offered_to_all = window.frames.len();
            outlets.append(&mut lock(joining));
            let mut delivered = 0;
            let mut position = 0;
            let mut turn = 0;
            while position < outlets.len() {
                match outlets[position].offer(&window) {
                    Pass::Written(events) => {
                        delivered += events;
                        position += 1;
                    }
                    Pass::Closed => {
                        outlets.swap_remove(position);
                    }
                }
                turn += 1;
                if turn == WRITES_PER_TURN {
                    turn = 0;
                    tokio::task::yield_now().await;
                    window.take_in(&hub, false);
                }
            }
            window.pass_done(offered_to_all);
            stats
                .deliveries
                .fetch_add(delivered as u64, Ordering::Relaxed);
        }
    }

    /// Turns a bus message into the event's JSON, once.
    fn event(&self, message: &BusMessage, fed: &Fed) -> Option<Event> {
        self.inner.stats.events.fetch_add(1, Ordering::Relaxed);
        let offset = message.sequence?;
        let decoded = parse_subject(&message.subject)
            .ok_or_else(|| format!("unexpected subject {}", message.subject))
            .and_then(|(_channel, kind)| {
                event_json(&self.inner.pool, kind, offset, &message.payload)
                    .map_err(|error| format!("{kind:?} event {offset}: {error}"))
            });
        match decoded {
            Ok(json) => Some(Event {
                offset: position(fed.segment, offset),
                sequence: offset,
                epoch: fed.epoch,
                json,
            }),
            Err(error) => {
                self.inner.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %error, "skipping a live event that does not decode");
                None
            }
        }
    }

    fn sse_response(&self, viewing: Viewing, joined: Joined) -> Response {
        let inner = self.inner.clone();
        inner.stats.sse_connections.fetch_add(1, Ordering::Relaxed);
        let guard = ConnectionGuard(inner.stats.sse_connections.clone());
        let mut start = BytesMut::new();
        start.put_slice(
            format!("retry: {}\n\n", inner.settings.reconnect_delay.as_millis()).as_bytes(),
        );
        sse_event(
            &mut start,
            None,
            "ready",
            &control("ready", joined.sent_wire, serde_json::json!({})),
        );
        if let Some(reason) = joined.reset {
            sse_event(&mut start, None, "reset", &reset_event(&joined, reason));
        }
        let backlog = sse_events(&joined.backlog);
        let period = inner.settings.ping_interval;
        let state = SseState {
            head: viewing.hub.head.subscribe(),
            ended: viewing.hub.ended.subscribe(),
            viewing,
            next_frame: joined.next_frame,
            sent: joined.sent,
            closing: inner.closing.subscribe(),
            ping: {
                let mut ping =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ping
            },
            inner: inner.clone(),
            _guard: guard,
            done: false,
        };
        let opening = futures::stream::iter([
            Ok::<_, std::convert::Infallible>(start.freeze()),
            Ok(backlog),
        ]);
        let frames = futures::stream::unfold(state, next_sse_chunk).map(Ok);
        let mut response = Response::new(Body::from_stream(opening.chain(frames)));
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        // Proxies such as nginx must not hold events back.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }

    async fn websocket(self, socket: Socket, viewing: Viewing, joined: Joined) {
        let inner = self.inner;
        inner
            .stats
            .websocket_connections
            .fetch_add(1, Ordering::Relaxed);
        let _guard = ConnectionGuard(inner.stats.websocket_connections.clone());
        let Socket { reader, writer } = socket;
        let outlet = Arc::new(Outlet::default());
        viewing.hub.add_outlet(outlet.clone());
        let mut connection = WebSocketConnection {
            reader,
            writer: Some(writer),
            outlet,
            viewing,
            sent: joined.sent,
            next_frame: joined.next_frame,
            inner: inner.clone(),
            answered_ping: true,
        };
        let mut opening = vec![control("ready", joined.sent_wire, serde_json::json!({}))];
        if let Some(reason) = joined.reset {
            opening.push(reset_event(&joined, reason));
        }
        let opening: Vec<Event> = opening.into_iter().map(connection_event).collect();
        let mut first_frames = vec![text_message(&opening)];
        // What it missed, in frames no larger than the live ones.
        let chunk_size = inner.settings.max_batch_events.max(1);
        for chunk in joined.backlog.chunks(chunk_size) {
            first_frames.push(text_message(chunk));
        }
        let outcome = match connection.write(first_frames, joined.backlog.len()).await {
            Ok(()) => connection.serve().await,
            Err(outcome) => outcome,
        };
        connection.finish(outcome).await;
    }
}

/// What a hub's feed is reading: its segment, the stream's epoch, the last
/// sequence it received, and the outages of live delivery it knows of.
struct Fed {
    segment: u64,
    epoch: u64,
    last_sequence: u64,
    outages: u64,
}

/// The next message of a feed; never, while there is none.
async fn next_message(feed: &mut Option<Subscription>) -> Option<BusMessage> {
    match feed {
        Some(feed) => feed.next().await,
        None => std::future::pending().await,
    }
}

/// Asks the bus about the live stream every [`LiveSettings::check_interval`]
/// until the server shuts down, declares it again if the bus lost it, and
/// tells the hubs what it found.
async fn watch_live_stream(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(live) = inner.upgrade() else {
            return;
        };
        if *live.closing.borrow() {
            return;
        }
        let interval = live.settings.check_interval;
        let found = match tokio::time::timeout(
            interval.max(Duration::from_secs(1)),
            live.bus.stream_bounds(LIVE_STREAM),
        )
        .await
        {
            Ok(Ok(bounds)) => Ok(bounds.epoch),
            Ok(Err(BusError::UnknownStream(_))) => match &live.settings.stream {
                Some(declaration) => match live.bus.ensure_stream(declaration).await {
                    Ok(()) => match live.bus.stream_bounds(LIVE_STREAM).await {
                        Ok(bounds) => {
                            tracing::info!(
                                epoch = bounds.epoch,
                                "declared the live stream again: the bus had lost it"
                            );
                            Ok(bounds.epoch)
                        }
                        Err(error) => Err(error.to_string()),
                    },
                    Err(error) => Err(format!(
                        "the bus lost the live stream and cannot declare it again: {error}"
                    )),
                },
                None => Err("the bus has no live stream".to_owned()),
            },
            Ok(Err(error)) => Err(error.to_string()),
            Err(_elapsed) => Err(format!(
                "the bus did not answer within {:?}",
                interval.max(Duration::from_secs(1))
            )),
        };
        live.path.send_if_modified(|path| {
            let next = match (&found, &*path) {
                (Ok(epoch), LivePath::Down { outages, .. }) => LivePath::Up {
                    epoch: *epoch,
                    outages: outages + 1,
                },
                (Ok(epoch), other) => LivePath::Up {
                    epoch: *epoch,
                    outages: other.outages(),
                },
                (Err(problem), other) => LivePath::Down {
                    problem: problem.clone(),
                    outages: other.outages(),
                },
            };
            if next == *path {
                return false;
            }
            match &next {
                LivePath::Down { problem, .. } if !matches!(path, LivePath::Down { .. }) => {
                    tracing::warn!(problem = %problem, "live delivery is down");
                }
                LivePath::Up { epoch, .. } if matches!(path, LivePath::Down { .. }) => {
                    tracing::info!(epoch, "live delivery is back");
                }
                _ => {}
            }
            *path = next;
            true
        });
        drop(live);
        tokio::time::sleep(interval).await;
    }
}

/// Resolves once `flag` is set (the server shuts down, a hub stops).
async fn shutting_down(flag: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens once it is over too.
    let _ = flag.wait_for(|set| *set).await;
}

/// Counts a connection while it is open.
struct ConnectionGuard(Arc<AtomicI64>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A viewer's place in a channel's hub, counted while it is held.
struct Viewing {
    hub: Arc<ChannelHub>,
}

impl Viewing {
    fn new(hub: Arc<ChannelHub>) -> Viewing {
        hub.viewers.fetch_add(1, Ordering::Relaxed);
        Viewing { hub }
    }
}

impl Drop for Viewing {
    fn drop(&mut self) {
        self.hub.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

fn reset_event(joined: &Joined, reason: ResetReason) -> Bytes {
    control(
        "reset",
        joined.sent_wire,
        serde_json::json!({"reason": reason.as_str(), "message": reason.message()}),
    )
}

/// A control event for one connection only, outside the hub's positions.
fn connection_event(json: Bytes) -> Event {
    Event {
        offset: 0,
        sequence: 0,
        epoch: 0,
        json,
    }
}

/// How a viewer resumes from a position: the query to reconnect with.
fn resume_query((epoch, offset): (u64, u64)) -> String {
    format!("?after={offset}&epoch={epoch}")
}

/// Why a WebSocket connection ends.
enum Outcome {
    /// The client went away.
    Gone,
    /// The client closed it, with this code if it gave one.
    ClosedByClient(Option<u16>),
    /// The client broke the protocol.
    Refused(u16, &'static str),
    /// It fell further behind than the ring holds, by this many frames.
    Lagged(u64),
    /// It answered no ping for a whole interval.
    Unresponsive,
    /// The server is shutting down or the channel's feed ended.
    Closing,
}

/// The task of one WebSocket connection: it reads what the client sends, and
/// writes whenever the hub cannot (see [`Outlet`]).
struct WebSocketConnection {
    reader: SocketReader,
    /// The socket's writing half while this task holds it.
    writer: Option<SocketWriter>,
    outlet: Arc<Outlet>,
    viewing: Viewing,
    /// While this task writes: the newest offset written.
    sent: u64,
    /// While this task writes: the sequence number of the next frame to write.
    next_frame: u64,
    inner: Arc<Inner>,
    answered_ping: bool,
}

/// The connection is gone or stalled; stop serving it.
struct Stalled;

impl WebSocketConnection {
    /// Serves the connection until it ends: answers the client, pings it, and
    /// catches it up when the hub hands the writing back.
    async fn serve(&mut self) -> Outcome {
        let mut closing = self.inner.closing.subscribe();
        let mut ended = self.viewing.hub.ended.subscribe();
        let closed = async move {
            tokio::select! {
                () = shutting_down(&mut closing) => {}
                () = shutting_down(&mut ended) => {}
            }
        };
        tokio::pin!(closed);
        let period = self.inner.settings.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let written = tokio::select! {
                biased;
                () = &mut closed => return Outcome::Closing,
                () = self.outlet.handed_back.notified() => self.write(Vec::new(), 0).await,
                incoming = self.reader.recv() => match incoming {
                    Ok(Incoming::Pong) => {
                        self.answered_ping = true;
                        Ok(())
                    }
                    Ok(Incoming::Ping(payload)) => {
                        let pong = websocket::frame(websocket::OPCODE_PONG, &payload);
                        self.write(vec![pong], 0).await
                    }
                    // Viewers have nothing to say on the live stream.
                    Ok(Incoming::Data) => Ok(()),
                    Ok(Incoming::Close(code)) => return Outcome::ClosedByClient(code),
                    Err(ReadError::Gone) => return Outcome::Gone,
                    Err(ReadError::Refused(code, reason)) => return Outcome::Refused(code, reason),
                },
                _ = ping.tick() => {
                    if !self.answered_ping {
                        return Outcome::Unresponsive;
                    }
                    self.answered_ping = false;
                    self.write(vec![Bytes::from_static(websocket::PING)], 0).await
                }
            };
            if let Err(outcome) = written {
                return outcome;
            }
        }
    }

    /// Takes the writing from the hub: the socket's writing half, if the hub
    /// has it, and what the hub wrote that the socket did not take. With
    /// `for_good`, the hub forgets the connection.
    fn take_over(&mut self, for_good: bool) -> Result<(Vec<Bytes>, usize), Outcome> {
        let mut state = lock(&self.outlet.state);
        state.hub_writes = false;
        state.closed |= for_good;
        if let Some(writer) = state.writer.take() {
            self.writer = Some(writer);
            self.sent = state.sent;
            self.next_frame = state.next_frame;
        }
        if state.failed {
            return Err(Outcome::Gone);
        }
        let unwritten = std::mem::take(&mut state.unwritten);
        let events = std::mem::take(&mut state.unwritten_events);
        Ok((unwritten, events))
    }

    /// Writes `own` frames (carrying `own_events` events) after whatever
    /// the hub left unwritten, catches up with the frames the connection has
    /// not had, and gives the writing back to the hub.
    async fn write(&mut self, own: Vec<Bytes>, own_events: usize) -> Result<(), Outcome> {
        let (mut frames, mut events) = self.take_over(false)?;
        frames.extend(own);
        events += own_events;
        loop {
            if !frames.is_empty() {
                self.send(&frames).await.map_err(|Stalled| Outcome::Gone)?;
                self.count_deliveries(events);
            }
            let missed = self
                .viewing
                .hub
                .frames_from(self.next_frame, MAX_COALESCED_FRAMES)
                .map_err(|Missed(missed)| Outcome::Lagged(missed))?;
            if missed.is_empty() {
                let mut state = lock(&self.outlet.state);
                // Under the outlet's lock the hub's writer cannot pass this
                // connection: a frame recorded after this check is written by
                // the hub, one recorded before it by this loop.
                if self.viewing.hub.newest_frame() >= self.next_frame {
                    frames = Vec::new();
                    events = 0;
                    continue;
                }
                state.writer = self.writer.take();
                state.sent = self.sent;
                state.next_frame = self.next_frame;
                state.hub_writes = state.writer.is_some();
                return Ok(());
            }
            self.next_frame += missed.len() as u64;
            (frames, events, self.sent) = unseen(&missed, self.sent, Transport::WebSocket);
        }
    }

    /// Writes whole frames, in one system call where the socket takes them.
    async fn send(&mut self, frames: &[Bytes]) -> Result<(), Stalled> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(Stalled);
        };
        // A client that stops reading fills the socket; it may hold one write
        // for two ping intervals.
        // The timer is armed only when the socket is full, so the common write
        // costs no timer.
        let limit = self.inner.settings.ping_interval * 2;
        let mut sending = std::pin::pin!(writer.write(frames));
        let sent = match futures::poll!(sending.as_mut()) {
            std::task::Poll::Ready(sent) => sent,
            std::task::Poll::Pending => match tokio::time::timeout(limit, sending).await {
                Ok(sent) => sent,
                Err(_elapsed) => return Err(Stalled),
            },
        };
        sent.map_err(|_| Stalled)
    }

    fn count_deliveries(&self, events: usize) {
        self.inner
            .stats
            .deliveries
            .fetch_add(events as u64, Ordering::Relaxed);
    }

    async fn finish(mut self, outcome: Outcome) {
        // The rest of a frame the hub began goes out before the goodbye.
        let (mut frames, _) = self.take_over(true).unwrap_or_default();
        let settings = &self.inner.settings;
        let channel_id = self.viewing.hub.channel_id.clone();
        let sent = self.viewing.hub.wire(self.sent);
        let (event, code, reason) = match outcome {
            Outcome::Gone => return,
            Outcome::ClosedByClient(code) => {
                frames.push(websocket::close_reply(code));
                let _ = self.send(&frames).await;
                self.shutdown().await;
                return;
            }
            Outcome::Refused(code, reason) => {
                tracing::debug!(
                    channel = %channel_id,
                    code,
                    reason,
                    "live connection broke the protocol"
                );
                frames.push(websocket::close_frame(code, reason));
                let _ = self.send(&frames).await;
                self.shutdown().await;
                return;
            }
            Outcome::Lagged(missed) => {
                self.inner.stats.lagged.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    channel = %channel_id,
                    offset = self.sent,
                    missed,
                    "live connection lagged"
                );
                (
                    control(
                        "lagged",
                        sent,
                        serde_json::json!({
                            "message": format!("this connection fell behind; reconnect with {} to get what it missed", resume_query(sent))
                        }),
                    ),
                    // Try Again Later.
                    1013,
                    format!("lagged; resume with {}", resume_query(sent)),
                )
            }
            Outcome::Unresponsive => (
                control(
                    "closing",
                    sent,
                    serde_json::json!({"message": "no answer to ping", "retryAfterMs": settings.reconnect_delay.as_millis() as u64}),
                ),
                // Policy Violation is the closest: the peer broke the keepalive.
                1008,
                "no answer to ping".to_owned(),
            ),
            Outcome::Closing => (
                control(
                    "closing",
                    sent,
                    serde_json::json!({
                        "message": format!("the server is restarting; reconnect with {}", resume_query(sent)),
                        "retryAfterMs": settings.reconnect_delay.as_millis() as u64,
                    }),
                ),
                // Service Restart.
                1012,
                format!("restarting; resume with {}", resume_query(sent)),
            ),
        };
        frames.push(text_message(&[connection_event(event)]));
        frames.push(websocket::close_frame(code, &reason));
        if self.send(&frames).await.is_err() {
            return;
        }
        // Wait briefly for the client's close reply so it sees a clean close.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(incoming) = self.reader.recv().await {
                if matches!(incoming, Incoming::Close(_)) {
                    break;
                }
            }
        })
        .await;
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(writer) = self.writer.as_mut() {
            writer.shutdown().await;
        }
    }
}

struct SseState {
    viewing: Viewing,
    head: watch::Receiver<u64>,
    ended: watch::Receiver<bool>,
    next_frame: u64,
    sent: u64,
    closing: watch::Receiver<bool>,
    ping: tokio::time::Interval,
    inner: Arc<Inner>,
    _guard: ConnectionGuard,
    done: bool,
}

async fn next_sse_chunk(mut state: SseState) -> Option<(Bytes, SseState)> {
    if state.done {
        return None;
    }
    loop {
        state.head.mark_unchanged();
        match state
            .viewing
            .hub
            .frames_from(state.next_frame, MAX_COALESCED_FRAMES)
        {
            Ok(frames) if !frames.is_empty() => {
                state.next_frame += frames.len() as u64;
                let (chunks, events, newest) = unseen(&frames, state.sent, Transport::Sse);
                state.sent = newest;
                if chunks.is_empty() {
                    continue;
                }
                state
                    .inner
                    .stats
                    .deliveries
                    .fetch_add(events as u64, Ordering::Relaxed);
                return Some((chunks.concat().into(), state));
            }
            Ok(_) => {}
            Err(Missed(missed)) => {
                state.inner.stats.lagged.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(channel = %state.viewing.hub.channel_id, offset = state.sent, missed, "live connection lagged");
                state.done = true;
                let mut out = BytesMut::new();
                let sent = state.viewing.hub.wire(state.sent);
                let message = format!(
                    "this connection fell behind; reconnect with {} to get what it missed",
                    resume_query(sent)
                );
                sse_event(
                    &mut out,
                    None,
                    "lagged",
                    &control("lagged", sent, serde_json::json!({"message": message})),
                );
                return Some((out.freeze(), state));
            }
        }
        let closing = tokio::select! {
            biased;
            () = shutting_down(&mut state.closing) => true,
            () = shutting_down(&mut state.ended) => true,
            changed = state.head.changed() => changed.is_err(),
            _ = state.ping.tick() => return Some((Bytes::from_static(b": ping\n\n"), state)),
        };
        if closing {
            state.done = true;
            let mut out = BytesMut::new();
            let sent = state.viewing.hub.wire(state.sent);
            let message = format!(
                "the server is restarting; reconnect with {}",
                resume_query(sent)
            );
            let retry = state.inner.settings.reconnect_delay.as_millis() as u64;
            sse_event(
                &mut out,
                None,
                "closing",
                &control(
                    "closing",
                    sent,
                    serde_json::json!({"message": message, "retryAfterMs": retry}),
                ),
            );
            return Some((out.freeze(), state));
        }
    }
}

/// `?after=OFFSET&epoch=EPOCH` (or `?after=EPOCH:OFFSET`), or SSE's
/// `Last-Event-ID` header (`EPOCH:OFFSET`) on a browser's reconnect.
fn resume_position(parts: &http::request::Parts) -> Result<Option<Resume>, String> {
    let query_value = |wanted: &str| {
        parts.uri.query().and_then(|query| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.into_owned())
        })
    };
    let from_query = query_value("after");
    let from_header = || {
        parts
            .headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let Some(value) = from_query.or_else(from_header) else {
        return Ok(None);
    };
    let unusable = || {
        format!(
            "after must be an event offset (a whole number such as 42, or EPOCH:OFFSET as in an event id), not {value:?}"
        )
    };
    let (named_epoch, offset) = match value.trim().split_once(':') {
        Some((epoch, offset)) => (Some(epoch.to_owned()), offset),
        None => (None, value.trim()),
    };
    let after = offset.parse::<u64>().map_err(|_| unusable())?;
    let epoch = match named_epoch.or_else(|| query_value("epoch")) {
        None => None,
        Some(epoch) => Some(epoch.trim().parse::<u64>().map_err(|_| {
            format!(
                "epoch must be the live stream's epoch as the ready event gives it (digits), not {epoch:?}"
            )
        })?),
    };
    Ok(Some(Resume { epoch, after }))
}

/// `{"type":…,"offset":…,"data":…}` for one event on the bus.
fn event_json(
    pool: &DescriptorPool,
    kind: LiveKind,
    offset: u64,
    payload: &[u8],
) -> Result<Bytes, String> {
    let any = decode_live_payload(payload).map_err(|error| error.to_string())?;
    let name = type_name(&any);
    let descriptor = pool
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown message type {name:?}"))?;
    let message = DynamicMessage::decode(descriptor, any.value.as_slice())
        .map_err(|error| error.to_string())?;
    let mut json = Vec::with_capacity(64 + any.value.len() * 2);
    json.extend_from_slice(
        format!(r#"{{"type":"{}","offset":{offset},"data":"#, kind.as_str()).as_bytes(),
    );
    crate::json::write_message(&mut json, &message).map_err(|error| error.to_string())?;
    json.push(b'}');
    Ok(Bytes::from(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: u64 = 1_764_000_000_000_000;

    fn after(after: u64) -> Option<Resume> {
        Some(Resume { epoch: None, after })
    }

    fn event(offset: u64) -> Event {
        Event {
            offset,
            sequence: offset,
            epoch: EPOCH,
            json: Bytes::from(format!(
                r#"{{"type":"comment","offset":{offset},"data":{{}}}}"#
            )),
        }
    }

    fn hub() -> ChannelHub {
        ChannelHub::new("news", EPOCH, 0, 0, 1)
    }

    fn keeping(history_events: usize, queue_frames: usize) -> LiveSettings {
        LiveSettings {
            history_events,
            queue_frames,
            ..LiveSettings::default()
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
    fn a_resume_gets_the_history_after_its_offset_then_new_frames() {
        let hub = hub();
        let settings = keeping(100, 8);
        hub.publish(vec![event(1), event(2)], &settings);
        hub.publish(vec![event(5)], &settings);
        let joined = hub.join(after(1), false);
        assert_eq!(
            joined
                .backlog
                .iter()
                .map(|event| event.offset)
                .collect::<Vec<_>>(),
            [2, 5]
        );
        assert_eq!(joined.sent, 5);
        assert_eq!(joined.reset, None);
        hub.publish(vec![event(6)], &settings);
        let Ok(frames) = hub.frames_from(joined.next_frame, MAX_COALESCED_FRAMES) else {
            panic!("the ring holds the next frame");
        };
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].first, 6);

        let fresh = hub.join(None, false);
        assert!(fresh.backlog.is_empty());
        assert_eq!(fresh.sent, 6);
    }

    #[test]
    fn a_resume_older_than_the_history_is_flagged() {
        let hub = hub();
        hub.publish(vec![event(1), event(2), event(3)], &keeping(2, 8));
        let joined = hub.join(after(0), false);
        assert_eq!(joined.reset, Some(ResetReason::History));
        assert_eq!(
            joined
                .backlog
                .iter()
                .map(|event| event.offset)
                .collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(hub.join(after(1), false).reset, None);
    }

    #[test]
    fn a_connection_further_behind_than_the_ring_learns_how_far() {
        let hub = hub();
        let settings = keeping(100, 2);
        let joined = hub.join(None, false);
        for offset in 1..=5 {
            hub.publish(vec![event(offset)], &settings);
        }
        let Err(Missed(missed)) = hub.frames_from(joined.next_frame, MAX_COALESCED_FRAMES) else {
            panic!("the first frames are gone");
        };
        assert_eq!(missed, 3);
        let Ok(kept) = hub.frames_from(joined.next_frame + missed, MAX_COALESCED_FRAMES) else {
            panic!("the ring holds the newest frames");
        };
        assert_eq!(
            kept.iter().map(|frame| frame.first).collect::<Vec<_>>(),
            [4, 5]
        );
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

    #[test]
    fn a_resume_from_another_epoch_or_ahead_of_the_stream_is_reset_to_the_head() {
        let hub = hub();
        let settings = keeping(100, 8);
        hub.publish(vec![event(1), event(2), event(3)], &settings);
        let other_epoch = hub.join(
            Some(Resume {
                epoch: Some(EPOCH - 1),
                after: 1,
            }),
            false,
        );
        assert_eq!(other_epoch.reset, Some(ResetReason::Epoch));
        assert!(other_epoch.backlog.is_empty());
        assert_eq!(other_epoch.sent_wire, (EPOCH, 3));
        let same_epoch = hub.join(
            Some(Resume {
                epoch: Some(EPOCH),
                after: 1,
            }),
            false,
        );
        assert_eq!(same_epoch.reset, None);
        assert_eq!(same_epoch.backlog.len(), 2);
        let ahead = hub.join(after(77), false);
        assert_eq!(ahead.reset, Some(ResetReason::Ahead));
        assert_eq!(ahead.sent_wire, (EPOCH, 3));
        let ahead_but_published = hub.join(after(4), true);
        assert_eq!(ahead_but_published.reset, None);
        assert_eq!(ahead_but_published.sent_wire, (EPOCH, 4));
    }

    #[test]
    fn an_interruption_reaches_every_viewer_that_resumes_from_before_it() {
        let hub = hub();
        let settings = keeping(100, 8);
        hub.publish(vec![event(1), event(2)], &settings);
        // The bus was down; the same stream comes back and the feed goes on
        // from sequence 3 in a new segment.
        let segment = hub.begin_segment(EPOCH, 3, &settings);
        assert_eq!(segment, 1);
        let later = Event {
            offset: position(segment, 3),
            ..event(3)
        };
        hub.publish(vec![later], &settings);

        let before = hub.join(after(2), false);
        let types: Vec<(String, u64)> = before
            .backlog
            .iter()
            .map(|event| {
                let json: serde_json::Value = serde_json::from_slice(&event.json).unwrap();
                (
                    json["type"].as_str().unwrap().to_owned(),
                    json["offset"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            types,
            [("reset".to_owned(), 2), ("comment".to_owned(), 3)],
            "a viewer that left before the outage is told of it"
        );
        let after_it = hub.join(after(3), false);
        assert!(after_it.backlog.is_empty());
        assert_eq!(after_it.sent_wire, (EPOCH, 3));

        // The stream itself started over under another epoch.
        let new_epoch = EPOCH + 5;
        let segment = hub.begin_segment(new_epoch, 1, &settings);
        let fresh = Event {
            offset: position(segment, 1),
            sequence: 1,
            epoch: new_epoch,
            ..event(1)
        };
        hub.publish(vec![fresh], &settings);
        let old = hub.join(
            Some(Resume {
                epoch: Some(EPOCH),
                after: 3,
            }),
            false,
        );
        assert_eq!(
            old.backlog.len(),
            2,
            "the reset, then the new epoch's event"
        );
        assert_eq!(old.sent_wire, (new_epoch, 1));
        let current = hub.join(after(0), false);
        assert_eq!(current.backlog.len(), 1, "only the new epoch's event");
        assert_eq!(hub.join(None, false).sent_wire, (new_epoch, 1));
    }

    #[test]
    fn resume_offsets_come_from_the_query_or_last_event_id() {
        let parts = |uri: &str, header: Option<&str>| {
            let mut request = http::Request::builder().uri(uri);
            if let Some(header) = header {
                request = request.header("last-event-id", header);
            }
            request.body(()).unwrap().into_parts().0
        };
        let resume = |epoch, after| Ok(Some(Resume { epoch, after }));
        assert_eq!(
            resume_position(&parts("/live?after=42", None)),
            resume(None, 42)
        );
        assert_eq!(
            resume_position(&parts("/live?after=42&epoch=9", None)),
            resume(Some(9), 42)
        );
        assert_eq!(
            resume_position(&parts("/live?after=9:42", None)),
            resume(Some(9), 42)
        );
        assert_eq!(resume_position(&parts("/live", Some("7"))), resume(None, 7));
        assert_eq!(
            resume_position(&parts("/live", Some("3:7"))),
            resume(Some(3), 7)
        );
        assert_eq!(resume_position(&parts("/live", None)), Ok(None));
        assert!(resume_position(&parts("/live?after=yesterday", None)).is_err());
        assert!(resume_position(&parts("/live?after=1&epoch=today", None)).is_err());
        assert!(resume_position(&parts("/live?after=x:1", None)).is_err());
    }
}
