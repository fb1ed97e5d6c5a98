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
//! When Redis does not answer (within [`COUNTERS_PATIENCE`]), a gateway
//! falls back to buckets in its own memory, trying Redis again every
//! [`OUTAGE_RETRY`], and says so in its log: a client then gets at most
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

/// How long a request waits for the shared counters' Redis, per call and
/// per connection attempt, before it goes on without it: an outage costs a
/// request half a second, not the connection's whole reconnecting.
pub const COUNTERS_PATIENCE: Duration = Duration::from_millis(500);

/// Connects to the Redis of shared counters (`redis://host:port/db`), with
/// short timeouts and few reconnection attempts per call (the next call
/// tries again), so that a Redis that is down is said so promptly.
pub async fn connect_counters(
    url: &str,
) -> Result<redis::aio::ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COUNTERS_PATIENCE))
        .set_response_timeout(Some(COUNTERS_PATIENCE))
        .set_number_of_retries(2);
    redis::aio::ConnectionManager::new_with_config(client, config).await
}

/// Runs one call to the shared counters, for at most [`COUNTERS_PATIENCE`].
pub async fn within_patience<T>(
    call: impl std::future::Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, redis::RedisError> {
    match tokio::time::timeout(COUNTERS_PATIENCE, call).await {
        Ok(answer) => answer,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer in time",
        ))),
    }
}

/// How long after the shared counters' Redis failed to answer calls go on
/// without it at once; the first call after tries it again.
pub const OUTAGE_RETRY: Duration = Duration::from_secs(1);

/// Remembers that the shared counters' Redis did not answer, so that for
/// [`OUTAGE_RETRY`] after, calls do without it at once rather than each
/// wait [`COUNTERS_PATIENCE`]. Timed by the process's monotonic clock: it
/// is about the connection, not the station's time.
#[derive(Debug, Default)]
pub struct Outage {
    /// Until when (milliseconds of [`Outage::now_ms`]) calls do without
    /// Redis; 0 while it answers.
    until_ms: AtomicI64,
}

impl Outage {
    fn now_ms() -> i64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let elapsed = START.get_or_init(std::time::Instant::now).elapsed();
        // From 1, so that 0 means no outage.
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX) + 1
    }

    /// Whether calls should do without Redis now.
    pub fn is_on(&self) -> bool {
        let until_ms = self.until_ms.load(Ordering::Relaxed);
        until_ms != 0 && Outage::now_ms() < until_ms
    }

    /// Redis did not answer: do without it for a moment.
    pub fn begin(&self) {
        let until_ms = Outage::now_ms() + i64::try_from(OUTAGE_RETRY.as_millis()).unwrap_or(0);
        self.until_ms.store(until_ms, Ordering::Relaxed);
    }

    /// Redis answered.
    pub fn end(&self) {
        // Read first: most calls find no outage, and need not write.
        if self.until_ms.load(Ordering::Relaxed) != 0 {
            self.until_ms.store(0, Ordering::Relaxed);
        }
    }
}

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
        let connection = connect_counters(url)
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
            outage: Outage::default(),
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
    /// Whether Redis failed a moment ago.
    outage: Outage,
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
        if self.outage.is_on() {
            return self.fallback.check(key);
        }
        let now_us = self.clock.now_ms().saturating_mul(1000);
        let mut connection = self.rates.connection.clone();
        let answer: Result<i64, redis::RedisError> = within_patience(
            self.rates
                .take
                .key(format!("{}{key}", self.key_prefix))
                .arg(now_us)
                .arg(self.period_us)
                .arg(self.tolerance_us)
                .invoke_async(&mut connection),
        )
        .await;
        match answer {
            Ok(wait_us) => {
                self.outage.end();
                if wait_us == 0 {
                    return Ok(());
                }
                Err(Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)))
            }
            Err(error) => {
                self.outage.begin();
                self.warn(&error);
                self.fallback.check(key)
            }
        }
    }
}
