//! Helpers for tests that run against real servers: a fresh PostgreSQL database
//! and unique bus prefixes per run, so that concurrent runs never see each
//! other's data.

use std::time::Duration;

use sqlx::Connection;

/// The PostgreSQL server tests use: `ONAIR_TEST_DATABASE_URL`, or the local one.
pub fn postgres_admin_url() -> String {
    std::env::var("ONAIR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The NATS server tests use: `ONAIR_TEST_NATS_URL`, or the local one.
pub fn nats_url() -> String {
    std::env::var("ONAIR_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A name no other run uses, e.g. `onair_t_3f2a…`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A PostgreSQL database made for one test and dropped with this value.
pub struct TestDatabase {
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

/// Polls `check` until it returns `Some` or the deadline passes; for conditions
/// that become true asynchronously, without fixed sleeps.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= give_up {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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
