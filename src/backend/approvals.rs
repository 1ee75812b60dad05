//! Human-in-the-loop approvals: a request waits for a decision, the first
//! decision wins cluster-wide, and every decision joins an audit trail.
//! Who may request and who may decide is `rpc::approvals`' business.

use super::{BackendError, BackendResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The state of an approval.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

/// A human-in-the-loop approval request and, once decided, its decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    pub approval_id: String,
    #[serde(default)]
    pub session_id: Option<String>,
    pub tool: String,
    pub args: Value,
    pub summary: String,
    /// The requesting connection and its identity.
    pub requester_conn: String,
    pub requester: String,
    pub status: ApprovalStatus,
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    pub created_at: u64,
    pub expires_at: u64,
    #[serde(default)]
    pub resolved_at: Option<u64>,
}

/// Approvals and their audit trail.
#[async_trait]
pub trait ApprovalStore: Send + Sync + 'static {
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
    /// Remember for `ttl_ms` that identity `requester` had no connection
    /// when approval `approval_id` was decided (the newest
    /// [`NOTICES_MAX`] are kept).
    async fn defer_approval_notice(
        &self,
        requester: &str,
        approval_id: &str,
        ttl_ms: u64,
    ) -> BackendResult<()>;
    /// The approvals decided while `requester` was away, oldest first,
    /// forgotten in the same step (one caller gets each).
    async fn take_approval_notices(&self, requester: &str) -> BackendResult<Vec<String>>;
}

/// Decisions kept per requester for its return.
pub const NOTICES_MAX: usize = 100;

/// Entries kept in the approvals audit trail.
pub(super) const AUDIT_MAX: usize = 1000;

/// The Conflict answered to a decision on an approval already decided.
pub(super) fn already_resolved(status: ApprovalStatus) -> BackendError {
    let word = serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    BackendError::Conflict(format!("approval already {word}"))
}
