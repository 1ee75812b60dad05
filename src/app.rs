//! The application state shared by every connection and HTTP handler:
//! infrastructure handles only (configuration, the backend, this
//! instance's hub, agents and relay, authentication). The domain rules that
//! use them live in `services`; nothing here knows a method or a route.

use crate::auth::{Authenticator, ClientIpResolver, HostPolicy, OriginPolicy};
use crate::backend::ConfigStore;
use crate::backend::{
    AgentStore, ApprovalStore, Backend, Bus, ChannelLog, ChannelStore, ChatHistory, CronStore,
    DeviceStore, Health, IdempotencyStore, InstanceStore, Presence, RateStore, RunStore,
    SessionStore,
};
use crate::config::Config;
use crate::config::runtime::{LiveConfig, RuntimeSettings};
use crate::hub::Hub;
use crate::telemetry::LogRing;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Everything a handler may need, behind one cheap `Clone`.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

pub struct AppInner {
    /// The start-up config (file → env → flags). Settings that change at
    /// run time are read from [`App::live`] instead.
    pub config: Config,
    /// The runtime config in force (start-up config plus overrides).
    pub live: LiveConfig,
    pub instance_id: String,
    pub generation: u64,
    pub started: Instant,
    pub started_at_ms: u64,
    pub auth: Authenticator,
    pub origins: OriginPolicy,
    /// The names this gateway answers to (`Host`).
    pub hosts: HostPolicy,
    pub client_ips: ClientIpResolver,
    /// Shared state as a whole, for wiring lower layers; handlers use the
    /// narrow store they need ([`App::session_store`], [`App::bus`], …).
    pub backend: Arc<dyn Backend>,
    pub hub: Hub,
    /// Agents registered on this instance's connections.
    pub agents: crate::agents::LocalAgents,
    /// Calls to nodes on any instance.
    pub relay: crate::relay::Relay,
    /// Agent runs served by this instance's nodes.
    pub runs: Arc<crate::agents::runs::RunBook>,
    /// Rotation of the `round_robin` routing policy.
    pub rotation: crate::agents::select::Rotation,
    /// The copy of the agent registry routing reads.
    pub registry: crate::agents::view::RegistryView,
    pub logs: LogRing,
    pub draining: AtomicBool,
    /// Cron ticks this instance claimed and is firing (a drain waits for
    /// them: a tick whose instance is gone is taken over by another).
    pub cron_firing: std::sync::atomic::AtomicUsize,
    /// The backend's resync count the last finished re-assert answered.
    pub reasserted: std::sync::atomic::AtomicU64,
    /// When the backend was last found unusable (ms; 0 while it is fine).
    pub backend_down_since_ms: std::sync::atomic::AtomicU64,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The MCP tool catalog's fingerprint, watched once for every MCP
    /// listener of this instance (`server::mcp::listen`).
    pub mcp_tools: std::sync::Mutex<Option<tokio::sync::watch::Receiver<u64>>>,
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl App {
    /// The store of liveness and epoch of shared state.
    pub fn health(&self) -> &dyn Health {
        &*self.backend
    }

    /// The store of the live instances.
    pub fn instance_store(&self) -> &dyn InstanceStore {
        &*self.backend
    }

    /// The store of connections cluster-wide.
    pub fn presence(&self) -> &dyn Presence {
        &*self.backend
    }

    /// The store of channel members and counts.
    pub fn channel_store(&self) -> &dyn ChannelStore {
        &*self.backend
    }

    /// The store of delivery to channels, connections and instances.
    pub fn bus(&self) -> &dyn Bus {
        &*self.backend
    }

    /// The store of session records.
    pub fn session_store(&self) -> &dyn SessionStore {
        &*self.backend
    }

    /// The store of the agent registry.
    pub fn agent_store(&self) -> &dyn AgentStore {
        &*self.backend
    }

    /// The store of operator-managed agent definitions.
    pub fn agent_def_store(&self) -> &dyn crate::backend::AgentDefStore {
        &*self.backend
    }

    /// The store of agent run records.
    pub fn run_store(&self) -> &dyn RunStore {
        &*self.backend
    }

    /// The store of chat histories.
    pub fn chat_history(&self) -> &dyn ChatHistory {
        &*self.backend
    }

    /// The store of numbered channel and session logs.
    pub fn channel_log(&self) -> &dyn ChannelLog {
        &*self.backend
    }

    /// The store of approvals and their audit trail.
    pub fn approval_store(&self) -> &dyn ApprovalStore {
        &*self.backend
    }

    /// The store of devices, their token hashes and the pairing audit.
    pub fn device_store(&self) -> &dyn DeviceStore {
        &*self.backend
    }

    /// The store of idempotency keys and results.
    pub fn idempotency_store(&self) -> &dyn IdempotencyStore {
        &*self.backend
    }

    /// The store of MCP sessions (`Mcp-Session-Id`).
    pub fn mcp_session_store(&self) -> &dyn crate::backend::McpSessionStore {
        &*self.backend
    }

    /// The store of cron jobs and their firings.
    pub fn cron_store(&self) -> &dyn CronStore {
        &*self.backend
    }

    /// The store of shared rate-limit windows.
    pub fn rate_store(&self) -> &dyn RateStore {
        &*self.backend
    }

    /// The store of the runtime config document.
    pub fn config_store(&self) -> &dyn ConfigStore {
        &*self.backend
    }

    /// The settings in force now: the start-up config with the runtime
    /// overrides applied. Read live settings (rate limits, channel rules,
    /// hooks, live limits) here, at the moment they are needed.
    pub fn live(&self) -> std::sync::Arc<RuntimeSettings> {
        self.live.get()
    }

    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The backend reachable and this instance's state re-asserted after
    /// its latest reconnect: shared state and cross-instance delivery work.
    pub fn backend_ok(&self) -> bool {
        let latest = *self.backend.resync_events().borrow();
        self.backend.is_available() && self.reasserted.load(Ordering::SeqCst) >= latest
    }

    /// Sample [`backend_ok`](Self::backend_ok): remember when it turned
    /// false (the start of a grace, see [`is_ready`](Self::is_ready)).
    /// Returns the sample.
    pub fn note_backend(&self) -> bool {
        let ok = self.backend_ok();
        if ok {
            self.backend_down_since_ms.store(0, Ordering::SeqCst);
        } else {
            let now = crate::protocol::now_ms().max(1);
            let _ = self.backend_down_since_ms.compare_exchange(
                0,
                now,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
        ok
    }

    /// Ready to take traffic: not draining, and the backend usable — or
    /// unusable for less than `limits.unready_after_ms`. A Redis blip or a
    /// Sentinel failover then leaves every instance serving its own
    /// sockets (local fan-out works; calls that need shared state answer
    /// -32005) instead of taking them all out of the load balancer at
    /// once. With 0 (the default) readiness follows the backend exactly.
    pub fn is_ready(&self) -> bool {
        if self.is_draining() {
            return false;
        }
        if self.note_backend() {
            return true;
        }
        let grace = self.live().limits.unready_after_ms;
        let since = self.backend_down_since_ms.load(Ordering::SeqCst);
        since != 0 && crate::protocol::now_ms().saturating_sub(since) < grace
    }

    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}
