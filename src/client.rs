//! A small async client: connect, authenticate, call methods, receive
//! server pushes and answer server → client requests.
//!
//! A background task reads the socket: replies complete the matching
//! [`Client::call`], everything else (notifications and `srv-…` requests)
//! goes to [`Client::next_event`] in arrival order.

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
    out: mpsc::Sender<Message>,
    pending: Pending,
    events: mpsc::Receiver<Event>,
    next_id: AtomicU64,
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
        Ok(Self {
            out,
            pending,
            events,
            next_id: AtomicU64::new(1),
            timeout: Duration::from_secs(30),
        })
    }

    /// Change how long [`Client::call`] waits for a reply.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

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

    /// The next notification or server request; `None` once closed.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
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
