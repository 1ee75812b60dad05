//! Idempotency keys on Redis: one string per key holding the JSON state
//! (pending, or done with its result), with the key's TTL; claiming is
//! `SET NX`, so one caller wins cluster-wide.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::{BackendResult, Idempotency, IdempotencyStore};
use async_trait::async_trait;
use fred::prelude::{Expiration, KeysInterface, SetOptions};
use serde_json::Value;

#[async_trait]
impl IdempotencyStore for RedisBackend {
    async fn claim_idempotency(
        &self,
        key: &str,
        ttl_ms: u64,
    ) -> BackendResult<Option<Idempotency>> {
        let client = self.ready()?;
        let redis_key = self.shared().keys.idempotency(key);
        let marker = json(&Idempotency::Pending)?;
        // The holder may finish (and the key expire) between the two steps:
        // try twice before calling it claimed by someone else.
        for _ in 0..2 {
            let set: Option<String> = client
                .set(
                    &redis_key,
                    marker.as_str(),
                    Some(Expiration::PX(ttl_ms as i64)),
                    Some(SetOptions::NX),
                    false,
                )
                .await
                .map_err(unavailable)?;
            if set.is_some() {
                return Ok(None);
            }
            if let Some(held) = self.idempotency(key).await? {
                return Ok(Some(held));
            }
        }
        Ok(Some(Idempotency::Pending))
    }

    async fn idempotency(&self, key: &str) -> BackendResult<Option<Idempotency>> {
        let client = self.ready()?;
        let raw: Option<String> = client
            .get(self.shared().keys.idempotency(key))
            .await
            .map_err(unavailable)?;
        raw.as_deref().map(parse).transpose()
    }

    async fn finish_idempotency(
        &self,
        key: &str,
        result: Option<&Value>,
        ttl_ms: u64,
    ) -> BackendResult<()> {
        let client = self.ready()?;
        let redis_key = self.shared().keys.idempotency(key);
        match result {
            Some(result) => {
                let done = json(&Idempotency::Done {
                    result: result.clone(),
                })?;
                client
                    .set::<(), _, _>(
                        redis_key,
                        done,
                        Some(Expiration::PX(ttl_ms as i64)),
                        None,
                        false,
                    )
                    .await
                    .map_err(unavailable)
            }
            None => client.del::<(), _>(redis_key).await.map_err(unavailable),
        }
    }
}
