//! Agent definitions and the cluster-wide agent views.

use super::{Doc, constant, count, described, map, object, record, string};
use crate::backend::AgentDefinition;
use crate::protocol::error;
use schemars::SchemaGenerator;
use serde_json::Value;

pub(super) fn definition(g: &mut SchemaGenerator) -> Value {
    record::<AgentDefinition>(g)
}

pub const AGENTS_CREATE: Doc = Doc {
    summary: "Define an agent id (admin)",
    description: "Stores a definition at version 1 (-32007 when the id has one). A node that \
                  registers under the id is held to it: a tool, capability or model it does \
                  not allow is refused (-32003 naming it in `data`), `maxConcurrency` is \
                  capped, a disabled definition refuses registration, and calls to the tools \
                  in `approvalRequired` wait for an approval the gateway opens on the \
                  caller's behalf. A node already registered under the id is re-limited at \
                  once, on whichever instance holds it.",
    result: definition,
    errors: &[error::CONFLICT, error::LIMIT_EXCEEDED, error::UNAVAILABLE],
};

pub const AGENTS_UPDATE: Doc = Doc {
    summary: "Change an agent definition (admin)",
    description: "Fields left out stay; null clears a list or cap (any). With `baseVersion`, \
                  -32007 unless that is the stored version. The version goes up by one. The \
                  live agent is re-limited on whichever instance holds it, from what it \
                  offered at registration: tools, capabilities and models no longer allowed \
                  are dropped from its entry (and come back once allowed), `maxConcurrency` \
                  follows the cap, and a disabled definition deregisters it \
                  (the node receives `agent.deregistered`; its connection stays).",
    result: definition,
    errors: &[error::NOT_FOUND, error::CONFLICT, error::UNAVAILABLE],
};

pub const AGENTS_DELETE: Doc = Doc {
    summary: "Remove an agent definition (admin)",
    description: "With `baseVersion`, only at that version (-32007). A live agent keeps \
                  working as an undefined one, unless `agents.require_definition` is on: then \
                  it is deregistered (`agent.deregistered`).",
    result: |_| {
        object(&[
            ("agentId", string()),
            ("deleted", constant(true)),
            ("version", described(count(), "the version removed")),
        ])
    },
    errors: &[error::NOT_FOUND, error::CONFLICT, error::UNAVAILABLE],
};

pub const AGENTS_BROADCAST: Doc = Doc {
    summary: "Notify every matching online agent",
    description: "Each online agent with `capability` and of `type` (both optional), on every \
                  instance, receives `agents.broadcast {event, data, agentId}` once per \
                  registration.",
    result: |_| {
        object(&[
            ("event", string()),
            ("sent", described(count(), "agents it was delivered to")),
        ])
    },
    errors: &[error::UNAVAILABLE],
};

fn split() -> Value {
    map(object(&[("online", count()), ("offline", count())]))
}

pub const AGENTS_STATS: Doc = Doc {
    summary: "Agent counts, cluster-wide",
    description: "`online`: registered agents connected now; `offline`: defined ids with no \
                  agent connected. By type and by capability (an offline one counts under \
                  its definition's type and capabilities).",
    result: |_| {
        object(&[
            ("online", count()),
            ("offline", count()),
            ("defined", described(count(), "definitions stored")),
            ("byType", split()),
            ("byCapability", split()),
        ])
    },
    errors: &[error::UNAVAILABLE],
};
