//! The `ShareService` gRPC service: makes share links, reads them, counts
//! them, and gives the gateway what a link's page shows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use onair_kit::auth::{Authenticator, Caller};
use onair_kit::bus::SharedBus;
use onair_kit::clock::{Clock, millis_from_timestamp};
use onair_kit::events::{OpsEvent, record};
use onair_kit::metrics::Registry;
use onair_proto::clients::{CommentClient, MediaClient};
use onair_proto::share::v1 as pb;
use onair_proto::share::v1::share_service_server::ShareService;
use onair_proto::user::v1::Role;
use tonic::{Request, Response, Status};

use crate::error::ShareError;
use crate::links::{is_code, new_code};
use crate::preview::Previews;
use crate::settings::ShareSettings;
use crate::store::{ShareRecord, ShareStore, TargetKind};

/// The most targets one `BatchGetShareCounts` names.
pub const MAX_BATCH_TARGETS: usize = 1000;

/// How many codes a new link draws before giving up (a clash of two is
/// already about one in 2^71).
const CODE_DRAWS: usize = 4;

/// The share service. Cheap to clone.
#[derive(Clone)]
pub struct ShareServiceImpl {
    inner: Arc<Inner>,
}

struct Inner {
    store: ShareStore,
    previews: Previews,
    authenticator: Authenticator,
    bus: SharedBus,
    clock: Clock,
    settings: ShareSettings,
    /// Opens counted since they were last written, by code.
    opens: Mutex<HashMap<String, i64>>,
    /// Links made (`onair_share_links_created_total`).
    created: Arc<AtomicU64>,
    /// Pages opened (`onair_share_opens_total`).
    opened: Arc<AtomicU64>,
}

impl ShareServiceImpl {
    /// The service over `store`, reading targets from the media and comment
    /// services.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: ShareStore,
        media: MediaClient,
        comments: CommentClient,
        authenticator: Authenticator,
        bus: SharedBus,
        clock: Clock,
        settings: ShareSettings,
        metrics: &Registry,
    ) -> ShareServiceImpl {
        let previews = Previews::new(
            media,
            comments,
            settings.public_url.clone(),
            clock.clone(),
            settings.page_ttl,
        );
        ShareServiceImpl {
            inner: Arc::new(Inner {
                store,
                previews,
                authenticator,
                bus,
                clock,
                settings,
                opens: Mutex::new(HashMap::new()),
                created: metrics.counter_handle(
                    "onair_share_links_created_total",
                    "Share links this process made.",
                    &[],
                ),
                opened: metrics.counter_handle(
                    "onair_share_opens_total",
                    "Share link pages this process served.",
                    &[],
                ),
            }),
        }
    }

    /// Writes the opens counted in memory every flush interval, until the
    /// process stops. Opens of the last interval before a crash are lost;
    /// links themselves are written before they are answered.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(service.inner.settings.opens_flush_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                service.flush_opens().await;
            }
        })
    }

    /// Writes the opens counted so far; on a database error they are kept
    /// for the next try.
    pub async fn flush_opens(&self) {
        let pending: Vec<(String, i64)> = {
            let mut opens = self.opens();
            opens.drain().collect()
        };
        if pending.is_empty() {
            return;
        }
        if let Err(error) = self.inner.store.add_opens(&pending).await {
            tracing::warn!(error = %error, links = pending.len(), "cannot write share opens; keeping them for the next try");
            let mut opens = self.opens();
            for (code, count) in pending {
                *opens.entry(code).or_default() += count;
            }
        }
    }

    fn opens(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.inner
            .opens
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    async fn caller_with<T>(&self, request: &Request<T>, role: Role) -> Result<Caller, ShareError> {
        let caller = self
            .inner
            .authenticator
            .authenticate(request.metadata())
            .await?;
        caller.require(role)?;
        Ok(caller)
    }

    /// Refuses a new link from someone who made their hour's worth.
    async fn check_limit(&self, user_id: &str, now_ms: i64) -> Result<(), ShareError> {
        let limit = self.inner.settings.links_per_user_per_hour;
        if limit == 0 {
            return Ok(());
        }
        const HOUR_MS: i64 = 3_600_000;
        let (made, oldest) = self
            .inner
            .store
            .made_since(user_id, now_ms - HOUR_MS)
            .await?;
        if made < i64::from(limit) {
            return Ok(());
        }
        let wait_ms = oldest
            .map_or(HOUR_MS, |oldest| oldest + HOUR_MS - now_ms)
            .max(1000);
        Err(ShareError::TooMany {
            message: format!(
                "you made {made} share links in the last hour, the most one person may; share again in {} s",
                (wait_ms + 999) / 1000
            ),
            retry_after: std::time::Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1000)),
        })
    }

    /// The link with `code`.
    async fn link(&self, code: &str) -> Result<ShareRecord, ShareError> {
        check_code(code)?;
        self.inner
            .store
            .get(code)
            .await?
            .ok_or_else(|| ShareError::NotFound(format!("no share link has the code {code:?}")))
    }

    /// The page of the link with `code`, kept or made now.
    async fn page(&self, code: &str) -> Result<Arc<pb::SharePage>, ShareError> {
        if is_code(code)
            && let Some(page) = self.inner.previews.kept(code)
        {
            return Ok(page);
        }
        let link = self.link(code).await?;
        self.inner.previews.page(&link).await
    }

    /// What a new link of `target` points at: its kind, id, channel, slot
    /// and moment, each checked with the service that owns it.
    async fn resolve(
        &self,
        target: Option<pb::create_share_request::Target>,
        vpos_ms: i64,
    ) -> Result<(TargetKind, String, String, String, i64), ShareError> {
        use pb::create_share_request::Target;
        if vpos_ms < 0 {
            return Err(ShareError::InvalidArgument(format!(
                "vposMs ({vpos_ms}) is milliseconds from the slot's start, 0 or more"
            )));
        }
        match target {
            None => Err(ShareError::InvalidArgument(
                "name what to share: channelId, slotId or commentId".to_owned(),
            )),
            Some(Target::ChannelId(channel_id)) => {
                require_id("channelId", &channel_id)?;
                if vpos_ms != 0 {
                    return Err(ShareError::InvalidArgument(
                        "vposMs goes with a slotId: a channel's link plays what is on air"
                            .to_owned(),
                    ));
                }
                self.inner.previews.check_channel(&channel_id).await?;
                Ok((
                    TargetKind::Channel,
                    channel_id.clone(),
                    channel_id,
                    String::new(),
                    0,
                ))
            }
            Some(Target::SlotId(slot_id)) => {
                require_id("slotId", &slot_id)?;
                let slot = self.inner.previews.slot(&slot_id).await?;
                let length_ms = millis_from_timestamp(slot.end_time.as_ref())
                    - millis_from_timestamp(slot.start_time.as_ref());
                if vpos_ms >= length_ms.max(1) {
                    return Err(ShareError::InvalidArgument(format!(
                        "vposMs ({vpos_ms}) is past the end of slot {slot_id}, which is {length_ms} ms long"
                    )));
                }
                Ok((
                    TargetKind::Slot,
                    slot_id.clone(),
                    slot.channel_id,
                    slot_id,
                    vpos_ms,
                ))
            }
            Some(Target::CommentId(comment_id)) => {
                require_id("commentId", &comment_id)?;
                if vpos_ms != 0 {
                    return Err(ShareError::InvalidArgument(
                        "vposMs goes with a slotId: a comment's link starts at the comment"
                            .to_owned(),
                    ));
                }
                let comment = self.inner.previews.comment(&comment_id).await?;
                Ok((
                    TargetKind::Comment,
                    comment_id,
                    comment.channel_id,
                    comment.slot_id,
                    comment.vpos_ms,
                ))
            }
        }
    }
}

/// Checks an id the caller names something by.
fn require_id(field: &str, value: &str) -> Result<(), ShareError> {
    onair_kit::input::require_id(field, value)
        .map_err(|error| ShareError::InvalidArgument(error.to_string()))
}

/// Checks that `code` is shaped like a share code.
fn check_code(code: &str) -> Result<(), ShareError> {
    if code.is_empty() {
        return Err(ShareError::InvalidArgument("code is required".to_owned()));
    }
    if !is_code(code) {
        return Err(ShareError::InvalidArgument(format!(
            "{code:?} is not a share code: codes are {} letters and digits",
            crate::links::CODE_LEN
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl ShareService for ShareServiceImpl {
    async fn create_share(
        &self,
        request: Request<pb::CreateShareRequest>,
    ) -> Result<Response<pb::Share>, Status> {
        let caller = self.caller_with(&request, Role::Viewer).await?;
        let request = request.into_inner();
        let (kind, target_id, channel_id, slot_id, vpos_ms) =
            self.resolve(request.target, request.vpos_ms).await?;
        let now_ms = self.inner.clock.now_ms();
        let mut stored = None;
        // A link made before is given back whatever the limit.
        let mut limit_checked = false;
        for _ in 0..CODE_DRAWS {
            let link = ShareRecord {
                code: new_code(),
                kind,
                target_id: target_id.clone(),
                channel_id: channel_id.clone(),
                slot_id: slot_id.clone(),
                vpos_ms,
                creator_id: caller.user_id.clone(),
                create_time_ms: now_ms,
            };
            if !limit_checked {
                let same_place = self.inner.store.same_place(&link).await;
                if let Some(existing) = same_place.map_err(ShareError::from)? {
                    stored = Some((existing, false));
                    break;
                }
                self.check_limit(&caller.user_id, now_ms).await?;
                limit_checked = true;
            }
            stored = self
                .inner
                .store
                .insert(&link)
                .await
                .map_err(ShareError::from)?;
            if stored.is_some() {
                break;
            }
        }
        let Some((link, new)) = stored else {
            return Err(ShareError::Internal("no free share code was drawn".to_owned()).into());
        };
        if new {
            self.inner.created.fetch_add(1, Ordering::Relaxed);
            let event = OpsEvent::new(
                "share.created",
                &caller.user_id,
                &link.code,
                "",
                now_ms,
                serde_json::json!({
                    "targetKind": link.kind.as_str(),
                    "targetId": link.target_id,
                    "channelId": link.channel_id,
                    "slotId": link.slot_id,
                    "vposMs": link.vpos_ms,
                }),
            );
            record(&self.inner.bus, &event).await;
        }
        let page = self.inner.previews.page(&link).await?;
        Ok(Response::new(page.share.clone().unwrap_or_default()))
    }

    async fn get_share(
        &self,
        request: Request<pb::GetShareRequest>,
    ) -> Result<Response<pb::Share>, Status> {
        let page = self.page(&request.get_ref().code).await?;
        Ok(Response::new(page.share.clone().unwrap_or_default()))
    }

    async fn batch_get_share_counts(
        &self,
        request: Request<pb::BatchGetShareCountsRequest>,
    ) -> Result<Response<pb::BatchGetShareCountsResponse>, Status> {
        self.caller_with(&request, Role::Operator).await?;
        let request = request.into_inner();
        if request.target_ids.is_empty() {
            return Err(ShareError::InvalidArgument(
                "targetIds is required: the channels, slots or comments to count".to_owned(),
            )
            .into());
        }
        if request.target_ids.len() > MAX_BATCH_TARGETS {
            return Err(ShareError::InvalidArgument(format!(
                "targetIds names {} targets; at most {MAX_BATCH_TARGETS} at once",
                request.target_ids.len()
            ))
            .into());
        }
        for id in &request.target_ids {
            require_id("targetIds", id)?;
        }
        // What is counted in memory and not yet written counts too.
        self.flush_opens().await;
        let mut unique = request.target_ids.clone();
        unique.sort();
        unique.dedup();
        let counted: HashMap<String, (i64, i64)> = self
            .inner
            .store
            .counts(&unique)
            .await
            .map_err(ShareError::from)?
            .into_iter()
            .map(|counts| (counts.target_id, (counts.shares, counts.opens)))
            .collect();
        let counts = request
            .target_ids
            .into_iter()
            .map(|target_id| {
                let (count, opens) = counted.get(&target_id).copied().unwrap_or((0, 0));
                pb::ShareCount {
                    target_id,
                    count,
                    opens,
                }
            })
            .collect();
        Ok(Response::new(pb::BatchGetShareCountsResponse { counts }))
    }

    async fn open_share(
        &self,
        request: Request<pb::OpenShareRequest>,
    ) -> Result<Response<pb::SharePage>, Status> {
        let code = &request.get_ref().code;
        let page = self.page(code).await?;
        *self.opens().entry(code.clone()).or_default() += 1;
        self.inner.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(pb::SharePage::clone(&page)))
    }
}
