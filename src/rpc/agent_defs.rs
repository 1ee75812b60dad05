//! Agent definitions and the cluster-wide agent views: `agents.create`,
//! `agents.update`, `agents.delete` (admin), `agents.broadcast` (write),
//! `agents.stats` (read). Handlers decode params and shape JSON; the rules
//! are `services::agent_defs`'.

use super::Ctx;
use crate::backend::AgentDefinition;
use crate::protocol::RpcError;
use crate::services::agent_defs::{self, Audience};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateParams {
    /// The agent id it binds (1-128 bytes).
    agent_id: String,
    /// Display name given to the registered entry.
    name: Option<String>,
    /// Type given to the registered entry.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Capabilities it may offer (absent: any); a node offering none gets
    /// these.
    capabilities: Option<Vec<String>>,
    /// Names of the tools it may offer (absent: any).
    tools: Option<Vec<String>>,
    /// Models it may serve (absent: any); a node serving none gets these.
    models: Option<Vec<String>>,
    /// Tools whose calls wait for a human's approval (of `tools`, when
    /// given).
    #[serde(default)]
    approval_required: Vec<String>,
    /// Cap of the node's `maxConcurrency`.
    max_concurrency: Option<u32>,
    /// Routing weight, 1-1000 (default 1).
    weight: Option<u32>,
    /// A disabled definition refuses registration (default true).
    enabled: Option<bool>,
}

pub async fn create(ctx: &Ctx<'_>, p: CreateParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let def = AgentDefinition {
        agent_id: p.agent_id,
        name: p.name,
        kind: p.kind,
        capabilities: p.capabilities,
        tools: p.tools,
        models: p.models,
        approval_required: p.approval_required,
        max_concurrency: p.max_concurrency,
        weight: p.weight.unwrap_or(1),
        enabled: p.enabled.unwrap_or(true),
        version: 0,
        updated_by: String::new(),
        created_at: 0,
        updated_at: 0,
    };
    let written = agent_defs::create(ctx.app, def, &identity.sub).await?;
    Ok(serde_json::to_value(written).unwrap_or_default())
}

/// A field that may be left out (unchanged), set, or set to null (cleared).
fn patch<T: Clone>(field: &Option<Option<T>>, into: &mut Option<T>) {
    if let Some(value) = field {
        *into = value.clone();
    }
}

fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateParams {
    agent_id: String,
    /// The version this change is based on: -32007 when it is no longer
    /// the stored one. Absent: whatever is stored.
    base_version: Option<u64>,
    /// Fields left out stay as they are; null clears a list or cap (any).
    #[serde(default, deserialize_with = "nullable")]
    name: Option<Option<String>>,
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    kind: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    capabilities: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    tools: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    models: Option<Option<Vec<String>>>,
    approval_required: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    max_concurrency: Option<Option<u32>>,
    weight: Option<u32>,
    enabled: Option<bool>,
}

pub async fn update(ctx: &Ctx<'_>, p: UpdateParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let written = agent_defs::update(ctx.app, &p.agent_id, p.base_version, &identity.sub, |def| {
        patch(&p.name, &mut def.name);
        patch(&p.kind, &mut def.kind);
        patch(&p.capabilities, &mut def.capabilities);
        patch(&p.tools, &mut def.tools);
        patch(&p.models, &mut def.models);
        patch(&p.max_concurrency, &mut def.max_concurrency);
        if let Some(list) = &p.approval_required {
            def.approval_required = list.clone();
        }
        if let Some(weight) = p.weight {
            def.weight = weight;
        }
        if let Some(enabled) = p.enabled {
            def.enabled = enabled;
        }
    })
    .await?;
    Ok(serde_json::to_value(written).unwrap_or_default())
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteParams {
    agent_id: String,
    /// Delete only at this version (-32007 otherwise).
    base_version: Option<u64>,
}

pub async fn delete(ctx: &Ctx<'_>, p: DeleteParams) -> Result<Value, RpcError> {
    let removed = agent_defs::delete(ctx.app, &p.agent_id, p.base_version).await?;
    Ok(json!({ "agentId": p.agent_id, "deleted": true, "version": removed.version }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BroadcastParams {
    /// Only agents with this capability.
    capability: Option<String>,
    /// Only agents of this type.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// The event's name (1-128 bytes).
    event: String,
    /// Passed to the agents as is (at most 64 KiB of JSON).
    #[serde(default)]
    data: Value,
}

pub async fn broadcast(ctx: &Ctx<'_>, p: BroadcastParams) -> Result<Value, RpcError> {
    if p.event.is_empty() || p.event.len() > 128 || p.event.chars().any(char::is_control) {
        return Err(RpcError::invalid_params("event", "1-128 bytes"));
    }
    let audience = Audience {
        capability: p.capability.as_deref(),
        kind: p.kind.as_deref(),
    };
    let sent = agent_defs::broadcast(ctx.app, audience, &p.event, &p.data).await?;
    Ok(json!({ "event": p.event, "sent": sent }))
}

pub async fn stats(ctx: &Ctx<'_>) -> Result<Value, RpcError> {
    agent_defs::stats(ctx.app).await
}
