//! Reading a channel's log (`backend::channel_log`): a page of it for
//! `history` and `session.history`, or a replay to one socket of what a
//! resuming session owner (`session.resume`) or a recovering subscriber
//! (`subscribe` with `recover`) missed.
//!
//! For a replay, the socket is held back from the channel's live frames
//! ([`crate::hub::Hub::hold`]) while it is subscribed, the log is read and
//! the missed frames are queued; releasing the hold then queues the live
//! frames that arrived meanwhile, minus those the replay already carried.
//! Offsets are given atomically with publishing (see `backend::channel_log`),
//! so the socket sees every logged frame once, in order.
//!
//! Offsets belong to the backend's epoch (`Health::epoch`), which changes
//! when the backend lost its state (Redis restarted empty) and logs start
//! again from 1. Every reply names the epoch; a caller that says which
//! epoch its offset belongs to and finds it changed gets what the new
//! epoch logged from its start, `complete: false` and `epochChanged:
//! true`, instead of what looks like a log with nothing missing.

use crate::app::App;
use crate::conn::ConnHandle;
use crate::protocol::RpcError;
use serde_json::{Value, json};
use std::future::Future;

/// Where a read starts: an offset, and the epoch it belongs to if the
/// caller knows it.
#[derive(Debug, Clone, Copy)]
pub struct From<'a> {
    pub after: u64,
    pub epoch: Option<&'a str>,
}

/// The backend's epoch now, and where to read from: `from.after`, or the
/// start of the log when `from` belongs to an earlier epoch.
async fn start(app: &App, from: From<'_>) -> Result<(String, u64, bool), RpcError> {
    let current = app.health().epoch().await?;
    let changed = from.epoch.is_some_and(|known| known != current);
    let after = if changed { 0 } else { from.after };
    Ok((current, after, changed))
}

/// A history reply: `head` plus `{events, latest, complete, more, epoch}`
/// for the logged frames of `channel` after `from`, at most `limit`
/// (1-1000, default 100) and never more than the log keeps (`keep`);
/// `with_method`: each event names its notification method.
pub async fn history(
    app: &App,
    mut head: Value,
    channel: &str,
    from: From<'_>,
    limit: Option<usize>,
    keep: usize,
    with_method: bool,
) -> Result<Value, RpcError> {
    let limit = super::page::bounded(limit, 100)?.min(keep);
    let (epoch, since, changed) = start(app, from).await?;
    let page = app.channel_log().channel_log(channel, since, limit).await?;
    let last = page.events.last().map(|(offset, _)| *offset);
    head["events"] = Value::Array(page.params(with_method));
    head["latest"] = json!(page.latest);
    head["complete"] = json!(!changed && page.continues(since));
    head["more"] = json!(last.is_some_and(|o| o < page.latest));
    head["epoch"] = json!(epoch);
    if changed {
        head["epochChanged"] = json!(true);
    }
    Ok(head)
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// Frames queued from the log.
    pub replayed: usize,
    /// The channel's newest offset when the log was read.
    pub latest: u64,
    /// Nothing after the asked offset was missing from the log (trimmed,
    /// expired, or lost with the backend's state).
    pub complete: bool,
    /// The backend's epoch the offsets belong to.
    pub epoch: String,
    /// The caller's offset belonged to an earlier epoch.
    pub epoch_changed: bool,
}

impl Replayed {
    pub fn to_json(&self) -> Value {
        let mut reply = json!({
            "replayed": self.replayed,
            "latest": self.latest,
            "complete": self.complete,
            "epoch": self.epoch,
        });
        if self.epoch_changed {
            reply["epochChanged"] = json!(true);
        }
        reply
    }
}

/// Subscribe `conn` to `channel` (`subscribe`), then queue the logged
/// frames after `from`, at most `limit`, before any live frame.
pub async fn replay(
    app: &App,
    conn: &ConnHandle,
    channel: &str,
    from: From<'_>,
    limit: usize,
    subscribe: impl Future<Output = Result<(), RpcError>>,
) -> Result<Replayed, RpcError> {
    let hold = app.hub.hold(channel, conn);
    if let Err(e) = subscribe.await {
        hold.release(0);
        return Err(e);
    }
    let (epoch, after, changed) = match start(app, from).await {
        Ok(start) => start,
        Err(e) => {
            hold.release(0);
            return Err(e);
        }
    };
    let page = match app.channel_log().channel_log(channel, after, limit).await {
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
        complete: !changed && page.continues(after),
        epoch,
        epoch_changed: changed,
    };
    for (_, frame) in page.events {
        conn.reply(frame).await;
    }
    hold.release(page.latest);
    Ok(done)
}
