//! The reference server's channels: which connections subscribe to what,
//! and the fan-out of one publication.
//!
//! A publication is serialised once; every subscriber's bounded queue gets
//! a reference to the same bytes (`Utf8Bytes` clones share them). A queue
//! that is full closes its connection as a slow consumer instead of
//! holding the publisher back.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// One connection as the channels see it: its outbound queue and the
/// token that closes it.
#[derive(Clone)]
pub struct Peer {
    pub queue: mpsc::Sender<Utf8Bytes>,
    pub stop: CancellationToken,
}

/// Channel name → subscribed connections (by connection number).
#[derive(Default)]
pub struct Channels {
    map: RwLock<HashMap<Arc<str>, HashMap<u64, Peer>>>,
}

impl Channels {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<Arc<str>, HashMap<u64, Peer>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Arc<str>, HashMap<u64, Peer>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribe connection `id` to `channel`.
    pub fn join(&self, channel: &str, id: u64, peer: &Peer) {
        let mut map = self.write();
        match map.get_mut(channel) {
            Some(members) => {
                members.insert(id, peer.clone());
            }
            None => {
                map.insert(channel.into(), HashMap::from([(id, peer.clone())]));
            }
        }
    }

    /// Unsubscribe connection `id` from `channel`.
    pub fn leave(&self, channel: &str, id: u64) {
        let mut map = self.write();
        if let Some(members) = map.get_mut(channel) {
            members.remove(&id);
            if members.is_empty() {
                map.remove(channel);
            }
        }
    }

    /// Queue `frame` to every subscriber of `channel`; how many queues
    /// took it.
    pub fn publish(&self, channel: &str, frame: &Utf8Bytes) -> usize {
        let map = self.read();
        let Some(members) = map.get(channel) else {
            return 0;
        };
        let mut queued = 0;
        for peer in members.values() {
            match peer.queue.try_send(frame.clone()) {
                Ok(()) => queued += 1,
                Err(TrySendError::Full(_)) => peer.stop.cancel(),
                Err(TrySendError::Closed(_)) => {}
            }
        }
        queued
    }

    /// Subscribers of `channel` (tests).
    #[cfg(test)]
    pub fn count(&self, channel: &str) -> usize {
        self.read().get(channel).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(capacity: usize) -> (Peer, mpsc::Receiver<Utf8Bytes>) {
        let (queue, outbound) = mpsc::channel(capacity);
        let stop = CancellationToken::new();
        (Peer { queue, stop }, outbound)
    }

    #[test]
    fn a_publication_is_shared_and_a_full_queue_closes_its_connection() {
        let channels = Channels::default();
        let (fast, mut fast_out) = peer(4);
        let (slow, _slow_out) = peer(1);
        channels.join("public:x", 1, &fast);
        channels.join("public:x", 2, &slow);
        let frame = Utf8Bytes::from("{\"n\":1}".to_owned());
        assert_eq!(channels.publish("public:x", &frame), 2);
        assert_eq!(channels.publish("public:x", &frame), 1);
        assert!(slow.stop.is_cancelled(), "the slow consumer is closed");
        assert!(!fast.stop.is_cancelled());
        let first = fast_out.try_recv().expect("queued");
        assert_eq!(first.as_str().as_ptr(), frame.as_str().as_ptr(), "shared");
        assert_eq!(channels.publish("public:none", &frame), 0);
        channels.leave("public:x", 1);
        channels.leave("public:x", 2);
        assert_eq!(channels.count("public:x"), 0);
    }
}
