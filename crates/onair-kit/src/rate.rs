//! Request rates shared by every process of a station: token buckets by key
//! (a client address, a user) that hold across gateways.
//!
//! A station that runs one gateway keeps its buckets in memory
//! ([`AddressLimiter`], governor's GCRA). Several gateways share them in
//! Redis ([`RedisBuckets`]), so that a client balanced over N gateways gets
//! the rate of one, not N times it. A take in Redis is one Lua script (the
//! same GCRA: a bucket is the moment it is next full), one round trip, and
//! atomic, so takes racing through two gateways can't overdraw a bucket.
//!
//! When Redis does not answer, a gateway falls back to buckets in its own
//! memory until it does, and says so in its log: a client then gets at most
//! the rate per gateway, still bounded, and the station keeps answering
//! rather than refuse every request for want of a counter. (The comment
//! pace does the opposite and refuses posts: there the exact pace is a
//! channel's rule; here the limit only keeps a client from swamping the
//! station.)

use std::fmt::Display;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::abuse::{AddressLimiter, AddressRate};
use crate::clock::Clock;

/// Token buckets by key, all with one rate.
#[async_trait::async_trait]
pub trait Buckets<K: Sync + ?Sized>: Send + Sync + 'static {
    /// Takes one token of `key`'s bucket, or says how long until one is back.
    async fn take(&self, key: &K) -> Result<(), Duration>;
}

#[async_trait::async_trait]
impl<K> Buckets<K> for AddressLimiter<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    async fn take(&self, key: &K) -> Result<(), Duration> {
        self.check(key)
    }
}

/// Buckets shared by the processes of a station, of any key.
pub type SharedBuckets<K> = Arc<dyn Buckets<K>>;

/// The Redis that a station's processes keep their buckets in, and the
/// script that takes a token.
#[derive(Clone)]
pub struct RedisRates {
    connection: redis::aio::ConnectionManager,
    prefix: String,
    take: Arc<redis::Script>,
}

/// Takes a token of a bucket by GCRA. KEYS[1]: when the bucket is next
/// full, in microseconds of the station's clock. ARGV: now, the time one
/// token takes to come back, and how far ahead of now that may run (the
/// burst less one token), all in microseconds. Answers 0 when a token was
/// taken, else the microseconds until one is back.
const TAKE_TOKEN: &str = r"
local now = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local full_at = tonumber(redis.call('GET', KEYS[1]) or '0')
if full_at < now then
  full_at = now
end
local early = full_at - now - tolerance
if early > 0 then
  return early
end
local next_full_at = full_at + period
redis.call('SET', KEYS[1], string.format('%.0f', next_full_at), 'PX', math.ceil((next_full_at - now) / 1000))
return 0
";

/// The Redis cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared rate limits are unavailable: {0}")]
pub struct RateError(pub String);

impl RedisRates {
    /// Connects to the Redis at `url` (`redis://host:port/db`); keys start
    /// with `prefix` (the station's `bus_prefix`).
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisRates, RateError> {
        let client = redis::Client::open(url).map_err(|error| RateError(error.to_string()))?;
        let connection = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|error| RateError(error.to_string()))?;
        Ok(RedisRates {
            connection,
            prefix: prefix.to_owned(),
            take: Arc::new(redis::Script::new(TAKE_TOKEN)),
        })
    }

    /// The buckets named `name` (`<prefix>:rate:<name>:<key>` in Redis),
    /// each giving `rate`, timed by `clock`; `None` when the rate is off.
    pub fn buckets<K>(
        &self,
        name: &str,
        rate: AddressRate,
        clock: &Clock,
    ) -> Option<RedisBuckets<K>>
    where
        K: Hash + Eq + Clone + Display + Send + Sync + 'static,
    {
        if rate.is_off() {
            return None;
        }
        let period = Duration::from_secs(60) / rate.per_minute;
        let burst = rate.burst.max(1);
        Some(RedisBuckets {
            rates: self.clone(),
            key_prefix: format!("{}:rate:{name}:", self.prefix),
            period_us: micros(period),
            tolerance_us: micros(period) * i64::from(burst - 1),
            clock: clock.clone(),
            fallback: AddressLimiter::new(rate, clock),
            warned_at_ms: AtomicI64::new(i64::MIN),
            key: PhantomData,
        })
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// How often a gateway whose Redis does not answer says so in its log.
const WARN_EVERY_MS: i64 = 10_000;

/// Buckets in Redis, one key per client, shared by every process that
/// names them alike; this process's memory while Redis does not answer.
pub struct RedisBuckets<K: Hash + Eq + Clone> {
    rates: RedisRates,
    key_prefix: String,
    period_us: i64,
    tolerance_us: i64,
    clock: Clock,
    /// The buckets used while Redis does not answer.
    fallback: AddressLimiter<K>,
    /// When the log last said Redis does not answer.
    warned_at_ms: AtomicI64,
    key: PhantomData<fn(K)>,
}

impl<K: Hash + Eq + Clone + Display> RedisBuckets<K> {
    fn warn(&self, error: &redis::RedisError) {
        let now_ms = self.clock.now_ms();
        let warned_at_ms = self.warned_at_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(warned_at_ms) < WARN_EVERY_MS {
            return;
        }
        if self
            .warned_at_ms
            .compare_exchange(warned_at_ms, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(error = %error, buckets = %self.key_prefix, "shared rate limits (Redis) do not answer; limiting in this process's memory until they do");
        }
    }
}

#[async_trait::async_trait]
impl<K> Buckets<K> for RedisBuckets<K>
where
    K: Hash + Eq + Clone + Display + Send + Sync + 'static,
{
    async fn take(&self, key: &K) -> Result<(), Duration> {
        let now_us = self.clock.now_ms().saturating_mul(1000);
        let mut connection = self.rates.connection.clone();
        let answer: Result<i64, redis::RedisError> = self
            .rates
            .take
            .key(format!("{}{key}", self.key_prefix))
            .arg(now_us)
            .arg(self.period_us)
            .arg(self.tolerance_us)
            .invoke_async(&mut connection)
            .await;
        match answer {
            Ok(0) => Ok(()),
            Ok(wait_us) => Err(Duration::from_micros(u64::try_from(wait_us).unwrap_or(0))),
            Err(error) => {
                self.warn(&error);
                self.fallback.check(key)
            }
        }
    }
}
