//! Devices and pairing (mode `device`).
//!
//! 1. **Request.** An unauthenticated connection calls
//!    `device.pair.request`: a pending record with a pairing code, kept
//!    for `auth.devices.pairing_ttl_ms`; at most `max_pending` pending
//!    cluster-wide; `requests_per_ip` per client IP. The connection is the
//!    *waiting device*. Operators with `operator.pairing` receive
//!    `device.pair.requested` on [`PAIRING`] (every instance), and one that
//!    connects later gets what is pending ([`catch_up`]).
//! 2. **Decision.** [`decide`]: the first decision wins cluster-wide (a
//!    check-and-set on the record's revision in the backend). Approval
//!    issues a random token, stores only its SHA-256, and sends the token
//!    to the waiting device on whichever instance holds it
//!    (`device.paired`); rejection sends `device.pair.rejected`.
//! 3. **Authentication.** [`authenticate`] (called under the failed-auth
//!    window by `services::credentials`): hash, look up, compare in
//!    constant time, and for a device that registered a public key verify
//!    its Ed25519 signature of the connection's challenge (sent in
//!    `welcome`, good for one proof). A device joins its own internal
//!    channel `$device:<id>`.
//! 4. **Revocation** writes the record first, then publishes the device
//!    channel's last frame: every instance holding a socket of the device
//!    closes it (4003). A connection that authenticated concurrently
//!    checks the record again once it has joined the channel ([`recheck`]),
//!    so no socket slips between the two.
//! 5. **Rotation** issues a new token; the previous one works for
//!    `rotation_grace_ms` more, and a connection authenticated with it
//!    expires when the grace ends.
//!
//! Every step joins the audit trail (`device.history`).

use crate::app::App;
use crate::auth::{AuthError, AuthMethod, DEVICE_SUB_PREFIX, Identity, Role, ScopeSet};
use crate::backend::devices::CHANGED;
use crate::backend::{
    BackendError, DeviceChange, DeviceEvent, DeviceInfo, DeviceRecord, DeviceStatus, Envelope,
    Pending, TokenHashes, TokenIndex,
};
use crate::config::AuthMode;
use crate::conn::{ConnHandle, close_code};
use crate::protocol::names::{PAIRING, device_channel};
use crate::protocol::{RpcError, frame, now_ms};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, signature};
use serde_json::json;
use std::sync::LazyLock;
use subtle::ConstantTimeEq;

/// Device tokens start with this, so a bearer token is routed here.
pub const TOKEN_PREFIX: &str = "sydev_";
/// Decided (rejected, revoked) records stay readable this long.
const DECIDED_TTL_MS: u64 = 24 * 3_600_000;
/// Attempts at a check-and-set before giving up (each loser re-reads).
const ATTEMPTS: usize = 5;
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
fn new_token() -> Result<String, RpcError> {
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random::<32>()?)
    ))
}

/// A pairing code such as `K7QF-M2XD` (40 bits).
fn pairing_code() -> Result<String, RpcError> {
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

/// What a pairing request says about the device.
pub struct Request {
    pub device_id: String,
    pub name: String,
    pub platform: String,
    pub public_key: Option<String>,
}

/// Record a pairing request from `conn` (the waiting device).
pub async fn request(app: &App, conn: &ConnHandle, req: Request) -> Result<DeviceInfo, RpcError> {
    if !enabled(app) {
        return Err(RpcError::unavailable("auth mode device is disabled"));
    }
    let settings = &app.config.auth.devices;
    let ip = conn.ip();
    let hit = app
        .rate_store()
        .rate_hit(&format!("pair:{ip}"), settings.requests_per_ip, now_ms())
        .await?;
    if !hit.allowed {
        metrics::counter!("switchyard_rate_limited_total", "limit" => "pairing").increment(1);
        return Err(RpcError::rate_limited(hit.retry_after_ms));
    }
    let code = pairing_code()?;
    for _ in 0..ATTEMPTS {
        let now = now_ms();
        let current = app.device_store().device(&req.device_id).await?;
        if let Some(existing) = &current {
            match existing.info.status {
                DeviceStatus::Pending if existing.info.expires_at > now => {
                    return Err(RpcError::conflict(
                        "a pairing request for this device is pending",
                    ));
                }
                DeviceStatus::Paired => {
                    return Err(RpcError::conflict(
                        "device already paired (revoke it to pair again)",
                    ));
                }
                _ => {}
            }
        }
        let expected_rev = current.as_ref().map_or(0, |r| r.rev);
        let info = DeviceInfo {
            device_id: req.device_id.clone(),
            name: req.name.clone(),
            platform: req.platform.clone(),
            public_key: req.public_key.clone(),
            status: DeviceStatus::Pending,
            code: code.clone(),
            requested_at: now,
            expires_at: now + settings.pairing_ttl_ms,
            role: None,
            scopes: Vec::new(),
            decided_by: None,
            decided_at: None,
            note: None,
            token_issued_at: None,
            previous_token_until: None,
            last_seen: current.as_ref().and_then(|r| r.info.last_seen),
        };
        let change = DeviceChange {
            record: DeviceRecord {
                info: info.clone(),
                tokens: TokenHashes::default(),
                requester_conn: conn.id().to_owned(),
                rev: expected_rev + 1,
            },
            expected_rev,
            pending: Pending::Add {
                max: settings.max_pending,
            },
            ttl_ms: Some(settings.pairing_ttl_ms),
            tokens: Vec::new(),
            audit: event(&info.device_id, "requested", &format!("device@{ip}"), None),
            now,
        };
        if write(app, &change).await? {
            let pushed = frame::notification("device.pair.requested", &info);
            app.bus().broadcast(PAIRING, pushed, false).await?;
            return Ok(info);
        }
    }
    Err(busy())
}

/// An approval's grant: the role and, for an operator, its scopes.
pub struct Grant {
    pub role: Role,
    pub scopes: ScopeSet,
}

/// What a decision did.
pub struct Decided {
    pub info: DeviceInfo,
    /// The waiting device was reached.
    pub delivered: bool,
}

/// Approve (`Some(grant)`) or reject (`None`) a pending request: the
/// first decision wins; the waiting device is told either way.
pub async fn decide(
    app: &App,
    by: &str,
    device_id: &str,
    grant: Option<Grant>,
    note: Option<String>,
) -> Result<Decided, RpcError> {
    for _ in 0..ATTEMPTS {
        let now = now_ms();
        let record = find(app, device_id).await?;
        if record.info.status != DeviceStatus::Pending {
            return Err(RpcError::conflict(format!(
                "device already {}",
                record.info.status.as_str()
            )));
        }
        if record.info.expires_at <= now {
            return Err(RpcError::conflict("the pairing request expired"));
        }
        let mut next = record.clone();
        next.rev += 1;
        next.info.decided_by = Some(by.to_owned());
        next.info.decided_at = Some(now);
        next.info.note = note.clone();
        let (token, ttl_ms, action) = match &grant {
            Some(grant) => {
                let token = new_token()?;
                next.info.status = DeviceStatus::Paired;
                next.info.role = Some(grant.role.as_str().to_owned());
                next.info.scopes = granted_scopes(grant);
                next.info.token_issued_at = Some(now);
                next.tokens.current = Some(token_hash(&token));
                (Some(token), None, "approved")
            }
            None => {
                next.info.status = DeviceStatus::Rejected;
                (None, Some(DECIDED_TTL_MS), "rejected")
            }
        };
        let mut audit = event(device_id, action, by, note.clone());
        audit.role.clone_from(&next.info.role);
        audit.scopes.clone_from(&next.info.scopes);
        let change = DeviceChange {
            tokens: next
                .tokens
                .current
                .iter()
                .map(|h| TokenIndex::Set(h.clone()))
                .collect(),
            record: next,
            expected_rev: record.rev,
            pending: Pending::Remove,
            ttl_ms,
            audit,
            now,
        };
        if !write(app, &change).await? {
            continue;
        }
        let info = change.record.info;
        let to_device = match &token {
            Some(token) => frame::notification(
                "device.paired",
                &json!({
                    "deviceId": device_id,
                    "deviceToken": token,
                    "role": info.role,
                    "scopes": info.scopes,
                }),
            ),
            None => frame::notification(
                "device.pair.rejected",
                &json!({ "deviceId": device_id, "reason": "rejected", "note": info.note }),
            ),
        };
        let delivered = app
            .bus()
            .send_to_conn(Envelope::Conn {
                conn_id: record.requester_conn.clone(),
                frame: to_device,
            })
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "telling the waiting device failed");
                false
            });
        let pushed = frame::notification("device.pair.resolved", &info);
        app.bus().broadcast(PAIRING, pushed, false).await?;
        return Ok(Decided { info, delivered });
    }
    Err(busy())
}

fn granted_scopes(grant: &Grant) -> Vec<String> {
    match grant.role {
        Role::Node => Vec::new(),
        Role::Operator => grant
            .scopes
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
    }
}

/// Revoke a paired device: its token stops working at once and its
/// connections on every instance are closed (4003).
pub async fn revoke(
    app: &App,
    by: &str,
    device_id: &str,
    note: Option<String>,
) -> Result<DeviceInfo, RpcError> {
    for _ in 0..ATTEMPTS {
        let now = now_ms();
        let record = find(app, device_id).await?;
        if record.info.status != DeviceStatus::Paired {
            return Err(RpcError::conflict(format!(
                "device is {}, not paired",
                record.info.status.as_str()
            )));
        }
        let mut next = record.clone();
        next.rev += 1;
        next.info.status = DeviceStatus::Revoked;
        next.info.decided_by = Some(by.to_owned());
        next.info.decided_at = Some(now);
        next.info.note = note.clone();
        next.info.previous_token_until = None;
        next.tokens = TokenHashes::default();
        let tokens = [&record.tokens.current, &record.tokens.previous]
            .into_iter()
            .flatten()
            .map(|h| TokenIndex::Delete(h.clone()))
            .collect();
        let change = DeviceChange {
            record: next,
            expected_rev: record.rev,
            pending: Pending::Keep,
            ttl_ms: Some(DECIDED_TTL_MS),
            tokens,
            audit: event(device_id, "revoked", by, note.clone()),
            now,
        };
        if !write(app, &change).await? {
            continue;
        }
        let info = change.record.info;
        let pushed = frame::notification("device.revoked", &info);
        app.bus()
            .broadcast(&device_channel(device_id), pushed.clone(), true)
            .await?;
        app.bus().broadcast(PAIRING, pushed, false).await?;
        return Ok(info);
    }
    Err(busy())
}

/// Issue a new token for a paired device; the previous one keeps working
/// for `rotation_grace_ms`. Returns the new token (shown once).
pub async fn rotate(
    app: &App,
    by: &str,
    device_id: &str,
) -> Result<(String, DeviceInfo), RpcError> {
    let grace = app.config.auth.devices.rotation_grace_ms;
    for _ in 0..ATTEMPTS {
        let now = now_ms();
        let record = find(app, device_id).await?;
        if record.info.status != DeviceStatus::Paired {
            return Err(RpcError::conflict(format!(
                "device is {}, not paired",
                record.info.status.as_str()
            )));
        }
        let token = new_token()?;
        let hash = token_hash(&token);
        let mut tokens = vec![TokenIndex::Set(hash.clone())];
        if let Some(older) = &record.tokens.previous {
            tokens.push(TokenIndex::Delete(older.clone()));
        }
        if let Some(old) = &record.tokens.current {
            tokens.push(if grace == 0 {
                TokenIndex::Delete(old.clone())
            } else {
                TokenIndex::Expire(old.clone(), grace)
            });
        }
        let mut next = record.clone();
        next.rev += 1;
        next.info.token_issued_at = Some(now);
        next.info.previous_token_until = Some(now + grace);
        next.tokens = TokenHashes {
            current: Some(hash),
            previous: record.tokens.current.clone(),
            previous_until: now + grace,
        };
        let change = DeviceChange {
            record: next,
            expected_rev: record.rev,
            pending: Pending::Keep,
            ttl_ms: None,
            tokens,
            audit: event(device_id, "rotated", by, None),
            now,
        };
        if write(app, &change).await? {
            return Ok((token, change.record.info));
        }
    }
    Err(busy())
}

/// The device `id`, or -32001.
pub async fn find(app: &App, id: &str) -> Result<DeviceRecord, RpcError> {
    app.device_store()
        .device(id)
        .await?
        .ok_or_else(|| RpcError::not_found("device", id))
}

/// Every device (`status` only those), oldest request first; expired
/// pending requests are left out.
pub async fn list(app: &App, status: Option<DeviceStatus>) -> Result<Vec<DeviceInfo>, RpcError> {
    let now = now_ms();
    Ok(app
        .device_store()
        .devices()
        .await?
        .into_iter()
        .map(|r| r.info)
        .filter(|i| i.status != DeviceStatus::Pending || i.expires_at > now)
        .filter(|i| status.is_none_or(|s| s == i.status))
        .collect())
}

/// An operator just gained `operator.pairing`: send it what is pending,
/// oldest first.
pub async fn catch_up(app: &App, conn: &ConnHandle) {
    match list(app, Some(DeviceStatus::Pending)).await {
        Ok(pending) => {
            for info in pending {
                conn.push(frame::notification("device.pair.requested", &info));
            }
        }
        Err(e) => tracing::debug!(error = %e, "pending pairing requests unavailable"),
    }
}

/// Write a change; false when another write won the race (read again).
async fn write(app: &App, change: &DeviceChange) -> Result<bool, RpcError> {
    match app.device_store().write_device(change).await {
        Ok(()) => Ok(true),
        Err(BackendError::Conflict(why)) if why == CHANGED => Ok(false),
        Err(e) => Err(e.into_rpc(&change.record.info.device_id)),
    }
}

fn busy() -> RpcError {
    RpcError::conflict("the device changed concurrently; try again")
}

fn event(device_id: &str, action: &str, by: &str, note: Option<String>) -> DeviceEvent {
    DeviceEvent {
        at: now_ms(),
        device_id: device_id.to_owned(),
        action: action.to_owned(),
        by: by.to_owned(),
        note,
        role: None,
        scopes: Vec::new(),
    }
}
