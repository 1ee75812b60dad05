//! Brute-force protection around every credential check (upgrade, HTTP
//! API, in-band `connect` / `auth`).
//!
//! Each attempt first *reserves* a slot in the client IP's failed-auth
//! window, atomically in the backend, then settles it: a failure keeps the
//! slot for the window, a good credential gives it back. So a burst of
//! concurrent bad attempts can never exceed the window (a check-then-record
//! scheme would let a whole burst through), and once the window is full
//! every attempt is refused before the credential is even looked at — a
//! good one included. The refusal's retry says when a slot frees: when the
//! oldest failure leaves the window, or in a second when the window holds
//! checks still running (many clients behind one address connecting at
//! once), whose good ones free their slots in milliseconds.

use crate::app::App;
use crate::auth::{AuthError, Credential, Identity};
use crate::backend::BackendError;
use crate::protocol::{RpcError, now_ms};
use crate::refusals::{Refused, refused};
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
    let window = app.live().rate_limits.auth_failures_per_ip;
    let check = uuid::Uuid::new_v4().simple().to_string();
    let slot = app
        .rate_store()
        .check_reserve(&key, window, &check, now_ms())
        .await
        .map_err(Refusal::Backend)?;
    if !slot.allowed {
        metrics::counter!("switchyard_rate_limited_total", "limit" => "auth_lockout").increment(1);
        refused(Refused::LockedOut, ip, carrier);
        return Err(Refusal::Locked(slot.retry_after_ms));
    }
    let outcome = app.auth.authenticate(credential);
    if let Err(e) = app
        .rate_store()
        .check_settle(&key, &check, outcome.is_err())
        .await
    {
        // Unsettled, the slot counts as a failure once its check is older
        // than `CHECK_PENDING_MS`, and leaves with the window.
        tracing::warn!(error = %e, "settling an auth slot failed");
    }
    outcome.map_err(|e| {
        metrics::counter!("switchyard_auth_failures_total", "carrier" => carrier).increment(1);
        refused(Refused::Credentials, ip, &format!("{carrier}: {e}"));
        Refusal::Rejected(e)
    })
}
