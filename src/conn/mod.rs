//! One WebSocket connection from upgrade to close.
//!
//! [`serve`] splits the socket: a writer task drains the connection's
//! bounded queue into the socket and sends heartbeat pings; the reader loop
//! (this task) parses frames, hands calls to the [`ConnService`] and routes
//! the client's answers to server → client requests. The loop also enforces
//! the per-connection clocks: the handshake deadline (close 4001 if still
//! unauthenticated), the client timeout (nothing heard, not even a pong)
//! and the expiry of a JWT that was not refreshed.

mod handle;
mod queue;

pub use handle::{ConnHandle, ConnState, MAX_CALLS_IN_FLIGHT, Outbound, Outstanding, close_code};

use crate::auth::Identity;
use crate::config::Limits;
use crate::protocol::frame::{self, Incoming, Message};
use crate::protocol::{Call, Frame, RpcError};
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::future::{Future, poll_fn};
use std::net::IpAddr;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

/// What a connection needs from the application above it: the handler of
/// its calls and what happens when it opens and closes. This layer knows
/// frames, clocks and queues, no method and no domain.
pub trait ConnService: Clone + Send + Sync + 'static {
    /// The connection's limits and clocks, as in force now (a copy: they
    /// may change at run time).
    fn limits(&self) -> Limits;
    /// Calls that wait on another party (a node's answer): the connection
    /// runs them in their own task and keeps serving the client meanwhile;
    /// every other call runs in order.
    fn is_long_running(&self, method: &str) -> bool;
    /// Run one call to completion.
    fn call(
        &self,
        conn: &ConnHandle,
        call: Call,
    ) -> impl Future<Output = Result<serde_json::Value, RpcError>> + Send;
    /// The connection is open (and authenticated at upgrade with
    /// `identity`, if any): register and greet it.
    fn opened(
        &self,
        conn: &ConnHandle,
        identity: Option<Identity>,
    ) -> impl Future<Output = ()> + Send;
    /// The connection is over: undo what it did to shared state.
    fn closed(&self, conn: &ConnHandle) -> impl Future<Output = ()> + Send;
}

/// What the upgrade decided about a new connection.
pub struct ConnSetup<G> {
    pub id: String,
    pub ip: IpAddr,
    /// Authenticated at upgrade (credentials or mode `none`).
    pub identity: Option<Identity>,
    /// Held for the connection's lifetime and released once its clean-up
    /// ran (the per-IP slot).
    pub guard: G,
}

/// Run one connection to completion.
///
/// Most of an idle connection's memory is this future and the writer's:
/// the socket is split and the writer spawned before the future is built,
/// so neither the unsplit socket nor the setup is kept in it.
pub fn serve<S: ConnService, G: Send + 'static>(
    svc: S,
    socket: WebSocket,
    setup: ConnSetup<G>,
) -> impl Future<Output = ()> + Send {
    let span = tracing::info_span!("conn", id = %setup.id, ip = %setup.ip);
    let limits = svc.limits();
    let conn = ConnHandle::new(setup.id, setup.ip, limits.outbound_queue);
    let (sink, stream) = socket.split();
    // The writer sends nothing until the connection is open, so the first
    // frame the client reads comes after everything `opened` set up (its
    // `welcome` after its implicit subscriptions are in place).
    let (opened, open) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(write_loop(sink, conn.clone(), limits.heartbeat(), open));
    metrics::counter!("switchyard_connections_total").increment(1);
    let identity = setup.identity.map(Box::new);
    let guard = setup.guard;
    async move {
        tracing::debug!("connected");
        // The open/close and per-message futures are large (they embed
        // every handler's state) but short-lived: boxing them keeps the
        // long-lived connection task small.
        Box::pin(svc.opened(&conn, identity.map(|i| *i))).await;
        let _ = opened.send(());
        read_loop(&svc, &conn, stream).await;
        conn.close(close_code::NORMAL, "");
        Box::pin(svc.closed(&conn)).await;
        drop(guard);
        // The writer sends the close frame and stops; bound the wait.
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        tracing::debug!("disconnected");
    }
    .instrument(span)
}

/// Why the reader stopped waiting.
#[derive(Debug, PartialEq, Eq)]
enum Expired {
    Handshake,
    Idle,
    Credential,
}

/// The per-connection clocks, watched by one timer: the handshake
/// deadline (until authenticated), the client timeout (nothing heard, not
/// even a pong) and the credential's expiry.
struct Clocks {
    handshake: Instant,
    idle: Duration,
    heard: Instant,
}

impl Clocks {
    /// The earliest moment one of the clocks may run out.
    fn next(&self, conn: &ConnHandle) -> Instant {
        let (authed, expiry) = auth_deadlines(conn);
        let mut at = self.heard + self.idle;
        if !authed {
            at = at.min(self.handshake);
        }
        expiry.map_or(at, |e| at.min(e))
    }

    /// Which clock ran out at `now`, if any.
    fn expired(&self, conn: &ConnHandle, now: Instant) -> Option<Expired> {
        let (authed, _) = auth_deadlines(conn);
        if !authed && now >= self.handshake {
            Some(Expired::Handshake)
        } else if now >= self.heard + self.idle {
            Some(Expired::Idle)
        } else if credential_expired(conn) {
            Some(Expired::Credential)
        } else {
            None
        }
    }
}

async fn read_loop<S: ConnService>(svc: &S, conn: &ConnHandle, mut stream: SplitStream<WebSocket>) {
    let limits = svc.limits();
    let now = Instant::now();
    let mut clocks = Clocks {
        handshake: now + limits.handshake_timeout(),
        idle: limits.client_timeout(),
        heard: now,
    };
    // One timer for every clock. A frame only moves it when a clock now
    // runs out sooner (a shorter credential); a later deadline is picked
    // up when the timer fires, so busy sockets do not re-arm it per frame.
    let timer = sleep_until(clocks.next(conn));
    tokio::pin!(timer);
    loop {
        tokio::select! {
            _ = conn.closed().cancelled() => return,
            _ = &mut timer => {
                match clocks.expired(conn, Instant::now()) {
                    Some(Expired::Handshake) => {
                        conn.close(close_code::AUTH_TIMEOUT, "authentication timeout");
                        return;
                    }
                    Some(Expired::Idle) => {
                        conn.close(close_code::GOING_AWAY, "client timeout");
                        return;
                    }
                    Some(Expired::Credential) => {
                        conn.close(close_code::AUTH_TIMEOUT, "token expired");
                        return;
                    }
                    // Never re-arm in the past: an expiry read a hair
                    // early would otherwise spin.
                    None => timer
                        .as_mut()
                        .reset(clocks.next(conn).max(Instant::now() + Duration::from_millis(1))),
                }
            }
            next = stream.next() => match next {
                None => return,
                Some(Err(e)) => {
                    on_read_error(conn, &e);
                    return;
                }
                Some(Ok(msg)) => {
                    // A closed connection stops waiting for its own calls.
                    // The message first: most are done at their first
                    // poll, and then the close is never waited on (no
                    // waiter registered and removed per message).
                    let keep = tokio::select! {
                        biased;
                        keep = Box::pin(on_message(svc, conn, msg)) => keep,
                        _ = conn.closed().cancelled() => false,
                    };
                    if !keep {
                        return;
                    }
                    clocks.heard = Instant::now();
                    let next = clocks.next(conn);
                    if next < timer.deadline() {
                        timer.as_mut().reset(next);
                    }
                }
            }
        }
    }
}

fn credential_expired(conn: &ConnHandle) -> bool {
    conn.identity()
        .and_then(|i| i.expires_at)
        .is_some_and(|exp| exp.saturating_mul(1000) <= crate::protocol::now_ms())
}

/// Whether the connection is authenticated, and when its credential expires.
fn auth_deadlines(conn: &ConnHandle) -> (bool, Option<Instant>) {
    let Some(identity) = conn.identity() else {
        return (false, None);
    };
    // Tokens may claim any expiry; anything past a day is "not soon" (the
    // loop re-reads the deadline after every frame anyway).
    let expiry = identity.expires_at.map(|exp_secs| {
        let left = exp_secs
            .saturating_mul(1000)
            .saturating_sub(crate::protocol::now_ms())
            .min(86_400_000);
        Instant::now() + Duration::from_millis(left)
    });
    (true, expiry)
}

fn on_read_error(conn: &ConnHandle, e: &axum::Error) {
    let text = e.to_string();
    // tungstenite reports an oversized message as a capacity error.
    if text.contains("too long") || text.contains("Space limit") || text.contains("capacity") {
        conn.close(close_code::TOO_BIG, "message too big");
    } else if text.contains("UTF-8") || text.contains("utf-8") {
        // A text frame that is not UTF-8 (RFC 6455 §8.1).
        conn.close(close_code::INVALID_DATA, "invalid UTF-8");
    } else {
        tracing::debug!(error = %text, "read error");
    }
}

/// Handle one WebSocket message; false ends the connection.
async fn on_message<S: ConnService>(svc: &S, conn: &ConnHandle, msg: WsMessage) -> bool {
    match msg {
        WsMessage::Text(text) => {
            on_text(svc, conn, text.as_str()).await;
            true
        }
        WsMessage::Binary(_) => {
            let err = RpcError::invalid_request("binary frames are not supported");
            conn.reply(frame::response_json(&frame::Id::null(), &Err(err)).into())
                .await;
            true
        }
        WsMessage::Ping(_) | WsMessage::Pong(_) => true,
        WsMessage::Close(_) => false,
    }
}

async fn on_text<S: ConnService>(svc: &S, conn: &ConnHandle, text: &str) {
    let limits = svc.limits();
    match frame::parse_text(text, limits.max_batch, limits.max_json_depth) {
        Incoming::Reject(err) => {
            conn.reply(frame::response_json(&frame::Id::null(), &Err(err)).into())
                .await;
        }
        Incoming::Single(Message::Call(call)) if svc.is_long_running(&call.method) => {
            spawn_call(svc, conn, call).await;
        }
        Incoming::Single(message) => {
            if let Some(reply) = on_item(svc, conn, message).await {
                conn.reply(reply.into()).await;
            }
        }
        Incoming::Batch(messages) => {
            let mut replies = Vec::new();
            for message in messages {
                if let Some(reply) = on_item(svc, conn, message).await {
                    replies.push(reply);
                }
            }
            if !replies.is_empty() {
                conn.reply(Frame::from(format!("[{}]", replies.join(","))))
                    .await;
            }
        }
    }
}

/// Run a call that waits on someone else (a node's answer) in its own
/// task, so the connection keeps reading — and answering other calls —
/// meanwhile. At most [`MAX_CALLS_IN_FLIGHT`] such calls per connection;
/// they end with the connection.
async fn spawn_call<S: ConnService>(svc: &S, conn: &ConnHandle, call: Call) {
    let Some(permit) = conn.try_start_call() else {
        let err = RpcError::limit("calls in flight per connection", MAX_CALLS_IN_FLIGHT);
        if let Some(id) = &call.id {
            conn.reply(frame::response_json(id, &Err(err)).into()).await;
        }
        return;
    };
    let (svc, conn) = (svc.clone(), conn.clone());
    tokio::spawn(async move {
        let _permit = permit;
        let id = call.id.clone();
        tokio::select! {
            outcome = svc.call(&conn, call) => {
                if let Some(id) = id {
                    conn.reply(frame::response_json(&id, &outcome).into()).await;
                }
            }
            _ = conn.closed().cancelled() => {}
        }
    });
}

/// One element of a frame; returns the reply's JSON, if one is due.
async fn on_item<S: ConnService>(svc: &S, conn: &ConnHandle, message: Message) -> Option<String> {
    match message {
        Message::Call(call) => {
            let id = call.id.clone();
            let outcome = svc.call(conn, call).await;
            id.map(|id| frame::response_json(&id, &outcome))
        }
        Message::Reply(reply) => {
            if !conn.complete(&reply.id, reply.outcome) {
                tracing::debug!(id = %reply.id, "answer to no pending request");
            }
            None
        }
        Message::Invalid { id, error } => Some(frame::response_json(&id, &Err(error))),
    }
}

/// Most bytes of queued frames coalesced into one socket write. Each write
/// on a socket is a system call that runs the whole TCP stack, which is
/// most of a fan-out's cost: frames that queued up while the socket was
/// being written go out together. The bound also caps what the socket's
/// write buffer keeps allocated after a burst (about twice this).
pub const WRITE_BATCH: usize = 2 * 1024;

/// What woke the writer.
enum Wait {
    Frame(Outbound),
    Ping,
    Closed,
}

/// What the writer does after a write.
enum Next {
    Continue,
    /// The queue asked to close (after what was queued before).
    Close(u16, String),
    /// The socket failed or the connection was closed.
    Stop,
}

/// Drain the outbound queue into the socket, ping on the heartbeat, and
/// send the close frame when the connection is closed.
async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    conn: ConnHandle,
    heartbeat: Duration,
    open: tokio::sync::oneshot::Receiver<()>,
) {
    // Opened, or the connection task is gone (either way, go on).
    let _ = open.await;
    let ping = sleep_until(Instant::now() + heartbeat);
    tokio::pin!(ping);
    let frames_out = metrics::counter!("switchyard_messages_out_total");
    loop {
        // The queue carries the close too (`ConnHandle::close` stops its
        // consumer): waiting registers one waker under the lock the queue
        // takes anyway, which matters when every socket of a fan-out waits
        // again after each frame.
        let first = poll_fn(|cx| match conn.queue().poll_pop(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Wait::Frame(item)),
            Poll::Ready(None) => Poll::Ready(Wait::Closed),
            Poll::Pending => ping.as_mut().poll(cx).map(|()| Wait::Ping),
        })
        .await;
        let first = match first {
            Wait::Closed => break,
            Wait::Frame(item) => Some(item),
            Wait::Ping => {
                ping.as_mut().reset(Instant::now() + heartbeat);
                None
            }
        };
        let next = tokio::select! {
            biased;
            next = write_batch(&mut sink, &conn, first, &frames_out) => next,
            _ = conn.closed().cancelled() => Next::Stop,
        };
        match next {
            Next::Continue => {}
            Next::Close(code, reason) => {
                conn.close(code, &reason);
                break;
            }
            Next::Stop => break,
        }
    }
    // Nothing more will be written: producers stop queueing (and waiting).
    conn.queue().close();
    // Boxed: the goodbye runs once, its timer need not live in every
    // idle connection's writer.
    Box::pin(goodbye(sink, &conn)).await;
}

/// Send the close frame; a peer that stopped reading must not hold the
/// task, so the close is bounded.
async fn goodbye(mut sink: SplitSink<WebSocket, WsMessage>, conn: &ConnHandle) {
    let (code, reason) = conn
        .close_frame()
        .unwrap_or((close_code::NORMAL, String::new()));
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = sink.send(close_message(code, &reason)).await;
        let _ = sink.close().await;
    })
    .await;
}

/// Write `first` and whatever else is queued (up to [`WRITE_BATCH`] bytes)
/// with one flush; `None` is a heartbeat ping.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, WsMessage>,
    conn: &ConnHandle,
    first: Option<Outbound>,
    frames_out: &metrics::Counter,
) -> Next {
    let mut item = first;
    let mut bytes = 0;
    let mut frames = 0;
    let mut next = Next::Continue;
    loop {
        let msg = match item {
            None => WsMessage::Ping(Default::default()),
            Some(Outbound::Frame(frame)) => {
                frames += 1;
                bytes += frame.len();
                WsMessage::Text(frame)
            }
            Some(Outbound::Close(code, reason)) => {
                next = Next::Close(code, reason);
                break;
            }
        };
        if sink.feed(msg).await.is_err() {
            return Next::Stop;
        }
        if bytes >= WRITE_BATCH {
            break;
        }
        match conn.queue().try_pop() {
            Some(more) => item = Some(more),
            None => break,
        }
    }
    // One update per batch: the counter is shared by every writer.
    frames_out.increment(frames);
    if sink.flush().await.is_err() {
        return Next::Stop;
    }
    next
}

/// The close frame to send for a requested close.
pub fn close_message(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason.chars().take(100).collect::<String>().into(),
    }))
}
