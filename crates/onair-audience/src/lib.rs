//! onair's audience service: how many watch each channel, now and over each
//! slot, and what they vote.
//!
//! Viewers are counted from the presence board ([`onair_kit::presence`]):
//! the gateways mark their live sockets there, and this service marks the
//! players that heartbeat (`POST /v1/channels/{id}/heartbeat`) and the
//! open `ViewerSession` streams. Each count interval, the [`counter`] takes
//! every watched channel's count, tells the live sockets when it changed
//! (`viewers` events), and keeps each slot's peak and its viewers minute by
//! minute in the [`store`], where they stay after the slot ends. With
//! several audience processes one of them holds the duty of announcing and
//! recording; every one of them answers reads.
//!
//! [`polls`] are votes on a slot: one ballot per viewer, exact tallies from
//! the ballots themselves, and `poll` events as they change.

#![warn(missing_docs)]

pub mod counter;
pub mod error;
pub mod polls;
pub mod service;
pub mod settings;
pub mod store;

pub use error::AudienceError;
pub use service::AudienceServiceImpl;
pub use settings::AudienceSettings;
pub use store::AudienceStore;
