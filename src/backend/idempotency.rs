//! Idempotency keys: a call sent with a key runs once cluster-wide; a
//! retry with the same key finds the stored result, or that the call is
//! still running (the waiting and the scoping are `rpc::idempotent`'s).

use super::BackendResult;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an idempotency key holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Idempotency {
    /// A call with this key is running somewhere.
    Pending,
    /// It finished with this result.
    Done { result: Value },
}

/// Idempotency keys, each held for a time.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claim `key` for `ttl_ms` if nobody holds it: `None` means the caller
    /// now runs the call; otherwise what the key holds.
    async fn claim_idempotency(&self, key: &str, ttl_ms: u64)
    -> BackendResult<Option<Idempotency>>;
    async fn idempotency(&self, key: &str) -> BackendResult<Option<Idempotency>>;
    /// Store the result for `ttl_ms` (`None`: release the key so a retry
    /// runs again).
    async fn finish_idempotency(
        &self,
        key: &str,
        result: Option<&Value>,
        ttl_ms: u64,
    ) -> BackendResult<()>;
}
