//! Agent rules shared by every entry point: which online agents a call may
//! go to ([`Selector`]), sending a call to the best of them through the
//! relay by routing policy, the bounds of a call's timeout, the models
//! agents serve, and what a closing connection or a Redis restart does to
//! the agents registered here.
//!
//! `node.invoke`, `agent.run`, `chat.send`, `/tools/invoke` and `/v1/*`
//! all call agents through [`call_found`], so busy agents are skipped the
//! same way everywhere.

use crate::agents::runs::Target;
use crate::agents::select::{self, Policy};
use crate::app::App;
use crate::backend::AgentEntry;
use crate::conn::ConnHandle;
use crate::protocol::{RpcError, now_ms};
use crate::relay::{CallError, CallSpec};
use serde_json::{Value, json};
use std::time::Duration;

/// Longest accepted call timeout.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// Which agents a call may go to.
#[derive(Debug, Default, Clone)]
pub struct Selector {
    /// An agent id, or a node's connection id.
    pub id: Option<String>,
    pub capability: Option<String>,
    pub model: Option<String>,
    pub tool: Option<String>,
    pub method: Option<String>,
}

impl Selector {
    /// By agent (or connection) id if given, else by capability; `None`
    /// when neither is.
    pub fn by_id_or_capability(id: Option<&String>, capability: Option<&String>) -> Option<Self> {
        match (id, capability) {
            (Some(id), _) => Some(Self {
                id: Some(id.clone()),
                ..Default::default()
            }),
            (None, Some(capability)) => Some(Self {
                capability: Some(capability.clone()),
                ..Default::default()
            }),
            (None, None) => None,
        }
    }

    /// Whether agent `a` is online and fits every criterion given.
    pub fn matches(&self, a: &AgentEntry) -> bool {
        a.online
            && self
                .id
                .as_ref()
                .is_none_or(|id| &a.agent_id == id || &a.conn_id == id)
            && self
                .capability
                .as_ref()
                .is_none_or(|c| a.capabilities.contains(c))
            && self.model.as_ref().is_none_or(|m| a.models.contains(m))
            && self
                .tool
                .as_ref()
                .is_none_or(|t| a.tools.iter().any(|x| &x.name == t))
            && self.method.as_ref().is_none_or(|m| a.serves_method(m))
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (name, value) in [
            ("id", &self.id),
            ("capability", &self.capability),
            ("model", &self.model),
            ("tool", &self.tool),
            ("method", &self.method),
        ] {
            if let Some(v) = value {
                parts.push(format!("{name} {v}"));
            }
        }
        parts.join(", ")
    }
}

/// Online agents matching `selector`.
pub async fn candidates(app: &App, selector: &Selector) -> Result<Vec<AgentEntry>, RpcError> {
    Ok(matching(app, selector, true).await?.0)
}

/// Agents matching `selector`, from the registry's short-lived copy when
/// `cached` and it matches any (see `agents::view`), else from a fresh
/// read; and whether they came from the copy.
async fn matching(
    app: &App,
    selector: &Selector,
    cached: bool,
) -> Result<(Vec<AgentEntry>, bool), RpcError> {
    let pick = |all: &[AgentEntry]| -> Vec<AgentEntry> {
        all.iter()
            .filter(|a| selector.matches(a))
            .cloned()
            .collect()
    };
    if cached && let Some(copy) = app.registry.fresh() {
        let found = pick(&copy);
        if !found.is_empty() {
            return Ok((found, true));
        }
    }
    let all = app.registry.store(app.agent_store().agents().await?);
    Ok((pick(&all), false))
}

/// Online agents matching `selector`; -32005 when there are none.
pub async fn online(app: &App, selector: &Selector) -> Result<Vec<AgentEntry>, RpcError> {
    Ok(online_from(app, selector, true).await?.0)
}

async fn online_from(
    app: &App,
    selector: &Selector,
    cached: bool,
) -> Result<(Vec<AgentEntry>, bool), RpcError> {
    let (found, from_copy) = matching(app, selector, cached).await?;
    if found.is_empty() {
        return Err(RpcError::unavailable(format!(
            "no agent online for {}",
            selector.describe()
        )));
    }
    Ok((found, from_copy))
}

/// Send one call to the best matching agent (see [`call_found`]). Routed
/// on the registry's copy; when the agent picked from it is gone (nothing
/// was sent), routed once more on a fresh read.
pub async fn call_agents(
    app: &App,
    selector: &Selector,
    policy: Policy,
    spec: impl Fn(&AgentEntry) -> CallSpec<'static>,
) -> Result<(AgentEntry, Value), RpcError> {
    let (mut found, mut from_copy) = online_from(app, selector, true).await?;
    // Choosing by load needs the loads as they are now.
    if from_copy && found.len() > 1 && policy == Policy::LeastLoaded {
        (found, from_copy) = online_from(app, selector, false).await?;
    }
    match try_agents(app, found, policy, &spec).await {
        Err(Tried::Gone(_)) if from_copy => {
            app.registry.forget();
            let (found, _) = online_from(app, selector, false).await?;
            try_agents(app, found, policy, &spec)
                .await
                .map_err(RpcError::from)
        }
        outcome => outcome.map_err(RpcError::from),
    }
}

/// Send one call to agents already looked up: in policy order until one
/// accepts. -32005 when there are none, -32002 when all are at their
/// `maxConcurrency`.
pub async fn call_found(
    app: &App,
    found: Vec<AgentEntry>,
    policy: Policy,
    spec: impl Fn(&AgentEntry) -> CallSpec<'static>,
) -> Result<(AgentEntry, Value), RpcError> {
    try_agents(app, found, policy, &spec)
        .await
        .map_err(RpcError::from)
}

/// Why no agent answered a call.
enum Tried {
    /// The first agent's connection was gone before anything was sent.
    Gone(String),
    Failed(RpcError),
}

impl From<Tried> for RpcError {
    fn from(tried: Tried) -> Self {
        match tried {
            Tried::Gone(why) => RpcError::unavailable(why),
            Tried::Failed(e) => e,
        }
    }
}

async fn try_agents(
    app: &App,
    found: Vec<AgentEntry>,
    policy: Policy,
    spec: &impl Fn(&AgentEntry) -> CallSpec<'static>,
) -> Result<(AgentEntry, Value), Tried> {
    if found.is_empty() {
        return Err(Tried::Failed(RpcError::unavailable("no agent online")));
    }
    let total = found.len();
    let mut approved = false;
    for agent in select::order(found, policy, &app.rotation) {
        let spec = spec(&agent);
        // A tool its definition gates waits for a human first.
        crate::services::agent_defs::gate(app, &agent, &spec, &mut approved)
            .await
            .map_err(Tried::Failed)?;
        match app.relay.call(&Target::from(&agent), spec).await {
            Err(CallError::Busy(_)) => continue,
            Err(CallError::Gone(why)) => return Err(Tried::Gone(why)),
            outcome => {
                return outcome
                    .map(|v| (agent, v))
                    .map_err(|e| Tried::Failed(e.into()));
            }
        }
    }
    Err(Tried::Failed(
        RpcError::limit("agents at maxConcurrency", total)
            .with_data(json!({ "busy": true, "candidates": total })),
    ))
}

/// Validate a caller-supplied timeout, with the configured default.
pub fn timeout(app: &App, timeout_ms: Option<u64>) -> Result<Duration, RpcError> {
    let ms = timeout_ms.unwrap_or(app.live().limits.request_timeout_ms);
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        return Err(RpcError::invalid_params(
            "timeoutMs",
            format!("between 1 and {MAX_TIMEOUT_MS}"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// The connection closed: its agents go offline.
pub async fn on_disconnect(app: &App, conn: &ConnHandle) {
    let mine = app.agents.of_conn(conn.id());
    if mine.is_empty() {
        return;
    }
    // Entries taken over by a reconnect elsewhere meanwhile are left alone.
    let current = app.agent_store().agents().await.unwrap_or_default();
    for mut entry in mine {
        app.agents.remove(&entry.agent_id);
        app.registry.forget();
        let taken_over = current
            .iter()
            .any(|c| c.agent_id == entry.agent_id && c.conn_id != conn.id());
        if taken_over {
            continue;
        }
        entry.online = false;
        entry.load = 0;
        entry.status = "offline".into();
        entry.updated_at = now_ms();
        if let Err(e) = app.agent_store().put_agent(&entry).await {
            tracing::warn!(agent = %entry.agent_id, error = %e, "marking an agent offline failed");
        }
    }
}

/// Write back every entry held here (after Redis lost its state).
pub async fn reassert(app: &App) {
    for entry in app.agents.all() {
        app.agents.sync(&entry.agent_id).await;
    }
}

/// Models served by online agents, each with the agents serving it.
pub async fn models(app: &App) -> Result<Vec<(String, Vec<AgentEntry>)>, RpcError> {
    let mut models: Vec<(String, Vec<AgentEntry>)> = Vec::new();
    for agent in app
        .agent_store()
        .agents()
        .await?
        .into_iter()
        .filter(|a| a.online)
    {
        for model in &agent.models {
            match models.iter_mut().find(|(m, _)| m == model) {
                Some((_, list)) => list.push(agent.clone()),
                None => models.push((model.clone(), vec![agent.clone()])),
            }
        }
    }
    models.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(models)
}
