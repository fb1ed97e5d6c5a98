//! Both buses as fixtures for the bus's own tests: the in-process bus with
//! durable streams in a fresh directory, and NATS on the shared test server
//! under a fresh prefix, cleaned up afterwards.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use onair_bus::{InProcessBus, Message, NatsBus, NatsBusOptions, SharedBus, Subscription};

use crate::PATIENCE;
use crate::servers::{nats_url, unique_name};

/// The next message of a subscription; fails the test if none comes within [`PATIENCE`]
/// (a hang would otherwise be the failure).
pub async fn next_message(subscription: &mut Subscription) -> Message {
    match tokio::time::timeout(PATIENCE, subscription.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("subscription ended unexpectedly"),
        Err(_elapsed) => panic!("no message arrived within {PATIENCE:?}"),
    }
}

/// Awaits a bus operation that must finish (successfully or not) rather than hang.
pub async fn within_patience<T>(what: &str, operation: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, operation).await {
        Ok(value) => value,
        Err(_elapsed) => panic!("{what} hung for {PATIENCE:?}"),
    }
}

/// Options for tests: short timeouts so failure paths finish quickly.
pub fn quick_nats_options() -> NatsBusOptions {
    NatsBusOptions {
        request_timeout: Duration::from_secs(2),
        max_reconnect_delay: Duration::from_millis(250),
        replay_pull_expiry: Duration::from_secs(2),
        ..NatsBusOptions::default()
    }
}

/// A bus under test plus whatever must live (and be cleaned up) with it.
pub struct Fixture {
    /// The bus under test.
    pub bus: SharedBus,
    nats: Option<NatsBus>,
    _durable_dir: Option<tempfile::TempDir>,
}

impl Fixture {
    /// An in-process bus with durable streams in a fresh directory.
    pub async fn in_process() -> Self {
        let durable_dir = tempfile::tempdir().expect("create a temporary durable directory");
        let bus = InProcessBus::new(Some(durable_dir.path().to_owned()));
        Self {
            bus: Arc::new(bus),
            nats: None,
            _durable_dir: Some(durable_dir),
        }
    }

    /// A NATS bus on the shared test server, under a fresh prefix. Fails (never skips)
    /// when the server is not reachable: NATS is part of what CI must test.
    pub async fn nats() -> Self {
        let url = nats_url();
        let bus = match NatsBus::connect_with(&url, &unique_name("t"), quick_nats_options()).await {
            Ok(bus) => bus,
            Err(err) => panic!(
                "the NATS tests need a NATS server with JetStream at {url} (set ONAIR_TEST_NATS_URL): {err}"
            ),
        };
        Self {
            bus: Arc::new(bus.clone()),
            nats: Some(bus),
            _durable_dir: None,
        }
    }

    /// Deletes what the test left on the shared NATS server.
    pub async fn cleanup(self) {
        if let Some(bus) = &self.nats {
            delete_streams_under_prefix(bus).await;
        }
    }
}

/// Deletes every JetStream stream that belongs to this bus's prefix.
pub async fn delete_streams_under_prefix(bus: &NatsBus) {
    let stream_prefix = bus.jetstream_stream_name("");
    let client = async_nats::connect(nats_url())
        .await
        .expect("connect to clean up streams");
    let jetstream = async_nats::jetstream::new(client);
    let mut names = jetstream.stream_names();
    let mut ours = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.expect("list streams");
        if name.starts_with(&stream_prefix) {
            ours.push(name);
        }
    }
    for name in ours {
        jetstream
            .delete_stream(&name)
            .await
            .expect("delete a test stream");
    }
}
