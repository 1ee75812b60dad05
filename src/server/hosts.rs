//! The `Host` check in front of every route (see
//! [`crate::auth::HostPolicy`]): a request for a name this gateway does
//! not answer to is refused before any handler runs, upgrades included.
//! The liveness and readiness probes answer whatever the name: they do
//! nothing and tell nothing, and load balancers' checks (haproxy's
//! `httpchk`) send no `Host` at all.

use super::http::HttpError;
use crate::app::App;
use crate::refusals::{Refused, refused};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};

/// Refuse (403) a request whose `Host` (or HTTP/2 authority) is not allowed.
pub async fn check(State(app): State<App>, request: Request, next: Next) -> Response {
    if matches!(request.uri().path(), "/health" | "/ready") {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !app.hosts.allows(host) {
        metrics::counter!("switchyard_rejected_hosts_total").increment(1);
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        refused(Refused::Host, peer, host.unwrap_or_default());
        return HttpError::new(StatusCode::FORBIDDEN, "host not allowed").into_response();
    }
    next.run(request).await
}
