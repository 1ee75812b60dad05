//! Agent runs and chat: `agent.run`, `agent.wait`, `agent.cancel`,
//! `agent.event`, `agent.reattach` and `agent.finish` (from the agent),
//! `chat.send`, `chat.history`, `chat.abort`, `chat.inject`.
//!
//! A run is a relayed call (`agent.run` or `chat.send` sent to the agent)
//! tied to a session and recorded in the backend ([`RunRecord`]), at most
//! one at a time per session and `MAX_RUNS_PER_CALLER` per caller
//! (started by [`crate::services::runs::start`]). The
//! instance holding the agent's socket keeps the runs it serves in its
//! [`RunBook`](crate::agents::runs::RunBook): it accepts the agent's `agent.event` notifications for
//! them (published to the session's members wherever they are), publishes
//! `agent.started` / `agent.completed` / `agent.error` on `global`, and
//! finishes the record — first finisher wins, so a cancel racing a
//! completion ends the run once. The caller's instance also finishes the
//! record if the serving instance never answers (it died).

use super::agents::caller_info;
use super::{Ctx, sessions};
use crate::agents::select::Policy;
use crate::app::App;
use crate::backend::{AgentEntry, RunStatus};
use crate::protocol::{RpcError, now_ms};
use crate::services::agents::{Selector, online, timeout};
use crate::services::idempotent;
use crate::services::runs::{ACCEPT_WAIT, Dispatch, Started, begin, start, stop};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Default and longest run.
pub const DEFAULT_RUN_MS: u64 = 600_000;
/// Chat history kept per session.
const HISTORY_MAX: usize = 1000;
/// History entries sent to the agent with each message.
const HISTORY_CONTEXT: usize = 50;
/// Longest accepted task or message, in bytes.
const MAX_TEXT: usize = 256 * 1024;
/// How often `agent.wait` looks at the record.
const POLL: Duration = Duration::from_millis(50);

// -------------------------------------------------------------- agent.run

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunParams {
    /// The agent to run; or `capability` (default: capability `agent.run`).
    agent_id: Option<String>,
    /// Any online agent with this capability.
    capability: Option<String>,
    /// What to do (1 byte to 256 KiB).
    task: String,
    /// Passed to the agent as is.
    #[serde(default)]
    input: Value,
    /// A session of the caller's to run in (default: a new one).
    session_id: Option<String>,
    /// Passed to the agent.
    max_turns: Option<u32>,
    /// Passed to the agent.
    tier: Option<String>,
    /// Longest the run may take (default 10 minutes).
    timeout_ms: Option<u64>,
    /// As `node.invoke`'s.
    policy: Option<String>,
    /// As `node.invoke`'s.
    idempotency_key: Option<String>,
}

pub async fn run(ctx: &Ctx<'_>, p: RunParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    if p.task.is_empty() || p.task.len() > MAX_TEXT {
        return Err(RpcError::invalid_params(
            "task",
            format!("1-{MAX_TEXT} bytes"),
        ));
    }
    let policy = Policy::named(p.policy.as_deref())?;
    let run_timeout = timeout(ctx.app, Some(p.timeout_ms.unwrap_or(DEFAULT_RUN_MS)))?;
    idempotent::once(
        ctx.app,
        "agent.run",
        &identity.sub,
        p.idempotency_key.as_deref(),
        ACCEPT_WAIT + Duration::from_secs(5),
        || async {
            let selector =
                Selector::by_id_or_capability(p.agent_id.as_ref(), p.capability.as_ref())
                    .unwrap_or_else(|| Selector {
                        capability: Some("agent.run".into()),
                        ..Default::default()
                    });
            // No agent: fail before creating anything.
            let agents = online(ctx.app, &selector).await?;
            let (session_id, token) = sessions::for_run(ctx, p.session_id.as_deref()).await?;
            let params = json!({
                "sessionId": session_id,
                "task": p.task,
                "input": p.input,
                "maxTurns": p.max_turns,
                "tier": p.tier,
                "caller": caller_info(ctx),
            });
            let dispatch = Dispatch {
                agents,
                policy,
                method: "agent.run",
                params,
                task: p.task.clone(),
                session_id: session_id.clone(),
                timeout: run_timeout,
                caller: identity.sub.clone(),
                run_id: None,
            };
            let Started {
                record: run,
                agent_id: accepted,
                ..
            } = match start(ctx.app, dispatch).await {
                Ok(started) => started,
                Err(e) => {
                    if token.is_some() {
                        crate::services::sessions::discard(ctx.app, &session_id).await;
                    }
                    return Err(e);
                }
            };
            let mut reply = json!({
                "sessionId": run.session_id,
                "runId": run.run_id,
                "agentId": accepted,
                "status": "running",
            });
            if let Some(token) = token {
                // The session is the caller's: it may resume it (and the
                // run's stream) from another connection.
                reply["resumeToken"] = json!(token);
            }
            Ok(reply)
        },
    )
    .await
}

// ------------------------------------------------ wait, cancel, events

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitParams {
    session_id: String,
    /// How long to wait (default `limits.request_timeout_ms`).
    timeout_ms: Option<u64>,
}

pub async fn wait(ctx: &Ctx<'_>, p: WaitParams) -> Result<Value, RpcError> {
    sessions::require_member(ctx, &p.session_id).await?;
    let limit = timeout(ctx.app, p.timeout_ms)?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let run = ctx
            .app
            .run_store()
            .run(&p.session_id)
            .await?
            .ok_or_else(|| RpcError::not_found("run of session", &p.session_id))?;
        if run.status != RunStatus::Running {
            return Ok(serde_json::to_value(&run).unwrap_or_default());
        }
        if let Some(lost) = crate::services::reattach::settle_orphan(ctx.app, &run).await {
            return Ok(serde_json::to_value(&lost).unwrap_or_default());
        }
        if tokio::time::Instant::now() + POLL > deadline {
            return Err(RpcError::timeout(format!(
                "run {} still running after {} ms",
                run.run_id,
                limit.as_millis()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelParams {
    session_id: String,
}

pub async fn cancel(ctx: &Ctx<'_>, p: CancelParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    sessions::require_member(ctx, &p.session_id).await?;
    let Some(run) = ctx.app.run_store().run(&p.session_id).await? else {
        return Err(RpcError::not_found("run of session", &p.session_id));
    };
    if run.caller != identity.sub && !identity.is_admin() {
        return Err(RpcError::forbidden("only the run's caller may cancel it"));
    }
    if run.status != RunStatus::Running {
        return Err(RpcError::conflict(format!(
            "run {} is not running",
            run.run_id
        )));
    }
    let done = stop(ctx.app, run, &identity.sub)
        .await?
        .ok_or_else(|| RpcError::conflict("the run already ended"))?;
    Ok(json!({ "cancelled": true, "sessionId": done.session_id, "runId": done.run_id }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventParams {
    /// The session of the run this connection serves.
    session_id: String,
    /// The event's type (free-form: `token`, `tool_call`, …).
    #[serde(rename = "type")]
    kind: String,
    /// Reaches the members as is.
    #[serde(default)]
    data: Value,
}

/// `agent.event` from an agent working on a run: to the session's members.
pub async fn event(ctx: &Ctx<'_>, p: EventParams) -> Result<Value, RpcError> {
    let (run_id, agent_id, cancelled) = {
        let active = ctx.app.runs.active();
        match active.get(&p.session_id) {
            Some(a) if a.conn_id == ctx.conn.id() => {
                (a.run_id.clone(), a.agent_id.clone(), a.cancelled)
            }
            _ => return Err(RpcError::not_found("run of session", &p.session_id)),
        }
    };
    if cancelled {
        return Ok(json!({ "delivered": 0, "dropped": true }));
    }
    let event = crate::backend::LoggedFrame::new(
        "agent.event",
        json!({
            "sessionId": p.session_id,
            "runId": run_id,
            "agentId": agent_id,
            "type": p.kind,
            "data": p.data,
            "timestamp": now_ms(),
        }),
    );
    // On the session's log, numbered with its session events: a member
    // that resumes or reads the history gets the run's stream too.
    let channel = crate::protocol::names::session_channel(&p.session_id);
    let keep = ctx.app.live().limits.session_history;
    let (offset, delivered) = ctx
        .app
        .channel_log()
        .log_publish(&channel, &event, keep)
        .await?;
    Ok(json!({ "delivered": delivered, "offset": offset }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReattachParams {
    session_id: String,
    run_id: String,
}

/// `agent.reattach`: the agent takes back a run its lost instance served.
pub async fn reattach(ctx: &Ctx<'_>, p: ReattachParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let run = crate::services::reattach::reattach(
        ctx.app,
        ctx.conn,
        &identity.sub,
        &p.session_id,
        &p.run_id,
    )
    .await?;
    Ok(serde_json::to_value(&run).unwrap_or_default())
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FinishParams {
    session_id: String,
    run_id: String,
    /// The run's answer (as the reply to `agent.run` would have been).
    #[serde(default)]
    result: Value,
    /// Ends the run with this error instead: `{message, code?, data?}`.
    error: Option<FinishError>,
}

#[derive(Deserialize, JsonSchema)]
pub struct FinishError {
    message: String,
    /// Default -32603.
    code: Option<i32>,
    data: Option<Value>,
}

/// `agent.finish`: the agent ends the run it re-attached to.
pub async fn finish(ctx: &Ctx<'_>, p: FinishParams) -> Result<Value, RpcError> {
    let outcome = match p.error {
        Some(e) => Err(RpcError {
            code: e.code.unwrap_or(crate::protocol::error::INTERNAL_ERROR),
            message: e.message,
            data: e.data,
        }),
        None => Ok(p.result),
    };
    let ended = crate::services::reattach::finish_reattached(
        ctx.app,
        ctx.conn,
        &p.session_id,
        &p.run_id,
        outcome,
    )
    .await?;
    Ok(match ended {
        Some(run) => json!({ "finished": true, "runId": run.run_id, "status": run.status }),
        None => json!({ "finished": false, "runId": p.run_id, "status": "cancelled" }),
    })
}

// -------------------------------------------------------------------- chat

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatParams {
    session_id: String,
    /// A string or an object, at most 256 KiB.
    message: Value,
    /// How long to wait for the reply (default `limits.request_timeout_ms`).
    timeout_ms: Option<u64>,
    /// As `node.invoke`'s.
    idempotency_key: Option<String>,
}

fn check_message(message: &Value) -> Result<(), RpcError> {
    let size = serde_json::to_string(message).map_or(usize::MAX, |s| s.len());
    if message.is_null() || size > MAX_TEXT {
        return Err(RpcError::invalid_params(
            "message",
            format!("a string or object of at most {MAX_TEXT} bytes"),
        ));
    }
    Ok(())
}

fn history_entry(role: &str, content: &Value, from: &str) -> Value {
    json!({ "role": role, "content": content, "from": from, "timestamp": now_ms() })
}

/// The agents a session talks to: its latest run's agent if online, else
/// those with capability `chat`; -32005 when there is none.
async fn session_agents(app: &App, session_id: &str) -> Result<Vec<AgentEntry>, RpcError> {
    if let Some(run) = app.run_store().run(session_id).await?
        && !run.agent_id.is_empty()
    {
        let own = Selector {
            id: Some(run.agent_id),
            ..Default::default()
        };
        let found = crate::services::agents::candidates(app, &own).await?;
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let chat = Selector {
        capability: Some("chat".into()),
        ..Default::default()
    };
    online(app, &chat).await
}

pub async fn chat_send(ctx: &Ctx<'_>, p: ChatParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    check_message(&p.message)?;
    let limit = timeout(ctx.app, p.timeout_ms)?;
    sessions::require_member(ctx, &p.session_id).await?;
    idempotent::once(
        ctx.app,
        "chat.send",
        &identity.sub,
        p.idempotency_key.as_deref(),
        limit + Duration::from_secs(1),
        || async {
            let agents = session_agents(ctx.app, &p.session_id).await?;
            let history = ctx
                .app
                .chat_history()
                .history(&p.session_id, HISTORY_CONTEXT)
                .await?;
            let user = history_entry("user", &p.message, &identity.sub);
            ctx.app
                .chat_history()
                .append_history(&p.session_id, std::slice::from_ref(&user), HISTORY_MAX)
                .await?;
            let dispatch = Dispatch {
                agents,
                policy: Policy::default(),
                method: "chat.send",
                params: json!({
                    "sessionId": p.session_id,
                    "message": p.message,
                    "history": history,
                    "caller": caller_info(ctx),
                }),
                task: "chat".into(),
                session_id: p.session_id.clone(),
                timeout: limit,
                caller: identity.sub.clone(),
                run_id: None,
            };
            let (record, _progress, done) = begin(ctx.app, dispatch).await?;
            let reply = done
                .await
                .unwrap_or_else(|_| Err(RpcError::unavailable("the run ended")))?;
            let content = reply
                .get("content")
                .cloned()
                .unwrap_or_else(|| reply.clone());
            let agent = ctx
                .app
                .run_store()
                .run(&p.session_id)
                .await?
                .map(|r| r.agent_id);
            let answer = history_entry("assistant", &content, agent.as_deref().unwrap_or(""));
            ctx.app
                .chat_history()
                .append_history(&p.session_id, std::slice::from_ref(&answer), HISTORY_MAX)
                .await?;
            Ok(json!({
                "sessionId": p.session_id,
                "runId": record.run_id,
                "agentId": agent,
                "reply": content,
            }))
        },
    )
    .await
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryParams {
    session_id: String,
    /// Newest messages returned (default 100, at most 1000).
    limit: Option<usize>,
}

pub async fn chat_history(ctx: &Ctx<'_>, p: HistoryParams) -> Result<Value, RpcError> {
    sessions::require_member(ctx, &p.session_id).await?;
    let limit = p.limit.unwrap_or(100).min(HISTORY_MAX);
    let messages = ctx.app.chat_history().history(&p.session_id, limit).await?;
    Ok(json!({ "sessionId": p.session_id, "count": messages.len(), "messages": messages }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InjectParams {
    session_id: String,
    /// A string or an object, at most 256 KiB.
    message: Value,
    /// `user` (default), `assistant` or `system`.
    role: Option<String>,
}

pub async fn chat_inject(ctx: &Ctx<'_>, p: InjectParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    check_message(&p.message)?;
    let role = p.role.unwrap_or_else(|| "user".into());
    if !matches!(role.as_str(), "user" | "assistant" | "system") {
        return Err(RpcError::invalid_params(
            "role",
            "user, assistant or system",
        ));
    }
    sessions::require_member(ctx, &p.session_id).await?;
    let mut entry = history_entry(&role, &p.message, &identity.sub);
    entry["injected"] = json!(true);
    ctx.app
        .chat_history()
        .append_history(&p.session_id, std::slice::from_ref(&entry), HISTORY_MAX)
        .await?;
    Ok(json!({ "sessionId": p.session_id, "injected": true }))
}
