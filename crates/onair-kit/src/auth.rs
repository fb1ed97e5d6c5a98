//! Who is calling: access tokens (JWTs verified from the user service's JWKS,
//! with no call to it) and API keys (resolved by the user service, briefly
//! cached).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use onair_proto::user::v1::{Jwks, Role};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::{ErrorCode, ServiceError};

/// The issuer of onair access tokens.
pub const TOKEN_ISSUER: &str = "onair";

/// The claims of an onair access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The role when the token was issued (`VIEWER`, `MODERATOR`, `OPERATOR`).
    pub role: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send `authorization: Bearer <access token or API key>`")]
    Missing,
    #[error("malformed authorization header: expected `Bearer <access token or API key>`")]
    Malformed,
    #[error("access token expired: get a new one with POST /v1/tokens:refresh")]
    Expired,
    #[error("invalid access token: {0}")]
    InvalidToken(String),
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("cannot verify credentials now: {0}")]
    Unavailable(String),
    #[error("this needs the {needed} role; the caller is a {actual}")]
    Forbidden { needed: String, actual: String },
}

impl ServiceError for AuthError {
    fn error_code(&self) -> ErrorCode {
        match self {
            AuthError::Unavailable(_) => ErrorCode::Unavailable,
            AuthError::Forbidden { .. } => ErrorCode::PermissionDenied,
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
    pub user_id: String,
    pub role: Role,
}

impl Caller {
    /// Fails unless the caller has `needed` or a higher role.
    pub fn require(&self, needed: Role) -> Result<(), AuthError> {
        if role_rank(self.role) >= role_rank(needed) {
            return Ok(());
        }
        Err(AuthError::Forbidden {
            needed: role_display(needed).to_owned(),
            actual: role_display(self.role).to_owned(),
        })
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

/// Where a verifier gets keys and resolves API keys: the user service, locally
/// or over gRPC.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    async fn jwks(&self) -> Result<Jwks, AuthError>;
    async fn resolve_api_key(&self, api_key: &str) -> Result<Caller, AuthError>;
}

/// How long a resolved API key is trusted before it is asked about again.
const API_KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// The least time between two JWKS fetches triggered by an unknown `kid`, so
/// that forged tokens can't make every request fetch.
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Verifies credentials for any service, caching the JWKS.
#[derive(Clone)]
pub struct Authenticator {
    source: Arc<dyn CredentialSource>,
    /// Decides whether a token has expired.
    clock: Clock,
    state: Arc<Mutex<VerifierState>>,
}

/// How many verified tokens are remembered. Verifying an Ed25519 signature
/// costs tens of microseconds; a viewer sends the same token for an hour.
const VERIFIED_TOKEN_CACHE_SIZE: usize = 65_536;

#[derive(Default)]
struct VerifierState {
    keys: HashMap<String, DecodingKey>,
    last_fetch: Option<Instant>,
    api_keys: HashMap<String, (Caller, Instant)>,
    /// Tokens whose signature has been verified, with their claims; expiry is
    /// still checked on every use.
    verified: HashMap<String, AccessClaims>,
}

impl Authenticator {
    pub fn new(source: Arc<dyn CredentialSource>, clock: Clock) -> Authenticator {
        Authenticator {
            source,
            clock,
            state: Arc::new(Mutex::new(VerifierState::default())),
        }
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

    /// Authenticates a bare bearer credential.
    pub async fn authenticate_credential(&self, credential: &str) -> Result<Caller, AuthError> {
        if looks_like_jwt(credential) {
            return self.verify_token(credential).await.map(|claims| Caller {
                user_id: claims.sub,
                role: Role::from_str_name(&claims.role).unwrap_or(Role::Viewer),
            });
        }
        self.resolve_api_key(credential).await
    }

    /// Verifies an access token's signature, issuer and expiry.
    pub async fn verify_token(&self, token: &str) -> Result<AccessClaims, AuthError> {
        let remembered = self.state().verified.get(token).cloned();
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

    async fn resolve_api_key(&self, api_key: &str) -> Result<Caller, AuthError> {
        if let Some((caller, resolved)) = self.state().api_keys.get(api_key)
            && resolved.elapsed() < API_KEY_CACHE_TTL
        {
            return Ok(caller.clone());
        }
        let caller = self.source.resolve_api_key(api_key).await?;
        let mut state = self.state();
        state
            .api_keys
            .retain(|_, (_, resolved)| resolved.elapsed() < API_KEY_CACHE_TTL);
        state
            .api_keys
            .insert(api_key.to_owned(), (caller.clone(), Instant::now()));
        Ok(caller)
    }
}

/// Reaches the user service through its client for keys and API keys.
pub struct UserServiceCredentials {
    client: onair_proto::clients::UserClient,
}

impl UserServiceCredentials {
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

    async fn resolve_api_key(&self, api_key: &str) -> Result<Caller, AuthError> {
        let mut client = self.client.clone();
        let request = onair_proto::user::v1::AuthenticateApiKeyRequest {
            api_key: api_key.to_owned(),
        };
        let user = client
            .authenticate_api_key(request)
            .await
            .map_err(status_to_auth_error)?
            .into_inner();
        Ok(Caller {
            user_id: user.id,
            role: Role::try_from(user.role).unwrap_or(Role::Viewer),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        let moderator = Caller {
            user_id: "u".into(),
            role: Role::Moderator,
        };
        assert!(moderator.require(Role::Viewer).is_ok());
        assert!(moderator.require(Role::Moderator).is_ok());
        let error = moderator.require(Role::Operator).unwrap_err();
        assert_eq!(
            error.to_string(),
            "this needs the operator role; the caller is a moderator"
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
