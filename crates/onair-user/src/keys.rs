//! The keys that sign access tokens.
//!
//! One key signs at a time. Rotation makes a new key the signer and retires the
//! old one, which stays in the JWKS until every token it signed has expired, so
//! no valid token stops verifying because of a rotation.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use onair_kit::auth::AccessClaims;
use onair_proto::user::v1::{Jwk, Jwks};

use crate::error::UserError;
use crate::store::{SigningKeyRecord, UserStore};

/// The signer and the keys that verify.
#[derive(Clone)]
pub struct KeyRing {
    state: Arc<RwLock<KeyRingState>>,
}

struct KeyRingState {
    signer_kid: String,
    signer: EncodingKey,
    signer_create_time_ms: i64,
    /// Every key whose tokens may still be valid, the signer included.
    verifying: Vec<Jwk>,
}

fn generate_key(now_ms: i64) -> SigningKeyRecord {
    let secret: [u8; 32] = rand::random();
    let signing_key = SigningKey::from_bytes(&secret);
    let public = signing_key.verifying_key().to_bytes();
    let kid_bytes: [u8; 12] = rand::random();
    SigningKeyRecord {
        kid: URL_SAFE_NO_PAD.encode(kid_bytes),
        secret_key: URL_SAFE_NO_PAD.encode(secret),
        public_key: URL_SAFE_NO_PAD.encode(public),
        create_time_ms: now_ms,
        retire_time_ms: None,
    }
}

fn encoding_key(record: &SigningKeyRecord) -> Result<EncodingKey, UserError> {
    let secret = URL_SAFE_NO_PAD
        .decode(&record.secret_key)
        .map_err(|error| {
            UserError::Internal(format!("stored key {} is corrupt: {error}", record.kid))
        })?;
    let secret: [u8; 32] = secret.try_into().map_err(|_| {
        UserError::Internal(format!("stored key {} has the wrong length", record.kid))
    })?;
    let der = SigningKey::from_bytes(&secret)
        .to_pkcs8_der()
        .map_err(|error| {
            UserError::Internal(format!("cannot encode key {}: {error}", record.kid))
        })?;
    Ok(EncodingKey::from_ed_der(der.as_bytes()))
}

fn jwk(record: &SigningKeyRecord) -> Jwk {
    Jwk {
        kty: "OKP".to_owned(),
        crv: "Ed25519".to_owned(),
        x: record.public_key.clone(),
        kid: record.kid.clone(),
        alg: "EdDSA".to_owned(),
        r#use: "sig".to_owned(),
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Builds the ring's state from the stored keys: the newest active key signs;
/// retired keys verify until `token_ttl` after their retirement.
fn state_from(
    keys: &[SigningKeyRecord],
    token_ttl: Duration,
    now_ms: i64,
) -> Result<Option<KeyRingState>, UserError> {
    let Some(signer) = keys
        .iter()
        .filter(|key| key.retire_time_ms.is_none())
        .max_by_key(|key| key.create_time_ms)
    else {
        return Ok(None);
    };
    let mut verifying = Vec::new();
    for key in keys {
        let still_verifies = key
            .retire_time_ms
            .is_none_or(|retired| retired.saturating_add(millis(token_ttl)) > now_ms);
        if still_verifies {
            verifying.push(jwk(key));
        }
    }
    Ok(Some(KeyRingState {
        signer_kid: signer.kid.clone(),
        signer: encoding_key(signer)?,
        signer_create_time_ms: signer.create_time_ms,
        verifying,
    }))
}

/// Reads the stored keys, making the first key or rotating an old one as needed.
async fn load_state(
    store: &UserStore,
    token_ttl: Duration,
    rotation: Duration,
    now_ms: i64,
) -> Result<KeyRingState, UserError> {
    let mut keys = store.signing_keys().await?;
    let newest_active = keys
        .iter()
        .filter(|key| key.retire_time_ms.is_none())
        .map(|key| key.create_time_ms)
        .max();
    let due = match newest_active {
        Some(newest) => newest.saturating_add(millis(rotation)) <= now_ms,
        None => true,
    };
    if due {
        store.rotate_signing_key(&generate_key(now_ms)).await?;
        keys = store.signing_keys().await?;
    }
    match state_from(&keys, token_ttl, now_ms)? {
        Some(state) => Ok(state),
        None => Err(UserError::Internal(
            "no signing key after rotation".to_owned(),
        )),
    }
}

impl KeyRing {
    /// Loads the stored keys, making the first key or rotating an old one as
    /// needed.
    pub async fn load(
        store: &UserStore,
        token_ttl: Duration,
        rotation: Duration,
        now_ms: i64,
    ) -> Result<KeyRing, UserError> {
        let state = load_state(store, token_ttl, rotation, now_ms).await?;
        Ok(KeyRing {
            state: Arc::new(RwLock::new(state)),
        })
    }

    /// Re-reads the stored keys (another process may have rotated), rotating
    /// when the signer is older than `rotation` and forgetting keys whose tokens
    /// have all expired.
    pub async fn refresh(
        &self,
        store: &UserStore,
        token_ttl: Duration,
        rotation: Duration,
        now_ms: i64,
    ) -> Result<(), UserError> {
        let state = load_state(store, token_ttl, rotation, now_ms).await?;
        *self.write() = state;
        let forgotten = store
            .delete_keys_retired_before(now_ms.saturating_sub(millis(token_ttl)))
            .await?;
        if forgotten > 0 {
            tracing::info!(
                forgotten,
                "deleted signing keys whose tokens have all expired"
            );
        }
        Ok(())
    }

    /// Makes a new key the signer now.
    pub async fn rotate(
        &self,
        store: &UserStore,
        token_ttl: Duration,
        now_ms: i64,
    ) -> Result<(String, i64), UserError> {
        store.rotate_signing_key(&generate_key(now_ms)).await?;
        let keys = store.signing_keys().await?;
        let Some(state) = state_from(&keys, token_ttl, now_ms)? else {
            return Err(UserError::Internal(
                "no signing key after rotation".to_owned(),
            ));
        };
        let signer = (state.signer_kid.clone(), state.signer_create_time_ms);
        *self.write() = state;
        tracing::info!(kid = %signer.0, "rotated the token signing key");
        Ok(signer)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyRingState> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KeyRingState> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Signs an access token with the current key.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, UserError> {
        let state = self.read();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(state.signer_kid.clone());
        jsonwebtoken::encode(&header, claims, &state.signer)
            .map_err(|error| UserError::Internal(format!("cannot sign token: {error}")))
    }

    /// The public keys that verify every token still valid, for other services.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.read().verifying.clone(),
        }
    }

    /// The id of the key that signs now; tokens name it in their `kid` header.
    pub fn signer_kid(&self) -> String {
        self.read().signer_kid.clone()
    }
}
