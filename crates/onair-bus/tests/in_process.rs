//! Behaviour only the in-process bus has: its journal files and its per-subscriber
//! queues.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use onair_bus::{Bus, BusError, DurableStream, InProcessBus, InProcessBusConfig, StreamLimits};
use onair_testkit::bus::{next_message, within_patience};

fn ops_stream() -> DurableStream {
    DurableStream::new("ops", ["ops.>"])
}

async fn replay_payloads(bus: &InProcessBus, count: usize) -> Vec<(u64, String)> {
    let mut replay = bus.replay("ops", 1, None).await.expect("replay");
    let mut seen = Vec::with_capacity(count);
    for _ in 0..count {
        let message = next_message(&mut replay).await;
        let body = String::from_utf8(message.payload.to_vec()).expect("UTF-8 payload");
        seen.push((message.sequence.expect("replays carry sequences"), body));
    }
    seen
}

fn numbered(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, String)> {
    range
        .map(|index| (index, format!("event {index}")))
        .collect()
}

#[tokio::test]
async fn acknowledged_messages_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let bus = InProcessBus::new(Some(dir.path().to_owned()));
        bus.ensure_stream(&ops_stream())
            .await
            .expect("declare stream");
        for index in 1..=5u64 {
            let sequence = bus
                .publish_durable("ops.event", Bytes::from(format!("event {index}")))
                .await
                .expect("durable publish");
            assert_eq!(sequence, index);
        }
    }

    // A new process: the stream is known without declaring it again, as with JetStream.
    let restarted = InProcessBus::new(Some(dir.path().to_owned()));
    assert_eq!(replay_payloads(&restarted, 5).await, numbered(1..=5));
    let sequence = restarted
        .publish_durable("ops.event", Bytes::from("event 6"))
        .await
        .expect("durable publish after restart");
    assert_eq!(sequence, 6, "sequences continue where they stopped");
    restarted
        .ensure_stream(&ops_stream())
        .await
        .expect("declaring again after a restart is fine");
    drop(restarted);

    let again = InProcessBus::new(Some(dir.path().to_owned()));
    assert_eq!(replay_payloads(&again, 6).await, numbered(1..=6));
}

#[tokio::test]
async fn a_journaled_stream_keeps_its_epoch_and_a_memory_only_one_starts_a_new_one() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let live = DurableStream::new("live", ["live.>"]).with_limits(StreamLimits {
        memory_only: true,
        ..StreamLimits::default()
    });
    let (ops_epoch, live_epoch) = {
        let bus = InProcessBus::new(Some(dir.path().to_owned()));
        bus.ensure_stream(&ops_stream()).await.expect("declare ops");
        bus.ensure_stream(&live).await.expect("declare live");
        for _ in 0..3 {
            bus.publish_durable("live.news.comment", Bytes::from("hi"))
                .await
                .expect("publish live");
        }
        let ops = bus.stream_bounds("ops").await.expect("ops bounds");
        let live = bus.stream_bounds("live").await.expect("live bounds");
        assert_eq!(live.last, 3);
        (ops.epoch, live.epoch)
    };
    // Epochs are microseconds: make sure the clock has moved on.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;

    let restarted = InProcessBus::new(Some(dir.path().to_owned()));
    restarted.ensure_stream(&live).await.expect("declare live");
    let ops = restarted.stream_bounds("ops").await.expect("ops bounds");
    assert_eq!(ops.epoch, ops_epoch, "the journal keeps its epoch");
    let fresh = restarted.stream_bounds("live").await.expect("live bounds");
    assert_eq!(
        (fresh.first, fresh.last),
        (1, 0),
        "a memory-only stream starts over with the process"
    );
    assert_ne!(
        fresh.epoch, live_epoch,
        "sequences that start over come under a new epoch"
    );
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open the journal");
    file.write_all(bytes).expect("append to the journal");
}

#[tokio::test]
async fn a_torn_last_record_is_ignored() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let bus = InProcessBus::new(Some(dir.path().to_owned()));
        bus.ensure_stream(&ops_stream())
            .await
            .expect("declare stream");
        for index in 1..=3u64 {
            bus.publish_durable("ops.event", Bytes::from(format!("event {index}")))
                .await
                .expect("durable publish");
        }
    }
    // A crash in the middle of writing the fourth record: a header that promises 40
    // bytes of body, followed by only a few of them.
    append_bytes(
        &dir.path().join("ops.log"),
        &[40, 0, 0, 0, 0xAB, 0xCD, 0xEF, 0x01, 4, 0],
    );

    let restarted = InProcessBus::new(Some(dir.path().to_owned()));
    restarted
        .check()
        .await
        .expect("a torn tail does not make the bus unready");
    assert_eq!(replay_payloads(&restarted, 3).await, numbered(1..=3));
    let sequence = restarted
        .publish_durable("ops.event", Bytes::from("event 4"))
        .await
        .expect("durable publish after the repair");
    assert_eq!(sequence, 4);
    drop(restarted);

    // What was appended after the repair is readable too.
    let again = InProcessBus::new(Some(dir.path().to_owned()));
    assert_eq!(replay_payloads(&again, 4).await, numbered(1..=4));
}

#[tokio::test]
async fn a_foreign_file_in_the_durable_directory_makes_the_bus_unready() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("ops.stream"), "not a stream definition\n")
        .expect("write a foreign file");
    let bus = InProcessBus::new(Some(dir.path().to_owned()));
    let checked = bus.check().await;
    assert!(
        matches!(checked, Err(BusError::Storage(_))),
        "got {checked:?}"
    );
    // Subscribing does not need the durable directory; publishing does, since it
    // must know whether a stream captures the subject.
    bus.subscribe("live.>").await.expect("subscribe");
    let published = bus.publish("live.x", Bytes::from("x")).await;
    assert!(
        matches!(published, Err(BusError::Storage(_))),
        "publishing cannot tell whether a stream captures the subject: {published:?}"
    );
}

#[tokio::test]
async fn a_slow_subscriber_does_not_hold_back_a_fast_one() {
    const QUEUE_LEN: usize = 16;
    const MESSAGES: usize = QUEUE_LEN * 10;
    let bus = InProcessBus::with_config(InProcessBusConfig {
        subscriber_queue_len: QUEUE_LEN,
        ..InProcessBusConfig::new(None)
    });
    let mut slow = bus.subscribe("comment.>").await.expect("subscribe");
    let mut fast = bus.subscribe("comment.>").await.expect("subscribe");

    // The slow subscriber never reads while this runs; if publishing waited for it,
    // this would hang past the queue length.
    within_patience("publishing past a stalled subscriber", async {
        for index in 0..MESSAGES {
            bus.publish("comment.channel-1", Bytes::from(index.to_string()))
                .await
                .expect("publish");
            let message = next_message(&mut fast).await;
            assert_eq!(message.payload, Bytes::from(index.to_string()));
        }
    })
    .await;
    assert_eq!(fast.lost_messages(), 0);

    // The slow one keeps what fit in its queue, in order, and knows what it missed.
    assert_eq!(slow.lost_messages(), (MESSAGES - QUEUE_LEN) as u64);
    for index in 0..QUEUE_LEN {
        let message = next_message(&mut slow).await;
        assert_eq!(message.payload, Bytes::from(index.to_string()));
    }
    // Once it catches up it receives new messages again.
    bus.publish("comment.channel-1", Bytes::from("fresh"))
        .await
        .expect("publish");
    assert_eq!(next_message(&mut slow).await.payload, Bytes::from("fresh"));
}

#[tokio::test]
async fn a_slow_replay_loses_nothing() {
    let bus = InProcessBus::with_config(InProcessBusConfig {
        subscriber_queue_len: 4,
        ..InProcessBusConfig::new(None)
    });
    bus.ensure_stream(&ops_stream())
        .await
        .expect("declare stream");
    let mut replay = bus.replay("ops", 1, None).await.expect("replay");
    for index in 1..=100u64 {
        bus.publish_durable("ops.event", Bytes::from(format!("event {index}")))
            .await
            .expect("durable publish");
    }
    for index in 1..=100u64 {
        let message = next_message(&mut replay).await;
        assert_eq!(message.sequence, Some(index));
    }
    assert_eq!(replay.lost_messages(), 0);
}

#[tokio::test]
async fn streams_may_not_share_subjects() {
    let bus = InProcessBus::new(None);
    bus.ensure_stream(&DurableStream::new("comments", ["comment.*.posted"]))
        .await
        .expect("declare stream");
    let overlapping = bus
        .ensure_stream(&DurableStream::new("everything", [">"]))
        .await;
    let Err(BusError::InvalidStream(reason)) = overlapping else {
        panic!("expected an overlap error, got {overlapping:?}");
    };
    assert!(
        reason.contains("comments"),
        "the error should name the other stream: {reason}"
    );
}
