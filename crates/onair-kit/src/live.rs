//! Live events: what a channel's viewers see on their live socket
//! (`GET /v1/channels/{channelId}/live`).
//!
//! Services publish a typed protobuf message per event on
//! `live.<channel_id>.<kind>`, wrapped in a `google.protobuf.Any` so the
//! gateway can turn it into JSON from the descriptor set without knowing the
//! producer. The subjects belong to the memory-only durable stream [`LIVE_STREAM`]:
//! its sequence is the event's offset, the same on every gateway pod, so a viewer
//! can resume on any of them with `?after=OFFSET`. The stream is a bounded
//! window (the source of truth stays with each service: comments in the comment
//! store, schedules in the media store).

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;

use crate::bus::{BusError, DurableStream, SharedBus, StreamLimits};

/// The stream every live event goes through.
pub const LIVE_STREAM: &str = "live";

/// The first token of every live subject.
pub const LIVE_SUBJECT_PREFIX: &str = "live";

/// What kind of event it is; its `type` on the live socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LiveKind {
    /// A published comment.
    Comment,
    /// The channel's viewer count.
    Viewers,
    /// A poll opened, changed or closed.
    Poll,
    /// A comment hidden or rejected after it was shown: clients remove it.
    Moderation,
    /// A change to the channel's schedule.
    Schedule,
}

impl LiveKind {
    /// Every kind, in a stable order.
    pub const ALL: [LiveKind; 5] = [
        LiveKind::Comment,
        LiveKind::Viewers,
        LiveKind::Poll,
        LiveKind::Moderation,
        LiveKind::Schedule,
    ];

    /// The name on the wire and in the subject.
    pub fn as_str(self) -> &'static str {
        match self {
            LiveKind::Comment => "comment",
            LiveKind::Viewers => "viewers",
            LiveKind::Poll => "poll",
            LiveKind::Moderation => "moderation",
            LiveKind::Schedule => "schedule",
        }
    }

    /// The kind named by a subject's last token.
    pub fn parse(name: &str) -> Option<LiveKind> {
        LiveKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// The declaration of the live stream: memory only, a bounded window of at
/// most `max_events` events (across channels) no older than `max_age`.
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

/// The pattern that hears every event of one channel.
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

/// The bus payload of an event: `message` packed in a `google.protobuf.Any`
/// whose type URL names `full_name` (e.g. `onair.media.v1.ScheduleEvent`).
pub fn encode_event(full_name: &str, message: &impl prost::Message) -> Bytes {
    let any = prost_types::Any {
        type_url: format!("type.googleapis.com/{full_name}"),
        value: message.encode_to_vec(),
    };
    Bytes::from(any.encode_to_vec())
}

/// Publishes an event for a channel's live sockets and returns its offset.
pub async fn publish(
    bus: &SharedBus,
    channel_id: &str,
    kind: LiveKind,
    full_name: &str,
    message: &impl prost::Message,
) -> Result<u64, BusError> {
    bus.publish_durable(
        &live_subject(channel_id, kind),
        encode_event(full_name, message),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_the_channel_and_the_kind() {
        let subject = live_subject("news-1", LiveKind::Comment);
        assert_eq!(subject, "live.news-1.comment");
        assert_eq!(parse_subject(&subject), Some(("news-1", LiveKind::Comment)));
        assert_eq!(parse_subject("live.news-1.unknown"), None);
        assert_eq!(parse_subject("schedule.news-1"), None);
        let pattern = crate::bus::subject::SubjectPattern::parse(&channel_pattern("news-1"))
            .expect("valid pattern");
        assert!(pattern.matches(&subject));
        assert!(!pattern.matches("live.news-2.comment"));
    }

    #[test]
    fn events_travel_as_any() {
        let payload = encode_event(
            "google.protobuf.Duration",
            &prost_types::Duration {
                seconds: 3,
                nanos: 0,
            },
        );
        let any = prost_types::Any::decode(payload).expect("an Any");
        assert_eq!(any.type_url, "type.googleapis.com/google.protobuf.Duration");
        let duration = prost_types::Duration::decode(any.value.as_slice()).expect("a Duration");
        assert_eq!(duration.seconds, 3);
    }
}
