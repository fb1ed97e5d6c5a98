//! Where the comment pace is kept: what each viewer posted lately on each
//! channel (slow mode, duplicates, the flood limit) and how many comments
//! each channel's live display showed this second (its sampling cap).
//!
//! A station that runs one comment process keeps it in that process's
//! memory ([`MemoryPace`]). Several comment replicas share it in Redis
//! ([`RedisPace`]), so that N replicas allow the pace of one: a viewer's
//! second comment within slow mode is refused whichever replica takes it.
//! Each check in Redis is one Lua script, one round trip, and atomic, so two
//! replicas racing on the same viewer can't both pass.
//!
//! When Redis does not answer (within
//! [`onair_kit::rate::COUNTERS_PATIENCE`]), a viewer's post is refused as
//! unavailable (503, `UNAVAILABLE`) with a message to try again shortly,
//! rather than let through unchecked: a flood would otherwise pass exactly
//! when the station is in trouble. For [`onair_kit::rate::OUTAGE_RETRY`]
//! after a failure, posts are refused so at once; the first after that
//! tries Redis again. Moderators and operators are not paced and still post.
//! The display cap, which only spares the screen, shows the comment when
//! Redis fails: it is stored by then, and hiding it would lose it from live.
//!
//! Both boards keep the same rules and say refusals in the same words
//! ([`PaceRefusal`]); one test suite runs against both.

use std::sync::Arc;

use onair_kit::rate::{Outage, connect_counters, within_patience};

use crate::error::CommentError;
use crate::moderation::{
    DisplayDecision, DisplayMeter, FLOOD_WINDOW_MS, MAX_REMEMBERED_POSTS, Pace, PaceLimits,
    PaceRefusal, RATE_SECONDS, body_digest, idle_horizon_ms,
};

/// A client address on a channel: what the comments-per-address limit
/// counts (an IPv6 client by its /64, see [`onair_kit::abuse::address_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressOnChannel {
    /// The client's address, as counted.
    pub address: std::net::IpAddr,
    /// The channel commented on.
    pub channel_id: String,
}

impl std::fmt::Display for AddressOnChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.channel_id, self.address)
    }
}

/// Where the comment pace is kept, in memory or in Redis.
#[async_trait::async_trait]
pub trait PaceBoard: Send + Sync + 'static {
    /// Checks a viewer's post against the channel's limits and, if it may
    /// go, remembers it, in one step: of two posts racing, one at most
    /// passes slow mode. A refusal is the poster's error (429 or 400); a
    /// board that does not answer is [`CommentError::Unavailable`].
    async fn admit(
        &self,
        channel_id: &str,
        user_id: &str,
        folded_body: &str,
        now_ms: i64,
        limits: PaceLimits,
    ) -> Result<(), CommentError>;

    /// Counts a published comment on the channel's live display and decides
    /// whether it goes out: at most `cap` a second (0: all).
    async fn show_live(
        &self,
        channel_id: &str,
        now_ms: i64,
        cap: u32,
    ) -> Result<DisplayDecision, CommentError>;

    /// Forgets posters idle for longer than any rule looks back, returning
    /// how many; run now and then. Redis forgets them by itself (its keys
    /// expire), so there it does nothing.
    fn forget_idle(&self, now_ms: i64) -> usize;

    /// Whether the board answers, for `/readyz`.
    async fn check(&self) -> Result<(), CommentError>;
}

/// A pace board shared by the parts of a process.
pub type SharedPace = Arc<dyn PaceBoard>;

/// The pace of a station with one comment process, in its memory.
#[derive(Default)]
pub struct MemoryPace {
    posts: Pace,
    display: DisplayMeter,
}

impl MemoryPace {
    /// An empty board.
    pub fn new() -> MemoryPace {
        MemoryPace::default()
    }
}

#[async_trait::async_trait]
impl PaceBoard for MemoryPace {
    async fn admit(
        &self,
        channel_id: &str,
        user_id: &str,
        folded_body: &str,
        now_ms: i64,
        limits: PaceLimits,
    ) -> Result<(), CommentError> {
        self.posts
            .admit(channel_id, user_id, folded_body, now_ms, limits)
    }

    async fn show_live(
        &self,
        channel_id: &str,
        now_ms: i64,
        cap: u32,
    ) -> Result<DisplayDecision, CommentError> {
        Ok(self.display.admit(channel_id, now_ms, cap))
    }

    fn forget_idle(&self, now_ms: i64) -> usize {
        self.posts.forget_idle(now_ms)
    }

    async fn check(&self) -> Result<(), CommentError> {
        Ok(())
    }
}

/// Checks a post against a poster's recent posts and records it if it may
/// go. KEYS[1]: the poster's posts on the channel, a list of
/// `time:digest`, oldest first. ARGV: now, the body's digest, slow mode,
/// the duplicate window, the most posts a minute, the flood window, how
/// far back posts are kept, how many at most, and when the list expires
/// (all times in milliseconds). Answers `{0, 0}` when the post goes, else
/// `{rule, ms}`: 1 slow mode (ms to wait), 2 duplicate (ms since the
/// earlier), 3 flood (ms to wait). The same rules as [`Pace::admit`].
const ADMIT_POST: &str = r"
local now = tonumber(ARGV[1])
local digest = ARGV[2]
local slow_mode = tonumber(ARGV[3])
local duplicate_window = tonumber(ARGV[4])
local max_per_minute = tonumber(ARGV[5])
local flood_window = tonumber(ARGV[6])
local horizon = tonumber(ARGV[7])
local max_remembered = tonumber(ARGV[8])
local posts = redis.call('LRANGE', KEYS[1], 0, -1)
local times = {}
local digests = {}
for index, post in ipairs(posts) do
  local separator = string.find(post, ':', 1, true)
  times[index] = tonumber(string.sub(post, 1, separator - 1))
  digests[index] = string.sub(post, separator + 1)
end
local count = #posts
if slow_mode > 0 and count > 0 then
  local since = now - times[count]
  if since < slow_mode then
    return {1, slow_mode - since}
  end
end
if duplicate_window > 0 then
  for index = count, 1, -1 do
    if digests[index] == digest and now - times[index] < duplicate_window then
      return {2, now - times[index]}
    end
  end
end
if max_per_minute > 0 then
  local in_window = {}
  for index = 1, count do
    if now - times[index] < flood_window then
      in_window[#in_window + 1] = times[index]
    end
  end
  if #in_window >= max_per_minute then
    local oldest = in_window[#in_window - max_per_minute + 1]
    return {3, flood_window - (now - oldest)}
  end
end
redis.call('RPUSH', KEYS[1], ARGV[1] .. ':' .. digest)
local dropped = 0
for index = 1, count do
  if now - times[index] >= horizon or count + 1 - dropped > max_remembered then
    dropped = dropped + 1
  else
    break
  end
end
if dropped > 0 then
  redis.call('LTRIM', KEYS[1], dropped, -1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[9])
return {0, 0}
";

/// Counts a published comment on a channel's display. KEYS[1]: this
/// second's counters (a hash of `published` and `shown`); KEYS[2..]: the
/// seconds before. ARGV: the cap (0: none) and when a second's counters
/// expire, in milliseconds. Answers `{shown, published this second,
/// published in the seconds before}`.
const SHOW_LIVE: &str = r"
local cap = tonumber(ARGV[1])
local published = redis.call('HINCRBY', KEYS[1], 'published', 1)
local show = 0
if cap == 0 then
  show = 1
else
  local shown = tonumber(redis.call('HGET', KEYS[1], 'shown') or '0')
  if shown < cap then
    redis.call('HINCRBY', KEYS[1], 'shown', 1)
    show = 1
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local past = 0
for index = 2, #KEYS do
  past = past + tonumber(redis.call('HGET', KEYS[index], 'published') or '0')
end
return {show, published, past}
";

/// The pace in Redis, shared by every comment replica of a station: a list
/// per poster and channel (`<prefix>:pace:<length of the channel's
/// id>:<channel>:<user>`, their recent posts), and a hash per channel and
/// second
/// (`<prefix>:display:<channel>:<second>`). Times are the station's clock,
/// not Redis's, as for presence.
#[derive(Clone)]
pub struct RedisPace {
    connection: redis::aio::ConnectionManager,
    prefix: String,
    admit_post: Arc<redis::Script>,
    show_live: Arc<redis::Script>,
    /// Whether Redis failed a moment ago: posts are refused at once then,
    /// rather than each wait for it.
    outage: Arc<Outage>,
}

impl RedisPace {
    /// Connects to the Redis at `url` (`redis://host:port/db`); keys start
    /// with `prefix` (the station's `bus_prefix`).
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisPace, CommentError> {
        let connection = connect_counters(url)
            .await
            .map_err(|error| unavailable(&error))?;
        Ok(RedisPace {
            connection,
            prefix: prefix.to_owned(),
            admit_post: Arc::new(redis::Script::new(ADMIT_POST)),
            show_live: Arc::new(redis::Script::new(SHOW_LIVE)),
            outage: Arc::new(Outage::default()),
        })
    }

    /// The channel's id comes with its length, so that no channel and user
    /// pair shares a key with another whatever characters the ids hold.
    fn posts_key(&self, channel_id: &str, user_id: &str) -> String {
        format!(
            "{}:pace:{}:{channel_id}:{user_id}",
            self.prefix,
            channel_id.len()
        )
    }

    fn display_key(&self, channel_id: &str, second: i64) -> String {
        format!("{}:display:{channel_id}:{second}", self.prefix)
    }
}

/// What a poster reads when the shared pace does not answer: it is the
/// station's trouble, and passes.
fn unavailable_now() -> CommentError {
    CommentError::Unavailable(
        "comments cannot be checked against the channel's pace right now (its shared counters do not answer); try again in a few seconds".to_owned(),
    )
}

fn unavailable(error: &redis::RedisError) -> CommentError {
    tracing::warn!(error = %error, "the shared comment pace (Redis) does not answer");
    unavailable_now()
}

impl RedisPace {
    /// Notes how a call to Redis went, for the calls after it.
    fn answered<T>(&self, answer: Result<T, redis::RedisError>) -> Result<T, CommentError> {
        match answer {
            Ok(value) => {
                self.outage.end();
                Ok(value)
            }
            Err(error) => {
                self.outage.begin();
                Err(unavailable(&error))
            }
        }
    }
}

#[async_trait::async_trait]
impl PaceBoard for RedisPace {
    async fn admit(
        &self,
        channel_id: &str,
        user_id: &str,
        folded_body: &str,
        now_ms: i64,
        limits: PaceLimits,
    ) -> Result<(), CommentError> {
        if self.outage.is_on() {
            return Err(unavailable_now());
        }
        let horizon = FLOOD_WINDOW_MS.max(limits.duplicate_window_ms);
        let mut connection = self.connection.clone();
        let rule_and_millis = within_patience(
            self.admit_post
                .key(self.posts_key(channel_id, user_id))
                .arg(now_ms)
                .arg(format!("{:016x}", body_digest(folded_body)))
                .arg(limits.slow_mode_ms)
                .arg(limits.duplicate_window_ms)
                .arg(limits.max_per_minute)
                .arg(FLOOD_WINDOW_MS)
                .arg(horizon)
                .arg(MAX_REMEMBERED_POSTS)
                .arg(idle_horizon_ms())
                .invoke_async(&mut connection),
        )
        .await;
        let (rule, millis): (i64, i64) = self.answered(rule_and_millis)?;
        let refusal = match rule {
            0 => return Ok(()),
            1 => PaceRefusal::SlowMode { wait_ms: millis },
            2 => PaceRefusal::Duplicate { age_ms: millis },
            _ => PaceRefusal::Flood { wait_ms: millis },
        };
        Err(refusal.into_error(limits))
    }

    async fn show_live(
        &self,
        channel_id: &str,
        now_ms: i64,
        cap: u32,
    ) -> Result<DisplayDecision, CommentError> {
        if self.outage.is_on() {
            return Err(unavailable_now());
        }
        let second = now_ms.div_euclid(1000);
        let mut invocation = self.show_live.prepare_invoke();
        // This second's counters, then the seconds before it.
        for back in 0..=RATE_SECONDS as i64 {
            invocation.key(self.display_key(channel_id, second - back));
        }
        let expiry_ms = (RATE_SECONDS as i64 + 2) * 1000;
        let mut connection = self.connection.clone();
        let answer = within_patience(
            invocation
                .arg(cap)
                .arg(expiry_ms)
                .invoke_async(&mut connection),
        )
        .await;
        let (show, published, past): (i64, u32, u32) = self.answered(answer)?;
        Ok(DisplayDecision::of(show == 1, published, past, cap))
    }

    fn forget_idle(&self, _now_ms: i64) -> usize {
        0
    }

    async fn check(&self) -> Result<(), CommentError> {
        let mut connection = self.connection.clone();
        let answer = within_patience(redis::cmd("PING").query_async::<()>(&mut connection)).await;
        self.answered(answer)
    }
}
