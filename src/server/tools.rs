//! `POST /tools/invoke` (and `GET /tools/invoke?tool=…&args=…`): call a
//! tool on an online agent that registered it; and `POST /hooks/{name}`:
//! webhook ingestion.
//!
//! A tool call is the same `invoke` request `node.invoke` sends, with
//! `command` = the tool's name. A webhook's body (JSON, or text) is
//! published as event `hook` on channel `hook:<name>`; hooks must be
//! configured, and one with a secret is authenticated by its HMAC-SHA256
//! signature instead of an API key.

use super::App;
use super::http::{HttpError, Peer, api_identity};
use crate::agents::select::Policy;
use crate::auth::Scope;
use crate::protocol::RpcError;
use crate::relay::CallSpec;
use crate::services::agents::{Selector, call_agents};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolBody {
    tool: String,
    #[serde(default)]
    args: Value,
    agent_id: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolQuery {
    tool: String,
    /// JSON text of the arguments.
    args: Option<String>,
    agent_id: Option<String>,
    timeout_ms: Option<u64>,
}

pub async fn invoke_post(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Result<Json<ToolBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let identity = api_identity(&app, peer, &headers, Scope::Write).await?;
    let Json(body) =
        body.map_err(|e| HttpError::new(super::http::body_status(&e), &e.body_text()))?;
    invoke(&app, &identity, body).await
}

pub async fn invoke_get(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<ToolQuery>,
) -> Result<Json<Value>, HttpError> {
    let identity = api_identity(&app, peer, &headers, Scope::Write).await?;
    let args = match &query.args {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| RpcError::invalid_params("args", format!("not JSON: {e}")))?,
        None => Value::Null,
    };
    let body = ToolBody {
        tool: query.tool,
        args,
        agent_id: query.agent_id,
        timeout_ms: query.timeout_ms,
    };
    invoke(&app, &identity, body).await
}

async fn invoke(
    app: &App,
    identity: &crate::auth::Identity,
    body: ToolBody,
) -> Result<Json<Value>, HttpError> {
    if body.tool.is_empty() || body.tool.len() > 128 {
        return Err(RpcError::invalid_params("tool", "1-128 bytes").into());
    }
    let timeout = crate::services::agents::timeout(app, body.timeout_ms)?;
    let selector = Selector {
        id: body.agent_id,
        tool: Some(body.tool.clone()),
        ..Default::default()
    };
    let request = json!({
        "command": body.tool,
        "params": body.args,
        "caller": { "connId": null, "identity": identity.sub, "via": "http" },
    });
    let (agent, result) = call_agents(app, &selector, Policy::default(), |_| {
        CallSpec::new("invoke", &request, timeout)
    })
    .await?;
    Ok(Json(
        json!({ "ok": true, "tool": body.tool, "agentId": agent.agent_id, "result": result }),
    ))
}

/// Longest webhook body.
const MAX_HOOK_BODY: usize = 1 << 20;

pub async fn hook(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    let live = app.live();
    let Some(hook) = live.hooks.iter().find(|h| h.name == name) else {
        return Err(HttpError::new(StatusCode::NOT_FOUND, "no such hook"));
    };
    match &hook.secret {
        Some(secret) => verify_signature(secret, &headers, &body)?,
        None => {
            api_identity(&app, peer, &headers, Scope::Write).await?;
        }
    }
    if body.len() > MAX_HOOK_BODY {
        return Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body larger than 1 MiB",
        ));
    }
    let data = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let channel = format!("hook:{name}");
    let published =
        crate::services::channels::publish_event(&app, &channel, "hook", &data, true).await?;
    let mut reply = published.to_json();
    reply["channel"] = json!(channel);
    Ok(Json(reply))
}

/// Check `X-Signature-256` (or `X-Hub-Signature-256`): `sha256=<hex>` of
/// HMAC-SHA256(secret, body), compared in constant time by ring.
fn verify_signature(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), HttpError> {
    let header = headers
        .get("x-signature-256")
        .or_else(|| headers.get("x-hub-signature-256"))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| HttpError::unauthorized("missing X-Signature-256"))?;
    let hex = header.strip_prefix("sha256=").unwrap_or(header);
    let signature = decode_hex(hex).ok_or_else(|| HttpError::unauthorized("bad signature"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, body, &signature).map_err(|_| {
        metrics::counter!("switchyard_auth_failures_total", "carrier" => "hook").increment(1);
        HttpError::unauthorized("bad signature")
    })
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The signature header value for `body` (for clients and tests).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_and_reject_tampering() {
        let secret = "hook-secret-0123456789";
        let mut headers = HeaderMap::new();
        headers.insert("x-signature-256", sign(secret, b"{}").parse().unwrap());
        assert!(verify_signature(secret, &headers, b"{}").is_ok());
        assert!(verify_signature(secret, &headers, b"{ }").is_err());
        assert!(verify_signature("another-secret-0123", &headers, b"{}").is_err());
        headers.insert("x-signature-256", "sha256=zz".parse().unwrap());
        assert!(verify_signature(secret, &headers, b"{}").is_err());
        // The known HMAC-SHA256 test vector (RFC 4231 case 2).
        let tag = sign("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            tag,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
