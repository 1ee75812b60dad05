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
use crate::conn::ConnHandle;
use crate::protocol::{RpcError, now_ms};
use crate::refusals::{Refused, refused};
use crate::services::devices::{self, DeviceAuthError};
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
    verify_on(app, ip, credential, carrier, None).await
}

/// [`verify`] for connection `conn` authenticating in-band, whose
/// challenge a device may have signed.
pub async fn verify_on(
    app: &App,
    ip: IpAddr,
    credential: &Credential,
    carrier: &'static str,
    conn: Option<&ConnHandle>,
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
    let outcome = match check_credential(app, credential, conn).await {
        Err(DeviceAuthError::Backend(e)) => {
            // Not the client's failure: give the slot back.
            let _ = app.rate_store().check_settle(&key, &check, false).await;
            return Err(Refusal::Backend(e));
        }
        Err(DeviceAuthError::Rejected(e)) => Err(e),
        Ok(identity) => Ok(identity),
    };
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

/// Device tokens (a `deviceToken`, or a bearer token that is one) are
/// looked up in the backend; everything else is the authenticator's.
async fn check_credential(
    app: &App,
    credential: &Credential,
    conn: Option<&ConnHandle>,
) -> Result<Identity, DeviceAuthError> {
    match credential {
        Credential::Device { token, signature } => {
            devices::authenticate(app, token, signature.as_deref(), conn).await
        }
        Credential::Bearer(token) if devices::is_device_token(token) && devices::enabled(app) => {
            devices::authenticate(app, token, None, conn).await
        }
        _ => Ok(app.auth.authenticate(credential)?),
    }
}
