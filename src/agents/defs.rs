//! How an agent definition limits a node registered under its id.
//!
//! At registration ([`admit`]) anything outside the definition is refused:
//! a tool, capability or model it does not allow, or a disabled
//! definition. A node that names no capabilities (or models) gets the
//! definition's. `maxConcurrency` is capped, the name and type come from
//! the definition when it sets them, and the entry remembers the
//! definition's version, approval-required tools and routing weight
//! ([`DefinedLimits`]).
//!
//! A definition that changes while the node is connected ([`relimit`],
//! run by the instance holding the node when told over the relay) applies
//! to what the node offered at registration (kept by [`LocalAgents`]): what
//! is no longer allowed is dropped from the entry, what is allowed again
//! comes back, the caps follow. A disabled definition
//! — or a deleted one while `agents.require_definition` is on —
//! deregisters the agent: the entry leaves the registry and the node
//! receives `agent.deregistered {agentId, reason}`; its connection stays.
//! A deleted definition otherwise leaves the agent working as an
//! undefined one.

use super::LocalAgents;
use crate::backend::{AgentDefinition, AgentEntry, DefinedLimits};
use crate::hub::Hub;
use crate::protocol::frame;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Why a definition refuses a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Breach {
    #[error("agent definition {0} is disabled")]
    Disabled(String),
    #[error("agent {0} has no definition and agents.require_definition is on")]
    Undefined(String),
    /// (field, name, agent id)
    #[error("{0} {1} is not allowed by agent definition {2}")]
    NotAllowed(&'static str, String, String),
}

/// A definition's change, sent to the instance holding its agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redefinition {
    pub agent_id: String,
    /// The new definition; `None` once deleted.
    pub definition: Option<AgentDefinition>,
    /// `agents.require_definition` of the sender.
    pub required: bool,
}

fn outside<'a>(allowed: &Option<Vec<String>>, offered: &'a [String]) -> Option<&'a String> {
    let allowed = allowed.as_ref()?;
    offered.iter().find(|n| !allowed.contains(n))
}

/// Hold a registering `entry` to `def` (see the module docs).
pub fn admit(entry: &mut AgentEntry, def: &AgentDefinition) -> Result<(), Breach> {
    if !def.enabled {
        return Err(Breach::Disabled(def.agent_id.clone()));
    }
    let tools: Vec<String> = entry.tools.iter().map(|t| t.name.clone()).collect();
    for (field, allowed, offered) in [
        ("tool", &def.tools, &tools),
        ("capability", &def.capabilities, &entry.capabilities),
        ("model", &def.models, &entry.models),
    ] {
        if let Some(name) = outside(allowed, offered) {
            return Err(Breach::NotAllowed(
                field,
                name.clone(),
                def.agent_id.clone(),
            ));
        }
    }
    fill_in(entry, def);
    apply_common(entry, def);
    Ok(())
}

/// Put back what the node offered (`offer`) before a changed definition
/// limits it again.
fn restore(entry: &mut AgentEntry, offer: &AgentEntry) {
    entry.name = offer.name.clone();
    entry.kind = offer.kind.clone();
    entry.capabilities = offer.capabilities.clone();
    entry.tools = offer.tools.clone();
    entry.models = offer.models.clone();
    entry.max_concurrency = offer.max_concurrency;
}

/// Re-limit a live `entry` to a changed `def`: drop what is no longer
/// allowed. Err when it may no longer be registered.
pub fn relimit(entry: &mut AgentEntry, def: &AgentDefinition) -> Result<(), Breach> {
    if !def.enabled {
        return Err(Breach::Disabled(def.agent_id.clone()));
    }
    if let Some(allowed) = &def.tools {
        entry.tools.retain(|t| allowed.contains(&t.name));
    }
    if let Some(allowed) = &def.capabilities {
        entry.capabilities.retain(|c| allowed.contains(c));
    }
    if let Some(allowed) = &def.models {
        entry.models.retain(|m| allowed.contains(m));
    }
    fill_in(entry, def);
    apply_common(entry, def);
    Ok(())
}

/// A node that names no capabilities (models) gets the definition's.
fn fill_in(entry: &mut AgentEntry, def: &AgentDefinition) {
    if entry.capabilities.is_empty() {
        entry.capabilities = def.capabilities.clone().unwrap_or_default();
    }
    if entry.models.is_empty() {
        entry.models = def.models.clone().unwrap_or_default();
    }
}

fn apply_common(entry: &mut AgentEntry, def: &AgentDefinition) {
    if let Some(name) = &def.name {
        entry.name = name.clone();
    }
    if let Some(kind) = &def.kind {
        entry.kind = kind.clone();
    }
    if let Some(max) = def.max_concurrency {
        entry.max_concurrency = entry.max_concurrency.min(max).max(1);
    }
    entry.defined = Some(DefinedLimits {
        version: def.version,
        approval_required: def.approval_required.clone(),
        weight: def.weight,
    });
}

impl LocalAgents {
    /// Apply a changed definition to the agent if it is registered here;
    /// see the module docs. Runs in its own task (the relay's inbox must
    /// not block).
    pub fn redefine_later(&self, change: Redefinition, hub: Hub) -> usize {
        let Some(current) = self.get(&change.agent_id) else {
            return 0;
        };
        let book = self.clone();
        tokio::spawn(async move { book.redefine(change, current, &hub).await });
        1
    }

    async fn redefine(&self, change: Redefinition, current: AgentEntry, hub: &Hub) {
        let agent_id = change.agent_id.as_str();
        // Limits apply to what the node offered, so a cap raised or a tool
        // allowed again gives back what an earlier version took.
        let offer = self.offer(agent_id);
        let from_offer = |e: &mut AgentEntry| {
            if let Some(offer) = &offer {
                restore(e, offer);
            }
        };
        let outcome = match &change.definition {
            // An older version than the one applied arrived late.
            Some(def)
                if current
                    .defined
                    .as_ref()
                    .is_some_and(|d| d.version > def.version) =>
            {
                return;
            }
            Some(def) => {
                let mut verdict = Ok(());
                self.update(agent_id, |e| {
                    from_offer(e);
                    verdict = relimit(e, def);
                });
                verdict
            }
            None if change.required => Err(Breach::Undefined(agent_id.to_owned())),
            None => {
                self.update(agent_id, |e| {
                    from_offer(e);
                    e.defined = None;
                });
                Ok(())
            }
        };
        match outcome {
            Ok(()) => self.sync(agent_id).await,
            Err(breach) => {
                let Some(entry) = self.remove(agent_id) else {
                    return;
                };
                if let Err(e) = self.0.backend.remove_agent(agent_id).await {
                    tracing::warn!(agent = %agent_id, error = %e, "deregistering an agent failed");
                }
                if let Some(conn) = hub.get(&entry.conn_id) {
                    conn.push(frame::notification(
                        "agent.deregistered",
                        &json!({ "agentId": agent_id, "reason": breach.to_string() }),
                    ));
                }
                tracing::info!(agent = %agent_id, reason = %breach, "agent deregistered by its definition");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ToolSpec;
    use serde_json::json;

    fn entry(tools: &[&str], caps: &[&str], max: u32) -> AgentEntry {
        serde_json::from_value(json!({
            "agentId": "a", "name": "mine", "type": "agent",
            "capabilities": caps, "models": [], "methods": [],
            "tools": tools.iter().map(|t| json!({"name": t})).collect::<Vec<_>>(),
            "maxConcurrency": max, "status": "idle", "online": true, "connId": "c",
            "instanceId": "i", "generation": 1, "identity": "n", "load": 0,
            "registeredAt": 0, "updatedAt": 0,
        }))
        .expect("an entry")
    }

    fn def(value: serde_json::Value) -> AgentDefinition {
        let mut value = value;
        value["agentId"] = json!("a");
        serde_json::from_value(value).expect("a definition")
    }

    #[test]
    fn admission_refuses_what_is_not_allowed_and_names_it() {
        let d = def(json!({"tools": ["x"], "capabilities": ["c"]}));
        let refused = admit(&mut entry(&["x", "y"], &[], 4), &d);
        assert_eq!(
            refused,
            Err(Breach::NotAllowed("tool", "y".into(), "a".into()))
        );
        let refused = admit(&mut entry(&[], &["d"], 4), &d);
        assert_eq!(
            refused,
            Err(Breach::NotAllowed("capability", "d".into(), "a".into()))
        );
        let off = def(json!({"enabled": false}));
        assert_eq!(
            admit(&mut entry(&[], &[], 4), &off),
            Err(Breach::Disabled("a".into()))
        );
    }

    #[test]
    fn admission_caps_names_and_fills_in() {
        let d = def(
            json!({"name": "Defined", "type": "worker", "capabilities": ["c"],
                           "maxConcurrency": 2, "approvalRequired": ["x"], "weight": 3,
                           "version": 4}),
        );
        let mut e = entry(&["x"], &[], 10);
        admit(&mut e, &d).unwrap();
        assert_eq!((e.name.as_str(), e.kind.as_str()), ("Defined", "worker"));
        assert_eq!(e.capabilities, ["c"]);
        assert_eq!(e.max_concurrency, 2);
        assert!(e.needs_approval("x"));
        assert!(!e.needs_approval("y"));
        assert_eq!(e.weight(), 3);
        assert_eq!(e.defined.as_ref().map(|d| d.version), Some(4));
        // A cap above the node's own leaves its own.
        let mut small = entry(&[], &[], 1);
        admit(&mut small, &d).unwrap();
        assert_eq!(small.max_concurrency, 1);
    }

    #[test]
    fn a_live_entry_drops_what_is_no_longer_allowed() {
        let mut e = entry(&["x", "y"], &["c", "d"], 8);
        let d = def(json!({"tools": ["y"], "capabilities": ["d"], "maxConcurrency": 1}));
        relimit(&mut e, &d).unwrap();
        let tools: Vec<&str> = e.tools.iter().map(|t: &ToolSpec| t.name.as_str()).collect();
        assert_eq!(tools, ["y"]);
        assert_eq!(e.capabilities, ["d"]);
        assert_eq!(e.max_concurrency, 1);
        let off = def(json!({"enabled": false}));
        assert_eq!(relimit(&mut e, &off), Err(Breach::Disabled("a".into())));
    }
}
