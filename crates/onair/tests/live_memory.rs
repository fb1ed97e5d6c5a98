//! The live sockets' memory while a viewer stalls. In a test binary of its
//! own: it measures the process's resident memory, which other tests running
//! beside it would move.

use onair_testkit::{
    Backend, TestStation, connect_small_window, create_channel, live_url, next_events,
    publish_comment, ready, rss_bytes,
};

#[tokio::test]
async fn memory_stays_flat_while_a_client_stalls() {
    // Only the roles the live sockets use, so that no other service's
    // background work moves the process's memory while it is measured.
    let station = TestStation::start_with(
        Backend::Sqlite,
        &[
            ("roles", "user,media,gateway"),
            ("gateway.live_batch_window_ms", "0"),
            ("gateway.live_queue_frames", "8"),
            ("gateway.live_history_events", "500"),
            ("bus.live_max_events", "1000"),
        ],
    )
    .await;
    create_channel(&station, "news").await;
    let url = live_url(&station, "news", None);
    let mut stalled = connect_small_window(&station, &url).await;
    ready(&mut stalled).await;

    // Fill every bounded buffer first: the bus window, the history, the ring
    // and the socket.
    for index in 0..5_000 {
        publish_comment(&station, index, 2048).await;
    }
    let before = rss_bytes();
    // Another 40 MB of events go by while the client still does not read.
    for index in 5_000..25_000 {
        publish_comment(&station, index, 2048).await;
    }
    let after = rss_bytes();
    let growth = after.saturating_sub(before);
    assert!(
        growth < 16 * 1024 * 1024,
        "memory grew by {growth} bytes while 40 MB passed a stalled client"
    );

    let mut lagged = false;
    while let Ok(events) = next_events(&mut stalled).await {
        lagged |= events.iter().any(|event| event["type"] == "lagged");
    }
    assert!(lagged, "the stalled client is told it lagged");
    station.stop().await;
}
