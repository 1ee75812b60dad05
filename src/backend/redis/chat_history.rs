//! A session's chat history on Redis: a capped list of JSON entries per
//! session, expiring a while after its last append.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::{BackendResult, ChatHistory};
use async_trait::async_trait;
use fred::prelude::{KeysInterface, ListInterface};
use serde_json::Value;

/// Chat history lives this long after its last append.
const HISTORY_TTL_MS: i64 = 7 * 24 * 3_600_000;

#[async_trait]
impl ChatHistory for RedisBackend {
    async fn append_history(
        &self,
        session_id: &str,
        entries: &[Value],
        max: usize,
    ) -> BackendResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let client = self.ready()?;
        let key = self.shared().keys.history(session_id);
        let values: Vec<String> = entries.iter().map(json).collect::<BackendResult<_>>()?;
        // One round trip; a reader between the steps sees at most `max` plus
        // this batch, never a lost entry.
        let pipeline = client.pipeline();
        let _: () = pipeline.rpush(&key, values).await.map_err(unavailable)?;
        let _: () = pipeline
            .ltrim(&key, -(max as i64), -1)
            .await
            .map_err(unavailable)?;
        let _: () = pipeline
            .pexpire(&key, HISTORY_TTL_MS, None)
            .await
            .map_err(unavailable)?;
        pipeline.all::<()>().await.map_err(unavailable)
    }

    async fn history(&self, session_id: &str, limit: usize) -> BackendResult<Vec<Value>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.ready()?;
        let raw: Vec<String> = client
            .lrange(self.shared().keys.history(session_id), -(limit as i64), -1)
            .await
            .map_err(unavailable)?;
        raw.iter().map(|r| parse(r)).collect()
    }
}
