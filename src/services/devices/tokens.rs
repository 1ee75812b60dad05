//! Device tokens and proof of possession: random tokens and pairing
//! codes (ring's `SystemRandom`), their SHA-256, the per-connection
//! challenge, and the credential check of mode `device`.

use crate::app::App;
use crate::auth::{AuthError, AuthMethod, DEVICE_SUB_PREFIX, Identity, Role, ScopeSet};
use crate::backend::{BackendError, DeviceStatus};
use crate::config::AuthMode;
use crate::conn::{ConnHandle, close_code};
use crate::protocol::names::device_channel;
use crate::protocol::{RpcError, now_ms};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, signature};
use std::sync::LazyLock;
use subtle::ConstantTimeEq;

/// Device tokens start with this, so a bearer token is routed here.
pub const TOKEN_PREFIX: &str = "sydev_";
/// Characters of pairing codes: no 0/O, 1/I.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

static RNG: LazyLock<SystemRandom> = LazyLock::new(SystemRandom::new);

/// Per-process key the connection challenges are derived from.
static CHALLENGE_KEY: LazyLock<hmac::Key> = LazyLock::new(|| {
    hmac::Key::generate(hmac::HMAC_SHA256, &*RNG).expect("the system random source works")
});

/// The challenge of connection `conn_id` (base64url of 32 bytes): an
/// HMAC of the connection's random id under a random per-process key, so
/// it is unpredictable and differs per connection without being stored.
pub fn challenge(conn_id: &str) -> String {
    let tag = hmac::sign(&CHALLENGE_KEY, conn_id.as_bytes());
    URL_SAFE_NO_PAD.encode(tag.as_ref())
}

/// Whether a bearer token is a device token.
pub fn is_device_token(token: &str) -> bool {
    token.starts_with(TOKEN_PREFIX)
}

/// Mode `device` is on.
pub fn enabled(app: &App) -> bool {
    app.auth.modes().contains(&AuthMode::Device)
}

/// Hex SHA-256 of a token: all that is stored of it.
pub fn token_hash(token: &str) -> String {
    let digest = digest::digest(&digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn random<const N: usize>() -> Result<[u8; N], RpcError> {
    let mut bytes = [0u8; N];
    RNG.fill(&mut bytes)
        .map_err(|_| RpcError::internal(&"system random source failed"))?;
    Ok(bytes)
}

/// A new device token: the prefix and 32 random bytes (base64url).
pub(super) fn new_token() -> Result<String, RpcError> {
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random::<32>()?)
    ))
}

/// A pairing code such as `K7QF-M2XD` (40 bits).
pub(super) fn pairing_code() -> Result<String, RpcError> {
    let bytes = random::<8>()?;
    let chars: String = bytes
        .iter()
        .map(|b| char::from(CODE_ALPHABET[usize::from(*b) % CODE_ALPHABET.len()]))
        .collect();
    Ok(format!("{}-{}", &chars[..4], &chars[4..]))
}

/// Base64 in any of its usual spellings (url-safe or standard, padded or
/// not).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    [URL_SAFE_NO_PAD, URL_SAFE, STANDARD_NO_PAD, STANDARD]
        .iter()
        .find_map(|engine| engine.decode(text.trim()).ok())
}

/// An Ed25519 public key: 32 bytes in base64url or base64. Returns it
/// as base64url without padding.
pub fn parse_public_key(text: &str) -> Result<String, &'static str> {
    match decode_base64(text) {
        Some(bytes) if bytes.len() == 32 => Ok(URL_SAFE_NO_PAD.encode(bytes)),
        Some(_) => Err("an Ed25519 public key is 32 bytes"),
        None => Err("base64url or base64"),
    }
}

/// Why a device token did not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum DeviceAuthError {
    #[error(transparent)]
    Rejected(#[from] AuthError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Check a device token. `conn` is the connection authenticating in-band
/// (its challenge can be signed); `None` at the upgrade or on HTTP, where
/// a device with a public key is refused.
pub async fn authenticate(
    app: &App,
    token: &str,
    proof: Option<&str>,
    conn: Option<&ConnHandle>,
) -> Result<Identity, DeviceAuthError> {
    if !enabled(app) {
        return Err(AuthError::ModeDisabled("device").into());
    }
    let hash = token_hash(token);
    let record = app
        .device_store()
        .device_by_token(&hash)
        .await?
        .filter(|r| r.info.status == DeviceStatus::Paired)
        .ok_or(AuthError::UnknownCredential)?;
    let now = now_ms();
    let same = |stored: &Option<String>| {
        stored
            .as_deref()
            .is_some_and(|s| bool::from(s.as_bytes().ct_eq(hash.as_bytes())))
    };
    let expires_at = if same(&record.tokens.current) {
        None
    } else if same(&record.tokens.previous) && now < record.tokens.previous_until {
        // The rotated-out token: its connections end with the grace.
        Some(record.tokens.previous_until.div_ceil(1000))
    } else {
        return Err(AuthError::UnknownCredential.into());
    };
    if let Some(key) = &record.info.public_key {
        prove(key, proof, conn)?;
    }
    // What a connected device proves: written back if the backend loses it.
    let hub = &app.hub;
    let connected = |id: &str| hub.local_subscribers(&device_channel(id)) > 0;
    hub.copies().keep_device(record.clone(), connected);
    let info = record.info;
    let role = match info.role.as_deref() {
        Some("operator") => Role::Operator,
        _ => Role::Node,
    };
    let scopes = ScopeSet::from_names(&info.scopes).unwrap_or_default();
    if let Err(e) = app.device_store().touch_device(&info.device_id, now).await {
        tracing::debug!(error = %e, "noting a device's last authentication failed");
    }
    Ok(Identity {
        sub: format!("{DEVICE_SUB_PREFIX}{}", info.device_id),
        role,
        scopes,
        channels: Vec::new(),
        method: AuthMethod::Device,
        expires_at,
    })
}

/// Verify the signature of `conn`'s challenge by `public_key`. The
/// challenge is good for one attempt.
fn prove(
    public_key: &str,
    proof: Option<&str>,
    conn: Option<&ConnHandle>,
) -> Result<(), AuthError> {
    let (Some(conn), Some(proof)) = (conn, proof) else {
        return Err(AuthError::ProofRequired);
    };
    let first = !std::mem::replace(&mut conn.state().challenge_used, true);
    let key = decode_base64(public_key).ok_or(AuthError::BadSignature)?;
    let sig = decode_base64(proof).ok_or(AuthError::Malformed)?;
    let key = signature::UnparsedPublicKey::new(&signature::ED25519, key);
    let valid = key.verify(challenge(conn.id()).as_bytes(), &sig).is_ok();
    if first && valid {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// A device's id from its identity, if the identity is a device's.
pub fn device_of(identity: &Identity) -> Option<&str> {
    (identity.method == AuthMethod::Device)
        .then(|| identity.sub.strip_prefix(DEVICE_SUB_PREFIX))
        .flatten()
}

/// A device connection just joined its channel: close it if the device
/// was revoked meanwhile (the revocation's frame may have gone out before
/// the socket joined).
pub async fn recheck(app: &App, conn: &ConnHandle, device_id: &str) {
    let paired = app
        .device_store()
        .device(device_id)
        .await
        .map(|r| r.is_some_and(|r| r.info.status == DeviceStatus::Paired));
    if let Ok(false) = paired {
        conn.close(close_code::KICKED, "device revoked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_only_their_hash_is_kept() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert!(is_device_token(&a) && !is_device_token("eyJh.eyJi.c2ln"));
        let secret = a.strip_prefix(TOKEN_PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(secret).unwrap().len(), 32);
        let hash = token_hash(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(secret));
        assert_eq!(hash, token_hash(&a));
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn pairing_codes_use_the_unambiguous_alphabet() {
        for _ in 0..100 {
            let code = pairing_code().unwrap();
            assert_eq!(code.len(), 9, "{code}");
            assert_eq!(&code[4..5], "-");
            assert!(
                code.bytes()
                    .filter(|b| *b != b'-')
                    .all(|b| CODE_ALPHABET.contains(&b)),
                "{code}"
            );
        }
    }

    #[test]
    fn challenges_differ_per_connection_and_are_stable_for_one() {
        let a = challenge("conn-a");
        assert_eq!(a, challenge("conn-a"));
        assert_ne!(a, challenge("conn-b"));
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    }

    #[test]
    fn public_keys_in_any_base64_spelling() {
        let key = [7u8; 32];
        let canonical = URL_SAFE_NO_PAD.encode(key);
        for spelled in [
            canonical.clone(),
            URL_SAFE.encode(key),
            STANDARD.encode(key),
            STANDARD_NO_PAD.encode(key),
        ] {
            assert_eq!(parse_public_key(&spelled).unwrap(), canonical, "{spelled}");
        }
        assert!(parse_public_key(&URL_SAFE_NO_PAD.encode([1u8; 31])).is_err());
        assert!(parse_public_key("not base64!").is_err());
    }

    #[test]
    fn a_signature_is_checked_once_per_connection() {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&*RNG).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let conn = ConnHandle::new("c1".into(), [127, 0, 0, 1].into(), 8);
        let good = STANDARD.encode(pair.sign(challenge("c1").as_bytes()).as_ref());
        assert!(matches!(
            prove(&public, None, Some(&conn)),
            Err(AuthError::ProofRequired)
        ));
        assert!(matches!(
            prove(&public, Some(&good), None),
            Err(AuthError::ProofRequired)
        ));
        prove(&public, Some(&good), Some(&conn)).unwrap();
        assert!(matches!(
            prove(&public, Some(&good), Some(&conn)),
            Err(AuthError::BadSignature)
        ));
        let other = ConnHandle::new("c2".into(), [127, 0, 0, 1].into(), 8);
        assert!(matches!(
            prove(&public, Some(&good), Some(&other)),
            Err(AuthError::BadSignature)
        ));
    }
}
