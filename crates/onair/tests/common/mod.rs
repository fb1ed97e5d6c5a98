//! Builders for real stations in tests: each one on port 0, with its own data
//! directory and, for PostgreSQL, its own database.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use onair::Station;
use onair_kit::clock::Clock;
use onair_kit::config::{Flags, Settings};
use onair_kit::testing::TestDatabase;
use onair_proto::user::v1::user_service_client::UserServiceClient;
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestStation {
    pub station: Option<Station>,
    pub http_addr: std::net::SocketAddr,
    pub grpc_addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    pub clock: Clock,
    pub operator_key: String,
    pub database: Option<TestDatabase>,
}

/// Settings for a test station: port 0, the given data dir and database.
pub fn test_settings(data_dir: &std::path::Path, database_url: Option<&str>) -> Settings {
    test_settings_with(data_dir, database_url, &[])
}

/// Test settings with more keys set, e.g. `("gateway.rate_limit_per_ip", "2")`.
pub fn test_settings_with(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
    extra: &[(&str, &str)],
) -> Settings {
    let mut flags = Flags::default();
    for (key, value) in extra {
        flags.set(key, *value);
    }
    flags
        .set("http", "127.0.0.1:0")
        .set("grpc", "127.0.0.1:0")
        .set("data_dir", data_dir.display().to_string())
        .set("shutdown.grace_seconds", "5")
        .set_opt("database_url", database_url);
    let environment = std::collections::BTreeMap::new();
    Settings::resolve(&flags, &environment, None).expect("test settings are valid")
}

impl TestStation {
    pub async fn start(backend: Backend) -> TestStation {
        let dir = tempfile::tempdir().expect("temp dir");
        TestStation::start_in(backend, dir).await
    }

    pub async fn start_in(backend: Backend, dir: tempfile::TempDir) -> TestStation {
        TestStation::start_configured(backend, dir, &[]).await
    }

    /// A station with more settings, e.g. `("gateway.rate_limit_per_ip", "2")`.
    pub async fn start_with(backend: Backend, extra: &[(&str, &str)]) -> TestStation {
        let dir = tempfile::tempdir().expect("temp dir");
        TestStation::start_configured(backend, dir, extra).await
    }

    /// A station in `dir` with more settings: started again in the same dir,
    /// it is the same station restarted.
    pub async fn start_configured_in(
        backend: Backend,
        dir: tempfile::TempDir,
        extra: &[(&str, &str)],
    ) -> TestStation {
        TestStation::start_configured(backend, dir, extra).await
    }

    async fn start_configured(
        backend: Backend,
        dir: tempfile::TempDir,
        extra: &[(&str, &str)],
    ) -> TestStation {
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create().await),
        };
        let url = database.as_ref().map(|database| database.url.clone());
        let settings = test_settings_with(dir.path(), url.as_deref(), extra);
        let clock = Clock::manual(SystemTime::now());
        let station = Station::start(settings, clock.clone())
            .await
            .expect("station starts");
        let operator_key = read_operator_key(&dir.path().join("operator.key"));
        TestStation {
            http_addr: station.http_addr,
            grpc_addr: station.grpc_addr,
            station: Some(station),
            dir,
            clock,
            operator_key,
            database,
        }
    }

    pub async fn user_client(&self) -> UserServiceClient<Channel> {
        UserServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("connect to the gRPC port")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("valid URL")
            .connect()
            .await
            .expect("connect to the gRPC port")
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http_addr, path)
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(station) = self.station.take() {
            station.stop().await.expect("station stops cleanly");
        }
        self.dir
    }
}

pub fn read_operator_key(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .expect("operator.key exists")
        .trim()
        .to_owned()
}

/// A request with `authorization: Bearer <credential>`.
pub fn authorized<T>(message: T, credential: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {credential}")
        .parse()
        .expect("ascii credential");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Where a test's helper files live.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// Runs one async test body on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// Waits until `condition` holds, checking every millisecond; panics after
/// [`EVENTUALLY`].
pub async fn eventually_true(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the condition did not hold within {EVENTUALLY:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A REST call; returns the status and the JSON body (or the text as a JSON
/// string when it is not JSON).
pub async fn send(
    station: &TestStation,
    method: reqwest::Method,
    path: &str,
    credential: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().request(method, station.http_url(path));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// A live socket's client end.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `ws://…/v1/channels/{channel}/live`, resuming after `after` if given.
pub fn live_url(station: &TestStation, channel: &str, after: Option<u64>) -> String {
    let mut url = format!("ws://{}/v1/channels/{channel}/live", station.http_addr);
    if let Some(after) = after {
        url.push_str(&format!("?after={after}"));
    }
    url
}

pub async fn connect(url: &str) -> Socket {
    let (socket, _response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the live socket accepts the upgrade");
    socket
}

/// The events of the next text message (each is a JSON array); `Err` once
/// the server closed, with its close code.
pub async fn next_events(
    socket: &mut Socket,
) -> Result<
    Vec<serde_json::Value>,
    Option<tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode>,
> {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(EVENTUALLY, socket.next())
            .await
            .expect("the live socket says something");
        match message {
            Some(Ok(Message::Text(text))) => {
                let events: serde_json::Value = serde_json::from_str(text.as_str()).expect("JSON");
                return Ok(events.as_array().expect("an array of events").clone());
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|frame| frame.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// Reads the `ready` event every connection starts with; returns its offset.
pub async fn ready(socket: &mut Socket) -> u64 {
    let events = next_events(socket).await.expect("a ready event");
    assert_eq!(events[0]["type"], "ready", "{events:?}");
    events[0]["offset"].as_u64().expect("an offset")
}

/// The `epoch` of the `ready` event that starts an SSE stream's text.
pub fn ready_epoch(sse_text: &str) -> String {
    let data = sse_text
        .split("\n\n")
        .find(|event| event.contains("event: ready"))
        .and_then(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
        .expect("the stream starts with a ready event");
    let ready: serde_json::Value = serde_json::from_str(data).expect("JSON");
    ready["epoch"].as_str().expect("an epoch").to_owned()
}

/// Unix milliseconds as an RFC 3339 time, as the API takes them.
pub fn rfc3339(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis)
        .expect("a time in range")
        .to_string()
}

/// Creates a channel as the operator.
pub async fn create_channel(station: &TestStation, id: &str) {
    let response = reqwest::Client::new()
        .post(station.http_url("/v1/channels"))
        .bearer_auth(&station.operator_key)
        .json(&serde_json::json!({"id": id, "number": 1, "name": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
}

/// A connection that reads slowly: a tiny receive buffer, so the server's
/// writes back up as soon as it stops reading.
pub async fn connect_small_window(station: &TestStation, url: &str) -> Socket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(station.http_addr).await.unwrap();
    let (socket, _response) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("the live socket accepts the upgrade");
    socket
}

/// A comment for the bus's live events.
pub fn comment(index: usize, body_len: usize) -> onair_proto::comment::v1::Comment {
    onair_proto::comment::v1::Comment {
        id: format!("c{index}"),
        channel_id: "news".to_owned(),
        body: "x".repeat(body_len),
        ..onair_proto::comment::v1::Comment::default()
    }
}

/// Publishes a comment on channel `news` as the comment service would.
pub async fn publish_comment(station: &TestStation, index: usize, body_len: usize) -> u64 {
    let bus = station.station.as_ref().expect("running").bus();
    onair_kit::events::LiveEvent::pack(
        "news",
        onair_kit::events::LiveKind::Comment,
        "onair.comment.v1.Comment",
        &comment(index, body_len),
    )
    .publish(bus)
    .await
    .expect("publish a live event")
}

/// This process's resident memory.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .expect("a number");
    kib * 1024
}

/// A `nats-server` with JetStream that a test owns, on a free port with its
/// own store, so the test may stop and start it; killed when dropped.
pub struct NatsServer {
    child: Option<std::process::Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = NatsServer {
            child: None,
            port,
            store: tempfile::tempdir().expect("a store directory"),
        };
        server.start_again();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the stopped server again on the same port and store.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let binary = std::env::var_os("ONAIR_TEST_NATS_SERVER")
            .unwrap_or_else(|| "/usr/sbin/nats-server".into());
        let child = std::process::Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {binary:?}: {error}"));
        self.child = Some(child);
    }

    /// Stops the server as an orchestrator does (SIGTERM) and waits for it.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        while child.try_wait().expect("poll nats-server").is_none() {
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nats-server ignored SIGTERM for {EVENTUALLY:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
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
