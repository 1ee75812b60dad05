//! Presence in memory: the entries by conn id, ordered so pages can resume
//! after the last key they gave.

use super::{MemoryBackend, page_after};
use crate::backend::{BackendResult, ConnectionCounts, Presence, PresenceEntry};
use async_trait::async_trait;

#[async_trait]
impl Presence for MemoryBackend {
    async fn put_connection(&self, entry: PresenceEntry) -> BackendResult<()> {
        self.lock().connections.insert(entry.conn_id.clone(), entry);
        Ok(())
    }

    async fn remove_connection(&self, conn_id: &str) -> BackendResult<()> {
        self.lock().connections.remove(conn_id);
        Ok(())
    }

    async fn connection(&self, conn_id: &str) -> BackendResult<Option<PresenceEntry>> {
        Ok(self.lock().connections.get(conn_id).cloned())
    }

    async fn connections(&self) -> BackendResult<Vec<PresenceEntry>> {
        Ok(self.lock().connections.values().cloned().collect())
    }

    async fn connections_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<PresenceEntry>, Option<String>)> {
        Ok(page_after(&self.lock().connections, cursor, limit))
    }

    async fn connection_counts(&self) -> BackendResult<ConnectionCounts> {
        let state = self.lock();
        let nodes = state
            .connections
            .values()
            .filter(|e| e.role.as_deref() == Some("node"))
            .count();
        Ok(ConnectionCounts {
            connections: state.connections.len(),
            nodes,
        })
    }
}
