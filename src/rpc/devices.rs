//! Devices and pairing: `device.pair.request` (any connection: the
//! waiting device), `device.pair.approve` / `device.pair.reject`,
//! `device.list`, `device.get`, `device.revoke`, `device.history`
//! (`operator.pairing`) and `device.token.rotate` (`operator.pairing`, or
//! the device itself). The rules are `services::devices`'.

use super::Ctx;
use crate::auth::{Role, Scope, ScopeSet};
use crate::backend::DeviceStatus;
use crate::protocol::RpcError;
use crate::services::devices::{self, Grant, Request};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

/// Longest name, platform or note.
const MAX_TEXT: usize = 256;
const MAX_NOTE: usize = 4096;

/// A device id: 1-128 bytes of letters, digits and `. _ : -`.
fn check_device_id(id: &str) -> Result<(), RpcError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RpcError::invalid_params(
            "deviceId",
            "1-128 bytes of letters, digits, '.', '_', ':' or '-'",
        ))
    }
}

fn check_text(field: &str, text: &str, max: usize) -> Result<(), RpcError> {
    if text.len() > max || text.chars().any(char::is_control) {
        return Err(RpcError::invalid_params(
            field,
            format!("at most {max} bytes, no control characters"),
        ));
    }
    Ok(())
}

fn check_note(note: Option<&String>) -> Result<(), RpcError> {
    match note {
        Some(note) if note.len() > MAX_NOTE => Err(RpcError::invalid_params(
            "note",
            format!("at most {MAX_NOTE} bytes"),
        )),
        _ => Ok(()),
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestParams {
    /// The device's stable id (1-128 bytes: letters, digits, `. _ : -`).
    device_id: String,
    /// Shown to operators (at most 256 bytes).
    name: String,
    /// e.g. `ios`, `linux` (at most 256 bytes).
    platform: String,
    /// Ed25519 public key, 32 bytes in base64url or base64. A device that
    /// registers one must sign its connection's `challenge` whenever it
    /// authenticates (in-band only).
    public_key: Option<String>,
}

pub async fn request(ctx: &Ctx<'_>, p: RequestParams) -> Result<Value, RpcError> {
    check_device_id(&p.device_id)?;
    check_text("name", &p.name, MAX_TEXT)?;
    check_text("platform", &p.platform, MAX_TEXT)?;
    if p.name.trim().is_empty() {
        return Err(RpcError::invalid_params("name", "must not be empty"));
    }
    let public_key = p
        .public_key
        .as_deref()
        .map(devices::parse_public_key)
        .transpose()
        .map_err(|why| RpcError::invalid_params("publicKey", why))?;
    let info = devices::request(
        ctx.app,
        ctx.conn,
        Request {
            device_id: p.device_id,
            name: p.name,
            platform: p.platform,
            public_key,
        },
    )
    .await?;
    Ok(json!({
        "deviceId": info.device_id,
        "code": info.code,
        "status": info.status,
        "expiresAt": info.expires_at,
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApproveParams {
    device_id: String,
    /// `node` (default) or `operator`.
    role: Option<String>,
    /// An operator device's scopes (none wider than the approver's own).
    #[serde(default)]
    scopes: Vec<String>,
    /// Kept in the audit trail (at most 4096 bytes).
    note: Option<String>,
}

pub async fn approve(ctx: &Ctx<'_>, p: ApproveParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    check_note(p.note.as_ref())?;
    let role = match p.role.as_deref() {
        None | Some("node") => Role::Node,
        Some("operator") => Role::Operator,
        Some(_) => return Err(RpcError::invalid_params("role", "node or operator")),
    };
    let scopes = ScopeSet::from_names(&p.scopes)
        .map_err(|e| RpcError::invalid_params("scopes", e.to_string()))?;
    if role == Role::Node && !scopes.is_empty() {
        return Err(RpcError::invalid_params(
            "scopes",
            "only an operator device has scopes",
        ));
    }
    if let Some(wider) = Scope::ALL
        .into_iter()
        .find(|s| scopes.names().contains(&s.as_str()) && !identity.scopes.contains(*s))
    {
        return Err(RpcError::forbidden(format!(
            "cannot grant {wider}: wider than your own scopes"
        )));
    }
    let decided = devices::decide(
        ctx.app,
        &identity.sub,
        &p.device_id,
        Some(Grant { role, scopes }),
        p.note,
    )
    .await?;
    Ok(json!({ "device": decided.info, "delivered": decided.delivered }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectParams {
    device_id: String,
    /// Sent to the device and kept in the audit trail (at most 4096 bytes).
    note: Option<String>,
}

pub async fn reject(ctx: &Ctx<'_>, p: RejectParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    check_note(p.note.as_ref())?;
    let decided = devices::decide(ctx.app, &identity.sub, &p.device_id, None, p.note).await?;
    Ok(json!({ "device": decided.info, "delivered": decided.delivered }))
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// Only devices in this state.
    status: Option<DeviceStatus>,
}

pub async fn list(ctx: &Ctx<'_>, p: ListParams) -> Result<Value, RpcError> {
    let devices = devices::list(ctx.app, p.status).await?;
    Ok(json!({ "count": devices.len(), "devices": devices }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceParams {
    device_id: String,
}

pub async fn get(ctx: &Ctx<'_>, p: DeviceParams) -> Result<Value, RpcError> {
    let record = devices::find(ctx.app, &p.device_id).await?;
    Ok(serde_json::to_value(record.info).unwrap_or_default())
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeParams {
    device_id: String,
    /// Kept in the audit trail (at most 4096 bytes).
    note: Option<String>,
}

pub async fn revoke(ctx: &Ctx<'_>, p: RevokeParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    check_note(p.note.as_ref())?;
    let info = devices::revoke(ctx.app, &identity.sub, &p.device_id, p.note).await?;
    Ok(serde_json::to_value(info).unwrap_or_default())
}

pub async fn rotate(ctx: &Ctx<'_>, p: DeviceParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let own = devices::device_of(&identity) == Some(p.device_id.as_str());
    if !own && !identity.satisfies(crate::auth::Requirement::Scope(Scope::Pairing)) {
        return Err(RpcError::forbidden(
            "device.token.rotate requires scope operator.pairing or the device itself",
        ));
    }
    let (token, info) = devices::rotate(ctx.app, &identity.sub, &p.device_id).await?;
    Ok(json!({
        "deviceId": info.device_id,
        "deviceToken": token,
        "previousTokenUntil": info.previous_token_until,
    }))
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryParams {
    /// Only this device's entries.
    device_id: Option<String>,
    /// Newest entries returned (default 100, at most 1000).
    limit: Option<usize>,
}

pub async fn history(ctx: &Ctx<'_>, p: HistoryParams) -> Result<Value, RpcError> {
    let limit = p.limit.unwrap_or(100).min(1000);
    let all = ctx
        .app
        .device_store()
        .device_history(crate::backend::devices::AUDIT_MAX)
        .await?;
    let entries: Vec<_> = all
        .into_iter()
        .filter(|e| p.device_id.as_ref().is_none_or(|id| &e.device_id == id))
        .take(limit)
        .collect();
    Ok(json!({ "count": entries.len(), "entries": entries }))
}
