//! `idempotencyKey` on `node.invoke`, `agent.run` and `chat.send`.
//!
//! The first call with a key claims it in the backend (for as long as the
//! call may take); when it succeeds its result is kept for five minutes. A
//! retry with the same key — on any instance — returns that result, or, if
//! the first call is still running, waits for it (polling the key) instead
//! of running twice. A failed call releases the key so a retry runs again.
//! Keys are scoped by method and caller identity: nobody reads another
//! identity's results.

use crate::app::App;
use crate::protocol::RpcError;
use serde_json::Value;
use std::future::Future;
use std::time::Duration;

use crate::backend::Idempotency;

/// How long a result is returned to retries.
pub const RESULT_TTL: Duration = Duration::from_secs(300);
/// How often a retry looks whether the call it joined has finished.
const POLL: Duration = Duration::from_millis(50);
/// Longest accepted key.
const MAX_KEY_LEN: usize = 200;

/// The backend key of `key` for `method` and `sub`.
pub fn full_key(method: &str, sub: &str, key: &str) -> String {
    format!("{method}:{sub}:{key}")
}

/// Run `call` at most once per (`method`, `sub`, `key`); see the module
/// docs. `timeout` bounds both the call's claim and a retry's wait.
pub async fn once<F, Fut>(
    app: &App,
    method: &str,
    sub: &str,
    key: Option<&str>,
    timeout: Duration,
    call: F,
) -> Result<Value, RpcError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Value, RpcError>>,
{
    let Some(key) = key else {
        return call().await;
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(RpcError::invalid_params(
            "idempotencyKey",
            format!("1-{MAX_KEY_LEN} bytes"),
        ));
    }
    let full = full_key(method, sub, key);
    let claim_ttl = (timeout + Duration::from_secs(30)).as_millis() as u64;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match app
            .idempotency_store()
            .claim_idempotency(&full, claim_ttl)
            .await?
        {
            None => {
                let outcome = call().await;
                let stored = outcome.as_ref().ok();
                let ttl = RESULT_TTL.as_millis() as u64;
                if let Err(e) = app
                    .idempotency_store()
                    .finish_idempotency(&full, stored, ttl)
                    .await
                {
                    tracing::warn!(error = %e, "storing an idempotent result failed");
                }
                return outcome;
            }
            Some(Idempotency::Done { result }) => return Ok(result),
            Some(Idempotency::Pending) => {
                // Join the call in flight: wait until it finishes (or is
                // released after a failure, then claim it ourselves).
                loop {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(RpcError::timeout(
                            "the call with this idempotencyKey is still running",
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                    match app.idempotency_store().idempotency(&full).await? {
                        Some(Idempotency::Done { result }) => return Ok(result),
                        Some(Idempotency::Pending) => continue,
                        None => break,
                    }
                }
            }
        }
    }
}
