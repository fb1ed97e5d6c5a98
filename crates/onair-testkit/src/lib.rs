//! What onair's integration tests stand on, in one place: real stations on
//! port 0 with their own data directory and database ([`station`], and the
//! media service alone in [`media`]), the servers tests need and may own
//! ([`servers`]: a PostgreSQL database per test, a `nats-server` per test),
//! both buses as fixtures ([`bus`]), the binary as a child process
//! ([`process`]), the clients a test talks to a station
//! with ([`clients`], [`live`]), and one way to wait for what happens
//! asynchronously: [`assert_eventually!`].
//!
//! It is a dev-dependency only: nothing here is compiled into the binary.

#![warn(missing_docs)]

pub mod bus;
pub mod clients;
pub mod live;
pub mod media;
pub mod process;
pub mod servers;
pub mod station;

mod eventually;

pub use clients::{
    authorized, create_channel, create_program, create_viewer, error_message, header_text,
    metrics_text, rfc3339, schedule_slot, send, send_at,
};
pub use eventually::{Eventual, PATIENCE, POLL_INTERVAL};
pub use live::{
    Closed, Socket, comment, connect, connect_small_window, live_url, next_events,
    next_events_with_viewers, open_sse, publish_comment, read_sse_until, ready, ready_epoch,
};
pub use process::OnairProcess;
pub use servers::{
    NatsServer, RedisServer, TestDatabase, free_port, nats_url, postgres_admin_url, redis_url,
    unique_name,
};
pub use station::{
    Backend, TestStation, read_operator_key, rss_bytes, test_settings, test_settings_with,
    workspace_root,
};

#[doc(hidden)]
pub use tokio as __tokio;
