//! Connection and system methods: ping, connect, auth, health, status,
//! presence, kick and logs.

use super::Ctx;
use crate::auth::{Identity, credentials};
use crate::protocol::{PROTOCOL_VERSION, RpcError, now_ms};
use crate::services::connections::{assume_role, authenticate, publish_presence};
use crate::services::page::Page;
use crate::services::system::{VERSION, kick_conn, status_of};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn ping() -> Value {
    json!({ "pong": true, "ts": now_ms() })
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectParams {
    /// Who the client is; shown in presence entries.
    #[serde(default)]
    client: Option<ClientInfo>,
    /// The role to act as (`operator` or `node`); the identity must hold it.
    role: Option<String>,
    /// Capabilities of a node: it is registered as an agent under its
    /// connection id (at most 64 names of 1-128 bytes).
    #[serde(default)]
    caps: Vec<String>,
    /// In-band credentials, as `auth` takes them.
    #[serde(default)]
    #[schemars(schema_with = "auth_params")]
    auth: Option<Value>,
    /// Lowest protocol version the client speaks (default: this server's).
    min_protocol: Option<u64>,
    /// Highest protocol version the client speaks (default: this server's).
    max_protocol: Option<u64>,
    /// Take a session back (`session.resume`) as part of the handshake.
    resume: Option<crate::rpc::sessions::ResumeParams>,
}

/// The params of `auth` (and `connect.auth`): exactly one credential.
pub fn auth_params(_: &mut SchemaGenerator) -> Schema {
    let secret = json!({ "type": "string", "minLength": 1 });
    let names: Vec<&str> = credentials::param_names().collect();
    let properties: serde_json::Map<String, Value> = names
        .iter()
        .map(|name| (name.to_string(), secret.clone()))
        .collect();
    let one_of: Vec<Value> = names
        .iter()
        .map(|name| json!({ "required": [name] }))
        .collect();
    schemars::json_schema!({
        "type": "object",
        "description": "Exactly one credential: a bearer token (JWT or static), an API key or the shared password.",
        "properties": properties,
        "oneOf": one_of,
    })
}

/// `connect.client`; kept verbatim in presence entries.
#[derive(Deserialize, serde::Serialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
}

/// The hello handshake.
pub async fn connect(ctx: &Ctx<'_>, p: ConnectParams) -> Result<Value, RpcError> {
    let min = p.min_protocol.unwrap_or(PROTOCOL_VERSION);
    let max = p.max_protocol.unwrap_or(PROTOCOL_VERSION);
    if min > PROTOCOL_VERSION || max < PROTOCOL_VERSION || min > max {
        return Err(RpcError::invalid_params(
            "minProtocol",
            format!("this server speaks protocol {PROTOCOL_VERSION}"),
        ));
    }
    if p.caps.len() > 64 || p.caps.iter().any(|c| c.is_empty() || c.len() > 128) {
        return Err(RpcError::invalid_params(
            "caps",
            "at most 64 names of 1-128 bytes",
        ));
    }
    {
        let mut state = ctx.conn.state();
        if let Some(client) = p.client {
            state.client = serde_json::to_value(client).unwrap_or_default();
        }
        state.caps = p.caps;
    }
    if let Some(auth) = &p.auth {
        let credential = credentials::from_params(auth)
            .map_err(|e| RpcError::invalid_params("auth", e.to_string()))?;
        authenticate(ctx.app, ctx.conn, credential, p.role.as_deref()).await?;
    } else {
        publish_presence(ctx.app, ctx.conn).await;
    }
    if let Some(want) = &p.role {
        assume_role(ctx.app, ctx.conn, want).await?;
    }
    let identity = ctx.conn.identity();
    crate::rpc::agents::register_caps(ctx.app, ctx.conn).await;
    let mut reply = hello(ctx, identity).await?;
    if let Some(resume) = p.resume {
        reply["resume"] = resume_at_connect(ctx, resume).await;
    }
    Ok(reply)
}

/// `connect.resume`: the handshake succeeds either way; the reply's
/// `resume` says whether the session came back (as `session.resume`
/// answers) or why not (`resumed: false` and the error).
async fn resume_at_connect(ctx: &Ctx<'_>, p: crate::rpc::sessions::ResumeParams) -> Value {
    let session_id = p.session_id().to_owned();
    let outcome = match super::authorize_as(ctx.conn, "session.resume") {
        Ok(()) => crate::rpc::sessions::resume(ctx, p).await,
        Err(e) => Err(e),
    };
    outcome.unwrap_or_else(
        |error| json!({ "sessionId": session_id, "resumed": false, "error": error }),
    )
}

async fn hello(ctx: &Ctx<'_>, identity: Option<Arc<Identity>>) -> Result<Value, RpcError> {
    let app = ctx.app;
    let limits = &app.live().limits;
    let connections = app
        .presence()
        .connection_counts()
        .await
        .map(|c| c.connections)
        .ok();
    let instances = app.instance_store().instances().await.map(|i| i.len()).ok();
    Ok(json!({
        "connId": ctx.conn.id(),
        "nodeId": app.instance_id,
        "protocol": PROTOCOL_VERSION,
        "server": { "version": VERSION, "uptimeMs": app.uptime_ms() },
        "authenticated": identity.is_some(),
        "role": identity.as_ref().map(|i| i.role.to_string()),
        "scopes": identity.as_ref().map(|i| i.scopes.names()),
        "presence": { "connections": connections, "instances": instances },
        "limits": {
            "maxPayload": limits.max_payload,
            "maxSessions": limits.max_sessions_per_client,
            "maxSubscriptions": limits.max_subscriptions,
            "maxBatch": limits.max_batch,
            "heartbeatMs": limits.heartbeat_ms,
        },
        "features": [
            "channels", "presence", "sessions", "batch", "server-requests",
            "agents", "runs", "approvals", "chat", "idempotency", "resume",
            "session-history", "history", "recover",
        ],
    }))
}

/// In-band credentials; also refreshes an expiring JWT.
pub async fn auth(ctx: &Ctx<'_>, p: Value) -> Result<Value, RpcError> {
    let credential =
        credentials::from_params(&p).map_err(|e| RpcError::invalid_params("", e.to_string()))?;
    let identity = authenticate(ctx.app, ctx.conn, credential, None).await?;
    Ok(json!({
        "authenticated": true,
        "sub": identity.sub,
        "role": identity.role.to_string(),
        "scopes": identity.scopes.names(),
        "expiresAt": identity.expires_at,
    }))
}

pub async fn health(ctx: &Ctx<'_>) -> Result<Value, RpcError> {
    let app = ctx.app;
    Ok(json!({
        "status": if app.is_ready() { "ok" } else { "degraded" },
        "nodeId": app.instance_id,
        "uptimeMs": app.uptime_ms(),
        "draining": app.is_draining(),
        "backend": { "kind": app.health().kind(), "available": app.health().is_available() },
        "connections": app.hub.len(),
    }))
}

/// This instance and the cluster.
pub async fn status(ctx: &Ctx<'_>) -> Result<Value, RpcError> {
    status_of(ctx.app).await
}

/// Connected clients cluster-wide, a page at a time: `count` entries in
/// this page, `total` connections, `nextCursor` for the next page (null on
/// the last).
pub async fn presence(ctx: &Ctx<'_>, p: Page) -> Result<Value, RpcError> {
    let backend = ctx.app.presence();
    let (page, counts) = tokio::join!(
        backend.connections_page(p.cursor(), p.limit()?),
        backend.connection_counts(),
    );
    let ((clients, next), total) = (page?, counts?.connections);
    Ok(json!({
        "count": clients.len(),
        "total": total,
        "clients": clients,
        "nextCursor": next,
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KickParams {
    /// The connection to close, on whichever instance holds it.
    conn_id: String,
    /// Sent with the close frame (default `kicked`; at most 100 characters).
    #[serde(default)]
    reason: Option<String>,
}

/// Close a connection on whichever instance holds it.
pub async fn kick(ctx: &Ctx<'_>, p: KickParams) -> Result<Value, RpcError> {
    let reason = p.reason.unwrap_or_else(|| "kicked".into());
    kick_conn(ctx.app, &p.conn_id, &reason).await?;
    Ok(json!({ "kicked": true, "connId": p.conn_id }))
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(default)]
pub struct LogsParams {
    /// Newest records to return (default 100, at most 1000).
    limit: Option<usize>,
    /// Lowest level shown: trace, debug, info, warn or error (default: all).
    level: Option<String>,
}

pub fn logs_tail(ctx: &Ctx<'_>, p: LogsParams) -> Result<Value, RpcError> {
    let limit = p.limit.unwrap_or(100).min(1000);
    let level = match p.level.as_deref() {
        None => tracing::Level::TRACE,
        Some(l) => l
            .parse()
            .map_err(|_| RpcError::invalid_params("level", "one of trace debug info warn error"))?,
    };
    let records = ctx.app.logs.tail(limit, level);
    Ok(json!({ "nodeId": ctx.app.instance_id, "records": records }))
}
