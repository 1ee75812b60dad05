//! Graceful shutdown: stop taking work, tell clients, close, deregister.
//!
//! `/ready` turns 503 and upgrades are refused as soon as draining starts;
//! every client then gets a `shutdown` event followed by close code 1012
//! (after what was already queued to it). The drain waits for the sockets
//! to finish their clean-up (sessions released for resume elsewhere,
//! presence removed) and for the cron ticks this instance is firing, up
//! to `drain_deadline`, then deregisters the instance.

use super::App;
use crate::conn::close_code;
use crate::protocol::frame;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// How long clients are told to wait before reconnecting.
const RECONNECT_AFTER_MS: u64 = 1_000;

pub async fn drain(app: &App) {
    app.start_draining();
    let count = app.hub.len();
    tracing::info!(connections = count, "draining");
    let notice = frame::notification(
        "shutdown",
        &json!({ "reason": "server shutting down", "reconnectAfterMs": RECONNECT_AFTER_MS }),
    );
    for conn in app.hub.all() {
        conn.push(notice.clone());
        conn.close_after_queue(close_code::RESTARTING, "server restarting");
    }
    let deadline = Instant::now() + app.live().limits.drain_deadline();
    let busy = || !app.hub.is_empty() || app.cron_firing.load(Ordering::SeqCst) > 0;
    while busy() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if busy() {
        tracing::warn!(
            left = app.hub.len(),
            cron_firing = app.cron_firing.load(Ordering::SeqCst),
            "drain deadline reached"
        );
    }
    if let Err(e) = app
        .instance_store()
        .deregister_instance(&app.instance_id)
        .await
    {
        tracing::warn!(error = %e, "deregistering the instance failed");
    }
    tracing::info!("drained");
}
