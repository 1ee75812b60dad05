//! The agent registry in memory: entries by agent id.

use super::MemoryBackend;
use crate::backend::{AgentEntry, AgentStore, BackendResult};
use async_trait::async_trait;

#[async_trait]
impl AgentStore for MemoryBackend {
    async fn put_agent(&self, entry: &AgentEntry) -> BackendResult<()> {
        self.lock()
            .agents
            .insert(entry.agent_id.clone(), entry.clone());
        Ok(())
    }

    async fn remove_agent(&self, agent_id: &str) -> BackendResult<()> {
        self.lock().agents.remove(agent_id);
        Ok(())
    }

    async fn agents(&self) -> BackendResult<Vec<AgentEntry>> {
        Ok(self.lock().agents.values().cloned().collect())
    }
}
