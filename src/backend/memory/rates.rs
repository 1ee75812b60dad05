//! Rate-limit windows in memory: a sliding log per key and a check log per
//! credential-check key, the maps pruned once they grow large.

use super::MemoryBackend;
use crate::backend::{BackendResult, RateStore};
use crate::config::Window;
use crate::ratelimit::{CheckLog, Decision, SlidingLog};
use async_trait::async_trait;
use std::collections::HashMap;

#[async_trait]
impl RateStore for MemoryBackend {
    async fn rate_hit(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision> {
        let mut state = self.lock();
        prune_logs(&mut state.windows, now_ms, SlidingLog::newest);
        Ok(state
            .windows
            .entry(key.to_owned())
            .or_default()
            .hit(window, now_ms))
    }

    async fn check_reserve(
        &self,
        key: &str,
        window: Window,
        check: &str,
        now_ms: u64,
    ) -> BackendResult<Decision> {
        let mut state = self.lock();
        prune_logs(&mut state.checks, now_ms, CheckLog::newest);
        Ok(state
            .checks
            .entry(key.to_owned())
            .or_default()
            .reserve(window, check, now_ms))
    }

    async fn check_settle(&self, key: &str, check: &str, failed: bool) -> BackendResult<()> {
        if let Some(log) = self.lock().checks.get_mut(key) {
            log.settle(check, failed);
        }
        Ok(())
    }

    async fn rate_peek(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision> {
        let mut state = self.lock();
        Ok(match state.windows.get_mut(key) {
            Some(log) => log.peek(window, now_ms),
            None => SlidingLog::default().peek(window, now_ms),
        })
    }

    async fn rate_take(
        &self,
        key: &str,
        window: Window,
        want: u32,
        now_ms: u64,
    ) -> BackendResult<(u32, u64)> {
        let mut state = self.lock();
        prune_logs(&mut state.windows, now_ms, SlidingLog::newest);
        Ok(state
            .windows
            .entry(key.to_owned())
            .or_default()
            .take(window, want, now_ms))
    }
}

/// Keep a map of rate logs bounded: once it grows large, drop logs whose
/// newest entry is older than an hour (longer than any sensible window).
fn prune_logs<L>(logs: &mut HashMap<String, L>, now_ms: u64, newest: fn(&L) -> Option<u64>) {
    const SOFT_CAP: usize = 100_000;
    const STALE_MS: u64 = 3_600_000;
    if logs.len() > SOFT_CAP {
        logs.retain(|_, log| newest(log).is_some_and(|t| t + STALE_MS > now_ms));
    }
}
