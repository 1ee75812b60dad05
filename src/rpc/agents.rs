//! The agent registry and routed calls: `agent.register`, `agent.status`,
//! `agent.unregister`, `agents.list`, `agents.get` (`node.list`,
//! `node.describe`), `tools.list`, `models.list`, `node.invoke`,
//! `invoke.progress`, `invoke.cancel`, and method providers.
//!
//! An entry is written by the instance holding the agent's connection
//! ([`crate::agents::LocalAgents`]) and goes offline when that connection
//! closes, or through the reaper when that instance dies. A node that
//! declares `caps` at `connect` is registered implicitly under its
//! connection id. Calls pick the matching online agents, order them by
//! policy ([`crate::agents::select`]) and go through the
//! [`crate::relay::Relay`] to whichever instance holds each, until one
//! accepts (agents at `maxConcurrency` refuse).

use super::Ctx;
use crate::agents::select::Policy;
use crate::app::App;
use crate::auth::{Identity, Role};
use crate::backend::{AgentEntry, ToolSpec};
use crate::conn::ConnHandle;
use crate::protocol::{RpcError, frame, now_ms};
use crate::relay::CallSpec;
use crate::services::agents::{Selector, call_agents, call_found, candidates, models, timeout};
use crate::services::{agent_defs, idempotent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;

/// Default `maxConcurrency`.
const DEFAULT_CONCURRENCY: u32 = 16;
/// Bounds of a registration.
const MAX_NAMES: usize = 256;
const MAX_NAME_LEN: usize = 128;
const MAX_TOOLS: usize = 256;
/// Entries one connection may register.
const MAX_AGENTS_PER_CONN: usize = 16;

/// Who is calling, as a node sees it.
pub fn caller_info(ctx: &Ctx<'_>) -> Value {
    let identity = ctx.conn.identity();
    serde_json::to_value(Caller::new(ctx, identity.as_deref())).unwrap_or_default()
}

/// [`caller_info`] written straight into a request (no `Value` built).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Caller<'a> {
    conn_id: &'a str,
    identity: Option<&'a str>,
    role: Option<&'static str>,
    scopes: Option<Vec<&'static str>>,
}

impl<'a> Caller<'a> {
    fn new(ctx: &'a Ctx<'_>, identity: Option<&'a Identity>) -> Self {
        Self {
            conn_id: ctx.conn.id(),
            identity: identity.map(|i| i.sub.as_str()),
            role: identity.map(|i| i.role.as_str()),
            scopes: identity.map(|i| i.scopes.names()),
        }
    }
}

/// The request a node gets for `node.invoke` and for a method it provides
/// (members in the order a `Value` map writes them).
#[derive(Serialize)]
struct InvokeRequest<'a> {
    caller: Caller<'a>,
    command: &'a str,
    params: &'a Value,
}

// ------------------------------------------------------------ registration

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterParams {
    /// The entry's id (default: the connection id); another connection of
    /// the same identity may take it over.
    agent_id: Option<String>,
    /// Display name (default: the id).
    name: Option<String>,
    /// Free-form kind (default `agent`).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Capabilities calls select it by (at most 256 names of 1-128 bytes).
    #[serde(default)]
    capabilities: Vec<String>,
    /// Tools it offers (`tools.list`, `POST /tools/invoke`).
    #[serde(default)]
    tools: Vec<ToolSpec>,
    /// Models it serves (`models.list`, `/v1/*`).
    #[serde(default)]
    models: Vec<String>,
    /// Methods it serves: exact names or prefixes ending in `*`, none
    /// built in.
    #[serde(default)]
    methods: Vec<String>,
    /// Calls it accepts at once, cluster-wide (default 16).
    max_concurrency: Option<u32>,
    /// Free-form status (default `idle`).
    status: Option<String>,
}

fn check_names(field: &str, names: &[String]) -> Result<(), RpcError> {
    if names.len() > MAX_NAMES
        || names
            .iter()
            .any(|n| n.is_empty() || n.len() > MAX_NAME_LEN || n.chars().any(char::is_control))
    {
        return Err(RpcError::invalid_params(
            field,
            format!("at most {MAX_NAMES} names of 1-{MAX_NAME_LEN} bytes"),
        ));
    }
    Ok(())
}

fn check_registration(p: &RegisterParams) -> Result<(), RpcError> {
    if let Some(id) = &p.agent_id {
        check_names("agentId", std::slice::from_ref(id))?;
    }
    check_names("capabilities", &p.capabilities)?;
    check_names("models", &p.models)?;
    check_names("methods", &p.methods)?;
    for pattern in &p.methods {
        let body = pattern.strip_suffix('*').unwrap_or(pattern);
        if body.contains('*') || super::is_builtin(pattern) {
            return Err(RpcError::invalid_params(
                "methods",
                format!("{pattern}: a method name or prefix ending in * that is not built in"),
            ));
        }
    }
    if p.tools.len() > MAX_TOOLS {
        return Err(RpcError::invalid_params(
            "tools",
            format!("at most {MAX_TOOLS}"),
        ));
    }
    for (i, tool) in p.tools.iter().enumerate() {
        check_names(
            &format!("tools[{i}].name"),
            std::slice::from_ref(&tool.name),
        )?;
        if !tool.parameters.is_object() {
            return Err(RpcError::invalid_params(
                &format!("tools[{i}].parameters"),
                "a JSON Schema object",
            ));
        }
    }
    if p.max_concurrency == Some(0) {
        return Err(RpcError::invalid_params("maxConcurrency", "at least 1"));
    }
    Ok(())
}

pub async fn register(ctx: &Ctx<'_>, p: RegisterParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    check_registration(&p)?;
    let agent_id = p
        .agent_id
        .clone()
        .unwrap_or_else(|| ctx.conn.id().to_owned());
    // Another connection's live entry under this id: only the same
    // identity may take it over (an agent reconnecting).
    let existing = ctx
        .app
        .agent_store()
        .agents()
        .await?
        .into_iter()
        .find(|a| a.agent_id == agent_id);
    if let Some(other) = &existing
        && other.online
        && other.conn_id != ctx.conn.id()
        && other.identity != identity.sub
    {
        return Err(RpcError::conflict(format!(
            "agent {agent_id} is registered by another identity"
        )));
    }
    let mine = ctx.app.agents.of_conn(ctx.conn.id());
    if !mine.iter().any(|a| a.agent_id == agent_id) && mine.len() >= MAX_AGENTS_PER_CONN {
        return Err(RpcError::limit(
            "agents per connection",
            MAX_AGENTS_PER_CONN,
        ));
    }
    let now = now_ms();
    let mut entry = AgentEntry {
        name: p.name.unwrap_or_else(|| agent_id.clone()),
        kind: p.kind.unwrap_or_else(|| "agent".into()),
        agent_id: agent_id.clone(),
        capabilities: p.capabilities,
        tools: p.tools,
        models: p.models,
        methods: p.methods,
        max_concurrency: p.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        status: p.status.unwrap_or_else(|| "idle".into()),
        online: true,
        conn_id: ctx.conn.id().to_owned(),
        instance_id: ctx.app.instance_id.clone(),
        generation: ctx.app.generation,
        identity: identity.sub.clone(),
        load: 0,
        registered_at: existing
            .as_ref()
            .filter(|e| e.conn_id == ctx.conn.id())
            .map_or(now, |e| e.registered_at),
        updated_at: now,
        defined: None,
    };
    let offer = entry.clone();
    agent_defs::admit(ctx.app, &mut entry).await?;
    // An explicit registration replaces the implicit one from `caps`.
    if agent_id != ctx.conn.id() && ctx.app.agents.remove(ctx.conn.id()).is_some() {
        ctx.app.agent_store().remove_agent(ctx.conn.id()).await?;
    }
    let entry = ctx.app.agents.insert(entry);
    ctx.app.registry.forget();
    ctx.app.agents.set_offer(&agent_id, offer);
    ctx.app.agent_store().put_agent(&entry).await?;
    agent_defs::recheck(ctx.app, &agent_id).await;
    tracing::info!(agent = %agent_id, conn = %ctx.conn.id(), "agent registered");
    Ok(serde_json::to_value(&entry).unwrap_or_default())
}

/// Register a node's `connect.caps` under its connection id.
pub async fn register_caps(app: &App, conn: &ConnHandle) {
    let (caps, identity, name) = {
        let state = conn.state();
        let name = state
            .client
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        (state.caps.clone(), state.identity.clone(), name)
    };
    let Some(identity) = identity.filter(|i| i.role == Role::Node) else {
        return;
    };
    if caps.is_empty() {
        return;
    }
    let now = now_ms();
    let mut entry = AgentEntry {
        agent_id: conn.id().to_owned(),
        name: name.unwrap_or_else(|| conn.id().to_owned()),
        kind: "node".into(),
        capabilities: caps,
        tools: vec![],
        models: vec![],
        methods: vec![],
        max_concurrency: DEFAULT_CONCURRENCY,
        status: "idle".into(),
        online: true,
        conn_id: conn.id().to_owned(),
        instance_id: app.instance_id.clone(),
        generation: app.generation,
        identity: identity.sub.clone(),
        load: 0,
        registered_at: now,
        updated_at: now,
        defined: None,
    };
    let offer = entry.clone();
    if let Err(e) = agent_defs::admit(app, &mut entry).await {
        tracing::info!(conn = %conn.id(), reason = %e.message, "node capabilities refused by its definition");
        return;
    }
    let entry = app.agents.insert(entry);
    app.registry.forget();
    app.agents.set_offer(conn.id(), offer);
    if let Err(e) = app.agent_store().put_agent(&entry).await {
        tracing::warn!(error = %e, "registering node capabilities failed");
    }
    agent_defs::recheck(app, conn.id()).await;
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusParams {
    /// Which of this connection's agents (needed when it registered several).
    agent_id: Option<String>,
    /// Free-form status: `idle`, `busy`, …
    status: String,
}

pub async fn status(ctx: &Ctx<'_>, p: StatusParams) -> Result<Value, RpcError> {
    check_names("status", std::slice::from_ref(&p.status))?;
    let agent_id = own_agent(ctx, p.agent_id.as_deref())?;
    ctx.app
        .agents
        .update(&agent_id, |a| a.status = p.status.clone());
    ctx.app.agents.sync(&agent_id).await;
    Ok(json!({ "agentId": agent_id, "status": p.status }))
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnregisterParams {
    /// Which of this connection's agents (needed when it registered several).
    agent_id: Option<String>,
}

pub async fn unregister(ctx: &Ctx<'_>, p: UnregisterParams) -> Result<Value, RpcError> {
    let agent_id = own_agent(ctx, p.agent_id.as_deref())?;
    ctx.app.agents.remove(&agent_id);
    ctx.app.registry.forget();
    ctx.app.agent_store().remove_agent(&agent_id).await?;
    Ok(json!({ "agentId": agent_id, "unregistered": true }))
}

/// The agent id a node means: the given one (registered on this
/// connection), or its only registration.
fn own_agent(ctx: &Ctx<'_>, agent_id: Option<&str>) -> Result<String, RpcError> {
    let mine = ctx.app.agents.of_conn(ctx.conn.id());
    match agent_id {
        Some(id) if mine.iter().any(|a| a.agent_id == id) => Ok(id.to_owned()),
        Some(id) => Err(RpcError::not_found("agent", id)),
        None if mine.len() == 1 => Ok(mine[0].agent_id.clone()),
        None if mine.is_empty() => Err(RpcError::not_found("agent", ctx.conn.id())),
        None => Err(RpcError::invalid_params(
            "agentId",
            "this connection registered several agents: name one",
        )),
    }
}

// ----------------------------------------------------------------- listing

#[derive(Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// Only agents with this capability.
    capability: Option<String>,
    /// Only agents of this type.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Only agents online (true) or offline (false).
    online: Option<bool>,
}

pub async fn list(ctx: &Ctx<'_>, p: ListParams) -> Result<Value, RpcError> {
    let agents: Vec<AgentEntry> = ctx
        .app
        .agent_store()
        .agents()
        .await?
        .into_iter()
        .filter(|a| {
            p.capability
                .as_ref()
                .is_none_or(|c| a.capabilities.contains(c))
                && p.kind.as_ref().is_none_or(|k| &a.kind == k)
                && p.online.is_none_or(|o| a.online == o)
        })
        .collect();
    // Each entry with its definition; defined ids never registered apart.
    let (agents, defined) = agent_defs::with_definitions(ctx.app, agents).await?;
    let defined: Vec<_> = defined
        .into_iter()
        .filter(|d| {
            p.online != Some(true)
                && p.kind.as_ref().is_none_or(|k| d.kind.as_ref() == Some(k))
                && p.capability
                    .as_ref()
                    .is_none_or(|c| d.capabilities.iter().flatten().any(|x| x == c))
        })
        .collect();
    Ok(json!({ "count": agents.len(), "agents": agents, "defined": defined }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetParams {
    /// The agent's id (`nodeId` is accepted in its place).
    #[serde(alias = "nodeId")]
    agent_id: String,
}

pub async fn get(ctx: &Ctx<'_>, p: GetParams) -> Result<Value, RpcError> {
    let found: Vec<AgentEntry> = ctx
        .app
        .agent_store()
        .agents()
        .await?
        .into_iter()
        .filter(|a| a.agent_id == p.agent_id)
        .collect();
    // The entry with its definition, or a defined id never registered.
    let (mut agents, defined) = agent_defs::with_definitions(ctx.app, found).await?;
    match (
        agents.pop(),
        defined.into_iter().find(|d| d.agent_id == p.agent_id),
    ) {
        (Some(entry), _) => Ok(entry),
        (None, Some(def)) => Ok(json!({
            "agentId": p.agent_id, "online": false, "status": "offline", "definition": def,
        })),
        (None, None) => Err(RpcError::not_found("agent", &p.agent_id)),
    }
}

/// Tools of every online agent, each with the agents offering it.
pub async fn tools(ctx: &Ctx<'_>) -> Result<Value, RpcError> {
    let mut tools: Vec<Value> = Vec::new();
    for agent in ctx
        .app
        .agent_store()
        .agents()
        .await?
        .into_iter()
        .filter(|a| a.online)
    {
        for tool in agent.tools {
            match tools.iter_mut().find(|t| t["name"] == tool.name.as_str()) {
                Some(t) => {
                    if let Some(list) = t["agents"].as_array_mut() {
                        list.push(json!(agent.agent_id));
                    }
                }
                None => tools.push(json!({
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                    "agents": [agent.agent_id],
                })),
            }
        }
    }
    tools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(json!({ "count": tools.len(), "tools": tools }))
}

pub async fn models_list(ctx: &Ctx<'_>) -> Result<Value, RpcError> {
    let models: Vec<Value> = models(ctx.app)
        .await?
        .into_iter()
        .map(|(id, agents)| {
            json!({ "id": id, "agents": agents.iter().map(|a| &a.agent_id).collect::<Vec<_>>() })
        })
        .collect();
    Ok(json!({ "count": models.len(), "models": models }))
}

// ------------------------------------------------------------------ invoke

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvokeParams {
    /// The agent (or node connection) to call; or `capability`.
    node_id: Option<String>,
    /// Any online agent with this capability; or `nodeId`.
    capability: Option<String>,
    /// What the node is asked to do.
    command: String,
    /// Passed to the node as is.
    #[serde(default)]
    params: Value,
    /// How long to wait for the answer (default `limits.request_timeout_ms`).
    timeout_ms: Option<u64>,
    /// How to pick among several agents: `least_loaded` (default),
    /// `round_robin`, `random` or `first`.
    policy: Option<String>,
    /// A retry with the same key (within 5 minutes, on any instance) gets
    /// the first call's answer instead of running again.
    idempotency_key: Option<String>,
    /// Names this call for `invoke.cancel` and progress notifications.
    invoke_id: Option<String>,
}

pub async fn invoke(ctx: &Ctx<'_>, p: InvokeParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let timeout = timeout(ctx.app, p.timeout_ms)?;
    let policy = Policy::named(p.policy.as_deref())?;
    let selector = Selector::by_id_or_capability(p.node_id.as_ref(), p.capability.as_ref())
        .ok_or_else(|| RpcError::invalid_params("nodeId", "nodeId or capability is required"))?;
    let caller = ctx.conn.identity();
    let request = InvokeRequest {
        caller: Caller::new(ctx, caller.as_deref()),
        command: &p.command,
        params: &p.params,
    };
    let request = &request;
    let invoke_id = p
        .invoke_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    idempotent::once(
        ctx.app,
        "node.invoke",
        &identity.sub,
        p.idempotency_key.as_deref(),
        timeout,
        || async {
            let (agent, result) = cancellable(ctx, &invoke_id, |progress| {
                call_agents(ctx.app, &selector, policy, move |_| {
                    CallSpec::new("invoke", request, timeout).with_progress(Some(progress.clone()))
                })
            })
            .await?;
            Ok(json!({
                "nodeId": agent.agent_id,
                "connId": agent.conn_id,
                "invokeId": invoke_id,
                "result": result,
            }))
        },
    )
    .await
}

/// Run a routed call that the caller can cancel with `invoke.cancel
/// {invokeId}` and that forwards `invoke.progress` to it.
///
/// The progress is forwarded by this task while it waits for the answer
/// (no task of its own per call): an update queued before the answer is
/// taken first, and whatever is still queued once the call is over is
/// sent before the answer is returned, so progress reaches the caller
/// before the answer it preceded.
async fn cancellable<F, Fut, T>(ctx: &Ctx<'_>, invoke_id: &str, call: F) -> Result<T, RpcError>
where
    F: FnOnce(mpsc::Sender<Value>) -> Fut,
    Fut: std::future::Future<Output = Result<T, RpcError>>,
{
    let token = tokio_util::sync::CancellationToken::new();
    {
        let mut state = ctx.conn.state();
        if state.invokes.contains_key(invoke_id) {
            return Err(RpcError::conflict(format!(
                "invokeId {invoke_id} is already in use"
            )));
        }
        state.invokes.insert(invoke_id.to_owned(), token.clone());
    }
    let (progress, mut updates) = mpsc::channel::<Value>(64);
    let forward = |data: Value| {
        ctx.conn.push(frame::notification(
            "invoke.progress",
            &json!({ "invokeId": invoke_id, "data": data }),
        ));
    };
    let call = call(progress);
    tokio::pin!(call);
    let mut open = true;
    let outcome = loop {
        tokio::select! {
            biased;
            update = updates.recv(), if open => match update {
                Some(data) => forward(data),
                None => open = false,
            },
            outcome = &mut call => break outcome,
            _ = token.cancelled() => break Err(RpcError::timeout("cancelled by the caller")
                .with_data(json!({ "cancelled": true, "invokeId": invoke_id }))),
        }
    };
    ctx.conn.state().invokes.remove(invoke_id);
    while let Ok(data) = updates.try_recv() {
        forward(data);
    }
    outcome
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelParams {
    /// The `invokeId` of a `node.invoke` this connection made.
    invoke_id: String,
}

/// `invoke.cancel {invokeId}` from the caller.
pub fn cancel(ctx: &Ctx<'_>, p: CancelParams) -> Result<Value, RpcError> {
    let token = ctx.conn.state().invokes.get(&p.invoke_id).cloned();
    match token {
        Some(token) => {
            token.cancel();
            Ok(json!({ "cancelled": true, "invokeId": p.invoke_id }))
        }
        None => Err(RpcError::not_found("invocation", &p.invoke_id)),
    }
}

#[derive(Deserialize, JsonSchema)]
pub struct ProgressParams {
    /// The id (`srv-N`) of the request being worked on.
    id: String,
    /// Reaches the caller as is.
    #[serde(default)]
    data: Value,
}

/// `invoke.progress {id: "srv-N", data}` from a node working on a request.
pub fn progress(ctx: &Ctx<'_>, p: ProgressParams) -> Result<Value, RpcError> {
    if ctx.conn.progress(&p.id, p.data) {
        Ok(json!({ "forwarded": true }))
    } else {
        Err(RpcError::not_found("request", &p.id))
    }
}

/// A method that is not built in: route it to a node that serves it.
pub async fn provide(ctx: &Ctx<'_>, method: &str, params: Value) -> Result<Value, RpcError> {
    let selector = Selector {
        method: Some(method.to_owned()),
        ..Default::default()
    };
    let found = candidates(ctx.app, &selector).await?;
    if found.is_empty() {
        return Err(RpcError::method_not_found(method));
    }
    let timeout = Duration::from_millis(ctx.app.live().limits.request_timeout_ms);
    let caller = ctx.conn.identity();
    let request = InvokeRequest {
        caller: Caller::new(ctx, caller.as_deref()),
        command: method,
        params: &params,
    };
    let (_, result) = call_found(ctx.app, found, Policy::default(), |_| {
        CallSpec::new("invoke", &request, timeout)
    })
    .await?;
    Ok(result)
}
