//! The backend seam: every piece of state shared between instances and every
//! delivery that may cross an instance boundary goes through [`Backend`].
//!
//! Handlers, auth and HTTP never touch storage directly; they call these
//! intention-named operations. Two implementations exist or will exist:
//! [`memory::MemoryBackend`] (standalone mode, one process) and a Redis one
//! (cluster mode). Both must honour the same contract, written on each method
//! below and summarised in `docs/architecture.md`:
//!
//! - **Delivery** goes backend → [`Inbox`] of the instance(s) that hold the
//!   target. An instance calls [`Backend::attach`] once with its inbox; the
//!   backend then calls [`Inbox::deliver`] for every envelope addressed to
//!   that instance, in publish order per channel. `deliver` never blocks.
//! - **Interest**: an instance reports through [`Backend::set_interest`]
//!   how many local sockets subscribe to a channel; channel envelopes only
//!   reach instances with a count above zero. Gaining interest is in force
//!   when the call returns; losing it may let envelopes already in flight
//!   arrive shortly after (the hub drops them).
//! - **Ownership**: records written for a connection carry the instance id
//!   that holds it, so a dead instance's records can be reaped.
//! - **Failure**: an operation that cannot reach shared state fails with
//!   [`BackendError::Unavailable`] promptly (never hangs); callers map it to
//!   -32005 / HTTP 503.
//! - **Atomicity**: check-and-set operations (`create_session`,
//!   `join_session`, `patch_session`, `rate_hit`, `rate_take`) are atomic
//!   across instances.

mod events;
pub mod memory;
mod records;
pub mod redis;

pub use events::{EventPage, LoggedFrame, logged_offset};
pub use records::{
    AgentEntry, ApprovalRecord, ApprovalStatus, Idempotency, RunRecord, RunStatus, ToolSpec,
};

use crate::config::Window;
use crate::protocol::{Frame, RpcError};
use crate::ratelimit::Decision;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// Errors of backend operations, each mapping to one JSON-RPC code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("limit exceeded: {0} (max {1})")]
    Limit(&'static str, usize),
    #[error("backend failure: {0}")]
    Internal(String),
    /// A value the caller gave (`field`) that the backend cannot use.
    #[error("invalid {0}: {1}")]
    Invalid(&'static str, String),
}

impl BackendError {
    /// The client-facing error; `id` names the object for not-found.
    pub fn into_rpc(self, id: &str) -> RpcError {
        if let Self::Unavailable(_) | Self::Internal(_) = &self {
            metrics::counter!("switchyard_backend_errors_total", "kind" => self.kind())
                .increment(1);
        }
        match self {
            Self::Unavailable(why) => RpcError::unavailable(why),
            Self::NotFound(what) => RpcError::not_found(what, id),
            Self::Conflict(why) => RpcError::conflict(why),
            Self::Limit(what, max) => RpcError::limit(what, max),
            Self::Internal(why) => RpcError::internal(&why),
            Self::Invalid(field, why) => RpcError::invalid_params(field, why),
        }
    }
}

impl BackendError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Limit(..) => "limit",
            Self::Internal(_) => "internal",
            Self::Invalid(..) => "invalid",
        }
    }
}

impl From<BackendError> for RpcError {
    fn from(e: BackendError) -> Self {
        e.into_rpc("")
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// A live gateway instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    pub id: String,
    /// Chosen at start; records written by an older run of the same id
    /// carry an older generation.
    pub generation: u64,
    pub version: String,
    pub started_at: u64,
    pub connections: usize,
    pub last_seen: u64,
}

/// One connected client, as the whole cluster sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEntry {
    pub conn_id: String,
    /// The instance holding the socket.
    pub node_id: String,
    pub generation: u64,
    /// `sub` of the identity, `None` before authentication.
    pub identity: Option<String>,
    pub role: Option<String>,
    pub client: Value,
    pub connected_at: u64,
    pub last_seen: u64,
}

/// How many connections the cluster holds, and how many of them are nodes
/// (presence entries with role `"node"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionCounts {
    pub connections: usize,
    pub nodes: usize,
}

/// A member of a channel's presence set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelMember {
    pub conn_id: String,
    pub identity: String,
    pub client: Value,
    pub joined_at: u64,
}

impl ChannelMember {
    /// The `presence.join` / `presence.leave` push announcing this member.
    pub fn event_frame(&self, event: &str, channel: &str) -> Frame {
        crate::protocol::frame::notification(
            event,
            &serde_json::json!({
                "channel": channel,
                "connId": self.conn_id,
                "identity": self.identity,
                "client": self.client,
                "timestamp": crate::protocol::now_ms(),
            }),
        )
    }
}

/// A channel with subscribers somewhere in the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelInfo {
    pub channel: String,
    pub subscribers: usize,
}

/// A session: a conversation or task with an owner, members and metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    pub session_id: String,
    /// Connection that owns it; `None` while the owner is away (resume window).
    pub owner: Option<String>,
    pub owner_identity: String,
    /// Member connections (the owner included while connected).
    pub members: Vec<String>,
    /// Identities of the members, parallel to `members`.
    pub member_identities: Vec<String>,
    pub meta: Value,
    /// Bumped by every change of `meta`.
    pub version: u64,
    pub max_members: usize,
    pub created_at: u64,
    pub updated_at: u64,
    /// When the owner's connection went away.
    pub detached_at: Option<u64>,
    /// Secret for resuming ownership; stored, never shown (see
    /// [`SessionRecord::public`]).
    pub resume_token: String,
}

impl SessionRecord {
    /// The record as clients see it: everything but the resume token.
    pub fn public(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Value::Object(map) = &mut value {
            map.remove("resumeToken");
        }
        value
    }
}

/// What an instance receives from the backend.
#[derive(Debug, Clone)]
pub enum Envelope {
    /// Fan out to this instance's subscribers of `channel`. With `last`,
    /// the channel ends here: local subscriptions to it are dropped.
    Channel {
        channel: String,
        frame: Frame,
        last: bool,
    },
    /// One frame for one connection.
    Conn { conn_id: String, frame: Frame },
    /// Close one connection.
    Kick {
        conn_id: String,
        code: u16,
        reason: String,
    },
    /// A message of the call relay (`crate::relay`), opaque here. Sent
    /// with [`Backend::send_to_conn`] to the instance holding `conn_id`, or
    /// with [`Backend::send_to_instance`] (then `conn_id` is empty).
    Relay { conn_id: String, body: String },
}

/// The receiving end of an instance: the hub implements it.
pub trait Inbox: Send + Sync + 'static {
    /// Deliver locally; returns how many sockets it was queued to. Must not
    /// block.
    fn deliver(&self, envelope: Envelope) -> usize;
}

/// Shared state and cross-instance delivery. See the module docs.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// Start delivering envelopes for this instance (`instance_id`, started
    /// as `generation`) to `inbox`.
    async fn attach(
        &self,
        instance_id: &str,
        generation: u64,
        inbox: Arc<dyn Inbox>,
    ) -> BackendResult<()>;

    /// Whether shared state is reachable right now (feeds `/ready`).
    fn is_available(&self) -> bool;

    /// Changes each time shared state may have been lost (a reconnect to a
    /// Redis that may have restarted empty): the instance then re-asserts
    /// what its local sockets prove.
    fn resync_events(&self) -> tokio::sync::watch::Receiver<u64> {
        tokio::sync::watch::channel(0).1
    }

    /// A token of the shared state's lifetime: it changes when the backend
    /// has lost everything (Redis restarted without persistence, or was
    /// flushed) and stays the same across a mere reconnect. An instance
    /// compares it on re-assert to tell whether records only its sockets
    /// still know (the sessions they own) must be written back. A backend
    /// that cannot lose its state on its own keeps this constant.
    async fn epoch(&self) -> BackendResult<String> {
        Ok(String::from("constant"))
    }

    // ---- instances ----

    /// Create or refresh this instance's record (heartbeat).
    async fn register_instance(&self, info: InstanceInfo) -> BackendResult<()>;
    async fn deregister_instance(&self, instance_id: &str) -> BackendResult<()>;
    /// Live instances.
    async fn instances(&self) -> BackendResult<Vec<InstanceInfo>>;

    // ---- connections ----

    /// Insert or replace a connection's presence entry.
    async fn put_connection(&self, entry: PresenceEntry) -> BackendResult<()>;
    async fn remove_connection(&self, conn_id: &str) -> BackendResult<()>;
    async fn connection(&self, conn_id: &str) -> BackendResult<Option<PresenceEntry>>;
    async fn connections(&self) -> BackendResult<Vec<PresenceEntry>>;
    /// One page of presence entries: about `limit` of them from `cursor`
    /// (`None`: the start), and the cursor of the next page (`None`: this
    /// was the last). Cursors are opaque; an entry present for the whole
    /// walk is listed at least once. Invalid for a cursor it did not give.
    async fn connections_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<PresenceEntry>, Option<String>)>;
    /// Cluster-wide counts of connections and of those with role `"node"`;
    /// cheap (never reads the entries), for ticks and status.
    async fn connection_counts(&self) -> BackendResult<ConnectionCounts>;

    // ---- channels ----

    /// This instance now has `local_subscribers` sockets subscribed to
    /// `channel` (0: none left). The first one makes the instance receive
    /// the channel's envelopes, 0 stops it; the counts of all instances
    /// make up what [`Backend::publish`] reports.
    async fn set_interest(&self, channel: &str, local_subscribers: usize) -> BackendResult<()>;
    /// Count a subscriber (and its presence when `member` is given).
    async fn channel_join(
        &self,
        channel: &str,
        conn_id: &str,
        member: Option<ChannelMember>,
    ) -> BackendResult<()>;
    async fn channel_leave(&self, channel: &str, conn_id: &str) -> BackendResult<()>;
    /// One page of a channel's presence members, paged like
    /// [`Backend::connections_page`].
    async fn channel_members(
        &self,
        channel: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<ChannelMember>, Option<String>)>;
    /// Channels with at least one subscriber, with counts.
    async fn channels(&self) -> BackendResult<Vec<ChannelInfo>>;

    // ---- delivery ----

    /// Deliver a frame to every subscriber of `channel` on every instance.
    /// Returns the number of sockets subscribed to it cluster-wide (the sum
    /// of the instances' interest counts).
    async fn publish(&self, channel: &str, frame: Frame, last: bool) -> BackendResult<usize>;
    /// [`Backend::publish`] for a publisher that does not use the count
    /// (events, notifications): a backend may skip reading it.
    async fn broadcast(&self, channel: &str, frame: Frame, last: bool) -> BackendResult<()> {
        self.publish(channel, frame, last).await.map(|_| ())
    }
    /// Deliver a `Conn` or `Kick` envelope to the instance holding the
    /// connection. `Ok(false)` when no instance holds it.
    async fn send_to_conn(&self, envelope: Envelope) -> BackendResult<bool>;

    /// Deliver a `Relay` envelope to one instance's inbox. `Ok(false)`
    /// when that instance is not attached (standalone: not this one).
    async fn send_to_instance(&self, instance_id: &str, envelope: Envelope) -> BackendResult<bool>;

    // ---- sessions ----

    /// Create a session whose owner (first member) is `record.owner`.
    /// Conflict if the id exists; Limit if the owner already owns
    /// `max_owned` open sessions.
    async fn create_session(&self, record: SessionRecord, max_owned: usize) -> BackendResult<()>;
    async fn session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>>;
    async fn sessions(&self) -> BackendResult<Vec<SessionRecord>>;
    /// Add a member. NotFound if unknown; Limit when full. Joining twice is
    /// a no-op.
    async fn join_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
    ) -> BackendResult<SessionRecord>;
    /// Remove a member (the owner leaving detaches ownership).
    async fn leave_session(&self, session_id: &str, conn_id: &str) -> BackendResult<SessionRecord>;
    /// Give a session back to `conn_id` of its owner's identity: after the
    /// owner was taken for gone (its instance was reaped while cut off
    /// from the backend), or when the owner resumes from a new connection.
    /// The resume window stops and the owner is a member again. A no-op
    /// when it already owns it; NotFound if unknown; Conflict when the
    /// session belongs to another identity, or another connection owns it
    /// and `takeover` is off (with it, that connection stays a member).
    async fn reclaim_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
        takeover: bool,
    ) -> BackendResult<SessionRecord>;
    /// Apply a JSON merge patch to `meta`. Conflict when `base_version` is
    /// given and differs from the current version.
    async fn patch_session(
        &self,
        session_id: &str,
        patch: &Value,
        base_version: Option<u64>,
    ) -> BackendResult<SessionRecord>;
    /// Remove the session; returns its last state.
    async fn close_session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>>;
    /// A connection went away: drop it from every member list and mark the
    /// sessions it owned detached at `now_ms`. Returns the touched ids.
    async fn detach_connection(&self, conn_id: &str, now_ms: u64) -> BackendResult<Vec<String>>;
    /// Sessions detached at or before `cutoff_ms`.
    async fn expired_sessions(&self, cutoff_ms: u64) -> BackendResult<Vec<String>>;

    // ---- agents ----

    /// Insert or replace a registry entry (keyed by `agent_id`).
    async fn put_agent(&self, entry: &AgentEntry) -> BackendResult<()>;
    async fn remove_agent(&self, agent_id: &str) -> BackendResult<()>;
    /// Every entry, online or not.
    async fn agents(&self) -> BackendResult<Vec<AgentEntry>>;

    // ---- agent runs ----

    /// Record a run as running. Conflict when the session already has a
    /// running run; Limit when `run.caller` has `max_per_caller` running.
    async fn start_run(&self, run: &RunRecord, max_per_caller: usize) -> BackendResult<()>;
    /// The latest run of a session.
    async fn run(&self, session_id: &str) -> BackendResult<Option<RunRecord>>;
    /// Finish run `run_id` of its session with `outcome` (status, result,
    /// error, finishedAt) if it is still running; `None` when it was not
    /// (already finished or cancelled: the first finisher wins).
    async fn finish_run(&self, outcome: &RunRecord) -> BackendResult<Option<RunRecord>>;
    /// A session closed: drop its run record, chat history and the log of
    /// its channel.
    async fn forget_session_records(&self, session_id: &str) -> BackendResult<()>;

    // ---- chat history ----

    /// Append entries to a session's history, keeping the newest `max`.
    async fn append_history(
        &self,
        session_id: &str,
        entries: &[Value],
        max: usize,
    ) -> BackendResult<()>;
    /// The newest `limit` entries, oldest first.
    async fn history(&self, session_id: &str, limit: usize) -> BackendResult<Vec<Value>>;

    // ---- channel logs (see `events`): history, resume, recovery ----

    /// Number `frame` with `channel`'s next offset, append it to the
    /// channel's log (keeping the newest `keep`) and deliver it on the
    /// channel to every instance, in one atomic step: receivers everywhere
    /// see offsets in increasing order, and a frame is in the log before
    /// anyone can see it live. Returns the offset and the sockets
    /// subscribed to the channel cluster-wide.
    async fn log_publish(
        &self,
        channel: &str,
        frame: &LoggedFrame,
        keep: usize,
    ) -> BackendResult<(u64, usize)>;
    /// The logged frames of `channel` after offset `after`, oldest first,
    /// at most `limit`, and the newest offset given.
    async fn channel_log(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> BackendResult<EventPage>;
    /// Make `channel`'s next offset come after `offset` (a session written
    /// back after the backend lost its state keeps numbering where its
    /// members left off).
    async fn advance_log(&self, channel: &str, offset: u64) -> BackendResult<()>;

    // ---- approvals ----

    async fn create_approval(&self, record: &ApprovalRecord) -> BackendResult<()>;
    async fn approval(&self, approval_id: &str) -> BackendResult<Option<ApprovalRecord>>;
    /// Pending approvals, oldest first.
    async fn pending_approvals(&self) -> BackendResult<Vec<ApprovalRecord>>;
    /// Decide a pending approval: the first decision wins cluster-wide;
    /// later ones get Conflict, unknown ids NotFound. The decided record
    /// joins the audit trail.
    async fn resolve_approval(&self, decided: &ApprovalRecord) -> BackendResult<ApprovalRecord>;
    /// The audit trail, newest first.
    async fn approval_history(&self, limit: usize) -> BackendResult<Vec<ApprovalRecord>>;

    // ---- idempotency ----

    /// Claim `key` for `ttl_ms` if nobody holds it: `None` means the caller
    /// now runs the call; otherwise what the key holds.
    async fn claim_idempotency(&self, key: &str, ttl_ms: u64)
    -> BackendResult<Option<Idempotency>>;
    async fn idempotency(&self, key: &str) -> BackendResult<Option<Idempotency>>;
    /// Store the result for `ttl_ms` (`None`: release the key so a retry
    /// runs again).
    async fn finish_idempotency(
        &self,
        key: &str,
        result: Option<&Value>,
        ttl_ms: u64,
    ) -> BackendResult<()>;

    // ---- rate limits ----

    /// Exact sliding window: record one hit under `key` if there is room.
    async fn rate_hit(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision>;
    /// Reserve a slot for credential check `check` in `key`'s failure
    /// window (a [`crate::ratelimit::CheckLog`]): refused when failures and
    /// checks still running fill it.
    async fn check_reserve(
        &self,
        key: &str,
        window: Window,
        check: &str,
        now_ms: u64,
    ) -> BackendResult<Decision>;
    /// Settle a reserved check: a failure keeps its slot for the window, a
    /// good credential frees it.
    async fn check_settle(&self, key: &str, check: &str, failed: bool) -> BackendResult<()>;
    /// Exact sliding window: look without recording.
    async fn rate_peek(&self, key: &str, window: Window, now_ms: u64) -> BackendResult<Decision>;
    /// Lease up to `want` hits at once; returns (granted, retry_after_ms).
    async fn rate_take(
        &self,
        key: &str,
        window: Window,
        want: u32,
        now_ms: u64,
    ) -> BackendResult<(u32, u64)>;
}

/// The Conflict answered to a decision on an approval already decided.
pub(crate) fn already_resolved(status: ApprovalStatus) -> BackendError {
    let word = serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    BackendError::Conflict(format!("approval already {word}"))
}

/// Drop a member; the owner leaving detaches ownership.
pub(crate) fn remove_member(rec: &mut SessionRecord, conn_id: &str, now_ms: u64) {
    if let Some(i) = rec.members.iter().position(|m| m == conn_id) {
        rec.members.remove(i);
        if i < rec.member_identities.len() {
            rec.member_identities.remove(i);
        }
    }
    if rec.owner.as_deref() == Some(conn_id) {
        rec.owner = None;
        rec.detached_at = Some(now_ms);
    }
    rec.updated_at = now_ms;
}

/// Make `conn_id` the owner of `rec` again (see
/// [`Backend::reclaim_session`]); whether anything changed.
pub(crate) fn reclaim_owner(
    rec: &mut SessionRecord,
    conn_id: &str,
    identity: &str,
    takeover: bool,
) -> BackendResult<bool> {
    match rec.owner.as_deref() {
        Some(owner) if owner == conn_id => return Ok(false),
        Some(_) if !takeover => {
            return Err(BackendError::Conflict("session has another owner".into()));
        }
        _ if rec.owner_identity != identity => {
            return Err(BackendError::Conflict(
                "session belongs to another identity".into(),
            ));
        }
        _ => {}
    }
    rec.owner = Some(conn_id.to_owned());
    rec.detached_at = None;
    if !rec.members.iter().any(|m| m == conn_id) {
        rec.members.insert(0, conn_id.to_owned());
        rec.member_identities.insert(0, identity.to_owned());
    }
    rec.updated_at = crate::protocol::now_ms();
    Ok(true)
}

/// Apply a JSON merge patch to a session's `meta`, checking `base_version`
/// first (optimistic concurrency).
pub(crate) fn patch_meta(
    rec: &mut SessionRecord,
    patch: &Value,
    base_version: Option<u64>,
) -> BackendResult<()> {
    if let Some(base) = base_version
        && base != rec.version
    {
        return Err(BackendError::Conflict(format!(
            "version is {}, not {base}",
            rec.version
        )));
    }
    json_patch::merge(&mut rec.meta, patch);
    rec.version += 1;
    rec.updated_at = crate::protocol::now_ms();
    Ok(())
}
