//! The agent registry on Redis: one hash, agent id → JSON entry. The
//! instance holding an agent's connection is the only writer of its entry
//! while that instance lives; the reaper takes it offline afterwards.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::{AgentEntry, AgentStore, BackendResult};
use async_trait::async_trait;
use fred::prelude::HashesInterface;
use std::collections::HashMap;

#[async_trait]
impl AgentStore for RedisBackend {
    async fn put_agent(&self, entry: &AgentEntry) -> BackendResult<()> {
        let client = self.ready()?;
        client
            .hset::<(), _, _>(
                self.shared().keys.agents(),
                (entry.agent_id.as_str(), json(entry)?),
            )
            .await
            .map_err(unavailable)
    }

    async fn remove_agent(&self, agent_id: &str) -> BackendResult<()> {
        let client = self.ready()?;
        client
            .hdel::<(), _, _>(self.shared().keys.agents(), agent_id)
            .await
            .map_err(unavailable)
    }

    async fn agents(&self) -> BackendResult<Vec<AgentEntry>> {
        let client = self.ready()?;
        let all: HashMap<String, String> = client
            .hgetall(self.shared().keys.agents())
            .await
            .map_err(unavailable)?;
        let mut list: Vec<AgentEntry> = all
            .values()
            .filter_map(|raw| match parse::<AgentEntry>(raw) {
                Ok(entry) => Some(entry),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a corrupt agent entry");
                    None
                }
            })
            .collect();
        list.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(list)
    }
}
