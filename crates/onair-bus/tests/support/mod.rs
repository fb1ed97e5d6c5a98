//! Helpers shared by the bus tests: fixtures for both buses, bounded polling, and a
//! `nats-server` process the test owns.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use onair_bus::{InProcessBus, Message, NatsBus, NatsBusOptions, SharedBus, Subscription};
use tokio::time::Instant;

/// How long any "eventually" condition may take before the test fails. Generous,
/// because a noisy 2-core CI machine can stall for seconds; polling returns as soon as
/// the condition holds, so passing runs never wait this long.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Pause between polls of an "eventually" condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Where the shared NATS server of the test machine listens.
pub fn nats_url() -> String {
    std::env::var("ONAIR_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A prefix no other test run uses, so tests can share one NATS server.
pub fn unique_prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// Polls `condition` until it holds; fails the test after [`PATIENCE`].
pub async fn assert_eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting until {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Retries `attempt` until it succeeds and returns its value; fails the test with the
/// last error after [`PATIENCE`].
pub async fn eventually_ok<T, E, F, Fut>(what: &str, mut attempt: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        let error = match attempt().await {
            Ok(value) => return value,
            Err(error) => error,
        };
        assert!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting until {what}; last error: {error:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

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
        let bus = match NatsBus::connect_with(&url, &unique_prefix(), quick_nats_options()).await {
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

/// A free TCP port on 127.0.0.1 (free when asked; good enough for a test server).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener
        .local_addr()
        .expect("read the bound address")
        .port()
}

/// The Debian package's path; override with ONAIR_TEST_NATS_SERVER.
fn nats_server_binary() -> PathBuf {
    std::env::var_os("ONAIR_TEST_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// A `nats-server` child process with JetStream, killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store_dir: PathBuf,
}

impl NatsServer {
    pub fn start(port: u16, store_dir: &Path) -> Self {
        let binary = nats_server_binary();
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        Self {
            child: Some(child),
            port,
            store_dir: store_dir.to_owned(),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and store directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        *self = Self::start(self.port, &self.store_dir);
    }

    /// Stops the server the way an orchestrator does (SIGTERM, so JetStream flushes its
    /// store) and waits until the process is gone.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if child.try_wait().expect("poll nats-server").is_some() {
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nats-server ignored SIGTERM for {PATIENCE:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
