//! The whole station, as `onair serve` runs it, started in the test's own
//! process on port 0 with its own data directory and, on PostgreSQL, its own
//! database; and the macro that runs a test on both databases.

use std::path::PathBuf;
use std::time::SystemTime;

use onair::Station;
use onair_kit::clock::Clock;
use onair_kit::config::{Flags, Settings};
use onair_proto::user::v1::user_service_client::UserServiceClient;
use tonic::transport::Channel;

use crate::servers::TestDatabase;

/// The database a station under test keeps its tables in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the station's data directory (the embedded default).
    Sqlite,
    /// A fresh database on the test PostgreSQL server.
    Postgres,
}

/// A running station and what it owns.
pub struct TestStation {
    /// The station; `None` once stopped.
    pub station: Option<Station>,
    /// Its HTTP port: REST, live sockets, HLS, metrics.
    pub http_addr: std::net::SocketAddr,
    /// Its gRPC port.
    pub grpc_addr: std::net::SocketAddr,
    /// Its data directory.
    pub dir: tempfile::TempDir,
    /// The station's clock, which the test moves.
    pub clock: Clock,
    /// The operator's API key.
    pub operator_key: String,
    /// Its PostgreSQL database, dropped after the station.
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
    onair::resolve_settings(&flags, &environment, None).expect("test settings are valid")
}

impl TestStation {
    /// A station with the default settings on `backend`.
    pub async fn start(backend: Backend) -> TestStation {
        let dir = tempfile::tempdir().expect("temp dir");
        TestStation::start_in(backend, dir).await
    }

    /// A station in `dir`: started again in the same dir, it is the same
    /// station restarted.
    pub async fn start_in(backend: Backend, dir: tempfile::TempDir) -> TestStation {
        TestStation::start_configured(backend, dir, &[]).await
    }

    /// A station with more settings, e.g. `("gateway.rate_limit_per_ip", "2")`.
    pub async fn start_with(backend: Backend, extra: &[(&str, &str)]) -> TestStation {
        let dir = tempfile::tempdir().expect("temp dir");
        TestStation::start_configured(backend, dir, extra).await
    }

    /// A station whose bus goes with its backend, as a deployment's would:
    /// on SQLite the embedded bus, on PostgreSQL the local NATS under a
    /// prefix of its own named after `name`, so events cross a real broker.
    pub async fn start_with_its_bus(backend: Backend, name: &str) -> TestStation {
        let prefix = crate::unique_name(name);
        let nats = crate::nats_url();
        let extra: Vec<(&str, &str)> = match backend {
            Backend::Sqlite => Vec::new(),
            Backend::Postgres => vec![("nats_url", nats.as_str()), ("bus_prefix", prefix.as_str())],
        };
        TestStation::start_with(backend, &extra).await
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

    /// A client of the user service on the gRPC port.
    pub async fn user_client(&self) -> UserServiceClient<Channel> {
        UserServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("connect to the gRPC port")
    }

    /// A connected gRPC channel to the station.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("valid URL")
            .connect()
            .await
            .expect("connect to the gRPC port")
    }

    /// `http://<http port><path>`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http_addr, path)
    }

    /// Stops the station cleanly and hands back its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(station) = self.station.take() {
            station.stop().await.expect("station stops cleanly");
        }
        self.dir
    }
}

/// The operator key a station wrote at `path`.
pub fn read_operator_key(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .expect("operator.key exists")
        .trim()
        .to_owned()
}

/// Where a test's helper files live.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs async test bodies on both databases: for each `name`, a module with
/// the tests `sqlite` and `postgres` that call `name(Backend)`. Start the list
/// with `multi_thread;` for a runtime of 4 worker threads.
#[macro_export]
macro_rules! on_both_backends {
    (multi_thread; $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await;
                }
            }
        )*
    };
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await;
                }
            }
        )*
    };
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
