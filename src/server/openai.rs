//! The OpenAI-compatible façade: `POST /v1/chat/completions`,
//! `GET /v1/models` and `POST /v1/responses` (OpenResponses shape).
//!
//! A request goes to an online agent with capability `chat.completions`
//! that lists the requested `model`, as the server → client request
//! `chat.completions` whose params are the request body (plus `caller`).
//! The agent answers with either a whole OpenAI response (passed through,
//! missing fields filled in) or `{content}` / a string. With `stream:
//! true`, every `invoke.progress {delta}` the agent sends becomes one
//! Server-Sent Events chunk, and the stream ends with `data: [DONE]`. If
//! the HTTP client goes away, the agent gets `invoke.cancel`.
//!
//! Errors use OpenAI's shape `{"error":{"message","type","param","code"}}`;
//! a model no agent serves is 404 `model_not_found`.

use super::App;
use super::http::{HttpError, Peer, api_identity};
use crate::agents::select::Policy;
use crate::auth::Scope;
use crate::backend::AgentEntry;
use crate::protocol::{RpcError, now_ms};
use crate::relay::CallSpec;
use crate::services::agents::{Selector, call_found, candidates, models};
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

/// The capability an agent registers to serve these routes.
pub const CAPABILITY: &str = "chat.completions";
/// How long one completion may take.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(300);

/// An error in OpenAI's shape.
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<&'static str>,
    /// A rate limit's wait, sent as `Retry-After` as on `/api`.
    retry_after_ms: Option<u64>,
}

impl OpenAiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code: None,
            param: None,
            retry_after_ms: None,
        }
    }

    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    fn no_model(model: &str) -> Self {
        Self {
            code: Some("model_not_found"),
            param: Some("model"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("The model `{model}` does not exist or no agent serving it is online"),
            )
        }
    }

    fn body(&self) -> Value {
        json!({ "error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<HttpError> for OpenAiError {
    fn from(e: HttpError) -> Self {
        let kind = match e.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::BAD_REQUEST => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            _ => "api_error",
        };
        Self {
            retry_after_ms: e.retry_after_ms(),
            ..Self::new(e.status(), kind, e.message())
        }
    }
}

impl From<RpcError> for OpenAiError {
    fn from(e: RpcError) -> Self {
        HttpError::from(e).into()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(ms) = self.retry_after_ms {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                super::http::retry_after(ms),
            );
        }
        response
    }
}

/// The caller as agents see it on HTTP requests.
fn caller(identity: &crate::auth::Identity) -> Value {
    json!({
        "connId": null,
        "identity": identity.sub,
        "role": identity.role.to_string(),
        "scopes": identity.scopes.names(),
        "via": "http",
    })
}

/// The agents serving `model`; 404 when there are none.
async fn serving(app: &App, model: &str) -> Result<Vec<AgentEntry>, OpenAiError> {
    let selector = Selector {
        capability: Some(CAPABILITY.into()),
        model: Some(model.to_owned()),
        ..Default::default()
    };
    let found = candidates(app, &selector).await?;
    if found.is_empty() {
        return Err(OpenAiError::no_model(model));
    }
    Ok(found)
}

/// What both routes start from: an authenticated request with a model.
struct Accepted {
    identity: crate::auth::Identity,
    body: Value,
    model: String,
    stream: bool,
}

async fn accept(
    app: &App,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, OpenAiError> {
    let identity = api_identity(app, peer, headers, Scope::Write).await?;
    let body = parse_body(body)?;
    let model = model_of(&body)?;
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    Ok(Accepted {
        identity,
        body,
        model,
        stream,
    })
}

/// The assistant text of an agent's answer.
fn text_of(answer: &Value) -> String {
    if let Some(s) = answer.as_str() {
        return s.to_owned();
    }
    for pointer in ["/content", "/choices/0/message/content", "/output_text"] {
        if let Some(s) = answer.pointer(pointer).and_then(Value::as_str) {
            return s.to_owned();
        }
    }
    String::new()
}

/// The text of one streamed progress update.
fn delta_of(update: &Value) -> Option<String> {
    update
        .get("delta")
        .or_else(|| update.get("content"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| update.as_str().map(str::to_owned))
}

type Body = Result<Json<Value>, axum::extract::rejection::JsonRejection>;

fn parse_body(body: Body) -> Result<Value, OpenAiError> {
    let Json(body) = body.map_err(|e| {
        let status = super::http::body_status(&e);
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            OpenAiError::new(status, "invalid_request_error", e.body_text())
        } else {
            OpenAiError::invalid("body", e.body_text())
        }
    })?;
    if !body.is_object() {
        return Err(OpenAiError::invalid("body", "a JSON object"));
    }
    Ok(body)
}

fn model_of(body: &Value) -> Result<String, OpenAiError> {
    match body.get("model").and_then(Value::as_str) {
        Some(m) if !m.is_empty() && m.len() <= 256 => Ok(m.to_owned()),
        _ => Err(OpenAiError::invalid("model", "model is required")),
    }
}

/// One agent call; `progress` receives streamed updates.
async fn complete(
    app: &App,
    agents: Vec<AgentEntry>,
    params: Value,
    progress: Option<mpsc::Sender<Value>>,
) -> Result<Value, RpcError> {
    let (_, answer) = call_found(app, agents, Policy::default(), |_| {
        CallSpec::new("chat.completions", &params, COMPLETION_TIMEOUT)
            .with_progress(progress.clone())
    })
    .await?;
    Ok(answer)
}

pub async fn chat_completions(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OpenAiError> {
    let Accepted {
        identity,
        mut body,
        model,
        stream,
    } = accept(&app, peer, &headers, body).await?;
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(OpenAiError::invalid(
            "messages",
            "messages must be an array",
        ));
    }
    let agents = serving(&app, &model).await?;
    body["caller"] = caller(&identity);
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_ms() / 1000;
    if !stream {
        let answer = complete(&app, agents, body, None).await?;
        return Ok(Json(completion(&answer, &id, created, &model)).into_response());
    }
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let events = stream_events(app, agents, body, move |step| match step {
        Step::Start => vec![chunk(json!({ "role": "assistant", "content": "" }), None)],
        Step::Delta(text) => vec![chunk(json!({ "content": text }), None)],
        Step::End { rest } => {
            let mut out = Vec::new();
            if !rest.is_empty() {
                out.push(chunk(json!({ "content": rest }), None));
            }
            out.push(chunk(json!({}), Some("stop")));
            out
        }
    });
    Ok(events)
}

/// A whole `chat.completion` from an agent's answer.
fn completion(answer: &Value, id: &str, created: u64, model: &str) -> Value {
    if answer.get("choices").is_some_and(Value::is_array) {
        let mut full = answer.clone();
        for (key, value) in [
            ("id", json!(id)),
            ("object", json!("chat.completion")),
            ("created", json!(created)),
            ("model", json!(model)),
        ] {
            if full.get(key).is_none() {
                full[key] = value;
            }
        }
        return full;
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text_of(answer) },
            "finish_reason": "stop",
        }],
        "usage": answer.get("usage").cloned().unwrap_or_else(|| json!({
            "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
        })),
    })
}

/// A point in a streamed answer.
enum Step {
    Start,
    Delta(String),
    /// The answer arrived; `rest` is its text if nothing was streamed.
    End {
        rest: String,
    },
}

/// Run the agent call in the background and turn its progress into SSE
/// `data:` events built by `render`, ending with `data: [DONE]`.
fn stream_events<R>(app: App, agents: Vec<AgentEntry>, params: Value, render: R) -> Response
where
    R: Fn(Step) -> Vec<Value> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Event>(256);
    tokio::spawn(async move {
        let send = |value: Value| {
            let tx = tx.clone();
            async move {
                tx.send(Event::default().data(value.to_string()))
                    .await
                    .is_ok()
            }
        };
        for event in render(Step::Start) {
            send(event).await;
        }
        let (progress, mut updates) = mpsc::channel::<Value>(1024);
        let call = complete(&app, agents, params, Some(progress));
        tokio::pin!(call);
        let mut streamed = false;
        let outcome = loop {
            tokio::select! {
                outcome = &mut call => break Some(outcome),
                Some(update) = updates.recv() => {
                    if let Some(text) = delta_of(&update) {
                        streamed = true;
                        for event in render(Step::Delta(text)) {
                            send(event).await;
                        }
                    }
                }
                // The HTTP client went away: dropping the call cancels it
                // at the agent.
                _ = tx.closed() => break None,
            }
        };
        let Some(outcome) = outcome else {
            return;
        };
        // Updates that arrived just before the answer.
        while let Ok(update) = updates.try_recv() {
            if let Some(text) = delta_of(&update) {
                streamed = true;
                for event in render(Step::Delta(text)) {
                    send(event).await;
                }
            }
        }
        match outcome {
            Ok(answer) => {
                let rest = if streamed {
                    String::new()
                } else {
                    text_of(&answer)
                };
                for event in render(Step::End { rest }) {
                    send(event).await;
                }
            }
            Err(e) => {
                send(OpenAiError::from(e).body()).await;
            }
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub async fn list_models(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, OpenAiError> {
    api_identity(&app, peer, &headers, Scope::Read).await?;
    let data: Vec<Value> = models(&app)
        .await?
        .into_iter()
        .filter(|(_, agents)| {
            agents
                .iter()
                .any(|a| a.capabilities.iter().any(|c| c == CAPABILITY))
        })
        .map(|(id, agents)| {
            let created = agents.iter().map(|a| a.registered_at).min().unwrap_or(0) / 1000;
            json!({ "id": id, "object": "model", "created": created, "owned_by": "switchyard" })
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// `input` of a Responses request as chat messages.
fn responses_messages(body: &Value) -> Result<Value, OpenAiError> {
    let mut messages = Vec::new();
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
        messages.push(json!({ "role": "system", "content": instructions }));
    }
    match body.get("input") {
        Some(Value::String(text)) => messages.push(json!({ "role": "user", "content": text })),
        Some(Value::Array(items)) => {
            for item in items {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                let content = match item.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(""),
                    _ => String::new(),
                };
                messages.push(json!({ "role": role, "content": content }));
            }
        }
        _ => {
            return Err(OpenAiError::invalid(
                "input",
                "a string or an array of messages",
            ));
        }
    }
    Ok(Value::Array(messages))
}

pub async fn responses(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OpenAiError> {
    let Accepted {
        identity,
        body,
        model,
        stream,
    } = accept(&app, peer, &headers, body).await?;
    let messages = responses_messages(&body)?;
    let agents = serving(&app, &model).await?;
    let params = json!({
        "model": model,
        "messages": messages,
        "stream": stream,
        "caller": caller(&identity),
        "api": "responses",
    });
    let id = format!("resp_{}", uuid::Uuid::new_v4().simple());
    let item = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let item_ref = item.clone();
    let created = now_ms() / 1000;
    let response = move |status: &str, text: &str| {
        json!({
            "id": id, "object": "response", "created_at": created, "status": status,
            "model": model,
            "output": if text.is_empty() && status != "completed" { json!([]) } else { json!([{
                "type": "message", "id": item, "status": "completed", "role": "assistant",
                "content": [{ "type": "output_text", "text": text, "annotations": [] }],
            }]) },
            "output_text": text,
        })
    };
    if !stream {
        let answer = complete(&app, agents, params, None).await?;
        return Ok(Json(response("completed", &text_of(&answer))).into_response());
    }
    let item_id = item_ref;
    let full = std::sync::Mutex::new(String::new());
    let sequence = std::sync::atomic::AtomicU64::new(0);
    let numbered = move |mut event: Value| {
        event["sequence_number"] =
            json!(sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        event
    };
    let message = move |id: &str, status: &str, text: Option<&str>| {
        json!({
            "type": "message", "id": id, "status": status, "role": "assistant",
            "content": text.map_or(json!([]), |t| json!([
                { "type": "output_text", "text": t, "annotations": [] }
            ])),
        })
    };
    let events = stream_events(app, agents, params, move |step| {
        let out = match step {
            Step::Start => vec![
                json!({ "type": "response.created", "response": response("in_progress", "") }),
                json!({ "type": "response.in_progress", "response": response("in_progress", "") }),
                json!({
                    "type": "response.output_item.added", "output_index": 0,
                    "item": message(&item_id, "in_progress", None),
                }),
                json!({
                    "type": "response.content_part.added", "item_id": item_id,
                    "output_index": 0, "content_index": 0,
                    "part": { "type": "output_text", "text": "", "annotations": [] },
                }),
            ],
            Step::Delta(text) => {
                full.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
                vec![json!({
                    "type": "response.output_text.delta", "item_id": item_id,
                    "output_index": 0, "content_index": 0, "delta": text,
                })]
            }
            Step::End { rest } => {
                let mut text = full.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if !rest.is_empty() {
                    text.push_str(&rest);
                }
                let mut out = Vec::new();
                if !rest.is_empty() {
                    out.push(json!({
                        "type": "response.output_text.delta", "item_id": item_id,
                        "output_index": 0, "content_index": 0, "delta": rest,
                    }));
                }
                out.extend([
                    json!({
                        "type": "response.output_text.done", "item_id": item_id,
                        "output_index": 0, "content_index": 0, "text": text,
                    }),
                    json!({
                        "type": "response.content_part.done", "item_id": item_id,
                        "output_index": 0, "content_index": 0,
                        "part": { "type": "output_text", "text": text, "annotations": [] },
                    }),
                    json!({
                        "type": "response.output_item.done", "output_index": 0,
                        "item": message(&item_id, "completed", Some(&text)),
                    }),
                    json!({ "type": "response.completed", "response": response("completed", &text) }),
                ]);
                out
            }
        };
        out.into_iter().map(&numbered).collect()
    });
    Ok(events)
}
