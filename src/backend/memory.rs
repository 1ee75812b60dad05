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

use super::approvals::{AUDIT_MAX, already_resolved};
use super::channel_log::window;
use super::sessions::{patch_meta, reclaim_owner, remove_member};
use super::*;
use crate::config::Window;
use crate::protocol::Frame;
use crate::ratelimit::{CheckLog, Decision, SlidingLog};
use async_trait::async_trait;
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
    /// key → (state, expires at ms).
    idempotency: HashMap<String, (Idempotency, u64)>,
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

    fn with_session<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut SessionRecord) -> BackendResult<T>,
    ) -> BackendResult<T> {
        let mut state = self.lock();
        let rec = state
            .sessions
            .get_mut(id)
            .ok_or(BackendError::NotFound("session"))?;
        f(rec)
    }
}

#[async_trait]
impl Health for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn is_available(&self) -> bool {
        true
    }
}

#[async_trait]
impl InstanceStore for MemoryBackend {
    async fn register_instance(&self, info: InstanceInfo) -> BackendResult<()> {
        self.lock().instances.insert(info.id.clone(), info);
        Ok(())
    }

    async fn deregister_instance(&self, instance_id: &str) -> BackendResult<()> {
        self.lock().instances.remove(instance_id);
        Ok(())
    }

    async fn instances(&self) -> BackendResult<Vec<InstanceInfo>> {
        Ok(self.lock().instances.values().cloned().collect())
    }
}

#[async_trait]
impl Presence for MemoryBackend {
    async fn put_connection(&self, entry: PresenceEntry) -> BackendResult<()> {
        self.lock().connections.insert(entry.conn_id.clone(), entry);
        Ok(())
    }

    async fn remove_connection(&self, conn_id: &str) -> BackendResult<()> {
        self.lock().connections.remove(conn_id);
        Ok(())
    }

    async fn connection(&self, conn_id: &str) -> BackendResult<Option<PresenceEntry>> {
        Ok(self.lock().connections.get(conn_id).cloned())
    }

    async fn connections(&self) -> BackendResult<Vec<PresenceEntry>> {
        Ok(self.lock().connections.values().cloned().collect())
    }

    async fn connections_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<PresenceEntry>, Option<String>)> {
        Ok(page_after(&self.lock().connections, cursor, limit))
    }

    async fn connection_counts(&self) -> BackendResult<ConnectionCounts> {
        let state = self.lock();
        let nodes = state
            .connections
            .values()
            .filter(|e| e.role.as_deref() == Some("node"))
            .count();
        Ok(ConnectionCounts {
            connections: state.connections.len(),
            nodes,
        })
    }
}

#[async_trait]
impl ChannelStore for MemoryBackend {
    async fn channel_join(
        &self,
        channel: &str,
        conn_id: &str,
        member: Option<ChannelMember>,
    ) -> BackendResult<()> {
        self.lock()
            .subscribers
            .entry(channel.to_owned())
            .or_default()
            .insert(conn_id.to_owned(), member);
        Ok(())
    }

    async fn channel_leave(&self, channel: &str, conn_id: &str) -> BackendResult<()> {
        let mut state = self.lock();
        if let Some(subs) = state.subscribers.get_mut(channel) {
            subs.remove(conn_id);
            if subs.is_empty() {
                state.subscribers.remove(channel);
            }
        }
        Ok(())
    }

    async fn channel_members(
        &self,
        channel: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<ChannelMember>, Option<String>)> {
        let state = self.lock();
        let Some(subs) = state.subscribers.get(channel) else {
            return Ok((Vec::new(), None));
        };
        let (page, next) = page_after(subs, cursor, limit);
        Ok((page.into_iter().flatten().collect(), next))
    }

    async fn channels(&self) -> BackendResult<Vec<ChannelInfo>> {
        let state = self.lock();
        Ok(state
            .subscribers
            .iter()
            .map(|(channel, subs)| ChannelInfo {
                channel: channel.clone(),
                subscribers: subs.len(),
            })
            .collect())
    }
}

#[async_trait]
impl Bus for MemoryBackend {
    async fn attach(
        &self,
        _instance_id: &str,
        _generation: u64,
        inbox: Arc<dyn Inbox>,
    ) -> BackendResult<()> {
        self.inbox
            .set(inbox)
            .map_err(|_| BackendError::Internal("memory backend attached twice".into()))
    }

    async fn set_interest(&self, channel: &str, local_subscribers: usize) -> BackendResult<()> {
        let mut state = self.lock();
        if local_subscribers == 0 {
            state.interest.remove(channel);
        } else {
            state.interest.insert(channel.to_owned(), local_subscribers);
        }
        Ok(())
    }

    async fn publish(&self, channel: &str, frame: Frame, last: bool) -> BackendResult<usize> {
        let Some(count) = self.lock().interest.get(channel).copied() else {
            return Ok(0);
        };
        self.deliver(Envelope::Channel {
            channel: channel.to_owned(),
            frame,
            last,
        });
        Ok(count)
    }

    async fn send_to_conn(&self, envelope: Envelope) -> BackendResult<bool> {
        let conn_id = match &envelope {
            Envelope::Conn { conn_id, .. }
            | Envelope::Kick { conn_id, .. }
            | Envelope::Relay { conn_id, .. } => conn_id,
            Envelope::Channel { .. } => {
                return Err(BackendError::Internal(
                    "channel envelope sent to a conn".into(),
                ));
            }
        };
        if !self.lock().connections.contains_key(conn_id) {
            return Ok(false);
        }
        self.deliver(envelope);
        Ok(true)
    }

    async fn send_to_instance(&self, instance_id: &str, envelope: Envelope) -> BackendResult<bool> {
        if !self.lock().instances.contains_key(instance_id) {
            return Ok(false);
        }
        Ok(self.deliver(envelope) > 0)
    }
}

#[async_trait]
impl SessionStore for MemoryBackend {
    async fn create_session(&self, record: SessionRecord, max_owned: usize) -> BackendResult<()> {
        let mut state = self.lock();
        if state.sessions.contains_key(&record.session_id) {
            return Err(BackendError::Conflict("session already exists".into()));
        }
        let owned = state
            .sessions
            .values()
            .filter(|s| s.owner.is_some() && s.owner == record.owner)
            .count();
        if owned >= max_owned {
            return Err(BackendError::Limit("sessions per connection", max_owned));
        }
        state.sessions.insert(record.session_id.clone(), record);
        Ok(())
    }

    async fn session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>> {
        Ok(self.lock().sessions.get(session_id).cloned())
    }

    async fn sessions(&self) -> BackendResult<Vec<SessionRecord>> {
        Ok(self.lock().sessions.values().cloned().collect())
    }

    async fn join_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
    ) -> BackendResult<SessionRecord> {
        self.with_session(session_id, |rec| {
            if !rec.members.iter().any(|m| m == conn_id) {
                if rec.members.len() >= rec.max_members {
                    return Err(BackendError::Limit("session members", rec.max_members));
                }
                rec.members.push(conn_id.to_owned());
                rec.member_identities.push(identity.to_owned());
                rec.updated_at = crate::protocol::now_ms();
            }
            Ok(rec.clone())
        })
    }

    async fn leave_session(&self, session_id: &str, conn_id: &str) -> BackendResult<SessionRecord> {
        self.with_session(session_id, |rec| {
            remove_member(rec, conn_id, crate::protocol::now_ms());
            Ok(rec.clone())
        })
    }

    async fn patch_session(
        &self,
        session_id: &str,
        patch: &Value,
        base_version: Option<u64>,
    ) -> BackendResult<SessionRecord> {
        self.with_session(session_id, |rec| {
            patch_meta(rec, patch, base_version)?;
            Ok(rec.clone())
        })
    }

    async fn reclaim_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
        takeover: bool,
    ) -> BackendResult<SessionRecord> {
        self.with_session(session_id, |rec| {
            reclaim_owner(rec, conn_id, identity, takeover)?;
            Ok(rec.clone())
        })
    }

    async fn close_session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>> {
        Ok(self.lock().sessions.remove(session_id))
    }

    async fn detach_connection(&self, conn_id: &str, now_ms: u64) -> BackendResult<Vec<String>> {
        let mut state = self.lock();
        let mut touched = Vec::new();
        for rec in state.sessions.values_mut() {
            let member = rec.members.iter().any(|m| m == conn_id);
            if member || rec.owner.as_deref() == Some(conn_id) {
                remove_member(rec, conn_id, now_ms);
                touched.push(rec.session_id.clone());
            }
        }
        Ok(touched)
    }

    async fn expired_sessions(&self, cutoff_ms: u64) -> BackendResult<Vec<String>> {
        Ok(self
            .lock()
            .sessions
            .values()
            .filter(|s| s.detached_at.is_some_and(|t| t <= cutoff_ms))
            .map(|s| s.session_id.clone())
            .collect())
    }
}

#[async_trait]
impl AgentStore for MemoryBackend {
    async fn put_agent(&self, entry: &AgentEntry) -> BackendResult<()> {
        self.lock()
            .agents
            .insert(entry.agent_id.clone(), entry.clone());
        Ok(())
    }

    async fn remove_agent(&self, agent_id: &str) -> BackendResult<()> {
        self.lock().agents.remove(agent_id);
        Ok(())
    }

    async fn agents(&self) -> BackendResult<Vec<AgentEntry>> {
        Ok(self.lock().agents.values().cloned().collect())
    }
}

#[async_trait]
impl RunStore for MemoryBackend {
    async fn start_run(&self, run: &RunRecord, max_per_caller: usize) -> BackendResult<()> {
        let mut state = self.lock();
        if state
            .runs
            .get(&run.session_id)
            .is_some_and(|r| r.status == RunStatus::Running)
        {
            return Err(BackendError::Conflict(format!(
                "session {} already has a run in progress",
                run.session_id
            )));
        }
        let running = state
            .runs
            .values()
            .filter(|r| r.status == RunStatus::Running && r.caller == run.caller)
            .count();
        if running >= max_per_caller {
            return Err(BackendError::Limit("concurrent runs", max_per_caller));
        }
        state.runs.insert(run.session_id.clone(), run.clone());
        Ok(())
    }

    async fn run(&self, session_id: &str) -> BackendResult<Option<RunRecord>> {
        Ok(self.lock().runs.get(session_id).cloned())
    }

    async fn finish_run(&self, outcome: &RunRecord) -> BackendResult<Option<RunRecord>> {
        let mut state = self.lock();
        match state.runs.get_mut(&outcome.session_id) {
            Some(run) if run.run_id == outcome.run_id && run.status == RunStatus::Running => {
                *run = outcome.clone();
                Ok(Some(run.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn forget_session_records(&self, session_id: &str) -> BackendResult<()> {
        let mut state = self.lock();
        state.runs.remove(session_id);
        state.history.remove(session_id);
        drop(state);
        self.logs().remove(&crate::hub::session_channel(session_id));
        Ok(())
    }
}

#[async_trait]
impl ChatHistory for MemoryBackend {
    async fn append_history(
        &self,
        session_id: &str,
        entries: &[Value],
        max: usize,
    ) -> BackendResult<()> {
        let mut state = self.lock();
        let list = state.history.entry(session_id.to_owned()).or_default();
        list.extend(entries.iter().cloned());
        while list.len() > max {
            list.pop_front();
        }
        Ok(())
    }

    async fn history(&self, session_id: &str, limit: usize) -> BackendResult<Vec<Value>> {
        let state = self.lock();
        let Some(list) = state.history.get(session_id) else {
            return Ok(Vec::new());
        };
        let skip = list.len().saturating_sub(limit);
        Ok(list.iter().skip(skip).cloned().collect())
    }
}

#[async_trait]
impl ChannelLog for MemoryBackend {
    async fn log_publish(
        &self,
        channel: &str,
        frame: &LoggedFrame,
        keep: usize,
    ) -> BackendResult<(u64, usize)> {
        let count = self.lock().interest.get(channel).copied().unwrap_or(0);
        let mut logs = self.logs();
        let log = logs.entry(channel.to_owned()).or_default();
        log.latest += 1;
        let frame = frame.frame(log.latest);
        log.frames.push_back(frame.clone());
        while log.frames.len() > keep {
            log.frames.pop_front();
        }
        let offset = log.latest;
        if count > 0 {
            self.deliver(Envelope::Channel {
                channel: channel.to_owned(),
                frame,
                last: false,
            });
        }
        Ok((offset, count))
    }

    async fn channel_log(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> BackendResult<EventPage> {
        let logs = self.logs();
        let Some(log) = logs.get(channel) else {
            return Ok(EventPage::default());
        };
        let first = log.latest + 1 - log.frames.len() as u64;
        let range = window(log.frames.len(), first, after, limit);
        Ok(EventPage {
            events: log
                .frames
                .range(range.clone())
                .zip(range.start as u64..)
                .map(|(frame, i)| (first + i, frame.clone()))
                .collect(),
            latest: log.latest,
        })
    }

    async fn advance_log(&self, channel: &str, offset: u64) -> BackendResult<()> {
        let mut logs = self.logs();
        let log = logs.entry(channel.to_owned()).or_default();
        if offset > log.latest {
            // The kept frames would no longer be numbered consecutively.
            log.frames.clear();
            log.latest = offset;
        }
        Ok(())
    }
}

#[async_trait]
impl ApprovalStore for MemoryBackend {
    async fn create_approval(&self, record: &ApprovalRecord) -> BackendResult<()> {
        let mut state = self.lock();
        if state.approvals.contains_key(&record.approval_id) {
            return Err(BackendError::Conflict("approval id exists".into()));
        }
        state
            .approvals
            .insert(record.approval_id.clone(), record.clone());
        Ok(())
    }

    async fn approval(&self, approval_id: &str) -> BackendResult<Option<ApprovalRecord>> {
        Ok(self.lock().approvals.get(approval_id).cloned())
    }

    async fn pending_approvals(&self) -> BackendResult<Vec<ApprovalRecord>> {
        let mut pending: Vec<ApprovalRecord> = self
            .lock()
            .approvals
            .values()
            .filter(|a| a.status == ApprovalStatus::Pending)
            .cloned()
            .collect();
        pending.sort_by_key(|a| a.created_at);
        Ok(pending)
    }

    async fn resolve_approval(&self, decided: &ApprovalRecord) -> BackendResult<ApprovalRecord> {
        let mut state = self.lock();
        let current = state
            .approvals
            .get_mut(&decided.approval_id)
            .ok_or(BackendError::NotFound("approval"))?;
        if current.status != ApprovalStatus::Pending {
            return Err(already_resolved(current.status));
        }
        *current = decided.clone();
        state.audit.push_front(decided.clone());
        state.audit.truncate(AUDIT_MAX);
        // Decided approvals stay readable (approval.wait, approval.get)
        // until the map grows; the audit trail keeps the decision.
        if state.approvals.len() > AUDIT_MAX {
            state
                .approvals
                .retain(|_, a| a.status == ApprovalStatus::Pending);
        }
        Ok(decided.clone())
    }

    async fn approval_history(&self, limit: usize) -> BackendResult<Vec<ApprovalRecord>> {
        Ok(self.lock().audit.iter().take(limit).cloned().collect())
    }
}

#[async_trait]
impl IdempotencyStore for MemoryBackend {
    async fn claim_idempotency(
        &self,
        key: &str,
        ttl_ms: u64,
    ) -> BackendResult<Option<Idempotency>> {
        let now = crate::protocol::now_ms();
        let mut state = self.lock();
        state.idempotency.retain(|_, (_, expires)| *expires > now);
        if let Some((held, _)) = state.idempotency.get(key) {
            return Ok(Some(held.clone()));
        }
        state
            .idempotency
            .insert(key.to_owned(), (Idempotency::Pending, now + ttl_ms));
        Ok(None)
    }

    async fn idempotency(&self, key: &str) -> BackendResult<Option<Idempotency>> {
        let now = crate::protocol::now_ms();
        Ok(self
            .lock()
            .idempotency
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(held, _)| held.clone()))
    }

    async fn finish_idempotency(
        &self,
        key: &str,
        result: Option<&Value>,
        ttl_ms: u64,
    ) -> BackendResult<()> {
        let mut state = self.lock();
        match result {
            Some(result) => {
                let done = Idempotency::Done {
                    result: result.clone(),
                };
                let expires = crate::protocol::now_ms() + ttl_ms;
                state.idempotency.insert(key.to_owned(), (done, expires));
            }
            None => {
                state.idempotency.remove(key);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl RateStore for MemoryBackend {
    async fn rate_hit(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision> {
        let mut state = self.lock();
        prune_logs(&mut state.windows, now_ms, SlidingLog::newest);
        Ok(state
            .windows
            .entry(key.to_owned())
            .or_default()
            .hit(window, now_ms))
    }

    async fn check_reserve(
        &self,
        key: &str,
        window: Window,
        check: &str,
        now_ms: u64,
    ) -> BackendResult<Decision> {
        let mut state = self.lock();
        prune_logs(&mut state.checks, now_ms, CheckLog::newest);
        Ok(state
            .checks
            .entry(key.to_owned())
            .or_default()
            .reserve(window, check, now_ms))
    }

    async fn check_settle(&self, key: &str, check: &str, failed: bool) -> BackendResult<()> {
        if let Some(log) = self.lock().checks.get_mut(key) {
            log.settle(check, failed);
        }
        Ok(())
    }

    async fn rate_peek(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision> {
        let mut state = self.lock();
        Ok(match state.windows.get_mut(key) {
            Some(log) => log.peek(window, now_ms),
            None => SlidingLog::default().peek(window, now_ms),
        })
    }

    async fn rate_take(
        &self,
        key: &str,
        window: Window,
        want: u32,
        now_ms: u64,
    ) -> BackendResult<(u32, u64)> {
        let mut state = self.lock();
        prune_logs(&mut state.windows, now_ms, SlidingLog::newest);
        Ok(state
            .windows
            .entry(key.to_owned())
            .or_default()
            .take(window, want, now_ms))
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

/// Keep a map of rate logs bounded: once it grows large, drop logs whose
/// newest entry is older than an hour (longer than any sensible window).
fn prune_logs<L>(logs: &mut HashMap<String, L>, now_ms: u64, newest: fn(&L) -> Option<u64>) {
    const SOFT_CAP: usize = 100_000;
    const STALE_MS: u64 = 3_600_000;
    if logs.len() > SOFT_CAP {
        logs.retain(|_, log| newest(log).is_some_and(|t| t + STALE_MS > now_ms));
    }
}
