//! A session's chat history: the messages of `chat.send` (the user's and
//! the agent's answer) and `chat.inject`, capped to the newest entries, so
//! an agent is given its context and `chat.history` can answer. Unlike a channel's log
//! ([`ChannelLog`](super::ChannelLog)) entries carry no offset.

use super::BackendResult;
use async_trait::async_trait;
use serde_json::Value;

/// Capped chat histories, one per session.
#[async_trait]
pub trait ChatHistory: Send + Sync + 'static {
    /// Append entries to a session's history, keeping the newest `max`.
    async fn append_history(
        &self,
        session_id: &str,
        entries: &[Value],
        max: usize,
    ) -> BackendResult<()>;
    /// The newest `limit` entries, oldest first.
    async fn history(&self, session_id: &str, limit: usize) -> BackendResult<Vec<Value>>;
}
