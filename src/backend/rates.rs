//! Rate-limit state shared by every instance: exact sliding windows of hits
//! per key, and the failure windows of credential checks
//! ([`CheckLog`](crate::ratelimit::CheckLog)). The policies (which key,
//! which window) live in `crate::ratelimit` and its callers.

use super::BackendResult;
use crate::config::Window;
use crate::ratelimit::Decision;
use async_trait::async_trait;

/// Sliding windows and credential-check windows.
#[async_trait]
pub trait RateStore: Send + Sync + 'static {
    /// Exact sliding window: record one hit under `key` if there is room.
    async fn rate_hit(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision>;
    /// Reserve a slot for credential check `check` in `key`'s failure
    /// window (a [`crate::ratelimit::CheckLog`]): refused when failures and
    /// checks still running fill it.
    async fn check_reserve(
        &self,
        key: &str,
        window: Window,
        check: &str,
        now_ms: u64,
    ) -> BackendResult<Decision>;
    /// Settle a reserved check: a failure keeps its slot for the window, a
    /// good credential frees it.
    async fn check_settle(&self, key: &str, check: &str, failed: bool) -> BackendResult<()>;
    /// Exact sliding window: look without recording.
    async fn rate_peek(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision>;
    /// Lease up to `want` hits at once; returns (granted, retry_after_ms).
    async fn rate_take(
        &self,
        key: &str,
        window: Window,
        want: u32,
        now_ms: u64,
    ) -> BackendResult<(u32, u64)>;
}
