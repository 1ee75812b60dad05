//! Which instances are alive, as the relay sees them: the live list each
//! heartbeat reads (`InstanceStore::instance_view`), since when the
//! missing ones are missing, and the generation each live one runs as. A
//! call waiting on a node ends as soon as the node's instance is taken
//! for dead ([`Liveness::gone`]), not at its timeout.

use crate::agents::runs::Target;
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How often a waiting call looks whether the node's instance still lives
/// (a local read: the heartbeat refreshes the list).
const LIVENESS_CHECK: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Live {
    seen: HashSet<String>,
    missing: HashMap<String, Instant>,
    /// The generation each live instance runs as.
    generations: HashMap<String, u64>,
    /// The backend's resync count the last view was read under.
    resync: Option<u64>,
}

/// The instances alive, as the last heartbeat saw them.
pub struct Liveness {
    live: RwLock<Live>,
    /// How long an instance must be missing to be taken for dead.
    grace: Duration,
}

impl Liveness {
    /// `grace`: how long an instance must be missing from the live list
    /// before calls waiting on it end (`node_ttl`).
    pub fn new(grace: Duration) -> Self {
        Self {
            live: RwLock::new(Live::default()),
            grace,
        }
    }

    /// The live instances, as the last heartbeat saw them, and those whose
    /// record went stale: dead at once. One merely missing is dead at once
    /// too when the view was read from the same backend state as the last
    /// one (`resync`, the backend's count of reconnects that may have lost
    /// state, unchanged; `None` when a reconnect happened while it was
    /// read: only the reaper removed its record, which it does to the
    /// dead); after a reconnect (Redis restarted empty hides
    /// everyone until their next heartbeat) it is dead only after the
    /// grace.
    pub fn set_live(
        &self,
        instances: impl IntoIterator<Item = String>,
        stale: impl IntoIterator<Item = String>,
        resync: Option<u64>,
    ) {
        let now = Instant::now();
        let ids: HashSet<String> = instances.into_iter().collect();
        let forget = self.grace * 10;
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        let same_state = resync.is_some() && std::mem::replace(&mut live.resync, resync) == resync;
        let Live { seen, missing, .. } = &mut *live;
        let reaped = seen
            .iter()
            .filter(|id| same_state && !ids.contains(*id))
            .cloned()
            .collect::<Vec<_>>();
        for id in stale
            .into_iter()
            .chain(reaped)
            .filter(|id| !ids.contains(id))
        {
            let dead_since = now.checked_sub(self.grace).unwrap_or(now);
            let since = missing.entry(id).or_insert(dead_since);
            *since = (*since).min(dead_since);
        }
        for id in seen.iter().filter(|id| !ids.contains(*id)) {
            missing.entry(id.clone()).or_insert(now);
        }
        // Back ones are not missing; long-gone ones are forgotten (bounded).
        missing.retain(|id, since| !ids.contains(id) && since.elapsed() < forget);
        *seen = ids;
    }

    /// The generation each live instance runs as: a call waiting on a node
    /// of an earlier generation of an instance id (the instance was killed
    /// and restarted under the same id) ends at once.
    pub fn set_generations(&self, generations: impl IntoIterator<Item = (String, u64)>) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        live.generations = generations.into_iter().collect();
    }

    /// Whether `target`'s instance now runs as a later generation.
    pub fn restarted(&self, target: &Target) -> bool {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        target.generation != 0
            && live
                .generations
                .get(&target.instance_id)
                .is_some_and(|g| *g != target.generation)
    }

    /// False once `instance_id` has been missing from the live instances
    /// for `node_ttl` (a Redis restarted empty hides everyone until their
    /// next heartbeat: that is not a death). Unknown instances count as
    /// live.
    pub fn is_live(&self, instance_id: &str) -> bool {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        live.missing
            .get(instance_id)
            .is_none_or(|since| since.elapsed() < self.grace)
    }

    /// Resolves once `target`'s instance is no longer among the live
    /// instances (its heartbeat stopped for `node_ttl`) or runs as a later
    /// generation: a call waiting on a node there ends then, not at its
    /// timeout.
    pub async fn gone(&self, target: &Target) {
        loop {
            tokio::time::sleep(LIVENESS_CHECK).await;
            if !self.is_live(&target.instance_id) || self.restarted(target) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_dead_after_missing_for_the_grace() {
        let relay = Liveness::new(Duration::from_millis(40));
        assert!(
            relay.is_live("never-seen"),
            "unknown instances count as live"
        );
        let none = Vec::<String>::new;
        relay.set_live(["me".to_owned(), "b".to_owned()], none(), Some(0));
        // Read after a reconnect: missing may mean Redis restarted empty.
        relay.set_live(["me".to_owned()], none(), Some(1));
        assert!(relay.is_live("b"), "missing, but not for long yet");
        std::thread::sleep(Duration::from_millis(60));
        relay.set_live(["me".to_owned()], none(), Some(1));
        assert!(!relay.is_live("b"), "missing for longer than the grace");
        relay.set_live(["me".to_owned(), "b".to_owned()], none(), Some(1));
        assert!(relay.is_live("b"), "back");
    }

    #[test]
    fn an_instance_reaped_under_the_same_backend_state_is_dead_at_once() {
        let relay = Liveness::new(Duration::from_secs(60));
        relay.set_live(["me".to_owned(), "b".to_owned()], Vec::new(), Some(3));
        relay.set_live(["me".to_owned()], Vec::new(), Some(3));
        assert!(!relay.is_live("b"), "only the reaper removes a record");
        relay.set_live(["me".to_owned(), "b".to_owned()], Vec::new(), Some(3));
        assert!(relay.is_live("b"), "back");
    }

    #[test]
    fn an_instance_with_a_stale_record_is_dead_at_once() {
        let relay = Liveness::new(Duration::from_secs(60));
        relay.set_live(["me".to_owned(), "b".to_owned()], Vec::new(), Some(0));
        relay.set_live(["me".to_owned()], ["b".to_owned()], Some(1));
        assert!(!relay.is_live("b"), "its record went stale: dead");
        relay.set_live(["me".to_owned()], Vec::new(), Some(2));
        assert!(!relay.is_live("b"), "still dead once reaped");
        relay.set_live(["me".to_owned(), "b".to_owned()], Vec::new(), Some(2));
        assert!(relay.is_live("b"), "back");
    }

    #[test]
    fn a_node_of_an_earlier_run_of_an_instance_is_gone() {
        let relay = Liveness::new(Duration::from_secs(60));
        let target = |generation| Target {
            conn_id: "c".into(),
            instance_id: "b".into(),
            generation,
            agent_id: None,
        };
        relay.set_generations([("b".to_owned(), 7)]);
        assert!(!relay.restarted(&target(7)));
        assert!(!relay.restarted(&target(0)), "generation unknown");
        relay.set_generations([("b".to_owned(), 9)]);
        assert!(relay.restarted(&target(7)), "b restarted under its id");
        relay.set_generations([]);
        assert!(!relay.restarted(&target(7)), "not seen: the grace decides");
    }
}
