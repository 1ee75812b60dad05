//! Chat histories in memory: a capped queue of entries per session.

use super::MemoryBackend;
use crate::backend::{BackendResult, ChatHistory};
use async_trait::async_trait;
use serde_json::Value;

#[async_trait]
impl ChatHistory for MemoryBackend {
    async fn append_history(
        &self,
        session_id: &str,
        entries: &[Value],
        max: usize,
    ) -> BackendResult<()> {
        let mut state = self.lock();
        let list = state.history.entry(session_id.to_owned()).or_default();
        list.extend(entries.iter().cloned());
        while list.len() > max {
            list.pop_front();
        }
        Ok(())
    }

    async fn history(&self, session_id: &str, limit: usize) -> BackendResult<Vec<Value>> {
        let state = self.lock();
        let Some(list) = state.history.get(session_id) else {
            return Ok(Vec::new());
        };
        let skip = list.len().saturating_sub(limit);
        Ok(list.iter().skip(skip).cloned().collect())
    }
}
