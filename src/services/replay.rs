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

use crate::app::App;
use crate::conn::ConnHandle;
use crate::protocol::RpcError;
use serde_json::{Value, json};
use std::future::Future;

/// A history reply: `head` plus `{events, latest, complete, more}` for
/// the logged frames of `channel` after `since`, at most `limit` (1-1000,
/// default 100) and never more than the log keeps (`keep`); `with_method`:
/// each event names its notification method.
pub async fn history(
    app: &App,
    mut head: Value,
    channel: &str,
    since: u64,
    limit: Option<usize>,
    keep: usize,
    with_method: bool,
) -> Result<Value, RpcError> {
    let limit = super::page::bounded(limit, 100)?.min(keep);
    let page = app.channel_log().channel_log(channel, since, limit).await?;
    let last = page.events.last().map(|(offset, _)| *offset);
    head["events"] = Value::Array(page.params(with_method));
    head["latest"] = json!(page.latest);
    head["complete"] = json!(page.continues(since));
    head["more"] = json!(last.is_some_and(|o| o < page.latest));
    Ok(head)
}

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
        complete: page.continues(after),
    };
    for (_, frame) in page.events {
        conn.reply(frame).await;
    }
    hold.release(page.latest);
    Ok(done)
}
