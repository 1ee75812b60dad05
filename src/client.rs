//! A small async client: connect, authenticate, call methods, receive
//! server pushes and answer server → client requests.
//!
//! A background task reads the socket: replies complete the matching
//! [`Client::call`], everything else (notifications and `srv-…` requests)
//! goes to [`Client::next_event`] in arrival order.
//!
//! An agent is a client that answers requests: [`Client::serve`] runs a
//! handler per server → client request (`invoke`, `agent.run`,
//! `chat.send`, …), each in its own task, and answers with what it
//! returns. The [`Request`] it gets can stream progress and run events and
//! tells when the caller cancelled. See `examples/echo_agent.rs`.

use crate::protocol::RpcError;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Something the server sent that is not a reply.
#[derive(Debug, Clone)]
pub struct Event {
    /// Set for server → client requests (answer with [`Client::respond`]).
    pub id: Option<String>,
    pub method: String,
    pub params: Value,
}

/// Errors of the client itself.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("connection closed")]
    Closed,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>>>;

/// A connected client.
pub struct Client {
    handle: ClientHandle,
    events: mpsc::Receiver<Event>,
}

/// The sending half of a [`Client`]: calls, notifications and answers. Cheap
/// to clone into tasks.
#[derive(Clone)]
pub struct ClientHandle {
    out: mpsc::Sender<Message>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    timeout: Duration,
}

impl Client {
    /// Connect to `url`, sending `token` as `Authorization: Bearer` if given.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| ClientError::Connect(e.to_string()))?;
            request.headers_mut().insert("authorization", value);
        }
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut sink, mut stream) = socket.split();
        let (out, mut out_rx) = mpsc::channel::<Message>(256);
        let (events_tx, events) = mpsc::channel(4096);
        let pending: Pending = Arc::default();
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let routes = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(text) = msg {
                    route(&routes, &events_tx, text.as_str()).await;
                }
            }
            routes.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        let handle = ClientHandle {
            out,
            pending,
            next_id: Arc::new(AtomicU64::new(1)),
            timeout: Duration::from_secs(30),
        };
        Ok(Self { handle, events })
    }

    /// Change how long [`Client::call`] waits for a reply.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.handle.timeout = timeout;
    }

    /// A sender for use in other tasks.
    pub fn handle(&self) -> ClientHandle {
        self.handle.clone()
    }

    /// Call a method and wait for its result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.handle.call(method, params).await
    }

    /// Send a notification (no reply).
    pub async fn notify(&self, method: &str, params: Value) -> Result<(), ClientError> {
        self.handle.notify(method, params).await
    }

    /// Answer a server → client request.
    pub async fn respond(
        &self,
        id: &str,
        outcome: Result<Value, RpcError>,
    ) -> Result<(), ClientError> {
        self.handle.respond(id, outcome).await
    }

    /// The next notification or server request; `None` once closed.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Answer every server → client request with `handler`, each in its
    /// own task, until the connection closes. Notifications other than
    /// cancellations go to `on_notification`.
    pub async fn serve<H, Fut>(mut self, handler: H, on_notification: impl Fn(Event))
    where
        H: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, RpcError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let running: Arc<Mutex<HashMap<String, Running>>> = Arc::default();
        while let Some(event) = self.events.recv().await {
            let Some(id) = event.id.clone() else {
                if !cancel_matching(&running, &event) {
                    on_notification(event);
                }
                continue;
            };
            let cancelled = tokio_util::sync::CancellationToken::new();
            let session_id = event.params["sessionId"].as_str().map(str::to_owned);
            running.lock().unwrap_or_else(|p| p.into_inner()).insert(
                id.clone(),
                Running {
                    session_id,
                    cancelled: cancelled.clone(),
                },
            );
            let request = Request {
                id: id.clone(),
                method: event.method,
                params: event.params,
                handle: self.handle.clone(),
                cancelled,
            };
            let (handler, handle, running) =
                (handler.clone(), self.handle.clone(), running.clone());
            tokio::spawn(async move {
                let outcome = handler(request).await;
                running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                let _ = handle.respond(&id, outcome).await;
            });
        }
    }
}

/// A request being served, and how it is cancelled.
struct Running {
    session_id: Option<String>,
    cancelled: tokio_util::sync::CancellationToken,
}

/// `invoke.cancel {id}` and `agent.cancel {sessionId}` cancel the matching
/// running requests; returns whether `event` was such a cancellation.
fn cancel_matching(running: &Mutex<HashMap<String, Running>>, event: &Event) -> bool {
    let running = running.lock().unwrap_or_else(|p| p.into_inner());
    match event.method.as_str() {
        "invoke.cancel" => {
            if let Some(r) = event.params["id"].as_str().and_then(|id| running.get(id)) {
                r.cancelled.cancel();
            }
            true
        }
        "agent.cancel" => {
            let session = event.params["sessionId"].as_str();
            for r in running.values() {
                if r.session_id.as_deref() == session {
                    r.cancelled.cancel();
                }
            }
            true
        }
        _ => false,
    }
}

/// A server → client request handed to [`Client::serve`].
pub struct Request {
    /// The `srv-N` id.
    pub id: String,
    /// `invoke`, `agent.run`, `chat.send`, …
    pub method: String,
    pub params: Value,
    handle: ClientHandle,
    cancelled: tokio_util::sync::CancellationToken,
}

impl Request {
    /// The session of an `agent.run` / `chat.send` request.
    pub fn session_id(&self) -> Option<&str> {
        self.params["sessionId"].as_str()
    }

    /// Stream a progress update to the caller (`invoke.progress`).
    pub async fn progress(&self, data: Value) -> Result<(), ClientError> {
        self.handle
            .notify("invoke.progress", json!({ "id": self.id, "data": data }))
            .await
    }

    /// Stream an event to the members of this request's session
    /// (`agent.event`).
    pub async fn event(&self, kind: &str, data: Value) -> Result<(), ClientError> {
        let session_id = self.session_id().unwrap_or_default();
        self.handle
            .notify(
                "agent.event",
                json!({ "sessionId": session_id, "type": kind, "data": data }),
            )
            .await
    }

    /// The client side, for calls made while serving (e.g.
    /// `approval.request`).
    pub fn client(&self) -> &ClientHandle {
        &self.handle
    }

    /// Resolves when the caller cancels this request.
    pub async fn cancelled(&self) {
        self.cancelled.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }
}

impl ClientHandle {
    /// Call a method and wait for its result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let frame = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.send(frame).await?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(outcome)) => Ok(outcome?),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        }
    }

    /// Send a notification (no reply).
    pub async fn notify(&self, method: &str, params: Value) -> Result<(), ClientError> {
        self.send(json!({ "jsonrpc": "2.0", "method": method, "params": params }))
            .await
    }

    /// Answer a server → client request.
    pub async fn respond(
        &self,
        id: &str,
        outcome: Result<Value, RpcError>,
    ) -> Result<(), ClientError> {
        let frame = match outcome {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(error) => json!({ "jsonrpc": "2.0", "id": id, "error": error }),
        };
        self.send(frame).await
    }

    async fn send(&self, frame: Value) -> Result<(), ClientError> {
        self.out
            .send(Message::Text(frame.to_string().into()))
            .await
            .map_err(|_| ClientError::Closed)
    }
}

async fn route(pending: &Pending, events: &mpsc::Sender<Event>, text: &str) {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    for item in items {
        if let Some(method) = item["method"].as_str() {
            let event = Event {
                id: item["id"].as_str().map(str::to_owned),
                method: method.to_owned(),
                params: item["params"].clone(),
            };
            let _ = events.send(event).await;
        } else if let Some(id) = item["id"].as_u64() {
            let outcome = match item.get("error") {
                Some(error) => Err(serde_json::from_value(error.clone())
                    .unwrap_or_else(|_| RpcError::new(-32603, "malformed error"))),
                None => Ok(item["result"].clone()),
            };
            let waiter = pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            if let Some(tx) = waiter {
                let _ = tx.send(outcome);
            }
        }
    }
}
