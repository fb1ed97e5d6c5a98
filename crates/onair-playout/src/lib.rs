//! The playout service: it turns source files into HLS renditions, computes
//! each channel's live stream from the schedule, takes live ingest and keeps
//! every aired slot for replay.
//!
//! AbemaTV's drama and anime are prepared file by file and stitched together
//! by the schedule; only live shows are encoded live. So here:
//!
//! - [`transcode`]: ffmpeg makes every asset into the station's ladder of
//!   renditions, cut into segments of one fixed length on aligned keyframes.
//! - [`timeline`]: a pure function decides, segment by segment, what a
//!   channel airs (a program's segment, a live segment, or the slate) and
//!   [`linear`] keeps each channel's playlist from it. No live transcode is
//!   needed to air a prepared program: the playlists name the prepared
//!   segments.
//! - [`ingest`]: an encoder pushes HLS with HTTP PUT under a stream key
//!   issued for a live slot; [`live_segments`] keeps what each live slot
//!   received.
//! - [`card`]: one frame of every asset, taken when it is transcoded, the
//!   picture of its share pages.
//! - [`http`]: `/hls`, `/vod`, `/ingest` and `/images`; [`service`]: the
//!   gRPC service.
//! - [`playout`]: the running whole that both of them serve;
//!   [`settings`]: what it is told.
//!
//! Three modules keep things, each a different kind:
//!
//! - [`tables`]: the rows, on SQLite or PostgreSQL (assets, aired entries,
//!   stream keys, received live segments): the record.
//! - [`segment_store`]: the segment files (bytes), on local disk, behind a
//!   trait an object store can implement.
//! - [`asset_index`]: an in-memory copy of the playable assets' segment
//!   lists, loaded from the tables, so the timeline never waits on a query.
//!
//! Metrics: `onair_playout_transcode_jobs` (queued or running),
//! `onair_playout_transcodes_total{outcome}`,
//! `onair_playout_segments_aired_total{kind}` (program, slate, live) and
//! `onair_playout_live_segments_received_total`.
//!
//! The service talks to the media service only through its contract
//! (`GetChannel`, `GetTimetable`, `GetSlot`, `WatchSchedule`,
//! `ListChannels`).

#![warn(missing_docs)]

pub mod asset_index;
pub mod card;
pub mod error;
pub mod http;
pub mod ingest;
pub mod ladder;
pub mod linear;
pub mod live_segments;
pub mod playout;
pub mod segment_store;
pub mod service;
pub mod settings;
pub mod tables;
pub mod timeline;
pub mod transcode;

pub use error::PlayoutError;
pub use playout::Playout;
pub use segment_store::{LocalDiskStorage, SegmentStorage};
pub use service::PlayoutServiceImpl;
pub use settings::{DEFAULT_SLATE_ID, PlayoutSettings};
pub use tables::PlayoutStore;
