//! Which instances are alive, as the relay sees them: the live list each
//! heartbeat reads (`InstanceStore::instance_view`), since when the
//! missing ones are missing, and the generation each live one runs as. A
//! call waiting on a node ends as soon as the node's instance is taken
//! for dead ([`Liveness::gone`]), not at its timeout: each new view wakes
//! the waiting calls, and while any waits ([`Liveness::watched`]) the
//! instance reads the view more often than its heartbeat.

use crate::agents::runs::Target;
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// An instance missing from the live list: since when, and the
/// generation it ran as when last seen.
struct Missing {
    since: Instant,
    generation: Option<u64>,
}

#[derive(Default)]
struct Live {
    /// The live instances and the generation each runs as.
    seen: HashMap<String, u64>,
    missing: HashMap<String, Missing>,
    /// The backend's resync count the last view was read under.
    resync: Option<u64>,
    /// When the first view was read (and the wall clock then, ms).
    first_view: Option<(Instant, u64)>,
}

/// The instances alive, as the last heartbeat saw them.
pub struct Liveness {
    live: RwLock<Live>,
    /// How long an instance must be missing to be taken for dead.
    grace: Duration,
    /// Woken on every new view.
    changed: Notify,
    /// Calls waiting in [`Liveness::gone`].
    watchers: AtomicUsize,
}

impl Liveness {
    /// `grace`: how long an instance must be missing from the live list
    /// before calls waiting on it end (`node_ttl`).
    pub fn new(grace: Duration) -> Self {
        Self {
            live: RwLock::new(Live::default()),
            grace,
            changed: Notify::new(),
            watchers: AtomicUsize::new(0),
        }
    }

    /// Whether any call waits on another instance's liveness: then the
    /// view is worth reading more often than the heartbeat does.
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// The live instances (with the generation each runs as), as the last
    /// heartbeat saw them, and those whose record went stale: dead at
    /// once. One merely missing is dead at once too when the view was read
    /// from the same backend state as the last one (`resync`, the
    /// backend's count of reconnects that may have lost state, unchanged;
    /// `None` when a reconnect happened while it was read: only the reaper
    /// removed its record, which it does to the dead); after a reconnect
    /// (Redis restarted empty hides everyone until their next heartbeat) it
    /// is dead only after the grace.
    pub fn set_live(
        &self,
        instances: impl IntoIterator<Item = (String, u64)>,
        stale: impl IntoIterator<Item = String>,
        resync: Option<u64>,
    ) {
        let now = Instant::now();
        let now_live: HashMap<String, u64> = instances.into_iter().collect();
        let forget = self.grace * 10;
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        let same_state = resync.is_some() && std::mem::replace(&mut live.resync, resync) == resync;
        live.first_view
            .get_or_insert_with(|| (now, crate::protocol::now_ms()));
        let Live { seen, missing, .. } = &mut *live;
        let reaped = seen
            .keys()
            .filter(|id| same_state && !now_live.contains_key(*id))
            .cloned()
            .collect::<Vec<_>>();
        for id in stale
            .into_iter()
            .chain(reaped)
            .filter(|id| !now_live.contains_key(id))
        {
            let dead_since = now.checked_sub(self.grace).unwrap_or(now);
            let generation = seen.get(&id).copied();
            let entry = missing.entry(id).or_insert(Missing {
                since: dead_since,
                generation,
            });
            entry.since = entry.since.min(dead_since);
        }
        for (id, generation) in seen.iter().filter(|(id, _)| !now_live.contains_key(*id)) {
            missing.entry(id.clone()).or_insert(Missing {
                since: now,
                generation: Some(*generation),
            });
        }
        // Back ones are not missing; long-gone ones are forgotten (bounded).
        missing.retain(|id, m| !now_live.contains_key(id) && m.since.elapsed() < forget);
        *seen = now_live;
        drop(live);
        self.changed.notify_waiters();
    }

    /// Whether `instance_id` running as `generation` (0: unknown) is taken
    /// for dead: it runs as a later generation now (killed and restarted
    /// under the same id), or it has been missing from the live instances
    /// for `node_ttl` (a Redis restarted empty hides everyone until their
    /// next heartbeat: that is not a death) having last been seen as that
    /// generation or a later one. A generation later than the view knows
    /// (it is older than the instance) counts as live. So does an instance
    /// never seen, unless its generation (its start, ms since the epoch)
    /// is a grace older than the first view and views have been read for
    /// a grace since: it would have shown up had it lived.
    pub fn dead(&self, instance_id: &str, generation: u64) -> bool {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        if let Some(now) = live.seen.get(instance_id) {
            return generation != 0 && *now > generation;
        }
        let grace_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX);
        match live.missing.get(instance_id) {
            Some(m) => {
                m.since.elapsed() >= self.grace
                    && (generation == 0 || m.generation.is_none_or(|last| generation <= last))
            }
            None => {
                generation != 0
                    && live.first_view.is_some_and(|(at, wall)| {
                        at.elapsed() >= self.grace && generation.saturating_add(grace_ms) < wall
                    })
            }
        }
    }

    /// Resolves once `target`'s instance is no longer among the live
    /// instances (its heartbeat stopped for `alive_ttl`) or runs as a later
    /// generation: a call waiting on a node there ends then, not at its
    /// timeout. Looked at again on each new view.
    pub async fn gone(&self, target: &Target) {
        let _watching = Watching::new(&self.watchers);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.dead(&target.instance_id, target.generation) {
                return;
            }
            changed.await;
        }
    }
}

/// One call counted in [`Liveness::watched`] while it waits.
struct Watching<'a>(&'a AtomicUsize);

impl<'a> Watching<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ids: &[&str]) -> Vec<(String, u64)> {
        ids.iter().map(|id| ((*id).to_owned(), 1)).collect()
    }

    #[test]
    fn an_instance_is_dead_after_missing_for_the_grace() {
        let relay = Liveness::new(Duration::from_millis(40));
        assert!(
            !relay.dead("never-seen", 0),
            "unknown instances count as live"
        );
        let none = Vec::<String>::new;
        relay.set_live(view(&["me", "b"]), none(), Some(0));
        // Read after a reconnect: missing may mean Redis restarted empty.
        relay.set_live(view(&["me"]), none(), Some(1));
        assert!(!relay.dead("b", 1), "missing, but not for long yet");
        std::thread::sleep(Duration::from_millis(60));
        relay.set_live(view(&["me"]), none(), Some(1));
        assert!(relay.dead("b", 1), "missing for longer than the grace");
        assert!(relay.dead("b", 0), "whatever its generation was");
        relay.set_live(view(&["me", "b"]), none(), Some(1));
        assert!(!relay.dead("b", 1), "back");
    }

    #[test]
    fn an_instance_reaped_under_the_same_backend_state_is_dead_at_once() {
        let relay = Liveness::new(Duration::from_secs(60));
        relay.set_live(view(&["me", "b"]), Vec::new(), Some(3));
        relay.set_live(view(&["me"]), Vec::new(), Some(3));
        assert!(relay.dead("b", 1), "only the reaper removes a record");
        relay.set_live(view(&["me", "b"]), Vec::new(), Some(3));
        assert!(!relay.dead("b", 1), "back");
    }

    #[test]
    fn an_instance_with_a_stale_record_is_dead_at_once() {
        let relay = Liveness::new(Duration::from_secs(60));
        relay.set_live(view(&["me", "b"]), Vec::new(), Some(0));
        relay.set_live(view(&["me"]), ["b".to_owned()], Some(1));
        assert!(relay.dead("b", 1), "its record went stale: dead");
        relay.set_live(view(&["me"]), Vec::new(), Some(2));
        assert!(relay.dead("b", 1), "still dead once reaped");
        relay.set_live(view(&["me", "b"]), Vec::new(), Some(2));
        assert!(!relay.dead("b", 1), "back");
    }

    #[test]
    fn a_node_of_an_earlier_run_of_an_instance_is_gone() {
        let relay = Liveness::new(Duration::from_secs(60));
        relay.set_live([("b".to_owned(), 7)], Vec::new(), Some(0));
        assert!(!relay.dead("b", 7));
        assert!(!relay.dead("b", 0), "generation unknown");
        relay.set_live([("b".to_owned(), 9)], Vec::new(), Some(0));
        assert!(relay.dead("b", 7), "b restarted under its id");
        assert!(
            !relay.dead("b", 11),
            "a generation the view has not seen yet is a newer one"
        );
    }

    #[test]
    fn a_restart_the_view_has_not_seen_yet_is_not_its_earlier_death() {
        let relay = Liveness::new(Duration::from_secs(60));
        relay.set_live([("b".to_owned(), 7)], Vec::new(), Some(0));
        relay.set_live(Vec::new(), Vec::new(), Some(0));
        assert!(relay.dead("b", 7), "b (generation 7) was reaped");
        assert!(
            !relay.dead("b", 8),
            "b restarted as 8 after the view was read: not dead"
        );
    }

    #[test]
    fn an_instance_never_seen_is_dead_if_it_started_well_before_the_first_view() {
        let relay = Liveness::new(Duration::from_millis(40));
        let now = crate::protocol::now_ms();
        relay.set_live(view(&["me"]), Vec::new(), Some(0));
        assert!(
            !relay.dead("old", now - 1_000),
            "views read for less than the grace"
        );
        std::thread::sleep(Duration::from_millis(60));
        relay.set_live(view(&["me"]), Vec::new(), Some(0));
        assert!(relay.dead("old", now - 1_000), "it would have shown up");
        assert!(!relay.dead("new", now + 30), "started after the first view");
        assert!(!relay.dead("old", 0), "generation unknown");
    }

    #[tokio::test]
    async fn a_waiting_call_ends_with_the_view_that_shows_its_instance_dead() {
        let relay = std::sync::Arc::new(Liveness::new(Duration::from_secs(60)));
        let target = Target {
            conn_id: "c".into(),
            instance_id: "b".into(),
            generation: 0,
            agent_id: None,
        };
        relay.set_live(view(&["me", "b"]), Vec::new(), Some(0));
        let waiting = tokio::spawn({
            let relay = relay.clone();
            async move { relay.gone(&target).await }
        });
        tokio::time::timeout(Duration::from_secs(5), async {
            while !relay.watched() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the call waits");
        relay.set_live(view(&["me", "b"]), Vec::new(), Some(0));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "b still lives");
        relay.set_live(view(&["me"]), Vec::new(), Some(0));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the view")
            .expect("ends");
        assert!(!relay.watched(), "no call waits any more");
    }
}
