//! The tools the gateway offers over MCP: every tool of every online
//! agent, cluster-wide (the agent registry), one entry per name.
//!
//! Agents that register a tool under the same name with the same input
//! schema offer one tool, and a call routes among them by the routing
//! policy. When agents disagree on a name's schema, each agent's variant
//! is listed as `<agentId>__<name>` (the bare name is not listed), and a
//! call to it goes to that agent alone: the names depend only on who is
//! online, never on the order they registered in.

use crate::app::App;
use crate::backend::{AgentEntry, ToolSpec};
use crate::protocol::RpcError;
use crate::services::agents::Selector;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Separates the agent id from the tool's name in a disambiguated name.
const SEPARATOR: &str = "__";

/// One listed tool.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The name MCP clients see.
    pub name: String,
    /// The agents' own name for it.
    pub tool: String,
    pub description: String,
    pub input_schema: Value,
    /// Set when the name is disambiguated: the one agent serving it.
    pub agent: Option<String>,
}

impl Listed {
    /// The MCP `Tool` object.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
        })
    }

    /// Which agents a call to it may go to.
    pub fn selector(&self) -> Selector {
        Selector {
            id: self.agent.clone(),
            tool: Some(self.tool.clone()),
            ..Default::default()
        }
    }
}

/// Every tool of the online agents, sorted by name.
pub async fn tools(app: &App) -> Result<Vec<Listed>, RpcError> {
    let agents = app.agent_store().agents().await?;
    Ok(list(agents.iter().filter(|a| a.online)))
}

/// The tool a client calls `name`, and the online agents that serve it
/// (from the same read of the registry).
pub async fn find(app: &App, name: &str) -> Result<(Listed, Vec<AgentEntry>), RpcError> {
    let agents = app.agent_store().agents().await?;
    let tool = list(agents.iter().filter(|a| a.online))
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| RpcError::invalid_params("name", format!("unknown tool {name:?}")))?;
    let selector = tool.selector();
    let serving = agents.into_iter().filter(|a| selector.matches(a)).collect();
    Ok((tool, serving))
}

/// A tool's variants: schema (as JSON text) → the agents offering it,
/// each with its spec.
type Variants<'a> = BTreeMap<String, Vec<(&'a str, &'a ToolSpec)>>;

fn list<'a>(agents: impl Iterator<Item = &'a AgentEntry>) -> Vec<Listed> {
    let mut by_name: BTreeMap<&str, Variants<'a>> = BTreeMap::new();
    for agent in agents {
        for tool in &agent.tools {
            by_name
                .entry(tool.name.as_str())
                .or_default()
                .entry(tool.parameters.to_string())
                .or_default()
                .push((agent.agent_id.as_str(), tool));
        }
    }
    let mut listed = Vec::new();
    for (name, variants) in by_name {
        if variants.len() == 1 {
            let offers = variants.into_values().next().unwrap_or_default();
            if let Some((_, spec)) = offers.first() {
                listed.push(entry(name.to_owned(), spec, None));
            }
            continue;
        }
        for (agent, spec) in variants.into_values().flatten() {
            let exposed = format!("{agent}{SEPARATOR}{name}");
            listed.push(entry(exposed, spec, Some(agent.to_owned())));
        }
    }
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    listed.dedup_by(|a, b| a.name == b.name);
    listed
}

fn entry(name: String, spec: &ToolSpec, agent: Option<String>) -> Listed {
    Listed {
        name,
        tool: spec.name.clone(),
        description: spec.description.clone(),
        input_schema: object_schema(&spec.parameters),
        agent,
    }
}

/// MCP wants an object schema: one without a `type` gets `"object"`.
fn object_schema(parameters: &Value) -> Value {
    match parameters {
        Value::Object(map) if map.contains_key("type") => parameters.clone(),
        Value::Object(map) => {
            let mut map = map.clone();
            map.insert("type".into(), json!("object"));
            Value::Object(map)
        }
        _ => json!({ "type": "object" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, tools: &[(&str, Value)]) -> AgentEntry {
        let mut entry: AgentEntry = serde_json::from_value(json!({
            "agentId": id, "name": id, "type": "agent", "capabilities": [], "tools": [],
            "models": [], "methods": [], "maxConcurrency": 0, "status": "idle", "online": true,
            "connId": format!("c-{id}"), "instanceId": "i", "generation": 1, "identity": id,
            "load": 0, "registeredAt": 1, "updatedAt": 1
        }))
        .expect("an agent entry");
        entry.tools = tools
            .iter()
            .map(|(name, schema)| ToolSpec {
                name: (*name).into(),
                description: format!("{name} of {id}"),
                parameters: schema.clone(),
            })
            .collect();
        entry
    }

    #[test]
    fn one_schema_is_one_tool_and_a_collision_names_each_agent() {
        let string = json!({"type": "object", "properties": {"q": {"type": "string"}}});
        let number = json!({"type": "object", "properties": {"q": {"type": "number"}}});
        let agents = [
            agent("b", &[("search", string.clone()), ("echo", json!({}))]),
            agent("a", &[("search", string.clone()), ("echo", json!({}))]),
            agent("c", &[("search", number.clone())]),
        ];
        let listed = list(agents.iter());
        let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a__search", "b__search", "c__search", "echo"]);
        let echo = &listed[3];
        assert_eq!(echo.agent, None);
        assert_eq!(echo.input_schema, json!({"type": "object"}));
        assert_eq!(listed[2].agent.as_deref(), Some("c"));
        assert_eq!(listed[2].input_schema, number);
        // The same agents registered in another order: the same names.
        let reversed: Vec<AgentEntry> = agents.iter().rev().cloned().collect();
        let again: Vec<String> = list(reversed.iter()).into_iter().map(|t| t.name).collect();
        assert_eq!(again, names);
    }
}
