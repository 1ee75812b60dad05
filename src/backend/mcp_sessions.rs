//! MCP sessions of the 2025-11-25 revision (`Mcp-Session-Id`): who opened
//! each one and at which protocol version, kept for an idle time that
//! every use renews. Any instance serves any request of a session because
//! the record lives here, not in the instance that answered `initialize`.

use super::BackendResult;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One MCP session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct McpSession {
    /// The identity that opened it; only that identity may use it.
    pub sub: String,
    pub protocol_version: String,
    /// The client's `clientInfo.name`, for operators.
    #[serde(default)]
    pub client: String,
    pub created_at: u64,
}

/// MCP sessions, each expiring after an idle time.
#[async_trait]
pub trait McpSessionStore: Send + Sync + 'static {
    /// Store session `id` for `idle_ms`.
    async fn open_mcp_session(
        &self,
        id: &str,
        session: &McpSession,
        idle_ms: u64,
    ) -> BackendResult<()>;
    /// The session, its idle time renewed to `idle_ms`; `None` once it was
    /// closed or expired.
    async fn touch_mcp_session(&self, id: &str, idle_ms: u64) -> BackendResult<Option<McpSession>>;
    /// End it; whether it existed.
    async fn close_mcp_session(&self, id: &str) -> BackendResult<bool>;
}
