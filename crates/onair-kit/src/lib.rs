//! What every onair service stands on: configuration, the server bootstrap,
//! errors, the bus and its event catalogue ([`events`]), storage, viewer
//! presence ([`presence`]), authentication and telemetry.

#![warn(missing_docs)]

pub mod abuse;
pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod front_door;
pub mod input;
pub mod listener;
pub mod metrics;
pub mod presence;
pub mod rate;
pub mod server;
pub mod store;
pub mod telemetry;

// The publish/subscribe bus.
pub use onair_bus as bus;
