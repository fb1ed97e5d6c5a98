//! The user service's gRPC implementation.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use onair_kit::abuse::{
    AddressLimiter, AddressRate, TrustedPeers, address_key, client_address, whole_seconds,
};
use onair_kit::auth::{
    AccessClaims, AuthError, Authenticator, Caller, CredentialSource, Standing, TOKEN_ISSUER,
};
use onair_kit::bus::SharedBus;
use onair_kit::clock::{Clock, timestamp_from_millis};
use onair_kit::config::{ConfigError, Key, Section, Settings, positive, positive_seconds};
use onair_kit::error::RetryLater;
use onair_kit::events::{self, Announcement as _, OpsEvent, USER_CHANGED, UserChanged};
use onair_kit::rate::{RedisRates, SharedBuckets};
use onair_proto::user::v1 as pb;
use onair_proto::user::v1::user_service_server::UserService;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::cache::{USER_CACHE_CAPACITY, UserCache};
use crate::display_name::DisplayName;
use crate::error::UserError;
use crate::keys::KeyRing;
use crate::store::{BanRecord, CredentialKind, RefreshTokenState, UserRecord, UserStore};

/// The most ids one BatchGetUsers call may ask for.
pub const MAX_BATCH_GET_USERS: usize = 1000;
/// A new user's trust score.
pub const INITIAL_TRUST_SCORE: i32 = 50;
/// The id of the operator account created on first start.
pub const OPERATOR_USER_ID: &str = "operator";
/// How often the key ring re-reads the stored keys.
const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// What the user service needs to know about the station.
#[derive(Debug, Clone)]
pub struct UserServiceSettings {
    /// How long an access token is valid (`user.access_token_ttl_seconds`).
    pub access_token_ttl: Duration,
    /// How long a signing key signs before a new one replaces it
    /// (`user.signing_key_rotation_hours`).
    pub signing_key_rotation: Duration,
    /// Where the operator key is written on first start.
    pub data_dir: PathBuf,
    /// How long a user read from the store is trusted without news from the
    /// bus (`user.cache_ms`): the bound on how late a role change or a ban
    /// reaches a process that missed the news.
    pub user_cache_ttl: Duration,
    /// New accounts one client address may create (`user.accounts_*`).
    pub accounts_per_ip: AddressRate,
    /// Whose word on a client's address is believed (`rpc.trusted_peers`).
    pub trusted_peers: TrustedPeers,
}

impl Section for UserServiceSettings {
    const KEYS: &'static [Key] = &[
        Key::with_default("user.access_token_ttl_seconds", "3600"),
        Key::with_default("user.signing_key_rotation_hours", "720"),
        Key::with_default("user.accounts_per_ip_per_minute", "10"),
        Key::with_default("user.accounts_burst_per_ip", "30"),
    ];

    fn read(settings: &Settings) -> Result<Self, ConfigError> {
        let layers = settings.layers();
        Ok(UserServiceSettings {
            access_token_ttl: layers.required(
                "user.access_token_ttl_seconds",
                "a whole number of seconds",
                positive_seconds,
            )?,
            signing_key_rotation: layers.required(
                "user.signing_key_rotation_hours",
                "a whole number of hours",
                |value| positive(value).map(|hours| Duration::from_secs(hours * 3600)),
            )?,
            data_dir: settings.data_dir.clone(),
            user_cache_ttl: settings.user_cache,
            accounts_per_ip: layers.address_rate(
                "user.accounts_per_ip_per_minute",
                "user.accounts_burst_per_ip",
            )?,
            trusted_peers: settings.trusted_peers.clone(),
        })
    }
}

/// The user service.
#[derive(Clone)]
pub struct UserServiceImpl {
    inner: Arc<Inner>,
}

struct Inner {
    store: UserStore,
    keys: KeyRing,
    settings: UserServiceSettings,
    clock: Clock,
    authenticator: Authenticator,
    /// Carries operational events and cache evictions to other processes.
    bus: SharedBus,
    cache: Arc<UserCache>,
    /// Accounts made lately, by client address.
    new_accounts: Option<SharedBuckets<IpAddr>>,
}

/// Lets the user service authenticate its own callers from its own keys and
/// tables, without calling itself.
struct LocalCredentials {
    store: UserStore,
    keys: KeyRing,
    /// The service's own cache of users: a caller's standing costs a lookup
    /// here, and a store read only when the cache has none.
    cache: Arc<UserCache>,
    clock: Clock,
}

impl LocalCredentials {
    async fn standing_of(&self, user_id: &str) -> Result<Option<Standing>, AuthError> {
        let user = self
            .cache
            .get_or_load(&self.store, user_id)
            .await
            .map_err(|error| AuthError::Unavailable(error.to_string()))?;
        Ok(user.map(|user| standing_of(&user, self.clock.now_ms())))
    }
}

#[async_trait::async_trait]
impl CredentialSource for LocalCredentials {
    async fn jwks(&self) -> Result<pb::Jwks, AuthError> {
        Ok(self.keys.jwks())
    }

    async fn resolve_api_key(&self, api_key: &str) -> Result<Standing, AuthError> {
        let owner = self
            .store
            .credential_owner(&hash_secret(api_key), CredentialKind::ApiKey)
            .await
            .map_err(|error| AuthError::Unavailable(error.to_string()))?;
        let Some(user_id) = owner else {
            return Err(AuthError::UnknownApiKey);
        };
        self.standing_of(&user_id)
            .await?
            .ok_or(AuthError::UnknownApiKey)
    }

    async fn standing(&self, user_id: &str, _access_token: &str) -> Result<Standing, AuthError> {
        self.standing_of(user_id)
            .await?
            .ok_or_else(|| AuthError::InvalidToken("the token's user does not exist".to_owned()))
    }
}

/// How a stored user stands at `now_ms`.
fn standing_of(record: &UserRecord, now_ms: i64) -> Standing {
    let banned_until_ms = record
        .ban
        .as_ref()
        .filter(|ban| ban.is_active(now_ms))
        .map(|ban| ban.expire_time_ms.unwrap_or(i64::MAX));
    Standing {
        user_id: record.id.clone(),
        role: role_of(record),
        banned_until_ms,
    }
}

fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn role_of(record: &UserRecord) -> pb::Role {
    pb::Role::try_from(record.role).unwrap_or(pb::Role::Viewer)
}

impl UserServiceImpl {
    /// Opens the service on its store: loads or makes the signing keys, and
    /// on first start creates the operator and writes its key. New accounts
    /// per address are counted in `shared_rates` when given (every replica
    /// alike), else in this process.
    pub async fn start(
        store: UserStore,
        settings: UserServiceSettings,
        clock: Clock,
        bus: SharedBus,
        shared_rates: Option<&RedisRates>,
    ) -> Result<UserServiceImpl, UserError> {
        let keys = KeyRing::load(
            &store,
            settings.access_token_ttl,
            settings.signing_key_rotation,
            clock.now_ms(),
        )
        .await?;
        let cache = Arc::new(UserCache::new(settings.user_cache_ttl, USER_CACHE_CAPACITY));
        let credentials = LocalCredentials {
            store: store.clone(),
            keys: keys.clone(),
            cache: cache.clone(),
            clock: clock.clone(),
        };
        // Other instances of this service announce their changes on the bus.
        let user_changes = bus.subscribe(USER_CHANGED).await.map_err(|error| {
            UserError::Internal(format!("cannot subscribe to user changes: {error}"))
        })?;
        let authenticator = Authenticator::new(Arc::new(credentials), clock.clone())
            .with_user_cache(settings.user_cache_ttl)
            .with_user_changes(user_changes);
        let new_accounts = account_buckets(settings.accounts_per_ip, &clock, shared_rates);
        let service = UserServiceImpl {
            inner: Arc::new(Inner {
                store,
                keys,
                settings,
                clock,
                authenticator,
                bus,
                cache,
                new_accounts,
            }),
        };
        service.ensure_operator().await?;
        Ok(service)
    }

    /// Starts the service's background work: evicting users that other
    /// processes changed, and keeping the key ring in step with the store.
    /// The tasks run until aborted.
    pub async fn spawn_background(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, UserError> {
        let mut changes = self
            .inner
            .bus
            .subscribe(USER_CHANGED)
            .await
            .map_err(|error| {
                UserError::Internal(format!("cannot subscribe to user changes: {error}"))
            })?;
        let service = self.clone();
        let evictions = tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(message) = changes.next().await {
                if let Ok(change) = UserChanged::decode_payload(&message.payload) {
                    service.inner.cache.evict(&change.user_id);
                }
            }
        });
        Ok(vec![evictions, self.spawn_key_refresh()])
    }

    /// Keeps the key ring in step with the store (rotation by time, or by
    /// another process) until the returned task is dropped or aborted.
    fn spawn_key_refresh(&self) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(KEY_REFRESH_INTERVAL);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let inner = &service.inner;
                let refreshed = inner
                    .keys
                    .refresh(
                        &inner.store,
                        inner.settings.access_token_ttl,
                        inner.settings.signing_key_rotation,
                        inner.clock.now_ms(),
                    )
                    .await;
                if let Err(error) = refreshed {
                    tracing::warn!(error = %error, "cannot refresh signing keys");
                }
            }
        })
    }

    /// The tables the service reads and writes.
    pub fn store(&self) -> &UserStore {
        &self.inner.store
    }

    /// Creates the operator account and writes its API key to
    /// `<data-dir>/operator.key` (mode 0600), once per station.
    async fn ensure_operator(&self) -> Result<(), UserError> {
        let now_ms = self.inner.clock.now_ms();
        let operator = UserRecord {
            id: OPERATOR_USER_ID.to_owned(),
            display_name: "Operator".to_owned(),
            role: pb::Role::Operator as i32,
            trust_score: 100,
            create_time_ms: now_ms,
            update_time_ms: now_ms,
            ban: None,
        };
        let key_path = self.inner.settings.data_dir.join("operator.key");
        if !self.inner.store.insert_user(&operator).await? {
            if !key_path.exists() {
                tracing::warn!(path = %key_path.display(), "the operator account exists but its key file is missing; the key cannot be recovered from its hash");
            }
            return Ok(());
        }
        let api_key = new_secret("onair_op_");
        self.inner
            .store
            .insert_credential(
                &hash_secret(&api_key),
                OPERATOR_USER_ID,
                CredentialKind::ApiKey,
                now_ms,
            )
            .await?;
        write_secret_file(&key_path, &api_key).map_err(|error| {
            UserError::Internal(format!("cannot write {}: {error}", key_path.display()))
        })?;
        tracing::info!(path = %key_path.display(), "created the operator account; its API key is in this file");
        Ok(())
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, UserError> {
        Ok(self
            .inner
            .authenticator
            .authenticate(request.metadata())
            .await?)
    }

    async fn user(&self, id: &str) -> Result<UserRecord, UserError> {
        if id.is_empty() {
            return Err(UserError::InvalidArgument("user_id is required".to_owned()));
        }
        self.inner
            .cache
            .get_or_load(&self.inner.store, id)
            .await?
            .ok_or_else(|| UserError::NotFound(id.to_owned()))
    }

    /// Forgets a changed user here and tells the other processes to.
    async fn changed(&self, user_id: &str) {
        self.inner.cache.evict(user_id);
        self.inner.authenticator.forget_user(user_id);
        if let Err(error) = events::announce(
            &self.inner.bus,
            &UserChanged {
                user_id: user_id.to_owned(),
            },
        )
        .await
        {
            tracing::warn!(error = %error, user_id, "cannot announce a user change; other processes see it within their cache time");
        }
    }

    /// Ends a change a moderator or operator made to a user: forgets the old
    /// copy here and in every process, records the change in the ops log and
    /// answers with the user as they are now.
    async fn answer_change(
        &self,
        caller: &Caller,
        user_id: &str,
        kind: &str,
        reason: &str,
        details: serde_json::Value,
    ) -> Result<Response<pb::User>, Status> {
        self.changed(user_id).await;
        self.record(kind, caller, user_id, reason, details).await;
        let user = self.user(user_id).await?;
        Ok(Response::new(self.to_proto(&user, Some(caller))))
    }

    /// Records an operational event about a user.
    async fn record(
        &self,
        kind: &str,
        actor: &Caller,
        target_id: &str,
        reason: &str,
        details: serde_json::Value,
    ) {
        let event = OpsEvent::new(
            kind,
            &actor.user_id,
            target_id,
            reason,
            self.inner.clock.now_ms(),
            details,
        );
        events::record(&self.inner.bus, &event).await;
    }

    /// The user as `caller` may see it: moderation fields (trust score, ban)
    /// only for the user themself and for moderators.
    fn to_proto(&self, record: &UserRecord, caller: Option<&Caller>) -> pb::User {
        let now_ms = self.inner.clock.now_ms();
        let sees_moderation = caller.is_none_or(|caller| {
            caller.user_id == record.id || caller.require(pb::Role::Moderator).is_ok()
        });
        let ban = record
            .ban
            .as_ref()
            .filter(|ban| ban.is_active(now_ms))
            .filter(|_| sees_moderation)
            .map(|ban| pb::Ban {
                create_time: Some(timestamp_from_millis(ban.create_time_ms)),
                expire_time: ban.expire_time_ms.map(timestamp_from_millis),
                reason: ban.reason.clone(),
                moderator_id: ban.moderator_id.clone(),
            });
        pb::User {
            id: record.id.clone(),
            display_name: record.display_name.clone(),
            role: record.role,
            create_time: Some(timestamp_from_millis(record.create_time_ms)),
            update_time: Some(timestamp_from_millis(record.update_time_ms)),
            trust_score: if sees_moderation {
                record.trust_score
            } else {
                0
            },
            ban,
        }
    }

    fn issue_access_token(&self, user: &UserRecord) -> Result<(String, i64), UserError> {
        let now_ms = self.inner.clock.now_ms();
        let ttl_ms =
            i64::try_from(self.inner.settings.access_token_ttl.as_millis()).unwrap_or(i64::MAX);
        let expire_ms = now_ms.saturating_add(ttl_ms);
        let claims = AccessClaims {
            iss: TOKEN_ISSUER.to_owned(),
            sub: user.id.clone(),
            role: role_of(user).as_str_name().to_owned(),
            iat: now_ms / 1000,
            exp: expire_ms / 1000,
        };
        Ok((self.inner.keys.sign(&claims)?, (expire_ms / 1000) * 1000))
    }
}

impl UserServiceImpl {
    /// Refuses a new account from an address that made too many lately, so
    /// that making accounts can't multiply what one person may do.
    /// Moderators and operators (and the operator key) make them freely.
    async fn admit_new_account<T>(&self, request: &Request<T>) -> Result<(), UserError> {
        let Some(address) = client_address(request, &self.inner.settings.trusted_peers) else {
            return Ok(());
        };
        if request.metadata().get("authorization").is_some()
            && let Ok(caller) = self.caller(request).await
            && caller.require(pb::Role::Moderator).is_ok()
        {
            return Ok(());
        }
        let Some(buckets) = &self.inner.new_accounts else {
            return Ok(());
        };
        buckets.take(&address_key(address)).await.map_err(|wait| {
            UserError::Limited(RetryLater {
                message: format!(
                    "too many accounts were made from your network address lately; \
                         try again in {} s, or keep using the account you have \
                         (POST /v1/tokens:refresh renews its token)",
                    whole_seconds(wait)
                ),
                wait,
            })
        })
    }
}

/// The buckets of new accounts per address, at `rate`: in Redis when
/// `shared_rates` is given, else in memory; none when the rate is off.
fn account_buckets(
    rate: AddressRate,
    clock: &Clock,
    shared_rates: Option<&RedisRates>,
) -> Option<SharedBuckets<IpAddr>> {
    if rate.is_off() {
        return None;
    }
    match shared_rates {
        Some(rates) => rates
            .buckets::<IpAddr>("user-accounts", rate, clock)
            .map(|buckets| Arc::new(buckets) as SharedBuckets<IpAddr>),
        None => Some(Arc::new(AddressLimiter::<IpAddr>::new(rate, clock))),
    }
}

/// Writes a secret to a file only its owner can read.
fn write_secret_file(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[tonic::async_trait]
impl UserService for UserServiceImpl {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        self.admit_new_account(&request).await?;
        let request = request.into_inner();
        // No name at all means "make one up"; a blank one is a mistake.
        let display_name = if request.display_name.is_empty() {
            DisplayName::generated()
        } else {
            DisplayName::parse(&request.display_name).map_err(UserError::from)?
        };
        let now_ms = self.inner.clock.now_ms();
        let user = UserRecord {
            id: uuid::Uuid::now_v7().simple().to_string(),
            display_name: display_name.to_string(),
            role: pb::Role::Viewer as i32,
            trust_score: INITIAL_TRUST_SCORE,
            create_time_ms: now_ms,
            update_time_ms: now_ms,
            ban: None,
        };
        if !self
            .inner
            .store
            .insert_user(&user)
            .await
            .map_err(UserError::from)?
        {
            return Err(UserError::Internal("generated user id collided".to_owned()).into());
        }
        let refresh_token = new_secret("onair_rt_");
        self.inner
            .store
            .insert_credential(
                &hash_secret(&refresh_token),
                &user.id,
                CredentialKind::RefreshToken,
                now_ms,
            )
            .await
            .map_err(UserError::from)?;
        let (access_token, expire_ms) = self.issue_access_token(&user)?;
        tracing::info!(user_id = %user.id, "created a viewer");
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(self.to_proto(&user, None)),
            access_token,
            access_token_expire_time: Some(timestamp_from_millis(expire_ms)),
            refresh_token,
        }))
    }

    async fn get_me(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        let user = self.user(&caller.user_id).await?;
        Ok(Response::new(self.to_proto(&user, Some(&caller))))
    }

    async fn update_me(
        &self,
        request: Request<pb::UpdateMeRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let Some(changes) = request.user else {
            return Err(UserError::InvalidArgument(
                "user is required: send the fields to change".to_owned(),
            )
            .into());
        };
        let paths: Vec<String> = match request.update_mask {
            Some(mask) if !mask.paths.is_empty() => mask.paths,
            _ => vec!["display_name".to_owned()],
        };
        for path in &paths {
            match path.as_str() {
                "display_name" | "displayName" => {
                    let name =
                        DisplayName::parse(&changes.display_name).map_err(UserError::from)?;
                    let now_ms = self.inner.clock.now_ms();
                    self.inner
                        .store
                        .update_display_name(&caller.user_id, name.as_str(), now_ms)
                        .await
                        .map_err(UserError::from)?;
                    self.changed(&caller.user_id).await;
                }
                other => {
                    return Err(UserError::InvalidArgument(format!(
                        "field {other:?} cannot be changed here; only display_name can"
                    ))
                    .into());
                }
            }
        }
        let user = self.user(&caller.user_id).await?;
        Ok(Response::new(self.to_proto(&user, Some(&caller))))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        let user = self.user(&request.get_ref().user_id).await?;
        Ok(Response::new(self.to_proto(&user, Some(&caller))))
    }

    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        let caller = self.caller(&request).await?;
        let ids = request.into_inner().user_ids;
        if ids.len() > MAX_BATCH_GET_USERS {
            return Err(UserError::InvalidArgument(format!(
                "asked for {} users; one call may ask for at most {MAX_BATCH_GET_USERS}",
                ids.len()
            ))
            .into());
        }
        // Cached users first; one query for the rest.
        let mut found: HashMap<String, UserRecord> = HashMap::with_capacity(ids.len());
        let mut uncached: Vec<String> = Vec::new();
        for id in &ids {
            if found.contains_key(id.as_str()) {
                continue;
            }
            match self.inner.cache.get(id) {
                Some(user) => {
                    found.insert(id.clone(), user);
                }
                None => uncached.push(id.clone()),
            }
        }
        uncached.sort();
        uncached.dedup();
        let generation = self.inner.cache.generation();
        let fetched = self
            .inner
            .store
            .get_users(&uncached)
            .await
            .map_err(UserError::from)?;
        for user in fetched {
            self.inner.cache.put(user.clone(), generation);
            found.insert(user.id.clone(), user);
        }
        let mut users = Vec::with_capacity(ids.len());
        let mut missing_user_ids = Vec::new();
        for id in &ids {
            match found.get(id) {
                Some(user) => users.push(self.to_proto(user, Some(&caller))),
                None => missing_user_ids.push(id.clone()),
            }
        }
        Ok(Response::new(pb::BatchGetUsersResponse {
            users,
            missing_user_ids,
        }))
    }

    async fn refresh_access_token(
        &self,
        request: Request<pb::RefreshAccessTokenRequest>,
    ) -> Result<Response<pb::AccessToken>, Status> {
        let refresh_token = request.into_inner().refresh_token;
        if refresh_token.is_empty() {
            return Err(UserError::InvalidArgument("refresh_token is required".to_owned()).into());
        }
        let secret_hash = hash_secret(&refresh_token);
        let state = self
            .inner
            .store
            .refresh_token_state(&secret_hash)
            .await
            .map_err(UserError::from)?;
        let replaced = || {
            Status::unauthenticated(
                "this refresh token was replaced after your role changed or you were banned; \
                 use the refreshToken that the refresh which replaced it returned",
            )
        };
        // A token revoked by a role change or a ban is exchanged once more,
        // for one issued after the change: the user keeps their account, and
        // the old token can't be replayed.
        let (user_id, refresh_token) = match state {
            None => {
                return Err(Status::unauthenticated(
                    "unknown refresh token: create a new user with POST /v1/users",
                ));
            }
            Some(RefreshTokenState::Replaced { .. }) => return Err(replaced()),
            Some(RefreshTokenState::Valid { user_id }) => (user_id, refresh_token),
            Some(RefreshTokenState::Revoked { user_id }) => {
                let replacement = new_secret("onair_rt_");
                let exchanged = self
                    .inner
                    .store
                    .replace_revoked_refresh_token(
                        &secret_hash,
                        &hash_secret(&replacement),
                        &user_id,
                        self.inner.clock.now_ms(),
                    )
                    .await
                    .map_err(UserError::from)?;
                if !exchanged {
                    return Err(replaced());
                }
                (user_id, replacement)
            }
        };
        // From the store, not the cache: the token carries the role the user
        // has now, whatever another process's cache last heard.
        let user = self
            .inner
            .store
            .get_user(&user_id)
            .await
            .map_err(UserError::from)?
            .ok_or_else(|| UserError::NotFound(user_id.clone()))?;
        let (access_token, expire_ms) = self.issue_access_token(&user)?;
        Ok(Response::new(pb::AccessToken {
            access_token,
            expire_time: Some(timestamp_from_millis(expire_ms)),
            refresh_token,
        }))
    }

    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        caller
            .require(pb::Role::Operator)
            .map_err(UserError::from)?;
        let request = request.into_inner();
        let role = match pb::Role::try_from(request.role) {
            Ok(pb::Role::Unspecified) | Err(_) => {
                return Err(UserError::InvalidArgument(
                    "role must be VIEWER, MODERATOR or OPERATOR".to_owned(),
                )
                .into());
            }
            Ok(role) => role,
        };
        let user = self.user(&request.user_id).await?;
        if user.id == OPERATOR_USER_ID && role != pb::Role::Operator {
            return Err(UserError::FailedPrecondition(
                "the station's operator account keeps the operator role".to_owned(),
            )
            .into());
        }
        let now_ms = self.inner.clock.now_ms();
        self.inner
            .store
            .update_role(&user.id, role as i32, now_ms)
            .await
            .map_err(UserError::from)?;
        tracing::info!(user_id = %user.id, role = role.as_str_name(), by = %caller.user_id, "changed a user's role");
        let details = serde_json::json!({
            "role": role.as_str_name(),
            "previousRole": role_of(&user).as_str_name(),
        });
        self.answer_change(&caller, &user.id, "user.role_changed", "", details)
            .await
    }

    async fn ban_user(
        &self,
        request: Request<pb::BanUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        caller
            .require(pb::Role::Moderator)
            .map_err(UserError::from)?;
        let request = request.into_inner();
        if request.duration_seconds < 0 {
            return Err(UserError::InvalidArgument(
                "duration_seconds must be 0 (permanent) or a positive number of seconds".to_owned(),
            )
            .into());
        }
        let user = self.user(&request.user_id).await?;
        if user.id == caller.user_id {
            return Err(UserError::FailedPrecondition("you cannot ban yourself".to_owned()).into());
        }
        let target_role = role_of(&user);
        let outranks = caller.role == pb::Role::Operator || target_role == pb::Role::Viewer;
        if !outranks {
            return Err(UserError::PermissionDenied(format!(
                "a {} cannot ban a {}",
                caller.role.as_str_name().to_lowercase(),
                target_role.as_str_name().to_lowercase()
            ))
            .into());
        }
        if user.id == OPERATOR_USER_ID {
            return Err(UserError::FailedPrecondition(
                "the station's operator account cannot be banned: its API key runs the station"
                    .to_owned(),
            )
            .into());
        }
        let now_ms = self.inner.clock.now_ms();
        let expire_time_ms = (request.duration_seconds > 0)
            .then(|| now_ms.saturating_add(request.duration_seconds.saturating_mul(1000)));
        let ban = BanRecord {
            create_time_ms: now_ms,
            expire_time_ms,
            reason: request.reason,
            moderator_id: caller.user_id.clone(),
        };
        self.inner
            .store
            .set_ban(&user.id, Some(&ban), now_ms)
            .await
            .map_err(UserError::from)?;
        tracing::info!(user_id = %user.id, by = %caller.user_id, duration_seconds = request.duration_seconds, "banned a user");
        let details = serde_json::json!({
            "durationSeconds": request.duration_seconds,
            "expireTimeMs": expire_time_ms,
        });
        self.answer_change(&caller, &user.id, "user.banned", &ban.reason, details)
            .await
    }

    async fn unban_user(
        &self,
        request: Request<pb::UnbanUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        caller
            .require(pb::Role::Moderator)
            .map_err(UserError::from)?;
        let user = self.user(&request.get_ref().user_id).await?;
        let now_ms = self.inner.clock.now_ms();
        self.inner
            .store
            .set_ban(&user.id, None, now_ms)
            .await
            .map_err(UserError::from)?;
        tracing::info!(user_id = %user.id, by = %caller.user_id, "lifted a user's ban");
        let details = serde_json::json!({});
        self.answer_change(&caller, &user.id, "user.unbanned", "", details)
            .await
    }

    async fn adjust_trust_score(
        &self,
        request: Request<pb::AdjustTrustScoreRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = self.caller(&request).await?;
        caller
            .require(pb::Role::Moderator)
            .map_err(UserError::from)?;
        let request = request.into_inner();
        if !(-100..=100).contains(&request.delta) {
            return Err(UserError::InvalidArgument(format!(
                "delta {} is out of range; it must be between -100 and 100",
                request.delta
            ))
            .into());
        }
        let user = self.user(&request.user_id).await?;
        let now_ms = self.inner.clock.now_ms();
        self.inner
            .store
            .adjust_trust_score(&user.id, request.delta, now_ms)
            .await
            .map_err(UserError::from)?;
        tracing::info!(user_id = %user.id, delta = request.delta, reason = %request.reason, by = %caller.user_id, "adjusted a trust score");
        let details = serde_json::json!({"delta": request.delta});
        let reason = &request.reason;
        self.answer_change(&caller, &user.id, "user.trust_adjusted", reason, details)
            .await
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::Jwks>, Status> {
        Ok(Response::new(self.inner.keys.jwks()))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKey>, Status> {
        let caller = self.caller(&request).await?;
        caller
            .require(pb::Role::Operator)
            .map_err(UserError::from)?;
        let (kid, create_time_ms) = self
            .inner
            .keys
            .rotate(
                &self.inner.store,
                self.inner.settings.access_token_ttl,
                self.inner.clock.now_ms(),
            )
            .await?;
        self.record(
            "signing_key.rotated",
            &caller,
            &kid,
            "",
            serde_json::json!({}),
        )
        .await;
        Ok(Response::new(pb::SigningKey {
            kid,
            create_time: Some(timestamp_from_millis(create_time_ms)),
        }))
    }

    async fn authenticate_api_key(
        &self,
        request: Request<pb::AuthenticateApiKeyRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let api_key = request.into_inner().api_key;
        if api_key.is_empty() {
            return Err(UserError::InvalidArgument("api_key is required".to_owned()).into());
        }
        let caller = self
            .inner
            .authenticator
            .authenticate_credential(&api_key)
            .await
            .map_err(UserError::from)?;
        let user = self.user(&caller.user_id).await?;
        Ok(Response::new(self.to_proto(&user, Some(&caller))))
    }
}
