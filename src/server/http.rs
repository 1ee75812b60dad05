//! Plain HTTP endpoints: probes, metrics and the server API.
//!
//! `/health` and `/ready` are unauthenticated probes; `/metrics` is the
//! Prometheus text format; `/openrpc.json` is the protocol reference.
//! `/status` and `/api/*` take a bearer token or an API key
//! (`Authorization: Bearer …` / `X-API-Key: …`) with the scope each route
//! declares, are rate limited per identity, and answer errors as
//! `{"error":{"status":…,"message":…}}`.

use super::App;
use crate::auth::{self, Identity, Requirement, Scope};
use crate::backend::BackendError;
use crate::protocol::{RpcError, now_ms};
use crate::services::{channels, system};
use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;

/// An HTTP error answer.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
    retry_after_ms: Option<u64>,
}

impl HttpError {
    pub fn new(status: StatusCode, message: &str) -> Self {
        Self {
            status,
            message: message.to_owned(),
            retry_after_ms: None,
        }
    }

    pub fn unauthorized(reason: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, reason)
    }

    pub fn rate_limited(retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate limited")
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// How long a rate-limited client should wait (`Retry-After`).
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after_ms
    }

    pub fn with_message(mut self, message: &str) -> Self {
        self.message = message.to_owned();
        self
    }
}

impl From<BackendError> for HttpError {
    fn from(e: BackendError) -> Self {
        RpcError::from(e).into()
    }
}

impl From<RpcError> for HttpError {
    fn from(e: RpcError) -> Self {
        use crate::protocol::error as code;
        let status = match e.code {
            code::INVALID_PARAMS | code::INVALID_REQUEST | code::PARSE_ERROR => {
                StatusCode::BAD_REQUEST
            }
            code::UNAUTHORIZED => StatusCode::UNAUTHORIZED,
            code::FORBIDDEN => StatusCode::FORBIDDEN,
            code::NOT_FOUND => StatusCode::NOT_FOUND,
            code::CONFLICT => StatusCode::CONFLICT,
            code::RATE_LIMITED => {
                let retry = e.retry_after_ms();
                return Self::rate_limited(retry.unwrap_or(1000));
            }
            code::UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
            code::TIMEOUT => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let detail = e.data.as_ref().and_then(|d| d["reason"].as_str());
        let message = detail.map_or(e.message.clone(), |d| format!("{}: {d}", e.message));
        Self::new(status, &message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body =
            Json(json!({ "error": { "status": self.status.as_u16(), "message": self.message } }));
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        if let Some(ms) = self.retry_after_ms {
            headers.insert(header::RETRY_AFTER, retry_after(ms));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A `Retry-After` value: whole seconds, at least one.
pub fn retry_after(ms: u64) -> HeaderValue {
    HeaderValue::from(ms.div_ceil(1000).max(1))
}

impl From<crate::services::credentials::Refusal> for HttpError {
    fn from(r: crate::services::credentials::Refusal) -> Self {
        use crate::services::credentials::Refusal;
        match r {
            Refusal::Locked(retry) => Self::rate_limited(retry),
            Refusal::Rejected(e) => Self::unauthorized(&e.to_string()),
            Refusal::Backend(e) => e.into(),
        }
    }
}

/// Authenticate an API request and check its scope and rate limit.
pub(super) async fn api_identity(
    app: &App,
    peer: SocketAddr,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Identity, HttpError> {
    let ip = app.client_ips.client_ip(peer.ip(), headers);
    let extracted =
        auth::extract(headers, None).map_err(|e| HttpError::unauthorized(&e.to_string()))?;
    let identity = match extracted.credential {
        Some(credential) => {
            crate::services::credentials::verify(app, ip, &credential, "http").await?
        }
        None => app.auth.none_identity().ok_or_else(|| {
            HttpError::unauthorized("credentials required (Bearer token or X-API-Key)")
        })?,
    };
    if !identity.satisfies(Requirement::Scope(scope)) {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            &format!("requires scope {scope}"),
        ));
    }
    let window = app.live().rate_limits.http_per_key;
    let hit = app
        .rate_store()
        .rate_hit(&format!("http:{}", identity.sub), window, now_ms())
        .await?;
    if !hit.allowed {
        metrics::counter!("switchyard_rate_limited_total", "limit" => "http").increment(1);
        return Err(HttpError::rate_limited(hit.retry_after_ms));
    }
    Ok(identity)
}

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The protocol reference, an OpenRPC document; documentation, so no
/// credential is asked for. It changes only with the binary.
pub async fn openrpc() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "application/json"),
        (header::CACHE_CONTROL, "public, max-age=300"),
    ];
    (headers, crate::rpc::openrpc::document_json()).into_response()
}

pub async fn ready(State(app): State<App>) -> Response {
    let ready = app.is_ready();
    let body = json!({
        "ready": ready,
        "draining": app.is_draining(),
        "backend": app.health().is_available(),
        // Ready within `limits.unready_after_ms` of losing the backend.
        "degraded": !app.backend_ok(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn metrics(State(app): State<App>) -> Response {
    match &app.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            crate::telemetry::render(handle),
        )
            .into_response(),
        None => HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable",
        )
        .into_response(),
    }
}

pub(super) type Peer = ConnectInfo<SocketAddr>;

/// An HTTP request has no connection: no `conn:<id>` channel is its own.
const NO_CONN: &str = "";

pub async fn status(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    api_identity(&app, peer, &headers, Scope::Read).await?;
    Ok(Json(system::status_of(&app).await?))
}

#[derive(Deserialize)]
pub struct PublishBody {
    channel: String,
    #[serde(default = "message")]
    event: String,
    #[serde(default)]
    data: Value,
}

fn message() -> String {
    "message".into()
}

pub async fn publish(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Result<Json<PublishBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let identity = api_identity(&app, peer, &headers, Scope::Write).await?;
    let Json(body) = body.map_err(bad_body)?;
    channels::may_publish(&app, &identity, NO_CONN, &body.channel)?;
    let published =
        channels::publish_event(&app, &body.channel, &body.event, &body.data, true).await?;
    Ok(Json(published.to_json()))
}

#[derive(Deserialize)]
pub struct BroadcastBody {
    channels: Vec<String>,
    #[serde(default = "message")]
    event: String,
    #[serde(default)]
    data: Value,
}

/// Most channels one broadcast may name.
const MAX_BROADCAST: usize = 1000;

pub async fn broadcast(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Result<Json<BroadcastBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let identity = api_identity(&app, peer, &headers, Scope::Write).await?;
    let Json(body) = body.map_err(bad_body)?;
    if body.channels.is_empty() || body.channels.len() > MAX_BROADCAST {
        return Err(
            RpcError::invalid_params("channels", format!("1 to {MAX_BROADCAST} channels")).into(),
        );
    }
    // Every channel is checked before anything is published.
    for (i, channel) in body.channels.iter().enumerate() {
        channels::validate_name(&format!("channels[{i}]"), channel)?;
        channels::may_publish(&app, &identity, NO_CONN, channel)?;
    }
    let mut delivered = 0;
    for channel in &body.channels {
        delivered += channels::publish_event(&app, channel, &body.event, &body.data, true)
            .await?
            .delivered;
    }
    Ok(Json(
        json!({ "delivered": delivered, "channels": body.channels.len() }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisconnectBody {
    conn_id: Option<String>,
    user: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

pub async fn disconnect(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Result<Json<DisconnectBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    api_identity(&app, peer, &headers, Scope::Admin).await?;
    let Json(body) = body.map_err(bad_body)?;
    let reason = body
        .reason
        .as_deref()
        .unwrap_or("disconnected by the server API");
    let targets: Vec<String> = match (body.conn_id, body.user) {
        (Some(id), _) => vec![id],
        (None, Some(user)) => app
            .presence()
            .connections()
            .await?
            .into_iter()
            .filter(|c| c.identity.as_deref() == Some(user.as_str()))
            .map(|c| c.conn_id)
            .collect(),
        (None, None) => {
            return Err(RpcError::invalid_params("connId", "connId or user is required").into());
        }
    };
    let mut disconnected = 0;
    for id in &targets {
        if system::kick_conn(&app, id, reason).await.is_ok() {
            disconnected += 1;
        }
    }
    Ok(Json(json!({ "disconnected": disconnected })))
}

pub async fn presence(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(channel): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, HttpError> {
    let identity = api_identity(&app, peer, &headers, Scope::Read).await?;
    channels::may_subscribe(&app, &identity, NO_CONN, &channel, "see presence of")?;
    let page = crate::services::page::Page::from_query(&query)?;
    Ok(Json(channels::members_page(&app, &channel, &page).await?))
}

pub async fn channel_list(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let identity = api_identity(&app, peer, &headers, Scope::Read).await?;
    let list = channels::visible(&app, &identity, app.channel_store().channels().await?);
    Ok(Json(json!({ "count": list.len(), "channels": list })))
}

pub async fn sessions(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let identity = api_identity(&app, peer, &headers, Scope::Read).await?;
    let list = crate::services::sessions::visible(&app, &identity).await?;
    Ok(Json(json!({ "count": list.len(), "sessions": list })))
}

/// 413 for a body over the size limit, 400 for any other unusable body.
pub fn body_status(e: &axum::extract::rejection::JsonRejection) -> StatusCode {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    }
}

fn bad_body(e: axum::extract::rejection::JsonRejection) -> HttpError {
    HttpError::new(body_status(&e), &e.body_text())
}
