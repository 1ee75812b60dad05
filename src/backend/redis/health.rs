//! The Redis backend as a whole: availability (driven by fred's connection
//! events and the pub/sub canary, see [`RedisBackend`]'s connection
//! watch), the resync signal bumped on every reconnect, and the epoch key
//! that tells a reconnect from a Redis that came back empty or may have
//! lost writes (a failover, a restart from disk: see `replication`).

use super::{RedisBackend, unavailable};
use crate::backend::{BackendResult, Health};
use async_trait::async_trait;
use std::sync::atomic::Ordering;
use tokio::sync::watch;

/// The epoch, started again when the shared state may have lost writes
/// (see `replication`). KEYS: epoch, the history it was taken under.
/// ARGV: a fresh token, the history this instance sees now (empty when it
/// could not look), the epoch a rewound primary replaces (or empty).
/// A missing epoch (Redis came back empty), a different history (a
/// failover, a restart from disk) or the rewound epoch itself: the fresh
/// token. Otherwise the stored one. Returns the epoch, whether
/// this call started it, and the history stored before.
///
/// A view that differs from the stored history and does not name the
/// replication id of the server running the script is not judged (as if
/// empty): it was taken of another server.
/// The client sends a command again after a reconnect, so a read begun
/// just before Redis died runs on the server that came back, with the
/// view of the one that died: judged, it would start a second epoch over
/// the one the first instance to look started.
static EPOCH: std::sync::LazyLock<fred::types::scripts::Script> = std::sync::LazyLock::new(|| {
    fred::types::scripts::Script::from_lua(
        r#"
local epoch = redis.call('GET', KEYS[1])
local history = redis.call('GET', KEYS[2])
local seen = ARGV[2]
-- Only a view that would change something is checked (the common read,
-- under the stored history, costs no INFO).
if seen ~= '' and seen ~= history then
  local id = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
  local named = false
  for part in string.gmatch(seen, '[^,]+') do
    if part == id then named = true end
  end
  if not named then seen = '' end
end
local renew = not epoch
if seen ~= '' then
  renew = renew or (history and history ~= seen) or (ARGV[3] ~= '' and epoch == ARGV[3])
end
local was = history or ''
if renew then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
if seen ~= '' and (renew or not history) then redis.call('SET', KEYS[2], seen) end
return {epoch, renew and 1 or 0, was}
"#,
    )
});

#[async_trait]
impl Health for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_available(&self) -> bool {
        self.0.connected.load(Ordering::Relaxed) && self.0.pubsub_ok.load(Ordering::Relaxed)
    }

    fn pubsub_lag_ms(&self) -> Option<u64> {
        match self.0.pubsub_lag_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            lag => Some(lag),
        }
    }

    fn resync_events(&self) -> watch::Receiver<u64> {
        self.0.resync.subscribe()
    }

    async fn epoch(&self) -> BackendResult<String> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        let (history, rewound) = {
            let seen = self.observed();
            (
                seen.history(),
                seen.rewound_from.clone().unwrap_or_default(),
            )
        };
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        let (token, renewed, was): (String, u8, String) = EPOCH
            .evalsha_with_reload(
                client,
                vec![keys.epoch(), keys.epoch_history()],
                vec![fresh, history.clone(), rewound.clone()],
            )
            .await
            .map_err(unavailable)?;
        if renewed == 1 {
            tracing::warn!(
                epoch = %token, seen = %history, stored = %was, rewound = %rewound,
                "this instance started a new redis epoch"
            );
        }
        let mut seen = self.observed();
        if seen.rewound_from.as_ref().is_some_and(|old| *old != token) {
            seen.rewound_from = None;
        }
        seen.last_epoch = Some(token.clone());
        Ok(token)
    }
}

impl RedisBackend {
    /// Whether the stored epoch is no longer the one this instance last
    /// read (one GET; false when unknown or unreadable: the next look
    /// decides).
    pub(super) async fn epoch_moved(&self) -> bool {
        use fred::prelude::KeysInterface;
        let Some(known) = self.observed().last_epoch.clone() else {
            return false;
        };
        let Ok(client) = self.ready() else {
            return false;
        };
        match client.get::<Option<String>, _>(self.0.keys.epoch()).await {
            Ok(Some(now)) => now != known,
            _ => false,
        }
    }
}
