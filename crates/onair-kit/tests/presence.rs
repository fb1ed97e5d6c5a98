//! One presence suite, run against both boards: in memory, and in the Redis
//! at `ONAIR_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) under a key
//! prefix of the run's own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use onair_kit::clock::Clock;
use onair_kit::presence::{
    Mark, MemoryPresence, PresenceBoard, RedisPresence, SharedPresence, ViewerKey, Watchers,
};

const T0: i64 = 1_900_000_000_000;

fn redis_url() -> String {
    std::env::var("ONAIR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn unique_prefix() -> String {
    let random: u64 = rand::random();
    format!("onair-test-{random:016x}")
}

async fn redis_board() -> RedisPresence {
    RedisPresence::connect(&redis_url(), &unique_prefix())
        .await
        .expect("the test Redis answers")
}

fn mark(channel_id: &str, viewer: &ViewerKey, until_ms: i64) -> Mark {
    Mark {
        channel_id: channel_id.to_owned(),
        viewer: viewer.clone(),
        until_ms,
    }
}

fn channels(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// Every rule a board keeps, in one go.
async fn keeps_the_rules(board: &dyn PresenceBoard) {
    let ann = ViewerKey::of_user("ann");
    let bob = ViewerKey::of_user("bob");
    let guest = ViewerKey::anonymous();
    board
        .mark(&[
            mark("news", &ann, T0 + 15_000),
            // Ann's second tab, on the same channel: still one viewer.
            mark("news", &ann, T0 + 12_000),
            mark("news", &bob, T0 + 15_000),
            mark("news", &guest, T0 + 5_000),
            mark("sports", &ann, T0 + 15_000),
        ])
        .await
        .unwrap();
    let all = channels(&["news", "sports", "movies"]);
    assert_eq!(board.counts(&all, T0).await.unwrap(), [3, 1, 0]);

    // A mark counts until the moment it runs out, not at it.
    assert_eq!(board.counts(&all, T0 + 4_999).await.unwrap(), [3, 1, 0]);
    assert_eq!(board.counts(&all, T0 + 5_000).await.unwrap(), [2, 1, 0]);

    // A shorter mark of a viewer does not cut a longer one short; a later
    // one extends it.
    board
        .mark(&[mark("sports", &ann, T0 + 20_000)])
        .await
        .unwrap();
    assert_eq!(board.counts(&all, T0 + 16_000).await.unwrap(), [0, 1, 0]);

    // Channels whose marks all ran out are no longer watched.
    assert_eq!(
        board.watched_channels(T0 + 10_000).await.unwrap(),
        ["news", "sports"]
    );
    assert_eq!(
        board.watched_channels(T0 + 16_000).await.unwrap(),
        ["sports"]
    );
    assert_eq!(board.counts(&all, T0 + 16_000).await.unwrap(), [0, 1, 0]);
    assert!(
        board
            .watched_channels(T0 + 20_000)
            .await
            .unwrap()
            .is_empty()
    );

    // A forgotten viewer who comes back counts again.
    board
        .mark(&[mark("news", &bob, T0 + 40_000)])
        .await
        .unwrap();
    assert_eq!(board.counts(&all, T0 + 30_000).await.unwrap(), [1, 0, 0]);
    assert_eq!(board.watched_channels(T0 + 30_000).await.unwrap(), ["news"]);
    board.check().await.unwrap();
}

#[tokio::test]
async fn the_memory_board_keeps_the_rules() {
    keeps_the_rules(&MemoryPresence::new()).await;
}

#[tokio::test]
async fn the_redis_board_keeps_the_rules() {
    keeps_the_rules(&redis_board().await).await;
}

/// A process's watchers mark at once, renew while held, and stop renewing
/// once every connection of a viewer is gone.
async fn watchers_hold_viewers(board: SharedPresence) {
    let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_millis(T0 as u64));
    let ttl = Duration::from_secs(15);
    let watchers = Watchers::start(board.clone(), clock.clone(), ttl, Duration::from_millis(50));
    let news = channels(&["news"]);
    let count = || {
        let board = board.clone();
        let news = news.clone();
        let clock = clock.clone();
        async move { board.counts(&news, clock.now_ms()).await.unwrap()[0] }
    };

    let first_tab = watchers.watch("news", ViewerKey::of_user("ann")).await;
    // Marked before `watch` returns.
    assert_eq!(count().await, 1);
    let second_tab = watchers.watch("news", ViewerKey::of_user("ann")).await;
    let guest = watchers.watch("news", ViewerKey::anonymous()).await;
    assert_eq!(count().await, 2);
    assert_eq!(watchers.held_viewers(), 2);

    // Held viewers are renewed: past the first mark's end they still count.
    clock.advance(Duration::from_secs(14));
    until_count(&count, 2, "renewed marks").await;
    clock.advance(Duration::from_secs(14));
    until_count(&count, 2, "renewed marks").await;

    // One tab closes: Ann is still watching in the other.
    drop(first_tab);
    drop(guest);
    clock.advance(Duration::from_secs(16));
    until_count(&count, 1, "Ann alone, renewed after the guest left").await;
    assert_eq!(watchers.held_viewers(), 1);

    // The last one closes: Ann drops out once her last mark runs out.
    drop(second_tab);
    assert_eq!(count().await, 1);
    clock.advance(ttl);
    assert_eq!(count().await, 0);
    assert_eq!(watchers.held_viewers(), 0);
}

/// Waits until `count` says `expected` (the renewing task runs on its own
/// time); fails after a generous while.
async fn until_count<F, Fut>(count: &F, expected: u64, what: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let mut seen = 0;
    for _ in 0..500 {
        seen = count().await;
        if seen == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: the count stayed {seen}, not {expected}");
}

#[tokio::test]
async fn watchers_hold_viewers_on_the_memory_board() {
    watchers_hold_viewers(Arc::new(MemoryPresence::new())).await;
}

#[tokio::test]
async fn watchers_hold_viewers_on_the_redis_board() {
    watchers_hold_viewers(Arc::new(redis_board().await)).await;
}

#[tokio::test]
async fn on_redis_one_holder_has_the_duty_until_it_stops_renewing() {
    let board = redis_board().await;
    let lease = Duration::from_millis(300);
    assert!(board.hold_duty("first", lease).await.unwrap());
    assert!(!board.hold_duty("second", lease).await.unwrap());
    // Renewed by its holder, it stays with it past the first lease.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(board.hold_duty("first", lease).await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!board.hold_duty("second", lease).await.unwrap());
    // Not renewed, it passes to the next one who asks.
    let mut taken = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if board.hold_duty("second", lease).await.unwrap() {
            taken = true;
            break;
        }
    }
    assert!(taken, "the duty passes once the holder stops renewing");
    assert!(!board.hold_duty("first", lease).await.unwrap());
}

#[tokio::test]
async fn a_viewer_key_says_nothing_of_the_user_and_is_the_same_everywhere() {
    let key = ViewerKey::of_user("0190f3a2-user");
    assert_eq!(key, ViewerKey::of_user("0190f3a2-user"));
    assert_ne!(key, ViewerKey::of_user("0190f3a2-user2"));
    assert!(!key.as_str().contains("0190f3a2"), "{}", key.as_str());
    assert_ne!(ViewerKey::anonymous(), ViewerKey::anonymous());
}
