//! Connected clients as the whole cluster sees them: the instance holding a
//! socket writes its entry when it connects (again when it authenticates)
//! and removes it when it closes; a dead instance's entries are reaped.

use super::BackendResult;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One connected client, as the whole cluster sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEntry {
    pub conn_id: String,
    /// The instance holding the socket.
    pub node_id: String,
    pub generation: u64,
    /// `sub` of the identity, `None` before authentication.
    pub identity: Option<String>,
    pub role: Option<String>,
    pub client: Value,
    pub connected_at: u64,
    pub last_seen: u64,
}

/// How many connections the cluster holds, and how many of them are nodes
/// (presence entries with role `"node"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionCounts {
    pub connections: usize,
    pub nodes: usize,
}

/// The cluster-wide presence of connections.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Insert or replace a connection's presence entry.
    async fn put_connection(&self, entry: PresenceEntry) -> BackendResult<()>;
    async fn remove_connection(&self, conn_id: &str) -> BackendResult<()>;
    async fn connection(&self, conn_id: &str) -> BackendResult<Option<PresenceEntry>>;
    async fn connections(&self) -> BackendResult<Vec<PresenceEntry>>;
    /// One page of presence entries: about `limit` of them from `cursor`
    /// (`None`: the start), and the cursor of the next page (`None`: this
    /// was the last). Cursors are opaque; an entry present for the whole
    /// walk is listed at least once. Invalid for a cursor it did not give.
    async fn connections_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<PresenceEntry>, Option<String>)>;
    /// Cluster-wide counts of connections and of those with role `"node"`;
    /// cheap (never reads the entries), for ticks and status.
    async fn connection_counts(&self) -> BackendResult<ConnectionCounts>;
    /// Forget this instance's own connections that it no longer holds
    /// (`held`: whether it holds a socket, asked when the entry is read)
    /// and that are older than `settled_ms`
    /// (one registering now is not taken for a ghost): a socket that closed
    /// while shared state was unreachable could not remove its entry, and a
    /// store that kept its data (Redis restarted from its append-only file)
    /// would show it forever. Each is removed as the reaper removes a dead
    /// instance's (channels left with `presence.leave`, sessions
    /// detached). Returns how many. The in-process store never misses a
    /// removal: nothing to do.
    async fn forget_unheld(
        &self,
        _held: &(dyn for<'c> Fn(&'c str) -> bool + Sync),
        _settled_ms: u64,
    ) -> BackendResult<usize> {
        Ok(0)
    }
}
