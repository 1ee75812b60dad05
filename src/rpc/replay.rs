//! Replaying a channel's log to one socket: what a resuming session owner
//! (`session.resume`) and a recovering subscriber (`subscribe` with
//! `recover`) missed.
//!
//! The socket is held back from the channel's live frames
//! ([`crate::hub::Hub::hold`]) while it is subscribed, the log is read and
//! the missed frames are queued; releasing the hold then queues the live
//! frames that arrived meanwhile, minus those the replay already carried.
//! Offsets are given atomically with publishing (see `backend::events`),
//! so the socket sees every logged frame once, in order.

use crate::conn::ConnHandle;
use crate::protocol::RpcError;
use crate::server::App;
use serde_json::{Value, json};
use std::future::Future;

/// What a replay did.
#[derive(Debug, Clone, Copy)]
pub struct Replayed {
    /// Frames queued from the log.
    pub replayed: usize,
    /// The channel's newest offset when the log was read.
    pub latest: u64,
    /// Nothing after the asked offset was missing from the log (trimmed,
    /// expired, or lost with the backend's state).
    pub complete: bool,
}

impl Replayed {
    pub fn to_json(self) -> Value {
        json!({ "replayed": self.replayed, "latest": self.latest, "complete": self.complete })
    }
}

/// Subscribe `conn` to `channel` (`subscribe`), then queue the logged
/// frames after offset `after`, at most `limit`, before any live frame.
pub async fn replay(
    app: &App,
    conn: &ConnHandle,
    channel: &str,
    after: u64,
    limit: usize,
    subscribe: impl Future<Output = Result<(), RpcError>>,
) -> Result<Replayed, RpcError> {
    let hold = app.hub.hold(channel, conn);
    if let Err(e) = subscribe.await {
        hold.release(0);
        return Err(e);
    }
    let page = match app.backend.channel_log(channel, after, limit).await {
        Ok(page) => page,
        Err(e) => {
            // Subscribed but not replayed: live frames flow on, and a
            // retry replays what is missing.
            hold.release(0);
            return Err(e.into());
        }
    };
    let done = Replayed {
        replayed: page.events.len(),
        latest: page.latest,
        complete: page.continues(after),
    };
    for (_, frame) in page.events {
        conn.reply(frame).await;
    }
    hold.release(page.latest);
    Ok(done)
}
