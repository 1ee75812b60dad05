//! Approval rules: opening a request ([`open`], also used by the gateway
//! for tools an agent definition gates), recording a decision (the first wins cluster-wide, an
//! atomic check-and-set in the backend) and telling the requester and the
//! approvers, catching up an approver that connects later, and expiring
//! what nobody answered (every instance's janitor runs [`expire`]; the same
//! check-and-set makes exactly one of them announce it).

use crate::app::App;
use crate::backend::{ApprovalRecord, ApprovalStatus, Envelope};
use crate::conn::ConnHandle;
use crate::protocol::names::APPROVALS as CHANNEL;
use crate::protocol::{RpcError, frame, now_ms};

/// The approval `id`, or a not-found error.
pub async fn find(app: &App, id: &str) -> Result<ApprovalRecord, RpcError> {
    app.approval_store()
        .approval(id)
        .await?
        .ok_or_else(|| RpcError::not_found("approval", id))
}

/// Store a new request and tell the approvers (on every instance).
pub async fn open(app: &App, record: &ApprovalRecord) -> Result<(), RpcError> {
    app.approval_store().create_approval(record).await?;
    // Kept while pending: written back if the backend loses it.
    app.hub.copies().keep_approval(record);
    let frame = frame::notification("approval.requested", record);
    app.bus().broadcast(CHANNEL, frame, false).await?;
    Ok(())
}

/// The approval once it is no longer pending, looking every `poll` until
/// `deadline`; `None` when it is still pending then.
pub async fn decided_by(
    app: &App,
    id: &str,
    deadline: tokio::time::Instant,
    poll: std::time::Duration,
) -> Result<Option<ApprovalRecord>, RpcError> {
    loop {
        let record = find(app, id).await?;
        if record.status != ApprovalStatus::Pending {
            app.hub.copies().drop_approval(id);
            return Ok(Some(record));
        }
        if tokio::time::Instant::now() + poll > deadline {
            return Ok(None);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Record a decision (first wins) and tell the requester and approvers.
pub async fn decide(
    app: &App,
    mut record: ApprovalRecord,
    status: ApprovalStatus,
    by: &str,
    note: Option<String>,
) -> Result<ApprovalRecord, RpcError> {
    let id = record.approval_id.clone();
    record.status = status;
    record.decided_by = Some(by.to_owned());
    record.note = note;
    record.resolved_at = Some(now_ms());
    let decided = app
        .approval_store()
        .resolve_approval(&record)
        .await
        .map_err(|e| e.into_rpc(&id))?;
    app.hub.copies().drop_approval(&id);
    let frame = frame::notification("approval.resolved", &decided);
    app.bus().broadcast(CHANNEL, frame.clone(), false).await?;
    let to_requester = Envelope::Conn {
        conn_id: decided.requester_conn.clone(),
        frame,
    };
    match app.bus().send_to_conn(to_requester).await {
        Ok(true) => {}
        // Its connection is gone: the decision waits for its return.
        Ok(false) if !decided.requester_conn.is_empty() => {
            let ttl = NOTICE_TTL.as_millis() as u64;
            if let Err(e) = app
                .approval_store()
                .defer_approval_notice(&decided.requester, &id, ttl)
                .await
            {
                tracing::debug!(error = %e, "keeping the decision for the requester failed");
            }
        }
        Ok(false) => {}
        Err(e) => tracing::debug!(error = %e, "telling the requester failed"),
    }
    Ok(decided)
}

/// How long a decision waits for a requester that was away.
const NOTICE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// A connection of `requester` just authenticated: send it the decisions
/// made on its approvals while it had no connection (`approval.resolved`,
/// oldest first; each reaches one connection).
pub async fn returned(app: &App, conn: &ConnHandle, requester: &str) {
    let ids = match app.approval_store().take_approval_notices(requester).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::debug!(error = %e, "decisions kept for the requester unavailable");
            return;
        }
    };
    for id in ids {
        if let Ok(Some(record)) = app.approval_store().approval(&id).await {
            conn.push(frame::notification("approval.resolved", &record));
        }
    }
}

/// An approver just connected (or gained the scope): send it what is
/// pending, oldest first.
pub async fn catch_up(app: &App, conn: &ConnHandle) {
    match app.approval_store().pending_approvals().await {
        Ok(pending) => {
            for record in pending {
                conn.push(frame::notification("approval.requested", &record));
            }
        }
        Err(e) => tracing::debug!(error = %e, "pending approvals unavailable"),
    }
}

/// Expire what is past its time (the janitor calls this every second),
/// and drop the copies of approvals opened here that were decided
/// elsewhere.
pub async fn expire(app: &App) {
    let Ok(pending) = app.approval_store().pending_approvals().await else {
        return;
    };
    let now = now_ms();
    for copy in app.hub.copies().approvals(now) {
        if pending.iter().any(|p| p.approval_id == copy.approval_id) {
            continue;
        }
        // Decided: drop it. Missing (lost with the backend): keep it for
        // the write-back.
        if let Ok(Some(record)) = app.approval_store().approval(&copy.approval_id).await
            && record.status != ApprovalStatus::Pending
        {
            app.hub.copies().drop_approval(&copy.approval_id);
        }
    }
    for record in pending.into_iter().filter(|r| r.expires_at <= now) {
        match decide(app, record, ApprovalStatus::Expired, "system", None).await {
            Ok(_) => {}
            // Another instance expired or someone resolved it first.
            Err(e) if e.code == crate::protocol::error::CONFLICT => {}
            Err(e) => tracing::debug!(error = %e, "expiring an approval failed"),
        }
    }
}
