//! The station's event catalogue: every subject on the bus, the type of its
//! payload and how that payload is written and read. A service crate never
//! depends on another, so what one publishes and others hear is declared
//! here, in the kit, and nowhere else.
//!
//! | event                   | subject                      | payload                                     | from           | heard by                                         |
//! |-------------------------|------------------------------|---------------------------------------------|----------------|--------------------------------------------------|
//! | [`UserChanged`]         | `user.changed`               | `onair.events.v1.UserChanged`               | user           | every authenticator, the user and comment caches |
//! | [`MediaChanged`]        | `media.changed`              | `onair.events.v1.MediaChanged`              | media          | the media, comment and audience caches           |
//! | [`ChatSettingsChanged`] | `comment.settings.changed`   | `onair.events.v1.ChatSettingsChanged`       | comment        | comment                                          |
//! | [`ScheduleEvent`]       | `schedule.<channel_id>`      | `onair.media.v1.ScheduleEvent`              | media          | `WatchSchedule` (the playout)                    |
//! | [`ModerationQueueItem`] | `comment.queue.<channel_id>` | `onair.comment.v1.ModerationQueueItem`      | comment        | `WatchModerationQueue` (the console)             |
//! | [`LiveEvent`]           | `live.<channel_id>.<kind>`   | `google.protobuf.Any` of a contract message | comment, media, audience | the gateway's live sockets, `WatchComments`, `WatchPoll` |
//! | [`OpsEvent`]            | `ops.<kind>`                 | JSON                                        | every service  | analysis, audit                                  |
//!
//! Every payload is the protobuf encoding of a message defined in `proto/`
//! (`onair/events/v1/events.proto` for the announcements that are not
//! messages of a service's API), with two deliberate differences:
//!
//! - A live event is a contract message packed in `google.protobuf.Any`, so
//!   that the gateway can render any producer's message as the proto3 JSON
//!   mapping from the descriptor set without knowing its type. The gateway
//!   does so once per event, not once per viewer, and sends the same bytes
//!   to every connection; viewers never see the `Any`.
//! - An operational event is JSON: it is stored for systems outside the
//!   station (analysis, audit) that read it without the contracts, and its
//!   `details` differ from one kind to the next.
//!
//! Announcements ([`Announcement`]) go on the core bus: at most once, not
//! stored, so whoever caches on their strength also lets entries expire.
//! Live and operational events go to durable streams ([`live_stream`],
//! [`ops_stream`]), whose sequence numbers are the events' offsets.

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use serde::Serialize;

use crate::bus::{BusError, DurableStream, SharedBus, StreamLimits};
use crate::telemetry::TraceContext;

pub use onair_proto::comment::v1::{CommentEvent, ModerationQueueItem};
pub use onair_proto::events::v1::{ChatSettingsChanged, MediaChanged, UserChanged};
pub use onair_proto::media::v1::ScheduleEvent;

/// An event on the core bus: where it is published, and its payload (its
/// protobuf encoding).
pub trait Announcement: prost::Message + Default + Sized {
    /// The subject it is published on.
    fn subject(&self) -> String;

    /// The payload it travels as.
    fn encode_payload(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }

    /// Reads a payload of this event's subject.
    fn decode_payload(payload: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(payload)
    }
}

/// Publishes an announcement on the core bus.
pub async fn announce(bus: &SharedBus, event: &impl Announcement) -> Result<(), BusError> {
    bus.publish(&event.subject(), event.encode_payload()).await
}

// ---------------------------------------------------------------------------
// user.changed

/// A user changed (role, ban, trust score, name): a [`UserChanged`].
/// Whoever caches users forgets that one.
pub const USER_CHANGED: &str = "user.changed";

impl Announcement for UserChanged {
    fn subject(&self) -> String {
        USER_CHANGED.to_owned()
    }
}

// ---------------------------------------------------------------------------
// media.changed

/// The schedule or a channel changed: a [`MediaChanged`] naming the channels
/// whose slots or details changed, or none when anything may have changed.
/// Whoever caches what is on air forgets it.
pub const MEDIA_CHANGED: &str = "media.changed";

impl Announcement for MediaChanged {
    fn subject(&self) -> String {
        MEDIA_CHANGED.to_owned()
    }
}

/// The channels a [`MEDIA_CHANGED`] payload names, or `None` when it names
/// none or does not read: anything may have changed.
pub fn changed_channels(payload: &[u8]) -> Option<Vec<String>> {
    let changed = MediaChanged::decode_payload(payload).ok()?;
    (!changed.channel_ids.is_empty()).then_some(changed.channel_ids)
}

// ---------------------------------------------------------------------------
// comment.settings.changed

/// A channel's chat settings changed: a [`ChatSettingsChanged`]. Every
/// comment process reads them again.
pub const CHAT_SETTINGS_CHANGED: &str = "comment.settings.changed";

impl Announcement for ChatSettingsChanged {
    fn subject(&self) -> String {
        CHAT_SETTINGS_CHANGED.to_owned()
    }
}

// ---------------------------------------------------------------------------
// schedule.<channel_id>

/// The first token of every schedule subject.
pub const SCHEDULE_SUBJECT_PREFIX: &str = "schedule";

/// The pattern that hears every channel's schedule changes. Channel ids hold
/// no dots, so one token matches one channel.
pub const ALL_SCHEDULE_SUBJECTS: &str = "schedule.*";

/// The subject a channel's schedule changes ([`ScheduleEvent`]) are
/// published on: `schedule.<channel_id>`. `WatchSchedule` streams are fed
/// from it, so a change made through one process reaches watchers on every
/// other.
pub fn schedule_subject(channel_id: &str) -> String {
    format!("{SCHEDULE_SUBJECT_PREFIX}.{channel_id}")
}

impl Announcement for ScheduleEvent {
    fn subject(&self) -> String {
        schedule_subject(&self.channel_id)
    }
}

// ---------------------------------------------------------------------------
// comment.queue.<channel_id>

/// The first tokens of the review queue's subjects.
pub const QUEUE_SUBJECT_PREFIX: &str = "comment.queue";

/// The subject on which a channel's review queue changes
/// ([`ModerationQueueItem`]) are published: `comment.queue.<channel_id>`;
/// `*` hears every channel's.
pub fn queue_subject(channel_id: &str) -> String {
    format!("{QUEUE_SUBJECT_PREFIX}.{channel_id}")
}

impl Announcement for ModerationQueueItem {
    fn subject(&self) -> String {
        let channel_id = self
            .comment
            .as_ref()
            .map_or("", |comment| comment.channel_id.as_str());
        queue_subject(channel_id)
    }
}

// ---------------------------------------------------------------------------
// live.<channel_id>.<kind>

/// The stream every live event goes through.
pub const LIVE_STREAM: &str = "live";

/// The first token of every live subject.
pub const LIVE_SUBJECT_PREFIX: &str = "live";

/// The full name of the message of comment and moderation live events.
pub const COMMENT_EVENT: &str = "onair.comment.v1.CommentEvent";

/// The full name of the message of schedule live events.
pub const SCHEDULE_EVENT: &str = "onair.media.v1.ScheduleEvent";
/// The full name of the message a `program` event carries.
pub const PROGRAM_EVENT: &str = "onair.media.v1.NowNext";

/// What kind of live event it is; its `type` on the live socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LiveKind {
    /// A published comment ([`CommentEvent`]).
    Comment,
    /// The channel's viewer count.
    Viewers,
    /// A poll opened, changed or closed.
    Poll,
    /// A comment hidden or rejected after it was shown: clients remove it
    /// ([`CommentEvent`] with the comment's id).
    Moderation,
    /// A change to the channel's schedule ([`ScheduleEvent`]).
    Schedule,
    /// The slot on air changed, at its boundary or by a schedule edit: what
    /// is on now and next (`NowNext`).
    Program,
}

impl LiveKind {
    /// Every kind, in a stable order.
    pub const ALL: [LiveKind; 6] = [
        LiveKind::Comment,
        LiveKind::Viewers,
        LiveKind::Poll,
        LiveKind::Moderation,
        LiveKind::Schedule,
        LiveKind::Program,
    ];

    /// The name on the wire and in the subject.
    pub fn as_str(self) -> &'static str {
        match self {
            LiveKind::Comment => "comment",
            LiveKind::Viewers => "viewers",
            LiveKind::Poll => "poll",
            LiveKind::Moderation => "moderation",
            LiveKind::Schedule => "schedule",
            LiveKind::Program => "program",
        }
    }

    /// The kind named by a subject's last token.
    pub fn parse(name: &str) -> Option<LiveKind> {
        LiveKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// The declaration of the live stream: memory only, a bounded window of at
/// most `max_events` events (across channels) no older than `max_age`. Its
/// sequence is the event's offset, the same on every gateway pod, so a
/// viewer can resume on any of them with `?after=OFFSET`. The source of
/// truth stays with each service (comments in the comment store, schedules
/// in the media store).
pub fn live_stream(max_events: u64, max_age: Duration) -> DurableStream {
    DurableStream::new(LIVE_STREAM, [format!("{LIVE_SUBJECT_PREFIX}.>")]).with_limits(
        StreamLimits {
            max_messages: Some(max_events),
            max_age: Some(max_age),
            memory_only: true,
        },
    )
}

/// `live.<channel_id>.<kind>`. Channel ids hold no dots, so the channel is one
/// token.
pub fn live_subject(channel_id: &str, kind: LiveKind) -> String {
    format!("{LIVE_SUBJECT_PREFIX}.{channel_id}.{}", kind.as_str())
}

/// The pattern that hears every live event of one channel.
pub fn channel_pattern(channel_id: &str) -> String {
    format!("{LIVE_SUBJECT_PREFIX}.{channel_id}.*")
}

/// Splits a live subject into its channel and kind.
pub fn parse_subject(subject: &str) -> Option<(&str, LiveKind)> {
    let rest = subject
        .strip_prefix(LIVE_SUBJECT_PREFIX)?
        .strip_prefix('.')?;
    let (channel_id, kind) = rest.split_once('.')?;
    Some((channel_id, LiveKind::parse(kind)?))
}

/// Reads a live event's payload: the `Any` its message is packed in.
pub fn decode_live_payload(payload: &[u8]) -> Result<prost_types::Any, prost::DecodeError> {
    prost_types::Any::decode(payload)
}

/// The full name of the message packed in `any`
/// (`onair.comment.v1.CommentEvent`).
pub fn type_name(any: &prost_types::Any) -> &str {
    any.type_url
        .rsplit_once('/')
        .map_or(any.type_url.as_str(), |(_, name)| name)
}

/// An event for one channel's live sockets, published on
/// `live.<channel_id>.<kind>` in the [`LIVE_STREAM`].
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    /// The channel whose viewers see it.
    pub channel_id: String,
    /// What kind of event it is: the last part of its subject, and its `type`
    /// on the live socket.
    pub kind: LiveKind,
    /// The message, packed with its type's name.
    pub message: prost_types::Any,
}

impl LiveEvent {
    /// `message`, whose type is `full_name` (a message of the contracts, so
    /// that the gateway's descriptor set knows it), as a `kind` event.
    pub fn pack(
        channel_id: &str,
        kind: LiveKind,
        full_name: &str,
        message: &impl prost::Message,
    ) -> LiveEvent {
        LiveEvent {
            channel_id: channel_id.to_owned(),
            kind,
            message: prost_types::Any {
                type_url: format!("type.googleapis.com/{full_name}"),
                value: message.encode_to_vec(),
            },
        }
    }

    /// A published comment: `kind` is [`LiveKind::Comment`], or
    /// [`LiveKind::Moderation`] for a removal.
    pub fn comment(channel_id: &str, kind: LiveKind, event: &CommentEvent) -> LiveEvent {
        LiveEvent::pack(channel_id, kind, COMMENT_EVENT, event)
    }

    /// A change to a channel's schedule.
    pub fn schedule(event: &ScheduleEvent) -> LiveEvent {
        LiveEvent::pack(&event.channel_id, LiveKind::Schedule, SCHEDULE_EVENT, event)
    }

    /// What a channel has on air now and next, when that changed.
    pub fn program(now_next: &onair_proto::media::v1::NowNext) -> LiveEvent {
        LiveEvent::pack(
            &now_next.channel_id,
            LiveKind::Program,
            PROGRAM_EVENT,
            now_next,
        )
    }

    /// The subject it is published on.
    pub fn subject(&self) -> String {
        live_subject(&self.channel_id, self.kind)
    }

    /// The payload it travels as: the `Any`.
    pub fn encode_payload(&self) -> Bytes {
        Bytes::from(self.message.encode_to_vec())
    }

    /// Reads a live event from its subject and payload.
    pub fn decode(subject: &str, payload: &[u8]) -> Option<LiveEvent> {
        let (channel_id, kind) = parse_subject(subject)?;
        let message = decode_live_payload(payload).ok()?;
        Some(LiveEvent {
            channel_id: channel_id.to_owned(),
            kind,
            message,
        })
    }

    /// The comment event it carries, if it is a comment or moderation event.
    pub fn comment_event(&self) -> Option<CommentEvent> {
        if !matches!(self.kind, LiveKind::Comment | LiveKind::Moderation) {
            return None;
        }
        if type_name(&self.message) != COMMENT_EVENT {
            return None;
        }
        CommentEvent::decode(self.message.value.as_slice()).ok()
    }

    /// Publishes it for the channel's live sockets and returns its offset.
    pub async fn publish(&self, bus: &SharedBus) -> Result<u64, BusError> {
        bus.publish_durable(&self.subject(), self.encode_payload())
            .await
    }
}

// ---------------------------------------------------------------------------
// ops.<kind>

/// The durable stream every operational event is stored in.
pub const OPS_STREAM_NAME: &str = "ops";

/// The declaration of the operations stream: every subject under `ops.`.
pub fn ops_stream() -> DurableStream {
    DurableStream::new(OPS_STREAM_NAME, ["ops.>"])
}

/// An operational event: who did what, when and why (bans, role changes,
/// moderation actions, schedule changes, playout faults), stored as JSON on
/// `ops.<kind>` so that an analysis system, an audit or the console can
/// replay them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsEvent {
    /// What happened, e.g. `user.banned`; the bus subject is `ops.<kind>`.
    pub kind: String,
    /// Who did it: a user id, or the service's name for automatic actions.
    pub actor_id: String,
    /// What it was done to: a user, comment, channel or slot id.
    pub target_id: String,
    /// Why, in the actor's words.
    pub reason: String,
    /// When, in unix milliseconds.
    pub time_ms: i64,
    /// The trace of the request that caused it, to find its logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Event-specific fields.
    pub details: serde_json::Value,
}

impl OpsEvent {
    /// An event of `kind` that `actor_id` did to `target_id` at `time_ms`
    /// (Unix milliseconds), carrying the trace of the request being handled,
    /// if any.
    pub fn new(
        kind: &str,
        actor_id: &str,
        target_id: &str,
        reason: &str,
        time_ms: i64,
        details: serde_json::Value,
    ) -> OpsEvent {
        OpsEvent {
            kind: kind.to_owned(),
            actor_id: actor_id.to_owned(),
            target_id: target_id.to_owned(),
            reason: reason.to_owned(),
            time_ms,
            trace_id: TraceContext::current().map(|context| context.trace_id_hex()),
            details,
        }
    }

    /// The subject it is stored on.
    pub fn subject(&self) -> String {
        format!("{OPS_STREAM_NAME}.{}", self.kind)
    }

    /// The payload it is stored as: JSON.
    pub fn encode_payload(&self) -> Result<Bytes, serde_json::Error> {
        serde_json::to_vec(self).map(Bytes::from)
    }
}

/// Stores an event in the operations stream. The action it describes has
/// already been stored by its service, so a bus failure is logged, not
/// returned: the caller's request succeeded.
pub async fn record(bus: &SharedBus, event: &OpsEvent) {
    let subject = event.subject();
    let payload = match event.encode_payload() {
        Ok(payload) => payload,
        Err(error) => {
            tracing::error!(error = %error, kind = %event.kind, "cannot encode an operational event");
            return;
        }
    };
    match bus.publish_durable(&subject, payload).await {
        Ok(sequence) => tracing::debug!(subject, sequence, "stored an operational event"),
        Err(error) => {
            tracing::warn!(error = %error, subject, target_id = %event.target_id, "cannot store an operational event")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::subject::{SubjectPattern, validate_subject};

    #[test]
    fn live_subjects_name_the_channel_and_the_kind() {
        let subject = live_subject("news-1", LiveKind::Comment);
        assert_eq!(subject, "live.news-1.comment");
        assert_eq!(parse_subject(&subject), Some(("news-1", LiveKind::Comment)));
        assert_eq!(parse_subject("live.news-1.unknown"), None);
        assert_eq!(parse_subject("schedule.news-1"), None);
        let pattern = SubjectPattern::parse(&channel_pattern("news-1")).expect("valid pattern");
        assert!(pattern.matches(&subject));
        assert!(!pattern.matches("live.news-2.comment"));
    }

    #[test]
    fn live_events_travel_as_any() {
        let event = LiveEvent::pack(
            "news-1",
            LiveKind::Viewers,
            "google.protobuf.Duration",
            &prost_types::Duration {
                seconds: 3,
                nanos: 0,
            },
        );
        let payload = event.encode_payload();
        let any = prost_types::Any::decode(payload.clone()).expect("an Any");
        assert_eq!(any.type_url, "type.googleapis.com/google.protobuf.Duration");
        assert_eq!(type_name(&any), "google.protobuf.Duration");
        let duration = prost_types::Duration::decode(any.value.as_slice()).expect("a Duration");
        assert_eq!(duration.seconds, 3);
        assert_eq!(
            LiveEvent::decode("live.news-1.viewers", &payload),
            Some(event)
        );
    }

    #[test]
    fn only_comment_events_read_as_comment_events() {
        let removal = CommentEvent {
            event: Some(
                onair_proto::comment::v1::comment_event::Event::RemovedCommentId("c1".to_owned()),
            ),
            comments_per_second: 0.0,
            sampled: false,
        };
        let event = LiveEvent::comment("news-1", LiveKind::Moderation, &removal);
        assert_eq!(event.subject(), "live.news-1.moderation");
        let read = LiveEvent::decode(&event.subject(), &event.encode_payload()).unwrap();
        assert_eq!(read.comment_event(), Some(removal));
        let schedule = LiveEvent::schedule(&ScheduleEvent {
            channel_id: "news-1".to_owned(),
            ..ScheduleEvent::default()
        });
        assert_eq!(schedule.subject(), "live.news-1.schedule");
        assert_eq!(schedule.comment_event(), None);
    }

    #[test]
    fn announcements_round_trip_on_their_subjects() {
        let user = UserChanged {
            user_id: "u1".to_owned(),
        };
        assert_eq!(user.subject(), "user.changed");
        assert_eq!(
            UserChanged::decode_payload(&user.encode_payload()).unwrap(),
            user
        );

        let everything = MediaChanged::default();
        assert_eq!(everything.subject(), "media.changed");
        assert_eq!(changed_channels(&everything.encode_payload()), None);
        let two = MediaChanged {
            channel_ids: vec!["a".to_owned(), "b".to_owned()],
        };
        assert_eq!(
            changed_channels(&two.encode_payload()),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );

        let settings = ChatSettingsChanged {
            channel_id: "news-1".to_owned(),
        };
        assert_eq!(settings.subject(), "comment.settings.changed");

        let schedule = ScheduleEvent {
            kind: onair_proto::media::v1::schedule_event::Kind::SlotCreated as i32,
            channel_id: "news-1".to_owned(),
            slot: Some(onair_proto::media::v1::Slot {
                id: "s".to_owned(),
                ..Default::default()
            }),
            event_time: None,
            channel: None,
        };
        assert_eq!(
            ScheduleEvent::decode_payload(&schedule.encode_payload()).unwrap(),
            schedule
        );
        assert_eq!(schedule.subject(), "schedule.news-1");
        validate_subject(&schedule.subject()).unwrap();
        let all = SubjectPattern::parse(ALL_SCHEDULE_SUBJECTS).unwrap();
        assert!(all.matches("schedule.news-1"));
        assert!(!all.matches("ops.schedule.slot_created"));

        let queued = ModerationQueueItem {
            comment: Some(onair_proto::comment::v1::Comment {
                channel_id: "news-1".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(queued.subject(), "comment.queue.news-1");
        let every_queue = SubjectPattern::parse(&queue_subject("*")).unwrap();
        assert!(every_queue.matches(&queued.subject()));
    }

    #[test]
    fn operational_events_are_stored_as_json_on_their_kind() {
        let event = OpsEvent::new(
            "user.banned",
            "operator",
            "u1",
            "spam",
            7,
            serde_json::json!({"durationSeconds": 300}),
        );
        assert_eq!(event.subject(), "ops.user.banned");
        let json: serde_json::Value =
            serde_json::from_slice(&event.encode_payload().unwrap()).unwrap();
        assert_eq!(json["actorId"], "operator");
        assert_eq!(json["details"]["durationSeconds"], 300);
    }
}
