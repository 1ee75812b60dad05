//! `/mcp`: the gateway as an MCP server over Streamable HTTP, offering
//! the tools of every online agent on any instance.
//!
//! Both protocol generations are served on the one endpoint, told apart
//! by the `MCP-Protocol-Version` header ([`wire::Era`]):
//!
//! - **2026-07-28** (stateless): every POST stands alone. `_meta` must
//!   carry the protocol version and client capabilities (-32602), and the
//!   `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers must
//!   agree with the body (-32020, HTTP 400); `server/discover` says what
//!   is served; an unknown method is -32601 with HTTP 404; results carry
//!   `resultType` (lists also `ttlMs: 0`, `cacheScope: "private"`). A
//!   client cancels a call by closing its stream.
//! - **2025-11-25 and earlier** (handshake): `initialize` opens a session
//!   whose id (`Mcp-Session-Id`) is kept in the backend
//!   (`backend::McpSessionStore`), so any instance serves any request of
//!   it and an instance dying between two requests changes nothing; an
//!   unknown or ended session is 404; notifications are 202;
//!   `notifications/cancelled` cancels the call with that request id on
//!   whichever instance runs it; `GET` opens the session's stream, which
//!   announces `notifications/tools/list_changed` ([`listen`]); `DELETE`
//!   ends the session.
//!
//! Every request authenticates like the HTTP API (`Authorization: Bearer`
//! with a JWT, static token or API key, or `X-API-Key`): 401 with
//! `WWW-Authenticate` without one; listing needs `operator.read`, calling
//! `operator.write` (403 otherwise). The tools are those of
//! [`catalog`]; a call is [`call::answer`].

mod call;
mod catalog;
mod listen;
mod wire;

use super::App;
use super::http::{HttpError, Peer, api_identity};
use crate::auth::{Identity, Requirement, Scope};
use crate::backend::McpSession;
use crate::protocol::{RpcError, now_ms};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use wire::{Era, HANDSHAKE, MODERN, McpError};

/// How long a handshake session lives unused.
const SESSION_IDLE_MS: u64 = 3_600_000;
/// Longest request id a cancellation can name.
const MAX_ID_LEN: usize = 128;
const SESSION_HEADER: &str = "mcp-session-id";

pub fn routes(router: Router<App>) -> Router<App> {
    router.route("/mcp", post(post_mcp).get(get_mcp).delete(delete_mcp))
}

/// A request as parsed from the body.
struct Request {
    id: Option<Value>,
    method: String,
    params: Value,
}

async fn post_mcp(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let identity = match api_identity(&app, peer, &headers, Scope::Read).await {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    if body.len() > app.live().limits.max_payload {
        return HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    }
    let request = match parse(&body) {
        Ok(request) => request,
        Err(e) => return McpError::rpc(Era::Modern, &e).into_response(&Value::Null),
    };
    let era = match header(&headers, "mcp-protocol-version") {
        Some(MODERN) => Era::Modern,
        None => Era::Handshake,
        Some(v) if HANDSHAKE.contains(&v) => Era::Handshake,
        Some(v) => {
            let id = request.id.clone().unwrap_or(Value::Null);
            return unsupported(v).into_response(&id);
        }
    };
    let label = if era == Era::Modern {
        "2026-07-28"
    } else {
        "handshake"
    };
    metrics::counter!("switchyard_mcp_requests_total", "era" => label).increment(1);
    let ctx = Ctx {
        app: &app,
        identity: &identity,
        headers: &headers,
        era,
    };
    match era {
        Era::Modern => modern(&ctx, request).await,
        Era::Handshake => handshake(&ctx, request).await,
    }
}

/// What every step of one request needs.
struct Ctx<'a> {
    app: &'a App,
    identity: &'a Identity,
    headers: &'a HeaderMap,
    era: Era,
}

async fn modern(ctx: &Ctx<'_>, request: Request) -> Response {
    let Some(id) = request.id.clone() else {
        return StatusCode::ACCEPTED.into_response();
    };
    if let Err(e) = check_modern(ctx.headers, &request) {
        return e.into_response(&id);
    }
    dispatch(ctx, &id, &request, None).await
}

/// The 2026-07-28 checks: `_meta` names the version and capabilities, and
/// the routing headers agree with the body.
fn check_modern(headers: &HeaderMap, request: &Request) -> Result<(), McpError> {
    let meta = &request.params["_meta"];
    let version = meta["io.modelcontextprotocol/protocolVersion"].as_str();
    if version.is_none() || meta["io.modelcontextprotocol/clientCapabilities"].is_null() {
        return Err(McpError::new(
            StatusCode::BAD_REQUEST,
            crate::protocol::error::INVALID_PARAMS,
            "params._meta needs io.modelcontextprotocol/protocolVersion and clientCapabilities",
        ));
    }
    if version != Some(MODERN) {
        return Err(McpError::mismatch(
            "MCP-Protocol-Version and _meta protocolVersion differ",
        ));
    }
    if header(headers, "mcp-method") != Some(request.method.as_str()) {
        return Err(McpError::mismatch(
            "Mcp-Method and the body's method differ",
        ));
    }
    if matches!(
        request.method.as_str(),
        "tools/call" | "prompts/get" | "resources/read"
    ) {
        let named = request.params["name"]
            .as_str()
            .or_else(|| request.params["uri"].as_str());
        let sent = header(headers, "mcp-name").and_then(wire::decode_header);
        if named.is_none() || sent.as_deref() != named {
            return Err(McpError::mismatch("Mcp-Name and the body's name differ"));
        }
    }
    Ok(())
}

async fn handshake(ctx: &Ctx<'_>, request: Request) -> Response {
    let id = request.id.clone().unwrap_or(Value::Null);
    let session = match header(ctx.headers, SESSION_HEADER) {
        Some(sid) => match session_of(ctx.app, ctx.identity, sid).await {
            Ok(Some(_)) => Some(sid.to_owned()),
            Ok(None) => return session_not_found(&id),
            Err(e) => return McpError::rpc(ctx.era, &e).into_response(&id),
        },
        None => None,
    };
    if request.id.is_none() {
        if request.method == "notifications/cancelled" {
            cancel(ctx.app, session.as_deref(), &request.params["requestId"]).await;
        }
        return StatusCode::ACCEPTED.into_response();
    }
    if request.method == "initialize" {
        return initialize(ctx, &id, &request.params).await;
    }
    dispatch(ctx, &id, &request, session.as_deref()).await
}

/// The session `sid`, if it is open and belongs to `identity`.
async fn session_of(
    app: &App,
    identity: &Identity,
    sid: &str,
) -> Result<Option<McpSession>, RpcError> {
    let session = app
        .mcp_session_store()
        .touch_mcp_session(sid, SESSION_IDLE_MS)
        .await?;
    Ok(session.filter(|s| s.sub == identity.sub))
}

fn session_not_found(id: &Value) -> Response {
    McpError::new(
        StatusCode::NOT_FOUND,
        crate::protocol::error::INVALID_REQUEST,
        "session not found (ended or unknown): initialize again",
    )
    .into_response(id)
}

async fn initialize(ctx: &Ctx<'_>, id: &Value, params: &Value) -> Response {
    let asked = params["protocolVersion"].as_str().unwrap_or_default();
    let version = if HANDSHAKE.contains(&asked) {
        asked
    } else {
        HANDSHAKE[0]
    };
    let sid = uuid::Uuid::new_v4().simple().to_string();
    let session = McpSession {
        sub: ctx.identity.sub.clone(),
        protocol_version: version.to_owned(),
        client: params["clientInfo"]["name"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(128)
            .collect(),
        created_at: now_ms(),
    };
    if let Err(e) = ctx
        .app
        .mcp_session_store()
        .open_mcp_session(&sid, &session, SESSION_IDLE_MS)
        .await
    {
        return McpError::rpc(ctx.era, &e.into()).into_response(id);
    }
    let result = json!({
        "protocolVersion": version,
        "capabilities": capabilities(Era::Handshake),
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    });
    let mut response = wire::result(id, result);
    if let Ok(value) = HeaderValue::from_str(&sid) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}

const INSTRUCTIONS: &str = "The tools of the agents connected to this Switchyard gateway, on any \
                            of its instances. Some tools wait for a human's approval.";

/// What this server offers; the handshake revision's sessions are told
/// when the tools change (on their `GET` stream).
fn capabilities(era: Era) -> Value {
    let changes = era == Era::Handshake;
    json!({ "tools": { "listChanged": changes }, "resources": {}, "prompts": {} })
}

fn server_info() -> Value {
    json!({ "name": "switchyard", "version": env!("CARGO_PKG_VERSION") })
}

/// Answer one request of either revision.
async fn dispatch(ctx: &Ctx<'_>, id: &Value, request: &Request, session: Option<&str>) -> Response {
    let modern = ctx.era == Era::Modern;
    let listed = |mut result: Value| {
        if modern {
            result["resultType"] = json!("complete");
            result["ttlMs"] = json!(0);
            result["cacheScope"] = json!("private");
        }
        wire::result(id, result)
    };
    match request.method.as_str() {
        "server/discover" if modern => listed(json!({
            "supportedVersions": [MODERN],
            "capabilities": capabilities(Era::Modern),
            "instructions": INSTRUCTIONS,
            "_meta": { "io.modelcontextprotocol/serverInfo": server_info() },
        })),
        "ping" => listed(json!({})),
        "tools/list" => match catalog::tools(ctx.app).await {
            Ok(tools) => {
                let tools: Vec<Value> = tools.iter().map(catalog::Listed::to_json).collect();
                listed(json!({ "tools": tools }))
            }
            Err(e) => McpError::rpc(ctx.era, &e).into_response(id),
        },
        "resources/list" => listed(json!({ "resources": [] })),
        "resources/templates/list" => listed(json!({ "resourceTemplates": [] })),
        "prompts/list" => listed(json!({ "prompts": [] })),
        "tools/call" => call_tool(ctx, id, &request.params, session).await,
        method => McpError::rpc(ctx.era, &RpcError::method_not_found(method)).into_response(id),
    }
}

async fn call_tool(ctx: &Ctx<'_>, id: &Value, params: &Value, session: Option<&str>) -> Response {
    if !ctx.identity.satisfies(Requirement::Scope(Scope::Write)) {
        return McpError::new(
            StatusCode::FORBIDDEN,
            crate::protocol::error::FORBIDDEN,
            format!("tools/call requires scope {}", Scope::Write),
        )
        .into_response(id);
    }
    let Some(name) = params["name"]
        .as_str()
        .filter(|n| (1..=128).contains(&n.len()))
    else {
        let e = RpcError::invalid_params("name", "the tool's name, 1-128 bytes");
        return McpError::rpc(ctx.era, &e).into_response(id);
    };
    let arguments = match &params["arguments"] {
        Value::Null => json!({}),
        args @ Value::Object(_) => args.clone(),
        _ => {
            let e = RpcError::invalid_params("arguments", "an object");
            return McpError::rpc(ctx.era, &e).into_response(id);
        }
    };
    let (tool, serving) = match catalog::find(ctx.app, name).await {
        Ok(found) => found,
        Err(e) => return McpError::rpc(ctx.era, &e).into_response(id),
    };
    let stream = header(ctx.headers, "accept").is_some_and(|a| a.contains("text/event-stream"));
    let progress_token = match &params["_meta"]["progressToken"] {
        Value::Null => None,
        token => Some(token.clone()),
    };
    call::answer(call::ToolCall {
        app: ctx.app,
        identity: ctx.identity,
        era: ctx.era,
        id: id.clone(),
        tool,
        serving,
        arguments,
        progress_token,
        call_id: session.and_then(|s| call_id(s, id)),
        stream,
    })
    .await
}

/// The relay call id of request `id` in session `sid`: the same on every
/// instance, so a cancellation arriving anywhere finds the call.
fn call_id(sid: &str, id: &Value) -> Option<String> {
    let id = id.to_string();
    (id.len() <= MAX_ID_LEN).then(|| format!("mcp:{sid}:{id}"))
}

/// `notifications/cancelled`: every instance is told; the one serving the
/// call sends the agent `invoke.cancel` and ends the call.
async fn cancel(app: &App, session: Option<&str>, request_id: &Value) {
    let Some(call_id) = session.and_then(|s| call_id(s, request_id)) else {
        return;
    };
    let Ok(instances) = app.instance_store().instances().await else {
        return;
    };
    for instance in instances {
        app.relay.cancel(&call_id, &instance.id).await;
    }
}

/// `GET`: a handshake session's stream of announcements (405 without a
/// session: the stateless revision has none).
async fn get_mcp(State(app): State<App>, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    let identity = match api_identity(&app, peer, &headers, Scope::Read).await {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    let Some(sid) = header(&headers, SESSION_HEADER) else {
        return not_allowed();
    };
    if !header(&headers, "accept").is_some_and(|a| a.contains("text/event-stream")) {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    match session_of(&app, &identity, sid).await {
        Ok(Some(_)) => listen::stream(&app),
        Ok(None) => session_not_found(&Value::Null),
        Err(e) => HttpError::from(e).into_response(),
    }
}

fn not_allowed() -> Response {
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
    response
}

/// End a handshake session.
async fn delete_mcp(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Response {
    let identity = match api_identity(&app, peer, &headers, Scope::Read).await {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    let Some(sid) = header(&headers, SESSION_HEADER) else {
        return not_allowed();
    };
    match session_of(&app, &identity, sid).await {
        Ok(Some(_)) => match app.mcp_session_store().close_mcp_session(sid).await {
            Ok(_) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => HttpError::from(e).into_response(),
        },
        Ok(None) => session_not_found(&Value::Null),
        Err(e) => HttpError::from(e).into_response(),
    }
}

fn parse(body: &[u8]) -> Result<Request, RpcError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| RpcError::parse(format!("not JSON: {e}")))?;
    let Value::Object(mut message) = value else {
        return Err(RpcError::invalid_request(
            "one JSON-RPC message per request (no batches)",
        ));
    };
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::invalid_request("jsonrpc must be \"2.0\""));
    }
    let Some(Value::String(method)) = message.remove("method") else {
        return Err(RpcError::invalid_request("method must be a string"));
    };
    let id = message.remove("id");
    if id
        .as_ref()
        .is_some_and(|id| !(id.is_string() || id.is_number()))
    {
        return Err(RpcError::invalid_request("id must be a string or a number"));
    }
    let params = message.remove("params").unwrap_or(Value::Null);
    if !(params.is_object() || params.is_null()) {
        return Err(RpcError::invalid_params("params", "an object"));
    }
    Ok(Request { id, method, params })
}

fn unsupported(requested: &str) -> McpError {
    let mut supported = vec![MODERN];
    supported.extend(HANDSHAKE);
    McpError::new(
        StatusCode::BAD_REQUEST,
        wire::UNSUPPORTED_VERSION,
        format!("protocol version {requested:?} is not supported"),
    )
    .with_data(json!({ "supported": supported, "requested": requested }))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
