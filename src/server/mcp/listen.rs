//! `GET /mcp` in the handshake revision: a session's standalone stream,
//! on which the server announces `notifications/tools/list_changed`.
//!
//! One watcher per instance (started by the first stream, gone with the
//! last) reads the tool catalog every [`EVERY`] and publishes its
//! fingerprint on a `watch` channel; each open stream sends the
//! notification when the fingerprint moves, and a comment line every
//! [`PING`] so a client that left is noticed and its stream dropped.
//! However many clients listen, the agent registry is read once per
//! [`EVERY`] per instance.

use super::catalog;
use super::wire::{self, sse_event};
use crate::app::App;
use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::json;
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;
use tokio::sync::watch;

/// How often the watcher reads the catalog.
const EVERY: Duration = Duration::from_secs(2);
/// How often an idle stream is written to.
const PING: Duration = Duration::from_secs(15);

/// The tool catalog's fingerprint, kept current by this instance's
/// watcher (started when none runs).
pub fn fingerprints(app: &App) -> watch::Receiver<u64> {
    let mut held = app.mcp_tools.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rx) = held.as_ref().filter(|rx| rx.has_changed().is_ok()) {
        return rx.clone();
    }
    let (tx, rx) = watch::channel(0);
    *held = Some(rx.clone());
    let app = app.clone();
    tokio::spawn(async move {
        // Until only the instance's own copy of the receiver is left.
        while tx.receiver_count() > 1 {
            if let Ok(tools) = catalog::tools(&app).await {
                let mut hasher = DefaultHasher::new();
                for tool in &tools {
                    tool.to_json().to_string().hash(&mut hasher);
                }
                let next = hasher.finish();
                // The first reading (from 0) is the baseline, not a change.
                tx.send_if_modified(|current| {
                    let before = std::mem::replace(current, next);
                    before != 0 && before != next
                });
            }
            tokio::time::sleep(EVERY).await;
        }
    });
    rx
}

/// The SSE stream of one session's listener.
pub fn stream(app: &App) -> Response {
    let mut changes = fingerprints(app);
    changes.mark_unchanged();
    let changed = sse_event(&json!({
        "jsonrpc": "2.0",
        "method": "notifications/tools/list_changed",
    }));
    let state = (changes, tokio::time::interval(PING), changed);
    let body = futures_util::stream::unfold(state, |(mut changes, mut ping, changed)| async move {
        let frame = tokio::select! {
            moved = changes.changed() => {
                moved.ok()?;
                changed.clone()
            }
            _ = ping.tick() => ": ping\n\n".to_owned(),
        };
        Some((
            Ok::<_, Infallible>(Bytes::from(frame)),
            (changes, ping, changed),
        ))
    });
    wire::sse_response(Body::from_stream(body))
}
