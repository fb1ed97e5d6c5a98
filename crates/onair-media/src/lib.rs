#![warn(missing_docs)]
//! The media service: channels, programs and slots, the schedule that the
//! playout follows second by second and viewers browse as a guide (番組表).
//!
//! # The schedule's rules
//!
//! - A **slot** puts a program on a channel over `[start_time, end_time)`,
//!   UTC instants. Slots of one channel never overlap: a create or move that
//!   would is refused with `FAILED_PRECONDITION` (HTTP 400) naming the
//!   conflicting slot and its times. Not `ALREADY_EXISTS`: nothing with the
//!   new slot's identity exists, the schedule is just not in a state that
//!   admits it until the operator moves or deletes the other slot, which is
//!   what `FAILED_PRECONDITION` means in Google's error model. The overlap
//!   check and the insert run in one transaction under the channel's write
//!   lock (a PostgreSQL advisory lock per channel, SQLite's `BEGIN
//!   IMMEDIATE`), so of two concurrent overlapping creates exactly one wins.
//! - A slot may not be shorter than its program unless it is `cut`. A
//!   program of duration 0 (not known yet, e.g. live) is not checked.
//! - Gaps are allowed; `GetScheduleGaps` reports them and the playout fills
//!   them with the channel's slate.
//! - A slot on air (start <= now < end, by the injected clock) is changed or
//!   deleted only with `force`; so is a change that would put a slot on air.
//! - Ids: a client may name a channel, program or slot (1 to 64 lowercase
//!   letters, digits and hyphens, e.g. `news-1`, which IPTV apps use as
//!   `tvg-id`); otherwise the service makes one. Channel numbers are unique;
//!   0 on create takes the next free number.
//!
//! # Broadcast days
//!
//! `GetTimetable` takes either a range or a `broadcast_day` (YYYY-MM-DD) in a
//! `time_zone` (IANA name; the station's by default). Day D runs from D at the
//! station's broadcast day start (e.g. 05:00 in Asia/Tokyo) to D+1 at the same
//! local time; across a daylight-saving change that is 23 or 25 hours. See
//! [`MediaServiceSettings`].
//!
//! # Schedule changes on the bus
//!
//! Every change is published after it is stored on the subject
//! `schedule.<channel_id>` ([`onair_kit::events::schedule_subject`]), as
//! the protobuf encoding of `onair.media.v1.ScheduleEvent` (`SLOT_CREATED`,
//! `SLOT_UPDATED`, `SLOT_DELETED` with the slot, as it was for a deletion;
//! `CHANNEL_CREATED`, `CHANNEL_UPDATED` with the channel). `WatchSchedule`
//! streams are fed from a bus subscription (`schedule.<id>`, or `schedule.*`
//! for every channel), so a change made in one process reaches watchers in
//! all of them, and the gateway's live socket can relay the same messages.
//!
//! Changes are also recorded in the durable operations stream
//! ([`onair_kit::events`]) as `schedule.channel_created`,
//! `schedule.channel_updated`, `schedule.program_created`,
//! `schedule.program_updated`, `schedule.slot_created`,
//! `schedule.slot_updated`, `schedule.slot_deleted` and, once per import,
//! `schedule.imported`.
//!
//! # Schedule files
//!
//! A schedule file is read with [`schedule_file::parse`] and its items are sent
//! to `ImportSchedule` (a client-streaming RPC), which
//! checks the whole set and applies all of it or none, listing every error
//! with its line. The file is a mapping with up to three lists:
//!
//! ```yaml
#![doc = include_str!("../schedule-example.yaml")]
//! ```
//!
//! JSON files have the same shape; the JSON API's lowerCamelCase names
//! (`logoUrl`, `channelId`, `startTime`…) are accepted in both formats. A
//! slot may name channels and programs defined in the file or already stored.

pub mod broadcast_day;
pub mod cache;
pub mod error;
pub mod grpc;
pub mod import_checks;
pub mod model;
pub mod schedule_file;
pub mod service;
pub mod store;

pub use error::MediaError;
pub use grpc::MediaGrpcServer;
pub use service::{MediaServiceImpl, MediaServiceSettings};
pub use store::MediaStore;
