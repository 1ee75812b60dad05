//! Live gateway instances: each one refreshes its record on every
//! heartbeat; an instance whose record goes stale is dead, and what it
//! owned is reaped (Redis) or never existed elsewhere (memory).

use super::BackendResult;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A live gateway instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    pub id: String,
    /// Chosen at start; records written by an older run of the same id
    /// carry an older generation.
    pub generation: u64,
    pub version: String,
    pub started_at: u64,
    pub connections: usize,
    pub last_seen: u64,
    /// The runtime config version in force there.
    #[serde(default)]
    pub config_version: u64,
    /// Whether its backend was usable at its last heartbeat.
    #[serde(default = "yes")]
    pub backend_up: bool,
    /// Its last measured pub/sub delivery lag (ms), on Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubsub_lag_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

/// The registry of instances.
#[async_trait]
pub trait InstanceStore: Send + Sync + 'static {
    /// Create or refresh this instance's record (heartbeat).
    async fn register_instance(&self, info: InstanceInfo) -> BackendResult<()>;
    async fn deregister_instance(&self, instance_id: &str) -> BackendResult<()>;
    /// Live instances.
    async fn instances(&self) -> BackendResult<Vec<InstanceInfo>>;
    /// Live instances, and the ids of those whose record is still there
    /// but stale (no heartbeat for `node_ttl`: dead, not merely unseen).
    async fn instance_view(&self) -> BackendResult<InstanceView> {
        Ok(InstanceView {
            live: self.instances().await?,
            stale: Vec::new(),
        })
    }
}

/// The instances as one read of their records shows them.
#[derive(Debug, Clone, Default)]
pub struct InstanceView {
    pub live: Vec<InstanceInfo>,
    /// Records present with a heartbeat older than `node_ttl`. An instance
    /// absent altogether (Redis restarted empty, or already reaped) is not
    /// here: absence alone is no proof of death.
    pub stale: Vec<String>,
}
