//! The Redis backend of cluster mode (fred).
//!
//! Two connections per instance: a command client (multiplexed, pipelined)
//! and a dedicated subscriber whose subscriptions fred restores after every
//! reconnect. Multi-key decisions are Lua scripts ([`scripts`]); the key
//! schema is in [`keys`] and `docs/redis.md`.
//!
//! Failure model: while Redis is unreachable every operation fails at once
//! with `Unavailable` (the availability flag is driven by fred's connection
//! events and by the pub/sub canary), so callers answer -32005 instead of
//! waiting; local sockets keep working. Every reconnect bumps
//! [`Health::resync_events`], on which the instance re-asserts what its
//! sockets prove (Redis here keeps nothing on disk, so after a restart it
//! is empty). A reaper, one instance at a time under a lock, removes what
//! dead instances left behind.

mod events;
mod keys;
mod pubsub;
mod reaper;
mod records;
mod scripts;
mod sessions;

pub use keys::Keys;

use super::*;
use crate::config::Window;
use crate::protocol::Frame;
use crate::ratelimit::Decision;
use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::prelude::{
    Builder, ClientLike, Config as FredConfig, EventInterface, Expiration, HashesInterface,
    KeysInterface, ReconnectPolicy, SetsInterface,
};
use scripts::Scripts;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// Settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub prefix: String,
    /// An instance silent this long is dead.
    pub node_ttl: Duration,
    /// Every command gives up after this long.
    pub command_timeout: Duration,
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
    resync: watch::Sender<u64>,
    canary_seen_ms: AtomicU64,
}

/// Cluster backend on Redis.
#[derive(Clone)]
pub struct RedisBackend(Arc<Shared>);

impl RedisBackend {
    /// Connect both clients; fails when Redis cannot be reached now.
    pub async fn connect(settings: RedisSettings) -> BackendResult<Self> {
        let config = FredConfig::from_url(&settings.url)
            .map_err(|e| BackendError::Internal(format!("redis_url: {e}")))?;
        let clustered = config.server.is_clustered();
        let mut builder = Builder::from_config(config);
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
        tokio::time::timeout(timeout * 2, async {
            client.init().await?;
            subscriber.init().await
        })
        .await
        .map_err(|_| BackendError::Unavailable("redis did not answer".into()))?
        .map_err(unavailable)?;
        let (resync, _) = watch::channel(0);
        let shared = Shared {
            keys: Keys::new(&settings.prefix),
            clustered,
            settings,
            client,
            subscriber,
            scripts: Scripts::new(),
            connected: AtomicBool::new(true),
            pubsub_ok: AtomicBool::new(true),
            resubscribing: AtomicBool::new(false),
            attached: OnceLock::new(),
            interest: Mutex::new(HashMap::new()),
            resync,
            canary_seen_ms: AtomicU64::new(crate::protocol::now_ms()),
        };
        Ok(Self(Arc::new(shared)))
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
                me.0.connected.store(true, Ordering::SeqCst);
                me.0.resync.send_modify(|n| *n += 1);
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

#[async_trait]
impl Health for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_available(&self) -> bool {
        self.0.connected.load(Ordering::Relaxed) && self.0.pubsub_ok.load(Ordering::Relaxed)
    }

    fn resync_events(&self) -> watch::Receiver<u64> {
        self.0.resync.subscribe()
    }

    async fn epoch(&self) -> BackendResult<String> {
        let client = self.ready()?;
        let key = self.0.keys.epoch();
        // Claim the key if it is missing (Redis came back empty), then read
        // whichever token won: in order on one connection, in one round
        // trip.
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        let pipeline = client.pipeline();
        let _: () = pipeline
            .set(
                &key,
                fresh,
                None,
                Some(fred::prelude::SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        let _: () = pipeline.get(&key).await.map_err(unavailable)?;
        let (_, token): (Option<String>, String) = pipeline.all().await.map_err(unavailable)?;
        Ok(token)
    }
}

#[async_trait]
impl InstanceStore for RedisBackend {
    async fn register_instance(&self, info: InstanceInfo) -> BackendResult<()> {
        let client = self.ready()?;
        let ttl = self.0.settings.node_ttl.as_millis() as i64;
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
        let client = self.ready()?;
        let all: HashMap<String, String> = client
            .hgetall(self.0.keys.instances())
            .await
            .map_err(unavailable)?;
        let cutoff =
            crate::protocol::now_ms().saturating_sub(self.0.settings.node_ttl.as_millis() as u64);
        let mut live: Vec<InstanceInfo> = all
            .values()
            .filter_map(|v| parse::<InstanceInfo>(v).ok())
            .filter(|i| i.last_seen >= cutoff)
            .collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }
}

#[async_trait]
impl Presence for RedisBackend {
    async fn put_connection(&self, entry: PresenceEntry) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        let record = json(&entry)?;
        let conn_id = entry.conn_id.as_str();
        // The role may change (authentication after connecting): keep the
        // node set in step either way.
        let node = async {
            if entry.role.as_deref() == Some("node") {
                client.sadd::<(), _, _>(keys.nodes(), conn_id).await
            } else {
                client.srem::<(), _, _>(keys.nodes(), conn_id).await
            }
        };
        let (a, b, c) = tokio::join!(
            client.hset::<(), _, _>(keys.conns(), (conn_id, record)),
            client.hset::<(), _, _>(keys.owners(), (conn_id, entry.node_id.as_str())),
            node,
        );
        a.and(b).and(c).map_err(unavailable)
    }

    async fn remove_connection(&self, conn_id: &str) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        let (a, b, c, d) = tokio::join!(
            client.hdel::<(), _, _>(keys.owners(), conn_id),
            client.hdel::<(), _, _>(keys.conns(), conn_id),
            client.srem::<(), _, _>(keys.nodes(), conn_id),
            client.del::<(), _>(keys.conn_channels(conn_id)),
        );
        a.and(b).and(c).and(d).map_err(unavailable)
    }

    async fn connection(&self, conn_id: &str) -> BackendResult<Option<PresenceEntry>> {
        let client = self.ready()?;
        let raw: Option<String> = client
            .hget(self.0.keys.conns(), conn_id)
            .await
            .map_err(unavailable)?;
        raw.map(|r| parse(&r)).transpose()
    }

    async fn connections(&self) -> BackendResult<Vec<PresenceEntry>> {
        let client = self.ready()?;
        let all: HashMap<String, String> = client
            .hgetall(self.0.keys.conns())
            .await
            .map_err(unavailable)?;
        let mut entries: Vec<PresenceEntry> = all.values().filter_map(|v| parse(v).ok()).collect();
        entries.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
        Ok(entries)
    }

    async fn connections_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<PresenceEntry>, Option<String>)> {
        let (values, next) = self.hscan(self.0.keys.conns(), cursor, limit).await?;
        let mut entries: Vec<PresenceEntry> = values.iter().filter_map(|v| parse(v).ok()).collect();
        entries.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
        Ok((entries, next))
    }

    async fn connection_counts(&self) -> BackendResult<ConnectionCounts> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        // HLEN and SCARD are O(1) and read no entry; pipelined together.
        let (connections, nodes) = tokio::join!(
            client.hlen::<u64, _>(keys.conns()),
            client.scard::<u64, _>(keys.nodes()),
        );
        Ok(ConnectionCounts {
            connections: connections.map_err(unavailable)? as usize,
            nodes: nodes.map_err(unavailable)? as usize,
        })
    }
}

#[async_trait]
impl ChannelStore for RedisBackend {
    async fn channel_join(
        &self,
        channel: &str,
        conn_id: &str,
        member: Option<ChannelMember>,
    ) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        let member = member.as_ref().map(json).transpose()?.unwrap_or_default();
        self.0
            .scripts
            .join
            .evalsha_with_reload::<i64, _, _>(
                client,
                vec![
                    keys.subscribers(channel),
                    keys.channel_index(),
                    keys.conn_channels(conn_id),
                ],
                vec![conn_id.to_owned(), member, channel.to_owned()],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn channel_leave(&self, channel: &str, conn_id: &str) -> BackendResult<()> {
        self.leave_channel(channel, conn_id).await.map(|_| ())
    }

    async fn channel_members(
        &self,
        channel: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<ChannelMember>, Option<String>)> {
        let key = self.0.keys.subscribers(channel);
        let (values, next) = self.hscan(key, cursor, limit).await?;
        let mut members: Vec<ChannelMember> = values
            .iter()
            .filter(|v| !v.is_empty())
            .filter_map(|v| parse(v).ok())
            .collect();
        members.sort_by_key(|m| m.joined_at);
        Ok((members, next))
    }

    async fn channels(&self) -> BackendResult<Vec<ChannelInfo>> {
        let client = self.ready()?;
        let all: HashMap<String, i64> = client
            .hgetall(self.0.keys.channel_index())
            .await
            .map_err(unavailable)?;
        let mut list: Vec<ChannelInfo> = all
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(channel, n)| ChannelInfo {
                channel,
                subscribers: n as usize,
            })
            .collect();
        list.sort_by(|a, b| a.channel.cmp(&b.channel));
        Ok(list)
    }
}

#[async_trait]
impl Bus for RedisBackend {
    async fn attach(
        &self,
        instance_id: &str,
        generation: u64,
        inbox: Arc<dyn Inbox>,
    ) -> BackendResult<()> {
        let attached = Attached {
            id: instance_id.to_owned(),
            generation,
            inbox,
        };
        if self.0.attached.set(attached).is_err() {
            return Err(BackendError::Internal(
                "redis backend attached twice".into(),
            ));
        }
        self.watch_connection();
        self.forget_previous_run().await?;
        pubsub::start(self).await?;
        reaper::start(self);
        Ok(())
    }

    async fn set_interest(&self, channel: &str, local_subscribers: usize) -> BackendResult<()> {
        pubsub::set_interest(self, channel, local_subscribers).await
    }

    async fn publish(&self, channel: &str, frame: Frame, last: bool) -> BackendResult<usize> {
        pubsub::publish(self, channel, &frame, last, true).await
    }

    async fn broadcast(&self, channel: &str, frame: Frame, last: bool) -> BackendResult<()> {
        pubsub::publish(self, channel, &frame, last, false)
            .await
            .map(|_| ())
    }

    async fn send_to_conn(&self, envelope: Envelope) -> BackendResult<bool> {
        pubsub::send_to_conn(self, envelope).await
    }

    async fn send_to_instance(&self, instance_id: &str, envelope: Envelope) -> BackendResult<bool> {
        pubsub::send_to_instance(self, instance_id, envelope).await
    }
}

#[async_trait]
impl SessionStore for RedisBackend {
    async fn create_session(&self, record: SessionRecord, max_owned: usize) -> BackendResult<()> {
        sessions::create(self, record, max_owned).await
    }

    async fn session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>> {
        Ok(sessions::load(self, session_id).await?.map(|(r, _)| r))
    }

    async fn sessions(&self) -> BackendResult<Vec<SessionRecord>> {
        sessions::all(self).await
    }

    async fn join_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
    ) -> BackendResult<SessionRecord> {
        sessions::join(self, session_id, conn_id, identity).await
    }

    async fn leave_session(&self, session_id: &str, conn_id: &str) -> BackendResult<SessionRecord> {
        sessions::leave(self, session_id, conn_id, crate::protocol::now_ms()).await
    }

    async fn reclaim_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
        takeover: bool,
    ) -> BackendResult<SessionRecord> {
        sessions::reclaim(self, session_id, conn_id, identity, takeover).await
    }

    async fn patch_session(
        &self,
        session_id: &str,
        patch: &Value,
        base_version: Option<u64>,
    ) -> BackendResult<SessionRecord> {
        sessions::patch(self, session_id, patch, base_version).await
    }

    async fn close_session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>> {
        sessions::close(self, session_id).await
    }

    async fn detach_connection(&self, conn_id: &str, now_ms: u64) -> BackendResult<Vec<String>> {
        sessions::detach_connection(self, conn_id, now_ms).await
    }

    async fn expired_sessions(&self, cutoff_ms: u64) -> BackendResult<Vec<String>> {
        sessions::expired(self, cutoff_ms).await
    }
}

#[async_trait]
impl AgentStore for RedisBackend {
    async fn put_agent(&self, entry: &AgentEntry) -> BackendResult<()> {
        records::put_agent(self, entry).await
    }

    async fn remove_agent(&self, agent_id: &str) -> BackendResult<()> {
        records::remove_agent(self, agent_id).await
    }

    async fn agents(&self) -> BackendResult<Vec<AgentEntry>> {
        records::agents(self).await
    }
}

#[async_trait]
impl RunStore for RedisBackend {
    async fn start_run(&self, run: &RunRecord, max_per_caller: usize) -> BackendResult<()> {
        records::start_run(self, run, max_per_caller).await
    }

    async fn run(&self, session_id: &str) -> BackendResult<Option<RunRecord>> {
        records::run(self, session_id).await
    }

    async fn finish_run(&self, outcome: &RunRecord) -> BackendResult<Option<RunRecord>> {
        records::finish_run(self, outcome).await
    }

    async fn forget_session_records(&self, session_id: &str) -> BackendResult<()> {
        records::forget_session_records(self, session_id).await
    }
}

#[async_trait]
impl ChatHistory for RedisBackend {
    async fn append_history(
        &self,
        session_id: &str,
        entries: &[Value],
        max: usize,
    ) -> BackendResult<()> {
        records::append_history(self, session_id, entries, max).await
    }

    async fn history(&self, session_id: &str, limit: usize) -> BackendResult<Vec<Value>> {
        records::history(self, session_id, limit).await
    }
}

#[async_trait]
impl ChannelLog for RedisBackend {
    async fn log_publish(
        &self,
        channel: &str,
        frame: &LoggedFrame,
        keep: usize,
    ) -> BackendResult<(u64, usize)> {
        events::append(self, channel, frame, keep).await
    }

    async fn channel_log(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> BackendResult<EventPage> {
        events::read(self, channel, after, limit).await
    }

    async fn advance_log(&self, channel: &str, offset: u64) -> BackendResult<()> {
        events::advance(self, channel, offset).await
    }
}

#[async_trait]
impl ApprovalStore for RedisBackend {
    async fn create_approval(&self, record: &ApprovalRecord) -> BackendResult<()> {
        records::create_approval(self, record).await
    }

    async fn approval(&self, approval_id: &str) -> BackendResult<Option<ApprovalRecord>> {
        records::approval(self, approval_id).await
    }

    async fn pending_approvals(&self) -> BackendResult<Vec<ApprovalRecord>> {
        records::pending_approvals(self).await
    }

    async fn resolve_approval(&self, decided: &ApprovalRecord) -> BackendResult<ApprovalRecord> {
        records::resolve_approval(self, decided).await
    }

    async fn approval_history(&self, limit: usize) -> BackendResult<Vec<ApprovalRecord>> {
        records::approval_history(self, limit).await
    }
}

#[async_trait]
impl IdempotencyStore for RedisBackend {
    async fn claim_idempotency(
        &self,
        key: &str,
        ttl_ms: u64,
    ) -> BackendResult<Option<Idempotency>> {
        records::claim_idempotency(self, key, ttl_ms).await
    }

    async fn idempotency(&self, key: &str) -> BackendResult<Option<Idempotency>> {
        records::idempotency(self, key).await
    }

    async fn finish_idempotency(
        &self,
        key: &str,
        result: Option<&Value>,
        ttl_ms: u64,
    ) -> BackendResult<()> {
        records::finish_idempotency(self, key, result, ttl_ms).await
    }
}

#[async_trait]
impl RateStore for RedisBackend {
    async fn rate_hit(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision> {
        let (granted, count, retry) = self.rate(key, window, 1, now_ms).await?;
        Ok(Decision {
            allowed: granted == 1,
            count,
            retry_after_ms: if granted == 1 { 0 } else { retry },
        })
    }

    async fn check_reserve(
        &self,
        key: &str,
        window: Window,
        check: &str,
        now_ms: u64,
    ) -> BackendResult<Decision> {
        use crate::ratelimit::{CHECK_PENDING_MS, CHECK_RETRY_MS};
        let args = [
            now_ms,
            window.window_ms,
            u64::from(window.limit),
            CHECK_PENDING_MS,
            CHECK_RETRY_MS,
        ];
        let (allowed, count, retry) = self.check(key, "reserve", check, &args).await?;
        Ok(Decision {
            allowed: allowed == 1,
            count: count.max(0) as u32,
            retry_after_ms: if allowed == 1 { 0 } else { retry.max(1) as u64 },
        })
    }

    async fn check_settle(&self, key: &str, check: &str, failed: bool) -> BackendResult<()> {
        let op = if failed { "fail" } else { "pass" };
        self.check(key, op, check, &[]).await.map(|_| ())
    }

    async fn rate_peek(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision> {
        let (_, count, retry) = self.rate(key, window, 0, now_ms).await?;
        let allowed = count < window.limit;
        Ok(Decision {
            allowed,
            count,
            retry_after_ms: if allowed { 0 } else { retry },
        })
    }

    async fn rate_take(
        &self,
        key: &str,
        window: Window,
        want: u32,
        now_ms: u64,
    ) -> BackendResult<(u32, u64)> {
        let (granted, _, retry) = self.rate(key, window, want, now_ms).await?;
        Ok((granted, if granted == 0 { retry } else { 0 }))
    }
}

impl RedisBackend {
    /// One sliding-window script call: (granted, count, retry_after_ms).
    async fn rate(
        &self,
        key: &str,
        window: Window,
        want: u32,
        now_ms: u64,
    ) -> BackendResult<(u32, u32, u64)> {
        let client = self.ready()?;
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let (granted, count, retry): (i64, i64, i64) = self
            .0
            .scripts
            .rate
            .evalsha_with_reload(
                client,
                vec![self.0.keys.rate(key)],
                vec![
                    now_ms.to_string(),
                    window.window_ms.to_string(),
                    window.limit.to_string(),
                    want.to_string(),
                    unique,
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok((
            granted.max(0) as u32,
            count.max(0) as u32,
            retry.max(0) as u64,
        ))
    }

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

    /// One `CHECK` script call: (allowed, count, retry_after_ms).
    async fn check(
        &self,
        key: &str,
        op: &str,
        check: &str,
        args: &[u64],
    ) -> BackendResult<(i64, i64, i64)> {
        let client = self.ready()?;
        let mut argv = vec![op.to_owned(), check.to_owned()];
        argv.extend(args.iter().map(u64::to_string));
        self.0
            .scripts
            .check
            .evalsha_with_reload(client, vec![self.0.keys.rate(key)], argv)
            .await
            .map_err(unavailable)
    }

    /// Leave a channel; returns the presence member that was removed.
    async fn leave_channel(
        &self,
        channel: &str,
        conn_id: &str,
    ) -> BackendResult<Option<ChannelMember>> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        let removed: String = self
            .0
            .scripts
            .leave
            .evalsha_with_reload(
                client,
                vec![
                    keys.subscribers(channel),
                    keys.channel_index(),
                    keys.conn_channels(conn_id),
                ],
                vec![conn_id.to_owned(), channel.to_owned()],
            )
            .await
            .map_err(unavailable)?;
        Ok(if removed.is_empty() {
            None
        } else {
            parse(&removed).ok()
        })
    }

    /// A previous run under this instance id (crashed, restarted at once)
    /// may have left interest counts behind that the reaper never sees (the
    /// id is alive again). A fresh run has no local subscriber yet, so drop
    /// them all before serving.
    async fn forget_previous_run(&self) -> BackendResult<()> {
        let id = self.attached()?.id.clone();
        self.drop_interest_of(&id).await
    }

    /// Remove every interest count `instance` reported.
    async fn drop_interest_of(&self, instance: &str) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        let channels: Vec<String> = client
            .smembers(keys.instance_channels(instance))
            .await
            .map_err(unavailable)?;
        for channel in channels {
            client
                .hdel::<(), _, _>(keys.interest(&channel), instance)
                .await
                .map_err(unavailable)?;
        }
        client
            .del::<(), _>(keys.instance_channels(instance))
            .await
            .map_err(unavailable)
    }

    /// Channels a connection joined (for reaping).
    async fn conn_channels(&self, conn_id: &str) -> BackendResult<Vec<String>> {
        let client = self.ready()?;
        client
            .smembers(self.0.keys.conn_channels(conn_id))
            .await
            .map_err(unavailable)
    }
}
