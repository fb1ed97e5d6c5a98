//! The bus on NATS: core subjects for fan-out, JetStream streams for durable ones.
//!
//! Every subject and stream name is namespaced by a prefix, so several stations (or
//! test runs) can share one NATS server; users of the [`Bus`] trait never see it.
//!
//! The client reconnects by itself (unbounded attempts, backoff capped at
//! [`NatsBusOptions::max_reconnect_delay`]) and re-subscribes core subscriptions, so a
//! [`Subscription`] outlives a server restart; replays use ordered consumers, which the
//! client recreates from the last delivered sequence. The bus remembers every stream
//! it declared and declares them again when it reconnects, and when a durable publish
//! finds its stream missing: a memory-only stream does not outlive a server restart,
//! and without this every durable publish to it would fail until the process
//! restarted. A stream declared again starts a new epoch ([`StreamBounds::epoch`]).
//! While the connection is down,
//! every operation that needs the server fails fast with [`BusError::Unavailable`]
//! instead of queueing, and every request is bounded by
//! [`NatsBusOptions::request_timeout`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer, context, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::subject::{
    SubjectPattern, parse_stream_subjects, validate_stream_name, validate_subject,
};
use crate::{Bus, BusError, DurableStream, Message, StreamBounds, Subscription};

/// Settings of a [`NatsBus`] connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsBusOptions {
    /// How long the first connection may take before `connect` gives up.
    pub connect_timeout: Duration,
    /// Upper bound on every request: publish acknowledgements, stream and consumer
    /// management, readiness checks. Keeps a stalled server from hanging callers.
    pub request_timeout: Duration,
    /// Longest pause between reconnection attempts; attempts never stop.
    pub max_reconnect_delay: Duration,
    /// Messages the client buffers per subscription before it drops new ones for that
    /// slow subscriber (reported in the log as a slow consumer).
    pub subscription_capacity: usize,
    /// Name the connection shows in the server's monitoring.
    pub client_name: String,
    /// How long one pull request of a replay waits on the server. The server sends idle
    /// heartbeats at half this interval and the client recreates a replay's consumer after
    /// two missed ones, so this bounds how long a replay takes to resume after the server
    /// comes back. Below a few seconds it costs a request per replay that often.
    pub replay_pull_expiry: Duration,
}

impl Default for NatsBusOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_reconnect_delay: Duration::from_millis(500),
            subscription_capacity: 64 * 1024,
            client_name: "onair".to_owned(),
            replay_pull_expiry: Duration::from_secs(10),
        }
    }
}

/// The JetStream account-info request, the cheapest question JetStream answers.
const JETSTREAM_INFO_SUBJECT: &str = "$JS.API.INFO";

/// First pause between reconnection attempts; doubles up to the configured maximum.
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(50);

/// How often the bus tries to declare its streams again after a reconnect, and how
/// long it waits between tries: a restarted server may take a moment before
/// JetStream answers.
const REDECLARE_ATTEMPTS: u32 = 20;
const REDECLARE_PAUSE: Duration = Duration::from_millis(100);

/// The streams this bus declared, by JetStream name, as they were declared last.
type Declared = Mutex<HashMap<String, stream::Config>>;

/// The bus backed by a NATS server with JetStream. Cheap to clone; clones share the
/// connection.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// `"{prefix}."`, or empty without a prefix; prepended to every subject.
    subject_prefix: String,
    /// `"{PREFIX}_"`, or empty; prepended to every stream name.
    stream_prefix: String,
    /// The server URL without credentials, for error messages.
    server: String,
    options: NatsBusOptions,
    /// Every stream declared through this bus, to declare again when the server
    /// lost it.
    declared: Arc<Declared>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("server", &self.server)
            .field("subject_prefix", &self.subject_prefix)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Connects with default options. `prefix` namespaces every subject and stream name
    /// (`""` for none); it must be a valid subject such as `onair` or `onair.prod`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BusError> {
        Self::connect_with(url, prefix, NatsBusOptions::default()).await
    }

    /// Connects with explicit options. Fails fast, naming the URL, if the server cannot
    /// be reached now; after that the client reconnects on its own.
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        options: NatsBusOptions,
    ) -> Result<Self, BusError> {
        if !prefix.is_empty() {
            validate_subject(prefix).map_err(|err| {
                BusError::InvalidSubject(format!("nats prefix {prefix:?} is unusable: {err}"))
            })?;
        }
        let server = redact_credentials(url);
        let max_reconnect_delay = options.max_reconnect_delay;
        let events_server = server.clone();
        let (reconnected, reconnects) = tokio::sync::mpsc::unbounded_channel::<()>();
        let connect_options = async_nats::ConnectOptions::new()
            .name(&options.client_name)
            .connection_timeout(options.connect_timeout)
            .request_timeout(Some(options.request_timeout))
            .subscription_capacity(options.subscription_capacity)
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                reconnect_delay(attempts, max_reconnect_delay)
            })
            .event_callback(move |event| {
                let server = events_server.clone();
                if matches!(event, async_nats::Event::Connected) {
                    // Nobody listening only means the bus is gone.
                    let _ = reconnected.send(());
                }
                async move { log_connection_event(&server, event) }
            });
        // The client's own timeout covers the TCP connect; this one also covers DNS and
        // the protocol handshake.
        let connecting = connect_options.connect(url);
        let client = match tokio::time::timeout(options.connect_timeout, connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => {
                return Err(BusError::Unavailable(format!(
                    "cannot connect to nats at {server}: {err}"
                )));
            }
            Err(_elapsed) => {
                return Err(BusError::Unavailable(format!(
                    "cannot connect to nats at {server}: no answer within {:?}",
                    options.connect_timeout
                )));
            }
        };
        let jetstream = context::ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(client.clone());
        let (subject_prefix, stream_prefix) = if prefix.is_empty() {
            (String::new(), String::new())
        } else {
            (
                format!("{prefix}."),
                format!("{}_", stream_name_part(prefix)),
            )
        };
        tracing::info!(server = %server, prefix, "connected to nats");
        let declared = Arc::new(Declared::default());
        tokio::spawn(redeclare_on_reconnect(
            Arc::downgrade(&declared),
            jetstream.clone(),
            server.clone(),
            reconnects,
        ));
        Ok(Self {
            client,
            jetstream,
            subject_prefix,
            stream_prefix,
            server,
            options,
            declared,
        })
    }

    /// The JetStream name of a bus stream (prefix included), for operators looking at
    /// the server and for tests cleaning up after themselves.
    pub fn jetstream_stream_name(&self, stream: &str) -> String {
        format!("{}{stream}", self.stream_prefix)
    }

    /// Deletes a durable stream and everything in it. Not part of [`Bus`]: services
    /// never delete their history; operators and tests do.
    pub async fn delete_stream(&self, stream: &str) -> Result<(), BusError> {
        validate_stream_name(stream)?;
        self.ensure_connected()?;
        let name = self.jetstream_stream_name(stream);
        let deleting = self.jetstream.delete_stream(&name);
        match self.bounded("deleting a stream", deleting).await? {
            Ok(_status) => Ok(()),
            Err(err) => match err.kind() {
                context::DeleteStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Err(BusError::UnknownStream(stream.to_owned()))
                }
                _ => Err(BusError::Rejected(format!(
                    "cannot delete stream {stream:?}: {err}"
                ))),
            },
        }
    }

    fn prefixed(&self, subject: &str) -> String {
        format!("{}{subject}", self.subject_prefix)
    }

    /// Fails fast while disconnected: otherwise the client would queue the request and
    /// might deliver it long after the caller was told it failed.
    fn ensure_connected(&self) -> Result<(), BusError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            State::Pending | State::Disconnected => Err(self.unavailable("not connected")),
        }
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> BusError {
        BusError::Unavailable(format!("nats at {}: {reason}", self.server))
    }

    /// Bounds a request by the configured timeout, on top of the client's own timeouts,
    /// so no code path can hang.
    async fn bounded<T>(
        &self,
        what: &str,
        request: impl Future<Output = T>,
    ) -> Result<T, BusError> {
        tokio::time::timeout(self.options.request_timeout, request)
            .await
            .map_err(|_elapsed| {
                self.unavailable(format!(
                    "{what} got no answer within {:?}",
                    self.options.request_timeout
                ))
            })
    }
}

/// Declares the bus's streams again each time the connection is (re)established,
/// until the bus is dropped. Streams on disk are still there and the declaration
/// changes nothing; a memory-only stream the server lost is created anew.
async fn redeclare_on_reconnect(
    declared: Weak<Declared>,
    jetstream: jetstream::Context,
    server: String,
    mut reconnects: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    while reconnects.recv().await.is_some() {
        let Some(declared) = declared.upgrade() else {
            return;
        };
        let configs: Vec<stream::Config> = lock(&declared).values().cloned().collect();
        drop(declared);
        declare_streams(&jetstream, configs, &server, REDECLARE_ATTEMPTS).await;
    }
}

/// Declares `configs` (again), trying each up to `attempts` times; whether
/// all of them are declared now. The context bounds every request by the
/// bus's request timeout.
async fn declare_streams(
    jetstream: &jetstream::Context,
    configs: Vec<stream::Config>,
    server: &str,
    attempts: u32,
) -> bool {
    let mut all = true;
    for config in configs {
        let name = config.name.clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match jetstream.create_or_update_stream(config.clone()).await {
                Ok(_info) => {
                    tracing::info!(server, stream = %name, "declared a stream again");
                    break;
                }
                Err(error) if attempt < attempts => {
                    tracing::debug!(server, stream = %name, error = %error, "cannot declare a stream again yet");
                    tokio::time::sleep(REDECLARE_PAUSE).await;
                }
                Err(error) => {
                    tracing::warn!(server, stream = %name, error = %error, "cannot declare a stream again; the next durable publish to it tries again");
                    all = false;
                    break;
                }
            }
        }
    }
    all
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A stream's creation time as its epoch, in microseconds since the Unix epoch.
fn epoch_of(info: &stream::Info) -> u64 {
    let micros = info.created.unix_timestamp_nanos() / 1_000;
    u64::try_from(micros).unwrap_or(0)
}

/// Strips the prefix the bus added, so users see the subjects they used.
fn strip_prefix(subject_prefix: &str, subject: &str) -> String {
    subject
        .strip_prefix(subject_prefix)
        .unwrap_or(subject)
        .to_owned()
}

/// Makes a prefix usable inside a JetStream name, which may not contain `.`, `*`, `>`
/// or whitespace: uppercase, with anything but letters, digits, `-` and `_` turned into `_`.
fn stream_name_part(prefix: &str) -> String {
    prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn reconnect_delay(attempts: usize, max_delay: Duration) -> Duration {
    let exponent = u32::try_from(attempts.min(16)).unwrap_or(16);
    FIRST_RECONNECT_DELAY
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(max_delay)
}

fn log_connection_event(server: &str, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => tracing::info!(server, "nats connection (re)established"),
        async_nats::Event::Disconnected => {
            tracing::warn!(server, "nats connection lost; reconnecting")
        }
        async_nats::Event::SlowConsumer(subscription) => tracing::warn!(
            server,
            subscription,
            "nats subscriber is too slow; the client is dropping messages for it"
        ),
        other => tracing::info!(server, event = %other, "nats connection event"),
    }
}

/// Drops the `user:password@` part of a URL so it never reaches a log or an error.
fn redact_credentials(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let host_part = match rest.rsplit_once('@') {
        Some((_credentials, host)) => format!("***@{host}"),
        None => rest.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{host_part}"),
        None => host_part,
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        validate_subject(subject)?;
        self.check_payload(&payload)?;
        self.ensure_connected()?;
        let size = payload.len();
        let publishing = self.client.publish(self.prefixed(subject), payload);
        match self.bounded("publishing", publishing).await? {
            Ok(()) => Ok(()),
            Err(err) => Err(match err.kind() {
                async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                    self.payload_too_large(size)
                }
                async_nats::client::PublishErrorKind::InvalidSubject => {
                    BusError::InvalidSubject(format!("nats refused subject {subject:?}: {err}"))
                }
                async_nats::client::PublishErrorKind::Send => self.unavailable(err),
            }),
        }
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        let parsed = SubjectPattern::parse(pattern)?;
        // Allowed while disconnected: the client sends the subscription on reconnect.
        let subscribing = self.client.subscribe(self.prefixed(parsed.as_str()));
        let subscriber = self
            .bounded("subscribing", subscribing)
            .await?
            .map_err(|err| self.unavailable(format!("cannot subscribe to {pattern:?}: {err}")))?;
        let subject_prefix = self.subject_prefix.clone();
        let messages = subscriber.map(move |message| Message {
            subject: strip_prefix(&subject_prefix, message.subject.as_str()),
            payload: message.payload,
            sequence: None,
        });
        Ok(Subscription::from_stream(messages))
    }

    async fn ensure_stream(&self, declaration: &DurableStream) -> Result<(), BusError> {
        let name = declaration.name.as_str();
        parse_stream_subjects(name, &declaration.subjects)?;
        self.ensure_connected()?;
        let config = stream::Config {
            name: self.jetstream_stream_name(name),
            subjects: declaration
                .subjects
                .iter()
                .map(|subject| self.prefixed(subject))
                .collect(),
            storage: if declaration.limits.memory_only {
                stream::StorageType::Memory
            } else {
                stream::StorageType::File
            },
            max_messages: declaration
                .limits
                .max_messages
                .map_or(-1, |max| i64::try_from(max).unwrap_or(i64::MAX)),
            max_age: declaration.limits.max_age.unwrap_or_default(),
            ..Default::default()
        };
        let declaring = self.jetstream.create_or_update_stream(config.clone());
        match self.bounded("declaring a stream", declaring).await? {
            Ok(_info) => {
                tracing::debug!(stream = name, subjects = ?declaration.subjects, "durable stream declared");
                lock(&self.declared).insert(config.name.clone(), config);
                Ok(())
            }
            Err(err) => Err(match err.kind() {
                context::CreateStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_SUBJECT_OVERLAP =>
                {
                    BusError::InvalidStream(format!(
                        "subjects of stream {name:?} overlap those of another stream: each subject may belong to one stream only"
                    ))
                }
                context::CreateStreamErrorKind::JetStream(js) => {
                    BusError::InvalidStream(format!("nats refused stream {name:?}: {js}"))
                }
                context::CreateStreamErrorKind::TimedOut => {
                    self.unavailable(format!("declaring stream {name:?} timed out"))
                }
                context::CreateStreamErrorKind::JetStreamUnavailable => {
                    self.unavailable("jetstream is not enabled on the server")
                }
                _ => self.unavailable(format!("cannot declare stream {name:?}: {err}")),
            }),
        }
    }

    async fn publish_durable(&self, subject: &str, payload: Bytes) -> Result<u64, BusError> {
        validate_subject(subject)?;
        self.check_payload(&payload)?;
        self.ensure_connected()?;
        let ack = match self
            .durable_publish_attempt(subject, payload.clone())
            .await?
        {
            Err(err) if err.kind() == context::PublishErrorKind::StreamNotFound => {
                // The server lost the stream (a memory-only stream after a restart):
                // declare what this bus declared again and try once more.
                if self.declare_again().await {
                    self.durable_publish_attempt(subject, payload.clone())
                        .await?
                } else {
                    Err(err)
                }
            }
            other => other,
        };
        let size = payload.len();
        match ack {
            Ok(ack) => Ok(ack.sequence),
            Err(err) => Err(match err.kind() {
                context::PublishErrorKind::StreamNotFound => {
                    BusError::NoStreamForSubject(subject.to_owned())
                }
                context::PublishErrorKind::TimedOut | context::PublishErrorKind::BrokenPipe => self
                    .unavailable(format!(
                        "durable publish on {subject:?} not acknowledged: {err}"
                    )),
                context::PublishErrorKind::MaxPayloadExceeded => self.payload_too_large(size),
                _ => BusError::Rejected(format!("durable publish on {subject:?} failed: {err}")),
            }),
        }
    }

    async fn stream_bounds(&self, stream_name: &str) -> Result<StreamBounds, BusError> {
        validate_stream_name(stream_name)?;
        self.ensure_connected()?;
        let getting = self
            .jetstream
            .get_stream(self.jetstream_stream_name(stream_name));
        match self.bounded("looking up a stream", getting).await? {
            Ok(stream) => {
                let info = stream.cached_info();
                let state = &info.state;
                let last = state.last_sequence;
                let first = if state.messages == 0 {
                    last + 1
                } else {
                    state.first_sequence
                };
                Ok(StreamBounds {
                    first,
                    last,
                    epoch: epoch_of(info),
                })
            }
            Err(err) => Err(match err.kind() {
                context::GetStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    BusError::UnknownStream(stream_name.to_owned())
                }
                _ => self.unavailable(format!("cannot look up stream {stream_name:?}: {err}")),
            }),
        }
    }

    async fn replay(
        &self,
        stream_name: &str,
        from_sequence: u64,
        filter: Option<&str>,
    ) -> Result<Subscription, BusError> {
        validate_stream_name(stream_name)?;
        let filter = filter.map(SubjectPattern::parse).transpose()?;
        self.ensure_connected()?;
        let first_sequence = from_sequence.max(1);

        let getting = self
            .jetstream
            .get_stream(self.jetstream_stream_name(stream_name));
        let stream = match self.bounded("looking up a stream", getting).await? {
            Ok(stream) => stream,
            Err(err) => {
                return Err(match err.kind() {
                    context::GetStreamErrorKind::JetStream(js)
                        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                    {
                        BusError::UnknownStream(stream_name.to_owned())
                    }
                    _ => self.unavailable(format!("cannot look up stream {stream_name:?}: {err}")),
                });
            }
        };

        let config = consumer::pull::OrderedConfig {
            filter_subject: filter
                .as_ref()
                .map(|filter| self.prefixed(filter.as_str()))
                .unwrap_or_default(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: first_sequence,
            },
            max_expires: self.options.replay_pull_expiry,
            ..Default::default()
        };
        let creating = stream.create_consumer(config);
        let consumer = match self.bounded("creating a replay consumer", creating).await? {
            Ok(consumer) => consumer,
            Err(err) => {
                return Err(match err.kind() {
                    stream::ConsumerErrorKind::JetStream(js)
                        if js.error_code() == jetstream::ErrorCode::CONSUMER_FILTER_NOT_SUBSET =>
                    {
                        BusError::InvalidSubject(format!(
                            "replay filter {} matches none of the subjects of stream {stream_name:?}",
                            filter
                                .as_ref()
                                .map(SubjectPattern::as_str)
                                .unwrap_or_default()
                        ))
                    }
                    stream::ConsumerErrorKind::JetStream(js) => {
                        BusError::Rejected(format!("cannot replay stream {stream_name:?}: {js}"))
                    }
                    _ => self.unavailable(format!("cannot replay stream {stream_name:?}: {err}")),
                });
            }
        };
        let messages = self
            .bounded("starting a replay", consumer.messages())
            .await?
            .map_err(|err| {
                self.unavailable(format!("cannot replay stream {stream_name:?}: {err}"))
            })?;

        let subject_prefix = self.subject_prefix.clone();
        let replay_stream = stream_name.to_owned();
        // A consumer recreated before it delivered anything starts over from the first
        // message of the stream; skipping what lies before the next expected sequence
        // keeps the replay exactly-once and in order.
        let mut next_expected = first_sequence;
        let messages = messages.filter_map(move |delivery| {
            let message = match delivery {
                Ok(delivered) => match delivered.info() {
                    Ok(info) if info.stream_sequence < next_expected => None,
                    Ok(info) => {
                        next_expected = info.stream_sequence + 1;
                        Some(Message {
                            subject: strip_prefix(&subject_prefix, delivered.subject.as_str()),
                            payload: delivered.payload.clone(),
                            sequence: Some(info.stream_sequence),
                        })
                    }
                    Err(err) => {
                        tracing::warn!(stream = %replay_stream, error = %err, "skipping a replayed message without stream metadata");
                        None
                    }
                },
                // The ordered consumer recreates itself after these; nothing is skipped.
                Err(err) => {
                    tracing::warn!(stream = %replay_stream, error = %err, "replay consumer interrupted; resuming");
                    None
                }
            };
            std::future::ready(message)
        });
        Ok(Subscription::from_stream(messages))
    }

    async fn check(&self) -> Result<(), BusError> {
        self.ensure_connected()?;
        // A JetStream round trip: the server answers and durable streams work. The raw
        // request rather than `query_account`, whose response type no longer parses
        // what a 2.9 server sends.
        let asking = self.client.request(JETSTREAM_INFO_SUBJECT, Bytes::new());
        match self.bounded("the readiness check", asking).await? {
            Ok(_reply) => Ok(()),
            Err(err) => match err.kind() {
                async_nats::client::RequestErrorKind::NoResponders => {
                    Err(self.unavailable("jetstream is not enabled on the server"))
                }
                _ => Err(self.unavailable(format!("jetstream does not answer: {err}"))),
            },
        }
    }
}

impl NatsBus {
    /// One durable publish and its acknowledgement, bounded by the request timeout.
    async fn durable_publish_attempt(
        &self,
        subject: &str,
        payload: Bytes,
    ) -> Result<Result<jetstream::publish::PublishAck, context::PublishError>, BusError> {
        let jetstream = self.jetstream.clone();
        let prefixed = self.prefixed(subject);
        let publishing = async move { jetstream.publish(prefixed, payload).await?.await };
        self.bounded("a durable publish", publishing).await
    }

    /// Declares every stream this bus declared again; whether all of them are there
    /// now.
    async fn declare_again(&self) -> bool {
        let configs: Vec<stream::Config> = lock(&self.declared).values().cloned().collect();
        declare_streams(&self.jetstream, configs, &self.server, 1).await
    }

    /// Rejects payloads above the server's `max_payload` before sending, with the same
    /// error the in-process bus gives.
    fn check_payload(&self, payload: &Bytes) -> Result<(), BusError> {
        let limit = self.client.server_info().max_payload;
        // 0 means the server has not told us (yet); let the server decide.
        if limit > 0 && payload.len() > limit {
            return Err(BusError::PayloadTooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(())
    }

    /// For the rare case the client's own size check fires (the limit changed under us).
    fn payload_too_large(&self, size: usize) -> BusError {
        BusError::PayloadTooLarge {
            size,
            limit: self.client.server_info().max_payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(
            redact_credentials("nats://user:secret@nats.example:4222"),
            "nats://***@nats.example:4222"
        );
        assert_eq!(redact_credentials("127.0.0.1:4222"), "127.0.0.1:4222");
    }

    #[test]
    fn prefixes_become_valid_stream_names() {
        assert_eq!(stream_name_part("onair.prod"), "ONAIR_PROD");
        assert_eq!(stream_name_part("t1a2b"), "T1A2B");
    }

    #[test]
    fn reconnect_delay_is_capped() {
        let max = Duration::from_secs(2);
        assert_eq!(reconnect_delay(0, max), FIRST_RECONNECT_DELAY);
        assert_eq!(reconnect_delay(1_000, max), max);
    }
}
