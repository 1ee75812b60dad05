//! Instances in memory: this one, registered by its own heartbeat.

use super::MemoryBackend;
use crate::backend::{BackendResult, InstanceInfo, InstanceStore};
use async_trait::async_trait;

#[async_trait]
impl InstanceStore for MemoryBackend {
    async fn register_instance(&self, info: InstanceInfo) -> BackendResult<()> {
        self.lock().instances.insert(info.id.clone(), info);
        Ok(())
    }

    async fn deregister_instance(&self, instance_id: &str) -> BackendResult<()> {
        self.lock().instances.remove(instance_id);
        Ok(())
    }

    async fn instances(&self) -> BackendResult<Vec<InstanceInfo>> {
        Ok(self.lock().instances.values().cloned().collect())
    }
}
