//! The user service: anonymous-first users, roles, bans, trust scores, and the
//! Ed25519 keys that sign access tokens which every other service verifies from
//! the JWKS.

pub mod cache;
pub mod display_name;
pub mod error;
pub mod keys;
pub mod service;
pub mod store;

pub use error::UserError;
pub use service::{UserServiceImpl, UserServiceSettings};
pub use store::UserStore;
