//! Agents (and other nodes) registered on this instance's connections.
//!
//! The registry itself is shared ([`AgentStore::agents`]); this book holds the
//! entries whose connection lives here, which makes this instance their only
//! writer. It counts each agent's calls in flight, so `maxConcurrency` is
//! exact cluster-wide: every call to an agent passes through the instance
//! holding its socket, and that instance refuses the call that would exceed
//! it (the caller then tries the next candidate). The count is mirrored into
//! the shared entry as `load`, which the `least_loaded` policy reads.
//!
//! [`select`] orders candidates by routing policy; [`view`] is the short-lived
//! copy of the registry routing reads; [`runs`] keeps the runs
//! this instance's agents serve; [`defs`] holds agents to their
//! definitions.
//!
//! [`AgentStore::agents`]: crate::backend::AgentStore::agents

pub mod defs;
pub mod runs;
pub mod select;
pub mod view;

use crate::backend::{AgentEntry, Backend};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why an agent cannot take a call here.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not registered on this instance (gone, or moved).
    Unknown,
    /// At `maxConcurrency`.
    Busy,
}

struct Local {
    entry: AgentEntry,
    in_flight: u32,
    /// What the node registered, before its definition limited it (see
    /// [`defs`]).
    offer: Option<AgentEntry>,
    /// A write of the load to the registry is scheduled and has not read
    /// the entry yet: a change meanwhile rides along with it.
    mirroring: bool,
}

struct Inner {
    backend: Arc<dyn Backend>,
    agents: Mutex<HashMap<String, Local>>,
    /// Serialises registry writes so the last write carries the latest
    /// load (held across the backend call on purpose: it is async).
    writes: tokio::sync::Mutex<()>,
}

/// This instance's registered agents; cheap to clone.
#[derive(Clone)]
pub struct LocalAgents(Arc<Inner>);

impl LocalAgents {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self(Arc::new(Inner {
            backend,
            agents: Mutex::new(HashMap::new()),
            writes: tokio::sync::Mutex::new(()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Local>> {
        self.0.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add or replace an entry (a re-registration keeps the load count).
    pub fn insert(&self, mut entry: AgentEntry) -> AgentEntry {
        let mut agents = self.lock();
        let in_flight = agents.get(&entry.agent_id).map_or(0, |l| l.in_flight);
        entry.load = in_flight;
        agents.insert(
            entry.agent_id.clone(),
            Local {
                entry: entry.clone(),
                in_flight,
                offer: None,
                mirroring: false,
            },
        );
        entry
    }

    /// Remember what the node offered before its definition limited it.
    pub fn set_offer(&self, agent_id: &str, offer: AgentEntry) {
        if let Some(local) = self.lock().get_mut(agent_id) {
            local.offer = Some(offer);
        }
    }

    fn offer(&self, agent_id: &str) -> Option<AgentEntry> {
        self.lock().get(agent_id).and_then(|l| l.offer.clone())
    }

    pub fn remove(&self, agent_id: &str) -> Option<AgentEntry> {
        self.lock().remove(agent_id).map(|l| l.entry)
    }

    pub fn get(&self, agent_id: &str) -> Option<AgentEntry> {
        self.lock().get(agent_id).map(|l| l.entry.clone())
    }

    /// Change an entry in place; returns the new state.
    pub fn update(&self, agent_id: &str, f: impl FnOnce(&mut AgentEntry)) -> Option<AgentEntry> {
        let mut agents = self.lock();
        let local = agents.get_mut(agent_id)?;
        f(&mut local.entry);
        local.entry.updated_at = crate::protocol::now_ms();
        Some(local.entry.clone())
    }

    /// Entries registered on connection `conn_id`.
    pub fn of_conn(&self, conn_id: &str) -> Vec<AgentEntry> {
        self.lock()
            .values()
            .filter(|l| l.entry.conn_id == conn_id)
            .map(|l| l.entry.clone())
            .collect()
    }

    /// Every entry held here.
    pub fn all(&self) -> Vec<AgentEntry> {
        self.lock().values().map(|l| l.entry.clone()).collect()
    }

    /// Take one of the agent's concurrency slots for a call.
    pub fn try_acquire(&self, agent_id: &str) -> Result<LoadGuard, Refusal> {
        {
            let mut agents = self.lock();
            let local = agents.get_mut(agent_id).ok_or(Refusal::Unknown)?;
            if local.in_flight >= local.entry.max_concurrency {
                return Err(Refusal::Busy);
            }
            local.in_flight += 1;
            local.entry.load = local.in_flight;
        }
        self.sync_later(agent_id);
        Ok(LoadGuard {
            book: self.clone(),
            agent_id: agent_id.to_owned(),
        })
    }

    fn release(&self, agent_id: &str) {
        if let Some(local) = self.lock().get_mut(agent_id) {
            local.in_flight = local.in_flight.saturating_sub(1);
            local.entry.load = local.in_flight;
        }
        self.sync_later(agent_id);
    }

    /// Write the entry's current state to the shared registry.
    pub async fn sync(&self, agent_id: &str) {
        let _order = self.0.writes.lock().await;
        if let Some(entry) = self.get(agent_id) {
            self.put(&entry).await;
        }
    }

    /// Mirror the agent's load into the registry soon. Every call changes
    /// it twice; at most one write per agent waits to read the entry, so
    /// changes that come while one waits cost nothing more, and the last
    /// change is still written (a change after the write read the entry
    /// schedules the next). The write starts at once: `least_loaded`
    /// sees a call's load as soon as the registry can.
    fn sync_later(&self, agent_id: &str) {
        match self.lock().get_mut(agent_id) {
            Some(local) if !local.mirroring => local.mirroring = true,
            // Scheduled already, or gone (nothing to write).
            _ => return,
        }
        let book = self.clone();
        let agent_id = agent_id.to_owned();
        tokio::spawn(async move { book.mirror(&agent_id).await });
    }

    /// The scheduled write of [`LocalAgents::sync_later`].
    async fn mirror(&self, agent_id: &str) {
        let _order = self.0.writes.lock().await;
        let entry = self.lock().get_mut(agent_id).map(|local| {
            local.mirroring = false;
            local.entry.clone()
        });
        if let Some(entry) = entry {
            self.put(&entry).await;
        }
    }

    async fn put(&self, entry: &AgentEntry) {
        if let Err(e) = self.0.backend.put_agent(entry).await {
            tracing::debug!(agent = %entry.agent_id, error = %e, "registry write failed");
        }
    }
}

/// One call's hold on an agent's concurrency slot; released on drop.
pub struct LoadGuard {
    book: LocalAgents,
    agent_id: String,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.book.release(&self.agent_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AgentStore;
    use crate::backend::memory::MemoryBackend;
    use std::time::Duration;

    /// The registry's load for `agent_id`, once it reads `want` (bounded).
    async fn registry_load(backend: &MemoryBackend, agent_id: &str, want: u32) -> u32 {
        let mut load = u32::MAX;
        for _ in 0..200 {
            load = backend
                .agents()
                .await
                .unwrap()
                .iter()
                .find(|e| e.agent_id == agent_id)
                .map_or(u32::MAX, |e| e.load);
            if load == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        load
    }

    #[tokio::test]
    async fn the_load_written_last_is_the_load_now_and_changes_ride_one_write() {
        let backend = Arc::new(MemoryBackend::new());
        let book = LocalAgents::new(backend.clone());
        let entry: AgentEntry = serde_json::from_value(serde_json::json!({
            "agentId": "a", "name": "a", "type": "agent", "capabilities": [], "tools": [],
            "models": [], "methods": [], "maxConcurrency": 8, "status": "idle",
            "online": true, "connId": "c", "instanceId": "i", "generation": 1,
            "identity": "n", "load": 0, "registeredAt": 0, "updatedAt": 0,
        }))
        .expect("an entry");
        book.insert(entry);
        // One write scheduled by the first change; the rest ride along.
        let guards: Vec<_> = (0..5).map(|_| book.try_acquire("a").unwrap()).collect();
        assert!(book.lock()["a"].mirroring, "a write is scheduled");
        assert_eq!(registry_load(&backend, "a", 5).await, 5);
        assert!(!book.lock()["a"].mirroring, "and it has read the entry");
        drop(guards);
        assert_eq!(registry_load(&backend, "a", 0).await, 0, "the last change");
        // Gone from the book: nothing is scheduled for it.
        book.remove("a");
        book.sync_later("a");
        assert!(book.lock().get("a").is_none());
    }
}
