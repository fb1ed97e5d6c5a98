//! Schedule changes on the bus: every process's `WatchSchedule` streams and
//! the gateway's live sockets hear them from here, not from an in-memory list,
//! so a change made through one pod reaches watchers on every other.

use bytes::Bytes;
use onair_proto::media::v1 as pb;
use prost::Message as _;

/// The first token of every schedule subject.
pub const SCHEDULE_SUBJECT_PREFIX: &str = "schedule";

/// The pattern that hears every channel's schedule changes. Channel ids hold
/// no dots, so one token matches one channel.
pub const ALL_SCHEDULE_SUBJECTS: &str = "schedule.*";

/// The subject a channel's schedule changes are published on:
/// `schedule.<channel_id>`.
pub fn schedule_subject(channel_id: &str) -> String {
    format!("{SCHEDULE_SUBJECT_PREFIX}.{channel_id}")
}

/// A schedule event as it travels on the bus: the protobuf encoding of
/// `onair.media.v1.ScheduleEvent`.
pub fn encode_event(event: &pb::ScheduleEvent) -> Bytes {
    Bytes::from(event.encode_to_vec())
}

/// The inverse of [`encode_event`].
pub fn decode_event(payload: &[u8]) -> Result<pb::ScheduleEvent, prost::DecodeError> {
    pb::ScheduleEvent::decode(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_bus_encoding() {
        let event = pb::ScheduleEvent {
            kind: pb::schedule_event::Kind::SlotCreated as i32,
            channel_id: "news-1".to_owned(),
            slot: Some(pb::Slot {
                id: "s".to_owned(),
                ..Default::default()
            }),
            event_time: None,
            channel: None,
        };
        assert_eq!(decode_event(&encode_event(&event)).unwrap(), event);
        assert_eq!(schedule_subject("news-1"), "schedule.news-1");
        onair_kit::bus::subject::validate_subject(&schedule_subject("news-1")).unwrap();
        let all = onair_kit::bus::subject::SubjectPattern::parse(ALL_SCHEDULE_SUBJECTS).unwrap();
        assert!(all.matches("schedule.news-1"));
        assert!(!all.matches("ops.schedule.slot_created"));
    }
}
