//! The A2A 1.0 endpoint (JSON-RPC binding): other agents and A2A clients
//! reach the gateway's agents as A2A agents.
//!
//! | route | |
//! |---|---|
//! | `GET /.well-known/agent-card.json` | the gateway's card ([`card`]) |
//! | `POST /a2a` | JSON-RPC; a message goes to any online agent with capability `agent.run` |
//! | `GET /a2a/agents/{agentId}/agent-card.json` | that agent's card |
//! | `POST /a2a/agents/{agentId}` | JSON-RPC; a message goes to that agent |
//!
//! A request is one JSON-RPC 2.0 object. The flow: authenticate (bearer
//! token, JWT or API key; 401 with `WWW-Authenticate: Bearer` without
//! one), check the scope of the method (`operator.write` for
//! `SendMessage`, `SendStreamingMessage` and `CancelTask`, `operator.read`
//! for the others; 403) and the rate limit (429), then the envelope
//! (-32700, -32600) and the `A2A-Version` header (1.x; none means 0.3:
//! -32009), then the method. Errors are JSON-RPC errors with HTTP 200
//! ([`errors`]).
//!
//! A context is a gateway session and a task one run on it ([`context`]):
//! [`send`] starts runs, [`read`] answers `GetTask`, `ListTasks` and
//! `CancelTask` from the run records and session logs (any instance
//! answers for any task), [`stream`] serves `SendStreamingMessage` and
//! `SubscribeToTask` as Server-Sent Events, and [`tasks`] maps a run and
//! its events to A2A's task, status and artifact updates.

mod card;
mod context;
mod errors;
mod read;
mod send;
mod stream;
mod tasks;

pub use context::{SWEEP_EVERY, sweep};

use super::http::{Peer, api_identity};
use crate::app::App;
use crate::auth::{Identity, Scope};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use errors::{A2aError, response};
use serde_json::Value;
use std::net::SocketAddr;

/// The A2A version served.
pub const PROTOCOL_VERSION: &str = "1.0";

/// The A2A routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/.well-known/agent-card.json", get(card::gateway))
        .route("/a2a", post(gateway_rpc))
        .route("/a2a/agents/{agent_id}", post(agent_rpc))
        .route("/a2a/agents/{agent_id}/agent-card.json", get(card::agent))
}

/// A JSON-RPC request, checked.
struct Envelope {
    id: Value,
    method: String,
    params: Value,
}

/// Parse the body; an error comes with the id to answer it with.
fn envelope(body: &[u8]) -> Result<Envelope, (Value, A2aError)> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| (Value::Null, A2aError::parse(e)))?;
    let Value::Object(mut request) = value else {
        return Err((
            Value::Null,
            A2aError::invalid_request("a JSON-RPC request object (batches are not served)"),
        ));
    };
    let id = match request.remove("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id,
        _ => {
            return Err((
                Value::Null,
                A2aError::invalid_request("id: a string or a number is required"),
            ));
        }
    };
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((id, A2aError::invalid_request("jsonrpc: must be \"2.0\"")));
    }
    let method = match request.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => {
            return Err((
                id,
                A2aError::invalid_request("method: a string is required"),
            ));
        }
    };
    let params = match request.remove("params") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => return Err((id, A2aError::invalid_params("params", "an object"))),
    };
    Ok(Envelope { id, method, params })
}

/// The scope a method needs.
fn scope_of(method: &str) -> Scope {
    match method {
        "SendMessage" | "SendStreamingMessage" | "CancelTask" => Scope::Write,
        _ => Scope::Read,
    }
}

/// Whether the `A2A-Version` header names a 1.x version; the error says
/// what was asked (none: 0.3).
fn check_version(headers: &HeaderMap) -> Result<(), A2aError> {
    let asked = headers
        .get("a2a-version")
        .map(|v| v.to_str().unwrap_or("?").trim())
        .filter(|v| !v.is_empty());
    let major = PROTOCOL_VERSION.split('.').next().unwrap_or_default();
    match asked {
        Some(v) if v.split('.').next() == Some(major) => Ok(()),
        other => Err(A2aError::version(other)),
    }
}

fn json_answer(id: &Value, outcome: Result<Value, A2aError>) -> Response {
    axum::Json(response(id, outcome)).into_response()
}

async fn gateway_rpc(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    rpc(app, peer, headers, None, body).await
}

async fn agent_rpc(
    State(app): State<App>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
    body: Bytes,
) -> Response {
    rpc(app, peer, headers, Some(agent_id), body).await
}

async fn rpc(
    app: App,
    peer: SocketAddr,
    headers: HeaderMap,
    agent: Option<String>,
    body: Bytes,
) -> Response {
    let parsed = envelope(&body);
    let scope = parsed.as_ref().map_or(Scope::Read, |e| scope_of(&e.method));
    let identity = match api_identity(&app, peer, &headers, scope).await {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    let request = match parsed {
        Ok(request) => request,
        Err((id, e)) => return json_answer(&id, Err(e)),
    };
    if let Err(e) = check_version(&headers) {
        return json_answer(&request.id, Err(e));
    }
    let call = Call {
        app: &app,
        identity: &identity,
        agent: agent.as_deref(),
        peer,
        headers: &headers,
    };
    call.dispatch(request).await
}

/// One authenticated request.
struct Call<'a> {
    app: &'a App,
    identity: &'a Identity,
    /// The agent the per-agent URL names.
    agent: Option<&'a str>,
    peer: SocketAddr,
    headers: &'a HeaderMap,
}

impl Call<'_> {
    async fn dispatch(&self, request: Envelope) -> Response {
        let Envelope { id, method, params } = request;
        let (app, identity, p) = (self.app, self.identity, &params);
        let outcome = match method.as_str() {
            "SendMessage" => send::send_message(app, identity, self.agent, p).await,
            "SendStreamingMessage" => return self.send_streaming(id, p).await,
            "SubscribeToTask" => return self.subscribe(id, p).await,
            "GetTask" => read::get_task(app, identity, p).await,
            "ListTasks" => read::list_tasks(app, identity, p).await,
            "CancelTask" => read::cancel_task(app, identity, p).await,
            "GetExtendedAgentCard" => self.extended_card().await,
            "CreateTaskPushNotificationConfig"
            | "GetTaskPushNotificationConfig"
            | "ListTaskPushNotificationConfigs"
            | "DeleteTaskPushNotificationConfig" => Err(A2aError::push_not_supported()),
            other => Err(A2aError::method_not_found(other)),
        };
        json_answer(&id, outcome)
    }

    async fn send_streaming(&self, id: Value, params: &Value) -> Response {
        let launched = match send::parse(params) {
            Ok(req) => send::launch(self.app, self.identity, self.agent, &req).await,
            Err(e) => Err(e),
        };
        match launched {
            Ok((r, done)) => stream::respond(self.app.clone(), id, r, Some(done), self.peer.ip()),
            Err(e) => json_answer(&id, Err(e)),
        }
    }

    async fn subscribe(&self, id: Value, params: &Value) -> Response {
        let found = match read::task_id(params) {
            Ok(task_id) => context::task_run(self.app, self.identity, task_id).await,
            Err(e) => Err(e),
        };
        match found {
            Ok((_, run)) if run.status != crate::backend::RunStatus::Running => {
                let e = A2aError::unsupported(format!(
                    "task is in a terminal state: {}",
                    tasks::state_of(run.status)
                ));
                json_answer(&id, Err(e))
            }
            Ok((r, _)) => stream::respond(self.app.clone(), id, r, None, self.peer.ip()),
            Err(e) => json_answer(&id, Err(e)),
        }
    }

    async fn extended_card(&self) -> Result<Value, A2aError> {
        let base = card::base_url(self.app, self.peer, self.headers);
        let card = match self.agent {
            Some(agent) => card::agent_card(self.app, &base, agent, true).await,
            None => card::gateway_card(self.app, &base, true).await,
        };
        card.map_err(|e| A2aError::from(crate::protocol::RpcError::unavailable(e.message())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn envelopes_are_checked() {
        let ok = envelope(br#"{"jsonrpc":"2.0","id":"x","method":"GetTask","params":{"id":"t"}}"#);
        assert!(ok.is_ok_and(|e| e.method == "GetTask" && e.id == "x"));
        let no_params = envelope(br#"{"jsonrpc":"2.0","id":7,"method":"ListTasks"}"#);
        assert!(no_params.is_ok_and(|e| e.params.is_object() && e.id == 7));
        for (body, code, id) in [
            (&b"{nope"[..], -32700, Value::Null),
            (b"[]", -32600, Value::Null),
            (
                br#"{"jsonrpc":"2.0","method":"GetTask"}"#,
                -32600,
                Value::Null,
            ),
            (
                br#"{"jsonrpc":"1.0","id":"a","method":"GetTask"}"#,
                -32600,
                "a".into(),
            ),
            (
                br#"{"jsonrpc":"2.0","id":"a","method":3}"#,
                -32600,
                "a".into(),
            ),
            (
                br#"{"jsonrpc":"2.0","id":"a","method":"GetTask","params":[1]}"#,
                -32602,
                "a".into(),
            ),
        ] {
            let Err((got_id, e)) = envelope(body) else {
                panic!("{} accepted", String::from_utf8_lossy(body));
            };
            assert_eq!(
                (e.code, got_id),
                (code, id),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn versions_1_x_are_served() {
        let mut headers = HeaderMap::new();
        assert_eq!(check_version(&headers).err().map(|e| e.code), Some(-32009));
        for (v, ok) in [
            ("1.0", true),
            ("1", true),
            ("1.2", true),
            ("0.3", false),
            ("2.0", false),
            ("", false),
        ] {
            headers.insert("a2a-version", HeaderValue::from_static(v));
            assert_eq!(check_version(&headers).is_ok(), ok, "{v}");
        }
    }
}
