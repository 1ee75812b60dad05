//! The WebSocket upgrade: every guard runs here, before a socket exists.
//!
//! Order: draining (503) → client IP (trusted proxies) → `Origin` (403) →
//! connection-attempt window per IP (429) → failed-auth lock-out (429) →
//! credentials from any carrier (401 when present and wrong) → per-IP and
//! global connection caps (429 / 503) → upgrade with the frame size limit.

use super::App;
use super::http::HttpError;
use crate::auth::{self, Extracted};
use crate::conn::{self, ConnSetup};
use crate::hub::IpSlot;
use crate::protocol::now_ms;
use crate::refusals::{Refused, refused};
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};

pub async fn ws_handler(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) if uri.path() == "/" => {
            if app.config.ui.enabled && super::ui::wants_html(&headers) {
                return super::ui::index(&app, &headers).await;
            }
            return landing(&app, &headers);
        }
        Err(rejection) => return rejection.into_response(),
    };
    match admit(&app, peer.ip(), &headers, uri.query()).await {
        Ok((setup, protocol)) => upgrade(app, ws, setup, protocol),
        Err(e) => e.into_response(),
    }
}

/// `GET /` without an upgrade and not from a browser (or with the UI
/// off): say what this is, and where to connect
/// (the address the request came to; it passed the `Host` check).
fn landing(app: &App, headers: &HeaderMap) -> Response {
    let scheme = if app.config.tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| format!("127.0.0.1:{}", app.config.port), str::to_owned);
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "Switchyard gateway. Connect a WebSocket client to {scheme}://{host}/ws \
             and speak JSON-RPC 2.0: {{\"id\":1,\"method\":\"ping\"}}\n"
        ),
    )
        .into_response()
}

async fn admit(
    app: &App,
    peer: IpAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(ConnSetup<IpSlot>, Option<String>), HttpError> {
    if app.is_draining() {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is draining",
        ));
    }
    let ip = app.client_ips.client_ip(peer, headers);
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !app.origins.allows(origin, host) {
        refused(Refused::Origin, ip, origin.unwrap_or_default());
        return Err(HttpError::new(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    let limits = &app.live().rate_limits;
    let attempt = app
        .rate_store()
        .rate_hit(&format!("connect:{ip}"), limits.connect_per_ip, now_ms())
        .await?;
    if !attempt.allowed {
        metrics::counter!("switchyard_rate_limited_total", "limit" => "connect").increment(1);
        refused(Refused::ConnectRate, ip, "upgrade");
        return Err(HttpError::rate_limited(attempt.retry_after_ms));
    }
    let Extracted {
        credential,
        selected_protocol,
    } = auth::extract(headers, query).map_err(|e| HttpError::unauthorized(&e.to_string()))?;
    let identity = match credential {
        Some(credential) => {
            Some(crate::services::credentials::verify(app, ip, &credential, "upgrade").await?)
        }
        None => app.auth.none_identity(),
    };
    let ip_slot = app
        .hub
        .reserve_ip(ip, app.config.limits.max_connections_per_ip)
        .ok_or_else(|| {
            refused(Refused::PerAddress, ip, "upgrade");
            HttpError::rate_limited(1000).with_message("too many connections from this address")
        })?;
    if app.hub.len() >= app.live().limits.max_connections {
        refused(Refused::Capacity, ip, "upgrade");
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached",
        ));
    }
    let setup = ConnSetup {
        id: uuid::Uuid::new_v4().simple().to_string(),
        ip,
        identity,
        guard: ip_slot,
    };
    Ok((setup, selected_protocol))
}

/// Initial read buffer of a socket.
const READ_BUFFER: usize = 2 * 1024;

fn upgrade(
    app: App,
    ws: WebSocketUpgrade,
    setup: ConnSetup<IpSlot>,
    protocol: Option<String>,
) -> Response {
    let max = app.live().limits.max_payload;
    let mut ws = ws
        .max_message_size(max)
        .max_frame_size(max)
        // Memory per idle connection is a first-class number: tungstenite
        // allocates a 128 KiB read buffer per socket by default; 2 KiB
        // grows as a large message needs it. Frames are written when the
        // writer flushes, which coalesces what was queued (see
        // `conn::WRITE_BATCH`).
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(conn::WRITE_BATCH);
    if let Some(protocol) = protocol {
        ws = ws.protocols([protocol]);
    }
    ws.on_upgrade(move |socket| conn::serve(app, socket, setup))
}
