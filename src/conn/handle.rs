//! The shared handle of one connection.
//!
//! The connection task owns the socket; everything else (the hub's fan-out,
//! RPC handlers, the backend inbox) holds a cheap [`ConnHandle`] clone and
//! talks to the socket through a bounded queue. [`ConnHandle::push`] never
//! waits: a full queue means the client cannot keep up, and it is closed
//! with 4008 instead of letting memory grow.

use super::queue::{Queue, Refused};
use crate::auth::Identity;
use crate::protocol::{Frame, RpcError, frame};
use crate::ratelimit::SlidingCounter;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Close codes used by the server.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    /// A text frame that is not valid UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const RESTARTING: u16 = 1012;
    pub const AUTH_TIMEOUT: u16 = 4001;
    pub const KICKED: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// Long-running calls one connection may have in flight at once.
pub const MAX_CALLS_IN_FLIGHT: usize = 32;

/// A server → client request waiting for the client's answer, and where
/// its `invoke.progress` notifications go.
struct PendingRequest {
    reply: oneshot::Sender<Result<Value, RpcError>>,
    progress: Option<mpsc::Sender<Value>>,
}

/// An item of the outbound queue.
#[derive(Debug)]
pub enum Outbound {
    Frame(Frame),
    /// Close after everything queued before it has been sent.
    Close(u16, String),
}

/// Mutable per-connection state, guarded by a sync mutex that is never held
/// across an `.await`.
#[derive(Default)]
pub struct ConnState {
    pub identity: Option<Arc<Identity>>,
    /// `connect.client` as given by the client.
    pub client: Value,
    /// Channels subscribed explicitly (they count against the limit).
    pub subscriptions: HashSet<String>,
    /// Ids of the sessions joined.
    pub sessions: HashSet<String>,
    /// Capabilities a node declared in `connect.caps`.
    pub caps: Vec<String>,
    /// `node.invoke` calls in flight, by invokeId (for `invoke.cancel`).
    pub invokes: HashMap<String, CancellationToken>,
    pub rate: SlidingCounter,
    /// The connection's `challenge` was answered (it is good for one
    /// proof of possession).
    pub challenge_used: bool,
}

struct Shared {
    id: String,
    ip: IpAddr,
    connected_at: u64,
    /// Inline rather than behind its own `Arc`: the fan-out reaches it
    /// without one more pointer to chase per socket.
    queue: Queue<Outbound>,
    closed: CancellationToken,
    close_frame: Mutex<Option<(u16, String)>>,
    state: Mutex<ConnState>,
    pending: Mutex<HashMap<String, PendingRequest>>,
    next_request: AtomicU64,
    /// Long-running calls in flight.
    calls: std::sync::atomic::AtomicUsize,
}

/// A cheap, cloneable reference to one live connection.
#[derive(Clone)]
pub struct ConnHandle(Arc<Shared>);

impl ConnHandle {
    pub fn new(id: String, ip: IpAddr, queue: usize) -> Self {
        let shared = Shared {
            id,
            ip,
            connected_at: crate::protocol::now_ms(),
            queue: Queue::new(queue),
            closed: CancellationToken::new(),
            close_frame: Mutex::new(None),
            state: Mutex::new(ConnState::default()),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            calls: std::sync::atomic::AtomicUsize::new(0),
        };
        Self(Arc::new(shared))
    }

    /// The outbound queue; its one consumer is the connection's writer.
    pub(super) fn queue(&self) -> &Queue<Outbound> {
        &self.0.queue
    }

    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub fn ip(&self) -> IpAddr {
        self.0.ip
    }

    pub fn connected_at(&self) -> u64 {
        self.0.connected_at
    }

    pub fn state(&self) -> MutexGuard<'_, ConnState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.state().identity.clone()
    }

    /// Queue a frame without waiting. A full queue closes the connection as
    /// a slow consumer. Returns whether the frame was queued.
    pub fn push(&self, frame: Frame) -> bool {
        match self.0.queue.try_push(Outbound::Frame(frame)) {
            Ok(()) => true,
            Err(Refused::Full) => {
                if !self.is_closed() {
                    metrics::counter!("switchyard_slow_consumer_closes_total").increment(1);
                    tracing::warn!(conn = %self.0.id, "slow consumer: outbound queue full");
                    self.close(close_code::SLOW_CONSUMER, "slow consumer");
                }
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    /// Take the frames queued so far (tests of what reaches a socket).
    #[cfg(test)]
    pub fn take_frames(&self) -> Vec<Frame> {
        std::iter::from_fn(|| self.0.queue.try_pop())
            .filter_map(|item| match item {
                Outbound::Frame(frame) => Some(frame),
                Outbound::Close(..) => None,
            })
            .collect()
    }

    /// The next queued frame, waiting for one; `None` once the handle is
    /// closed (a full queue closes it). For a reader in this process that
    /// has no socket — an HTTP stream following a session's channel; a
    /// socket's own writer drains the queue itself.
    pub async fn next_frame(&self) -> Option<Frame> {
        match std::future::poll_fn(|cx| self.0.queue.poll_pop(cx)).await? {
            Outbound::Frame(frame) => Some(frame),
            Outbound::Close(..) => None,
        }
    }

    /// Queue a reply, waiting for room: a client that floods requests
    /// without reading is slowed down rather than dropped.
    pub async fn reply(&self, frame: Frame) {
        // The push first: it is done at once unless the queue is full, and
        // then the close is never waited on.
        tokio::select! {
            biased;
            _ = self.0.queue.push(Outbound::Frame(frame)) => {}
            _ = self.0.closed.cancelled() => {}
        }
    }

    /// Ask the connection to close with `code`; the first reason wins.
    pub fn close(&self, code: u16, reason: &str) {
        let mut slot = self.0.close_frame.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some((code, reason.to_owned()));
        }
        drop(slot);
        self.0.closed.cancel();
        // The writer waits on its queue alone: the queue tells it.
        self.0.queue.stop_consumer();
    }

    /// Close once the frames queued so far have been sent (graceful
    /// shutdown); a full queue closes at once.
    pub fn close_after_queue(&self, code: u16, reason: &str) {
        if self
            .0
            .queue
            .try_push(Outbound::Close(code, reason.to_owned()))
            .is_err()
        {
            self.close(code, reason);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed.is_cancelled()
    }

    pub fn closed(&self) -> &CancellationToken {
        &self.0.closed
    }

    /// The close code and reason requested, if any.
    pub fn close_frame(&self) -> Option<(u16, String)> {
        self.0
            .close_frame
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Send a server → client request and wait for the client's answer.
    pub async fn request(
        &self,
        method: &str,
        params: &Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        self.start_request(method, params, None)?
            .wait(timeout)
            .await
            .map_err(|e| {
                e.unwrap_or_else(|| {
                    RpcError::timeout(format!("no answer within {} ms", timeout.as_millis()))
                })
            })
    }

    /// Send a server → client request; the answer is awaited on the
    /// returned [`Outstanding`]. `invoke.progress` notifications the client
    /// sends for it go to `progress` (dropped when that is full).
    pub fn start_request<P: serde::Serialize>(
        &self,
        method: &str,
        params: &P,
        progress: Option<mpsc::Sender<Value>>,
    ) -> Result<Outstanding, RpcError> {
        let n = self.0.next_request.fetch_add(1, Ordering::Relaxed);
        let id = format!("srv-{n}");
        let (reply, rx) = oneshot::channel();
        self.pending()
            .insert(id.clone(), PendingRequest { reply, progress });
        let outstanding = Outstanding {
            conn: self.clone(),
            id,
            rx,
        };
        if !self.push(frame::request(&outstanding.id, method, params)) {
            return Err(RpcError::unavailable("connection is closing"));
        }
        Ok(outstanding)
    }

    /// Route an `invoke.progress` notification to its request; returns
    /// whether one was waiting.
    pub fn progress(&self, id: &str, data: Value) -> bool {
        match self.pending().get(id).and_then(|p| p.progress.as_ref()) {
            Some(sink) => {
                if sink.try_send(data).is_err() {
                    tracing::debug!(conn = %self.0.id, %id, "progress dropped: sink full");
                }
                true
            }
            None => false,
        }
    }

    /// A slot for one long-running call, if the connection has one free.
    pub fn try_start_call(&self) -> Option<CallSlot> {
        self.0
            .calls
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CALLS_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| CallSlot(self.clone()))
    }

    /// Route a client's answer to the waiting request. Unknown ids (late or
    /// forged answers) are ignored; returns whether one was waiting.
    pub fn complete(&self, id: &str, outcome: Result<Value, RpcError>) -> bool {
        match self.pending().remove(id) {
            Some(pending) => pending.reply.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Fail every request still waiting (the connection is gone).
    pub fn fail_pending(&self) {
        self.pending().clear();
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<String, PendingRequest>> {
        self.0.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One of a connection's long-running call slots; freed on drop.
pub struct CallSlot(ConnHandle);

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.0.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A server → client request in flight; dropping it forgets the request
/// (a late answer is then ignored).
pub struct Outstanding {
    conn: ConnHandle,
    id: String,
    rx: oneshot::Receiver<Result<Value, RpcError>>,
}

impl Outstanding {
    /// The `srv-N` id the client answers to.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Wait for the answer, at most `timeout` (then `Err(None)`: nothing
    /// came; the caller decides what the client and the requester hear).
    pub async fn wait(mut self, timeout: Duration) -> Result<Value, Option<RpcError>> {
        match tokio::time::timeout(timeout, &mut self.rx).await {
            Ok(Ok(result)) => result.map_err(Some),
            Ok(Err(_)) => Err(Some(RpcError::unavailable(
                "connection closed before answering",
            ))),
            Err(_) => Err(None),
        }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.conn.pending().remove(&self.id);
    }
}
