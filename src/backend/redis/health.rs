//! The Redis backend as a whole: availability (driven by fred's connection
//! events and the pub/sub canary, see [`RedisBackend`]'s connection
//! watch), the resync signal bumped on every reconnect, and the epoch key
//! that tells a reconnect from a Redis that came back empty.

use super::{RedisBackend, unavailable};
use crate::backend::{BackendResult, Health};
use async_trait::async_trait;
use fred::prelude::KeysInterface;
use std::sync::atomic::Ordering;
use tokio::sync::watch;

#[async_trait]
impl Health for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_available(&self) -> bool {
        self.0.connected.load(Ordering::Relaxed) && self.0.pubsub_ok.load(Ordering::Relaxed)
    }

    fn pubsub_lag_ms(&self) -> Option<u64> {
        match self.0.pubsub_lag_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            lag => Some(lag),
        }
    }

    fn resync_events(&self) -> watch::Receiver<u64> {
        self.0.resync.subscribe()
    }

    async fn epoch(&self) -> BackendResult<String> {
        let client = self.ready()?;
        let key = self.0.keys.epoch();
        // Claim the key if it is missing (Redis came back empty), then read
        // whichever token won: in order on one connection, in one round
        // trip.
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        let pipeline = client.pipeline();
        let _: () = pipeline
            .set(
                &key,
                fresh,
                None,
                Some(fred::prelude::SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        let _: () = pipeline.get(&key).await.map_err(unavailable)?;
        let (_, token): (Option<String>, String) = pipeline.all().await.map_err(unavailable)?;
        Ok(token)
    }
}
