//! This instance's sockets: the local connection registry, the local channel
//! index and fan-out.
//!
//! The hub is the instance's [`Inbox`]: the backend hands it envelopes and
//! it queues the (already serialised) frame to each local target. It also
//! keeps the backend's view of this instance's interest up to date: the
//! first local subscriber of a channel subscribes the instance, the last one
//! leaving unsubscribes it. Interest writes are serialised by one async
//! mutex so a subscribe and an unsubscribe of the same channel can never
//! reach the backend in the wrong order, and each write carries the local
//! count as it is when the write starts: callers queued behind a write that
//! already carried their change have nothing left to write, so a thousand
//! sockets subscribing to one channel at once cost a handful of writes.
//!
//! It also keeps copies of the sessions its sockets own ([`owned`]) and of
//! the pending approvals and device records its work proves ([`copies`]),
//! to write them back if the backend loses them, and holds back a channel's
//! frames from a socket while that socket is replayed what it missed
//! ([`Hub::hold`]).

mod copies;
mod owned;

pub use copies::Copies;
pub use owned::{Loss, OwnedSessions};

use crate::backend::{Backend, Envelope, Inbox, logged_offset};
use crate::conn::{ConnHandle, close_code};
use crate::protocol::Frame;
use crate::protocol::names::{CONN_PREFIX, DEVICE_CHANNEL_PREFIX, SESSION_CHANNEL_PREFIX};
use crate::ratelimit::IdentityBudget;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

type ChannelIndex = HashMap<String, HashMap<String, ConnHandle>>;

/// Frames a held socket may collect before it counts as a slow consumer.
const HOLD_CAP: usize = 1024;
/// How long after a replay a live frame it already carried is dropped.
/// The log is read over a command connection and live frames come over
/// the pub/sub connection: one published just before the read can reach
/// this instance after the replay was released.
const SEAM_GUARD: std::time::Duration = std::time::Duration::from_secs(2);

/// A socket's state on a channel it is held from (see [`Hub::hold`]).
enum Held {
    /// Replaying: live frames are collected.
    Collecting(Vec<Frame>),
    /// Released after offset `after`: until `until`, a live frame at or
    /// below it is a duplicate of the replay.
    Guarding {
        after: u64,
        until: std::time::Instant,
    },
}

struct Inner {
    backend: Arc<dyn Backend>,
    conns: RwLock<HashMap<String, ConnHandle>>,
    channels: RwLock<ChannelIndex>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    budgets: Mutex<HashMap<String, Budget>>,
    /// The count each channel's interest was last written with; the lock
    /// orders every interest write.
    interest: tokio::sync::Mutex<HashMap<String, usize>>,
    owned: OwnedSessions,
    copies: Copies,
    /// channel → held conn id → frames held back, or the guard after a
    /// replay (see [`Hub::hold`]).
    holds: Mutex<HashMap<String, HashMap<String, Held>>>,
    /// How many holds and guards exist: fan-out looks at `holds` only
    /// when some do.
    held: AtomicUsize,
}

/// Cheap cloneable handle to this instance's local state.
#[derive(Clone)]
pub struct Hub(Arc<Inner>);

/// Holds one slot of an IP's connection cap until dropped.
pub struct IpSlot {
    hub: Hub,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = lock(&self.hub.0.per_ip);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// An identity's leased message budget, and how many local connections
/// hold the identity: the budget goes with the last of them.
#[derive(Default)]
struct Budget {
    holders: usize,
    lease: IdentityBudget,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self(Arc::new(Inner {
            backend,
            conns: RwLock::default(),
            channels: RwLock::default(),
            per_ip: Mutex::default(),
            budgets: Mutex::default(),
            interest: tokio::sync::Mutex::default(),
            owned: OwnedSessions::default(),
            copies: Copies::default(),
            holds: Mutex::default(),
            held: AtomicUsize::new(0),
        }))
    }

    /// Take a slot of `ip`'s connection cap; `None` when it is full.
    pub fn reserve_ip(&self, ip: IpAddr, cap: usize) -> Option<IpSlot> {
        let mut map = lock(&self.0.per_ip);
        let n = map.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            hub: self.clone(),
            ip,
        })
    }

    pub fn register(&self, conn: ConnHandle) {
        let mut conns = self.0.conns.write().unwrap_or_else(|p| p.into_inner());
        conns.insert(conn.id().to_owned(), conn);
        metrics::gauge!("switchyard_connections").set(conns.len() as f64);
    }

    pub fn unregister(&self, conn_id: &str) {
        let mut conns = self.0.conns.write().unwrap_or_else(|p| p.into_inner());
        conns.remove(conn_id);
        metrics::gauge!("switchyard_connections").set(conns.len() as f64);
    }

    pub fn get(&self, conn_id: &str) -> Option<ConnHandle> {
        let conns = self.0.conns.read().unwrap_or_else(|p| p.into_inner());
        conns.get(conn_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.0.conns.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Give back the capacity the local indexes grew to for a wave of
    /// connections that has gone (after a reconnect storm the connection
    /// map alone keeps a megabyte per 20 000 sockets it once held).
    pub fn shrink(&self) {
        fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
            if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                map.shrink_to_fit();
            }
        }
        shrink(&mut self.0.conns.write().unwrap_or_else(|p| p.into_inner()));
        let mut channels = self.0.channels.write().unwrap_or_else(|p| p.into_inner());
        shrink(&mut channels);
        channels.values_mut().for_each(shrink);
        drop(channels);
        shrink(&mut lock(&self.0.per_ip));
        shrink(&mut lock(&self.0.budgets));
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every local connection.
    pub fn all(&self) -> Vec<ConnHandle> {
        let conns = self.0.conns.read().unwrap_or_else(|p| p.into_inner());
        conns.values().cloned().collect()
    }

    /// Add `conn` to the local subscribers of `channel` and report the new
    /// local count to the backend (the first one subscribes the instance).
    /// Idempotent.
    pub async fn subscribe_local(
        &self,
        channel: &str,
        conn: &ConnHandle,
    ) -> crate::backend::BackendResult<()> {
        let added = {
            let mut index = self.0.channels.write().unwrap_or_else(|p| p.into_inner());
            let subs = index.entry(channel.to_owned()).or_default();
            subs.insert(conn.id().to_owned(), conn.clone()).is_none()
        };
        if !added {
            return Ok(());
        }
        if let Err(e) = self.write_interest(channel).await {
            self.drop_local(channel, conn.id());
            return Err(e);
        }
        Ok(())
    }

    /// Bring the backend's interest in `channel` up to the local count.
    /// Returns once a write that includes the caller's change has been
    /// made — its own, or one that ran while it queued for the lock (then
    /// the count written already equals the local count).
    async fn write_interest(&self, channel: &str) -> crate::backend::BackendResult<()> {
        let mut written = self.0.interest.lock().await;
        let count = self.local_subscribers(channel);
        if written.get(channel).copied().unwrap_or(0) == count {
            return Ok(());
        }
        self.set_interest(&mut written, channel, count).await
    }

    /// Write every channel's local count again (the backend lost its
    /// state, or may have).
    pub async fn reassert_interest(&self) {
        let mut written = self.0.interest.lock().await;
        for (channel, count) in self.local_interest() {
            if let Err(e) = self.set_interest(&mut written, &channel, count).await {
                tracing::warn!(%channel, error = %e, "re-asserting interest failed");
            }
        }
    }

    /// Write `count` and remember it; 0, or a failed write (the backend's
    /// count is then unknown), is forgotten, so the next caller writes
    /// whatever the count is then.
    async fn set_interest(
        &self,
        written: &mut HashMap<String, usize>,
        channel: &str,
        count: usize,
    ) -> crate::backend::BackendResult<()> {
        let outcome = self.0.backend.set_interest(channel, count).await;
        if outcome.is_ok() && count > 0 {
            written.insert(channel.to_owned(), count);
        } else {
            written.remove(channel);
        }
        outcome
    }

    /// Remove `conn` from `channel`'s local subscribers and report the new
    /// local count (0 unsubscribes the instance).
    pub async fn unsubscribe_local(&self, channel: &str, conn_id: &str) {
        if self.drop_local(channel, conn_id).is_some()
            && let Err(e) = self.write_interest(channel).await
        {
            // A stale count only costs stray envelopes that find no local
            // subscriber; the instance re-asserts its interest on reconnect.
            tracing::warn!(%channel, error = %e, "updating channel interest failed");
        }
    }

    /// Remove one local subscriber; returns the count left when it was one.
    fn drop_local(&self, channel: &str, conn_id: &str) -> Option<usize> {
        let mut index = self.0.channels.write().unwrap_or_else(|p| p.into_inner());
        let subs = index.get_mut(channel)?;
        subs.remove(conn_id)?;
        let left = subs.len();
        if left == 0 {
            index.remove(channel);
        }
        Some(left)
    }

    /// Every channel with local subscribers and its count (to re-assert
    /// interest after the backend lost it).
    fn local_interest(&self) -> Vec<(String, usize)> {
        let index = self.0.channels.read().unwrap_or_else(|p| p.into_inner());
        index
            .iter()
            .map(|(c, subs)| (c.clone(), subs.len()))
            .collect()
    }

    /// Local subscriber count of a channel.
    pub fn local_subscribers(&self, channel: &str) -> usize {
        let index = self.0.channels.read().unwrap_or_else(|p| p.into_inner());
        index.get(channel).map_or(0, HashMap::len)
    }

    /// Queue `frame` to every local subscriber of `channel`.
    pub fn fanout(&self, channel: &str, frame: &Frame) -> usize {
        let index = self.0.channels.read().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = index.get(channel) else {
            drop(index);
            // `conn:<id>` has no subscribers; it names one local socket.
            return channel
                .strip_prefix(CONN_PREFIX)
                .and_then(|id| self.get(id))
                .map_or(0, |conn| usize::from(conn.push(frame.clone())));
        };
        let delivered = if self.0.held.load(Ordering::Acquire) > 0 {
            self.fanout_holding(channel, subs.values(), frame)
        } else {
            subs.values().filter(|c| c.push(frame.clone())).count()
        };
        metrics::counter!("switchyard_deliveries_total").increment(delivered as u64);
        delivered
    }

    /// Fan-out while some socket is held: a held subscriber of `channel`
    /// collects the frame instead of getting it.
    fn fanout_holding<'a>(
        &self,
        channel: &str,
        subs: impl Iterator<Item = &'a ConnHandle>,
        frame: &Frame,
    ) -> usize {
        let mut holds = lock(&self.0.holds);
        let now = std::time::Instant::now();
        self.drop_expired_guards(&mut holds, now);
        let mut held = holds.get_mut(channel);
        subs.filter(|c| match held.as_mut().and_then(|h| h.get_mut(c.id())) {
            Some(Held::Collecting(frames)) if frames.len() < HOLD_CAP => {
                frames.push(frame.clone());
                true
            }
            Some(Held::Collecting(_)) => {
                c.close(close_code::SLOW_CONSUMER, "slow consumer");
                false
            }
            Some(Held::Guarding { after, until }) => {
                let replayed =
                    *until > now && logged_offset(frame.as_str()).is_some_and(|o| o <= *after);
                !replayed && c.push(frame.clone())
            }
            None => c.push(frame.clone()),
        })
        .count()
    }

    /// Forget the guards whose time is over.
    fn drop_expired_guards(
        &self,
        holds: &mut HashMap<String, HashMap<String, Held>>,
        now: std::time::Instant,
    ) {
        let mut dropped = 0;
        holds.retain(|_, slot| {
            slot.retain(|_, held| match held {
                Held::Guarding { until, .. } if *until <= now => {
                    dropped += 1;
                    false
                }
                _ => true,
            });
            !slot.is_empty()
        });
        if dropped > 0 {
            self.0.held.fetch_sub(dropped, Ordering::AcqRel);
        }
    }

    /// Hold back `channel`'s frames from `conn` until the returned
    /// [`Hold`] is released: the way to replay a socket what it missed
    /// while live frames keep coming. Take the hold before subscribing the
    /// socket, read and queue what it missed, then release with the newest
    /// offset replayed — held events at or below it are dropped as
    /// duplicates, the rest follow in order. Dropping the hold unreleased
    /// discards what it held.
    pub fn hold(&self, channel: &str, conn: &ConnHandle) -> Hold {
        let mut holds = lock(&self.0.holds);
        let slot = holds.entry(channel.to_owned()).or_default();
        match slot.get_mut(conn.id()) {
            None => {
                slot.insert(conn.id().to_owned(), Held::Collecting(Vec::new()));
                self.0.held.fetch_add(1, Ordering::AcqRel);
            }
            Some(held @ Held::Guarding { .. }) => *held = Held::Collecting(Vec::new()),
            Some(Held::Collecting(_)) => {}
        }
        Hold {
            hub: self.clone(),
            channel: channel.to_owned(),
            conn: conn.clone(),
            released: false,
        }
    }

    /// End a hold; with `after`, queue what it held (events past that
    /// offset) to the socket first, under the lock fan-out takes while
    /// holds exist, so nothing overtakes them, and guard the seam for
    /// [`SEAM_GUARD`] against live frames the replay already carried.
    fn unhold(&self, channel: &str, conn: &ConnHandle, after: Option<u64>) {
        let mut holds = lock(&self.0.holds);
        let Some(slot) = holds.get_mut(channel) else {
            return;
        };
        let frames = match slot.remove(conn.id()) {
            Some(Held::Collecting(frames)) => frames,
            // Another hold of the same socket was released first: its
            // guard stays until it expires.
            Some(guard) => {
                slot.insert(conn.id().to_owned(), guard);
                return;
            }
            None => return,
        };
        match after {
            Some(after) => {
                for frame in frames {
                    if logged_offset(frame.as_str()).is_none_or(|o| o > after) {
                        conn.push(frame);
                    }
                }
                let until = std::time::Instant::now() + SEAM_GUARD;
                slot.insert(conn.id().to_owned(), Held::Guarding { after, until });
            }
            None => {
                if slot.is_empty() {
                    holds.remove(channel);
                }
                self.0.held.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Queue `frame` to every local authenticated connection.
    pub fn broadcast_authenticated(&self, frame: &Frame) -> usize {
        self.all()
            .iter()
            .filter(|c| c.identity().is_some() && c.push(frame.clone()))
            .count()
    }

    /// A channel has ended (a session closed, a device was revoked): drop
    /// it from the local index and from each subscriber's state (a
    /// device's subscribers are closed), then drop the instance's interest.
    fn end_channel(&self, channel: &str) {
        let session = channel.strip_prefix(SESSION_CHANNEL_PREFIX);
        if let Some(id) = session {
            self.0.owned.forget(id);
        }
        let subs = {
            let mut index = self.0.channels.write().unwrap_or_else(|p| p.into_inner());
            index.remove(channel).unwrap_or_default()
        };
        if subs.is_empty() {
            return;
        }
        if channel.starts_with(DEVICE_CHANNEL_PREFIX) {
            // A device was revoked: its sockets go, wherever they are.
            for conn in subs.values() {
                conn.close(close_code::KICKED, "device revoked");
            }
        }
        for conn in subs.values() {
            let mut state = conn.state();
            if let Some(id) = session {
                state.sessions.remove(id);
            }
            state.subscriptions.remove(channel);
        }
        let hub = self.clone();
        let channel = channel.to_owned();
        tokio::spawn(async move {
            if let Err(e) = hub.write_interest(&channel).await {
                tracing::warn!(%channel, error = %e, "unsubscribe of an ended channel failed");
            }
        });
    }

    /// Copies of the sessions local connections own.
    pub fn owned(&self) -> &OwnedSessions {
        &self.0.owned
    }

    /// Copies of pending approvals and connected devices' records
    /// ([`copies`]).
    pub fn copies(&self) -> &Copies {
        &self.0.copies
    }

    /// Run `f` on the leased budget of identity `sub`.
    pub fn with_budget<T>(&self, sub: &str, f: impl FnOnce(&mut IdentityBudget) -> T) -> T {
        let mut budgets = lock(&self.0.budgets);
        // Every message comes here: no key copied unless it is new.
        if let Some(budget) = budgets.get_mut(sub) {
            return f(&mut budget.lease);
        }
        f(&mut budgets.entry(sub.to_owned()).or_default().lease)
    }

    /// One more local connection holds identity `sub`.
    pub fn hold_identity(&self, sub: &str) {
        lock(&self.0.budgets)
            .entry(sub.to_owned())
            .or_default()
            .holders += 1;
    }

    /// A local connection let go of identity `sub` (it closed, or took
    /// another identity); the identity's budget goes with the last one.
    /// A count, not a look at every connection: when a whole storm of one
    /// identity's connections closes, each close is O(1), not O(n).
    pub fn release_identity(&self, sub: &str) {
        let mut budgets = lock(&self.0.budgets);
        if let Some(budget) = budgets.get_mut(sub) {
            budget.holders = budget.holders.saturating_sub(1);
            if budget.holders == 0 {
                budgets.remove(sub);
            }
        }
    }
}

impl Inbox for Hub {
    fn deliver(&self, envelope: Envelope) -> usize {
        match envelope {
            Envelope::Channel {
                channel,
                frame,
                last,
            } => {
                self.0.owned.observe(&channel, &frame);
                let n = self.fanout(&channel, &frame);
                if last {
                    self.end_channel(&channel);
                }
                n
            }
            Envelope::Conn { conn_id, frame } => {
                usize::from(self.get(&conn_id).is_some_and(|c| c.push(frame)))
            }
            Envelope::Kick {
                conn_id,
                code,
                reason,
            } => match self.get(&conn_id) {
                Some(conn) => {
                    conn.close(code, &reason);
                    1
                }
                None => 0,
            },
            // Relay messages are the relay's (`crate::relay::Inbound`).
            Envelope::Relay { .. } => 0,
        }
    }

    fn holds(&self, conn_id: &str) -> bool {
        let conns = self.0.conns.read().unwrap_or_else(|p| p.into_inner());
        conns.contains_key(conn_id)
    }
}

/// A socket held back from a channel's frames (see [`Hub::hold`]).
pub struct Hold {
    hub: Hub,
    channel: String,
    conn: ConnHandle,
    released: bool,
}

impl Hold {
    /// Queue what was held past offset `after` and let frames flow again.
    pub fn release(mut self, after: u64) {
        self.hub.unhold(&self.channel, &self.conn, Some(after));
        self.released = true;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.released {
            self.hub.unhold(&self.channel, &self.conn, None);
        }
    }
}

/// Close code for an administrative kick.
pub const KICK_CODE: u16 = close_code::KICKED;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LoggedFrame;
    use crate::backend::memory::MemoryBackend;
    use serde_json::json;

    fn logged(offset: u64) -> Frame {
        LoggedFrame::new("notify", json!({"channel": "h"})).frame(offset)
    }

    fn channel(frame: Frame) -> Envelope {
        Envelope::Channel {
            channel: "h".into(),
            frame,
            last: false,
        }
    }

    /// What the socket got, as offsets (0 for a frame without one).
    fn offsets(conn: &ConnHandle) -> Vec<u64> {
        conn.take_frames()
            .iter()
            .map(|f| logged_offset(f.as_str()).unwrap_or(0))
            .collect()
    }

    #[test]
    fn the_connection_map_gives_back_what_a_gone_wave_grew_it_to() {
        let hub = Hub::new(Arc::new(MemoryBackend::new()));
        let ip = IpAddr::from([127, 0, 0, 1]);
        let capacity = |hub: &Hub| hub.0.conns.read().unwrap().capacity();
        for i in 0..5_000 {
            hub.register(ConnHandle::new(format!("c{i}"), ip, 4));
        }
        let grown = capacity(&hub);
        for i in 10..5_000 {
            hub.unregister(&format!("c{i}"));
        }
        assert!(capacity(&hub) > grown / 2, "a map keeps its capacity");
        hub.shrink();
        assert!(
            capacity(&hub) < grown / 100,
            "{} of {grown}",
            capacity(&hub)
        );
        assert_eq!(hub.len(), 10);
        assert!(hub.get("c3").is_some(), "the live ones stay");
        // A map in use is left as it is.
        let kept = capacity(&hub);
        hub.shrink();
        assert_eq!(capacity(&hub), kept);
    }

    #[tokio::test]
    async fn a_held_socket_gets_what_arrived_after_its_replay_once_in_order() {
        let hub = Hub::new(Arc::new(MemoryBackend::new()));
        let ip = IpAddr::from([127, 0, 0, 1]);
        let held = ConnHandle::new("held".into(), ip, 64);
        let other = ConnHandle::new("other".into(), ip, 64);
        hub.subscribe_local("h", &other).await.unwrap();
        let hold = hub.hold("h", &held);
        hub.subscribe_local("h", &held).await.unwrap();
        let unnumbered = crate::protocol::frame::notification("presence.join", &json!({}));
        for frame in [logged(1), logged(2), unnumbered] {
            hub.deliver(channel(frame));
        }
        assert_eq!(offsets(&other), [1, 2, 0], "others are not held");
        assert!(held.take_frames().is_empty());
        // The replay carried offset 1; the held copy of it is a duplicate.
        held.push(logged(1));
        hold.release(1);
        // Offset 1 still on its way over pub/sub when the log was read:
        // dropped, not delivered twice.
        hub.deliver(channel(logged(1)));
        hub.deliver(channel(logged(3)));
        assert_eq!(offsets(&held), [1, 2, 0, 3]);
        assert_eq!(offsets(&other), [1, 3], "others get every frame");

        // A hold dropped without a release discards what it held.
        let hold = hub.hold("h", &held);
        hub.deliver(channel(logged(4)));
        drop(hold);
        hub.deliver(channel(logged(5)));
        assert_eq!(offsets(&held), [5]);
        assert_eq!(hub.0.held.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn the_guard_after_a_replay_expires() {
        let hub = Hub::new(Arc::new(MemoryBackend::new()));
        let held = ConnHandle::new("held".into(), IpAddr::from([127, 0, 0, 1]), 64);
        hub.subscribe_local("h", &held).await.unwrap();
        hub.hold("h", &held).release(5);
        assert_eq!(hub.0.held.load(Ordering::Acquire), 1, "guarding");
        hub.deliver(channel(logged(5)));
        assert!(held.take_frames().is_empty(), "a duplicate of the replay");
        // Expired: frames flow as before and the guard is gone.
        if let Some(Held::Guarding { until, .. }) = lock(&hub.0.holds)
            .get_mut("h")
            .and_then(|slot| slot.get_mut("held"))
        {
            *until = std::time::Instant::now();
        }
        hub.deliver(channel(logged(5)));
        assert_eq!(offsets(&held), [5]);
        assert_eq!(hub.0.held.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_held_socket_that_collects_too_much_is_a_slow_consumer() {
        let hub = Hub::new(Arc::new(MemoryBackend::new()));
        let held = ConnHandle::new("held".into(), IpAddr::from([127, 0, 0, 1]), 64);
        let _hold = hub.hold("h", &held);
        hub.subscribe_local("h", &held).await.unwrap();
        for n in 1..=HOLD_CAP as u64 {
            hub.deliver(channel(logged(n)));
        }
        assert!(!held.is_closed());
        hub.deliver(channel(logged(HOLD_CAP as u64 + 1)));
        assert!(held.is_closed());
        assert_eq!(
            held.close_frame().map(|(code, _)| code),
            Some(close_code::SLOW_CONSUMER)
        );
    }

    #[test]
    fn the_hub_holds_only_its_registered_connections() {
        let hub = Hub::new(Arc::new(MemoryBackend::new()));
        hub.register(ConnHandle::new(
            "here".into(),
            IpAddr::from([127, 0, 0, 1]),
            4,
        ));
        assert!(hub.holds("here"));
        assert!(!hub.holds("elsewhere"), "a connection of another instance");
        hub.unregister("here");
        assert!(!hub.holds("here"), "gone once unregistered");
    }

    #[test]
    fn an_identity_budget_goes_with_its_last_local_connection() {
        let hub = Hub::new(Arc::new(MemoryBackend::new()));
        let leased = |hub: &Hub| hub.with_budget("alice", |b| b.remaining);
        hub.hold_identity("alice");
        hub.hold_identity("alice");
        hub.with_budget("alice", |b| b.remaining = 40);
        hub.release_identity("alice");
        assert_eq!(leased(&hub), 40, "one connection of alice is still here");
        hub.release_identity("alice");
        assert_eq!(leased(&hub), 0, "the budget left with the last connection");
        // A release with nothing held (a connection that never held the
        // identity) neither underflows nor touches anyone else's budget.
        hub.hold_identity("bob");
        hub.with_budget("bob", |b| b.remaining = 7);
        hub.release_identity("carol");
        hub.release_identity("carol");
        assert_eq!(hub.with_budget("bob", |b| b.remaining), 7);
    }
}
