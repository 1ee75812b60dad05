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

mod tokens;

pub use tokens::{
    DeviceAuthError, TOKEN_PREFIX, authenticate, challenge, device_of, enabled, is_device_token,
    parse_public_key, recheck, token_hash,
};

use crate::app::App;
use crate::auth::{Role, ScopeSet};
use crate::backend::devices::CHANGED;
use crate::backend::{
    BackendError, DeviceChange, DeviceEvent, DeviceInfo, DeviceRecord, DeviceStatus, Envelope,
    Pending, TokenHashes, TokenIndex,
};
use crate::conn::ConnHandle;
use crate::protocol::names::{PAIRING, device_channel};
use crate::protocol::{RpcError, frame, now_ms};
use serde_json::json;
use tokens::{new_token, pairing_code};

/// Decided (rejected, revoked) records stay readable this long.
const DECIDED_TTL_MS: u64 = 24 * 3_600_000;
/// Attempts at a check-and-set before giving up (each loser re-reads).
const ATTEMPTS: usize = 5;

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
        let mut next = decided_by(&record, by, now, note.clone());
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

/// The next revision of `record`, decided by `by` at `now` with `note`.
fn decided_by(record: &DeviceRecord, by: &str, now: u64, note: Option<String>) -> DeviceRecord {
    let mut next = record.clone();
    next.rev += 1;
    next.info.decided_by = Some(by.to_owned());
    next.info.decided_at = Some(now);
    next.info.note = note;
    next
}

/// A conflict unless the device is paired.
fn require_paired(record: &DeviceRecord) -> Result<(), RpcError> {
    if record.info.status == DeviceStatus::Paired {
        return Ok(());
    }
    Err(RpcError::conflict(format!(
        "device is {}, not paired",
        record.info.status.as_str()
    )))
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
        require_paired(&record)?;
        let mut next = decided_by(&record, by, now, note.clone());
        next.info.status = DeviceStatus::Revoked;
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
        require_paired(&record)?;
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
