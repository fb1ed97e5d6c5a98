//! The user service: anonymous-first users, roles, bans, trust scores, and the
//! Ed25519 keys that sign access tokens which every other service verifies from
//! the JWKS.

#![warn(missing_docs)]

pub mod cache;
pub mod display_name;
/// The user service's errors and how they map to gRPC and HTTP status.
pub mod error;
pub mod keys;
pub mod service;
pub mod store;

pub use error::UserError;
pub use service::{UserServiceImpl, UserServiceSettings};
pub use store::UserStore;
