//! The `AudienceService` gRPC service: viewer counts, heartbeats, viewer
//! sessions, each slot's audience, and polls.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use futures::Stream;
use futures::StreamExt as _;
use onair_kit::auth::{Authenticator, Caller};
use onair_kit::clock::timestamp_from_millis;
use onair_kit::metrics::Registry;
use onair_kit::presence::{Mark, ViewerKey, Watchers, Watching};
use onair_proto::audience::v1 as pb;
use onair_proto::audience::v1::audience_service_server::AudienceService;
use onair_proto::clients::MediaClient;
use onair_proto::media::v1 as media;
use onair_proto::user::v1::Role;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::counter::Counter;
use crate::error::AudienceError;
use crate::polls::{NewPoll, Polls};
use crate::store::AudienceStore;

/// The most channels one `BatchGetViewerCounts` names.
pub const MAX_BATCH_CHANNELS: usize = 1000;

/// How many counts a `ViewerSession` stream holds for a client that reads
/// slowly; a client further behind gets the latest count when it catches up.
const SESSION_QUEUE: usize = 4;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The audience service. Cheap to clone.
#[derive(Clone)]
pub struct AudienceServiceImpl {
    inner: Arc<Inner>,
}

struct Inner {
    counter: Counter,
    polls: Polls,
    store: AudienceStore,
    media: MediaClient,
    authenticator: Authenticator,
    /// The viewers of this process's open `ViewerSession` streams.
    sessions: Arc<Watchers>,
    /// Open `ViewerSession` streams (`onair_audience_sessions`).
    open_sessions: Arc<AtomicI64>,
    /// Heartbeats taken (`onair_audience_heartbeats_total`).
    heartbeats: Arc<AtomicU64>,
}

impl AudienceServiceImpl {
    /// The service over `counter`; `sessions` holds the viewers of its
    /// `ViewerSession` streams on the board.
    pub fn new(
        counter: Counter,
        polls: Polls,
        store: AudienceStore,
        media: MediaClient,
        authenticator: Authenticator,
        sessions: Arc<Watchers>,
        metrics: &Registry,
    ) -> AudienceServiceImpl {
        AudienceServiceImpl {
            inner: Arc::new(Inner {
                counter,
                polls,
                store,
                media,
                authenticator,
                sessions,
                open_sessions: metrics.gauge_handle(
                    "onair_audience_sessions",
                    "Open ViewerSession streams in this process.",
                    &[],
                ),
                heartbeats: metrics.counter_handle(
                    "onair_audience_heartbeats_total",
                    "Heartbeats this process took.",
                    &[],
                ),
            }),
        }
    }

    /// The caller, who must have `role` or a higher one.
    async fn caller_with<T>(
        &self,
        request: &Request<T>,
        role: Role,
    ) -> Result<Caller, AudienceError> {
        let caller = self
            .inner
            .authenticator
            .authenticate(request.metadata())
            .await?;
        caller.require(role)?;
        Ok(caller)
    }

    /// The caller if the request carries credentials, else nobody.
    async fn optional_caller<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<Caller>, AudienceError> {
        if request.metadata().get("authorization").is_none() {
            return Ok(None);
        }
        let caller = self
            .inner
            .authenticator
            .authenticate(request.metadata())
            .await?;
        Ok(Some(caller))
    }

    /// One channel's count now.
    async fn count_of(&self, channel_id: &str) -> Result<pb::ViewerCount, AudienceError> {
        let mut counts = self.inner.counter.read(&[channel_id.to_owned()]).await?;
        counts
            .pop()
            .ok_or_else(|| AudienceError::Internal(format!("no count for channel {channel_id}")))
    }

    /// The slot, from the media service.
    async fn slot(&self, slot_id: &str) -> Result<media::Slot, AudienceError> {
        let mut client = self.inner.media.clone();
        let slot = client
            .get_slot(media::GetSlotRequest {
                slot_id: slot_id.to_owned(),
            })
            .await
            .map_err(|status| AudienceError::from_media(&status))?
            .into_inner();
        Ok(slot)
    }

    /// Refuses a channel id that names no channel.
    async fn require_channel(&self, channel_id: &str) -> Result<(), AudienceError> {
        require_id("channel_id", channel_id)?;
        if self.inner.counter.channel_exists(channel_id).await? {
            return Ok(());
        }
        Err(AudienceError::NotFound(format!(
            "no channel with id {channel_id:?}"
        )))
    }
}

/// Checks an id that names something that exists: present, and not text
/// that no id is.
fn require_id(field: &str, value: &str) -> Result<(), AudienceError> {
    onair_kit::input::require_id(field, value)
        .map_err(|error| AudienceError::InvalidArgument(error.to_string()))
}

#[tonic::async_trait]
impl AudienceService for AudienceServiceImpl {
    async fn get_viewer_count(
        &self,
        request: Request<pb::GetViewerCountRequest>,
    ) -> Result<Response<pb::ViewerCount>, Status> {
        let channel_id = request.into_inner().channel_id;
        require_id("channel_id", &channel_id)?;
        Ok(Response::new(self.count_of(&channel_id).await?))
    }

    async fn batch_get_viewer_counts(
        &self,
        request: Request<pb::BatchGetViewerCountsRequest>,
    ) -> Result<Response<pb::BatchGetViewerCountsResponse>, Status> {
        let mut channel_ids = request.into_inner().channel_ids;
        if channel_ids.len() > MAX_BATCH_CHANNELS {
            return Err(AudienceError::InvalidArgument(format!(
                "channel_ids names {} channels; at most {MAX_BATCH_CHANNELS} are allowed",
                channel_ids.len()
            ))
            .into());
        }
        for channel_id in &channel_ids {
            require_id("channel_ids", channel_id)?;
        }
        channel_ids.sort_unstable();
        channel_ids.dedup();
        let counts = self.inner.counter.read(&channel_ids).await?;
        Ok(Response::new(pb::BatchGetViewerCountsResponse { counts }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::ViewerCount>, Status> {
        // A heartbeat without an account could not be told from the
        // viewer's next one: each would count as another viewer.
        let caller = self.caller_with(&request, Role::Viewer).await?;
        let channel_id = request.into_inner().channel_id;
        self.require_channel(&channel_id).await?;
        let counter = &self.inner.counter;
        let lasts = i64::try_from(counter.heartbeat_lasts().as_millis()).unwrap_or(i64::MAX);
        let mark = Mark {
            channel_id: channel_id.clone(),
            viewer: ViewerKey::of_user(&caller.user_id),
            until_ms: counter.clock().now_ms().saturating_add(lasts),
        };
        counter
            .board()
            .mark(&[mark])
            .await
            .map_err(AudienceError::from)?;
        self.inner.heartbeats.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(self.count_of(&channel_id).await?))
    }

    type ViewerSessionStream = BoxStream<pb::ViewerCount>;

    async fn viewer_session(
        &self,
        request: Request<Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<Self::ViewerSessionStream>, Status> {
        // A session needs an account, as a heartbeat does: anonymous
        // streams, many to a connection, would let one client be many
        // viewers. An anonymous account from `CreateUser` will do.
        let caller = self.caller_with(&request, Role::Viewer).await?;
        let viewer = ViewerKey::of_user(&caller.user_id);
        let heartbeats = request.into_inner();
        let (sender, receiver) = mpsc::channel(SESSION_QUEUE);
        tokio::spawn(run_session(self.clone(), viewer, heartbeats, sender));
        let counts = tokio_stream::wrappers::ReceiverStream::new(receiver);
        Ok(Response::new(Box::pin(counts)))
    }

    async fn get_slot_viewers(
        &self,
        request: Request<pb::GetSlotViewersRequest>,
    ) -> Result<Response<pb::SlotViewers>, Status> {
        let slot_id = request.into_inner().slot_id;
        require_id("slot_id", &slot_id)?;
        let recorded = self
            .inner
            .store
            .slot(&slot_id)
            .await
            .map_err(AudienceError::from)?;
        if let Some(slot) = recorded {
            return Ok(Response::new(pb::SlotViewers {
                slot_id: slot.slot_id,
                channel_id: slot.channel_id,
                peak: slot.peak,
                peak_time: Some(timestamp_from_millis(slot.peak_time_ms)),
                minutes: slot
                    .minutes
                    .into_iter()
                    .map(|(minute_ms, viewers)| pb::ViewerMinute {
                        start_time: Some(timestamp_from_millis(minute_ms)),
                        viewers,
                    })
                    .collect(),
            }));
        }
        // Nobody watched it (yet): the slot's audience is empty, if the
        // slot exists.
        let slot = self.slot(&slot_id).await?;
        Ok(Response::new(pb::SlotViewers {
            slot_id,
            channel_id: slot.channel_id,
            peak: 0,
            peak_time: None,
            minutes: Vec::new(),
        }))
    }

    async fn create_poll(
        &self,
        request: Request<pb::CreatePollRequest>,
    ) -> Result<Response<pb::Poll>, Status> {
        let caller = self.caller_with(&request, Role::Operator).await?;
        let request = request.into_inner();
        require_id("slot_id", &request.slot_id)?;
        let Some(poll) = request.poll else {
            return Err(AudienceError::InvalidArgument(
                "poll is required: its question, options and close time".to_owned(),
            )
            .into());
        };
        let checked = NewPoll::check(&poll, self.inner.polls.now_ms())?;
        let slot = self.slot(&request.slot_id).await?;
        let created = self
            .inner
            .polls
            .create(&slot.id, &slot.channel_id, checked, &caller.user_id)
            .await?;
        Ok(Response::new(created))
    }

    async fn get_poll(
        &self,
        request: Request<pb::GetPollRequest>,
    ) -> Result<Response<pb::Poll>, Status> {
        let voter = self
            .optional_caller(&request)
            .await?
            .map(|caller| ViewerKey::of_user(&caller.user_id));
        let poll_id = request.into_inner().poll_id;
        require_id("poll_id", &poll_id)?;
        Ok(Response::new(
            self.inner.polls.get(&poll_id, voter.as_ref()).await?,
        ))
    }

    async fn cast_ballot(
        &self,
        request: Request<pb::CastBallotRequest>,
    ) -> Result<Response<pb::Poll>, Status> {
        let caller = self.caller_with(&request, Role::Viewer).await?;
        let request = request.into_inner();
        require_id("poll_id", &request.poll_id)?;
        require_id("option_id", &request.option_id)?;
        let voter = ViewerKey::of_user(&caller.user_id);
        let poll = self
            .inner
            .polls
            .cast(&request.poll_id, &request.option_id, &voter)
            .await?;
        Ok(Response::new(poll))
    }

    type WatchPollStream = BoxStream<pb::Poll>;

    async fn watch_poll(
        &self,
        request: Request<pb::WatchPollRequest>,
    ) -> Result<Response<Self::WatchPollStream>, Status> {
        let poll_id = request.into_inner().poll_id;
        require_id("poll_id", &poll_id)?;
        let polls = self.inner.polls.watch(&poll_id).await?;
        Ok(Response::new(Box::pin(polls.map(Ok))))
    }

    async fn close_poll(
        &self,
        request: Request<pb::ClosePollRequest>,
    ) -> Result<Response<pb::Poll>, Status> {
        let caller = self.caller_with(&request, Role::Moderator).await?;
        let poll_id = request.into_inner().poll_id;
        require_id("poll_id", &poll_id)?;
        Ok(Response::new(
            self.inner.polls.close(&poll_id, &caller.user_id).await?,
        ))
    }
}

/// One `ViewerSession`: while the client's stream is open, its viewer is
/// held on the channel its last heartbeat named, and each change of that
/// channel's count goes down the stream. A heartbeat naming no channel, or
/// one that does not exist, ends the session with the reason.
async fn run_session(
    service: AudienceServiceImpl,
    viewer: ViewerKey,
    mut heartbeats: Streaming<pb::HeartbeatRequest>,
    counts: mpsc::Sender<Result<pb::ViewerCount, Status>>,
) {
    let _open = OpenSession::new(&service.inner.open_sessions);
    let mut tallies = service.inner.counter.watch();
    let mut watching: Option<(String, Watching)> = None;
    let mut sent: Option<pb::ViewerCount> = None;
    // Counts that started before the viewer was marked may leave them out.
    let mut trusted_after = 0;
    loop {
        tokio::select! {
            heartbeat = heartbeats.next() => {
                let Some(Ok(heartbeat)) = heartbeat else {
                    // The client closed its side, or the stream broke.
                    return;
                };
                let channel_id = heartbeat.channel_id;
                if watching.as_ref().is_some_and(|(watched, _)| *watched == channel_id) {
                    continue;
                }
                if let Err(error) = service.require_channel(&channel_id).await {
                    let _ = counts.send(Err(error.into())).await;
                    return;
                }
                // The old channel's guard goes first: the viewer switched.
                drop(watching.take());
                trusted_after = service.inner.counter.counts_started();
                let held = service.inner.sessions.watch(&channel_id, viewer.clone()).await;
                watching = Some((channel_id.clone(), held));
                match service.count_of(&channel_id).await {
                    Ok(count) => {
                        if counts.send(Ok(count.clone())).await.is_err() {
                            return;
                        }
                        sent = Some(count);
                    }
                    Err(error) => {
                        let _ = counts.send(Err(error.into())).await;
                        return;
                    }
                }
            }
            changed = tallies.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some((channel_id, _)) = &watching else {
                    continue;
                };
                let (number, latest) = {
                    let tally = tallies.borrow_and_update();
                    (tally.number, tally.counts.get(channel_id).cloned())
                };
                if number <= trusted_after {
                    continue;
                }
                // A channel left out of the tallies has nobody watching.
                let count = latest.unwrap_or_else(|| {
                    let before = sent.clone().unwrap_or_default();
                    pb::ViewerCount {
                        channel_id: channel_id.clone(),
                        count: 0,
                        peak: before.peak,
                        slot_id: before.slot_id,
                    }
                });
                let same = sent.as_ref().is_some_and(|sent| {
                    sent.count == count.count && sent.slot_id == count.slot_id && sent.peak == count.peak
                });
                if same {
                    continue;
                }
                if counts.send(Ok(count.clone())).await.is_err() {
                    return;
                }
                sent = Some(count);
            }
            () = counts.closed() => return,
        }
    }
}

/// A session counted in `onair_audience_sessions` while it runs.
struct OpenSession {
    gauge: Arc<AtomicI64>,
}

impl OpenSession {
    fn new(gauge: &Arc<AtomicI64>) -> OpenSession {
        gauge.fetch_add(1, Ordering::Relaxed);
        OpenSession {
            gauge: gauge.clone(),
        }
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Ordering::Relaxed);
    }
}
