//! Routing policies: in which order the agents that match a call are
//! tried. The first candidate that accepts (is online and below its
//! `maxConcurrency`) gets the call.

use crate::backend::AgentEntry;
use crate::protocol::RpcError;
use rand::seq::SliceRandom;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// How to pick among several matching agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Fewest calls in flight relative to capacity (ties: the heavier
    /// routing weight, then random).
    #[default]
    LeastLoaded,
    /// Rotate over the candidates, by agent id.
    RoundRobin,
    Random,
    /// The longest registered.
    First,
}

impl Policy {
    pub fn parse(name: &str) -> Result<Self, RpcError> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|_| {
            RpcError::invalid_params("policy", "least_loaded, round_robin, random or first")
        })
    }

    /// The policy a call names, or the default when it names none.
    pub fn named(name: Option<&str>) -> Result<Self, RpcError> {
        name.map_or(Ok(Self::default()), Self::parse)
    }
}

/// Rotation state of `round_robin` (per instance).
#[derive(Default)]
pub struct Rotation(AtomicU64);

/// Order `candidates` for trying, best first.
pub fn order(
    mut candidates: Vec<AgentEntry>,
    policy: Policy,
    rotation: &Rotation,
) -> Vec<AgentEntry> {
    let mut rng = rand::rng();
    match policy {
        Policy::LeastLoaded => {
            candidates.shuffle(&mut rng);
            // Stable: equal loads keep their shuffled order, the heavier
            // routing weight (an agent definition's) first.
            candidates.sort_by(|a, b| {
                utilisation(a)
                    .total_cmp(&utilisation(b))
                    .then(b.weight().cmp(&a.weight()))
            });
        }
        Policy::RoundRobin => {
            candidates.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
            if !candidates.is_empty() {
                let turn = rotation.0.fetch_add(1, Ordering::Relaxed);
                let len = candidates.len();
                candidates.rotate_left((turn % len as u64) as usize);
            }
        }
        Policy::Random => candidates.shuffle(&mut rng),
        Policy::First => candidates.sort_by_key(|a| (a.registered_at, a.agent_id.clone())),
    }
    candidates
}

fn utilisation(agent: &AgentEntry) -> f64 {
    f64::from(agent.load) / f64::from(agent.max_concurrency.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, load: u32, max: u32, registered_at: u64) -> AgentEntry {
        AgentEntry {
            agent_id: id.into(),
            name: id.into(),
            kind: "agent".into(),
            capabilities: vec![],
            tools: vec![],
            models: vec![],
            methods: vec![],
            max_concurrency: max,
            status: "idle".into(),
            online: true,
            conn_id: format!("c-{id}"),
            instance_id: "i".into(),
            generation: 1,
            identity: "s".into(),
            load,
            registered_at,
            updated_at: registered_at,
            defined: None,
        }
    }

    fn ids(list: &[AgentEntry]) -> Vec<&str> {
        list.iter().map(|a| a.agent_id.as_str()).collect()
    }

    #[test]
    fn least_loaded_compares_utilisation() {
        let list = vec![
            agent("a", 4, 4, 1),
            agent("b", 1, 10, 2),
            agent("c", 1, 2, 3),
        ];
        let ordered = order(list, Policy::LeastLoaded, &Rotation::default());
        assert_eq!(ids(&ordered), ["b", "c", "a"]);
    }

    #[test]
    fn round_robin_rotates() {
        let rotation = Rotation::default();
        let list = vec![
            agent("b", 0, 1, 1),
            agent("a", 0, 1, 2),
            agent("c", 0, 1, 3),
        ];
        let firsts: Vec<String> = (0..4)
            .map(|_| {
                order(list.clone(), Policy::RoundRobin, &rotation)[0]
                    .agent_id
                    .clone()
            })
            .collect();
        assert_eq!(firsts, ["a", "b", "c", "a"]);
    }

    #[test]
    fn first_is_oldest_and_policy_names_parse() {
        let list = vec![agent("x", 0, 1, 9), agent("y", 0, 1, 3)];
        assert_eq!(
            ids(&order(list, Policy::First, &Rotation::default())),
            ["y", "x"]
        );
        assert_eq!(Policy::parse("round_robin").unwrap(), Policy::RoundRobin);
        assert_eq!(Policy::parse("nope").unwrap_err().code, -32602);
    }
}
