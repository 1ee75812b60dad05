//! Agent definitions in memory: records by agent id, versions checked
//! under the state lock.

use super::MemoryBackend;
use crate::backend::agent_defs::{MAX_DEFINITIONS, next_version, stale};
use crate::backend::{AgentDefStore, AgentDefinition, BackendError, BackendResult};
use async_trait::async_trait;

#[async_trait]
impl AgentDefStore for MemoryBackend {
    async fn put_definition(
        &self,
        def: &AgentDefinition,
        base: u64,
    ) -> BackendResult<AgentDefinition> {
        let mut state = self.lock();
        let stored = state.agent_defs.get(&def.agent_id).map_or(0, |d| d.version);
        if stored != base {
            return Err(if stored == 0 {
                BackendError::NotFound("agent definition")
            } else {
                stale(&def.agent_id, stored, base)
            });
        }
        if base == 0 && state.agent_defs.len() >= MAX_DEFINITIONS {
            return Err(BackendError::Limit("agent definitions", MAX_DEFINITIONS));
        }
        let written = next_version(def, base);
        state
            .agent_defs
            .insert(def.agent_id.clone(), written.clone());
        Ok(written)
    }

    async fn definition(&self, agent_id: &str) -> BackendResult<Option<AgentDefinition>> {
        Ok(self.lock().agent_defs.get(agent_id).cloned())
    }

    async fn definitions(&self) -> BackendResult<Vec<AgentDefinition>> {
        Ok(self.lock().agent_defs.values().cloned().collect())
    }

    async fn delete_definition(
        &self,
        agent_id: &str,
        base: Option<u64>,
    ) -> BackendResult<AgentDefinition> {
        let mut state = self.lock();
        let stored = state
            .agent_defs
            .get(agent_id)
            .map(|d| d.version)
            .ok_or(BackendError::NotFound("agent definition"))?;
        if let Some(base) = base.filter(|b| *b != stored) {
            return Err(stale(agent_id, stored, base));
        }
        state
            .agent_defs
            .remove(agent_id)
            .ok_or(BackendError::NotFound("agent definition"))
    }
}
