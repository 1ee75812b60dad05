//! Idempotency keys in memory: each key's state and when it expires;
//! expired keys are dropped on the next claim.

use super::MemoryBackend;
use crate::backend::{BackendResult, Idempotency, IdempotencyStore};
use async_trait::async_trait;
use serde_json::Value;

#[async_trait]
impl IdempotencyStore for MemoryBackend {
    async fn claim_idempotency(
        &self,
        key: &str,
        ttl_ms: u64,
    ) -> BackendResult<Option<Idempotency>> {
        let now = crate::protocol::now_ms();
        let mut state = self.lock();
        state.idempotency.retain(|_, (_, expires)| *expires > now);
        if let Some((held, _)) = state.idempotency.get(key) {
            return Ok(Some(held.clone()));
        }
        state
            .idempotency
            .insert(key.to_owned(), (Idempotency::Pending, now + ttl_ms));
        Ok(None)
    }

    async fn idempotency(&self, key: &str) -> BackendResult<Option<Idempotency>> {
        let now = crate::protocol::now_ms();
        Ok(self
            .lock()
            .idempotency
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(held, _)| held.clone()))
    }

    async fn finish_idempotency(
        &self,
        key: &str,
        result: Option<&Value>,
        ttl_ms: u64,
    ) -> BackendResult<()> {
        let mut state = self.lock();
        match result {
            Some(result) => {
                let done = Idempotency::Done {
                    result: result.clone(),
                };
                let expires = crate::protocol::now_ms() + ttl_ms;
                state.idempotency.insert(key.to_owned(), (done, expires));
            }
            None => {
                state.idempotency.remove(key);
            }
        }
        Ok(())
    }
}
