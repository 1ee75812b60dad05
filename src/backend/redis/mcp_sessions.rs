//! MCP sessions on Redis: one string per session (JSON) whose TTL is the
//! idle time; a use reads it and renews the TTL in one pipeline.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::{BackendResult, McpSession, McpSessionStore};
use async_trait::async_trait;
use fred::prelude::{Expiration, KeysInterface};

#[async_trait]
impl McpSessionStore for RedisBackend {
    async fn open_mcp_session(
        &self,
        id: &str,
        session: &McpSession,
        idle_ms: u64,
    ) -> BackendResult<()> {
        let client = self.ready()?;
        client
            .set::<(), _, _>(
                self.shared().keys.mcp_session(id),
                json(session)?,
                Some(Expiration::PX(idle_ms as i64)),
                None,
                false,
            )
            .await
            .map_err(unavailable)
    }

    async fn touch_mcp_session(&self, id: &str, idle_ms: u64) -> BackendResult<Option<McpSession>> {
        let client = self.ready()?;
        let key = self.shared().keys.mcp_session(id);
        let pipeline = client.pipeline();
        let _: () = pipeline.get(&key).await.map_err(unavailable)?;
        let _: () = pipeline
            .pexpire(&key, idle_ms as i64, None)
            .await
            .map_err(unavailable)?;
        let (raw, _): (Option<String>, i64) = pipeline.all().await.map_err(unavailable)?;
        raw.as_deref().map(parse).transpose()
    }

    async fn close_mcp_session(&self, id: &str) -> BackendResult<bool> {
        let client = self.ready()?;
        let removed: i64 = client
            .del(self.shared().keys.mcp_session(id))
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }
}
