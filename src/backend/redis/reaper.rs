//! Cleaning up after dead instances.
//!
//! Every instance runs the loop; one at a time does the work, under a
//! short Redis lock. An instance is dead when its `alive` key (TTL
//! `alive_ttl`, refreshed by its heartbeat) is gone; its connections are then
//! removed, with `presence.leave` published on the presence channels they
//! had joined, their sessions detached (starting the resume window), and
//! its interest counts dropped. Records of this instance's own id but an
//! older generation (a previous run that crashed) are reaped the same way.
//!
//! Reading every connection record is the expensive part (at 60 000
//! connections, megabytes out of Redis per pass), so a pass first reads
//! the small instance view (each instance and the generation its `alive`
//! key holds) and scans the connections only when that view shows a dead
//! instance or differs from the one this reaper saw last (an instance died,
//! left or restarted under a new generation), on its first pass, and every
//! [`SWEEP_EVERY`] passes for records whose instance left no trace at all.

use super::{RedisBackend, unavailable};
use crate::backend::{AgentStore, BackendResult, Bus, Presence, PresenceEntry, SessionStore};
use crate::protocol::now_ms;
use fred::prelude::{Expiration, HashesInterface, KeysInterface, SetOptions, SetsInterface};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Offline registry entries are kept this long (for `agents.list
/// {online: false}`), then dropped.
const OFFLINE_RETENTION_MS: u64 = 3_600_000;

/// Every this many passes the connections are scanned whatever the view.
const SWEEP_EVERY: u64 = 30;

/// Each instance, and the generation its `alive` key holds (`None`: dead).
type View = BTreeMap<String, Option<u64>>;

/// What a reaper remembers between its passes.
#[derive(Default)]
struct Memory {
    view: Option<View>,
    passes: u64,
}

/// How often the reaper looks: twice per `alive_ttl`, at most every 2 s.
fn period(backend: &RedisBackend) -> Duration {
    (backend.shared().settings.alive_ttl / 2)
        .clamp(Duration::from_millis(100), Duration::from_secs(2))
}

pub fn start(backend: &RedisBackend) {
    let me = backend.clone();
    tokio::spawn(async move {
        // The first pass one period after attaching, not at once: by then
        // this instance has registered itself, so its first view of the
        // cluster includes it.
        let every = period(&me);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut memory = Memory::default();
        loop {
            ticker.tick().await;
            if me.ready().is_err() {
                continue;
            }
            match me.take_lock().await {
                Ok(true) => {
                    if let Err(e) = me.reap(&mut memory).await {
                        tracing::warn!(error = %e, "reaping failed");
                    }
                    // Free it for the next pass of whichever instance
                    // comes first (the expiry only covers a holder that
                    // died mid-pass).
                    if let Err(e) = me.release_lock().await {
                        tracing::debug!(error = %e, "releasing the reaper lock");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "reaper lock"),
            }
        }
    });
}

impl RedisBackend {
    async fn take_lock(&self) -> BackendResult<bool> {
        let client = self.ready()?;
        let id = &self.attached()?.id;
        let got: Option<String> = client
            .set(
                self.shared().keys.reaper_lock(),
                id.as_str(),
                Some(Expiration::PX(period(self).as_millis() as i64 * 2)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(got.is_some())
    }

    async fn release_lock(&self) -> BackendResult<()> {
        let client = self.ready()?;
        let id = self.attached()?.id.clone();
        self.shared()
            .scripts
            .unlock
            .evalsha_with_reload::<(), _, _>(
                client,
                vec![self.shared().keys.reaper_lock()],
                vec![id],
            )
            .await
            .map_err(unavailable)
    }

    /// One pass: find dead generations and remove what they own.
    async fn reap(&self, memory: &mut Memory) -> BackendResult<()> {
        let mut alive: HashMap<String, Option<u64>> = HashMap::new();
        let view = self.view(&mut alive).await?;
        let sweep = memory.passes.is_multiple_of(SWEEP_EVERY);
        memory.passes += 1;
        let changed = memory.view.as_ref() != Some(&view);
        if sweep || changed || view.values().any(Option::is_none) {
            self.reap_connections(&mut alive).await?;
        }
        self.reap_agents(&mut alive).await?;
        self.reap_instances(&view).await?;
        // Only remembered once the pass it called for is done: a failed
        // pass scans again.
        memory.view = Some(view);
        Ok(())
    }

    /// The instance view: every registered instance and its live
    /// generation (also cached in `alive`).
    async fn view(&self, alive: &mut HashMap<String, Option<u64>>) -> BackendResult<View> {
        let client = self.ready()?;
        let ids: Vec<String> = client
            .hkeys(self.shared().keys.instances())
            .await
            .map_err(unavailable)?;
        let mut view = View::new();
        for id in ids {
            let generation = self.live_generation(alive, &id).await?;
            view.insert(id, generation);
        }
        Ok(view)
    }

    /// Scan every connection record; reap those of dead generations.
    async fn reap_connections(
        &self,
        alive: &mut HashMap<String, Option<u64>>,
    ) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let me = self.attached()?;
        metrics::counter!("switchyard_reaper_scans_total").increment(1);
        let conns: HashMap<String, String> =
            client.hgetall(keys.conns()).await.map_err(unavailable)?;
        for raw in conns.values() {
            let Ok(entry) = serde_json::from_str::<PresenceEntry>(raw) else {
                continue;
            };
            let dead = match self.live_generation(alive, &entry.node_id).await? {
                None => true,
                Some(g) => g != entry.generation,
            };
            // Our own current records are never reaped here.
            let ours = entry.node_id == me.id && entry.generation == me.generation;
            if dead && !ours {
                self.reap_connection(&entry).await?;
            }
        }
        self.prune_nodes().await
    }

    /// Drop ids from the node set (`connection_counts`) that no longer
    /// name a node's presence entry: a write that reached the entry but
    /// not the set must not skew the count for good. Entries are read
    /// after the set (`put_connection` writes the entry first), so a node
    /// that connects meanwhile is not taken for stale.
    async fn prune_nodes(&self) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let ids: Vec<String> = client.smembers(keys.nodes()).await.map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(());
        }
        let entries: Vec<Option<String>> = client
            .hmget(keys.conns(), ids.clone())
            .await
            .map_err(unavailable)?;
        let stale: Vec<String> = ids
            .into_iter()
            .zip(entries)
            .filter(|(_, raw)| {
                let entry = raw
                    .as_deref()
                    .and_then(|r| serde_json::from_str::<PresenceEntry>(r).ok());
                entry.is_none_or(|e| e.role.as_deref() != Some("node"))
            })
            .map(|(id, _)| id)
            .collect();
        if !stale.is_empty() {
            client
                .srem::<(), _, _>(keys.nodes(), stale)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// The live generation of `instance` (cached in `alive`).
    async fn live_generation(
        &self,
        alive: &mut HashMap<String, Option<u64>>,
        instance: &str,
    ) -> BackendResult<Option<u64>> {
        if let Some(g) = alive.get(instance) {
            return Ok(*g);
        }
        let client = self.ready()?;
        let generation: Option<String> = client
            .get(self.shared().keys.alive(instance))
            .await
            .map_err(unavailable)?;
        let generation = generation.and_then(|g| g.parse().ok());
        alive.insert(instance.to_owned(), generation);
        Ok(generation)
    }

    /// Agents held by dead instances go offline; offline entries older
    /// than [`OFFLINE_RETENTION_MS`] are dropped.
    async fn reap_agents(&self, alive: &mut HashMap<String, Option<u64>>) -> BackendResult<()> {
        let now = now_ms();
        for mut agent in self.agents().await? {
            if !agent.online {
                if agent.updated_at + OFFLINE_RETENTION_MS < now {
                    self.remove_agent(&agent.agent_id).await?;
                }
                continue;
            }
            let live = self.live_generation(alive, &agent.instance_id).await?;
            if live == Some(agent.generation) {
                continue;
            }
            tracing::info!(agent = %agent.agent_id, instance = %agent.instance_id, "agent's instance is gone: offline");
            agent.online = false;
            agent.load = 0;
            agent.status = "offline".into();
            agent.updated_at = now;
            self.put_agent(&agent).await?;
        }
        Ok(())
    }

    /// This instance's own entries whose sockets it no longer holds,
    /// older than `settled_ms` (see [`Presence::forget_unheld`]).
    pub(super) async fn reap_unheld<F>(&self, held: &F, settled_ms: u64) -> BackendResult<usize>
    where
        F: Fn(&str) -> bool + Sync + ?Sized,
    {
        let client = self.ready()?;
        let me = self.attached()?;
        let conns: HashMap<String, String> = client
            .hgetall(self.shared().keys.conns())
            .await
            .map_err(unavailable)?;
        let cutoff = now_ms().saturating_sub(settled_ms);
        let mut forgotten = 0;
        for raw in conns.values() {
            let Ok(entry) = serde_json::from_str::<PresenceEntry>(raw) else {
                continue;
            };
            let ours = entry.node_id == me.id && entry.generation == me.generation;
            if ours && entry.connected_at <= cutoff && !held(&entry.conn_id) {
                self.reap_connection(&entry).await?;
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    async fn reap_connection(&self, entry: &PresenceEntry) -> BackendResult<()> {
        tracing::info!(conn = %entry.conn_id, instance = %entry.node_id, "reaping a dead connection");
        metrics::counter!("switchyard_reaped_connections_total").increment(1);
        for channel in self.conn_channels(&entry.conn_id).await? {
            if let Some(member) = self.leave_channel(&channel, &entry.conn_id).await? {
                let leave = member.event_frame("presence.leave", &channel);
                self.broadcast(&channel, leave, false).await?;
            }
        }
        self.detach_connection(&entry.conn_id, now_ms()).await?;
        self.remove_connection(&entry.conn_id).await
    }

    /// Drop instance records and interest counts of instances that are gone.
    async fn reap_instances(&self, view: &View) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        for id in view.iter().filter(|(_, g)| g.is_none()).map(|(id, _)| id) {
            tracing::info!(instance = %id, "reaping a dead instance");
            self.drop_interest_of(id).await?;
            client
                .hdel::<(), _, _>(keys.instances(), id.as_str())
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}
