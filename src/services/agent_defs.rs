//! Agent definition rules shared by every entry point: validating and
//! writing definitions (versioned, a stale `baseVersion` is a conflict),
//! telling the instance holding a live agent that its definition changed,
//! holding a registering node to its definition, gating the tools a
//! definition marks approval-required, and the cluster-wide views
//! (definitions beside the registry, `agents.stats`, `agents.broadcast`).
//!
//! A write goes: validate → `AgentDefStore::put_definition` (atomic version
//! check) → for every online registry entry under that id, a relay message
//! `Redefine` to the instance holding it → that instance re-limits the
//! entry (`crate::agents::defs`) and writes it back to the registry.
//!
//! An approval-required tool: before the call is relayed, the gateway opens
//! an approval on the caller's behalf (operators on every instance receive
//! `approval.requested`), waits for the decision up to the call's timeout,
//! and relays the call only once it is approved; a denial answers -32003,
//! an expiry or timeout -32006, both with `data.approvalId`.

use crate::agents::defs::{self, Breach, Redefinition};
use crate::app::App;
use crate::backend::{
    AgentDefinition, AgentEntry, ApprovalRecord, ApprovalStatus, DefinedAgent, Envelope,
};
use crate::protocol::{RpcError, frame, now_ms};
use crate::relay::CallSpec;
use crate::services::approvals;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Bounds of a definition.
const MAX_NAMES: usize = 256;
const MAX_NAME_LEN: usize = 128;
const MAX_WEIGHT: u32 = 1000;
/// Tries of an update without `baseVersion` that races another writer.
const UPDATE_TRIES: usize = 5;
/// How often a gated call looks at its approval.
const APPROVAL_POLL: Duration = Duration::from_millis(50);
/// Largest `data` of a broadcast (bytes of JSON).
const MAX_BROADCAST: usize = 64 * 1024;

fn check_name(field: &str, name: &str) -> Result<(), RpcError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(RpcError::invalid_params(
            field,
            format!("1-{MAX_NAME_LEN} bytes, no control characters"),
        ));
    }
    Ok(())
}

fn check_names(field: &str, names: &[String]) -> Result<(), RpcError> {
    if names.len() > MAX_NAMES {
        return Err(RpcError::invalid_params(
            field,
            format!("at most {MAX_NAMES} names"),
        ));
    }
    for (i, name) in names.iter().enumerate() {
        check_name(&format!("{field}[{i}]"), name)?;
    }
    Ok(())
}

/// -32602 naming the field of `def` that cannot be used.
pub fn validate(def: &AgentDefinition) -> Result<(), RpcError> {
    check_name("agentId", &def.agent_id)?;
    if let Some(name) = &def.name {
        check_name("name", name)?;
    }
    if let Some(kind) = &def.kind {
        check_name("type", kind)?;
    }
    for (field, list) in [
        ("capabilities", &def.capabilities),
        ("tools", &def.tools),
        ("models", &def.models),
    ] {
        if let Some(list) = list {
            check_names(field, list)?;
        }
    }
    check_names("approvalRequired", &def.approval_required)?;
    if let Some(tools) = &def.tools
        && let Some(t) = def.approval_required.iter().find(|t| !tools.contains(t))
    {
        return Err(RpcError::invalid_params(
            "approvalRequired",
            format!("{t} is not one of the definition's tools"),
        ));
    }
    if def.max_concurrency == Some(0) {
        return Err(RpcError::invalid_params("maxConcurrency", "at least 1"));
    }
    if def.weight == 0 || def.weight > MAX_WEIGHT {
        return Err(RpcError::invalid_params(
            "weight",
            format!("between 1 and {MAX_WEIGHT}"),
        ));
    }
    Ok(())
}

/// Store a new definition (version 1); -32007 when the id has one.
pub async fn create(
    app: &App,
    mut def: AgentDefinition,
    by: &str,
) -> Result<AgentDefinition, RpcError> {
    validate(&def)?;
    let now = now_ms();
    (def.created_at, def.updated_at, def.updated_by) = (now, now, by.to_owned());
    let written = app
        .agent_def_store()
        .put_definition(&def, 0)
        .await
        .map_err(|e| e.into_rpc(&def.agent_id))?;
    announce(app, &written.agent_id, Some(written.clone())).await;
    Ok(written)
}

/// Change a definition with `change`; over `base` when given (-32007 when
/// stale), else over whatever is stored (retrying a racing writer).
pub async fn update(
    app: &App,
    agent_id: &str,
    base: Option<u64>,
    by: &str,
    change: impl Fn(&mut AgentDefinition),
) -> Result<AgentDefinition, RpcError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let current = find(app, agent_id).await?;
        let over = base.unwrap_or(current.version);
        let mut def = current.clone();
        change(&mut def);
        def.agent_id = current.agent_id.clone();
        (def.created_at, def.updated_at) = (current.created_at, now_ms());
        def.updated_by = by.to_owned();
        validate(&def)?;
        match app.agent_def_store().put_definition(&def, over).await {
            Ok(written) => {
                announce(app, agent_id, Some(written.clone())).await;
                return Ok(written);
            }
            Err(crate::backend::BackendError::Conflict(_))
                if base.is_none() && tries < UPDATE_TRIES => {}
            Err(e) => return Err(e.into_rpc(agent_id)),
        }
    }
}

/// Remove a definition (with `base`, only at that version).
pub async fn delete(
    app: &App,
    agent_id: &str,
    base: Option<u64>,
) -> Result<AgentDefinition, RpcError> {
    let removed = app
        .agent_def_store()
        .delete_definition(agent_id, base)
        .await
        .map_err(|e| e.into_rpc(agent_id))?;
    announce(app, agent_id, None).await;
    Ok(removed)
}

/// The definition of `agent_id`, or -32001.
pub async fn find(app: &App, agent_id: &str) -> Result<AgentDefinition, RpcError> {
    app.agent_def_store()
        .definition(agent_id)
        .await?
        .ok_or_else(|| RpcError::not_found("agent definition", agent_id))
}

/// Tell every instance holding a live agent `agent_id` its definition
/// changed (`None`: deleted).
async fn announce(app: &App, agent_id: &str, definition: Option<AgentDefinition>) {
    let holders: BTreeSet<String> = match app.agent_store().agents().await {
        Ok(all) => all
            .into_iter()
            .filter(|a| a.online && a.agent_id == agent_id)
            .map(|a| a.instance_id)
            .collect(),
        Err(e) => {
            tracing::warn!(agent = %agent_id, error = %e, "registry unavailable: definition change not announced");
            return;
        }
    };
    for instance in holders {
        let change = Redefinition {
            agent_id: agent_id.to_owned(),
            definition: definition.clone(),
            required: app.config.agents.require_definition,
        };
        app.relay.redefine(&instance, change).await;
    }
}

/// `e` with `extra` merged into its `data` (which keeps its `reason`).
fn more_data(mut e: RpcError, extra: Value) -> RpcError {
    if let (Some(Value::Object(data)), Value::Object(extra)) = (e.data.as_mut(), extra) {
        data.extend(extra);
    }
    e
}

/// The client-facing error of a refused registration.
fn refused(agent_id: &str, breach: Breach) -> RpcError {
    let data = match &breach {
        Breach::NotAllowed(field, name, _) => {
            json!({ "agentId": agent_id, "field": field, "name": name })
        }
        _ => json!({ "agentId": agent_id }),
    };
    more_data(RpcError::forbidden(breach.to_string()), data)
}

/// Hold a registering `entry` to its id's definition (-32003 when the
/// definition refuses it, or when one is required and there is none).
pub async fn admit(app: &App, entry: &mut AgentEntry) -> Result<(), RpcError> {
    match app.agent_def_store().definition(&entry.agent_id).await? {
        Some(def) => defs::admit(entry, &def).map_err(|b| refused(&entry.agent_id, b)),
        None if app.config.agents.require_definition => Err(refused(
            &entry.agent_id,
            Breach::Undefined(entry.agent_id.clone()),
        )),
        None => Ok(()),
    }
}

/// After a registration was written: a definition written meanwhile (it
/// could not be announced to an entry not yet in the registry) is applied
/// now.
pub async fn recheck(app: &App, agent_id: &str) {
    let Some(applied) = app.agents.get(agent_id) else {
        return;
    };
    let Ok(current) = app.agent_def_store().definition(agent_id).await else {
        return;
    };
    let applied_version = applied.defined.as_ref().map(|d| d.version);
    if applied_version != current.as_ref().map(|d| d.version) {
        let change = Redefinition {
            agent_id: agent_id.to_owned(),
            definition: current,
            required: app.config.agents.require_definition,
        };
        app.agents.redefine_later(change, app.hub.clone());
    }
}

/// A call about to be relayed to `agent`: when it invokes a tool the
/// agent's definition marks approval-required, wait for an approval opened
/// on the caller's behalf (see the module docs). `approved` remembers a
/// granted approval for the next candidates of the same call.
pub async fn gate(
    app: &App,
    agent: &AgentEntry,
    spec: &CallSpec<'_>,
    approved: &mut bool,
) -> Result<(), RpcError> {
    if *approved || spec.method != "invoke" || !agent.gates_tools() {
        return Ok(());
    }
    // Read back only for an agent that gates tools.
    let params: Value = serde_json::from_str(spec.params.get()).unwrap_or_default();
    let Some(tool) = params["command"].as_str() else {
        return Ok(());
    };
    if !agent.needs_approval(tool) {
        return Ok(());
    }
    let caller = &params["caller"];
    let requester = caller["identity"]
        .as_str()
        .unwrap_or("anonymous")
        .to_owned();
    let now = now_ms();
    let record = ApprovalRecord {
        approval_id: uuid::Uuid::new_v4().simple().to_string(),
        session_id: None,
        tool: tool.to_owned(),
        args: params["params"].clone(),
        summary: format!("{requester} calls tool {tool} of agent {}", agent.agent_id),
        requester_conn: caller["connId"].as_str().unwrap_or_default().to_owned(),
        requester,
        status: ApprovalStatus::Pending,
        decided_by: None,
        note: None,
        created_at: now,
        expires_at: now + spec.timeout.as_millis() as u64,
        resolved_at: None,
    };
    let id = record.approval_id.clone();
    approvals::open(app, &record).await?;
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let data = |status: &str| json!({ "approvalId": id, "tool": tool, "status": status });
    match approvals::decided_by(app, &id, deadline, APPROVAL_POLL).await? {
        Some(r) if r.status == ApprovalStatus::Approved => {
            *approved = true;
            Ok(())
        }
        Some(r) if r.status == ApprovalStatus::Denied => Err(more_data(
            RpcError::forbidden(format!("the call to tool {tool} was denied")),
            data("denied"),
        )),
        _ => Err(more_data(
            RpcError::timeout(format!("the call to tool {tool} was not approved in time")),
            data("expired"),
        )),
    }
}

/// The registry `entries` with each one's definition beside it
/// (`definition`, null when undefined), and the definitions of ids with no
/// entry at all.
pub async fn with_definitions(
    app: &App,
    entries: Vec<AgentEntry>,
) -> Result<(Vec<Value>, Vec<AgentDefinition>), RpcError> {
    let mut defs: BTreeMap<String, AgentDefinition> = app
        .agent_def_store()
        .definitions()
        .await?
        .into_iter()
        .map(|d| (d.agent_id.clone(), d))
        .collect();
    let annotated = entries
        .into_iter()
        .map(|entry| {
            let definition = defs.remove(&entry.agent_id);
            serde_json::to_value(DefinedAgent { entry, definition }).unwrap_or_default()
        })
        .collect();
    Ok((annotated, defs.into_values().collect()))
}

/// What a broadcast targets.
pub struct Audience<'a> {
    pub capability: Option<&'a str>,
    pub kind: Option<&'a str>,
}

/// Send `agents.broadcast {event, data, agentId}` to every online agent
/// matching `audience`, on whichever instance it is; how many were sent it.
pub async fn broadcast(
    app: &App,
    audience: Audience<'_>,
    event: &str,
    data: &Value,
) -> Result<usize, RpcError> {
    if serde_json::to_string(data).map_or(usize::MAX, |s| s.len()) > MAX_BROADCAST {
        return Err(RpcError::invalid_params(
            "data",
            format!("at most {MAX_BROADCAST} bytes"),
        ));
    }
    let targets: Vec<AgentEntry> = app
        .agent_store()
        .agents()
        .await?
        .into_iter()
        .filter(|a| {
            a.online
                && audience
                    .capability
                    .is_none_or(|c| a.capabilities.iter().any(|x| x == c))
                && audience.kind.is_none_or(|k| a.kind == k)
        })
        .collect();
    let mut sent = 0;
    for agent in targets {
        let frame = frame::notification(
            "agents.broadcast",
            &json!({ "event": event, "data": data, "agentId": agent.agent_id }),
        );
        let envelope = Envelope::Conn {
            conn_id: agent.conn_id.clone(),
            frame,
        };
        if app.bus().send_to_conn(envelope).await? {
            sent += 1;
        }
    }
    Ok(sent)
}

fn bump(counts: &mut Map<String, Value>, key: &str, online: bool) {
    let slot = counts
        .entry(key.to_owned())
        .or_insert_with(|| json!({ "online": 0, "offline": 0 }));
    let field = if online { "online" } else { "offline" };
    slot[field] = json!(slot[field].as_u64().unwrap_or(0) + 1);
}

/// Agents online and offline (defined but not connected), in total, by
/// type and by capability, cluster-wide.
pub async fn stats(app: &App) -> Result<Value, RpcError> {
    let online: Vec<AgentEntry> = app
        .agent_store()
        .agents()
        .await?
        .into_iter()
        .filter(|a| a.online)
        .collect();
    let defs = app.agent_def_store().definitions().await?;
    let (mut by_type, mut by_capability) = (Map::new(), Map::new());
    for agent in &online {
        bump(&mut by_type, &agent.kind, true);
        for c in &agent.capabilities {
            bump(&mut by_capability, c, true);
        }
    }
    let mut offline = 0;
    for def in defs
        .iter()
        .filter(|d| !online.iter().any(|a| a.agent_id == d.agent_id))
    {
        offline += 1;
        bump(&mut by_type, def.kind.as_deref().unwrap_or("agent"), false);
        for c in def.capabilities.iter().flatten() {
            bump(&mut by_capability, c, false);
        }
    }
    Ok(json!({
        "online": online.len(),
        "offline": offline,
        "defined": defs.len(),
        "byType": by_type,
        "byCapability": by_capability,
    }))
}
