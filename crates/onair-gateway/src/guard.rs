//! The guard at the front door: what stands between the internet and the
//! services. It tags every request with an id, lets web pages from the
//! allowed origins call (CORS), and turns away a client address or a user
//! that asks too often (rate limits). Named for what it does to a request
//! on its way in; it was `protection` before, which said less.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::HeaderValue;
use tracing::Instrument;

/// The header that carries a request's id in and out.
pub const REQUEST_ID: &str = "x-request-id";
/// The longest request id accepted from a client.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Gives every request an id (the client's, if it sent a sane one), puts it
/// in the logs of the request and sends it back.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| {
            !value.is_empty()
                && value.len() <= MAX_REQUEST_ID_LEN
                && value.bytes().all(|byte| byte.is_ascii_graphic())
        })
        .map(str::to_owned);
    // A thread-local generator: no system call per request.
    let id = given.unwrap_or_else(|| uuid::Uuid::from_u128(rand::random()).simple().to_string());
    let Ok(value) = HeaderValue::from_str(&id) else {
        return next.run(request).await;
    };
    request.headers_mut().insert(REQUEST_ID, value.clone());
    let span = tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

/// CORS for the web app: the configured origins (or any), the methods and
/// headers the API uses, and the headers a page may read.
pub fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::from(Any)
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|origin| HeaderValue::from_str(origin).ok())
            .collect();
        AllowOrigin::list(list)
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            http::Method::GET,
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ])
        .allow_headers(Any)
        .expose_headers([
            http::header::HeaderName::from_static(REQUEST_ID),
            http::header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

type KeyedLimiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// How many checks pass between two sweeps of idle keys, which keeps the
/// limiters' memory in step with the active clients.
const SWEEP_EVERY: u64 = 10_000;

/// Token buckets per client address and per user. A limit of 0 turns one off.
pub struct RateLimits {
    per_ip: Option<KeyedLimiter<IpAddr>>,
    per_user: Option<KeyedLimiter<String>>,
    checks: AtomicU64,
    clock: DefaultClock,
}

/// A request over its limit, with how long to wait.
pub struct Limited {
    /// How long until the client's next request would pass.
    pub retry_after: Duration,
    /// Who is over the limit, as the refusal names it: `"this address"` or
    /// `"this user"`.
    pub what: &'static str,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_second: u32) -> Option<KeyedLimiter<K>> {
    let rate = NonZeroU32::new(per_second)?;
    // A burst of twice the rate absorbs a page that loads many resources.
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

impl RateLimits {
    /// Limits of `per_ip` requests a second per client address and
    /// `per_user` per user, each with a burst of twice its rate; 0 turns
    /// that limit off.
    pub fn new(per_ip: u32, per_user: u32) -> RateLimits {
        RateLimits {
            per_ip: limiter(per_ip),
            per_user: limiter(per_user),
            checks: AtomicU64::new(0),
            clock: DefaultClock::default(),
        }
    }

    fn sweep(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY != SWEEP_EVERY - 1 {
            return;
        }
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_user {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Counts one request from `address`, or says how long it must wait
    /// when the address is over its rate. Now and then it also forgets the
    /// addresses and users that have gone quiet.
    pub fn check_ip(&self, address: IpAddr) -> Result<(), Limited> {
        self.sweep();
        let Some(limiter) = &self.per_ip else {
            return Ok(());
        };
        limiter.check_key(&address).map_err(|not_until| Limited {
            retry_after: not_until.wait_time_from(self.clock.now()),
            what: "this address",
        })
    }

    /// Counts one request from the authenticated user `user_id`, or says how
    /// long the user must wait when over the rate.
    pub fn check_user(&self, user_id: &str) -> Result<(), Limited> {
        let Some(limiter) = &self.per_user else {
            return Ok(());
        };
        limiter
            .check_key(&user_id.to_owned())
            .map_err(|not_until| Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
                what: "this user",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_burst_is_told_when_to_retry() {
        let limits = RateLimits::new(2, 0);
        let address: IpAddr = "127.0.0.1".parse().unwrap();
        let mut refused = None;
        for _ in 0..10 {
            if let Err(limited) = limits.check_ip(address) {
                refused = Some(limited);
                break;
            }
        }
        let limited = refused.expect("the burst is 4");
        assert!(limited.retry_after <= Duration::from_secs(1));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(limits.check_ip(other).is_ok(), "limits are per address");
        assert!(limits.check_user("anyone").is_ok(), "0 turns a limit off");
    }
}
