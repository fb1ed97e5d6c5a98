//! One pace suite, run against both boards: in memory, and in the Redis at
//! `ONAIR_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) under a key
//! prefix of the run's own. Each rule is checked through two handles on the
//! board, as two comment replicas would hold: the same board in memory, two
//! connections to Redis.

use std::sync::Arc;
use std::time::Duration;

use onair_comment::CommentError;
use onair_comment::moderation::PaceLimits;
use onair_comment::pace::{MemoryPace, PaceBoard, RedisPace, SharedPace};

const T0: i64 = 1_900_000_000_000;

fn redis_url() -> String {
    std::env::var("ONAIR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn unique_prefix() -> String {
    format!("onair-test-{}", uuid::Uuid::new_v4().simple())
}

/// Two replicas' handles on one Redis board.
async fn redis_replicas() -> (SharedPace, SharedPace) {
    let prefix = unique_prefix();
    let first = RedisPace::connect(&redis_url(), &prefix)
        .await
        .expect("the test Redis answers");
    let second = RedisPace::connect(&redis_url(), &prefix)
        .await
        .expect("the test Redis answers");
    (Arc::new(first), Arc::new(second))
}

/// One process's board, seen twice.
fn memory_replicas() -> (SharedPace, SharedPace) {
    let board: SharedPace = Arc::new(MemoryPace::new());
    (board.clone(), board)
}

fn limits(slow_mode_ms: i64, duplicate_window_ms: i64, max_per_minute: usize) -> PaceLimits {
    PaceLimits {
        slow_mode_ms,
        duplicate_window_ms,
        max_per_minute,
    }
}

/// The message and wait of a "retry later" refusal; fails on anything else.
fn retry_later(result: Result<(), CommentError>) -> (String, Duration) {
    match result {
        Err(CommentError::Limited(later)) => (later.message, later.wait),
        other => panic!("expected a retry-later refusal, got {other:?}"),
    }
}

async fn slow_mode_holds_across_replicas(first: &dyn PaceBoard, second: &dyn PaceBoard) {
    let slow = limits(10_000, 0, 0);
    first
        .admit("news", "ann", "hi", T0, slow)
        .await
        .expect("the first post");
    let (message, wait) = retry_later(second.admit("news", "ann", "again", T0 + 4_000, slow).await);
    assert_eq!(
        message, "slow mode is on: one comment every 10 s; wait 6 s",
        "the other replica refuses"
    );
    assert_eq!(wait, Duration::from_secs(6));
    second
        .admit("news", "bob", "hi", T0 + 4_000, slow)
        .await
        .expect("another viewer");
    second
        .admit("sports", "ann", "hi", T0 + 4_000, slow)
        .await
        .expect("another channel");
    second
        .admit("news", "ann", "later", T0 + 10_000, slow)
        .await
        .expect("after the wait");
    // A refused post does not count: the wait runs from the last accepted.
    retry_later(first.admit("news", "ann", "soon", T0 + 19_999, slow).await);
    first
        .admit("news", "ann", "on time", T0 + 20_000, slow)
        .await
        .expect("one slow-mode window after the last accepted post");
}

async fn duplicates_hold_across_replicas(first: &dyn PaceBoard, second: &dyn PaceBoard) {
    let duplicates = limits(0, 30_000, 0);
    first
        .admit("news", "cat", "goal", T0, duplicates)
        .await
        .expect("the first");
    first
        .admit("news", "cat", "what a save", T0 + 1_000, duplicates)
        .await
        .expect("another body");
    match second
        .admit("news", "cat", "goal", T0 + 5_000, duplicates)
        .await
    {
        Err(CommentError::FailedPrecondition(message)) => assert_eq!(
            message,
            "you posted the same comment 5 s ago; repeats are refused for 30 s"
        ),
        other => panic!("expected a duplicate refusal, got {other:?}"),
    }
    second
        .admit("news", "dot", "goal", T0 + 5_000, duplicates)
        .await
        .expect("another viewer may say the same");
    second
        .admit("news", "cat", "goal", T0 + 31_000, duplicates)
        .await
        .expect("outside the window");
}

async fn the_flood_limit_holds_across_replicas(first: &dyn PaceBoard, second: &dyn PaceBoard) {
    let flood = limits(0, 0, 3);
    for second_of_minute in 0..3 {
        let board = if second_of_minute % 2 == 0 {
            first
        } else {
            second
        };
        board
            .admit(
                "news",
                "dan",
                &format!("m{second_of_minute}"),
                T0 + second_of_minute * 1000,
                flood,
            )
            .await
            .expect("within the limit");
    }
    let (message, wait) = retry_later(second.admit("news", "dan", "m3", T0 + 3_000, flood).await);
    assert_eq!(
        message,
        "at most 3 comments a minute on this channel; wait 57 s"
    );
    assert_eq!(wait, Duration::from_secs(57));
    first
        .admit("news", "dan", "m4", T0 + 60_000, flood)
        .await
        .expect("the first left the minute");
    retry_later(second.admit("news", "dan", "m5", T0 + 60_500, flood).await);
}

/// Many posts of one viewer at the same moment, half through each replica:
/// exactly one passes slow mode.
async fn racing_posts_pass_slow_mode_once(first: SharedPace, second: SharedPace) {
    let slow = limits(10_000, 0, 0);
    let mut posts = Vec::new();
    for index in 0..16 {
        let board = if index % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        posts.push(tokio::spawn(async move {
            board
                .admit("news", "eve", &format!("race {index}"), T0, slow)
                .await
        }));
    }
    let mut accepted = 0;
    for post in posts {
        match post.await.unwrap() {
            Ok(()) => accepted += 1,
            Err(CommentError::Limited(_)) => {}
            Err(other) => panic!("unexpected refusal {other}"),
        }
    }
    assert_eq!(accepted, 1, "one post of a racing burst passes slow mode");
}

async fn the_display_cap_holds_across_replicas(first: &dyn PaceBoard, second: &dyn PaceBoard) {
    let mut shown = 0;
    for index in 0..10 {
        let board = if index % 2 == 0 { first } else { second };
        if board.show_live("news", T0 + index, 4).await.unwrap().show {
            shown += 1;
        }
    }
    assert_eq!(shown, 4, "four a second between both replicas");
    let refused = second.show_live("news", T0 + 500, 4).await.unwrap();
    assert!(!refused.show);
    assert!(refused.sampled);
    // The next second starts a new allowance, and the rate remembers the burst.
    let next = first.show_live("news", T0 + 1_000, 4).await.unwrap();
    assert!(next.show);
    assert!(next.comments_per_second >= 2.0, "{next:?}");
    let uncapped = second.show_live("sports", T0, 0).await.unwrap();
    assert!(uncapped.show && !uncapped.sampled);
}

async fn keeps_the_rules(first: SharedPace, second: SharedPace) {
    slow_mode_holds_across_replicas(first.as_ref(), second.as_ref()).await;
    duplicates_hold_across_replicas(first.as_ref(), second.as_ref()).await;
    the_flood_limit_holds_across_replicas(first.as_ref(), second.as_ref()).await;
    the_display_cap_holds_across_replicas(first.as_ref(), second.as_ref()).await;
    racing_posts_pass_slow_mode_once(first.clone(), second.clone()).await;
    first.check().await.expect("the board answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_pace_keeps_the_rules() {
    let (first, second) = memory_replicas();
    keeps_the_rules(first, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_pace_keeps_the_rules() {
    let (first, second) = redis_replicas().await;
    keeps_the_rules(first, second).await;
}

#[tokio::test]
async fn a_redis_that_does_not_answer_is_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = RedisPace::connect(&format!("redis://127.0.0.1:{port}"), &unique_prefix()).await;
    match refused {
        Err(CommentError::Unavailable(message)) => {
            assert!(message.contains("try again"), "{message}");
        }
        Err(other) => panic!("expected unavailable, got {other}"),
        Ok(_) => panic!("nothing listens there"),
    }
}
