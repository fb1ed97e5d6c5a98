//! The user service's tables, on SQLite or PostgreSQL.

use onair_kit::store::{Db, Migration, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;

/// The user service's schema, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "users, credentials and signing keys",
        sql: "CREATE TABLE users (
            id TEXT PRIMARY KEY,
            display_name TEXT NOT NULL,
            role BIGINT NOT NULL,
            trust_score BIGINT NOT NULL,
            create_time_ms BIGINT NOT NULL,
            update_time_ms BIGINT NOT NULL,
            ban_create_time_ms BIGINT,
            ban_expire_time_ms BIGINT,
            ban_reason TEXT,
            ban_moderator_id TEXT
          );
          CREATE TABLE user_credentials (
            secret_hash TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users (id),
            kind TEXT NOT NULL,
            create_time_ms BIGINT NOT NULL
          );
          CREATE INDEX user_credentials_by_user ON user_credentials (user_id);
          CREATE TABLE signing_keys (
            kid TEXT PRIMARY KEY,
            secret_key TEXT NOT NULL,
            public_key TEXT NOT NULL,
            create_time_ms BIGINT NOT NULL,
            retire_time_ms BIGINT
          );",
    },
    Migration {
        version: 2,
        description: "refresh tokens revoked by a role change or a ban",
        sql: "ALTER TABLE user_credentials ADD COLUMN revoke_time_ms BIGINT;",
    },
];

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Server-assigned and stable; the subject of the user's access tokens.
    pub id: String,
    /// Shown next to the user's comments; valid as a [`crate::display_name::DisplayName`].
    pub display_name: String,
    /// A `Role` of the user contract (viewer, moderator, operator), as its number.
    pub role: i32,
    /// 0 to 100; new viewers start at 50 and comment moderation reads it.
    pub trust_score: i32,
    /// When the user was created, in Unix milliseconds.
    pub create_time_ms: i64,
    /// When the user last changed, in Unix milliseconds.
    pub update_time_ms: i64,
    /// The user's last ban until it is lifted, even once it has expired (see
    /// [`BanRecord::is_active`]).
    pub ban: Option<BanRecord>,
}

/// A ban as stored with its user: who banned them, why, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRecord {
    /// When the ban was made, in Unix milliseconds.
    pub create_time_ms: i64,
    /// None for a permanent ban.
    pub expire_time_ms: Option<i64>,
    /// What the moderator gave as the reason.
    pub reason: String,
    /// The user id of who banned the user.
    pub moderator_id: String,
}

impl BanRecord {
    /// Whether the ban still holds at `now_ms`.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.expire_time_ms.is_none_or(|expire| expire > now_ms)
    }
}

/// What a stored credential lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// Authenticates every request, like an access token that doesn't expire.
    ApiKey,
    /// Only exchanges for access tokens.
    RefreshToken,
    /// A refresh token that a role change or a ban revoked and that was then
    /// exchanged for a new one; kept so that its holder is told so.
    ReplacedRefreshToken,
}

impl CredentialKind {
    fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::RefreshToken => "refresh_token",
            CredentialKind::ReplacedRefreshToken => "replaced_refresh_token",
        }
    }
}

/// What a refresh token stands for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshTokenState {
    /// Exchanges for access tokens of its user's current role.
    Valid {
        /// Whose token it is.
        user_id: String,
    },
    /// Issued before its user's role changed or they were banned: exchanges
    /// once more, for an access token and a new refresh token.
    Revoked {
        /// Whose token it is.
        user_id: String,
    },
    /// Was revoked and has been exchanged for a new one.
    Replaced {
        /// Whose token it was.
        user_id: String,
    },
}

/// A signing key as stored: the Ed25519 secret and public key, base64url.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// The key id that tokens name in their `kid` header and the JWKS lists.
    pub kid: String,
    /// The Ed25519 secret key that signs.
    pub secret_key: String,
    /// The Ed25519 public key that verifies, published in the JWKS.
    pub public_key: String,
    /// When the key was made, in Unix milliseconds; rotation counts from here.
    pub create_time_ms: i64,
    /// When a newer key replaced it as signer; None while it still signs.
    pub retire_time_ms: Option<i64>,
}

/// The user service's data access.
#[derive(Clone, Debug)]
pub struct UserStore {
    db: Db,
}

const USER_COLUMNS: &str = "id, display_name, role, trust_score, create_time_ms, update_time_ms, \
     ban_create_time_ms, ban_expire_time_ms, ban_reason, ban_moderator_id";

fn user_from_row(row: &AnyRow) -> Result<UserRecord, sqlx::Error> {
    let ban_create_time_ms: Option<i64> = row.try_get("ban_create_time_ms")?;
    let ban = match ban_create_time_ms {
        Some(create_time_ms) => Some(BanRecord {
            create_time_ms,
            expire_time_ms: row.try_get("ban_expire_time_ms")?,
            reason: row
                .try_get::<Option<String>, _>("ban_reason")?
                .unwrap_or_default(),
            moderator_id: row
                .try_get::<Option<String>, _>("ban_moderator_id")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    Ok(UserRecord {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        role: i32::try_from(row.try_get::<i64, _>("role")?).unwrap_or_default(),
        trust_score: i32::try_from(row.try_get::<i64, _>("trust_score")?).unwrap_or_default(),
        create_time_ms: row.try_get("create_time_ms")?,
        update_time_ms: row.try_get("update_time_ms")?,
        ban,
    })
}

impl UserStore {
    /// Runs the user service's migrations and returns the store.
    pub async fn open(db: Db) -> Result<UserStore, StoreError> {
        db.migrate("user", MIGRATIONS).await?;
        Ok(UserStore { db })
    }

    /// The database the store runs on.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Inserts a user; returns false when the id is taken.
    pub async fn insert_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO users (id, display_name, role, trust_score, create_time_ms, update_time_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&user.id)
        .bind(&user.display_name)
        .bind(i64::from(user.role))
        .bind(i64::from(user.trust_score))
        .bind(user.create_time_ms)
        .bind(user.update_time_ms)
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// The user with this id, if there is one.
    pub async fn get_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let statement = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref()
            .map(user_from_row)
            .transpose()
            .map_err(StoreError::from)
    }

    /// The users with the given ids, in no particular order; unknown ids are
    /// left out.
    pub async fn get_users(&self, ids: &[String]) -> Result<Vec<UserRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|index| format!("${index}")).collect();
        let statement = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
        for id in ids {
            query = query.bind(id);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        let mut users = Vec::with_capacity(rows.len());
        for row in &rows {
            users.push(user_from_row(row)?);
        }
        Ok(users)
    }

    /// Whether at least one user holds `role`.
    pub async fn any_user_with_role(&self, role: i32) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT id FROM users WHERE role = $1 LIMIT 1")
            .bind(i64::from(role))
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Renames a user; returns false when there is no such user.
    pub async fn update_display_name(
        &self,
        id: &str,
        display_name: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let result =
            sqlx::query("UPDATE users SET display_name = $1, update_time_ms = $2 WHERE id = $3")
                .bind(display_name)
                .bind(now_ms)
                .bind(id)
                .execute(self.db.pool())
                .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Gives a user a role. When that changes their role, the refresh
    /// tokens issued to them until now are revoked in the same transaction,
    /// so that none can be exchanged as if nothing had changed.
    pub async fn update_role(&self, id: &str, role: i32, now_ms: i64) -> Result<bool, StoreError> {
        let mut transaction = self.db.pool().begin().await?;
        let changed = sqlx::query(
            "UPDATE users SET role = $1, update_time_ms = $2 WHERE id = $3 AND role <> $1",
        )
        .bind(i64::from(role))
        .bind(now_ms)
        .bind(id)
        .execute(&mut *transaction)
        .await?;
        if changed.rows_affected() == 1 {
            revoke_refresh_tokens(&mut transaction, id, now_ms).await?;
            transaction.commit().await?;
            return Ok(true);
        }
        let exists = sqlx::query("SELECT id FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *transaction)
            .await?
            .is_some();
        transaction.commit().await?;
        Ok(exists)
    }

    /// Bans a user (`Some`) or lifts their ban (`None`). A ban revokes the
    /// refresh tokens issued to them until now, in the same transaction.
    pub async fn set_ban(
        &self,
        id: &str,
        ban: Option<&BanRecord>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.db.pool().begin().await?;
        let result = sqlx::query(
            "UPDATE users SET ban_create_time_ms = $1, ban_expire_time_ms = $2, ban_reason = $3, \
             ban_moderator_id = $4, update_time_ms = $5 WHERE id = $6",
        )
        .bind(ban.map(|ban| ban.create_time_ms))
        .bind(ban.and_then(|ban| ban.expire_time_ms))
        .bind(ban.map(|ban| ban.reason.clone()))
        .bind(ban.map(|ban| ban.moderator_id.clone()))
        .bind(now_ms)
        .bind(id)
        .execute(&mut *transaction)
        .await?;
        let found = result.rows_affected() == 1;
        if found && ban.is_some() {
            revoke_refresh_tokens(&mut transaction, id, now_ms).await?;
        }
        transaction.commit().await?;
        Ok(found)
    }

    /// Moves a trust score by `delta` within 0..=100 in one statement, so that
    /// concurrent adjustments all count.
    pub async fn adjust_trust_score(
        &self,
        id: &str,
        delta: i32,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE users SET trust_score = \
               CASE WHEN trust_score + $1 < 0 THEN 0 \
                    WHEN trust_score + $1 > 100 THEN 100 \
                    ELSE trust_score + $1 END, \
             update_time_ms = $2 WHERE id = $3",
        )
        .bind(i64::from(delta))
        .bind(now_ms)
        .bind(id)
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Stores a credential by the hash of its secret, so a database leak gives none away.
    pub async fn insert_credential(
        &self,
        secret_hash: &str,
        user_id: &str,
        kind: CredentialKind,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_credentials (secret_hash, user_id, kind, create_time_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(secret_hash)
        .bind(user_id)
        .bind(kind.as_str())
        .bind(now_ms)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// The user a credential belongs to, if it exists and is of the given kind.
    pub async fn credential_owner(
        &self,
        secret_hash: &str,
        kind: CredentialKind,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id FROM user_credentials WHERE secret_hash = $1 AND kind = $2",
        )
        .bind(secret_hash)
        .bind(kind.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|row| row.try_get("user_id")).transpose()?)
    }

    /// What a refresh token stands for, if it was ever issued.
    pub async fn refresh_token_state(
        &self,
        secret_hash: &str,
    ) -> Result<Option<RefreshTokenState>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id, kind, revoke_time_ms FROM user_credentials \
             WHERE secret_hash = $1 AND kind IN ($2, $3)",
        )
        .bind(secret_hash)
        .bind(CredentialKind::RefreshToken.as_str())
        .bind(CredentialKind::ReplacedRefreshToken.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user_id: String = row.try_get("user_id")?;
        let kind: String = row.try_get("kind")?;
        let revoke_time_ms: Option<i64> = row.try_get("revoke_time_ms")?;
        if kind == CredentialKind::ReplacedRefreshToken.as_str() {
            return Ok(Some(RefreshTokenState::Replaced { user_id }));
        }
        if revoke_time_ms.is_some() {
            return Ok(Some(RefreshTokenState::Revoked { user_id }));
        }
        Ok(Some(RefreshTokenState::Valid { user_id }))
    }

    /// Exchanges a revoked refresh token for a new one, once: returns false
    /// when it is not (or no longer) a revoked refresh token, e.g. because a
    /// concurrent exchange won.
    pub async fn replace_revoked_refresh_token(
        &self,
        secret_hash: &str,
        new_secret_hash: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.db.pool().begin().await?;
        let replaced = sqlx::query(
            "UPDATE user_credentials SET kind = $1 \
             WHERE secret_hash = $2 AND user_id = $3 AND kind = $4 AND revoke_time_ms IS NOT NULL",
        )
        .bind(CredentialKind::ReplacedRefreshToken.as_str())
        .bind(secret_hash)
        .bind(user_id)
        .bind(CredentialKind::RefreshToken.as_str())
        .execute(&mut *transaction)
        .await?;
        if replaced.rows_affected() != 1 {
            transaction.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO user_credentials (secret_hash, user_id, kind, create_time_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(new_secret_hash)
        .bind(user_id)
        .bind(CredentialKind::RefreshToken.as_str())
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// Every stored signing key, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, secret_key, public_key, create_time_ms, retire_time_ms \
             FROM signing_keys ORDER BY create_time_ms",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            keys.push(SigningKeyRecord {
                kid: row.try_get("kid")?,
                secret_key: row.try_get("secret_key")?,
                public_key: row.try_get("public_key")?,
                create_time_ms: row.try_get("create_time_ms")?,
                retire_time_ms: row.try_get("retire_time_ms")?,
            });
        }
        Ok(keys)
    }

    /// Stores a new key and retires every other active one, atomically.
    pub async fn rotate_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        let mut transaction = self.db.pool().begin().await?;
        sqlx::query("UPDATE signing_keys SET retire_time_ms = $1 WHERE retire_time_ms IS NULL")
            .bind(key.create_time_ms)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, secret_key, public_key, create_time_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&key.kid)
        .bind(&key.secret_key)
        .bind(&key.public_key)
        .bind(key.create_time_ms)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Deletes keys retired before `before_ms`: every token they signed has expired.
    pub async fn delete_keys_retired_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM signing_keys WHERE retire_time_ms < $1")
            .bind(before_ms)
            .execute(self.db.pool())
            .await?;
        Ok(result.rows_affected())
    }
}

/// Revokes the refresh tokens issued to a user until now.
async fn revoke_refresh_tokens(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE user_credentials SET revoke_time_ms = $1 \
         WHERE user_id = $2 AND kind = $3 AND revoke_time_ms IS NULL",
    )
    .bind(now_ms)
    .bind(user_id)
    .bind(CredentialKind::RefreshToken.as_str())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}
