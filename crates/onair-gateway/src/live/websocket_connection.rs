//! A live WebSocket connection: its task reads what the viewer sends,
//! answers pings and pings back, writes whenever the hub's writer cannot
//! (see `catch_up`), and says goodbye with the offset to resume
//! from.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::catch_up::{MAX_COALESCED_FRAMES, Missed, SharedWriter, lock};
use super::frames::{Event, Transport, connection_event, control, text_message, unseen};
use super::hub::{Joined, Viewing, reset_event};
use super::resume::resume_query;
use super::shared::{ConnectionGuard, Inner, shutting_down};
use crate::websocket::{self, Incoming, ReadError, Socket, SocketReader, SocketWriter};

/// The largest message a viewer may send on a live WebSocket. Viewers have
/// nothing to say there; this only bounds what a misbehaving client costs.
pub(super) const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Serves a live WebSocket connection from its first frames to its goodbye.
pub(super) async fn websocket(inner: Arc<Inner>, socket: Socket, viewing: Viewing, joined: Joined) {
    inner
        .stats
        .websocket_connections
        .fetch_add(1, Ordering::Relaxed);
    let _guard = ConnectionGuard(inner.stats.websocket_connections.clone());
    let Socket { reader, writer } = socket;
    let shared = Arc::new(SharedWriter::default());
    viewing.hub.add_connection(shared.clone());
    let mut connection = WebSocketConnection {
        reader,
        writer: Some(writer),
        shared,
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
/// writes whenever the hub cannot (see [`SharedWriter`]).
struct WebSocketConnection {
    reader: SocketReader,
    /// The socket's writing half while this task holds it.
    writer: Option<SocketWriter>,
    /// The writing side it shares with the hub's writer.
    shared: Arc<SharedWriter>,
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
                () = self.shared.handed_back.notified() => self.write(Vec::new(), 0).await,
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
        let mut state = lock(&self.shared.state);
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
                let mut state = lock(&self.shared.state);
                // Under the shared writer's lock the hub's writer cannot pass this
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
