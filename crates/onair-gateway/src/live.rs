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
//! - Every connection reads the channel's frames from one shared ring of
//!   [`LiveSettings::queue_frames`] frames, so memory does not grow with a slow
//!   reader. A connection that falls further behind than the ring is told
//!   `lagged` with the last offset it received and closed; it reconnects with
//!   `?after=OFFSET` and gets what it missed from the hub's history, without a
//!   gap. The others never wait for it.
//! - Offsets are the sequences of the bus's live stream
//!   ([`onair_kit::live`]), the same on every gateway pod, so a viewer may resume
//!   on any of them.
//! - WebSocket pings keep connections alive and find dead ones; SSE gets comment
//!   lines. On shutdown every connection gets a `closing` event with the offset to
//!   resume from and a reconnect delay, then a clean close.
//!
//! On the wire, a WebSocket text message is a JSON array of events; with SSE each
//! event is its own message (`id:` is its offset, so `EventSource` resumes by
//! itself with `Last-Event-ID`). An event is
//! `{"type": "comment", "offset": 17, "data": {…}}`; `data` is the service's
//! message in the proto3 JSON mapping. Besides the five event types
//! (`comment`, `viewers`, `poll`, `moderation`, `schedule`) a connection sees
//! `ready` (first, with the offset it starts after), `reset` (a resume asked for
//! events this gateway no longer has), `lagged` and `closing`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use http::{HeaderValue, StatusCode};
use onair_kit::bus::{BusError, Message as BusMessage, SharedBus, Subscription};
use onair_kit::live::{LIVE_STREAM, LiveKind, channel_pattern, parse_subject};
use onair_kit::metrics::Registry;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use tokio::sync::{broadcast, watch};

use crate::status_response;
use crate::websocket::{self, Incoming, ReadError, Socket};

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
    /// How often connections are pinged; a WebSocket that answers none of two
    /// pings is closed, and so is one whose writes stall that long.
    pub ping_interval: Duration,
    /// What clients are told to wait before they reconnect after a shutdown.
    pub reconnect_delay: Duration,
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
    stats: Stats,
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
    offset: u64,
    json: Bytes,
}

/// What the hub hands every connection of a channel.
enum Frame {
    Events(EventFrame),
    /// Time to ping (WebSocket) or send a comment line (SSE).
    Ping,
}

/// The most frames a lagging WebSocket connection writes at once.
const MAX_COALESCED_FRAMES: usize = 16;

/// The largest message a viewer may send on a live WebSocket. Viewers have
/// nothing to say there; this only bounds what a misbehaving client costs.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

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
            Some(event.offset),
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

fn sse_event(out: &mut BytesMut, id: Option<u64>, kind: &str, data: &[u8]) {
    if let Some(id) = id {
        out.put_slice(format!("id: {id}\n").as_bytes());
    }
    out.put_slice(format!("event: {kind}\ndata: ").as_bytes());
    // JSON from serde_json holds no raw newlines.
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

/// A control event for one connection.
fn control(kind: &str, offset: u64, extra: serde_json::Value) -> Bytes {
    let mut event = serde_json::json!({"type": kind, "offset": offset});
    if let (Some(event), serde_json::Value::Object(extra)) = (event.as_object_mut(), extra) {
        event.extend(extra);
    }
    Bytes::from(serde_json::to_vec(&event).unwrap_or_default())
}

/// One channel's subscription, history and ring of frames.
struct ChannelHub {
    channel_id: String,
    frames: broadcast::Sender<Arc<Frame>>,
    state: Mutex<HubState>,
    /// The last offset in the stream when the hub opened: a viewer who joins
    /// without `after` starts after it, even while older events are still
    /// being loaded into the history.
    live_from: u64,
}

struct HubState {
    /// The newest events, oldest first.
    history: VecDeque<Event>,
    /// Every event of the channel after this offset is in `history` (or still
    /// on its way from the bus); older ones may be missing.
    complete_after: u64,
    /// The newest offset handed to connections.
    head: u64,
}

/// Where a new connection starts.
struct Joined {
    frames: broadcast::Receiver<Arc<Frame>>,
    /// Events it missed, from the history, to send before the frames.
    backlog: Vec<Event>,
    /// The offset it has everything up to, once the backlog is sent.
    sent: u64,
    /// The resume asked for events older than the history holds.
    incomplete: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChannelHub {
    fn join(&self, after: Option<u64>) -> Joined {
        // Under the state lock, which the hub holds while it records and sends a
        // frame: the connection gets each event exactly once, from the backlog or
        // from a frame.
        let state = lock(&self.state);
        let frames = self.frames.subscribe();
        let head = state.head.max(self.live_from);
        match after {
            Some(after) if after < head => {
                let backlog = state
                    .history
                    .iter()
                    .filter(|event| event.offset > after)
                    .cloned()
                    .collect();
                Joined {
                    frames,
                    backlog,
                    sent: state.head.max(after),
                    incomplete: after < state.complete_after,
                }
            }
            Some(after) => Joined {
                frames,
                backlog: Vec::new(),
                sent: after,
                incomplete: false,
            },
            None => Joined {
                frames,
                backlog: Vec::new(),
                sent: head,
                incomplete: false,
            },
        }
    }

    /// Records a batch and hands it to every connection.
    fn publish(&self, events: Vec<Event>, history_events: usize) {
        let frame = Arc::new(Frame::Events(EventFrame::new(events)));
        let Frame::Events(batch) = frame.as_ref() else {
            return;
        };
        let mut state = lock(&self.state);
        for event in &batch.events {
            state.history.push_back(event.clone());
        }
        while state.history.len() > history_events {
            if let Some(dropped) = state.history.pop_front() {
                state.complete_after = dropped.offset;
            }
        }
        state.head = state.head.max(batch.last);
        // No receivers is fine: nobody watches right now.
        let _ = self.frames.send(frame.clone());
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
        Live {
            inner: Arc::new(Inner {
                bus,
                pool,
                settings,
                check_channel,
                hubs: tokio::sync::Mutex::new(HashMap::new()),
                closing,
                stats: Stats::new(metrics),
            }),
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
        let after = match resume_offset(&parts) {
            Ok(after) => after,
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
        let (hub, joined) = match self.join(&channel_id, after).await {
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
            None => self.sse_response(hub, joined),
            Some(upgrade) => {
                let live = self.clone();
                upgrade.accept(MAX_CLIENT_MESSAGE, move |socket| {
                    live.websocket(socket, hub, joined)
                })
            }
        }
    }

    /// The channel's hub (opened if needed) and a place in it.
    async fn join(
        &self,
        channel_id: &str,
        after: Option<u64>,
    ) -> Result<(Arc<ChannelHub>, Joined), BusError> {
        let mut hubs = self.inner.hubs.lock().await;
        if let Some(hub) = hubs.get(channel_id) {
            let joined = hub.join(after);
            return Ok((hub.clone(), joined));
        }
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
        let (frames, _) = broadcast::channel(self.inner.settings.queue_frames.max(1));
        let hub = Arc::new(ChannelHub {
            channel_id: channel_id.to_owned(),
            frames,
            state: Mutex::new(HubState {
                history: VecDeque::new(),
                complete_after: start.saturating_sub(1),
                head: start.saturating_sub(1),
            }),
            live_from: bounds.last,
        });
        hubs.insert(channel_id.to_owned(), hub.clone());
        self.inner.stats.channels.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(channel = channel_id, from = start, "live feed opened");
        tokio::spawn(self.clone().run_hub(hub.clone(), feed));
        let joined = hub.join(after);
        Ok((hub, joined))
    }

    /// Reads the channel's events from the bus, batches them and hands the
    /// frames out, until nobody has watched for two ping intervals or the server
    /// shuts down.
    async fn run_hub(self, hub: Arc<ChannelHub>, mut feed: Subscription) {
        let settings = &self.inner.settings;
        let mut closing = self.inner.closing.subscribe();
        let mut ping = tokio::time::interval(settings.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut idle_ticks = 0;
        let mut pending: Vec<Event> = Vec::new();
        let flush_at = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(flush_at);
        loop {
            tokio::select! {
                message = feed.next() => {
                    let Some(message) = message else {
                        tracing::warn!(channel = %hub.channel_id, "the live feed ended");
                        break;
                    };
                    if let Some(event) = self.event(&message) {
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
                _ = ping.tick() => {
                    let _ = hub.frames.send(Arc::new(Frame::Ping));
                    if hub.frames.receiver_count() > 0 {
                        idle_ticks = 0;
                        continue;
                    }
                    idle_ticks += 1;
                    if idle_ticks >= 2 {
                        let mut hubs = self.inner.hubs.lock().await;
                        // Joins happen under this lock: nobody can be joining now.
                        if hub.frames.receiver_count() == 0 {
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
        self.inner.stats.channels.fetch_sub(1, Ordering::Relaxed);
    }

    fn flush(&self, hub: &ChannelHub, pending: &mut Vec<Event>) {
        if pending.is_empty() {
            return;
        }
        self.inner.stats.frames.fetch_add(1, Ordering::Relaxed);
        hub.publish(std::mem::take(pending), self.inner.settings.history_events);
    }

    /// Turns a bus message into the event's JSON, once.
    fn event(&self, message: &BusMessage) -> Option<Event> {
        self.inner.stats.events.fetch_add(1, Ordering::Relaxed);
        let offset = message.sequence?;
        let decoded = parse_subject(&message.subject)
            .ok_or_else(|| format!("unexpected subject {}", message.subject))
            .and_then(|(_channel, kind)| {
                event_json(&self.inner.pool, kind, offset, &message.payload)
                    .map_err(|error| format!("{kind:?} event {offset}: {error}"))
            });
        match decoded {
            Ok(json) => Some(Event { offset, json }),
            Err(error) => {
                self.inner.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %error, "skipping a live event that does not decode");
                None
            }
        }
    }

    fn sse_response(&self, hub: Arc<ChannelHub>, joined: Joined) -> Response {
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
            &control("ready", joined.sent, serde_json::json!({})),
        );
        if joined.incomplete {
            sse_event(&mut start, None, "reset", &reset_event(&joined));
        }
        let backlog = sse_events(&joined.backlog);
        let state = SseState {
            hub,
            frames: joined.frames,
            sent: joined.sent,
            closing: inner.closing.subscribe(),
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

    async fn websocket(self, socket: Socket, hub: Arc<ChannelHub>, joined: Joined) {
        let inner = self.inner;
        inner
            .stats
            .websocket_connections
            .fetch_add(1, Ordering::Relaxed);
        let _guard = ConnectionGuard(inner.stats.websocket_connections.clone());
        let mut connection = WebSocketConnection {
            socket,
            sent: joined.sent,
            inner: inner.clone(),
            answered_ping: true,
        };
        let mut opening = vec![control("ready", joined.sent, serde_json::json!({}))];
        if joined.incomplete {
            opening.push(reset_event(&joined));
        }
        let opening: Vec<Event> = opening
            .into_iter()
            .map(|json| Event { offset: 0, json })
            .collect();
        if connection
            .send_text(text_message(&opening), 0)
            .await
            .is_err()
        {
            return;
        }
        // What it missed, in frames no larger than the live ones.
        let chunk_size = inner.settings.max_batch_events.max(1);
        for chunk in joined.backlog.chunks(chunk_size) {
            if connection
                .send_text(text_message(chunk), chunk.len())
                .await
                .is_err()
            {
                return;
            }
            if let Some(last) = chunk.last() {
                connection.sent = connection.sent.max(last.offset);
            }
        }
        let mut frames = joined.frames;
        let mut closing = inner.closing.subscribe();
        let outcome = loop {
            tokio::select! {
                incoming = connection.socket.recv() => match incoming {
                    Ok(Incoming::Pong) => connection.answered_ping = true,
                    Ok(Incoming::Ping(payload)) => {
                        let pong = websocket::frame(websocket::OPCODE_PONG, &payload);
                        if connection.send(&[pong]).await.is_err() {
                            break Outcome::Gone;
                        }
                    }
                    // Viewers have nothing to say on the live stream.
                    Ok(Incoming::Data) => {}
                    Ok(Incoming::Close(code)) => break Outcome::ClosedByClient(code),
                    Err(ReadError::Gone) => break Outcome::Gone,
                    Err(ReadError::Refused(code, reason)) => break Outcome::Refused(code, reason),
                },
                frame = frames.recv() => match frame {
                    Ok(frame) => {
                        // A connection that fell behind has more frames
                        // waiting: they go out in one write instead of one
                        // per frame, which is what lets a saturated server
                        // catch up.
                        let mut batches = vec![frame];
                        let mut then = None;
                        while matches!(batches.last().map(|frame| frame.as_ref()), Some(Frame::Events(_)))
                            && batches.len() < MAX_COALESCED_FRAMES
                        {
                            match frames.try_recv() {
                                Ok(next) => batches.push(next),
                                Err(broadcast::error::TryRecvError::Empty) => break,
                                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                                    then = Some(Outcome::Lagged(missed));
                                    break;
                                }
                                Err(broadcast::error::TryRecvError::Closed) => {
                                    then = Some(Outcome::Closing);
                                    break;
                                }
                            }
                        }
                        let ping = matches!(batches.last().map(|frame| frame.as_ref()), Some(Frame::Ping));
                        if ping {
                            batches.pop();
                        }
                        let events: Vec<&EventFrame> = batches
                            .iter()
                            .filter_map(|frame| match frame.as_ref() {
                                Frame::Events(batch) => Some(batch),
                                Frame::Ping => None,
                            })
                            .collect();
                        if connection.deliver_all(&events).await.is_err() {
                            break Outcome::Gone;
                        }
                        if let Some(outcome) = then {
                            break outcome;
                        }
                        if ping {
                            if !connection.answered_ping {
                                break Outcome::Unresponsive;
                            }
                            connection.answered_ping = false;
                            if connection.send(&[Bytes::from_static(websocket::PING)]).await.is_err() {
                                break Outcome::Gone;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => break Outcome::Lagged(missed),
                    Err(broadcast::error::RecvError::Closed) => break Outcome::Closing,
                },
                () = shutting_down(&mut closing) => break Outcome::Closing,
            }
        };
        drop(frames);
        connection.finish(outcome, &hub.channel_id).await;
    }
}

/// Resolves once the server starts shutting down.
async fn shutting_down(closing: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens at shutdown too.
    let _ = closing.wait_for(|closing| *closing).await;
}

/// Counts a connection while it is open.
struct ConnectionGuard(Arc<AtomicI64>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn reset_event(joined: &Joined) -> Bytes {
    control(
        "reset",
        joined.sent,
        serde_json::json!({
            "message": "some events after the requested offset are no longer kept; reload the channel's state"
        }),
    )
}

/// Why a WebSocket connection ends.
enum Outcome {
    /// The client went away.
    Gone,
    /// The client closed it, with this code if it gave one.
    ClosedByClient(Option<u16>),
    /// The client broke the protocol.
    Refused(u16, &'static str),
    /// It fell further behind than the ring holds.
    Lagged(u64),
    /// It answered no ping for a whole interval.
    Unresponsive,
    /// The server is shutting down or the channel's feed ended.
    Closing,
}

struct WebSocketConnection {
    socket: Socket,
    /// The newest offset this connection has received.
    sent: u64,
    inner: Arc<Inner>,
    answered_ping: bool,
}

/// The connection is gone or stalled; stop serving it.
struct Stalled;

impl WebSocketConnection {
    /// Writes whole frames, in one system call where the socket takes them.
    async fn send(&mut self, frames: &[Bytes]) -> Result<(), Stalled> {
        // A client that stops reading fills the socket; it may hold one write
        // for as long as a ping may go unanswered.
        // The timer is armed only when the socket is full, so the common write
        // costs no timer.
        let limit = self.inner.settings.ping_interval * 2;
        let mut sending = std::pin::pin!(self.socket.write(frames));
        let sent = match futures::poll!(sending.as_mut()) {
            std::task::Poll::Ready(sent) => sent,
            std::task::Poll::Pending => match tokio::time::timeout(limit, sending).await {
                Ok(sent) => sent,
                Err(_elapsed) => return Err(Stalled),
            },
        };
        sent.map_err(|_| Stalled)
    }

    /// Writes a text frame that carries `events` events.
    async fn send_text(&mut self, frame: Bytes, events: usize) -> Result<(), Stalled> {
        self.send(std::slice::from_ref(&frame)).await?;
        self.count_deliveries(events);
        Ok(())
    }

    fn count_deliveries(&self, events: usize) {
        self.inner
            .stats
            .deliveries
            .fetch_add(events as u64, Ordering::Relaxed);
    }

    /// Sends what the connection has not seen of the frames: each as its
    /// shared bytes, all in one write. Only a frame the connection has partly
    /// seen (right after a resume) is put together for it alone.
    async fn deliver_all(&mut self, batches: &[&EventFrame]) -> Result<(), Stalled> {
        let mut frames = Vec::with_capacity(batches.len());
        let mut events = 0;
        let mut sent = self.sent;
        for batch in batches {
            if batch.last <= sent {
                continue;
            }
            if batch.first > sent {
                frames.push(batch.websocket.clone());
                events += batch.events.len();
            } else {
                let unseen: Vec<Event> = batch
                    .events
                    .iter()
                    .filter(|event| event.offset > sent)
                    .cloned()
                    .collect();
                events += unseen.len();
                frames.push(text_message(&unseen));
            }
            sent = batch.last;
        }
        if frames.is_empty() {
            return Ok(());
        }
        self.send(&frames).await?;
        self.count_deliveries(events);
        self.sent = sent;
        Ok(())
    }

    async fn finish(mut self, outcome: Outcome, channel_id: &str) {
        let settings = &self.inner.settings;
        let (event, code, reason) = match outcome {
            Outcome::Gone => return,
            Outcome::ClosedByClient(code) => {
                let _ = self.send(&[websocket::close_reply(code)]).await;
                self.socket.shutdown().await;
                return;
            }
            Outcome::Refused(code, reason) => {
                tracing::debug!(
                    channel = channel_id,
                    code,
                    reason,
                    "live connection broke the protocol"
                );
                let _ = self.send(&[websocket::close_frame(code, reason)]).await;
                self.socket.shutdown().await;
                return;
            }
            Outcome::Lagged(missed) => {
                self.inner.stats.lagged.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    channel = channel_id,
                    offset = self.sent,
                    missed,
                    "live connection lagged"
                );
                (
                    control(
                        "lagged",
                        self.sent,
                        serde_json::json!({
                            "message": format!("this connection fell behind; reconnect with ?after={} to get what it missed", self.sent)
                        }),
                    ),
                    // Try Again Later.
                    1013,
                    format!("lagged; resume with ?after={}", self.sent),
                )
            }
            Outcome::Unresponsive => (
                control(
                    "closing",
                    self.sent,
                    serde_json::json!({"message": "no answer to ping", "retryAfterMs": settings.reconnect_delay.as_millis() as u64}),
                ),
                // Policy Violation is the closest: the peer broke the keepalive.
                1008,
                "no answer to ping".to_owned(),
            ),
            Outcome::Closing => (
                control(
                    "closing",
                    self.sent,
                    serde_json::json!({
                        "message": format!("the server is restarting; reconnect with ?after={}", self.sent),
                        "retryAfterMs": settings.reconnect_delay.as_millis() as u64,
                    }),
                ),
                // Service Restart.
                1012,
                format!("restarting; resume with ?after={}", self.sent),
            ),
        };
        let event = Event {
            offset: 0,
            json: event,
        };
        let goodbye = [
            text_message(&[event]),
            websocket::close_frame(code, &reason),
        ];
        if self.send(&goodbye).await.is_err() {
            return;
        }
        // Wait briefly for the client's close reply so it sees a clean close.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(incoming) = self.socket.recv().await {
                if matches!(incoming, Incoming::Close(_)) {
                    break;
                }
            }
        })
        .await;
        self.socket.shutdown().await;
    }
}

struct SseState {
    hub: Arc<ChannelHub>,
    frames: broadcast::Receiver<Arc<Frame>>,
    sent: u64,
    closing: watch::Receiver<bool>,
    inner: Arc<Inner>,
    _guard: ConnectionGuard,
    done: bool,
}

async fn next_sse_chunk(mut state: SseState) -> Option<(Bytes, SseState)> {
    if state.done {
        return None;
    }
    loop {
        let frame = tokio::select! {
            frame = state.frames.recv() => frame,
            () = shutting_down(&mut state.closing) => Err(broadcast::error::RecvError::Closed),
        };
        let chunk = match frame {
            Ok(frame) => match frame.as_ref() {
                Frame::Events(batch) => {
                    if batch.last <= state.sent {
                        continue;
                    }
                    let chunk = if batch.first > state.sent {
                        batch.sse.clone()
                    } else {
                        let unseen: Vec<Event> = batch
                            .events
                            .iter()
                            .filter(|event| event.offset > state.sent)
                            .cloned()
                            .collect();
                        sse_events(&unseen)
                    };
                    state
                        .inner
                        .stats
                        .deliveries
                        .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                    state.sent = batch.last;
                    chunk
                }
                Frame::Ping => Bytes::from_static(b": ping\n\n"),
            },
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                state.inner.stats.lagged.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(channel = %state.hub.channel_id, offset = state.sent, missed, "live connection lagged");
                state.done = true;
                let mut out = BytesMut::new();
                let message = format!(
                    "this connection fell behind; reconnect with ?after={} to get what it missed",
                    state.sent
                );
                sse_event(
                    &mut out,
                    None,
                    "lagged",
                    &control(
                        "lagged",
                        state.sent,
                        serde_json::json!({"message": message}),
                    ),
                );
                out.freeze()
            }
            Err(broadcast::error::RecvError::Closed) => {
                state.done = true;
                let mut out = BytesMut::new();
                let message = format!(
                    "the server is restarting; reconnect with ?after={}",
                    state.sent
                );
                let retry = state.inner.settings.reconnect_delay.as_millis() as u64;
                sse_event(
                    &mut out,
                    None,
                    "closing",
                    &control(
                        "closing",
                        state.sent,
                        serde_json::json!({"message": message, "retryAfterMs": retry}),
                    ),
                );
                out.freeze()
            }
        };
        return Some((chunk, state));
    }
}

/// `?after=OFFSET`, or SSE's `Last-Event-ID` header on a browser's reconnect.
fn resume_offset(parts: &http::request::Parts) -> Result<Option<u64>, String> {
    let from_query = parts.uri.query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "after")
            .map(|(_, value)| value.into_owned())
    });
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
    value.trim().parse::<u64>().map(Some).map_err(|_| {
        format!("after must be an event offset (a whole number such as 42), not {value:?}")
    })
}

/// `{"type":…,"offset":…,"data":…}` for one event on the bus.
fn event_json(
    pool: &DescriptorPool,
    kind: LiveKind,
    offset: u64,
    payload: &[u8],
) -> Result<Bytes, String> {
    let any = prost_types::Any::decode(payload).map_err(|error| error.to_string())?;
    let name = any
        .type_url
        .rsplit_once('/')
        .map_or(any.type_url.as_str(), |(_, name)| name);
    let descriptor = pool
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown message type {name:?}"))?;
    let message = DynamicMessage::decode(descriptor, any.value.as_slice())
        .map_err(|error| error.to_string())?;
    let mut json = Vec::with_capacity(64 + any.value.len() * 2);
    json.extend_from_slice(
        format!(r#"{{"type":"{}","offset":{offset},"data":"#, kind.as_str()).as_bytes(),
    );
    let mut serializer = serde_json::Serializer::new(&mut json);
    message
        .serialize_with_options(&mut serializer, &crate::serialize_options())
        .map_err(|error| error.to_string())?;
    json.push(b'}');
    Ok(Bytes::from(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(offset: u64) -> Event {
        Event {
            offset,
            json: Bytes::from(format!(
                r#"{{"type":"comment","offset":{offset},"data":{{}}}}"#
            )),
        }
    }

    fn hub() -> ChannelHub {
        let (frames, _) = broadcast::channel(8);
        ChannelHub {
            channel_id: "news".to_owned(),
            frames,
            state: Mutex::new(HubState {
                history: VecDeque::new(),
                complete_after: 0,
                head: 0,
            }),
            live_from: 0,
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
        assert!(sse.starts_with("id: 3\nevent: comment\ndata: {"));
        assert!(sse.contains("\n\nid: 7\n"));
    }

    #[test]
    fn a_resume_gets_the_history_after_its_offset_then_new_frames() {
        let hub = hub();
        hub.publish(vec![event(1), event(2)], 100);
        hub.publish(vec![event(5)], 100);
        let mut joined = hub.join(Some(1));
        assert_eq!(
            joined
                .backlog
                .iter()
                .map(|event| event.offset)
                .collect::<Vec<_>>(),
            [2, 5]
        );
        assert_eq!(joined.sent, 5);
        assert!(!joined.incomplete);
        hub.publish(vec![event(6)], 100);
        let frame = joined.frames.try_recv().expect("the next frame");
        let Frame::Events(batch) = frame.as_ref() else {
            panic!("expected events");
        };
        assert_eq!(batch.first, 6);

        let fresh = hub.join(None);
        assert!(fresh.backlog.is_empty());
        assert_eq!(fresh.sent, 6);
    }

    #[test]
    fn a_resume_older_than_the_history_is_flagged() {
        let hub = hub();
        hub.publish(vec![event(1), event(2), event(3)], 2);
        let joined = hub.join(Some(0));
        assert!(joined.incomplete);
        assert_eq!(
            joined
                .backlog
                .iter()
                .map(|event| event.offset)
                .collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(!hub.join(Some(1)).incomplete);
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
        assert_eq!(resume_offset(&parts("/live?after=42", None)), Ok(Some(42)));
        assert_eq!(resume_offset(&parts("/live", Some("7"))), Ok(Some(7)));
        assert_eq!(resume_offset(&parts("/live", None)), Ok(None));
        assert!(resume_offset(&parts("/live?after=yesterday", None)).is_err());
    }
}
