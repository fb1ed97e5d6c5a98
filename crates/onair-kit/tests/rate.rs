//! One rate suite, run against both kinds of buckets: in memory, and in the
//! Redis at `ONAIR_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) under
//! a key prefix of the run's own. Each rule is checked through two handles,
//! as two gateways would hold: the same buckets in memory, two connections
//! to Redis.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use onair_kit::abuse::{AddressLimiter, AddressRate};
use onair_kit::clock::Clock;
use onair_kit::rate::{RedisRates, SharedBuckets};

fn redis_url() -> String {
    std::env::var("ONAIR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn unique_prefix() -> String {
    let random: u64 = rand::random();
    format!("onair-test-{random:016x}")
}

/// Six a minute (one every 10 s), three at once.
const RATE: AddressRate = AddressRate {
    per_minute: 6,
    burst: 3,
};

fn manual_clock() -> Clock {
    Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000))
}

fn memory_gateways(
    rate: AddressRate,
    clock: &Clock,
) -> (SharedBuckets<IpAddr>, SharedBuckets<IpAddr>) {
    let buckets: SharedBuckets<IpAddr> = Arc::new(AddressLimiter::new(rate, clock));
    (buckets.clone(), buckets)
}

async fn redis_gateways(
    rate: AddressRate,
    clock: &Clock,
) -> (SharedBuckets<IpAddr>, SharedBuckets<IpAddr>) {
    let prefix = unique_prefix();
    let mut handles = Vec::new();
    for _ in 0..2 {
        let rates = RedisRates::connect(&redis_url(), &prefix)
            .await
            .expect("the test Redis answers");
        let buckets: SharedBuckets<IpAddr> = Arc::new(
            rates
                .buckets("address", rate, clock)
                .expect("a rate that is on"),
        );
        handles.push(buckets);
    }
    let second = handles.pop().unwrap();
    let first = handles.pop().unwrap();
    (first, second)
}

/// A burst spent through both gateways, a wait both agree on, and a token
/// back after it.
async fn a_burst_holds_across_gateways(
    first: SharedBuckets<IpAddr>,
    second: SharedBuckets<IpAddr>,
    clock: &Clock,
) {
    let client: IpAddr = "192.0.2.1".parse().unwrap();
    first.take(&client).await.expect("one");
    second.take(&client).await.expect("two");
    first.take(&client).await.expect("three");
    let wait = second
        .take(&client)
        .await
        .expect_err("the burst is three, whichever gateway counts");
    assert_eq!(wait, Duration::from_secs(10), "one token every 10 s");
    assert_eq!(first.take(&client).await, Err(Duration::from_secs(10)));
    let neighbour: IpAddr = "192.0.2.2".parse().unwrap();
    second
        .take(&neighbour)
        .await
        .expect("another client has its own bucket");
    clock.advance(Duration::from_secs(4));
    assert_eq!(second.take(&client).await, Err(Duration::from_secs(6)));
    clock.advance(Duration::from_secs(6));
    second.take(&client).await.expect("a token came back");
    first
        .take(&client)
        .await
        .expect_err("one token, not a second");
    // A client that stays away long enough has a full bucket again.
    clock.advance(Duration::from_secs(60));
    for _ in 0..3 {
        first.take(&client).await.expect("a full burst again");
    }
    second.take(&client).await.expect_err("and no more");
}

/// Takes racing through both gateways at one moment: the burst, and no
/// more, passes.
async fn racing_takes_do_not_overdraw(first: SharedBuckets<IpAddr>, second: SharedBuckets<IpAddr>) {
    let client: IpAddr = "198.51.100.7".parse().unwrap();
    let mut takes = Vec::new();
    for index in 0..20 {
        let buckets = if index % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        takes.push(tokio::spawn(async move { buckets.take(&client).await }));
    }
    let mut passed = 0;
    for take in takes {
        if take.await.unwrap().is_ok() {
            passed += 1;
        }
    }
    assert_eq!(passed, 3, "the burst of three passes, and no more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_buckets_keep_the_rules() {
    let clock = manual_clock();
    let (first, second) = memory_gateways(RATE, &clock);
    a_burst_holds_across_gateways(first, second, &clock).await;
    let (first, second) = memory_gateways(RATE, &clock);
    racing_takes_do_not_overdraw(first, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_buckets_keep_the_rules() {
    let clock = manual_clock();
    let (first, second) = redis_gateways(RATE, &clock).await;
    a_burst_holds_across_gateways(first, second, &clock).await;
    let (first, second) = redis_gateways(RATE, &clock).await;
    racing_takes_do_not_overdraw(first, second).await;
}

#[tokio::test]
async fn a_rate_that_is_off_has_no_buckets() {
    let rates = RedisRates::connect(&redis_url(), &unique_prefix())
        .await
        .expect("the test Redis answers");
    let off = rates.buckets::<IpAddr>("address", AddressRate::default(), &manual_clock());
    assert!(off.is_none());
}
