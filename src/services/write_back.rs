//! What an instance writes back when the backend's epoch changed (Redis
//! came back empty, or a failover or a restart from disk may have lost the
//! last writes), besides the sessions its sockets own
//! (`sessions::restore_if_lost`), and how it tells its connections.
//!
//! Each record is written only where it is missing, so instances that
//! hold copies of the same record, or a backend that kept it, change
//! nothing:
//! - pending approvals opened here (`approval.requested` goes out again
//!   for each one restored, and local approvers are sent every pending
//!   one again);
//! - the runs this instance's agents are serving, as running;
//! - the runs that ended here in the last seconds, ended again where the
//!   backend records them as still running (their end was among the
//!   writes lost: nobody else would end them);
//! - the records of devices connected here, as they authenticated.
//!
//! Then every authenticated local connection is pushed `epoch.changed
//! {epoch}`: offsets
//! it holds belong to the old epoch (a history read with them answers
//! `epochChanged`), and what was acknowledged last may be gone.

use crate::app::App;
use crate::backend::{BackendError, DeviceChange, DeviceEvent, DeviceRecord, Pending, TokenIndex};
use crate::protocol::names::{APPROVALS, device_channel};
use crate::protocol::{frame, now_ms};
use serde_json::json;

/// Write back what local work proves, then tell every local connection.
pub async fn after_loss(app: &App, epoch: &str) {
    let approvals = restore_approvals(app).await;
    let runs = restore_runs(app).await;
    let devices = restore_devices(app).await;
    for (kind, n) in [("approval", approvals), ("run", runs), ("device", devices)] {
        metrics::counter!("switchyard_records_restored_total", "kind" => kind).increment(n);
    }
    tracing::warn!(
        %epoch,
        approvals,
        runs,
        devices,
        "the backend may have lost writes (new epoch); records this instance proves written back"
    );
    // Approvers here hear of every pending approval again: one restored
    // by another instance before this one's subscriptions were back would
    // otherwise reach them only when they list.
    match app.approval_store().pending_approvals().await {
        Ok(pending) => {
            for record in pending {
                let frame = frame::notification("approval.requested", &record);
                app.hub.fanout(APPROVALS, &frame);
            }
        }
        Err(e) => tracing::debug!(error = %e, "pending approvals unavailable"),
    }
    let push = frame::notification("epoch.changed", &json!({ "epoch": epoch }));
    app.hub.broadcast_authenticated(&push);
}

/// Pending approvals opened here that the backend no longer has.
async fn restore_approvals(app: &App) -> u64 {
    let mut restored = 0;
    for record in app.hub.copies().approvals(now_ms()) {
        match app.approval_store().create_approval(&record).await {
            Ok(()) => {
                restored += 1;
                let frame = frame::notification("approval.requested", &record);
                if let Err(e) = app.bus().broadcast(APPROVALS, frame, false).await {
                    tracing::debug!(error = %e, "announcing a restored approval failed");
                }
            }
            // Still there (decided or pending): nothing to restore.
            Err(BackendError::Conflict(_)) => {}
            Err(e) => tracing::warn!(
                approval = %record.approval_id, error = %e, "restoring an approval failed"
            ),
        }
    }
    restored
}

/// Runs this instance's agents are serving that the backend no longer
/// records, and runs ended here that it records as running again.
async fn restore_runs(app: &App) -> u64 {
    let mut restored = 0;
    for ended in app.runs.recent.list() {
        // Only where the record is that run, still running (a swap).
        match app.run_store().finish_run(&ended).await {
            Ok(Some(_)) => restored += 1,
            Ok(None) => {}
            Err(e) => tracing::warn!(
                run = %ended.run_id, error = %e, "ending a run again failed"
            ),
        }
    }
    for record in app.runs.in_progress() {
        match app.run_store().start_run(&record, usize::MAX).await {
            Ok(()) => restored += 1,
            // The session records a running run (this one, still there).
            Err(BackendError::Conflict(_)) => {}
            Err(e) => tracing::warn!(
                run = %record.run_id, error = %e, "restoring a run record failed"
            ),
        }
    }
    restored
}

/// Records of devices connected here that the backend no longer has.
async fn restore_devices(app: &App) -> u64 {
    let mut restored = 0;
    let hub = &app.hub;
    let connected = |id: &str| hub.local_subscribers(&device_channel(id)) > 0;
    for record in hub.copies().devices(connected) {
        let id = record.info.device_id.clone();
        match app.device_store().device(&id).await {
            Ok(None) => {}
            Ok(Some(_)) => continue,
            Err(e) => {
                tracing::warn!(device = %id, error = %e, "reading a device record failed");
                continue;
            }
        }
        match app
            .device_store()
            .write_device(&restore_change(record))
            .await
        {
            Ok(()) => restored += 1,
            // Written meanwhile (another instance holding the device).
            Err(BackendError::Conflict(_)) => {}
            Err(e) => tracing::warn!(device = %id, error = %e, "restoring a device failed"),
        }
    }
    restored
}

/// The write that creates `record` again with its token index.
fn restore_change(mut record: DeviceRecord) -> DeviceChange {
    let now = now_ms();
    record.rev = 1;
    let mut tokens = Vec::new();
    if let Some(current) = &record.tokens.current {
        tokens.push(TokenIndex::Set(current.clone()));
    }
    if let Some(previous) = &record.tokens.previous
        && record.tokens.previous_until > now
    {
        tokens.push(TokenIndex::Expire(
            previous.clone(),
            record.tokens.previous_until - now,
        ));
    }
    let audit = DeviceEvent {
        at: now,
        device_id: record.info.device_id.clone(),
        action: "restored".into(),
        by: "system".into(),
        note: Some("written back by the instance holding its connection".into()),
        role: record.info.role.clone(),
        scopes: record.info.scopes.clone(),
    };
    DeviceChange {
        record,
        expected_rev: 0,
        pending: Pending::Keep,
        ttl_ms: None,
        tokens,
        audit,
        now,
    }
}
