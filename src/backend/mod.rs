//! The backend seam: every piece of state shared between instances and every
//! delivery that may cross an instance boundary goes through here.
//!
//! Handlers, auth and HTTP never touch storage directly; they call
//! intention-named operations, grouped in one narrow trait per family, each
//! in its own file with the records it keeps:
//!
//! | trait | file | what |
//! |---|---|---|
//! | [`Health`] | `health.rs` | kind, reachability, loss of shared state |
//! | [`InstanceStore`] | `instances.rs` | live gateway instances |
//! | [`Presence`] | `presence.rs` | connected clients, cluster-wide |
//! | [`ChannelStore`] | `channels.rs` | channel subscribers and presence members |
//! | [`Bus`] | `bus.rs` | delivery to instances: attach, interest, publish, send |
//! | [`SessionStore`] | `sessions.rs` | sessions, their members and owners |
//! | [`AgentStore`] | `agents.rs` | the agent registry |
//! | [`AgentDefStore`] | `agent_defs.rs` | operator-managed agent definitions |
//! | [`RunStore`] | `runs.rs` | agent runs |
//! | [`ChatHistory`] | `chat_history.rs` | a session's chat history |
//! | [`ChannelLog`] | `channel_log.rs` | numbered channel logs (history, resume) |
//! | [`ApprovalStore`] | `approvals.rs` | approvals and their audit trail |
//! | [`DeviceStore`] | `devices.rs` | paired devices, token hashes, pairing audit |
//! | [`CronStore`] | `cron.rs` | cron jobs, their due ticks and firings |
//! | [`IdempotencyStore`] | `idempotency.rs` | idempotency keys |
//! | [`McpSessionStore`] | `mcp_sessions.rs` | MCP sessions (`Mcp-Session-Id`) |
//! | [`RateStore`] | `rates.rs` | rate-limit windows and credential checks |
//! | [`ConfigStore`] | `runtime_config.rs` | the runtime config document and its history |
//!
//! [`Backend`] is all of them at once; the server holds an
//! `Arc<dyn Backend>` and a caller imports the narrow traits whose methods
//! it calls. Two implementations exist, [`memory::MemoryBackend`]
//! (standalone mode, one process) and [`redis::RedisBackend`] (cluster
//! mode), each with one file per trait (`memory/<family>.rs`,
//! `redis/<family>.rs`). Both honour the same contract, written on each
//! trait method and summarised in `docs/architecture.md`:
//!
//! - **Delivery** goes backend → [`Inbox`] of the instance(s) that hold the
//!   target, in publish order per channel (see [`Bus`]).
//! - **Interest**: channel envelopes only reach instances that reported
//!   local subscribers through [`Bus::set_interest`].
//! - **Ownership**: records written for a connection carry the instance id
//!   that holds it, so a dead instance's records can be reaped.
//! - **Failure**: an operation that cannot reach shared state fails with
//!   [`BackendError::Unavailable`] promptly (never hangs); callers map it to
//!   -32005 / HTTP 503.
//! - **Atomicity**: check-and-set operations (`create_session`,
//!   `join_session`, `patch_session`, `rate_hit`, `rate_take`) are atomic
//!   across instances.

mod agent_defs;
mod agents;
mod approvals;
mod bus;
mod channel_log;
mod channels;
mod chat_history;
mod cron;
pub mod devices;
mod health;
mod idempotency;
mod instances;
mod mcp_sessions;
pub mod memory;
mod presence;
mod rates;
pub mod redis;
mod runs;
pub mod runtime_config;
mod sessions;

pub use agent_defs::{AgentDefStore, AgentDefinition, DefinedAgent, MAX_DEFINITIONS};
pub use agents::{AgentEntry, AgentStore, DefinedLimits, ToolSpec};
pub use approvals::{ApprovalRecord, ApprovalStatus, ApprovalStore, NOTICES_MAX};
pub use bus::{Bus, Envelope, Inbox};
pub use channel_log::{ChannelLog, EventPage, LoggedFrame, logged_offset};
pub use channels::{ChannelInfo, ChannelMember, ChannelStore};
pub use chat_history::ChatHistory;
pub use cron::{
    CronClaim, CronCreator, CronJob, CronRun, CronStore, CronTarget, RUNS_MAX, RunKind, RunOutcome,
};
pub use devices::{
    DeviceChange, DeviceEvent, DeviceInfo, DeviceRecord, DeviceStatus, DeviceStore, Pending,
    TokenHashes, TokenIndex,
};
pub use health::Health;
pub use idempotency::{Idempotency, IdempotencyStore};
pub use instances::{InstanceInfo, InstanceStore, InstanceView};
pub use mcp_sessions::{McpSession, McpSessionStore};
pub use presence::{ConnectionCounts, Presence, PresenceEntry};
pub use rates::RateStore;
pub use runs::{RunRecord, RunStatus, RunStore};
pub use runtime_config::{ConfigChange, ConfigDocument, ConfigStore, ConfigWrite};
pub use sessions::{Admission, MAX_INVITED, SessionRecord, SessionStore};

use crate::protocol::RpcError;

/// Errors of backend operations, each mapping to one JSON-RPC code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller may not do this (a session's admission rule).
    #[error("forbidden: {0}")]
    Forbidden(String),
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
            Self::Forbidden(why) => RpcError::forbidden(why),
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
            Self::Forbidden(_) => "forbidden",
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

/// Shared state and cross-instance delivery: every narrow trait at once.
/// Implemented for any type that implements them all; its methods are
/// theirs, so a caller holding `dyn Backend` imports the traits it uses.
pub trait Backend:
    Health
    + InstanceStore
    + Presence
    + ChannelStore
    + Bus
    + SessionStore
    + AgentStore
    + AgentDefStore
    + RunStore
    + ChatHistory
    + ChannelLog
    + ApprovalStore
    + IdempotencyStore
    + McpSessionStore
    + RateStore
    + ConfigStore
    + DeviceStore
    + CronStore
{
}

impl<T> Backend for T where
    T: Health
        + InstanceStore
        + Presence
        + ChannelStore
        + Bus
        + SessionStore
        + AgentStore
        + AgentDefStore
        + RunStore
        + ChatHistory
        + ChannelLog
        + ApprovalStore
        + IdempotencyStore
        + McpSessionStore
        + McpSessionStore
        + RateStore
        + ConfigStore
        + DeviceStore
        + CronStore
{
}
