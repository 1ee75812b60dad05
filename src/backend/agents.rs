//! The agent registry: every registered agent (or tool runner, or device),
//! what it can do and where it is connected.
//!
//! The entries are plain data; the rules that decide how they change (who
//! may register, which agent a call goes to) live in `rpc::agents` and
//! `crate::agents`. The instance holding an agent's connection is the only
//! writer of its entry while it lives; the reaper takes it offline once
//! that instance is dead.

use super::BackendResult;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tool an agent offers: a name, what it does and its JSON Schema
/// parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "empty_object")]
    pub parameters: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// One registered agent (or tool runner, or device): what it can do and
/// where it is connected.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentEntry {
    pub agent_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub capabilities: Vec<String>,
    pub tools: Vec<ToolSpec>,
    pub models: Vec<String>,
    /// Method patterns it serves (`skills.*`, `updates.check`).
    pub methods: Vec<String>,
    /// Calls it accepts at once, cluster-wide.
    pub max_concurrency: u32,
    /// Free-form status it reports (`idle`, `busy`, …).
    pub status: String,
    pub online: bool,
    /// The connection it registered on, and the instance holding it.
    pub conn_id: String,
    pub instance_id: String,
    pub generation: u64,
    /// `sub` of the identity that registered it.
    pub identity: String,
    /// Calls in flight right now (kept by the holding instance).
    pub load: u32,
    pub registered_at: u64,
    pub updated_at: u64,
    /// The definition it is held to, when its id has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defined: Option<DefinedLimits>,
}

/// What a registered agent took from its definition besides the lists and
/// caps applied to its entry (`crate::agents::defs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefinedLimits {
    /// The definition's version applied.
    pub version: u64,
    /// Tools whose calls wait for a human's approval.
    #[serde(default)]
    pub approval_required: Vec<String>,
    /// Routing weight.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl AgentEntry {
    /// Whether any of its tools waits for an approval.
    pub fn gates_tools(&self) -> bool {
        self.defined
            .as_ref()
            .is_some_and(|d| !d.approval_required.is_empty())
    }

    /// Whether calls to `tool` wait for an approval (its definition says so).
    pub fn needs_approval(&self, tool: &str) -> bool {
        self.defined
            .as_ref()
            .is_some_and(|d| d.approval_required.iter().any(|t| t == tool))
    }

    /// Routing weight (1 without a definition).
    pub fn weight(&self) -> u32 {
        self.defined.as_ref().map_or(1, |d| d.weight)
    }

    /// Whether it serves `method` through one of its `methods` patterns:
    /// an exact name, or a prefix ending in `*`.
    pub fn serves_method(&self, method: &str) -> bool {
        self.methods.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => method.starts_with(prefix),
            None => p == method,
        })
    }
}

/// The agent registry.
#[async_trait]
pub trait AgentStore: Send + Sync + 'static {
    /// Insert or replace a registry entry (keyed by `agent_id`).
    async fn put_agent(&self, entry: &AgentEntry) -> BackendResult<()>;
    async fn remove_agent(&self, agent_id: &str) -> BackendResult<()>;
    /// Every entry, online or not.
    async fn agents(&self) -> BackendResult<Vec<AgentEntry>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_patterns() {
        let entry = AgentEntry {
            agent_id: "a".into(),
            name: "a".into(),
            kind: "tool".into(),
            capabilities: vec![],
            tools: vec![],
            models: vec![],
            methods: vec!["skills.*".into(), "updates.check".into()],
            max_concurrency: 1,
            status: "idle".into(),
            online: true,
            conn_id: "c".into(),
            instance_id: "i".into(),
            generation: 1,
            identity: "s".into(),
            load: 0,
            registered_at: 0,
            updated_at: 0,
            defined: None,
        };
        assert!(entry.serves_method("skills.install"));
        assert!(entry.serves_method("updates.check"));
        assert!(!entry.serves_method("updates.apply"));
        assert!(!entry.serves_method("skill"));
    }
}
