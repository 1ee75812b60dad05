//! The Redis backend of cluster mode (fred).
//!
//! Two connections per instance: a command client (multiplexed, pipelined)
//! and a dedicated subscriber whose subscriptions fred restores after every
//! reconnect. Multi-key decisions are Lua scripts ([`scripts`]); the key
//! schema is in [`keys`] and `docs/redis.md`.
//!
//! Each store trait is implemented in full in the file of its family
//! (`sessions.rs` holds `impl SessionStore for RedisBackend`, and so on);
//! this module holds the connections, their failure handling and the
//! helpers those files share. `pubsub.rs` is the receiving side of the bus
//! and `reaper.rs` cleans up after dead instances.
//!
//! Failure model: while Redis is unreachable every operation fails at once
//! with `Unavailable` (the availability flag is driven by fred's connection
//! events and by the pub/sub canary), so callers answer -32005 instead of
//! waiting; local sockets keep working. Every reconnect bumps
//! [`Health::resync_events`], on which the instance re-asserts what its
//! sockets prove (Redis here keeps nothing on disk, so after a restart it
//! is empty). A reaper, one instance at a time under a lock, removes what
//! dead instances left behind.
//!
//! [`Health::resync_events`]: crate::backend::Health::resync_events

mod agent_defs;
mod agents;
mod approvals;
mod bus;
mod catch_up;
mod channel_log;
mod channels;
mod chat_history;
mod connect;
mod cron;
mod devices;
mod health;
mod idempotency;
mod instances;
mod keys;
mod mcp_sessions;
mod presence;
mod pubsub;
mod rates;
mod reaper;
mod replication;
mod runs;
mod runtime_config;
mod scripts;
mod sessions;
mod tls;

pub use keys::Keys;

use crate::backend::{BackendError, BackendResult, Inbox};
use crate::config::RedisTlsConfig;
use fred::clients::{Client, SubscriberClient};
use fred::prelude::{Builder, ClientLike, Config as FredConfig, EventInterface, ReconnectPolicy};
use scripts::Scripts;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// Settings of the Redis backend.
#[derive(Clone)]
pub struct RedisSettings {
    /// May hold passwords: never logged, see the `Debug` impl.
    pub url: String,
    pub prefix: String,
    /// Extra trust and a client certificate for `rediss*` URLs.
    pub tls: RedisTlsConfig,
    /// An instance silent this long is dead: the TTL of its `alive` key
    /// and the age at which its record is stale (`Limits::alive_ttl`).
    pub alive_ttl: Duration,
    /// Every command gives up after this long.
    pub command_timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.url.split_once("://").map_or("", |(s, _)| s);
        f.debug_struct("RedisSettings")
            .field("url", &format_args!("{scheme}://<redacted>"))
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("alive_ttl", &self.alive_ttl)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// What the backend knows about the instance it serves.
struct Attached {
    id: String,
    generation: u64,
    inbox: Arc<dyn Inbox>,
}

pub(crate) struct Shared {
    settings: RedisSettings,
    keys: Keys,
    /// Redis Cluster: channel topics use sharded pub/sub.
    clustered: bool,
    client: Client,
    subscriber: SubscriberClient,
    /// A third connection for writes that wait for a replica (`WAIT`
    /// blocks the connection it runs on); see [`replication`].
    durable: Client,
    /// What this instance has seen of the primaries' replication.
    replication: replication::Replication,
    scripts: Scripts,
    /// The command connection is up.
    connected: AtomicBool,
    /// The subscriber proved (canary) it delivers.
    pubsub_ok: AtomicBool,
    /// Subscriptions are being re-issued: the canary alone does not prove
    /// that channel topics are back.
    resubscribing: AtomicBool,
    attached: OnceLock<Attached>,
    /// Channel topics this instance is subscribed to, with local counts.
    interest: Mutex<HashMap<String, usize>>,
    /// The last logged offset delivered per channel (see [`catch_up`]).
    marks: catch_up::Marks,
    resync: watch::Sender<u64>,
    canary_seen_ms: AtomicU64,
    /// The last canary's delivery lag (ms; `u64::MAX` before the first).
    pubsub_lag_ms: AtomicU64,
    /// Runtime config versions announced on the config topic.
    config_changes: watch::Sender<u64>,
}

/// Cluster backend on Redis.
#[derive(Clone)]
pub struct RedisBackend(Arc<Shared>);

impl RedisBackend {
    /// Connect both clients; fails when Redis cannot be reached now.
    pub async fn connect(settings: RedisSettings) -> BackendResult<Self> {
        let uses_tls = tls::url_uses_tls(&settings.url);
        let mut config = FredConfig::from_url(&tls::plain_scheme(&settings.url))
            .map_err(|e| BackendError::Internal(format!("redis_url: {e}")))?;
        if uses_tls {
            config.tls = Some(tls::connector(&settings.tls)?.into());
        }
        let clustered = config.server.is_clustered();
        let mut builder = Builder::from_config(config.clone());
        let timeout = settings.command_timeout;
        builder
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
                // fred's event channels preallocate this many slots each;
                // the message loop drains them continuously, and a lag
                // (counted in switchyard_pubsub_dropped_total) needs a
                // burst this large arriving faster than local queueing.
                p.broadcast_channel_capacity = 1 << 13;
            })
            .with_connection_config(|c| {
                // Small frames, latency-bound: no Nagle delay.
                c.tcp = fred::types::config::TcpConfig {
                    nodelay: Some(true),
                    ..Default::default()
                };
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                c.max_command_attempts = 2;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
        let client = builder.build().map_err(unavailable)?;
        let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
        let durable = builder.build().map_err(unavailable)?;
        let started = tokio::time::timeout(timeout * 2, async {
            client.init().await?;
            subscriber.init().await?;
            durable.init().await
        })
        .await
        .map_err(|_| BackendError::Unavailable("redis did not answer".into()))?;
        if let Err(e) = started {
            // A later connection failed after the first ones connected.
            for connected in [&client, &durable] {
                if connected.is_connected() {
                    let _ = connected.quit().await;
                }
            }
            if subscriber.is_connected() {
                let _ = subscriber.quit().await;
            }
            return Err(connect::connect_error(&config, e, timeout).await);
        }
        let (resync, _) = watch::channel(0);
        let shared = Shared {
            keys: Keys::new(&settings.prefix),
            clustered,
            settings,
            client,
            subscriber,
            durable,
            replication: Default::default(),
            scripts: Scripts::new(),
            connected: AtomicBool::new(true),
            pubsub_ok: AtomicBool::new(true),
            resubscribing: AtomicBool::new(false),
            attached: OnceLock::new(),
            interest: Mutex::new(HashMap::new()),
            marks: catch_up::Marks::default(),
            resync,
            canary_seen_ms: AtomicU64::new(crate::protocol::now_ms()),
            pubsub_lag_ms: AtomicU64::new(u64::MAX),
            config_changes: watch::channel(0).0,
        };
        let backend = Self(Arc::new(shared));
        // The history the first epoch is read under.
        if let Err(e) = backend.observe_replication().await {
            tracing::warn!(error = %e, "reading redis replication failed");
        }
        Ok(backend)
    }

    fn shared(&self) -> &Shared {
        &self.0
    }

    /// Fail fast while Redis is known to be away.
    fn ready(&self) -> BackendResult<&Client> {
        if self.0.connected.load(Ordering::Relaxed) {
            Ok(&self.0.client)
        } else {
            Err(BackendError::Unavailable("redis is unreachable".into()))
        }
    }

    fn attached(&self) -> BackendResult<&Attached> {
        self.0
            .attached
            .get()
            .ok_or_else(|| BackendError::Internal("redis backend not attached".into()))
    }

    /// Watch fred's connection events. The command client going away
    /// marks Redis unavailable; coming back marks it available and asks the
    /// instance to re-assert. The subscriber going away marks pub/sub down
    /// until, after its reconnect, every subscription has been re-issued
    /// and confirmed; then the instance re-asserts again.
    fn watch_connection(&self) {
        let me = self.clone();
        let mut errors = self.0.client.error_rx();
        tokio::spawn(async move {
            while let Ok((error, _)) = errors.recv().await {
                me.observed().invalidate();
                if me.0.connected.swap(false, Ordering::SeqCst) {
                    tracing::warn!(%error, "redis connection lost");
                }
            }
        });
        let me = self.clone();
        let mut errors = self.0.subscriber.error_rx();
        tokio::spawn(async move {
            while let Ok((error, _)) = errors.recv().await {
                me.0.resubscribing.store(true, Ordering::SeqCst);
                if me.0.pubsub_ok.swap(false, Ordering::SeqCst) {
                    tracing::warn!(%error, "redis subscriber connection lost");
                }
            }
        });
        let me = self.clone();
        let mut reconnects = self.0.client.reconnect_rx();
        tokio::spawn(async move {
            while reconnects.recv().await.is_ok() {
                tracing::info!("redis reconnected; re-asserting this instance's state");
                // Before anything is served again: a new primary (or one
                // restarted from disk) starts a new epoch on the first look.
                match me.observe_replication().await {
                    // A failed-over shard's sharded subscriptions follow
                    // it (see below).
                    Ok(true) if me.0.clustered => pubsub::follow_failover(&me),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "reading redis replication after reconnect failed");
                    }
                }
                me.0.connected.store(true, Ordering::SeqCst);
                me.0.resync.send_modify(|n| *n += 1);
            }
        });
        // Once a second: a history that changed without a reconnect (a
        // primary restored under the same id), or an epoch another instance
        // started, asks for a re-assert too.
        let me = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if !me.0.connected.load(Ordering::Relaxed) {
                    continue;
                }
                match me.observe_replication().await {
                    Ok(true) => {
                        tracing::warn!(
                            "redis replication history changed (failover or restart): \
                             re-asserting this instance's state"
                        );
                        if me.0.clustered {
                            pubsub::follow_failover(&me);
                        }
                        me.0.resync.send_modify(|n| *n += 1);
                    }
                    // Another instance may have started an epoch this
                    // one did not (it judged the history from a view of the
                    // topology this one never had): adopt it.
                    Ok(false) if me.epoch_moved().await => {
                        tracing::warn!(
                            "another instance started a new redis epoch: re-asserting this instance's state"
                        );
                        me.0.resync.send_modify(|n| *n += 1);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, "reading redis replication failed"),
                }
            }
        });
        let me = self.clone();
        let mut reconnects = self.0.subscriber.reconnect_rx();
        tokio::spawn(async move {
            while reconnects.recv().await.is_ok() {
                pubsub::resubscribe(&me).await;
                me.0.resync.send_modify(|n| *n += 1);
            }
        });
    }
}

fn unavailable(e: fred::error::Error) -> BackendError {
    BackendError::Unavailable(e.to_string())
}

fn json<T: serde::Serialize>(value: &T) -> BackendResult<String> {
    serde_json::to_string(value).map_err(|e| BackendError::Internal(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> BackendResult<T> {
    serde_json::from_str(text).map_err(|e| BackendError::Internal(format!("corrupt record: {e}")))
}

impl RedisBackend {
    /// One `HSCAN` step over hash `key` from `cursor` (`None`: the start):
    /// the values found and the next cursor (`None` once the walk ends).
    /// COUNT is a hint; a small hash (listpack) comes back whole.
    async fn hscan(
        &self,
        key: String,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<String>, Option<String>)> {
        use fred::types::{ClusterHash, CustomCommand};
        let client = self.ready()?;
        let start: u64 = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| {
                BackendError::Invalid("cursor", "not a cursor this server gave".into())
            })?,
        };
        let hscan = CustomCommand::new_static("HSCAN", ClusterHash::FirstKey, false);
        let args = vec![
            key,
            start.to_string(),
            "COUNT".to_owned(),
            limit.max(1).to_string(),
        ];
        let (next, flat): (String, Vec<String>) =
            client.custom(hscan, args).await.map_err(unavailable)?;
        let values = flat.chunks_exact(2).map(|pair| pair[1].clone()).collect();
        Ok((values, (next != "0").then_some(next)))
    }
}
