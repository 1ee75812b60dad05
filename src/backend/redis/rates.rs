//! Rate-limit windows on Redis: one sorted set per key (a member per
//! grant, `<id>#<hits>`, scored by time; a leased share of an identity's
//! window is one member however many hits it holds) and its total beside
//! it, each window with a hash tag of its own so windows spread over a
//! cluster's shards. Every decision is one Lua call (`RATE` for sliding
//! windows, `CHECK` for credential checks), atomic across instances.

use super::{RedisBackend, unavailable};
use crate::backend::{BackendResult, RateStore};
use crate::config::Window;
use crate::ratelimit::Decision;
use async_trait::async_trait;

#[async_trait]
impl RateStore for RedisBackend {
    async fn rate_hit(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision> {
        let (granted, count, retry) = self.rate(key, window, 1, now_ms).await?;
        Ok(Decision {
            allowed: granted == 1,
            count,
            retry_after_ms: if granted == 1 { 0 } else { retry },
        })
    }

    async fn check_reserve(
        &self,
        key: &str,
        window: Window,
        check: &str,
        now_ms: u64,
    ) -> BackendResult<Decision> {
        use crate::ratelimit::{CHECK_PENDING_MS, CHECK_RETRY_MS};
        let args = [
            now_ms,
            window.window_ms,
            u64::from(window.limit),
            CHECK_PENDING_MS,
            CHECK_RETRY_MS,
        ];
        let (allowed, count, retry) = self.check(key, "reserve", check, &args).await?;
        Ok(Decision {
            allowed: allowed == 1,
            count: count.max(0) as u32,
            retry_after_ms: if allowed == 1 { 0 } else { retry.max(1) as u64 },
        })
    }

    async fn check_settle(&self, key: &str, check: &str, failed: bool) -> BackendResult<()> {
        let op = if failed { "fail" } else { "pass" };
        self.check(key, op, check, &[]).await.map(|_| ())
    }

    async fn rate_peek(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision> {
        let (_, count, retry) = self.rate(key, window, 0, now_ms).await?;
        let allowed = count < window.limit;
        Ok(Decision {
            allowed,
            count,
            retry_after_ms: if allowed { 0 } else { retry },
        })
    }

    async fn rate_take(
        &self,
        key: &str,
        window: Window,
        want: u32,
        now_ms: u64,
    ) -> BackendResult<(u32, u64)> {
        let (granted, _, retry) = self.rate(key, window, want, now_ms).await?;
        Ok((granted, if granted == 0 { retry } else { 0 }))
    }
}

impl RedisBackend {
    /// One sliding-window script call: (granted, count, retry_after_ms).
    async fn rate(
        &self,
        key: &str,
        window: Window,
        want: u32,
        now_ms: u64,
    ) -> BackendResult<(u32, u32, u64)> {
        let client = self.ready()?;
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let (granted, count, retry): (i64, i64, i64) = self
            .0
            .scripts
            .rate
            .evalsha_with_reload(
                client,
                vec![self.0.keys.rate(key), self.0.keys.rate_total(key)],
                vec![
                    now_ms.to_string(),
                    window.window_ms.to_string(),
                    window.limit.to_string(),
                    want.to_string(),
                    unique,
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok((
            granted.max(0) as u32,
            count.max(0) as u32,
            retry.max(0) as u64,
        ))
    }

    /// One `CHECK` script call: (allowed, count, retry_after_ms).
    async fn check(
        &self,
        key: &str,
        op: &str,
        check: &str,
        args: &[u64],
    ) -> BackendResult<(i64, i64, i64)> {
        let client = self.ready()?;
        let mut argv = vec![op.to_owned(), check.to_owned()];
        argv.extend(args.iter().map(u64::to_string));
        self.0
            .scripts
            .check
            .evalsha_with_reload(client, vec![self.0.keys.rate(key)], argv)
            .await
            .map_err(unavailable)
    }
}
