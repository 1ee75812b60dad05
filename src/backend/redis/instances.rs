//! Instances on Redis: a hash of instance records (id → JSON), and per
//! instance an `alive` key whose TTL (`alive_ttl`: `node_ttl` less the time survivors take to notice) the heartbeat refreshes;
//! an instance whose `alive` key is gone is dead, for readers and for the
//! reaper alike.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::{BackendResult, InstanceInfo, InstanceStore, InstanceView};
use async_trait::async_trait;
use fred::prelude::{Expiration, HashesInterface, KeysInterface};
use std::collections::HashMap;

#[async_trait]
impl InstanceStore for RedisBackend {
    async fn register_instance(&self, info: InstanceInfo) -> BackendResult<()> {
        let client = self.ready()?;
        let ttl = self.0.settings.alive_ttl.as_millis() as i64;
        let keys = &self.0.keys;
        let record = json(&info)?;
        // The alive key first, then the record, in one pipeline (in order on
        // one connection): a reaper that sees the record always sees the
        // instance alive, so a starting instance is never taken for dead.
        let pipeline = client.pipeline();
        let _: () = pipeline
            .set(
                keys.alive(&info.id),
                info.generation.to_string(),
                Some(Expiration::PX(ttl)),
                None,
                false,
            )
            .await
            .map_err(unavailable)?;
        let _: () = pipeline
            .hset(keys.instances(), (info.id.as_str(), record))
            .await
            .map_err(unavailable)?;
        pipeline.all::<()>().await.map_err(unavailable)
    }

    async fn deregister_instance(&self, instance_id: &str) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        client
            .hdel::<(), _, _>(keys.instances(), instance_id)
            .await
            .map_err(unavailable)?;
        client
            .del::<(), _>(keys.alive(instance_id))
            .await
            .map_err(unavailable)
    }

    async fn instances(&self) -> BackendResult<Vec<InstanceInfo>> {
        Ok(self.instance_view().await?.live)
    }

    async fn instance_view(&self) -> BackendResult<InstanceView> {
        let client = self.ready()?;
        let all: HashMap<String, String> = client
            .hgetall(self.0.keys.instances())
            .await
            .map_err(unavailable)?;
        let cutoff =
            crate::protocol::now_ms().saturating_sub(self.0.settings.alive_ttl.as_millis() as u64);
        let (mut live, stale): (Vec<InstanceInfo>, Vec<InstanceInfo>) = all
            .values()
            .filter_map(|v| parse::<InstanceInfo>(v).ok())
            .partition(|i| i.last_seen >= cutoff);
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(InstanceView {
            live,
            stale: stale.into_iter().map(|i| i.id).collect(),
        })
    }
}
