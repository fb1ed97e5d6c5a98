//! onair's publish/subscribe bus.
//!
//! Services announce what happened (a comment was stored, a viewer count changed, a
//! moderator banned someone) on the bus, and every interested process hears it. The
//! [`Bus`] trait has two implementations that behave the same way, checked by one
//! conformance suite (`tests/conformance.rs`):
//!
//! - [`InProcessBus`]: the embedded default for a one-process station; durable streams
//!   live in memory and, given a directory, in append-only journal files.
//! - [`NatsBus`]: NATS core for fan-out and JetStream for durable streams, for a station
//!   split over many pods.
//!
//! Subjects are dot-separated tokens (`comment.channel-7.posted`); subscription patterns
//! may use the NATS wildcards `*` (one token) and `>` (one or more trailing tokens). See
//! [`subject`] for the exact rules.

#![warn(missing_docs)]

mod error;
mod in_process;
mod nats;
pub mod subject;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use error::BusError;
pub use in_process::{
    DEFAULT_MAX_PAYLOAD, DEFAULT_SUBSCRIBER_QUEUE_LEN, InProcessBus, InProcessBusConfig,
};
pub use nats::{NatsBus, NatsBusOptions};

/// One message as a subscriber sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject it was published on, so a wildcard subscriber can tell messages apart
    /// (for example which channel a comment belongs to). Never carries the NATS prefix.
    pub subject: String,
    /// The bytes the publisher sent; the bus never looks inside, so each service keeps
    /// its own encoding (usually protobuf).
    pub payload: Bytes,
    /// Position in a durable stream, so a consumer can resume after the last one it
    /// handled; `None` for core fan-out, which has no positions.
    pub sequence: Option<u64>,
}

/// A live feed of messages, from [`Bus::subscribe`] or [`Bus::replay`].
///
/// Dropping it unsubscribes. It ends (yields `None`) only when the bus behind it is gone.
pub struct Subscription {
    /// The messages; boxed so both implementations (and test doubles) fit one type.
    messages: Pin<Box<dyn Stream<Item = Message> + Send>>,
    /// How many messages the bus dropped for this subscriber because it fell behind;
    /// shared with the publishing side, which counts.
    lost: Arc<AtomicU64>,
}

impl Subscription {
    /// Wraps any stream of messages, so other crates can hand out a `Subscription` from a
    /// test double or an adapter.
    pub fn from_stream(messages: impl Stream<Item = Message> + Send + 'static) -> Self {
        Self::with_loss_counter(messages, Arc::new(AtomicU64::new(0)))
    }

    fn with_loss_counter(
        messages: impl Stream<Item = Message> + Send + 'static,
        lost: Arc<AtomicU64>,
    ) -> Self {
        Self {
            messages: Box::pin(messages),
            lost,
        }
    }

    /// How many messages were dropped for this subscriber because its queue was full
    /// (it read too slowly). Counted by [`InProcessBus`]; with [`NatsBus`] the client
    /// reports slow consumers in its log instead and this stays 0. Replays never lose
    /// messages: they read from the stored stream at the subscriber's pace.
    pub fn lost_messages(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.messages.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("lost_messages", &self.lost_messages())
            .finish_non_exhaustive()
    }
}

/// A durable stream: the subjects whose messages are stored, in order, so they can be
/// replayed later (operations log, audit trail, moderation events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableStream {
    /// Stream name: ASCII letters, digits, `-` and `_` only, because it also becomes a
    /// JetStream stream name and a file name.
    pub name: String,
    /// Subject patterns the stream captures; wildcards allowed. Two streams may not
    /// capture the same subject, so every stored message has exactly one home.
    pub subjects: Vec<String>,
    /// What the stream keeps; by default everything, on disk.
    pub limits: StreamLimits,
}

/// How much a durable stream keeps. The oldest messages go first; sequences never
/// restart, so a consumer can tell that what it asked for is gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamLimits {
    /// At most this many messages; `None` for no limit.
    pub max_messages: Option<u64>,
    /// Messages older than this are discarded; `None` for no limit.
    pub max_age: Option<Duration>,
    /// Kept in memory only (NATS memory storage; no journal in the embedded bus), for
    /// derived feeds whose source of truth is elsewhere, such as live events. They are
    /// lost on restart, and appending to them costs no disk write.
    pub memory_only: bool,
}

impl DurableStream {
    /// Builds a stream declaration without spelling out the `Vec<String>`.
    pub fn new(
        name: impl Into<String>,
        subjects: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            limits: StreamLimits::default(),
        }
    }

    /// The same declaration with retention limits.
    pub fn with_limits(mut self, limits: StreamLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// Which sequences a durable stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBounds {
    /// The oldest message kept; `last + 1` when the stream holds none.
    pub first: u64,
    /// The newest message stored, 0 if the stream never held one.
    pub last: u64,
    /// Which incarnation of the stream these sequences belong to: the time it was
    /// created, in microseconds since the Unix epoch. A stream that is lost (a
    /// memory-only stream after a restart of the process or the NATS server) and
    /// declared again starts its sequences over under another epoch, so a consumer
    /// holding a sequence can tell that it no longer names the same message. A stream
    /// kept on disk keeps its epoch across restarts.
    pub epoch: u64,
}

/// The publish/subscribe bus every service talks through.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Core fan-out to the subscribers of the moment (at-most-once, like NATS core).
    ///
    /// If a durable stream captures `subject`, the message is stored there as well, as
    /// NATS JetStream does; use [`Bus::publish_durable`] to learn its sequence. While the
    /// bus cannot be reached this fails with [`BusError::Unavailable`] rather than
    /// queueing the message.
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;

    /// Subscribes to a subject pattern with NATS wildcards: `*` matches one token, `>`
    /// the rest (one or more tokens).
    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError>;

    /// Declares a durable stream (idempotent); declaring it again with other subjects
    /// updates them. The bus remembers the declaration: a memory-only stream that the
    /// server lost (NATS restarted) is declared again by the bus itself when it
    /// reconnects or when a durable publish finds the stream missing.
    async fn ensure_stream(&self, stream: &DurableStream) -> Result<(), BusError>;

    /// Appends to the durable stream that captures `subject`; returns once stored
    /// (acknowledged), with its sequence (1-based, per stream).
    ///
    /// Durable messages are ALSO delivered to core subscribers of matching patterns
    /// (with `sequence: None`, as core delivery has no positions).
    async fn publish_durable(&self, subject: &str, payload: Bytes) -> Result<u64, BusError>;

    /// Replays a durable stream from `from_sequence` (inclusive; 1 = from the start, and
    /// 0 is read as 1), optionally filtered by subject pattern, then continues live.
    async fn replay(
        &self,
        stream: &str,
        from_sequence: u64,
        filter: Option<&str>,
    ) -> Result<Subscription, BusError>;

    /// The sequences the stream holds now. A consumer that wants only what comes next
    /// replays from `last + 1`.
    async fn stream_bounds(&self, stream: &str) -> Result<StreamBounds, BusError>;

    /// Whether the bus answers now (used by /readyz).
    async fn check(&self) -> Result<(), BusError>;
}

/// How services hold the bus: one instance shared by every task of the process.
pub type SharedBus = Arc<dyn Bus>;
