//! The application state shared by every connection and HTTP handler:
//! infrastructure handles only (configuration, the backend, this
//! instance's hub, agents and relay, authentication). The domain rules that
//! use them live in `services`; nothing here knows a method or a route.

use crate::auth::{Authenticator, ClientIpResolver, OriginPolicy};
use crate::backend::Backend;
use crate::config::Config;
use crate::hub::Hub;
use crate::telemetry::LogRing;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Everything a handler may need, behind one cheap `Clone`.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

pub struct AppInner {
    pub config: Config,
    pub instance_id: String,
    pub generation: u64,
    pub started: Instant,
    pub started_at_ms: u64,
    pub auth: Authenticator,
    pub origins: OriginPolicy,
    pub client_ips: ClientIpResolver,
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
    pub logs: LogRing,
    pub draining: AtomicBool,
    /// The backend's resync count the last finished re-assert answered.
    pub reasserted: std::sync::atomic::AtomicU64,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl App {
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Ready to take traffic: not draining, the backend reachable, and the
    /// state re-asserted after the backend's latest reconnect.
    pub fn is_ready(&self) -> bool {
        let latest = *self.backend.resync_events().borrow();
        !self.is_draining()
            && self.backend.is_available()
            && self.reasserted.load(Ordering::SeqCst) >= latest
    }

    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}
