//! Behaviour only the NATS bus has: connecting, prefixes, and riding out a server
//! restart. The restart test runs its own `nats-server`.

use std::time::Duration;

use bytes::Bytes;
use onair_bus::{
    Bus, BusError, DurableStream, NatsBus, NatsBusOptions, StreamLimits, Subscription,
};
use onair_testkit::bus::{Fixture, next_message, quick_nats_options, within_patience};
use onair_testkit::{NatsServer, PATIENCE, assert_eventually, free_port, nats_url, unique_name};
use tokio::time::Instant;

#[tokio::test]
async fn a_wrong_url_fails_fast_and_names_the_url() {
    // Nothing listens on a port we just released.
    let url = format!("nats://127.0.0.1:{}", free_port());
    let connected = within_patience(
        "connecting to a closed port",
        NatsBus::connect_with(&url, "onair", NatsBusOptions::default()),
    )
    .await;
    let Err(BusError::Unavailable(reason)) = connected else {
        panic!("expected Unavailable, got {connected:?}");
    };
    assert!(
        reason.contains(&url),
        "the error should name {url}: {reason}"
    );
}

#[tokio::test]
async fn credentials_in_the_url_stay_out_of_errors() {
    let url = format!("nats://operator:hunter2@127.0.0.1:{}", free_port());
    let connected = within_patience(
        "connecting to a closed port",
        NatsBus::connect(&url, "onair"),
    )
    .await;
    let reason = connected.expect_err("nothing listens there").to_string();
    assert!(!reason.contains("hunter2"), "leaked a password: {reason}");
}

#[tokio::test]
async fn prefixes_keep_stations_apart() {
    let url = nats_url();
    let ours = Fixture::nats().await;
    let theirs = NatsBus::connect_with(&url, &unique_name("t"), quick_nats_options())
        .await
        .expect("connect a second station");

    let mut everything = ours.bus.subscribe(">").await.expect("subscribe");
    theirs
        .publish("comment.posted", Bytes::from("theirs"))
        .await
        .expect("publish");
    // A JetStream round trip on their connection: the server has routed their message.
    theirs.check().await.expect("their bus is ready");
    ours.bus
        .publish("comment.posted", Bytes::from("ours"))
        .await
        .expect("publish");
    let message = next_message(&mut everything).await;
    assert_eq!(message.subject, "comment.posted", "the prefix is stripped");
    assert_eq!(message.payload, Bytes::from("ours"));

    // Same stream name, different stations: different streams.
    let stream = DurableStream::new("ops", ["ops.>"]);
    ours.bus.ensure_stream(&stream).await.expect("declare ours");
    theirs.ensure_stream(&stream).await.expect("declare theirs");
    let sequence = theirs
        .publish_durable("ops.x", Bytes::from("x"))
        .await
        .expect("durable publish");
    assert_eq!(sequence, 1);
    let sequence = ours
        .bus
        .publish_durable("ops.x", Bytes::from("x"))
        .await
        .expect("durable publish");
    assert_eq!(sequence, 1);

    onair_testkit::bus::delete_streams_under_prefix(&theirs).await;
    ours.cleanup().await;
}

/// Publishes `probe` messages until `subscription` receives one: core delivery is
/// at-most-once, so messages sent while the client was resubscribing may be lost.
async fn receive_eventually(bus: &NatsBus, subscription: &mut Subscription, subject: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Publishing may fail while the connection is still coming back.
        let _ = bus.publish(subject, Bytes::from("probe")).await;
        if let Ok(Some(message)) = tokio::time::timeout(
            Duration::from_millis(250),
            futures::StreamExt::next(subscription),
        )
        .await
        {
            assert_eq!(message.subject, subject);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription received nothing for {PATIENCE:?} after the restart"
        );
    }
}

#[tokio::test]
async fn the_bus_rides_out_a_server_restart() {
    let mut server = NatsServer::start();
    let url = server.url();

    let bus = assert_eventually!(
        NatsBus::connect_with(&url, "restart", quick_nats_options()).await,
        "the test nats-server accepts connections"
    );
    assert_eventually!(bus.check().await.is_ok(), "jetstream is ready");

    bus.ensure_stream(&DurableStream::new("ops", ["ops.>"]))
        .await
        .expect("declare stream");
    for index in 1..=3u64 {
        let sequence = bus
            .publish_durable("ops.event", Bytes::from(format!("event {index}")))
            .await
            .expect("durable publish");
        assert_eq!(sequence, index);
    }
    let mut live = bus.subscribe("live.>").await.expect("subscribe");
    let mut replay_before = bus.replay("ops", 1, None).await.expect("replay");
    for index in 1..=3u64 {
        assert_eq!(next_message(&mut replay_before).await.sequence, Some(index));
    }
    bus.publish("live.before", Bytes::from("before"))
        .await
        .expect("publish");
    assert_eq!(next_message(&mut live).await.subject, "live.before");

    server.stop().await;

    assert_eventually!(
        matches!(bus.check().await, Err(BusError::Unavailable(_))),
        "check() reports the server gone"
    );
    let while_down = within_patience(
        "a durable publish while the server is down",
        bus.publish_durable("ops.event", Bytes::from("while down")),
    )
    .await;
    assert!(
        matches!(while_down, Err(BusError::Unavailable(_))),
        "got {while_down:?}"
    );
    let core_while_down = within_patience(
        "a core publish while the server is down",
        bus.publish("live.down", Bytes::from("while down")),
    )
    .await;
    assert!(
        matches!(core_while_down, Err(BusError::Unavailable(_))),
        "got {core_while_down:?}"
    );

    server.start_again();

    assert_eventually!(bus.check().await.is_ok(), "check() reports the server back");
    receive_eventually(&bus, &mut live, "live.after").await;

    // Durable history survived, and sequences continue.
    let sequence = assert_eventually!(
        bus.publish_durable("ops.event", Bytes::from("event 4"))
            .await,
        "a durable publish succeeds after the restart"
    );
    assert_eq!(sequence, 4);
    let mut replay_after = bus.replay("ops", 1, None).await.expect("replay");
    for index in 1..=4u64 {
        let message = next_message(&mut replay_after).await;
        assert_eq!(message.sequence, Some(index));
        assert_eq!(message.payload, Bytes::from(format!("event {index}")));
    }

    // The replay opened before the restart resumes where it was.
    let resumed = next_message(&mut replay_before).await;
    assert_eq!(resumed.sequence, Some(4));
    assert_eq!(resumed.payload, Bytes::from("event 4"));
}

#[tokio::test]
async fn a_memory_only_stream_lost_in_a_restart_is_declared_again_under_a_new_epoch() {
    let mut server = NatsServer::start();
    let url = server.url();
    let bus = assert_eventually!(
        NatsBus::connect_with(&url, "lost", quick_nats_options()).await,
        "the test nats-server accepts connections"
    );
    assert_eventually!(bus.check().await.is_ok(), "jetstream is ready");
    let live = DurableStream::new("live", ["live.>"]).with_limits(StreamLimits {
        memory_only: true,
        ..StreamLimits::default()
    });
    bus.ensure_stream(&live).await.expect("declare stream");
    for index in 1..=3u64 {
        let sequence = bus
            .publish_durable("live.news.comment", Bytes::from(format!("event {index}")))
            .await
            .expect("durable publish");
        assert_eq!(sequence, index);
    }
    let before = bus.stream_bounds("live").await.expect("bounds");

    server.stop().await;
    server.start_again();

    // Nobody declares the stream again: the bus does, on reconnecting or on the
    // first durable publish that finds it missing.
    let sequence = assert_eventually!(
        bus.publish_durable("live.news.comment", Bytes::from("after"))
            .await,
        "a durable publish succeeds after the restart"
    );
    assert_eq!(sequence, 1, "the lost stream starts over");
    let after = bus.stream_bounds("live").await.expect("bounds");
    assert_eq!((after.first, after.last), (1, 1));
    assert_ne!(after.epoch, before.epoch, "and says so with a new epoch");
}
