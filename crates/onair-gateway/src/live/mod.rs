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
//! - Where the station counts its audience, each connection holds its
//!   viewer on the presence board ([`onair_kit::presence`]) while it is
//!   open: a signed-in viewer (a bearer token in `Authorization`, or
//!   `?access_token=` where a browser can't set headers) once however many
//!   tabs, an anonymous connection once.
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
//!
//! The pieces, each using only those listed before it: `settings`; `frames`
//! (events, their encodings, control events); `resume` (`?after=` and
//! `Last-Event-ID`); `catch_up` (the writing a WebSocket connection shares
//! with its hub writer); `hub` (a channel's history, ring and segments);
//! `shared` (what every task of this process shares); `writer` (a hub's
//! writer tasks); `feed` (a hub's bus subscription); `watcher` (the live
//! stream's health); `websocket_connection` and `sse_connection`. This
//! module opens hubs and answers the request.

mod catch_up;
mod feed;
mod frames;
mod hub;
mod resume;
mod settings;
mod shared;
mod sse_connection;
mod watcher;
mod websocket_connection;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::response::Response;
use futures::future::BoxFuture;
use http::{HeaderValue, StatusCode};
use onair_kit::bus::{BusError, SharedBus};
use onair_kit::events::{LIVE_STREAM, channel_pattern};
use onair_kit::metrics::Registry;
use onair_kit::presence::{ViewerKey, Watchers};
use prost_reflect::DescriptorPool;
use tokio::sync::watch;

pub use self::settings::LiveSettings;
pub use self::shared::ChannelCheck;
pub(crate) use self::sse_connection::accepts_event_stream;

use self::feed::Fed;
use self::hub::{ChannelHub, Joined, Viewing};
use self::resume::{Resume, resume_position};
use self::shared::{Inner, LivePath, Stats};
use self::websocket_connection::MAX_CLIENT_MESSAGE;
use crate::errors::{error_response, status_response};
use crate::websocket;

/// The live sockets of one gateway process. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

impl Live {
    /// Live sockets fed from `bus`, with event payloads decoded by `pool`;
    /// with `presence`, each connection's viewer is counted while it is
    /// open.
    pub fn new(
        bus: SharedBus,
        pool: DescriptorPool,
        check_channel: ChannelCheck,
        metrics: &Registry,
        settings: LiveSettings,
        presence: Option<Arc<Watchers>>,
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
                presence,
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(watcher::watch_live_stream(Arc::downgrade(&live.inner)));
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
    /// limits and credentials are checked by the caller), counting
    /// `viewer` on the channel while the connection is open.
    pub async fn serve(
        &self,
        channel_id: String,
        viewer: ViewerKey,
        request: axum::extract::Request,
    ) -> Response {
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
            return error_response(&status);
        }
        let sse = parts.method == http::Method::GET && accepts_event_stream(&parts.headers);
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
        let (mut viewing, joined) = match self.join(&channel_id, resume).await {
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
        if let Some(presence) = &self.inner.presence {
            viewing.presence = Some(presence.watch(&channel_id, viewer).await);
        }
        match upgrade {
            None => sse_connection::sse_response(&self.inner, viewing, joined),
            Some(upgrade) => {
                let inner = self.inner.clone();
                upgrade.accept(MAX_CLIENT_MESSAGE, move |socket| {
                    websocket_connection::websocket(inner, socket, viewing, joined)
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
            tokio::spawn(writer::run_writer(self.inner.clone(), hub.clone(), index));
        }
        let fed = Fed {
            segment: 0,
            epoch: bounds.epoch,
            last_sequence: start.saturating_sub(1),
            outages,
        };
        tokio::spawn(feed::run_hub(self.inner.clone(), hub.clone(), feed, fed));
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
}
