//! `tools/call`: one routed `invoke` to an agent holding the tool, on any
//! instance (`services::agents::call_found`, so a tool its definition
//! gates waits for a human's approval first, within the call's timeout).
//!
//! A client that accepts `text/event-stream` gets the answer as a stream:
//! the agent's `invoke.progress` become `notifications/progress` (when the
//! request carried a `progressToken`), a comment line every second keeps
//! the connection checked, and the response ends it. The call lives in
//! the stream: when the client goes away (the stateless revision's way to
//! cancel) the stream is dropped with it, and the relay sends the agent
//! `invoke.cancel`. Other clients get one JSON answer.
//!
//! What the agent answers becomes MCP content: a result already shaped
//! as `{content: [...]}` passes as it is; a string is one text block; any
//! other value is its JSON as text, and an object is also the
//! `structuredContent`. A failed call (the agent's error, a timeout, an
//! approval denied) is a result with `isError: true`, so the model sees
//! why; an unknown tool is a JSON-RPC error.

use super::catalog::Listed;
use super::wire::{self, Era};
use crate::agents::select::Policy;
use crate::app::App;
use crate::auth::Identity;
use crate::protocol::RpcError;
use crate::relay::CallSpec;
use crate::services::agents::call_found;
use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often an open stream is written to, so a client that left is
/// noticed (and its call cancelled) within this time.
const PING: Duration = Duration::from_secs(1);
/// Progress updates held for a slow reader before they are dropped.
const PROGRESS_BUFFER: usize = 64;

/// One `tools/call`, as asked.
pub struct ToolCall<'a> {
    pub app: &'a App,
    pub identity: &'a Identity,
    pub era: Era,
    pub id: Value,
    pub tool: Listed,
    /// The online agents serving it.
    pub serving: Vec<crate::backend::AgentEntry>,
    pub arguments: Value,
    pub progress_token: Option<Value>,
    /// The relay call id, when the call can be cancelled by the request
    /// id (the handshake revision's `notifications/cancelled`).
    pub call_id: Option<String>,
    pub stream: bool,
}

type Outcome = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>;

pub async fn answer(call: ToolCall<'_>) -> Response {
    let found = call.serving;
    let timeout = Duration::from_millis(call.app.live().limits.request_timeout_ms);
    let request = json!({
        "command": call.tool.tool,
        "params": call.arguments,
        "caller": { "connId": null, "identity": call.identity.sub, "via": "mcp" },
    });
    let (tx, rx) = match (&call.progress_token, call.stream) {
        (Some(_), true) => {
            let (tx, rx) = mpsc::channel(PROGRESS_BUFFER);
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    let app = call.app.clone();
    let call_id = call.call_id.clone();
    let outcome: Outcome = Box::pin(async move {
        let spec = |_: &crate::backend::AgentEntry| {
            let mut spec = CallSpec::new("invoke", &request, timeout).with_progress(tx.clone());
            spec.call_id = call_id.clone();
            spec
        };
        call_found(&app, found, Policy::default(), spec)
            .await
            .map(|(_, result)| result)
    });
    metrics::counter!("switchyard_mcp_tool_calls_total").increment(1);
    if !call.stream {
        let outcome = outcome.await;
        return wire::result(&call.id, tool_result(call.era, outcome));
    }
    let stream = Stream {
        id: call.id,
        era: call.era,
        token: call.progress_token,
        outcome,
        progress: rx,
        count: 0,
        queue: VecDeque::new(),
        done: false,
        ping: tokio::time::interval_at(tokio::time::Instant::now() + PING, PING),
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let frame = s.next().await?;
        Some((Ok::<_, Infallible>(Bytes::from(frame)), s))
    });
    wire::sse_response(Body::from_stream(body))
}

/// The SSE answer of one call: progress, pings, then the response.
struct Stream {
    id: Value,
    era: Era,
    token: Option<Value>,
    outcome: Outcome,
    progress: Option<mpsc::Receiver<Value>>,
    count: u64,
    queue: VecDeque<String>,
    done: bool,
    ping: tokio::time::Interval,
}

impl Stream {
    /// The next frame to write; `None` once the response is written.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(frame) = self.queue.pop_front() {
                return Some(frame);
            }
            if self.done {
                return None;
            }
            tokio::select! {
                biased;
                Some(data) = recv(&mut self.progress) => self.push_progress(&data),
                outcome = &mut self.outcome => {
                    // Updates that arrived just before the answer.
                    while let Some(data) = self.progress.as_mut().and_then(|rx| rx.try_recv().ok()) {
                        self.push_progress(&data);
                    }
                    let response = json!({
                        "jsonrpc": "2.0",
                        "id": self.id,
                        "result": tool_result(self.era, outcome),
                    });
                    self.queue.push_back(wire::sse_event(&response));
                    self.done = true;
                }
                _ = self.ping.tick() => self.queue.push_back(": ping\n\n".into()),
            }
        }
    }

    fn push_progress(&mut self, data: &Value) {
        let Some(token) = &self.token else { return };
        self.count += 1;
        let notification = json!({
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": progress_params(token, self.count, data),
        });
        self.queue.push_back(wire::sse_event(&notification));
    }
}

async fn recv(rx: &mut Option<mpsc::Receiver<Value>>) -> Option<Value> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// `notifications/progress` params for the agent's `count`-th update
/// `data`: its own `progress`, `total` and `message` when it gave them.
fn progress_params(token: &Value, count: u64, data: &Value) -> Value {
    let progress = data["progress"].as_f64().unwrap_or(count as f64);
    let mut params = json!({ "progressToken": token, "progress": progress });
    if let Some(total) = data["total"].as_f64() {
        params["total"] = json!(total);
    }
    let message = match data {
        Value::String(text) => Some(text.clone()),
        _ => data["message"].as_str().map(str::to_owned),
    };
    params["message"] = json!(message.unwrap_or_else(|| data.to_string()));
    params
}

/// The MCP result of a call's outcome (see the module docs).
fn tool_result(era: Era, outcome: Result<Value, RpcError>) -> Value {
    let mut result = match outcome {
        Ok(value) if value["content"].is_array() => {
            let mut value = value;
            if !value["isError"].is_boolean() {
                value["isError"] = json!(false);
            }
            value
        }
        Ok(Value::String(text)) => {
            json!({ "content": [{ "type": "text", "text": text }], "isError": false })
        }
        Ok(value) => {
            let mut result = json!({
                "content": [{ "type": "text", "text": value.to_string() }],
                "isError": false,
            });
            if value.is_object() {
                result["structuredContent"] = value;
            }
            result
        }
        Err(e) => {
            let text = match e.data.as_ref().and_then(|d| d["reason"].as_str()) {
                Some(reason) => format!("{} ({reason})", e.message),
                None => e.message.clone(),
            };
            json!({ "content": [{ "type": "text", "text": text }], "isError": true })
        }
    };
    if era == Era::Modern {
        result["resultType"] = json!("complete");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_mcp_content() {
        let text = tool_result(Era::Handshake, Ok(json!("hi")));
        assert_eq!(text["content"][0]["text"], "hi");
        assert_eq!(text["isError"], false);
        let object = tool_result(Era::Modern, Ok(json!({"n": 1})));
        assert_eq!(object["structuredContent"], json!({"n": 1}));
        assert_eq!(object["content"][0]["text"], "{\"n\":1}");
        assert_eq!(object["resultType"], "complete");
        let shaped = json!({"content": [{"type": "text", "text": "x"}]});
        assert_eq!(tool_result(Era::Handshake, Ok(shaped))["isError"], false);
        let failed = tool_result(Era::Handshake, Err(RpcError::timeout("no answer")));
        assert_eq!(failed["isError"], true);
        assert_eq!(failed["content"][0]["text"], "timeout (no answer)");
    }

    #[test]
    fn progress_keeps_what_the_agent_said() {
        let p = progress_params(
            &json!(7),
            2,
            &json!({"progress": 5, "total": 10, "message": "m"}),
        );
        assert_eq!(
            p,
            json!({"progressToken": 7, "progress": 5.0, "total": 10.0, "message": "m"})
        );
        let p = progress_params(&json!("t"), 3, &json!({"step": "x"}));
        assert_eq!(p["progress"], 3.0);
        assert_eq!(p["message"], "{\"step\":\"x\"}");
    }
}
