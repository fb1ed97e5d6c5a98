//! The guard at the front door: what stands between the internet and the
//! services. It tags every request with an id, lets web pages from the
//! allowed origins call (CORS), and turns away a client address or a user
//! that asks too often (rate limits). Named for what it does to a request
//! on its way in; it was `protection` before, which said less.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use onair_kit::abuse::{AddressLimiter, AddressRate};
use onair_kit::clock::Clock;
use onair_kit::rate::{RedisRates, SharedBuckets};
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

/// Token buckets per client address and per user: in this process's memory,
/// or in Redis shared by every gateway of the station (see
/// [`onair_kit::rate`]). A limit of 0 turns one off.
pub struct RateLimits {
    per_ip: Option<SharedBuckets<IpAddr>>,
    per_user: Option<SharedBuckets<String>>,
}

/// A request over its limit, with how long to wait.
pub struct Limited {
    /// How long until the client's next request would pass.
    pub retry_after: Duration,
    /// Who is over the limit, as the refusal names it: `"this address"` or
    /// `"this user"`.
    pub what: &'static str,
}

/// A rate of `per_second` requests, with a burst of twice that, which
/// absorbs a page that loads many resources.
fn rate(per_second: u32) -> AddressRate {
    AddressRate {
        per_minute: per_second.saturating_mul(60),
        burst: per_second.saturating_mul(2),
    }
}

/// Buckets of `per_second` in this process's memory; `None` when off.
fn memory_buckets<K>(per_second: u32, clock: &Clock) -> Option<SharedBuckets<K>>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    let rate = rate(per_second);
    if rate.is_off() {
        return None;
    }
    Some(Arc::new(AddressLimiter::<K>::new(rate, clock)))
}

impl RateLimits {
    /// Limits of `per_ip` requests a second per client address and
    /// `per_user` per user, each with a burst of twice its rate, in this
    /// process's memory; 0 turns that limit off.
    pub fn new(per_ip: u32, per_user: u32, clock: &Clock) -> RateLimits {
        RateLimits {
            per_ip: memory_buckets::<IpAddr>(per_ip, clock),
            per_user: memory_buckets::<String>(per_user, clock),
        }
    }

    /// The same limits, shared by every gateway that keeps them in `rates`.
    pub fn shared(per_ip: u32, per_user: u32, rates: &RedisRates, clock: &Clock) -> RateLimits {
        RateLimits {
            per_ip: rates
                .buckets::<IpAddr>("gateway-address", rate(per_ip), clock)
                .map(|buckets| Arc::new(buckets) as SharedBuckets<IpAddr>),
            per_user: rates
                .buckets::<String>("gateway-user", rate(per_user), clock)
                .map(|buckets| Arc::new(buckets) as SharedBuckets<String>),
        }
    }

    /// Counts one request from `address`, or says how long it must wait
    /// when the address is over its rate.
    pub async fn check_ip(&self, address: IpAddr) -> Result<(), Limited> {
        let Some(buckets) = &self.per_ip else {
            return Ok(());
        };
        buckets.take(&address).await.map_err(|wait| Limited {
            retry_after: wait,
            what: "this address",
        })
    }

    /// Counts one request from the authenticated user `user_id`, or says how
    /// long the user must wait when over the rate.
    pub async fn check_user(&self, user_id: &str) -> Result<(), Limited> {
        let Some(buckets) = &self.per_user else {
            return Ok(());
        };
        buckets
            .take(&user_id.to_owned())
            .await
            .map_err(|wait| Limited {
                retry_after: wait,
                what: "this user",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_over_its_burst_is_told_when_to_retry() {
        let limits = RateLimits::new(2, 0, &Clock::system());
        let address: IpAddr = "127.0.0.1".parse().unwrap();
        let mut refused = None;
        for _ in 0..10 {
            if let Err(limited) = limits.check_ip(address).await {
                refused = Some(limited);
                break;
            }
        }
        let limited = refused.expect("the burst is 4");
        assert!(limited.retry_after <= Duration::from_secs(1));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(
            limits.check_ip(other).await.is_ok(),
            "limits are per address"
        );
        assert!(
            limits.check_user("anyone").await.is_ok(),
            "0 turns a limit off"
        );
    }
}
