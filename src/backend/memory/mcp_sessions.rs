//! MCP sessions in memory: each session and when it expires; expired
//! ones are dropped on the next opening.

use super::MemoryBackend;
use crate::backend::{BackendResult, McpSession, McpSessionStore};
use crate::protocol::now_ms;
use async_trait::async_trait;

#[async_trait]
impl McpSessionStore for MemoryBackend {
    async fn open_mcp_session(
        &self,
        id: &str,
        session: &McpSession,
        idle_ms: u64,
    ) -> BackendResult<()> {
        let now = now_ms();
        let mut state = self.lock();
        state.mcp_sessions.retain(|_, (_, expires)| *expires > now);
        state
            .mcp_sessions
            .insert(id.to_owned(), (session.clone(), now + idle_ms));
        Ok(())
    }

    async fn touch_mcp_session(&self, id: &str, idle_ms: u64) -> BackendResult<Option<McpSession>> {
        let now = now_ms();
        let mut state = self.lock();
        match state.mcp_sessions.get_mut(id) {
            Some((session, expires)) if *expires > now => {
                *expires = now + idle_ms;
                Ok(Some(session.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn close_mcp_session(&self, id: &str) -> BackendResult<bool> {
        let now = now_ms();
        let mut state = self.lock();
        Ok(state
            .mcp_sessions
            .remove(id)
            .is_some_and(|(_, expires)| expires > now))
    }
}
