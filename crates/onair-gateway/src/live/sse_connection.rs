//! A live connection over server-sent events: the response that streams the
//! channel's frames from the hub's ring, with comment lines as pings and a
//! `closing` or `lagged` event at the end.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http::HeaderMap;
use http::HeaderValue;
use tokio::sync::watch;

use super::catch_up::{MAX_COALESCED_FRAMES, Missed};
use super::frames::{Transport, control, sse_event, sse_events, unseen};
use super::hub::{Joined, Viewing, reset_event};
use super::resume::resume_query;
use super::shared::{ConnectionGuard, Inner, shutting_down};

/// The response of a new SSE connection: its opening events, what it
/// missed, then the channel's frames as they come.
pub(super) fn sse_response(inner: &Arc<Inner>, viewing: Viewing, joined: Joined) -> Response {
    let inner = inner.clone();
    inner.stats.sse_connections.fetch_add(1, Ordering::Relaxed);
    let guard = ConnectionGuard(inner.stats.sse_connections.clone());
    let mut start = BytesMut::new();
    start
        .put_slice(format!("retry: {}\n\n", inner.settings.reconnect_delay.as_millis()).as_bytes());
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
            let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
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

/// Where an SSE connection is in the channel's frames.
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

/// The next bytes of an SSE connection: the frames it has not had, a ping,
/// or its goodbye.
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

/// Whether the client asks for server-sent events (`Accept:
/// text/event-stream`): a live connection, or a server stream, is then
/// sent as SSE.
pub(crate) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/event-stream"))
}
