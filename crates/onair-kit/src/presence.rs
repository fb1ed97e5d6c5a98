//! Viewer presence: who is watching which channel, kept so that a count is
//! exact and says nothing of who watches.
//!
//! A viewer is present on a channel while some process keeps a mark of
//! them there that has not run out: a gateway for each open live socket
//! (renewed every [`Watchers`] refresh, until the socket closes), the
//! audience service for each heartbeat. A mark names the viewer only by a
//! [`ViewerKey`]: a one-way digest of a signed-in user's id, so that one
//! user's two tabs or two devices count once, or a random key per
//! anonymous connection. Nothing on the board leads back to a person.
//!
//! The board is [`MemoryPresence`] in a station that runs as one process,
//! and [`RedisPresence`] when several processes hold viewers: every
//! gateway marks its sockets in one sorted set per channel, scored by when
//! the mark runs out, so the count is exact across gateways and the
//! viewers of a gateway that dies drop out once their marks run out. Both
//! keep the same rules, and one test suite runs against both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use crate::clock::Clock;

/// A viewer as the board knows them: enough to count them once, nothing
/// that says who they are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewerKey(String);

/// What a user's id is hashed with, so that the key of a user is not the
/// plain SHA-256 of their id.
const USER_KEY_CONTEXT: &[u8] = b"onair presence viewer\0";

impl ViewerKey {
    /// The key of a signed-in user: the same on every device and every
    /// process, and not their id (a truncated SHA-256 of it).
    pub fn of_user(user_id: &str) -> ViewerKey {
        let mut digest = Sha256::new();
        digest.update(USER_KEY_CONTEXT);
        digest.update(user_id.as_bytes());
        let digest = digest.finalize();
        ViewerKey(format!("u{}", URL_SAFE_NO_PAD.encode(&digest[..16])))
    }

    /// A key of its own for an anonymous connection, which counts as one
    /// viewer for as long as it lasts.
    pub fn anonymous() -> ViewerKey {
        let random: [u8; 16] = rand::random();
        ViewerKey(format!("a{}", URL_SAFE_NO_PAD.encode(random)))
    }

    /// The key as it is stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A viewer present on a channel until a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The channel watched.
    pub channel_id: String,
    /// Who watches, as a key.
    pub viewer: ViewerKey,
    /// When the mark runs out, in Unix milliseconds, unless renewed.
    pub until_ms: i64,
}

/// The board cannot be reached or answered something unexpected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("viewer presence is unavailable: {0}")]
pub struct PresenceError(pub String);

/// Where viewer marks are kept and counted.
#[async_trait::async_trait]
pub trait PresenceBoard: Send + Sync + 'static {
    /// Records each mark. A viewer already marked on the channel keeps the
    /// later of the two ends: a mark never shortens another.
    async fn mark(&self, marks: &[Mark]) -> Result<(), PresenceError>;

    /// How many distinct viewers each of `channel_ids` has at `now_ms`, in
    /// the same order.
    async fn counts(&self, channel_ids: &[String], now_ms: i64) -> Result<Vec<u64>, PresenceError>;

    /// The channels with a mark that had not run out at `now_ms`; marks
    /// that had are forgotten.
    async fn watched_channels(&self, now_ms: i64) -> Result<Vec<String>, PresenceError>;

    /// Takes the duty of announcing counts, or keeps it, for `lease`; true
    /// while `holder` has it. With several audience processes, one of them
    /// announces each count; another takes over once a holder stops
    /// renewing.
    async fn hold_duty(&self, holder: &str, lease: Duration) -> Result<bool, PresenceError>;

    /// Whether the board answers, for `/readyz`.
    async fn check(&self) -> Result<(), PresenceError>;
}

/// A board shared by the parts of a process.
pub type SharedPresence = Arc<dyn PresenceBoard>;

/// The board of a station that runs as one process.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    /// Each channel's viewers, with when their mark runs out.
    channels: Mutex<HashMap<String, HashMap<ViewerKey, i64>>>,
}

impl MemoryPresence {
    /// An empty board.
    pub fn new() -> MemoryPresence {
        MemoryPresence::default()
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<ViewerKey, i64>>> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl PresenceBoard for MemoryPresence {
    async fn mark(&self, marks: &[Mark]) -> Result<(), PresenceError> {
        let mut channels = self.channels();
        for mark in marks {
            let viewers = channels.entry(mark.channel_id.clone()).or_default();
            let until = viewers.entry(mark.viewer.clone()).or_insert(mark.until_ms);
            *until = (*until).max(mark.until_ms);
        }
        Ok(())
    }

    async fn counts(&self, channel_ids: &[String], now_ms: i64) -> Result<Vec<u64>, PresenceError> {
        let channels = self.channels();
        let count = |channel_id: &String| {
            channels.get(channel_id).map_or(0, |viewers| {
                viewers.values().filter(|until| **until > now_ms).count() as u64
            })
        };
        Ok(channel_ids.iter().map(count).collect())
    }

    async fn watched_channels(&self, now_ms: i64) -> Result<Vec<String>, PresenceError> {
        let mut channels = self.channels();
        channels.retain(|_, viewers| {
            viewers.retain(|_, until| *until > now_ms);
            !viewers.is_empty()
        });
        let mut watched: Vec<String> = channels.keys().cloned().collect();
        watched.sort_unstable();
        Ok(watched)
    }

    async fn hold_duty(&self, _holder: &str, _lease: Duration) -> Result<bool, PresenceError> {
        // One process: whoever asks is the only one.
        Ok(true)
    }

    async fn check(&self) -> Result<(), PresenceError> {
        Ok(())
    }
}

/// The board in Redis, shared by every process of a station: one sorted set
/// per channel (`<prefix>:presence:<channel>`, viewer keys scored by when
/// their mark runs out), the set of channels with marks, and the duty's
/// lease. Times are the station's clock, not Redis's, so a test can move
/// them.
#[derive(Clone)]
pub struct RedisPresence {
    connection: redis::aio::ConnectionManager,
    prefix: String,
}

/// How long a channel's set lives in Redis after its last mark, whatever
/// the marks say: a channel nobody watches again leaves nothing behind.
const IDLE_CHANNEL_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// Takes the lease when it is free, or renews it for its holder.
const HOLD_DUTY: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
";

impl RedisPresence {
    /// Connects to the Redis at `url` (`redis://host:port/db`); keys start
    /// with `prefix` (the station's `bus_prefix`). Each call waits as long
    /// as the shared counters' do ([`crate::rate::connect_counters`]), so a
    /// Redis that stops answering delays a live socket's first mark by at
    /// most that, rather than by the client's reconnection backoff.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisPresence, PresenceError> {
        let connection = crate::rate::connect_counters(url)
            .await
            .map_err(|error| unavailable(&error))?;
        Ok(RedisPresence {
            connection,
            prefix: prefix.to_owned(),
        })
    }

    fn channel_key(&self, channel_id: &str) -> String {
        format!("{}:presence:{channel_id}", self.prefix)
    }

    fn channels_key(&self) -> String {
        format!("{}:presence-channels", self.prefix)
    }

    fn duty_key(&self) -> String {
        format!("{}:presence-duty", self.prefix)
    }
}

fn unavailable(error: &redis::RedisError) -> PresenceError {
    PresenceError(format!("redis: {error}"))
}

#[async_trait::async_trait]
impl PresenceBoard for RedisPresence {
    async fn mark(&self, marks: &[Mark]) -> Result<(), PresenceError> {
        if marks.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let mut channels: Vec<&str> = Vec::new();
        for mark in marks {
            pipe.cmd("ZADD")
                .arg(self.channel_key(&mark.channel_id))
                .arg("GT")
                .arg(mark.until_ms)
                .arg(mark.viewer.as_str())
                .ignore();
            if !channels.contains(&mark.channel_id.as_str()) {
                channels.push(&mark.channel_id);
            }
        }
        let expiry = IDLE_CHANNEL_EXPIRY.as_millis() as u64;
        for channel_id in &channels {
            pipe.cmd("PEXPIRE")
                .arg(self.channel_key(channel_id))
                .arg(expiry)
                .ignore();
        }
        pipe.cmd("SADD")
            .arg(self.channels_key())
            .arg(&channels)
            .ignore();
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|error| unavailable(&error))
    }

    async fn counts(&self, channel_ids: &[String], now_ms: i64) -> Result<Vec<u64>, PresenceError> {
        if channel_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for channel_id in channel_ids {
            pipe.cmd("ZCOUNT")
                .arg(self.channel_key(channel_id))
                .arg(format!("({now_ms}"))
                .arg("+inf");
        }
        let mut connection = self.connection.clone();
        pipe.query_async(&mut connection)
            .await
            .map_err(|error| unavailable(&error))
    }

    async fn watched_channels(&self, now_ms: i64) -> Result<Vec<String>, PresenceError> {
        let mut connection = self.connection.clone();
        let mut channels: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.channels_key())
            .query_async(&mut connection)
            .await
            .map_err(|error| unavailable(&error))?;
        if channels.is_empty() {
            return Ok(channels);
        }
        let mut pipe = redis::pipe();
        for channel_id in &channels {
            let key = self.channel_key(channel_id);
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(now_ms)
                .ignore();
            pipe.cmd("ZCARD").arg(&key);
        }
        let sizes: Vec<u64> = pipe
            .query_async(&mut connection)
            .await
            .map_err(|error| unavailable(&error))?;
        let empty: Vec<&String> = channels
            .iter()
            .zip(&sizes)
            .filter(|(_, size)| **size == 0)
            .map(|(channel_id, _)| channel_id)
            .collect();
        if !empty.is_empty() {
            // A mark that lands meanwhile adds its channel back.
            redis::cmd("SREM")
                .arg(self.channels_key())
                .arg(&empty)
                .query_async::<()>(&mut connection)
                .await
                .map_err(|error| unavailable(&error))?;
        }
        let mut watched = Vec::with_capacity(channels.len());
        for (channel_id, size) in channels.drain(..).zip(sizes) {
            if size > 0 {
                watched.push(channel_id);
            }
        }
        watched.sort_unstable();
        Ok(watched)
    }

    async fn hold_duty(&self, holder: &str, lease: Duration) -> Result<bool, PresenceError> {
        let mut connection = self.connection.clone();
        let held: i64 = redis::Script::new(HOLD_DUTY)
            .key(self.duty_key())
            .arg(holder)
            .arg(lease.as_millis().max(1) as u64)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| unavailable(&error))?;
        Ok(held == 1)
    }

    async fn check(&self) -> Result<(), PresenceError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(|error| unavailable(&error))
    }
}

/// The viewers this process holds on the board (a gateway's open live
/// sockets): each is marked when it comes and renewed every `refresh`
/// while it stays, so the board forgets it within `ttl` of its going, or
/// of this process dying.
pub struct Watchers {
    board: SharedPresence,
    clock: Clock,
    ttl: Duration,
    /// How many connections of each viewer on each channel are open here.
    held: Mutex<HashMap<(String, ViewerKey), usize>>,
}

impl Watchers {
    /// Holds viewers on `board`; renews their marks every `refresh` for
    /// `ttl` (a refresh must come well within the ttl). Spawns the renewing
    /// task, which ends when the last handle is dropped.
    pub fn start(
        board: SharedPresence,
        clock: Clock,
        ttl: Duration,
        refresh: Duration,
    ) -> Arc<Watchers> {
        let watchers = Arc::new(Watchers {
            board,
            clock,
            ttl,
            held: Mutex::new(HashMap::new()),
        });
        tokio::spawn(renew(Arc::downgrade(&watchers), refresh));
        watchers
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<(String, ViewerKey), usize>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn until_ms(&self) -> i64 {
        self.clock
            .now_ms()
            .saturating_add(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX))
    }

    /// Counts `viewer` on `channel_id` until the returned guard is dropped.
    /// The first connection of a viewer is marked at once; a board that
    /// does not answer is logged and retried at the next renewal, so a
    /// viewer is never turned away for it.
    pub async fn watch(self: &Arc<Self>, channel_id: &str, viewer: ViewerKey) -> Watching {
        let key = (channel_id.to_owned(), viewer);
        let first = {
            let mut held = self.held();
            let connections = held.entry(key.clone()).or_insert(0);
            *connections += 1;
            *connections == 1
        };
        if first {
            let mark = Mark {
                channel_id: key.0.clone(),
                viewer: key.1.clone(),
                until_ms: self.until_ms(),
            };
            if let Err(error) = self.board.mark(&[mark]).await {
                tracing::warn!(error = %error, "cannot mark a viewer present; retrying at the next renewal");
            }
        }
        Watching {
            watchers: self.clone(),
            key: Some(key),
        }
    }

    /// How many distinct viewers this process holds, for its metrics.
    pub fn held_viewers(&self) -> usize {
        self.held().len()
    }
}

async fn renew(watchers: Weak<Watchers>, refresh: Duration) {
    let mut interval = tokio::time::interval(refresh);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(watchers) = watchers.upgrade() else {
            return;
        };
        let until_ms = watchers.until_ms();
        let marks: Vec<Mark> = watchers
            .held()
            .keys()
            .map(|(channel_id, viewer)| Mark {
                channel_id: channel_id.clone(),
                viewer: viewer.clone(),
                until_ms,
            })
            .collect();
        if let Err(error) = watchers.board.mark(&marks).await {
            tracing::warn!(error = %error, viewers = marks.len(), "cannot renew the viewers' presence");
        }
    }
}

/// A viewer counted on a channel while it is held.
pub struct Watching {
    watchers: Arc<Watchers>,
    key: Option<(String, ViewerKey)>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let mut held = self.watchers.held();
        if let Some(connections) = held.get_mut(&key) {
            *connections -= 1;
            if *connections == 0 {
                // No longer renewed: the board forgets the viewer once the
                // last mark runs out, which also spares a viewer who comes
                // straight back on another socket.
                held.remove(&key);
            }
        }
    }
}

/// How long marks last and how often a process renews its viewers'
/// (`presence.*` keys), the same for every process of a station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceSettings {
    /// How long a mark lasts unless renewed: a viewer who leaves, or whose
    /// process dies, drops out of the count within this time.
    pub ttl: Duration,
    /// How often a process renews the marks of the viewers it holds; well
    /// within the ttl, so that a held viewer never drops out.
    pub refresh: Duration,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        PresenceSettings {
            ttl: Duration::from_secs(15),
            refresh: Duration::from_secs(5),
        }
    }
}

impl crate::config::Section for PresenceSettings {
    const KEYS: &'static [crate::config::Key] = &[
        crate::config::Key::with_default("presence.ttl_seconds", "15"),
        crate::config::Key::with_default("presence.refresh_ms", "5000"),
    ];

    fn read(settings: &crate::config::Settings) -> Result<Self, crate::config::ConfigError> {
        let layers = settings.layers();
        let ttl = layers.required(
            "presence.ttl_seconds",
            "a whole number of seconds from 1 to 3600",
            |value| crate::config::count_within(1..=3600u64)(value).map(Duration::from_secs),
        )?;
        let refresh = layers.required(
            "presence.refresh_ms",
            "a whole number of milliseconds, less than half of presence.ttl_seconds",
            crate::config::positive_milliseconds,
        )?;
        if refresh * 2 > ttl {
            return Err(layers.invalid(
                "presence.refresh_ms",
                "a whole number of milliseconds, less than half of presence.ttl_seconds",
            ));
        }
        Ok(PresenceSettings { ttl, refresh })
    }
}
