//! What a post needs from other services, kept briefly: the author (ban,
//! trust score, name) from the user service, and the slot on air from the
//! media service. Both are asked through their contracts; both caches are
//! emptied by the bus when the other service announces a change, and expire
//! by themselves in case such a message is lost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use onair_kit::bus::{Message, Subscription};
use onair_kit::clock::millis_from_timestamp as millis_of;
use onair_kit::events::{Announcement as _, UserChanged};
use onair_proto::clients::{MediaClient, UserClient};
use onair_proto::media::v1 as media;
use onair_proto::user::v1 as user;

use crate::error::CommentError;

/// How many entries a cache holds before it is emptied; a bound, not a
/// tuning knob: users and channels that post are far fewer.
const CACHE_CAPACITY: usize = 100_000;

/// Entries that expire, emptied whole or one by one.
struct Expiring<V> {
    entries: Mutex<HashMap<String, (V, Instant)>>,
}

impl<V: Clone> Expiring<V> {
    fn new() -> Expiring<V> {
        Expiring {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (V, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, key: &str) -> Option<V> {
        let entries = self.lock();
        let (value, expires) = entries.get(key)?;
        (Instant::now() < *expires).then(|| value.clone())
    }

    fn put(&self, key: &str, value: V, ttl: Duration) {
        let mut entries = self.lock();
        if entries.len() >= CACHE_CAPACITY {
            entries.clear();
        }
        entries.insert(key.to_owned(), (value, Instant::now() + ttl));
    }

    fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn clear(&self) {
        self.lock().clear();
    }
}

/// Change announcements from the bus, read before every cached answer is
/// used. An announcement published before the change's reply was sent is
/// already queued here by the time the caller can act on that reply (on the
/// in-process bus; on NATS, as soon as it arrives), so reading the queue
/// first makes "ban, then post" refuse the post.
pub struct ChangeFeed {
    subscription: Mutex<Subscription>,
    /// Messages the subscription had dropped when last looked at.
    lost: std::sync::atomic::AtomicU64,
}

/// What a drained feed asks of its cache.
pub enum Changes {
    /// Forget these keys.
    Keys(Vec<Message>),
    /// Messages were lost: forget everything.
    Everything,
}

impl ChangeFeed {
    /// Reads the announcements of one bus subscription.
    pub fn new(subscription: Subscription) -> ChangeFeed {
        ChangeFeed {
            subscription: Mutex::new(subscription),
            lost: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Takes every announcement that has arrived, without waiting.
    pub fn drain(&self) -> Changes {
        let mut subscription = self
            .subscription
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut messages = Vec::new();
        while let Some(Some(message)) = subscription.next().now_or_never() {
            messages.push(message);
        }
        let lost = subscription.lost_messages();
        let seen = self.lost.swap(lost, std::sync::atomic::Ordering::Relaxed);
        if lost != seen {
            return Changes::Everything;
        }
        Changes::Keys(messages)
    }
}

/// The author of a post, as the user service last said.
#[derive(Debug, Clone)]
pub struct Author {
    /// The user's record, as the user service returned it.
    pub user: user::User,
}

impl Author {
    /// The ban in force at `now_ms`, if any.
    pub fn ban_at(&self, now_ms: i64) -> Option<&user::Ban> {
        let ban = self.user.ban.as_ref()?;
        match &ban.expire_time {
            Some(expire) => (millis_of(Some(expire)) > now_ms).then_some(ban),
            None => Some(ban),
        }
    }
}

/// What is on air on a channel.
#[derive(Debug, Clone)]
pub struct OnAir {
    /// The slot on air, or `None` during a gap.
    pub slot: Option<media::Slot>,
    /// Until when this answer holds (the slot's end or the next start).
    pub valid_until_ms: i64,
}

/// The user and media lookups of the comment service.
pub struct Lookups {
    users: UserClient,
    media: MediaClient,
    user_ttl: Duration,
    channel_ttl: Duration,
    authors: Expiring<Author>,
    on_air: Expiring<OnAir>,
    /// `user.changed` ([`UserChanged`]): the user that changed.
    user_changes: ChangeFeed,
    /// `media.changed` ([`onair_kit::events::MediaChanged`]): the channels
    /// whose schedule or details changed, or anything.
    schedule_changes: ChangeFeed,
}

impl Lookups {
    /// Looks authors up with `users` and what is on air with `media`, keeping
    /// authors for `user_ttl` and what is on air for `channel_ttl`, and forgetting
    /// the entries the two change feeds announce.
    pub fn new(
        users: UserClient,
        media: MediaClient,
        user_ttl: Duration,
        channel_ttl: Duration,
        user_changes: ChangeFeed,
        schedule_changes: ChangeFeed,
    ) -> Lookups {
        Lookups {
            users,
            media,
            user_ttl,
            channel_ttl,
            authors: Expiring::new(),
            on_air: Expiring::new(),
            user_changes,
            schedule_changes,
        }
    }

    /// Applies the change announcements that have arrived. Lookups do this
    /// themselves; calling it now and then as well keeps the subscriptions'
    /// queues short while nobody posts.
    pub fn apply_changes(&self) {
        self.forget_changed_users();
        self.forget_changed_schedules();
    }

    fn forget_changed_users(&self) {
        match self.user_changes.drain() {
            Changes::Everything => self.authors.clear(),
            Changes::Keys(messages) => {
                for message in messages {
                    if let Ok(change) = UserChanged::decode_payload(&message.payload) {
                        self.authors.forget(&change.user_id);
                    }
                }
            }
        }
    }

    fn forget_changed_schedules(&self) {
        match self.schedule_changes.drain() {
            Changes::Everything => self.on_air.clear(),
            Changes::Keys(messages) => {
                for message in messages {
                    match onair_kit::events::changed_channels(&message.payload) {
                        Some(channels) => channels
                            .iter()
                            .for_each(|channel| self.on_air.forget(channel)),
                        None => return self.on_air.clear(),
                    }
                }
            }
        }
    }

    /// The user service's word on a user, asked with the user's own
    /// credentials (`authorization`): a user may read their own ban and
    /// trust score.
    pub async fn author(
        &self,
        user_id: &str,
        authorization: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) -> Result<Author, CommentError> {
        self.forget_changed_users();
        if let Some(author) = self.authors.get(user_id) {
            return Ok(author);
        }
        let mut client = self.users.clone();
        let mut request = tonic::Request::new(user::GetUserRequest {
            user_id: user_id.to_owned(),
        });
        if let Some(authorization) = authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        let user = client
            .get_user(request)
            .await
            .map_err(|status| CommentError::from_peer("user", &status))?
            .into_inner();
        let author = Author { user };
        if !self.user_ttl.is_zero() {
            self.authors.put(user_id, author.clone(), self.user_ttl);
        }
        Ok(author)
    }

    fn forget_user(&self, user_id: &str) {
        self.authors.forget(user_id);
    }

    /// The slot on air on a channel at `now_ms`.
    pub async fn on_air(&self, channel_id: &str, now_ms: i64) -> Result<OnAir, CommentError> {
        self.forget_changed_schedules();
        if let Some(on_air) = self.on_air.get(channel_id)
            && now_ms < on_air.valid_until_ms
            && on_air
                .slot
                .as_ref()
                .is_none_or(|slot| millis_of(slot.start_time.as_ref()) <= now_ms)
        {
            return Ok(on_air);
        }
        let mut client = self.media.clone();
        let request = media::GetNowNextRequest {
            channel_id: channel_id.to_owned(),
        };
        let now_next = client
            .get_now_next(request)
            .await
            .map_err(|status| CommentError::from_peer("media", &status))?
            .into_inner();
        let (slot, valid_until_ms) = now_next.on_air_until();
        let on_air = OnAir {
            slot,
            valid_until_ms,
        };
        // Only a slot is kept: a post into a gap is rare, and must see a slot
        // created a moment ago.
        if on_air.slot.is_some() && !self.channel_ttl.is_zero() {
            self.on_air
                .put(channel_id, on_air.clone(), self.channel_ttl);
        }
        Ok(on_air)
    }

    /// A client of the media service.
    pub fn media_client(&self) -> MediaClient {
        self.media.clone()
    }

    /// Whether a channel exists, from the media service.
    pub async fn check_channel(&self, channel_id: &str) -> Result<media::Channel, CommentError> {
        let mut client = self.media.clone();
        let request = media::GetChannelRequest {
            channel_id: channel_id.to_owned(),
        };
        client
            .get_channel(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| CommentError::from_peer("media", &status))
    }

    /// Moves a user's trust score, as the moderator whose credentials
    /// `authorization` carries. A failure is logged: the moderation action
    /// it follows has been stored.
    pub async fn adjust_trust(
        &self,
        authorization: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
        user_id: &str,
        delta: i32,
        reason: &str,
    ) {
        if delta == 0 {
            return;
        }
        let mut request = tonic::Request::new(user::AdjustTrustScoreRequest {
            user_id: user_id.to_owned(),
            delta,
            reason: reason.to_owned(),
        });
        if let Some(authorization) = authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        let mut client = self.users.clone();
        match client.adjust_trust_score(request).await {
            Ok(_) => self.forget_user(user_id),
            Err(status) => {
                tracing::warn!(user_id, delta, error = %status, "cannot adjust a user's trust score")
            }
        }
    }
}
