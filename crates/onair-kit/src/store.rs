//! Relational storage: SQLite in the data directory by default, PostgreSQL at
//! scale. Services write one set of SQL for both through sqlx's `Any` driver, so
//! they bind and read only `i64`, `f64`, `String` and `Vec<u8>` (times as unix
//! milliseconds, booleans as 0/1) and use `$1` placeholders.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row};

use crate::error::{ErrorCode, ServiceError};

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or connected to.
    #[error("cannot open database {url}: {reason}")]
    Open {
        /// The database's URL (its password hidden) or SQLite path.
        url: String,
        /// Why it could not be opened.
        reason: String,
    },
    /// A schema migration failed; it was rolled back.
    #[error("migration {service} v{version} ({description}) failed: {reason}")]
    Migration {
        /// The service whose schema it is.
        service: String,
        /// The migration's version.
        version: i64,
        /// The migration's description.
        description: String,
        /// The database's error.
        reason: String,
    },
    /// The database does not answer, e.g. no connection is free within 5 s;
    /// retrying may help.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Any other database error, reported to callers as internal.
    #[error("database error: {0}")]
    Query(String),
    /// The database refused a value it can't hold (PostgreSQL: a NUL in
    /// text). Services refuse those first; this keeps any that slip through
    /// the caller's mistake, not a server fault.
    #[error("a value of the request cannot be stored: {0}")]
    Unstorable(String),
}

impl ServiceError for StoreError {
    fn error_code(&self) -> ErrorCode {
        match self {
            StoreError::Unavailable(_) => ErrorCode::Unavailable,
            StoreError::Unstorable(_) => ErrorCode::InvalidArgument,
            _ => ErrorCode::Internal,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(error.to_string())
            }
            sqlx::Error::Database(database) if is_unstorable(database.as_ref()) => {
                StoreError::Unstorable(database.message().to_owned())
            }
            other => StoreError::Query(other.to_string()),
        }
    }
}

/// Whether the database refused a value for its characters: PostgreSQL's
/// `character_not_in_repertoire` (22021: `invalid byte sequence for encoding
/// "UTF8": 0x00`) and `untranslatable_character` (22P05).
fn is_unstorable(error: &dyn sqlx::error::DatabaseError) -> bool {
    let by_code = error
        .code()
        .is_some_and(|code| matches!(code.as_ref(), "22021" | "22P05"));
    by_code || error.message().contains("invalid byte sequence")
}

/// Which engine a [`Db`] talks to, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, a file in the data directory.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A pool of connections to the station's database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

/// One step of a service's schema. Versions only grow; an applied version is
/// never run again.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The step's number within its service, recorded once it is applied.
    pub version: i64,
    /// What the step does, in a few words, for logs and errors.
    pub description: &'static str,
    /// Portable SQL, one or more statements.
    pub sql: &'static str,
}

/// How many connections a pool keeps open at most. SQLite has one writer at a
/// time, so more connections only help readers.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
const POSTGRES_MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a free connection before the store reports
/// itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl Db {
    /// Opens (creating if needed) the SQLite file at `path`, in WAL mode.
    pub async fn open_sqlite(path: &Path) -> Result<Db, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| StoreError::Open {
                url: path.display().to_string(),
                reason: error.to_string(),
            })?;
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Db::open_url(&url).await
    }

    /// Opens a `postgres://` or `sqlite:` URL.
    pub async fn open_url(url: &str) -> Result<Db, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let max_connections = match backend {
            Backend::Sqlite => SQLITE_MAX_CONNECTIONS,
            Backend::Postgres => POSTGRES_MAX_CONNECTIONS,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |connection, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; NORMAL sync is
                        // durable across process crashes in WAL mode. A page
                        // cache of up to 32 MiB a connection (SQLite's default
                        // is 2 MiB) keeps the hot b-trees of a busy table in
                        // memory; temporary b-trees (sorts, GROUP BY) stay in
                        // memory too.
                        connection
                            .execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
                                 PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;",
                            )
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(|error| StoreError::Open {
                url: redact_password(url),
                reason: error.to_string(),
            })?;
        Ok(Db { pool, backend })
    }

    /// The connection pool, for running queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which engine the database is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers, for `/readyz`.
    pub async fn check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|error| StoreError::Unavailable(error.to_string()))
    }

    /// Applies the migrations of one service that have not run yet. Several
    /// processes may start at once: on PostgreSQL an advisory lock serialises
    /// them, on SQLite the write transaction does.
    pub async fn migrate(&self, service: &str, migrations: &[Migration]) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await?;
        connection
            .execute(
                "CREATE TABLE IF NOT EXISTS onair_migrations (\
                   service TEXT NOT NULL, version BIGINT NOT NULL, description TEXT NOT NULL, \
                   applied_at_ms BIGINT NOT NULL, PRIMARY KEY (service, version))",
            )
            .await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .execute(&mut *connection)
                .await?;
        }
        let result = apply_pending(&mut connection, service, migrations).await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .execute(&mut *connection)
                .await?;
        }
        result
    }

    /// Closes every connection; pending queries finish first.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The PostgreSQL advisory lock that serialises migrations ("onair" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x006f_6e61_6972;

async fn apply_pending(
    connection: &mut sqlx::pool::PoolConnection<sqlx::Any>,
    service: &str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT version FROM onair_migrations WHERE service = $1")
        .bind(service)
        .fetch_all(&mut **connection)
        .await?;
    let mut applied = Vec::with_capacity(rows.len());
    for row in rows {
        applied.push(row.try_get::<i64, _>("version")?);
    }
    for migration in migrations {
        if applied.contains(&migration.version) {
            continue;
        }
        let failure = |error: sqlx::Error| StoreError::Migration {
            service: service.to_owned(),
            version: migration.version,
            description: migration.description.to_owned(),
            reason: error.to_string(),
        };
        let mut transaction = sqlx::Connection::begin(&mut **connection)
            .await
            .map_err(failure)?;
        sqlx::raw_sql(migration.sql)
            .execute(&mut *transaction)
            .await
            .map_err(failure)?;
        sqlx::query(
            "INSERT INTO onair_migrations (service, version, description, applied_at_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(service)
        .bind(migration.version)
        .bind(migration.description)
        .bind(unix_millis(SystemTime::now()))
        .execute(&mut *transaction)
        .await
        .map_err(failure)?;
        transaction.commit().await.map_err(failure)?;
        tracing::info!(
            service,
            version = migration.version,
            description = migration.description,
            "applied migration"
        );
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, the way times are stored.
pub fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The inverse of [`unix_millis`].
pub fn from_unix_millis(millis: i64) -> SystemTime {
    if millis >= 0 {
        UNIX_EPOCH + Duration::from_millis(millis.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(millis.unsigned_abs())
    }
}

/// A database URL fit for a log line: the password replaced by `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_password("postgres://onair:secret@db:5432/onair"),
            "postgres://onair:***@db:5432/onair"
        );
        assert_eq!(redact_password("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn millis_round_trip() {
        let now = SystemTime::now();
        let millis = unix_millis(now);
        let back = unix_millis(from_unix_millis(millis));
        assert_eq!(millis, back);
    }
}
