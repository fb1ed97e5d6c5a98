//! The servers tests need and may own: a fresh PostgreSQL database per test
//! on the machine's server, unique names on the shared NATS server, and a
//! `nats-server` of a test's own when it must stop and start the broker.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::Connection;

use crate::PATIENCE;

/// The PostgreSQL server tests use: `ONAIR_TEST_DATABASE_URL`, or the local one.
pub fn postgres_admin_url() -> String {
    std::env::var("ONAIR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The NATS server tests share: `ONAIR_TEST_NATS_URL`, or the local one.
pub fn nats_url() -> String {
    std::env::var("ONAIR_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// The Redis tests share: `ONAIR_TEST_REDIS_URL`, or the local one. Tests
/// keep apart by their bus prefix, which names their keys.
pub fn redis_url() -> String {
    std::env::var("ONAIR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A name no other run uses, e.g. `onair_t_3f2a…`: for databases, bus
/// prefixes and streams, so that concurrent runs never see each other's data.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for a test server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A PostgreSQL database made for one test and dropped with this value.
pub struct TestDatabase {
    /// The database's URL, for the station under test.
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates an empty database on the test server. Panics with a clear message
    /// when the server does not answer: these tests need it.
    pub async fn create() -> TestDatabase {
        let admin_url = postgres_admin_url();
        let name = unique_name("onair_t");
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|error| {
                panic!("PostgreSQL at {admin_url} is needed for this test: {error}")
            });
        // The name is generated here from a UUID, never from input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let url = replace_database(&admin_url, &name);
        TestDatabase {
            url,
            admin_url,
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside and outside runtimes alike, so the cleanup gets a
        // thread and a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await else {
                    return;
                };
                let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut admin),
                )
                .await;
                let _ = admin.close().await;
            });
        });
        let _ = cleanup.join();
    }
}

fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let Some(slash) = base
        .rfind('/')
        .filter(|index| base[..*index].ends_with(|c| c != '/'))
    else {
        return format!("{base}/{database}");
    };
    let mut replaced = format!("{}/{database}", &base[..slash]);
    if let Some(query) = query {
        replaced.push('?');
        replaced.push_str(query);
    }
    replaced
}

/// A `nats-server` with JetStream that a test owns, on a free port with its
/// own store, so the test may stop and start it; killed when dropped. The
/// binary is Debian's (`/usr/sbin/nats-server`) unless
/// `ONAIR_TEST_NATS_SERVER` names another.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port with an empty store.
    pub fn start() -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store: tempfile::tempdir().expect("a store directory"),
        };
        server.start_again();
        server
    }

    /// Where clients reach it.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the stopped server again on the same port and store.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "stop the server before starting it again"
        );
        let binary: PathBuf = std::env::var_os("ONAIR_TEST_NATS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"));
        let child = Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        self.child = Some(child);
    }

    /// Stops the server as an orchestrator does (SIGTERM, so JetStream
    /// flushes its store) and waits until the process is gone.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while child.try_wait().expect("poll nats-server").is_none() {
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nats-server ignored SIGTERM for {PATIENCE:?}");
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

/// A `redis-server` that a test owns, on a free port and keeping nothing
/// on disk, so the test may stop it and start it again; killed when
/// dropped. The binary is Debian's (`/usr/bin/redis-server`) unless
/// `ONAIR_TEST_REDIS_SERVER` names another.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it takes connections.
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
        };
        server.start_again().await;
        server
    }

    /// Where clients reach it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the stopped server again on the same port (empty) and waits
    /// until it takes connections.
    pub async fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "stop the server before starting it again"
        );
        let binary: PathBuf = std::env::var_os("ONAIR_TEST_REDIS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"));
        let child = Command::new(&binary)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        crate::assert_eventually!(
            tokio::net::TcpStream::connect(&address).await.is_ok(),
            "redis-server takes connections on {address}"
        );
    }

    /// Stops the server at once, as a crash would, and waits until the
    /// process is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
