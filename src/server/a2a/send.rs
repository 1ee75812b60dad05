//! `SendMessage` and `SendStreamingMessage`: a message becomes an agent
//! run, as `agent.run` starts one.
//!
//! The message is checked (a `messageId`, role `ROLE_USER`, parts each with
//! exactly one of `text`, `raw`, `url`, `data`), its context found or
//! opened ([`context::for_message`]), and the agent chosen as `agent.run`
//! chooses: the agent the per-agent URL names, else any online agent with
//! capability `agent.run`, by the default routing policy. The message is
//! logged on the context's session (the `session.event` `a2a.message`) and
//! the run started; the agent is sent `agent.run` with
//!
//! - `task`: the message's text parts joined by newlines (its parts as
//!   JSON when it has no text),
//! - `input`: `{message, metadata}` — the whole A2A message (its `taskId`
//!   and `contextId` filled in) and the request's metadata,
//! - `caller`: `{connId: null, identity, role, scopes, via: "a2a"}`.
//!
//! `SendMessage` answers once the run has ended (the run's timeout bounds
//! the wait), or at once with `configuration.returnImmediately` (or the
//! older `blocking: false`). A client that goes away does not stop the
//! task: `CancelTask` does.

use super::context;
use super::errors::A2aError;
use super::tasks::{MESSAGE_EVENT, TaskRef};
use crate::agents::select::Policy;
use crate::app::App;
use crate::auth::Identity;
use crate::backend::{LoggedFrame, RunStatus};
use crate::protocol::names::session_channel;
use crate::protocol::now_ms;
use crate::services::agents::{MAX_TIMEOUT_MS, Selector, online};
use crate::services::runs::{Dispatch, Done, start};
use serde_json::{Value, json};
use std::time::Duration;

/// How long a task's run may take.
pub const RUN_TIMEOUT: Duration = Duration::from_millis(MAX_TIMEOUT_MS);
/// Largest accepted message, serialised.
const MAX_MESSAGE: usize = 256 * 1024;
/// Longest `messageId`.
const MAX_ID: usize = 256;

/// A checked `SendMessageRequest`.
pub struct SendRequest {
    /// The message, as given (its `taskId` and `contextId` are set later).
    message: Value,
    context_id: Option<String>,
    metadata: Value,
    pub history_length: Option<usize>,
    pub return_immediately: bool,
}

fn invalid(field: &str, why: &str) -> A2aError {
    A2aError::invalid_params(field, why)
}

/// Check the params of `SendMessage` / `SendStreamingMessage`.
pub fn parse(params: &Value) -> Result<SendRequest, A2aError> {
    let message = params
        .get("message")
        .filter(|m| !m.is_null())
        .ok_or_else(|| invalid("message", "required"))?;
    let fields = message
        .as_object()
        .ok_or_else(|| invalid("message", "an object"))?;
    match fields.get("messageId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && id.len() <= MAX_ID => {}
        _ => {
            return Err(invalid(
                "message.messageId",
                "required: a string of 1-256 bytes",
            ));
        }
    }
    match fields.get("role") {
        Some(r) if r == "ROLE_USER" || r == 1 => {}
        None => return Err(invalid("message.role", "required: ROLE_USER")),
        Some(_) => {
            return Err(invalid(
                "message.role",
                "a message sent to an agent has role ROLE_USER",
            ));
        }
    }
    let parts = fields
        .get("parts")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| invalid("message.parts", "required: a non-empty array"))?;
    for (i, part) in parts.iter().enumerate() {
        check_part(i, part)?;
    }
    if fields
        .get("taskId")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
    {
        return Err(A2aError::unsupported(
            "continuing a task is not supported (a task ends with its run): send a new message with the task's contextId",
        ));
    }
    let context_id = match fields.get("contextId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            crate::services::sessions::validate_id(s).map_err(|_| {
                invalid(
                    "message.contextId",
                    "1-128 characters from A-Z a-z 0-9 - _ . :",
                )
            })?;
            Some(s.clone())
        }
        Some(_) => return Err(invalid("message.contextId", "a string")),
    };
    if message.to_string().len() > MAX_MESSAGE {
        return Err(invalid("message", "at most 262144 bytes"));
    }
    let metadata = match params.get("metadata") {
        None | Some(Value::Null) => Value::Null,
        Some(m) if m.is_object() => m.clone(),
        Some(_) => return Err(invalid("metadata", "an object")),
    };
    let config = match params.get("configuration") {
        None | Some(Value::Null) => &Value::Null,
        Some(c) if c.is_object() => c,
        Some(_) => return Err(invalid("configuration", "an object")),
    };
    if config
        .get("taskPushNotificationConfig")
        .is_some_and(|c| !c.is_null())
    {
        return Err(A2aError::push_not_supported());
    }
    let flag = |name: &str| match config.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(&format!("configuration.{name}"), "a boolean")),
    };
    let return_immediately =
        flag("returnImmediately")?.unwrap_or(false) || flag("blocking")? == Some(false);
    Ok(SendRequest {
        message: message.clone(),
        context_id,
        metadata,
        history_length: history_length(config, "configuration.historyLength")?,
        return_immediately,
    })
}

/// A `historyLength` member of `params`: absent, or a count ≥ 0.
pub fn history_length(params: &Value, field: &str) -> Result<Option<usize>, A2aError> {
    match params.get("historyLength") {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_u64()
            .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
            .ok_or_else(|| invalid(field, "a count of at least 0")),
    }
}

fn check_part(i: usize, part: &Value) -> Result<(), A2aError> {
    let field = format!("message.parts[{i}]");
    let fields = part
        .as_object()
        .ok_or_else(|| invalid(&field, "an object"))?;
    let members: Vec<&str> = ["text", "raw", "url", "data"]
        .into_iter()
        .filter(|k| fields.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    match members.as_slice() {
        [one] if *one != "data" && !fields[*one].is_string() => {
            Err(invalid(&format!("{field}.{one}"), "a string"))
        }
        [_] => Ok(()),
        _ => Err(invalid(&field, "exactly one of text, raw, url or data")),
    }
}

/// What the agent is told to do: the text parts, else the parts as JSON.
fn task_text(message: &Value) -> String {
    let parts = message["parts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
    let joined = text.join("\n");
    if joined.trim().is_empty() {
        message["parts"].to_string()
    } else {
        joined
    }
}

/// The caller as agents see it on A2A requests.
fn caller(identity: &Identity) -> Value {
    json!({
        "connId": null,
        "identity": identity.sub,
        "role": identity.role.to_string(),
        "scopes": identity.scopes.names(),
        "via": "a2a",
    })
}

/// Start the task `req` asks for, on the agent `agent` (an id from the
/// per-agent URL) or any online agent with capability `agent.run`.
pub async fn launch(
    app: &App,
    identity: &Identity,
    agent: Option<&str>,
    req: &SendRequest,
) -> Result<(TaskRef, Done), A2aError> {
    let selector = match agent {
        Some(id) => Selector {
            id: Some(id.to_owned()),
            ..Default::default()
        },
        None => Selector {
            capability: Some("agent.run".into()),
            ..Default::default()
        },
    };
    // No agent: fail before opening anything.
    let agents = online(app, &selector).await?;
    let (session_id, created) =
        context::for_message(app, identity, req.context_id.as_deref()).await?;
    let started = start_in(app, identity, agents, session_id.clone(), req).await;
    if started.is_err() && created {
        crate::services::sessions::discard(app, &session_id).await;
    }
    started
}

async fn start_in(
    app: &App,
    identity: &Identity,
    agents: Vec<crate::backend::AgentEntry>,
    session_id: String,
    req: &SendRequest,
) -> Result<(TaskRef, Done), A2aError> {
    // One task at a time per context: said before the message is logged.
    if let Some(run) = app.run_store().run(&session_id).await?
        && run.status == RunStatus::Running
    {
        let busy = TaskRef {
            session_id: session_id.clone(),
            run_id: run.run_id,
        };
        return Err(A2aError::unsupported(format!(
            "context {session_id} has a task in progress ({}): one task at a time per context",
            busy.id()
        )));
    }
    let r = TaskRef {
        session_id,
        run_id: uuid::Uuid::new_v4().simple().to_string(),
    };
    let mut message = req.message.clone();
    message["contextId"] = json!(r.session_id);
    message["taskId"] = json!(r.id());
    let logged = LoggedFrame::new(
        "session.event",
        json!({
            "sessionId": r.session_id,
            "event": MESSAGE_EVENT,
            "data": { "taskId": r.id(), "message": message },
            "from": { "connId": null, "identity": identity.sub },
            "timestamp": now_ms(),
        }),
    );
    let keep = app.live().limits.session_history;
    app.channel_log()
        .log_publish(&session_channel(&r.session_id), &logged, keep)
        .await?;
    let task = task_text(&message);
    let params = json!({
        "sessionId": r.session_id,
        "task": task,
        "input": { "message": message, "metadata": req.metadata },
        "caller": caller(identity),
    });
    let started = start(
        app,
        Dispatch {
            agents,
            policy: Policy::default(),
            method: "agent.run",
            params,
            task,
            session_id: r.session_id.clone(),
            timeout: RUN_TIMEOUT,
            caller: identity.sub.clone(),
            run_id: Some(r.run_id.clone()),
        },
    )
    .await?;
    Ok((r, started.done))
}

/// `SendMessage`: start the task and answer with it once it ended (or at
/// once when asked to).
pub async fn send_message(
    app: &App,
    identity: &Identity,
    agent: Option<&str>,
    params: &Value,
) -> Result<Value, A2aError> {
    let req = parse(params)?;
    let (r, done) = launch(app, identity, agent, &req).await?;
    if !req.return_immediately {
        // The run's timeout ends it; the margin covers the relay's grace.
        let _ = tokio::time::timeout(RUN_TIMEOUT + Duration::from_secs(30), done).await;
    }
    let (task, run) = super::read::fold(app, &r).await?;
    Ok(json!({ "task": task.to_json(&run, req.history_length, true) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(message: Value) -> Value {
        json!({ "message": message, "configuration": {} })
    }

    fn user(parts: Value) -> Value {
        json!({ "messageId": "m1", "role": "ROLE_USER", "parts": parts })
    }

    fn field_of(e: A2aError) -> String {
        e.to_json()["data"][0]["metadata"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn messages_are_checked() {
        assert!(parse(&params(user(json!([{ "text": "hi" }])))).is_ok());
        let bad = [
            (json!({}), "message"),
            (params(json!("text")), "message"),
            (
                params(json!({ "role": "ROLE_USER", "parts": [{ "text": "x" }] })),
                "message.messageId",
            ),
            (
                params(json!({ "messageId": "m", "parts": [{ "text": "x" }] })),
                "message.role",
            ),
            (
                params(
                    json!({ "messageId": "m", "role": "ROLE_AGENT", "parts": [{ "text": "x" }] }),
                ),
                "message.role",
            ),
            (params(user(json!([]))), "message.parts"),
            (
                params(user(json!([{ "text": "x", "data": {} }]))),
                "message.parts[0]",
            ),
            (
                params(user(json!([{ "text": 3 }]))),
                "message.parts[0].text",
            ),
            (
                params(user(json!([{ "metadata": {} }]))),
                "message.parts[0]",
            ),
        ];
        for (p, field) in bad {
            let e = parse(&p).err().unwrap_or_else(|| panic!("{p} accepted"));
            assert_eq!(e.code, -32602, "{p}");
            assert_eq!(field_of(e), field, "{p}");
        }
        let mut continuing = user(json!([{ "text": "x" }]));
        continuing["taskId"] = json!("t");
        assert_eq!(
            parse(&params(continuing)).err().map(|e| e.code),
            Some(-32004)
        );
        let pushed = json!({ "message": user(json!([{ "text": "x" }])),
            "configuration": { "taskPushNotificationConfig": { "url": "https://x" } } });
        assert_eq!(parse(&pushed).err().map(|e| e.code), Some(-32003));
    }

    #[test]
    fn blocking_is_the_default() {
        let p = params(user(json!([{ "text": "x" }])));
        assert!(!parse(&p).ok().unwrap().return_immediately);
        let mut p = p;
        p["configuration"] = json!({ "returnImmediately": true, "historyLength": 2 });
        let req = parse(&p).ok().unwrap();
        assert!(req.return_immediately);
        assert_eq!(req.history_length, Some(2));
        p["configuration"] = json!({ "blocking": false });
        assert!(parse(&p).ok().unwrap().return_immediately);
        p["configuration"] = json!({ "historyLength": -1 });
        assert_eq!(parse(&p).err().map(|e| e.code), Some(-32602));
    }

    #[test]
    fn the_task_is_the_text() {
        let m = user(json!([{ "text": "a" }, { "data": { "n": 1 } }, { "text": "b" }]));
        assert_eq!(task_text(&m), "a\nb");
        let m = user(json!([{ "data": { "n": 1 } }]));
        assert_eq!(task_text(&m), r#"[{"data":{"n":1}}]"#);
    }
}
