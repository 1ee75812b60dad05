//! Brute-force protection around every credential check (upgrade, HTTP
//! API, in-band `connect` / `auth`).
//!
//! Each attempt first *reserves* a slot in the client IP's failed-auth
//! window, atomically in the backend, and gives it back when the credential
//! turns out good. So a burst of concurrent bad attempts can never exceed
//! the window (a check-then-record scheme would let a whole burst through),
//! and once the window is full every attempt is refused before the
//! credential is even looked at — a good one included — until it slides.

use super::App;
use crate::auth::{AuthError, Credential, Identity};
use crate::backend::BackendError;
use crate::protocol::{RpcError, now_ms};
use std::net::IpAddr;

/// Why a credential check did not produce an identity.
#[derive(Debug)]
pub enum Refusal {
    /// The IP is locked out for this long (ms).
    Locked(u64),
    Rejected(AuthError),
    Backend(BackendError),
}

impl From<Refusal> for RpcError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Locked(retry) => RpcError::rate_limited(retry),
            Refusal::Rejected(e) => RpcError::unauthorized(e.to_string()),
            Refusal::Backend(e) => e.into(),
        }
    }
}

/// Check `credential` from `ip` under the failed-auth window.
pub async fn verify(
    app: &App,
    ip: IpAddr,
    credential: &Credential,
    carrier: &'static str,
) -> Result<Identity, Refusal> {
    let key = format!("authfail:{ip}");
    let window = app.config.rate_limits.auth_failures_per_ip;
    let slot = app
        .backend
        .rate_hit(&key, window, now_ms())
        .await
        .map_err(Refusal::Backend)?;
    if !slot.allowed {
        metrics::counter!("switchyard_rate_limited_total", "limit" => "auth_lockout").increment(1);
        return Err(Refusal::Locked(slot.retry_after_ms));
    }
    match app.auth.authenticate(credential) {
        Ok(identity) => {
            if let Err(e) = app.backend.rate_undo(&key).await {
                tracing::warn!(error = %e, "releasing an auth slot failed");
            }
            Ok(identity)
        }
        Err(e) => {
            metrics::counter!("switchyard_auth_failures_total", "carrier" => carrier).increment(1);
            Err(Refusal::Rejected(e))
        }
    }
}
