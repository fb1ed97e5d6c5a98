//! Who is calling: access tokens (JWTs verified from the user service's JWKS,
//! with no call to it) and API keys (resolved by the user service, briefly
//! cached).
//!
//! A token's role is what the user had when it was issued. A role can be
//! taken away, and a user banned, long before the token expires, so a token
//! that claims more than a viewer's role is checked against what the user
//! service says of the user now: the caller acts with the lower of the two
//! roles, and only as a viewer while banned. That answer is cached per user
//! for a bounded time, and forgotten as soon as `user.changed` says the user
//! changed. Viewer tokens are not looked up: they have nothing to take away,
//! and a banned viewer is refused by the rules of what they try to do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use onair_proto::user::v1::{Jwks, Role};
use serde::{Deserialize, Serialize};

use crate::bus::Subscription;
use crate::clock::{Clock, timestamp_from_millis};
use crate::error::{ErrorCode, ServiceError};
use crate::events::{Announcement as _, UserChanged};

/// The issuer of onair access tokens.
pub const TOKEN_ISSUER: &str = "onair";

/// The claims of an onair access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Who issued the token: always [`TOKEN_ISSUER`] for a token accepted here.
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The role when the token was issued (`VIEWER`, `MODERATOR`, `OPERATOR`).
    pub role: String,
    /// When the token was issued, in Unix seconds.
    pub iat: i64,
    /// When the token expires, in Unix seconds.
    pub exp: i64,
}

/// Why a caller could not be authenticated, or may not do what they asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carries no `authorization` header.
    #[error("missing credentials: send `authorization: Bearer <access token or API key>`")]
    Missing,
    /// The `authorization` header is not `Bearer` followed by a credential.
    #[error("malformed authorization header: expected `Bearer <access token or API key>`")]
    Malformed,
    /// The access token's expiry has passed.
    #[error("access token expired: get a new one with POST /v1/tokens:refresh")]
    Expired,
    /// The access token failed verification; the text says why.
    #[error("invalid access token: {0}")]
    InvalidToken(String),
    /// The user service knows no such API key.
    #[error("unknown API key")]
    UnknownApiKey,
    /// The credential can't be checked now: the user service did not answer,
    /// or answered wrongly; the text says why.
    #[error("cannot verify credentials now: {0}")]
    Unavailable(String),
    /// The caller's role is lower than the action needs.
    #[error("this needs the {needed} role; the caller is a {actual}")]
    Forbidden {
        /// The role the action needs.
        needed: String,
        /// The role the caller acts with.
        actual: String,
    },
    /// The token's role would have sufficed, but the user's role has since
    /// been lowered.

    #[error(
        "your role is now {current}, no longer {issued}, and this needs the {needed} role; \
         sign in again (POST /v1/tokens:refresh) for a token with your current role"
    )]
    RoleChanged {
        /// The role the action needs.
        needed: String,
        /// The role the token was issued with.
        issued: String,
        /// The user's role now.
        current: String,
    },
    /// The user's role would have sufficed, but they are banned and act only
    /// as a viewer.
    #[error(
        "you are banned{until}, and a banned user acts only as a viewer; this needs the {needed} role"
    )]
    Banned {
        /// The role the action needs.
        needed: String,
        /// When the ban ends, as ` until <timestamp>`; empty for a permanent
        /// ban.
        until: String,
    },
}

impl ServiceError for AuthError {
    fn error_code(&self) -> ErrorCode {
        match self {
            AuthError::Unavailable(_) => ErrorCode::Unavailable,
            AuthError::Forbidden { .. }
            | AuthError::RoleChanged { .. }
            | AuthError::Banned { .. } => ErrorCode::PermissionDenied,
            _ => ErrorCode::Unauthenticated,
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        crate::error::into_status(error)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The id of the user the credential belongs to.
    pub user_id: String,
    /// The role the caller acts with: the lower of the credential's and the
    /// user's current one, and viewer while the user is banned.
    pub role: Role,
    /// Why the credential's role was lowered, so that a refusal says so.
    pub lowered: Option<Lowered>,
}

/// Why a caller acts with less than their credential's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lowered {
    /// The token was issued for `issued`; the user's role is now lower.
    RoleChanged {
        /// The role the token was issued with.
        issued: Role,
        /// The user's role now, which the caller acts with.
        current: Role,
    },
    /// The user is banned: their `role` waits for the ban to end.
    Banned {
        /// The role the caller would act with were they not banned.
        role: Role,
        /// When the ban ends (Unix milliseconds); `None` for a permanent ban.
        until_ms: Option<i64>,
    },
}

impl Caller {
    /// A caller acting with exactly `role`.
    pub fn new(user_id: impl Into<String>, role: Role) -> Caller {
        Caller {
            user_id: user_id.into(),
            role,
            lowered: None,
        }
    }

    /// The caller of a credential issued for `issued` (a token's claim, or
    /// the current role for an API key), as the user stands now at `now_ms`.
    pub fn with_standing(issued: Role, standing: &Standing, now_ms: i64) -> Caller {
        let allowed = if role_rank(standing.role) < role_rank(issued) {
            standing.role
        } else {
            issued
        };
        if role_rank(allowed) > role_rank(Role::Viewer) && standing.banned_at(now_ms) {
            let until_ms = standing.banned_until_ms.filter(|until| *until != i64::MAX);
            return Caller {
                user_id: standing.user_id.clone(),
                role: Role::Viewer,
                lowered: Some(Lowered::Banned {
                    role: allowed,
                    until_ms,
                }),
            };
        }
        let lowered = (allowed != issued).then_some(Lowered::RoleChanged {
            issued,
            current: allowed,
        });
        Caller {
            user_id: standing.user_id.clone(),
            role: allowed,
            lowered,
        }
    }

    /// Fails unless the caller has `needed` or a higher role; when the
    /// credential's role would have sufficed, the refusal says what changed.
    pub fn require(&self, needed: Role) -> Result<(), AuthError> {
        if role_rank(self.role) >= role_rank(needed) {
            return Ok(());
        }
        let needed_name = role_display(needed).to_owned();
        match self.lowered {
            Some(Lowered::RoleChanged { issued, current })
                if role_rank(issued) >= role_rank(needed) =>
            {
                Err(AuthError::RoleChanged {
                    needed: needed_name,
                    issued: role_display(issued).to_owned(),
                    current: role_display(current).to_owned(),
                })
            }
            Some(Lowered::Banned { role, until_ms }) if role_rank(role) >= role_rank(needed) => {
                let until = match until_ms {
                    Some(until_ms) => format!(" until {}", timestamp_from_millis(until_ms)),
                    None => String::new(),
                };
                Err(AuthError::Banned {
                    needed: needed_name,
                    until,
                })
            }
            _ => Err(AuthError::Forbidden {
                needed: needed_name,
                actual: role_display(self.role).to_owned(),
            }),
        }
    }
}

/// What the user service says of a user now: the role and the ban that
/// decide what any credential of theirs allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The id of the user.
    pub user_id: String,
    /// The user's role now.
    pub role: Role,
    /// When the user's ban ends, in Unix milliseconds: `i64::MAX` for a
    /// permanent ban, `None` when the user is not banned.
    pub banned_until_ms: Option<i64>,
}

impl Standing {
    /// The standing of a user as the user service returns it to the user
    /// themself (the ban is shown to them and to moderators only).
    pub fn of_user(user: &onair_proto::user::v1::User) -> Standing {
        let banned_until_ms = user.ban.as_ref().map(|ban| match &ban.expire_time {
            Some(expire) => crate::clock::millis_from_timestamp(Some(expire)),
            None => i64::MAX,
        });
        Standing {
            user_id: user.id.clone(),
            role: Role::try_from(user.role).unwrap_or(Role::Viewer),
            banned_until_ms,
        }
    }

    /// Whether a ban is in force at `now_ms`.
    pub fn banned_at(&self, now_ms: i64) -> bool {
        self.banned_until_ms.is_some_and(|until| until > now_ms)
    }
}

fn role_rank(role: Role) -> u8 {
    match role {
        Role::Unspecified => 0,
        Role::Viewer => 1,
        Role::Moderator => 2,
        Role::Operator => 3,
    }
}

fn role_display(role: Role) -> &'static str {
    match role {
        Role::Unspecified => "nobody",
        Role::Viewer => "viewer",
        Role::Moderator => "moderator",
        Role::Operator => "operator",
    }
}

/// The bearer credential of a request's metadata.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<&str, AuthError> {
    let Some(value) = metadata.get("authorization") else {
        return Err(AuthError::Missing);
    };
    let text = value.to_str().map_err(|_| AuthError::Malformed)?;
    let Some((scheme, credential)) = text.split_once(' ') else {
        return Err(AuthError::Malformed);
    };
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(credential)
}

/// Whether a bearer credential is a JWT rather than an API key.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.split('.').count() == 3
}

/// Where a verifier gets keys, resolves API keys and learns how users stand:
/// the user service, locally or over gRPC.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// The public keys that access tokens are signed with.
    async fn jwks(&self) -> Result<Jwks, AuthError>;
    /// The standing of the user an API key belongs to.
    async fn resolve_api_key(&self, api_key: &str) -> Result<Standing, AuthError>;
    /// The standing of `user_id` now, asked with that user's own verified
    /// access token (a user may read their own ban).
    async fn standing(&self, user_id: &str, access_token: &str) -> Result<Standing, AuthError>;
}

/// How long what the user service said of a user (their role and ban) is
/// trusted when no other bound is configured (`user.cache_ms`).
pub const DEFAULT_USER_CACHE_TTL: Duration = Duration::from_secs(1);
/// How many standings and API keys are remembered at most; a bound, not a
/// tuning knob: privileged users and API keys are few.
const STANDING_CACHE_CAPACITY: usize = 100_000;
/// The least time between two JWKS fetches triggered by an unknown `kid`, so
/// that forged tokens can't make every request fetch.
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Verifies credentials for any service, caching the JWKS. Clones share
/// their caches.
#[derive(Clone)]
pub struct Authenticator {
    source: Arc<dyn CredentialSource>,
    /// Decides whether a token has expired, and a ban ended.
    clock: Clock,
    /// How long a user's standing and a resolved API key are trusted
    /// without news from the bus.
    user_cache_ttl: Duration,
    state: Arc<Mutex<VerifierState>>,
}

/// How many verified tokens are remembered. Verifying an Ed25519 signature
/// costs tens of microseconds; a viewer sends the same token for an hour.
const VERIFIED_TOKEN_CACHE_SIZE: usize = 65_536;

#[derive(Default)]
struct VerifierState {
    keys: HashMap<String, DecodingKey>,
    last_fetch: Option<Instant>,
    /// API keys resolved, with their user's standing and when it was read.
    api_keys: HashMap<String, (Standing, Instant)>,
    /// Tokens whose signature has been verified, with their claims; expiry is
    /// still checked on every use.
    verified: HashMap<String, AccessClaims>,
    /// What the user service last said of users whose privileged tokens were
    /// used, and when.
    standings: HashMap<String, (Standing, Instant)>,
    /// Counts forgotten users. A lookup that started before one may have
    /// read the old standing, so it must not be remembered.
    generation: u64,
    /// `user.changed`, drained before any remembered standing is used: a
    /// change announced before its reply was sent is queued here by the time
    /// the caller can act on that reply (at once on the in-process bus; on
    /// NATS, as soon as it arrives).
    user_changes: Option<Subscription>,
    /// Messages the subscription had dropped when last looked at.
    lost_changes: u64,
}

impl VerifierState {
    /// Forgets every user that the bus says changed.
    fn apply_user_changes(&mut self) {
        let Some(changes) = self.user_changes.as_mut() else {
            return;
        };
        let mut changed = Vec::new();
        while let Some(Some(message)) = changes.next().now_or_never() {
            changed.push(message.payload);
        }
        let lost = changes.lost_messages();
        if lost != self.lost_changes {
            self.lost_changes = lost;
            self.standings.clear();
            self.api_keys.clear();
            self.generation += 1;
            return;
        }
        for payload in changed {
            if let Ok(change) = UserChanged::decode_payload(&payload) {
                self.forget_user(&change.user_id);
            }
        }
    }

    fn forget_user(&mut self, user_id: &str) {
        self.generation += 1;
        self.standings.remove(user_id);
        self.api_keys
            .retain(|_, (standing, _)| standing.user_id != user_id);
    }
}

/// Makes room in a full cache: expired entries go first; if that frees
/// nothing, it starts afresh.
fn make_room(entries: &mut HashMap<String, (Standing, Instant)>, ttl: Duration) {
    if entries.len() < STANDING_CACHE_CAPACITY {
        return;
    }
    entries.retain(|_, (_, read)| read.elapsed() < ttl);
    if entries.len() >= STANDING_CACHE_CAPACITY {
        entries.clear();
    }
}

impl Authenticator {
    /// An authenticator asking `source`, timing expiry and bans by `clock`,
    /// and trusting a user's standing for [`DEFAULT_USER_CACHE_TTL`].
    pub fn new(source: Arc<dyn CredentialSource>, clock: Clock) -> Authenticator {
        Authenticator {
            source,
            clock,
            user_cache_ttl: DEFAULT_USER_CACHE_TTL,
            state: Arc::new(Mutex::new(VerifierState::default())),
        }
    }

    /// Trusts what the user service said of a user for `ttl` (zero: asks on
    /// every privileged request).
    pub fn with_user_cache(mut self, ttl: Duration) -> Authenticator {
        self.user_cache_ttl = ttl;
        self
    }

    /// Forgets a user as soon as `changes` (a subscription to
    /// `user.changed`) announces them.
    pub fn with_user_changes(self, changes: Subscription) -> Authenticator {
        {
            let mut state = self.state();
            state.lost_changes = changes.lost_messages();
            state.user_changes = Some(changes);
        }
        self
    }

    /// Forgets what is known of a user's standing, for the process that
    /// changed them.
    pub fn forget_user(&self, user_id: &str) {
        self.state().forget_user(user_id);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, VerifierState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Authenticates the caller of a gRPC request.
    pub async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Caller, AuthError> {
        let credential = bearer(metadata)?;
        self.authenticate_credential(credential).await
    }

    /// Authenticates a bare bearer credential. A token that claims more
    /// than a viewer's role, and an API key, are held to the user's current
    /// role and ban.
    pub async fn authenticate_credential(&self, credential: &str) -> Result<Caller, AuthError> {
        if !looks_like_jwt(credential) {
            let standing = self.resolve_api_key(credential).await?;
            return Ok(Caller::with_standing(
                standing.role,
                &standing,
                self.clock.now_ms(),
            ));
        }
        let claims = self.verify_token(credential).await?;
        let issued = Role::from_str_name(&claims.role).unwrap_or(Role::Viewer);
        if role_rank(issued) <= role_rank(Role::Viewer) {
            return Ok(Caller::new(claims.sub, issued));
        }
        let standing = self.standing(&claims.sub, credential).await?;
        if standing.user_id != claims.sub {
            return Err(AuthError::Unavailable(format!(
                "asked how user {} stands, the user service answered for {}",
                claims.sub, standing.user_id
            )));
        }
        Ok(Caller::with_standing(
            issued,
            &standing,
            self.clock.now_ms(),
        ))
    }

    /// How a user stands now: remembered for the cache bound unless the bus
    /// says they changed, else asked of the user service.
    async fn standing(&self, user_id: &str, access_token: &str) -> Result<Standing, AuthError> {
        let read_generation = {
            let mut state = self.state();
            state.apply_user_changes();
            if let Some((standing, read)) = state.standings.get(user_id)
                && read.elapsed() < self.user_cache_ttl
            {
                return Ok(standing.clone());
            }
            state.generation
        };
        let standing = self.source.standing(user_id, access_token).await?;
        if self.user_cache_ttl.is_zero() {
            return Ok(standing);
        }
        let mut state = self.state();
        state.apply_user_changes();
        if state.generation == read_generation {
            make_room(&mut state.standings, self.user_cache_ttl);
            state
                .standings
                .insert(user_id.to_owned(), (standing.clone(), Instant::now()));
        }
        Ok(standing)
    }

    /// Verifies an access token's signature, issuer and expiry.
    pub async fn verify_token(&self, token: &str) -> Result<AccessClaims, AuthError> {
        let remembered = {
            let mut state = self.state();
            // Drained on every request, so the queue stays short even while
            // no privileged token is used.
            state.apply_user_changes();
            state.verified.get(token).cloned()
        };
        if let Some(claims) = remembered {
            return self.unexpired(claims);
        }
        let claims = self.verify_signature(token).await?;
        {
            let mut state = self.state();
            if state.verified.len() >= VERIFIED_TOKEN_CACHE_SIZE {
                // Expired tokens go first; if that frees nothing, start afresh.
                let now_seconds = self.clock.now_ms() / 1000;
                state.verified.retain(|_, claims| claims.exp > now_seconds);
                if state.verified.len() >= VERIFIED_TOKEN_CACHE_SIZE {
                    state.verified.clear();
                }
            }
            state.verified.insert(token.to_owned(), claims.clone());
        }
        self.unexpired(claims)
    }

    fn unexpired(&self, claims: AccessClaims) -> Result<AccessClaims, AuthError> {
        if claims.exp.saturating_mul(1000) <= self.clock.now_ms() {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }

    async fn verify_signature(&self, token: &str) -> Result<AccessClaims, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| AuthError::InvalidToken(error.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::InvalidToken(format!(
                "algorithm {:?} is not accepted, only EdDSA",
                header.alg
            )));
        }
        let Some(kid) = header.kid else {
            return Err(AuthError::InvalidToken(
                "the token names no key (kid)".to_owned(),
            ));
        };
        if !self.state().keys.contains_key(&kid) {
            self.refresh_keys().await?;
        }
        let state = self.state();
        let Some(key) = state.keys.get(&kid) else {
            return Err(AuthError::InvalidToken(format!(
                "signed with key {kid}, which is not in the JWKS"
            )));
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[TOKEN_ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Expiry is checked against the service's clock below.
        validation.validate_exp = false;
        jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|error| AuthError::InvalidToken(error.to_string()))
    }

    async fn refresh_keys(&self) -> Result<(), AuthError> {
        let recently = self
            .state()
            .last_fetch
            .is_some_and(|fetched| fetched.elapsed() < JWKS_REFRESH_INTERVAL);
        if recently {
            return Ok(());
        }
        let jwks = self.source.jwks().await?;
        let mut keys = HashMap::new();
        for jwk in jwks.keys {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                continue;
            }
            match DecodingKey::from_ed_components(&jwk.x) {
                Ok(key) => {
                    keys.insert(jwk.kid, key);
                }
                Err(error) => {
                    tracing::warn!(kid = %jwk.kid, error = %error, "skipping unusable key in the JWKS")
                }
            }
        }
        let mut state = self.state();
        state.keys = keys;
        state.last_fetch = Some(Instant::now());
        Ok(())
    }

    async fn resolve_api_key(&self, api_key: &str) -> Result<Standing, AuthError> {
        let read_generation = {
            let mut state = self.state();
            state.apply_user_changes();
            if let Some((standing, resolved)) = state.api_keys.get(api_key)
                && resolved.elapsed() < self.user_cache_ttl
            {
                return Ok(standing.clone());
            }
            state.generation
        };
        let standing = self.source.resolve_api_key(api_key).await?;
        if self.user_cache_ttl.is_zero() {
            return Ok(standing);
        }
        let mut state = self.state();
        state.apply_user_changes();
        if state.generation == read_generation {
            make_room(&mut state.api_keys, self.user_cache_ttl);
            state
                .api_keys
                .insert(api_key.to_owned(), (standing.clone(), Instant::now()));
        }
        Ok(standing)
    }
}

/// Reaches the user service through its client for keys and API keys.
pub struct UserServiceCredentials {
    client: onair_proto::clients::UserClient,
}

impl UserServiceCredentials {
    /// Credentials asked of the user service through `client`.
    pub fn new(client: onair_proto::clients::UserClient) -> UserServiceCredentials {
        UserServiceCredentials { client }
    }
}

fn status_to_auth_error(status: tonic::Status) -> AuthError {
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::NotFound => AuthError::UnknownApiKey,
        _ => AuthError::Unavailable(status.message().to_owned()),
    }
}

#[async_trait::async_trait]
impl CredentialSource for UserServiceCredentials {
    async fn jwks(&self) -> Result<Jwks, AuthError> {
        let mut client = self.client.clone();
        let response = client
            .get_jwks(onair_proto::user::v1::GetJwksRequest {})
            .await
            .map_err(|status| AuthError::Unavailable(status.message().to_owned()))?;
        Ok(response.into_inner())
    }

    async fn resolve_api_key(&self, api_key: &str) -> Result<Standing, AuthError> {
        let mut client = self.client.clone();
        let request = onair_proto::user::v1::AuthenticateApiKeyRequest {
            api_key: api_key.to_owned(),
        };
        let user = client
            .authenticate_api_key(request)
            .await
            .map_err(status_to_auth_error)?
            .into_inner();
        Ok(Standing::of_user(&user))
    }

    async fn standing(&self, user_id: &str, access_token: &str) -> Result<Standing, AuthError> {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(onair_proto::user::v1::GetUserRequest {
            user_id: user_id.to_owned(),
        });
        let authorization = format!("Bearer {access_token}")
            .parse()
            .map_err(|_| AuthError::Malformed)?;
        request
            .metadata_mut()
            .insert("authorization", authorization);
        let user = client
            .get_user(request)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unauthenticated => {
                    AuthError::InvalidToken(status.message().to_owned())
                }
                tonic::Code::NotFound => {
                    AuthError::InvalidToken("the token's user does not exist".to_owned())
                }
                _ => AuthError::Unavailable(status.message().to_owned()),
            })?
            .into_inner();
        Ok(Standing::of_user(&user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        let moderator = Caller::new("u", Role::Moderator);
        assert!(moderator.require(Role::Viewer).is_ok());
        assert!(moderator.require(Role::Moderator).is_ok());
        let error = moderator.require(Role::Operator).unwrap_err();
        assert_eq!(
            error.to_string(),
            "this needs the operator role; the caller is a moderator"
        );
    }

    fn standing(role: Role, banned_until_ms: Option<i64>) -> Standing {
        Standing {
            user_id: "u".to_owned(),
            role,
            banned_until_ms,
        }
    }

    #[test]
    fn a_token_acts_with_the_lower_of_its_role_and_the_current_one() {
        let demoted = Caller::with_standing(Role::Moderator, &standing(Role::Viewer, None), 0);
        assert_eq!(demoted.role, Role::Viewer);
        let error = demoted.require(Role::Moderator).unwrap_err();
        assert_eq!(error.error_code(), ErrorCode::PermissionDenied);
        assert_eq!(
            error.to_string(),
            "your role is now viewer, no longer moderator, and this needs the moderator role; \
             sign in again (POST /v1/tokens:refresh) for a token with your current role"
        );
        assert!(demoted.require(Role::Viewer).is_ok());

        // A promotion waits for a new token: a token grants no more than it says.
        let promoted = Caller::with_standing(Role::Moderator, &standing(Role::Operator, None), 0);
        assert_eq!(promoted.role, Role::Moderator);
        assert_eq!(promoted.lowered, None);

        // What the old token never allowed is refused as before.
        let error = demoted.require(Role::Operator).unwrap_err();
        assert_eq!(
            error.to_string(),
            "this needs the operator role; the caller is a viewer"
        );
    }

    #[test]
    fn a_banned_user_acts_only_as_a_viewer_until_the_ban_ends() {
        let until_ms = 1_700_000_000_000;
        let banned = standing(Role::Operator, Some(until_ms));
        let during = Caller::with_standing(Role::Operator, &banned, until_ms - 1);
        assert_eq!(during.role, Role::Viewer);
        let error = during.require(Role::Moderator).unwrap_err();
        assert_eq!(error.error_code(), ErrorCode::PermissionDenied);
        assert_eq!(
            error.to_string(),
            "you are banned until 2023-11-14T22:13:20Z, and a banned user acts only as a viewer; \
             this needs the moderator role"
        );
        let after = Caller::with_standing(Role::Operator, &banned, until_ms);
        assert_eq!(after.role, Role::Operator);

        let forever = Caller::with_standing(
            Role::Moderator,
            &standing(Role::Moderator, Some(i64::MAX)),
            0,
        );
        assert_eq!(
            forever.require(Role::Moderator).unwrap_err().to_string(),
            "you are banned, and a banned user acts only as a viewer; this needs the moderator role"
        );
    }

    #[test]
    fn bearer_credentials_are_parsed() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(bearer(&metadata), Err(AuthError::Missing));
        metadata.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&metadata), Err(AuthError::Malformed));
        metadata.insert("authorization", "Bearer a.b.c".parse().unwrap());
        assert_eq!(bearer(&metadata), Ok("a.b.c"));
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("onair_op_abcdef"));
    }
}
