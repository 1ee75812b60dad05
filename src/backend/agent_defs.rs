//! Agent definitions: operator-managed records that say what an agent id
//! may be — its name and type, the capabilities, tools and models it may
//! offer, which of its tools need a human's approval, its concurrency cap,
//! routing weight and whether it may register at all.
//!
//! Each definition carries a version; every write names the version it
//! expects to replace (0: none, a creation), and a stale one is refused
//! with Conflict, atomically across instances. How a definition limits a
//! registering node is `crate::agents::defs`' business; who may write one
//! is `services::agent_defs`'.

use super::{BackendError, BackendResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Definitions kept at most.
pub const MAX_DEFINITIONS: usize = 1000;

/// One agent definition (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentDefinition {
    /// The agent id a node registers under.
    pub agent_id: String,
    /// Display name given to the registered entry (the node's own if null).
    #[serde(default)]
    pub name: Option<String>,
    /// Type given to the registered entry (the node's own if null).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Capabilities it may offer (null: any). A node that offers none gets
    /// these.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// Names of the tools it may offer (null: any).
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// Models it may serve (null: any). A node that serves none gets these.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Tools whose calls wait for a human's approval first.
    #[serde(default)]
    pub approval_required: Vec<String>,
    /// Cap of the node's `maxConcurrency` (null: the node's own).
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Routing weight (1-1000, default 1): among equally loaded agents the
    /// heavier is tried first.
    #[serde(default = "one")]
    pub weight: u32,
    /// A disabled definition refuses registration.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// 1 on creation, one more on every update.
    #[serde(default)]
    pub version: u64,
    /// `sub` of the identity that wrote this version.
    #[serde(default)]
    pub updated_by: String,
    #[serde(default)]
    pub created_at: u64,
    #[serde(default)]
    pub updated_at: u64,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// The stored agent definitions.
#[async_trait]
pub trait AgentDefStore: Send + Sync + 'static {
    /// Store `def` as version `base + 1` if the stored version is `base`
    /// (0: it must not exist yet). Conflict when the stored version differs
    /// (or, for a creation, the id exists), NotFound when `base` > 0 and
    /// there is none, Limit past [`MAX_DEFINITIONS`]. Returns what was
    /// stored.
    async fn put_definition(
        &self,
        def: &AgentDefinition,
        base: u64,
    ) -> BackendResult<AgentDefinition>;
    async fn definition(&self, agent_id: &str) -> BackendResult<Option<AgentDefinition>>;
    /// Every definition, by agent id.
    async fn definitions(&self) -> BackendResult<Vec<AgentDefinition>>;
    /// Remove a definition; with `base`, only if that is its version
    /// (Conflict otherwise). Returns the removed definition; NotFound when
    /// there is none.
    async fn delete_definition(
        &self,
        agent_id: &str,
        base: Option<u64>,
    ) -> BackendResult<AgentDefinition>;
}

/// The Conflict answered to a write naming a stale version.
pub(super) fn stale(agent_id: &str, stored: u64, base: u64) -> BackendError {
    if base == 0 {
        BackendError::Conflict(format!("agent definition {agent_id} exists"))
    } else {
        BackendError::Conflict(format!(
            "agent definition {agent_id} is at version {stored}, not {base}"
        ))
    }
}

/// `def` as stored over version `base`.
pub(super) fn next_version(def: &AgentDefinition, base: u64) -> AgentDefinition {
    AgentDefinition {
        version: base + 1,
        ..def.clone()
    }
}

/// A registry entry with its id's definition beside it (`agents.list`,
/// `agents.get`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefinedAgent {
    #[serde(flatten)]
    pub entry: super::AgentEntry,
    /// Its definition; null when its id has none.
    pub definition: Option<AgentDefinition>,
}
