//! The in-process backend of standalone mode.
//!
//! All shared state sits in one [`State`] behind a synchronous mutex: every
//! operation is a short, non-blocking update, and the lock is never held
//! across an `.await` nor while delivering (envelopes are handed to the
//! inbox after the lock is released). Delivery is a direct call into the
//! attached instance's inbox.
//!
//! Channel logs have a lock of their own, which *is* held while a logged
//! frame is delivered: numbering and delivery then happen in one step, so
//! two publishers can never hand receivers frames out of offset order.
//! (Delivery only queues frames and never calls back into the backend.)
//!
//! This module holds the state and the locks; each store trait is
//! implemented in the file of its family (`sessions.rs` holds
//! `impl SessionStore for MemoryBackend`, and so on).

mod agent_defs;
mod agents;
mod approvals;
mod bus;
mod channel_log;
mod channels;
mod chat_history;
mod cron;
mod devices;
mod health;
mod idempotency;
mod instances;
mod mcp_sessions;
mod presence;
mod rates;
mod runs;
mod runtime_config;
mod sessions;

use super::{
    AgentEntry, ApprovalRecord, ChannelMember, Envelope, Idempotency, Inbox, InstanceInfo,
    PresenceEntry, RunRecord, SessionRecord,
};
use crate::protocol::Frame;
use crate::ratelimit::{CheckLog, SlidingLog};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Standalone backend: one instance, state in memory.
#[derive(Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
    /// Channel → its log (see the module docs).
    logs: Mutex<HashMap<String, EventLog>>,
    inbox: OnceLock<Arc<dyn Inbox>>,
}

/// One channel's numbered frames, the newest kept.
#[derive(Default)]
struct EventLog {
    /// The newest offset given.
    latest: u64,
    frames: VecDeque<Frame>,
}

#[derive(Default)]
struct State {
    instances: BTreeMap<String, InstanceInfo>,
    connections: BTreeMap<String, PresenceEntry>,
    /// Local subscriber count per channel this instance is interested in.
    interest: HashMap<String, usize>,
    /// channel → conn id → presence member (None: counted, no presence).
    subscribers: BTreeMap<String, BTreeMap<String, Option<ChannelMember>>>,
    sessions: BTreeMap<String, SessionRecord>,
    windows: HashMap<String, SlidingLog>,
    checks: HashMap<String, CheckLog>,
    agents: BTreeMap<String, AgentEntry>,
    runs: BTreeMap<String, RunRecord>,
    history: HashMap<String, VecDeque<Value>>,
    approvals: BTreeMap<String, ApprovalRecord>,
    audit: VecDeque<ApprovalRecord>,
    /// requester → (approval id, expires at ms), oldest first.
    approval_notices: HashMap<String, VecDeque<(String, u64)>>,
    agent_defs: BTreeMap<String, crate::backend::AgentDefinition>,
    /// key → (state, expires at ms).
    idempotency: HashMap<String, (Idempotency, u64)>,
    mcp_sessions: HashMap<String, (super::McpSession, u64)>,
    config: runtime_config::ConfigState,
    devices: devices::Devices,
    cron: CronState,
}

/// Cron jobs, the due tick of each enabled one, their firings.
#[derive(Default)]
struct CronState {
    jobs: BTreeMap<String, super::CronJob>,
    due: BTreeMap<String, u64>,
    runs: HashMap<String, VecDeque<super::CronRun>>,
    /// Claimed ticks not yet recorded, by (job, tick).
    claims: BTreeMap<(String, u64), super::CronClaim>,
    version: u64,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in
        // a way that matters more than losing the process; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn logs(&self) -> MutexGuard<'_, HashMap<String, EventLog>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliver(&self, envelope: Envelope) -> usize {
        self.inbox.get().map_or(0, |inbox| inbox.deliver(envelope))
    }
}

/// Up to `limit` values after key `cursor` (the last key of the previous
/// page), and the cursor of the next page when more follow.
fn page_after<V: Clone>(
    map: &BTreeMap<String, V>,
    cursor: Option<&str>,
    limit: usize,
) -> (Vec<V>, Option<String>) {
    use std::ops::Bound;
    let after = cursor.map_or(Bound::Unbounded, Bound::Excluded);
    let mut rest = map.range::<str, _>((after, Bound::Unbounded));
    let page: Vec<(&String, &V)> = rest.by_ref().take(limit.max(1)).collect();
    let next = match (rest.next(), page.last()) {
        (Some(_), Some((last, _))) => Some((*last).clone()),
        _ => None,
    };
    (page.into_iter().map(|(_, v)| v.clone()).collect(), next)
}
