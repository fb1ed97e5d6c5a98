//! One suite, two buses: every case runs against the in-process bus and against NATS,
//! so code written for one behaves the same on the other.

use bytes::Bytes;
use onair_bus::{
    BusError, DEFAULT_MAX_PAYLOAD, DurableStream, Message, SharedBus, StreamBounds, StreamLimits,
};
use onair_testkit::bus::{Fixture, next_message};

/// Instantiates every case once per bus.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $case() {
                    let fixture = crate::Fixture::in_process().await;
                    crate::cases::$case(&fixture.bus).await;
                    fixture.cleanup().await;
                }
            )*
        }

        mod nats {
            $(
                #[tokio::test]
                async fn $case() {
                    let fixture = crate::Fixture::nats().await;
                    crate::cases::$case(&fixture.bus).await;
                    fixture.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    messages_on_one_subject_arrive_in_order,
    star_matches_exactly_one_token,
    greater_than_matches_one_or_more_trailing_tokens,
    replay_starts_at_the_requested_sequence_then_goes_live,
    replay_filter_keeps_only_matching_subjects,
    durable_messages_also_reach_core_subscribers,
    core_publishes_on_a_captured_subject_are_stored,
    durable_publish_needs_a_stream,
    stream_declarations_are_idempotent_and_checked,
    replay_of_an_unknown_stream_is_refused,
    invalid_subjects_are_rejected,
    oversized_payloads_are_rejected,
    dropping_a_subscription_leaves_the_bus_working,
    the_bus_reports_ready,
    a_stream_keeps_at_most_its_message_limit,
    stream_bounds_name_the_oldest_and_newest_messages,
);

fn payload(text: impl Into<String>) -> Bytes {
    Bytes::from(text.into())
}

fn text(message: &Message) -> &str {
    std::str::from_utf8(&message.payload).expect("test payloads are UTF-8")
}

fn ops_stream() -> DurableStream {
    DurableStream::new("ops", ["ops.>"])
}

mod cases {
    use super::*;

    pub async fn a_stream_keeps_at_most_its_message_limit(bus: &SharedBus) {
        let stream = DurableStream::new("recent", ["recent.>"]).with_limits(StreamLimits {
            max_messages: Some(3),
            memory_only: true,
            ..StreamLimits::default()
        });
        bus.ensure_stream(&stream).await.expect("declare");
        for index in 1..=5 {
            let sequence = bus
                .publish_durable("recent.a", payload(index.to_string()))
                .await
                .expect("publish");
            assert_eq!(sequence, index);
        }
        // Asking for what was trimmed away starts at the oldest kept message;
        // sequences keep counting, so the consumer sees what it missed.
        let mut replay = bus.replay("recent", 1, None).await.expect("replay");
        for expected in 3..=5 {
            let message = next_message(&mut replay).await;
            assert_eq!(message.sequence, Some(expected));
            assert_eq!(text(&message), expected.to_string());
        }
        bus.publish_durable("recent.a", payload("6"))
            .await
            .expect("publish");
        assert_eq!(next_message(&mut replay).await.sequence, Some(6));
        let bounds = bus.stream_bounds("recent").await.expect("bounds");
        assert_eq!((bounds.first, bounds.last), (4, 6));
    }

    pub async fn stream_bounds_name_the_oldest_and_newest_messages(bus: &SharedBus) {
        bus.ensure_stream(&ops_stream()).await.expect("declare");
        let empty: StreamBounds = bus.stream_bounds("ops").await.expect("empty");
        assert_eq!((empty.first, empty.last), (1, 0));
        bus.publish_durable("ops.one", payload("1"))
            .await
            .expect("publish");
        bus.publish_durable("ops.two", payload("2"))
            .await
            .expect("publish");
        let bounds = bus.stream_bounds("ops").await.expect("bounds");
        assert_eq!((bounds.first, bounds.last), (1, 2));
        assert_eq!(
            bounds.epoch, empty.epoch,
            "the stream's epoch stays while it lives"
        );
        assert!(bounds.epoch > 0, "the epoch is the stream's creation time");
        assert!(matches!(
            bus.stream_bounds("missing").await,
            Err(BusError::UnknownStream(_))
        ));
    }

    pub async fn messages_on_one_subject_arrive_in_order(bus: &SharedBus) {
        let mut subscription = bus.subscribe("order.>").await.expect("subscribe");
        for index in 0..1000 {
            bus.publish("order.channel-1", payload(index.to_string()))
                .await
                .expect("publish");
        }
        for index in 0..1000 {
            let message = next_message(&mut subscription).await;
            assert_eq!(message.subject, "order.channel-1");
            assert_eq!(text(&message), index.to_string());
            assert_eq!(message.sequence, None);
        }
    }

    pub async fn star_matches_exactly_one_token(bus: &SharedBus) {
        let mut subscription = bus.subscribe("a.*").await.expect("subscribe");
        // Non-matching subjects go first: since one publisher's messages arrive in
        // order, the first message received proves none of them leaked through.
        for subject in ["a.b.c", "a", "b.c"] {
            bus.publish(subject, payload(subject))
                .await
                .expect("publish");
        }
        bus.publish("a.b", payload("a.b")).await.expect("publish");
        bus.publish("a.c", payload("a.c")).await.expect("publish");
        assert_eq!(next_message(&mut subscription).await.subject, "a.b");
        assert_eq!(next_message(&mut subscription).await.subject, "a.c");

        let mut middle = bus.subscribe("x.*.z").await.expect("subscribe");
        bus.publish("x.y.y", payload("no")).await.expect("publish");
        bus.publish("x.y.z.z", payload("no"))
            .await
            .expect("publish");
        bus.publish("x.y.z", payload("yes")).await.expect("publish");
        let message = next_message(&mut middle).await;
        assert_eq!(message.subject, "x.y.z");
        assert_eq!(text(&message), "yes");
    }

    pub async fn greater_than_matches_one_or_more_trailing_tokens(bus: &SharedBus) {
        let mut subscription = bus.subscribe("a.>").await.expect("subscribe");
        for subject in ["a", "b.a", "b.a.c"] {
            bus.publish(subject, payload(subject))
                .await
                .expect("publish");
        }
        for subject in ["a.b", "a.b.c", "a.b.c.d"] {
            bus.publish(subject, payload(subject))
                .await
                .expect("publish");
        }
        for expected in ["a.b", "a.b.c", "a.b.c.d"] {
            let message = next_message(&mut subscription).await;
            assert_eq!(message.subject, expected);
            assert_eq!(text(&message), expected);
        }
    }

    pub async fn replay_starts_at_the_requested_sequence_then_goes_live(bus: &SharedBus) {
        bus.ensure_stream(&ops_stream())
            .await
            .expect("declare stream");
        for index in 1..=10u64 {
            let subject = if index % 2 == 0 {
                "ops.ban"
            } else {
                "ops.slot"
            };
            let sequence = bus
                .publish_durable(subject, payload(format!("event {index}")))
                .await
                .expect("durable publish");
            assert_eq!(sequence, index, "sequences are 1-based and consecutive");
        }

        let mut replay = bus.replay("ops", 4, None).await.expect("replay");
        for index in 4..=10u64 {
            let message = next_message(&mut replay).await;
            assert_eq!(message.sequence, Some(index));
            assert_eq!(text(&message), format!("event {index}"));
            let expected_subject = if index % 2 == 0 {
                "ops.ban"
            } else {
                "ops.slot"
            };
            assert_eq!(message.subject, expected_subject);
        }

        let sequence = bus
            .publish_durable("ops.ban", payload("event 11"))
            .await
            .expect("durable publish");
        assert_eq!(sequence, 11);
        let live = next_message(&mut replay).await;
        assert_eq!(live.sequence, Some(11));
        assert_eq!(text(&live), "event 11");

        // 0 reads as "from the start".
        let mut from_zero = bus.replay("ops", 0, None).await.expect("replay");
        assert_eq!(next_message(&mut from_zero).await.sequence, Some(1));

        // A position past the end waits for it.
        let mut ahead = bus.replay("ops", 13, None).await.expect("replay");
        for index in 12..=13 {
            bus.publish_durable("ops.slot", payload(format!("event {index}")))
                .await
                .expect("durable publish");
        }
        let message = next_message(&mut ahead).await;
        assert_eq!(message.sequence, Some(13));
        assert_eq!(text(&message), "event 13");
    }

    pub async fn replay_filter_keeps_only_matching_subjects(bus: &SharedBus) {
        bus.ensure_stream(&ops_stream())
            .await
            .expect("declare stream");
        let plan = [
            ("ops.ban.user-1", "ban 1"),
            ("ops.slot.7", "slot 7"),
            ("ops.ban.user-2", "ban 2"),
            ("ops.slot.8", "slot 8"),
        ];
        for (subject, body) in plan {
            bus.publish_durable(subject, payload(body))
                .await
                .expect("durable publish");
        }

        let mut bans = bus
            .replay("ops", 1, Some("ops.ban.*"))
            .await
            .expect("filtered replay");
        let first = next_message(&mut bans).await;
        assert_eq!(
            (first.subject.as_str(), first.sequence),
            ("ops.ban.user-1", Some(1))
        );
        let second = next_message(&mut bans).await;
        assert_eq!(
            (second.subject.as_str(), second.sequence),
            ("ops.ban.user-2", Some(3))
        );

        // Live messages are filtered too.
        bus.publish_durable("ops.slot.9", payload("slot 9"))
            .await
            .expect("durable publish");
        bus.publish_durable("ops.ban.user-3", payload("ban 3"))
            .await
            .expect("durable publish");
        let live = next_message(&mut bans).await;
        assert_eq!(
            (live.subject.as_str(), live.sequence, text(&live)),
            ("ops.ban.user-3", Some(6), "ban 3")
        );

        // Filter and start position combine.
        let mut later_bans = bus
            .replay("ops", 2, Some("ops.ban.*"))
            .await
            .expect("filtered replay");
        assert_eq!(next_message(&mut later_bans).await.sequence, Some(3));

        // A filter outside the stream's subjects is a mistake worth reporting.
        let outside = bus.replay("ops", 1, Some("audit.>")).await;
        assert!(
            matches!(outside, Err(BusError::InvalidSubject(_))),
            "got {outside:?}"
        );
    }

    pub async fn durable_messages_also_reach_core_subscribers(bus: &SharedBus) {
        bus.ensure_stream(&ops_stream())
            .await
            .expect("declare stream");
        let mut core = bus.subscribe("ops.*").await.expect("subscribe");
        let sequence = bus
            .publish_durable("ops.ban", payload("ban"))
            .await
            .expect("durable publish");
        assert_eq!(sequence, 1);
        let message = next_message(&mut core).await;
        assert_eq!(message.subject, "ops.ban");
        assert_eq!(text(&message), "ban");
        assert_eq!(message.sequence, None, "core delivery carries no position");
    }

    pub async fn core_publishes_on_a_captured_subject_are_stored(bus: &SharedBus) {
        bus.ensure_stream(&ops_stream())
            .await
            .expect("declare stream");
        bus.publish("ops.note", payload("core"))
            .await
            .expect("publish");
        let sequence = bus
            .publish_durable("ops.note", payload("durable"))
            .await
            .expect("durable publish");
        assert_eq!(sequence, 2);
        let mut replay = bus.replay("ops", 1, None).await.expect("replay");
        let first = next_message(&mut replay).await;
        assert_eq!((text(&first), first.sequence), ("core", Some(1)));
        let second = next_message(&mut replay).await;
        assert_eq!((text(&second), second.sequence), ("durable", Some(2)));
    }

    pub async fn durable_publish_needs_a_stream(bus: &SharedBus) {
        let result = bus.publish_durable("nowhere.at.all", payload("lost")).await;
        assert!(
            matches!(&result, Err(BusError::NoStreamForSubject(subject)) if subject == "nowhere.at.all"),
            "got {result:?}"
        );
        // Core publishing on such a subject is fine: nobody listens, nothing is kept.
        bus.publish("nowhere.at.all", payload("gone"))
            .await
            .expect("publish");
    }

    pub async fn stream_declarations_are_idempotent_and_checked(bus: &SharedBus) {
        bus.ensure_stream(&ops_stream())
            .await
            .expect("declare stream");
        bus.ensure_stream(&ops_stream())
            .await
            .expect("declare the same stream again");
        bus.publish_durable("ops.a", payload("1"))
            .await
            .expect("durable publish");
        bus.ensure_stream(&ops_stream())
            .await
            .expect("declaring again keeps the stream");
        let sequence = bus
            .publish_durable("ops.b", payload("2"))
            .await
            .expect("durable publish");
        assert_eq!(sequence, 2, "re-declaring must not reset the stream");

        // Updating the subjects keeps the contents and routes the new subjects.
        bus.ensure_stream(&DurableStream::new("ops", ["ops.>", "moderation.>"]))
            .await
            .expect("add a subject");
        let sequence = bus
            .publish_durable("moderation.hide", payload("3"))
            .await
            .expect("durable publish on the added subject");
        assert_eq!(sequence, 3);

        let overlapping = bus
            .ensure_stream(&DurableStream::new("audit", ["ops.ban"]))
            .await;
        assert!(
            matches!(overlapping, Err(BusError::InvalidStream(_))),
            "got {overlapping:?}"
        );
        bus.ensure_stream(&DurableStream::new("audit", ["audit.>"]))
            .await
            .expect("a disjoint stream");

        for bad in [
            DurableStream::new("has.dot", ["x.>"]),
            DurableStream::new("has space", ["x.>"]),
            DurableStream::new("", ["x.>"]),
            DurableStream::new("no-subjects", Vec::<String>::new()),
        ] {
            let result = bus.ensure_stream(&bad).await;
            assert!(
                matches!(result, Err(BusError::InvalidStream(_))),
                "{bad:?} gave {result:?}"
            );
        }
        let bad_subject = bus
            .ensure_stream(&DurableStream::new("bad-subject", ["x..y"]))
            .await;
        assert!(
            matches!(bad_subject, Err(BusError::InvalidSubject(_))),
            "got {bad_subject:?}"
        );
    }

    pub async fn replay_of_an_unknown_stream_is_refused(bus: &SharedBus) {
        let result = bus.replay("never-declared", 1, None).await;
        assert!(
            matches!(&result, Err(BusError::UnknownStream(name)) if name == "never-declared"),
            "got {result:?}"
        );
        let result = bus.replay("not.a.name", 1, None).await;
        assert!(
            matches!(result, Err(BusError::InvalidStream(_))),
            "got {result:?}"
        );
    }

    pub async fn invalid_subjects_are_rejected(bus: &SharedBus) {
        bus.ensure_stream(&ops_stream())
            .await
            .expect("declare stream");
        for subject in [
            "", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a.b*", "$SYS.x",
        ] {
            let published = bus.publish(subject, payload("x")).await;
            assert!(
                matches!(&published, Err(BusError::InvalidSubject(reason)) if !reason.is_empty()),
                "publish on {subject:?} gave {published:?}"
            );
        }
        let durable = bus.publish_durable("ops.*", payload("x")).await;
        assert!(
            matches!(durable, Err(BusError::InvalidSubject(_))),
            "got {durable:?}"
        );
        for pattern in ["", "a.>.b", "a..*", "a.b>", "a b.>"] {
            let subscribed = bus.subscribe(pattern).await;
            assert!(
                matches!(subscribed, Err(BusError::InvalidSubject(_))),
                "subscribe to {pattern:?} was accepted"
            );
        }
        let filtered = bus.replay("ops", 1, Some("ops..x")).await;
        assert!(
            matches!(filtered, Err(BusError::InvalidSubject(_))),
            "got {filtered:?}"
        );
        // The error tells a person what to fix.
        let message = bus
            .publish("a.*", payload("x"))
            .await
            .expect_err("wildcard publish")
            .to_string();
        assert!(message.contains("wildcard"), "unhelpful error: {message}");
    }

    pub async fn oversized_payloads_are_rejected(bus: &SharedBus) {
        bus.ensure_stream(&ops_stream())
            .await
            .expect("declare stream");
        let oversized = Bytes::from(vec![0u8; DEFAULT_MAX_PAYLOAD + 1]);
        let published = bus.publish("big.thing", oversized.clone()).await;
        assert!(
            matches!(published, Err(BusError::PayloadTooLarge { size, .. }) if size == DEFAULT_MAX_PAYLOAD + 1),
            "got {published:?}"
        );
        let durable = bus.publish_durable("ops.big", oversized).await;
        assert!(
            matches!(durable, Err(BusError::PayloadTooLarge { .. })),
            "got {durable:?}"
        );
        // The largest allowed payload still goes through.
        let mut subscription = bus.subscribe("big.*").await.expect("subscribe");
        let largest = Bytes::from(vec![7u8; 512 * 1024]);
        bus.publish("big.thing", largest.clone())
            .await
            .expect("publish a large payload");
        assert_eq!(next_message(&mut subscription).await.payload, largest);
    }

    pub async fn dropping_a_subscription_leaves_the_bus_working(bus: &SharedBus) {
        let dropped = bus.subscribe("room.>").await.expect("subscribe");
        let mut kept = bus.subscribe("room.>").await.expect("subscribe");
        bus.publish("room.1", payload("before"))
            .await
            .expect("publish");
        drop(dropped);
        bus.publish("room.1", payload("after"))
            .await
            .expect("publish");
        assert_eq!(text(&next_message(&mut kept).await), "before");
        assert_eq!(text(&next_message(&mut kept).await), "after");

        // Many short-lived subscriptions, as viewers come and go.
        for _ in 0..50 {
            let mut short_lived = bus.subscribe("room.1").await.expect("subscribe");
            bus.publish("room.1", payload("hello"))
                .await
                .expect("publish");
            assert_eq!(text(&next_message(&mut short_lived).await), "hello");
            assert_eq!(text(&next_message(&mut kept).await), "hello");
        }
        let mut fresh = bus.subscribe("room.>").await.expect("subscribe again");
        bus.publish("room.2", payload("still works"))
            .await
            .expect("publish");
        assert_eq!(text(&next_message(&mut fresh).await), "still works");
        assert_eq!(text(&next_message(&mut kept).await), "still works");
        bus.check().await.expect("the bus is still ready");
    }

    pub async fn the_bus_reports_ready(bus: &SharedBus) {
        bus.check().await.expect("a fresh bus is ready");
    }
}
