//! Records of the agent layer kept in the backend: the agent registry,
//! agent runs, approvals and idempotency markers.
//!
//! These are plain data; the rules that decide how they change (who may
//! register, which agent a call goes to, who resolves an approval) live in
//! `rpc::agents`, `rpc::runs` and `rpc::approvals`. The backend only keeps
//! them and makes the check-and-set steps atomic across instances.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tool an agent offers: a name, what it does and its JSON Schema
/// parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
}

impl AgentEntry {
    /// Whether it serves `method` through one of its `methods` patterns:
    /// an exact name, or a prefix ending in `*`.
    pub fn serves_method(&self, method: &str) -> bool {
        self.methods.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => method.starts_with(prefix),
            None => p == method,
        })
    }
}

/// The state of an agent run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Completed,
    Error,
    Cancelled,
}

/// One `agent.run`: which agent works on which session for whom.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub run_id: String,
    pub session_id: String,
    pub agent_id: String,
    /// The instance holding the agent's connection, and its generation.
    pub instance_id: String,
    pub generation: u64,
    /// `sub` of the caller (the concurrency limit counts per caller).
    pub caller: String,
    pub task: String,
    pub status: RunStatus,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<Value>,
    pub started_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
}

/// The state of an approval.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

/// A human-in-the-loop approval request and, once decided, its decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    pub approval_id: String,
    #[serde(default)]
    pub session_id: Option<String>,
    pub tool: String,
    pub args: Value,
    pub summary: String,
    /// The requesting connection and its identity.
    pub requester_conn: String,
    pub requester: String,
    pub status: ApprovalStatus,
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    pub created_at: u64,
    pub expires_at: u64,
    #[serde(default)]
    pub resolved_at: Option<u64>,
}

/// What an idempotency key holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Idempotency {
    /// A call with this key is running somewhere.
    Pending,
    /// It finished with this result.
    Done { result: Value },
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
        };
        assert!(entry.serves_method("skills.install"));
        assert!(entry.serves_method("updates.check"));
        assert!(!entry.serves_method("updates.apply"));
        assert!(!entry.serves_method("skill"));
    }
}
