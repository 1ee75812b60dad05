//! `SendStreamingMessage` and `SubscribeToTask` as Server-Sent Events.
//!
//! Each event is `data: <JSON-RPC response with the request's id>` whose
//! `result` is a `StreamResponse`: first the task as it is (`task`), then
//! a `statusUpdate` or `artifactUpdate` per event of the run (the mapping
//! is [`super::tasks`]'), then, once the run has ended, its result and
//! its final status; then the server closes the stream. An error after
//! the stream began is one `event: error` whose data is a JSON-RPC error
//! response.
//!
//! A stream follows the task the way a resuming session member does, so
//! it works from any instance and misses nothing: a follower without a
//! socket ([`Tap`]) is held back from the session's channel
//! ([`crate::hub::Hub::hold`]) and subscribed to it, the session's log is
//! read and folded into the snapshot, and the held live events past what
//! was read follow — no gap, no duplicate. A follower that falls behind
//! (its queue full) attaches again and catches up from the log. The run's
//! end is seen on its record: at once when this instance started the run
//! (the call's outcome), else by looking at the record every
//! [`RECORD_POLL`]. Whatever the log holds past what was sent is sent
//! before the end. A client going away ends the stream, not the task.

use super::errors::{A2aError, response};
use super::tasks::{Task, TaskRef};
use crate::app::App;
use crate::backend::{RunRecord, RunStatus, logged_offset};
use crate::conn::ConnHandle;
use crate::hub::Hold;
use crate::protocol::names::session_channel;
use crate::protocol::{Frame, RpcError};
use crate::services::runs::Done;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// Frames a follower buffers before it counts as behind.
const QUEUE: usize = 256;
/// Events waiting for the HTTP client.
const OUTBOX: usize = 32;
/// How often a follower of a run started elsewhere looks at its record.
const RECORD_POLL: Duration = Duration::from_millis(200);
/// How often it looks when this instance started the run (a safety net:
/// the call's outcome says so first).
const RECORD_POLL_LOCAL: Duration = Duration::from_secs(2);
/// Longest a stream stays open: a run's longest, and a margin.
const LONGEST: Duration = Duration::from_secs(super::send::RUN_TIMEOUT.as_secs() + 60);
/// Log entries read per backend call.
const PAGE: usize = 500;

/// Why a stream stops early.
enum Stop {
    /// The HTTP client went away.
    Gone,
    Failed(A2aError),
}

impl From<A2aError> for Stop {
    fn from(e: A2aError) -> Self {
        Self::Failed(e)
    }
}

impl From<RpcError> for Stop {
    fn from(e: RpcError) -> Self {
        Self::Failed(e.into())
    }
}

/// The SSE response following task `r`; `done` is the run's outcome when
/// this instance started it.
pub fn respond(app: App, rpc_id: Value, r: TaskRef, done: Option<Done>, ip: IpAddr) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(OUTBOX);
    tokio::spawn(async move {
        let out = Out { tx, id: rpc_id };
        if let Err(Stop::Failed(e)) = follow(&app, r, done, &out, ip).await {
            let event = Event::default()
                .event("error")
                .data(response(&out.id, Err(e)).to_string());
            let _ = out.tx.send(event).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Where a stream's events go.
struct Out {
    tx: mpsc::Sender<Event>,
    id: Value,
}

impl Out {
    async fn send(&self, result: Value) -> Result<(), Stop> {
        let data = response(&self.id, Ok(result)).to_string();
        self.tx
            .send(Event::default().data(data))
            .await
            .map_err(|_| Stop::Gone)
    }
}

/// A follower of a session's channel: a handle without a socket,
/// subscribed here, held back until [`Tap::release`].
struct Tap {
    app: App,
    channel: String,
    conn: ConnHandle,
    hold: Option<Hold>,
}

impl Tap {
    async fn attach(app: &App, channel: &str, ip: IpAddr) -> Result<Self, RpcError> {
        let id = format!("a2a-stream-{}", uuid::Uuid::new_v4().simple());
        let conn = ConnHandle::new(id, ip, QUEUE);
        let hold = app.hub.hold(channel, &conn);
        app.hub.subscribe_local(channel, &conn).await?;
        Ok(Self {
            app: app.clone(),
            channel: channel.to_owned(),
            conn,
            hold: Some(hold),
        })
    }

    /// Let live frames through: those held past `after` first.
    fn release(&mut self, after: u64) {
        if let Some(hold) = self.hold.take() {
            hold.release(after);
        }
    }

    /// The next frame; `None` once it fell behind (its queue filled).
    async fn next(&self) -> Option<Frame> {
        self.conn.next_frame().await
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.conn
            .close(crate::conn::close_code::NORMAL, "stream ended");
        let (app, channel, id) = (
            self.app.clone(),
            std::mem::take(&mut self.channel),
            self.conn.id().to_owned(),
        );
        tokio::spawn(async move { app.hub.unsubscribe_local(&channel, &id).await });
    }
}

/// A logged notification: (offset, method, params).
pub type Entry = (u64, String, Value);

fn entry_of(offset: Option<u64>, frame: &str) -> Option<(Option<u64>, String, Value)> {
    let mut value: Value = serde_json::from_str(frame).ok()?;
    let method = value.get("method")?.as_str()?.to_owned();
    let params = value.get_mut("params").map(Value::take).unwrap_or_default();
    Some((offset.or_else(|| logged_offset(frame)), method, params))
}

/// The log of `channel` after offset `after`, oldest first.
pub async fn read_log(app: &App, channel: &str, after: u64) -> Result<Vec<Entry>, RpcError> {
    let mut out = Vec::new();
    let mut after = after;
    // The log keeps at most `session_history` entries: bounded.
    loop {
        let page = app.channel_log().channel_log(channel, after, PAGE).await?;
        let full = page.events.len() >= PAGE;
        for (offset, frame) in &page.events {
            if let Some((_, method, params)) = entry_of(Some(*offset), frame.as_str()) {
                out.push((*offset, method, params));
            }
            after = *offset;
        }
        if !full {
            return Ok(out);
        }
    }
}

/// The run of `r` now: `None` once it is not that run's (its context was
/// closed, or a newer task replaced it).
async fn record(app: &App, r: &TaskRef) -> Result<Option<RunRecord>, RpcError> {
    Ok(app
        .run_store()
        .run(&r.session_id)
        .await?
        .filter(|run| run.run_id == r.run_id))
}

async fn follow(
    app: &App,
    r: TaskRef,
    mut done: Option<Done>,
    out: &Out,
    ip: IpAddr,
) -> Result<(), Stop> {
    let channel = session_channel(&r.session_id);
    let mut task = Task::new(r.clone());
    let mut tap = Tap::attach(app, &channel, ip).await?;
    for (offset, method, params) in read_log(app, &channel, 0).await? {
        task.apply(offset, &method, &params);
    }
    tap.release(task.offset);
    let Some(run) = record(app, &r).await? else {
        return Err(Stop::Failed(A2aError::task_not_found(&r.id())));
    };
    if run.status != RunStatus::Running {
        task.finish(&run);
        return out
            .send(serde_json::json!({ "task": task.to_json(&run, None, true) }))
            .await;
    }
    out.send(serde_json::json!({ "task": task.to_json(&run, None, true) }))
        .await?;
    task.shed();

    let poll = if done.is_some() {
        RECORD_POLL_LOCAL
    } else {
        RECORD_POLL
    };
    let deadline = tokio::time::Instant::now() + LONGEST;
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let finished = async {
            match done.as_mut() {
                Some(done) => {
                    let _ = done.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = tap.next() => match frame {
                Some(frame) => {
                    let Some((offset, method, params)) = entry_of(None, frame.as_str()) else {
                        continue;
                    };
                    if method == "session.closed" {
                        return out.send(task.closed()).await;
                    }
                    if let Some(offset) = offset
                        && let Some(event) = task.apply(offset, &method, &params)
                    {
                        out.send(event).await?;
                    }
                }
                None => {
                    // Fell behind: attach again and catch up from the log.
                    tap = Tap::attach(app, &channel, ip).await?;
                    for (offset, method, params) in read_log(app, &channel, task.offset).await? {
                        if let Some(event) = task.apply(offset, &method, &params) {
                            out.send(event).await?;
                        }
                    }
                    tap.release(task.offset);
                }
            },
            () = finished => break,
            _ = ticker.tick() => {
                if record(app, &r).await?.is_none_or(|run| run.status != RunStatus::Running) {
                    break;
                }
            }
            () = out.tx.closed() => return Err(Stop::Gone),
            () = tokio::time::sleep_until(deadline) => {
                return Err(Stop::Failed(A2aError::from(RpcError::timeout("the stream outlived its task's longest run"))));
            }
        }
    }
    // What the log holds past what was sent, then the end.
    for (offset, method, params) in read_log(app, &channel, task.offset).await? {
        if let Some(event) = task.apply(offset, &method, &params) {
            out.send(event).await?;
        }
    }
    match record(app, &r).await? {
        Some(run) if run.status != RunStatus::Running => {
            for event in task.finish(&run) {
                out.send(event).await?;
            }
            Ok(())
        }
        // Still running after its outcome came: the record was not
        // written (the backend failed); say what is known.
        Some(_) => Err(Stop::Failed(A2aError::from(RpcError::unavailable(
            "the task's end could not be read",
        )))),
        None => out.send(task.closed()).await,
    }
}
