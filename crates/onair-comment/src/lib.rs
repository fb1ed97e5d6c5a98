//! onair's comment service: viewers comment on the program on air, each
//! comment tied to its slot and its moment in it (`vposMs`); automatic
//! moderation (blocked terms, pace, links and spam, the author's trust score)
//! and moderators (a live review queue, approve, reject, hide) keep the
//! stream clean; published comments go live on the bus, and every aired slot
//! replays its comments by media offset.

#![warn(missing_docs)]

pub mod commands;
pub mod error;
pub mod lookup;
pub mod moderation;
pub mod pace;
pub mod service;
pub mod settings;
pub mod store;
pub mod text;

pub use error::CommentError;
pub use service::CommentServiceImpl;
pub use settings::CommentServiceSettings;
pub use store::CommentStore;
