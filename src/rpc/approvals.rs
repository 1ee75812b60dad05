//! Human-in-the-loop approvals: `approval.request` (a node asks),
//! `approval.resolve` (an operator with `operator.approvals` decides),
//! `approval.wait`, `approval.list`, `approval.history`.
//!
//! Requests live in the backend, so they outlive any instance: approvers
//! are told on channel `approval` (every approver connection subscribes to
//! it implicitly, on every instance), and one that connects later gets
//! what is still pending ([`catch_up`]). The first decision wins
//! cluster-wide (an atomic check-and-set in the backend); later ones get
//! -32007. Unanswered requests expire ([`expire`], run by every instance's
//! janitor; the same check-and-set makes exactly one of them announce it).

use super::Ctx;
use crate::backend::{ApprovalRecord, ApprovalStatus};
use crate::protocol::{RpcError, now_ms};
use crate::services::agents::MAX_TIMEOUT_MS;
use crate::services::approvals::{decide, find};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Default time an approval stays open.
const DEFAULT_TIMEOUT_MS: u64 = 300_000;
/// Longest an approval may stay open.
const MAX_OPEN_MS: u64 = 7 * 24 * 3_600_000;
/// Longest summary / tool name.
const MAX_SUMMARY: usize = 4096;
const MAX_ARGS: usize = 64 * 1024;
/// How often `approval.wait` looks at the record.
const POLL: Duration = Duration::from_millis(50);

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestParams {
    /// The session it is about, if any.
    session_id: Option<String>,
    /// What wants approving (1-128 bytes).
    tool: String,
    /// Its arguments (at most 64 KiB of JSON).
    #[serde(default)]
    args: Value,
    /// For the approver (at most 4096 bytes).
    #[serde(default)]
    summary: String,
    /// How long it stays open (default 5 minutes, at most 7 days).
    timeout_ms: Option<u64>,
}

pub async fn request(ctx: &Ctx<'_>, p: RequestParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    if p.tool.is_empty() || p.tool.len() > 128 {
        return Err(RpcError::invalid_params("tool", "1-128 bytes"));
    }
    if p.summary.len() > MAX_SUMMARY {
        return Err(RpcError::invalid_params(
            "summary",
            format!("at most {MAX_SUMMARY} bytes"),
        ));
    }
    if serde_json::to_string(&p.args).map_or(usize::MAX, |s| s.len()) > MAX_ARGS {
        return Err(RpcError::invalid_params(
            "args",
            format!("at most {MAX_ARGS} bytes"),
        ));
    }
    let open_ms = p.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if open_ms == 0 || open_ms > MAX_OPEN_MS {
        return Err(RpcError::invalid_params(
            "timeoutMs",
            format!("between 1 and {MAX_OPEN_MS}"),
        ));
    }
    let now = now_ms();
    let record = ApprovalRecord {
        approval_id: uuid::Uuid::new_v4().simple().to_string(),
        session_id: p.session_id,
        tool: p.tool,
        args: p.args,
        summary: p.summary,
        requester_conn: ctx.conn.id().to_owned(),
        requester: identity.sub.clone(),
        status: ApprovalStatus::Pending,
        decided_by: None,
        note: None,
        created_at: now,
        expires_at: now + open_ms,
        resolved_at: None,
    };
    crate::services::approvals::open(ctx.app, &record).await?;
    Ok(json!({ "approvalId": record.approval_id, "expiresAt": record.expires_at }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolveParams {
    approval_id: String,
    /// `approve` or `deny` (`approved`, `denied` too).
    decision: String,
    /// Kept in the audit trail (at most 4096 bytes).
    note: Option<String>,
}

pub async fn resolve(ctx: &Ctx<'_>, p: ResolveParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let status = match p.decision.as_str() {
        "approve" | "approved" => ApprovalStatus::Approved,
        "deny" | "denied" => ApprovalStatus::Denied,
        _ => return Err(RpcError::invalid_params("decision", "approve or deny")),
    };
    if p.note.as_ref().is_some_and(|n| n.len() > MAX_SUMMARY) {
        return Err(RpcError::invalid_params(
            "note",
            format!("at most {MAX_SUMMARY} bytes"),
        ));
    }
    let current = find(ctx.app, &p.approval_id).await?;
    let decided = decide(ctx.app, current, status, &identity.sub, p.note).await?;
    Ok(serde_json::to_value(decided).unwrap_or_default())
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitParams {
    approval_id: String,
    /// How long to wait (default `limits.request_timeout_ms`).
    timeout_ms: Option<u64>,
}

pub async fn wait(ctx: &Ctx<'_>, p: WaitParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let ms = p
        .timeout_ms
        .unwrap_or(ctx.app.live().limits.request_timeout_ms);
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        return Err(RpcError::invalid_params(
            "timeoutMs",
            format!("between 1 and {MAX_TIMEOUT_MS}"),
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        let record = find(ctx.app, &p.approval_id).await?;
        let approver = identity.satisfies(crate::auth::Requirement::Scope(
            crate::auth::Scope::Approvals,
        ));
        if record.requester != identity.sub && !approver {
            return Err(RpcError::forbidden("not your approval"));
        }
        if record.status != ApprovalStatus::Pending {
            return Ok(serde_json::to_value(record).unwrap_or_default());
        }
        if tokio::time::Instant::now() + POLL > deadline {
            return Err(RpcError::timeout(format!(
                "approval {} still pending after {ms} ms",
                p.approval_id
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn list(ctx: &Ctx<'_>) -> Result<Value, RpcError> {
    let pending = ctx.app.approval_store().pending_approvals().await?;
    Ok(json!({ "count": pending.len(), "approvals": pending }))
}

#[derive(Deserialize, Default, JsonSchema)]
pub struct HistoryParams {
    /// Newest decisions returned (default 100, at most 1000).
    limit: Option<usize>,
}

pub async fn history(ctx: &Ctx<'_>, p: HistoryParams) -> Result<Value, RpcError> {
    let limit = p.limit.unwrap_or(100).min(1000);
    let entries = ctx.app.approval_store().approval_history(limit).await?;
    Ok(json!({ "count": entries.len(), "entries": entries }))
}
