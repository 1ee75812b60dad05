//! Agent settings: the `[agents]` section.

use serde::{Deserialize, Serialize};

/// How agent definitions (`agents.create`) bind registering nodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Refuse `agent.register` (and `connect {caps}`) for an agent id
    /// without a definition; deleting a definition then deregisters its
    /// live agent. Off: undefined ids register as they always have.
    pub require_definition: bool,
}
