//! onair's share service: short, unguessable links to a channel, a slot (at
//! a moment of it) or a comment, the share intents of X, LINE and Facebook
//! filled in with them, how often each target was shared and its links
//! opened, and what a link's preview page shows (title, description and a
//! picture of the program), which the gateway serves at `/s/{code}`.
//!
//! - [`links`]: the codes and the intents, pure functions.
//! - [`store`]: the links and their opens, on SQLite or PostgreSQL.
//! - [`preview`]: what a link's page shows, from the media and comment
//!   services, kept for a few seconds.
//! - [`service`]: the `ShareService` RPCs.

#![warn(missing_docs)]

pub mod error;
pub mod links;
pub mod preview;
pub mod service;
pub mod settings;
pub mod store;

pub use error::ShareError;
pub use service::ShareServiceImpl;
pub use settings::ShareSettings;
pub use store::ShareStore;
