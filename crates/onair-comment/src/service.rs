//! The comment service's gRPC implementation.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{Stream, StreamExt as _};
use onair_kit::abuse::{AddressLimiter, AddressRate, address_key, client_address, whole_seconds};
use onair_kit::auth::{Authenticator, Caller};
use onair_kit::bus::SharedBus;
use onair_kit::clock::{Clock, millis_from_timestamp as millis_of};
use onair_kit::error::RetryLater;
use onair_kit::events::{
    self, Announcement as _, CHAT_SETTINGS_CHANGED, ChatSettingsChanged, LiveEvent, LiveKind,
    MEDIA_CHANGED, OpsEvent, USER_CHANGED,
};
use onair_kit::rate::{RedisRates, SharedBuckets};
use onair_proto::comment::v1 as pb;
use onair_proto::comment::v1::comment_service_server::CommentService;
use onair_proto::user::v1::Role;
use tonic::{Request, Response, Status};

use crate::error::CommentError;
use crate::lookup::{ChangeFeed, Changes, Lookups};
use crate::moderation::{self, DisplayDecision, PaceLimits, Verdict};
use crate::pace::{AddressOnChannel, SharedPace};
use crate::settings::{
    ChatRules, CommentServiceSettings, check_chat_settings, default_chat_settings,
};
use crate::store::{CommentRecord, CommentStore, CommentWriter, ReplayCursor};
use crate::text::{self, CommentBody};

/// Replay pages hold this many comments unless the caller asks otherwise.
pub const DEFAULT_PAGE_SIZE: i32 = 100;
/// The most comments one replay page holds.
pub const MAX_PAGE_SIZE: i32 = 1000;
/// The longest reason a reporter or moderator may give.
pub const MAX_REASON_CHARS: usize = 500;
/// How many report reasons a queue item carries.
const QUEUE_REPORT_REASONS: usize = 5;

/// Who automatic verdicts are recorded as in the audit stream.
pub const SERVICE_ACTOR: &str = "comment-service";

/// The comment service.
#[derive(Clone)]
pub struct CommentServiceImpl {
    inner: Arc<Inner>,
}

struct Inner {
    store: CommentStore,
    writer: CommentWriter,
    settings: CommentServiceSettings,
    clock: Clock,
    bus: SharedBus,
    authenticator: Authenticator,
    lookups: Lookups,
    /// Each viewer's recent posts and each channel's display count: in this
    /// process's memory, or shared by every replica in Redis.
    pace: SharedPace,
    /// Comments lately by client address and channel: in this process's
    /// memory, or shared by every replica in Redis.
    comments_by_address: Option<SharedBuckets<AddressOnChannel>>,
    /// Chat settings as last read, per channel.
    chat_rules: Mutex<HashMap<String, (Arc<ChatRules>, std::time::Instant)>>,
    chat_changes: ChangeFeed,
}

/// The buckets of comments per address and channel, at `rate`: in Redis
/// when `shared_rates` is given, else in memory; none when the rate is off.
fn address_buckets(
    rate: AddressRate,
    clock: &Clock,
    shared_rates: Option<&RedisRates>,
) -> Option<SharedBuckets<AddressOnChannel>> {
    if rate.is_off() {
        return None;
    }
    match shared_rates {
        Some(rates) => rates
            .buckets::<AddressOnChannel>("comment-address", rate, clock)
            .map(|buckets| Arc::new(buckets) as SharedBuckets<AddressOnChannel>),
        None => Some(Arc::new(AddressLimiter::<AddressOnChannel>::new(
            rate, clock,
        ))),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl CommentServiceImpl {
    /// Opens the service: its store, its writer, and its bus subscriptions
    /// to user, schedule and chat-settings changes. `pace` keeps the pace
    /// rules' counts (see [`crate::pace`]); the comments of each address
    /// are counted in `shared_rates` when given, else in this process.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        store: CommentStore,
        settings: CommentServiceSettings,
        clock: Clock,
        bus: SharedBus,
        authenticator: Authenticator,
        users: onair_proto::clients::UserClient,
        media: onair_proto::clients::MediaClient,
        pace: SharedPace,
        shared_rates: Option<&RedisRates>,
    ) -> Result<CommentServiceImpl, CommentError> {
        let subscribe = |subject: &'static str| {
            let bus = bus.clone();
            async move {
                bus.subscribe(subject)
                    .await
                    .map(ChangeFeed::new)
                    .map_err(|error| {
                        CommentError::Unavailable(format!("cannot subscribe to {subject}: {error}"))
                    })
            }
        };
        let user_changes = subscribe(USER_CHANGED).await?;
        let schedule_changes = subscribe(MEDIA_CHANGED).await?;
        let chat_changes = subscribe(CHAT_SETTINGS_CHANGED).await?;
        let lookups = Lookups::new(
            users,
            media,
            settings.user_cache_ttl,
            settings.channel_cache_ttl,
            user_changes,
            schedule_changes,
        );
        let writer =
            CommentWriter::start(store.clone(), settings.write_batch, settings.write_queue);
        tracing::info!(
            max_body_chars = settings.max_body_chars,
            write_batch = settings.write_batch,
            "comment service started"
        );
        let comments_by_address = address_buckets(settings.comments_per_ip, &clock, shared_rates);
        Ok(CommentServiceImpl {
            inner: Arc::new(Inner {
                store,
                writer,
                settings,
                clock,
                bus,
                authenticator,
                lookups,
                pace,
                comments_by_address,
                chat_rules: Mutex::new(HashMap::new()),
                chat_changes,
            }),
        })
    }

    /// Forgets idle posters now and then, so the pace table holds only
    /// active users, and applies change announcements every second, so
    /// their queues stay short while nobody posts. The tasks run until
    /// aborted.
    pub fn spawn_background(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let service = self.clone();
        let sweeper = tokio::spawn(async move {
            let mut interval = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                interval.tick().await;
                let forgotten = service.inner.pace.forget_idle(service.inner.clock.now_ms());
                if forgotten > 0 {
                    tracing::debug!(forgotten, "forgot idle posters");
                }
            }
        });
        let service = self.clone();
        let changes = tokio::spawn(async move {
            let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                interval.tick().await;
                service.inner.lookups.apply_changes();
                service.apply_chat_changes();
            }
        });
        vec![sweeper, changes]
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, CommentError> {
        Ok(self
            .inner
            .authenticator
            .authenticate(request.metadata())
            .await?)
    }

    /// The caller, who must have `role` or a higher one.
    async fn caller_with<T>(
        &self,
        request: &Request<T>,
        role: Role,
    ) -> Result<Caller, CommentError> {
        let caller = self.caller(request).await?;
        caller.require(role)?;
        Ok(caller)
    }

    /// The caller if the request carries credentials, else nobody.
    async fn optional_caller<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<Caller>, CommentError> {
        if request.metadata().get("authorization").is_none() {
            return Ok(None);
        }
        self.caller(request).await.map(Some)
    }

    /// Forgets chat settings that another process changed.
    fn apply_chat_changes(&self) {
        match self.inner.chat_changes.drain() {
            Changes::Everything => self.chat_rules().clear(),
            Changes::Keys(messages) => {
                for message in messages {
                    if let Ok(changed) = ChatSettingsChanged::decode_payload(&message.payload) {
                        self.chat_rules().remove(&changed.channel_id);
                    }
                }
            }
        }
    }

    /// A channel's chat settings: stored, or the defaults.
    async fn rules(&self, channel_id: &str) -> Result<Arc<ChatRules>, CommentError> {
        self.apply_chat_changes();
        let ttl = self.inner.settings.channel_cache_ttl;
        if let Some((rules, read_at)) = self.chat_rules().get(channel_id)
            && read_at.elapsed() < ttl
        {
            return Ok(rules.clone());
        }
        let stored = self.inner.store.chat_settings(channel_id).await?;
        let rules = Arc::new(ChatRules::new(
            stored.unwrap_or_else(|| default_chat_settings(channel_id)),
        ));
        if !ttl.is_zero() {
            let mut cached = self.chat_rules();
            if cached.len() >= 100_000 {
                cached.clear();
            }
            cached.insert(
                channel_id.to_owned(),
                (rules.clone(), std::time::Instant::now()),
            );
        }
        Ok(rules)
    }

    fn chat_rules(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<ChatRules>, std::time::Instant)>> {
        self.inner
            .chat_rules
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides, stores and announces a viewer's comment; `address` is the
    /// client's, when the request came from one.
    async fn post(
        &self,
        caller: &Caller,
        authorization: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
        address: Option<IpAddr>,
        request: pb::PostCommentRequest,
    ) -> Result<CommentRecord, CommentError> {
        require_id("channel_id", &request.channel_id)?;
        let body = CommentBody::parse(&request.body, self.inner.settings.max_body_chars)?;
        let commands = crate::commands::canonical(&request.commands)?;
        let channel_id = request.channel_id.as_str();
        let now_ms = self.now_ms();
        let (author, rules, on_air) = tokio::try_join!(
            self.inner.lookups.author(&caller.user_id, authorization),
            self.rules(channel_id),
            self.inner.lookups.on_air(channel_id, now_ms),
        )?;
        if let Some(ban) = author.ban_at(now_ms) {
            let until = match &ban.expire_time {
                Some(expire) => format!(
                    " until {}",
                    onair_kit::clock::format_millis(millis_of(Some(expire)))
                ),
                None => String::new(),
            };
            let reason = if ban.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", ban.reason)
            };
            return Err(CommentError::PermissionDenied(format!(
                "you are banned from commenting{until}{reason}"
            )));
        }
        if !rules.settings.comments_enabled {
            return Err(CommentError::FailedPrecondition(format!(
                "comments are off on channel {channel_id}"
            )));
        }
        let Some(slot) = on_air.slot else {
            return Err(CommentError::FailedPrecondition(format!(
                "nothing is on air on channel {channel_id} now; comments attach to the program on air"
            )));
        };
        if slot.comments_enabled == Some(false) {
            return Err(CommentError::FailedPrecondition(format!(
                "comments are off for the program on air on channel {channel_id}"
            )));
        }
        let role = Role::try_from(author.user.role).unwrap_or(caller.role);
        let privileged = matches!(role, Role::Moderator | Role::Operator);
        let verdict = if privileged {
            Verdict::Publish
        } else {
            // Before any other rule, so that every comment a viewer makes
            // counts, a refused one included.
            if let Some(address) = address {
                self.admit_from_address(channel_id, address).await?;
            }
            let folded = text::fold(body.as_str());
            match moderation::blocked_term(&rules, &folded) {
                Some(rejected) => rejected,
                None => {
                    self.inner
                        .pace
                        .admit(
                            channel_id,
                            &caller.user_id,
                            &folded,
                            now_ms,
                            PaceLimits::of(&rules),
                        )
                        .await?;
                    moderation::judge_content(
                        &rules,
                        body.as_str(),
                        author.user.trust_score,
                        self.inner.settings.spam_max_repeated_characters,
                    )
                }
            }
        };
        let (status, reason) = match &verdict {
            Verdict::Publish => (pb::CommentStatus::Published, String::new()),
            Verdict::Hold(reason) => (pb::CommentStatus::Held, reason.clone()),
            Verdict::Shadow(reason) => (pb::CommentStatus::Shadowed, reason.clone()),
            Verdict::Reject(reason) => (pb::CommentStatus::Rejected, reason.clone()),
        };
        let slot_start_ms = millis_of(slot.start_time.as_ref());
        let record = CommentRecord {
            id: uuid::Uuid::now_v7().to_string(),
            channel_id: channel_id.to_owned(),
            slot_id: slot.id.clone(),
            user_id: caller.user_id.clone(),
            display_name: author.user.display_name.clone(),
            body: body.into_string(),
            vpos_ms: (now_ms - slot_start_ms).max(0),
            create_time_ms: now_ms,
            status,
            reason,
            report_count: 0,
            in_queue: matches!(verdict, Verdict::Hold(_) | Verdict::Shadow(_)),
            update_time_ms: now_ms,
            commands,
        };
        self.inner.writer.write(record.clone()).await?;
        match &verdict {
            Verdict::Publish => {
                self.publish_live(&record, rules.settings.display_rate_per_second)
                    .await
            }
            Verdict::Hold(reason) | Verdict::Shadow(reason) => {
                self.announce_queue(&record, Vec::new(), false).await;
                self.record_automatic(&record, reason).await;
            }
            Verdict::Reject(reason) => self.record_automatic(&record, reason).await,
        }
        Ok(record)
    }

    /// Refuses a viewer's comment when their network address posts on the
    /// channel faster than many viewers at the per-user pace would: making
    /// accounts must not multiply what one person may post.
    async fn admit_from_address(
        &self,
        channel_id: &str,
        address: IpAddr,
    ) -> Result<(), CommentError> {
        let Some(buckets) = &self.inner.comments_by_address else {
            return Ok(());
        };
        let key = AddressOnChannel {
            address: address_key(address),
            channel_id: channel_id.to_owned(),
        };
        buckets.take(&key).await.map_err(|wait| {
            CommentError::Limited(RetryLater {
                message: format!(
                    "too many comments from your network address on channel {channel_id} \
                         right now; try again in {} s",
                    whole_seconds(wait)
                ),
                wait,
            })
        })
    }

    /// Puts a published comment on the channel's live stream, unless the
    /// channel posts faster than its display rate and this one is not in
    /// the sample.
    async fn publish_live(&self, record: &CommentRecord, display_rate_per_second: i32) {
        let cap = u32::try_from(display_rate_per_second).unwrap_or(0);
        let decision = match self
            .inner
            .pace
            .show_live(&record.channel_id, self.now_ms(), cap)
            .await
        {
            Ok(decision) => decision,
            // The comment is stored: show it rather than lose it from live
            // for want of a count.
            Err(error) => {
                tracing::warn!(error = %error, channel_id = %record.channel_id, "cannot count the live display; showing the comment unsampled");
                DisplayDecision {
                    show: true,
                    comments_per_second: 0.0,
                    sampled: false,
                }
            }
        };
        if !decision.show {
            return;
        }
        let event = pb::CommentEvent {
            event: Some(pb::comment_event::Event::Comment(record.to_proto())),
            comments_per_second: decision.comments_per_second,
            sampled: decision.sampled,
        };
        self.publish_event(&record.channel_id, LiveKind::Comment, &event)
            .await;
    }

    /// Tells live viewers to take a comment off their screens.
    async fn publish_removal(&self, record: &CommentRecord) {
        let event = pb::CommentEvent {
            event: Some(pb::comment_event::Event::RemovedCommentId(
                record.id.clone(),
            )),
            comments_per_second: 0.0,
            sampled: false,
        };
        self.publish_event(&record.channel_id, LiveKind::Moderation, &event)
            .await;
    }

    async fn publish_event(&self, channel_id: &str, kind: LiveKind, event: &pb::CommentEvent) {
        let live_event = LiveEvent::comment(channel_id, kind, event);
        if let Err(error) = live_event.publish(&self.inner.bus).await {
            // The comment is stored; live viewers miss it, replay has it.
            tracing::warn!(error = %error, channel_id, kind = kind.as_str(), "cannot publish a live comment event");
        }
    }

    /// Tells every moderator's queue that a comment joined or left it.
    async fn announce_queue(
        &self,
        record: &CommentRecord,
        report_reasons: Vec<String>,
        removed: bool,
    ) {
        let item = pb::ModerationQueueItem {
            comment: Some(record.to_proto()),
            report_count: i32::try_from(record.report_count).unwrap_or(i32::MAX),
            report_reasons,
            removed,
        };
        if let Err(error) = events::announce(&self.inner.bus, &item).await {
            tracing::warn!(error = %error, comment_id = %record.id, "cannot announce a review queue change; consoles see it when they reconnect");
        }
    }

    /// Records an automatic verdict other than publish in the audit stream.
    async fn record_automatic(&self, record: &CommentRecord, reason: &str) {
        let kind = match record.status {
            pb::CommentStatus::Held => "comment.held",
            pb::CommentStatus::Shadowed => "comment.shadowed",
            _ => "comment.rejected",
        };
        let event = OpsEvent::new(
            kind,
            SERVICE_ACTOR,
            &record.id,
            reason,
            record.create_time_ms,
            serde_json::json!({
                "channelId": record.channel_id,
                "slotId": record.slot_id,
                "authorId": record.user_id,
                "automatic": true,
            }),
        );
        events::record(&self.inner.bus, &event).await;
    }

    /// Applies a moderator's decision on a comment.
    async fn moderate(
        &self,
        request: Request<pb::ModerateCommentRequest>,
        action: Action,
    ) -> Result<pb::Comment, CommentError> {
        let caller = self.caller_with(&request, Role::Moderator).await?;
        let authorization = request.metadata().get("authorization").cloned();
        let request = request.into_inner();
        require_id("comment_id", &request.comment_id)?;
        check_reason(&request.reason)?;
        let Some(before) = self.inner.store.get(&request.comment_id).await? else {
            return Err(CommentError::comment_not_found(&request.comment_id));
        };
        let status = action.resulting_status();
        let allowed = action.applies_to(&before);
        if !allowed {
            return Err(CommentError::FailedPrecondition(format!(
                "cannot {} a comment that is {}",
                action.verb(),
                status_name(before.status)
            )));
        }
        let reason = if request.reason.trim().is_empty() {
            action.default_reason().to_owned()
        } else {
            request.reason.trim().to_owned()
        };
        let now_ms = self.now_ms();
        let Some(after) = self
            .inner
            .store
            .decide(&before.id, before.status, status, &reason, now_ms)
            .await?
        else {
            let current = self
                .inner
                .store
                .get(&before.id)
                .await?
                .map_or("gone", |record| status_name(record.status));
            return Err(CommentError::FailedPrecondition(format!(
                "another moderator changed the comment first; it is now {current}"
            )));
        };
        let was_visible = before.status == pb::CommentStatus::Published;
        let now_visible = after.status == pb::CommentStatus::Published;
        if now_visible && !was_visible {
            // Shown now, at the moment of the program it was posted at.
            self.publish_live(&after, 0).await;
        }
        if was_visible && !now_visible {
            self.publish_removal(&after).await;
        }
        if before.in_queue {
            self.announce_queue(&after, Vec::new(), true).await;
        }
        let trust_delta = action.trust_delta(&before, &self.inner.settings);
        self.inner
            .lookups
            .adjust_trust(authorization.as_ref(), &after.user_id, trust_delta, &reason)
            .await;
        let event = OpsEvent::new(
            action.event_kind(),
            &caller.user_id,
            &after.id,
            &reason,
            now_ms,
            serde_json::json!({
                "channelId": after.channel_id,
                "slotId": after.slot_id,
                "authorId": after.user_id,
                "previousStatus": status_name(before.status),
                "reportCount": before.report_count,
                "trustDelta": trust_delta,
            }),
        );
        events::record(&self.inner.bus, &event).await;
        tracing::info!(
            comment_id = %after.id,
            by = %caller.user_id,
            action = action.verb(),
            "moderated a comment"
        );
        Ok(after.to_proto())
    }
}

/// A moderator's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Approve,
    Reject,
    Hide,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Hide => "hide",
        }
    }

    fn event_kind(self) -> &'static str {
        match self {
            Action::Approve => "comment.approved",
            Action::Reject => "comment.rejected",
            Action::Hide => "comment.hidden",
        }
    }

    fn default_reason(self) -> &'static str {
        match self {
            Action::Approve => "approved by a moderator",
            Action::Reject => "rejected by a moderator",
            Action::Hide => "hidden by a moderator",
        }
    }

    fn resulting_status(self) -> pb::CommentStatus {
        match self {
            Action::Approve => pb::CommentStatus::Published,
            Action::Reject => pb::CommentStatus::Rejected,
            Action::Hide => pb::CommentStatus::Hidden,
        }
    }

    /// Approve publishes anything not shown, or clears a published comment's
    /// reports; reject and hide apply to anything not already so.
    fn applies_to(self, record: &CommentRecord) -> bool {
        match self {
            Action::Approve => record.status != pb::CommentStatus::Published || record.in_queue,
            Action::Reject | Action::Hide => record.status != self.resulting_status(),
        }
    }

    /// Approvals raise the author's trust; rejections lower it, and so does
    /// taking down a comment that viewers reported (the reports are upheld).
    fn trust_delta(self, before: &CommentRecord, settings: &CommentServiceSettings) -> i32 {
        let upheld = if before.report_count > 0 {
            settings.trust_on_upheld_report
        } else {
            0
        };
        match self {
            Action::Approve if before.status != pb::CommentStatus::Published => {
                settings.trust_on_approve
            }
            Action::Approve => 0,
            Action::Reject => -(settings.trust_on_reject + upheld),
            Action::Hide => -upheld,
        }
    }
}

fn status_name(status: pb::CommentStatus) -> &'static str {
    match status {
        pb::CommentStatus::Published => "published",
        pb::CommentStatus::Held => "held for review",
        pb::CommentStatus::Rejected => "rejected",
        pb::CommentStatus::Shadowed => "shadowed",
        pb::CommentStatus::Hidden => "hidden",
        pb::CommentStatus::Unspecified => "of unknown status",
    }
}

fn require_id(field: &str, value: &str) -> Result<(), CommentError> {
    onair_kit::input::require_id(field, value)
        .map_err(|error| CommentError::InvalidArgument(error.to_string()))
}

fn check_reason(reason: &str) -> Result<(), CommentError> {
    let length = reason.chars().count();
    if length > MAX_REASON_CHARS {
        return Err(CommentError::InvalidArgument(format!(
            "the reason is {length} characters long; the most is {MAX_REASON_CHARS}"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(CommentError::InvalidArgument(
            "the reason contains a control character".to_owned(),
        ));
    }
    Ok(())
}

fn encode_page_token(cursor: &ReplayCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", cursor.vpos_ms, cursor.comment_id))
}

fn decode_page_token(token: &str) -> Result<ReplayCursor, CommentError> {
    let invalid = || {
        CommentError::InvalidArgument(
            "pageToken is not one this service gave out: pass nextPageToken from the previous page"
                .to_owned(),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (vpos, id) = text.split_once(':').ok_or_else(invalid)?;
    let vpos_ms = vpos.parse().map_err(|_| invalid())?;
    if id.is_empty() {
        return Err(invalid());
    }
    Ok(ReplayCursor {
        vpos_ms,
        comment_id: id.to_owned(),
    })
}

#[tonic::async_trait]
impl CommentService for CommentServiceImpl {
    async fn post_comment(
        &self,
        request: Request<pb::PostCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        let caller = self.caller_with(&request, Role::Viewer).await?;
        let authorization = request.metadata().get("authorization").cloned();
        let address = client_address(&request, &self.inner.settings.trusted_peers);
        let record = self
            .post(
                &caller,
                authorization.as_ref(),
                address,
                request.into_inner(),
            )
            .await?;
        Ok(Response::new(record.to_author_proto()))
    }

    async fn list_slot_comments(
        &self,
        request: Request<pb::ListSlotCommentsRequest>,
    ) -> Result<Response<pb::ListSlotCommentsResponse>, Status> {
        let viewer = self.optional_caller(&request).await?;
        let request = request.into_inner();
        require_id("slot_id", &request.slot_id)?;
        if request.page_size < 0 {
            return Err(
                CommentError::InvalidArgument("pageSize must not be negative".to_owned()).into(),
            );
        }
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        if request.from_vpos_ms < 0 || request.to_vpos_ms < 0 {
            return Err(CommentError::InvalidArgument(
                "fromVposMs and toVposMs are milliseconds from the slot's start, 0 or more"
                    .to_owned(),
            )
            .into());
        }
        let to_vpos_ms = (request.to_vpos_ms > 0).then_some(request.to_vpos_ms);
        if let Some(to) = to_vpos_ms
            && to <= request.from_vpos_ms
        {
            return Err(CommentError::InvalidArgument(format!(
                "toVposMs ({to}) must be after fromVposMs ({})",
                request.from_vpos_ms
            ))
            .into());
        }
        let cursor = if request.page_token.is_empty() {
            None
        } else {
            Some(decode_page_token(&request.page_token)?)
        };
        let viewer_id = viewer.as_ref().map_or("", |caller| caller.user_id.as_str());
        let limit = usize::try_from(page_size).unwrap_or(100);
        let mut records = self
            .inner
            .store
            .replay(
                &request.slot_id,
                request.from_vpos_ms,
                to_vpos_ms,
                cursor.as_ref(),
                viewer_id,
                limit + 1,
            )
            .await
            .map_err(CommentError::from)?;
        if records.is_empty() && cursor.is_none() {
            // No comments, or no such slot: the media service knows which.
            let mut media = self.inner.lookups.media_client();
            media
                .get_slot(onair_proto::media::v1::GetSlotRequest {
                    slot_id: request.slot_id.clone(),
                })
                .await
                .map_err(|status| CommentError::from_peer("media", &status))?;
        }
        let next_page_token = if records.len() > limit {
            records.truncate(limit);
            records
                .last()
                .map(|last| {
                    encode_page_token(&ReplayCursor {
                        vpos_ms: last.vpos_ms,
                        comment_id: last.id.clone(),
                    })
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        let comments = records
            .iter()
            .map(|record| {
                if record.user_id == viewer_id {
                    record.to_author_proto()
                } else {
                    record.to_proto()
                }
            })
            .collect();
        Ok(Response::new(pb::ListSlotCommentsResponse {
            comments,
            next_page_token,
        }))
    }

    type WatchCommentsStream = BoxStream<pb::CommentEvent>;

    async fn watch_comments(
        &self,
        request: Request<pb::WatchCommentsRequest>,
    ) -> Result<Response<Self::WatchCommentsStream>, Status> {
        let request = request.into_inner();
        require_id("channel_id", &request.channel_id)?;
        self.inner
            .lookups
            .check_channel(&request.channel_id)
            .await?;
        let subscription = self
            .inner
            .bus
            .subscribe(&events::channel_pattern(&request.channel_id))
            .await
            .map_err(|error| {
                CommentError::Unavailable(format!("cannot watch comments: {error}"))
            })?;
        let events = subscription.filter_map(|message| async move {
            LiveEvent::decode(&message.subject, &message.payload)?
                .comment_event()
                .map(Ok)
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn get_comment(
        &self,
        request: Request<pb::GetCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        let caller = self.optional_caller(&request).await?;
        let request = request.into_inner();
        require_id("comment_id", &request.comment_id)?;
        let record = self
            .inner
            .store
            .get(&request.comment_id)
            .await
            .map_err(CommentError::from)?;
        let Some(record) = record else {
            return Err(CommentError::comment_not_found(&request.comment_id).into());
        };
        let moderator = caller
            .as_ref()
            .is_some_and(|caller| caller.require(Role::Moderator).is_ok());
        let author = caller
            .as_ref()
            .is_some_and(|caller| caller.user_id == record.user_id);
        if moderator {
            return Ok(Response::new(record.to_proto()));
        }
        if author {
            return Ok(Response::new(record.to_author_proto()));
        }
        if record.status != pb::CommentStatus::Published {
            // Viewers only see published comments; anything else is unknown to them.
            return Err(CommentError::comment_not_found(&request.comment_id).into());
        }
        Ok(Response::new(record.to_proto()))
    }

    async fn report_comment(
        &self,
        request: Request<pb::ReportCommentRequest>,
    ) -> Result<Response<pb::ReportCommentResponse>, Status> {
        let caller = self.caller_with(&request, Role::Viewer).await?;
        let request = request.into_inner();
        require_id("comment_id", &request.comment_id)?;
        check_reason(&request.reason)?;
        let Some(comment) = self
            .inner
            .store
            .get(&request.comment_id)
            .await
            .map_err(CommentError::from)?
        else {
            return Err(CommentError::comment_not_found(&request.comment_id).into());
        };
        if comment.status != pb::CommentStatus::Published {
            // Viewers only see published comments; anything else is unknown to them.
            return Err(CommentError::comment_not_found(&request.comment_id).into());
        }
        if comment.user_id == caller.user_id {
            return Err(CommentError::FailedPrecondition(
                "you cannot report your own comment".to_owned(),
            )
            .into());
        }
        let rules = self.rules(&comment.channel_id).await?;
        let threshold = i64::from(rules.settings.report_threshold.max(1));
        let reported = self
            .inner
            .store
            .report(
                &comment.id,
                &caller.user_id,
                request.reason.trim(),
                threshold,
                self.now_ms(),
            )
            .await
            .map_err(CommentError::from)?;
        if let Some(after) = reported {
            if after.in_queue && !comment.in_queue {
                let reasons = self
                    .inner
                    .store
                    .report_reasons(&after.id, QUEUE_REPORT_REASONS)
                    .await
                    .map_err(CommentError::from)?;
                self.announce_queue(&after, reasons, false).await;
            }
            let event = OpsEvent::new(
                "comment.reported",
                &caller.user_id,
                &after.id,
                request.reason.trim(),
                self.now_ms(),
                serde_json::json!({
                    "channelId": after.channel_id,
                    "authorId": after.user_id,
                    "reportCount": after.report_count,
                }),
            );
            events::record(&self.inner.bus, &event).await;
        }
        Ok(Response::new(pb::ReportCommentResponse {}))
    }

    type WatchModerationQueueStream = BoxStream<pb::ModerationQueueItem>;

    async fn watch_moderation_queue(
        &self,
        request: Request<pb::WatchModerationQueueRequest>,
    ) -> Result<Response<Self::WatchModerationQueueStream>, Status> {
        self.caller_with(&request, Role::Moderator).await?;
        let request = request.into_inner();
        let channel_id = (!request.channel_id.is_empty()).then_some(request.channel_id);
        if let Some(channel_id) = &channel_id {
            require_id("channel_id", channel_id)?;
            self.inner.lookups.check_channel(channel_id).await?;
        }
        let pattern = events::queue_subject(channel_id.as_deref().unwrap_or("*"));
        // Subscribe before reading the backlog, so nothing that joins the
        // queue in between is missed (it may come twice: items are keyed by
        // comment id).
        let subscription = self.inner.bus.subscribe(&pattern).await.map_err(|error| {
            CommentError::Unavailable(format!("cannot watch the queue: {error}"))
        })?;
        let backlog = self
            .inner
            .store
            .queue(channel_id.as_deref(), self.inner.settings.queue_backlog)
            .await
            .map_err(CommentError::from)?;
        let mut items = Vec::with_capacity(backlog.len());
        for record in backlog {
            let report_reasons = if record.report_count > 0 {
                self.inner
                    .store
                    .report_reasons(&record.id, QUEUE_REPORT_REASONS)
                    .await
                    .map_err(CommentError::from)?
            } else {
                Vec::new()
            };
            items.push(Ok(pb::ModerationQueueItem {
                comment: Some(record.to_proto()),
                report_count: i32::try_from(record.report_count).unwrap_or(i32::MAX),
                report_reasons,
                removed: false,
            }));
        }
        let live_items = subscription.filter_map(|message| async move {
            pb::ModerationQueueItem::decode_payload(&message.payload)
                .ok()
                .map(Ok)
        });
        Ok(Response::new(Box::pin(
            futures::stream::iter(items).chain(live_items),
        )))
    }

    async fn approve_comment(
        &self,
        request: Request<pb::ModerateCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        Ok(Response::new(
            self.moderate(request, Action::Approve).await?,
        ))
    }

    async fn reject_comment(
        &self,
        request: Request<pb::ModerateCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        Ok(Response::new(self.moderate(request, Action::Reject).await?))
    }

    async fn hide_comment(
        &self,
        request: Request<pb::ModerateCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        Ok(Response::new(self.moderate(request, Action::Hide).await?))
    }

    async fn get_chat_settings(
        &self,
        request: Request<pb::GetChatSettingsRequest>,
    ) -> Result<Response<pb::ChatSettings>, Status> {
        let caller = self.optional_caller(&request).await?;
        let request = request.into_inner();
        require_id("channel_id", &request.channel_id)?;
        self.inner
            .lookups
            .check_channel(&request.channel_id)
            .await?;
        let rules = self.rules(&request.channel_id).await?;
        let mut settings = rules.settings.clone();
        let moderator = caller.is_some_and(|caller| caller.require(Role::Moderator).is_ok());
        if !moderator {
            // The list would tell evaders what to spell differently.
            settings.blocked_terms.clear();
        }
        Ok(Response::new(settings))
    }

    async fn update_chat_settings(
        &self,
        request: Request<pb::UpdateChatSettingsRequest>,
    ) -> Result<Response<pb::ChatSettings>, Status> {
        let caller = self.caller_with(&request, Role::Moderator).await?;
        let request = request.into_inner();
        require_id("channel_id", &request.channel_id)?;
        let Some(mut settings) = request.chat_settings else {
            return Err(CommentError::InvalidArgument(
                "chatSettings is required: send the channel's whole chat settings".to_owned(),
            )
            .into());
        };
        if !settings.channel_id.is_empty() && settings.channel_id != request.channel_id {
            return Err(CommentError::InvalidArgument(format!(
                "the body names channel {:?} but the path names {:?}",
                settings.channel_id, request.channel_id
            ))
            .into());
        }
        settings.channel_id = request.channel_id.clone();
        settings.blocked_terms = settings
            .blocked_terms
            .into_iter()
            .map(|term| term.trim().to_owned())
            .collect();
        check_chat_settings(&settings)?;
        self.inner
            .lookups
            .check_channel(&request.channel_id)
            .await?;
        let now_ms = self.now_ms();
        self.inner
            .store
            .put_chat_settings(&settings, now_ms)
            .await
            .map_err(CommentError::from)?;
        self.chat_rules().remove(&settings.channel_id);
        let changed = ChatSettingsChanged {
            channel_id: settings.channel_id.clone(),
        };
        if let Err(error) = events::announce(&self.inner.bus, &changed).await {
            tracing::warn!(error = %error, channel_id = %settings.channel_id, "cannot announce new chat settings; other processes apply them within their cache time");
        }
        let event = OpsEvent::new(
            "comment.chat_settings_changed",
            &caller.user_id,
            &settings.channel_id,
            "",
            now_ms,
            serde_json::json!({
                "commentsEnabled": settings.comments_enabled,
                "slowModeSeconds": settings.slow_mode_seconds,
                "blockedTerms": settings.blocked_terms.len(),
                "holdBelowTrustScore": settings.hold_below_trust_score,
                "shadowBelowTrustScore": settings.shadow_below_trust_score,
                "displayRatePerSecond": settings.display_rate_per_second,
                "linksAllowed": settings.links_allowed,
            }),
        );
        events::record(&self.inner.bus, &event).await;
        tracing::info!(channel_id = %settings.channel_id, by = %caller.user_id, "changed chat settings");
        Ok(Response::new(settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onair_kit::clock::timestamp_from_millis;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let cursor = ReplayCursor {
            vpos_ms: 12_345,
            comment_id: "0193-abc".to_owned(),
        };
        assert_eq!(
            decode_page_token(&encode_page_token(&cursor)).expect("valid"),
            cursor
        );
        assert!(decode_page_token("not a token").is_err());
        assert!(decode_page_token(&URL_SAFE_NO_PAD.encode("x:y")).is_err());
        assert!(decode_page_token(&URL_SAFE_NO_PAD.encode("5:")).is_err());
    }

    #[test]
    fn timestamps_are_whole_milliseconds() {
        let timestamp = timestamp_from_millis(1_500);
        assert_eq!(millis_of(Some(&timestamp)), 1_500);
    }
}
