//! The agent registry and routed calls.

use super::pushes::json_object;
use super::{Doc, any, array, constant, counted, described, object, record, string, strings, with};
use crate::backend::{AgentEntry, DefinedAgent};
use crate::protocol::error;
use serde_json::json;

pub const NODE_INVOKE: Doc = Doc {
    summary: "Call a node",
    description: "Sends the server → client request `invoke {command, params, caller}` to the \
                  agent `nodeId`, or to one with `capability` chosen by `policy`, on whichever \
                  instance holds it, and answers with the node's answer. An agent at its \
                  `maxConcurrency` is skipped for the next one. The caller receives the node's \
                  `invoke.progress` before the reply and may cancel with `invoke.cancel \
                  {invokeId}`.",
    result: |_| {
        object(&[
            ("nodeId", described(string(), "the agent that answered")),
            ("connId", string()),
            ("invokeId", string()),
            ("result", described(any(), "the node's answer")),
        ])
    },
    errors: &[
        error::NOT_FOUND,
        error::UNAVAILABLE,
        error::TIMEOUT,
        error::CONFLICT,
        error::LIMIT_EXCEEDED,
    ],
};

pub const INVOKE_CANCEL: Doc = Doc {
    summary: "Cancel a `node.invoke` of this connection",
    description: "The call answers -32006 with `data.cancelled`; the node receives \
                  `invoke.cancel`.",
    result: |_| object(&[("cancelled", constant(true)), ("invokeId", string())]),
    errors: &[error::NOT_FOUND],
};

pub const INVOKE_PROGRESS: Doc = Doc {
    summary: "Report progress on a request (from the node)",
    description: "The caller receives it as `invoke.progress {invokeId, data}`. Usually sent \
                  as a notification.",
    result: |_| object(&[("forwarded", constant(true))]),
    errors: &[error::NOT_FOUND],
};

pub const AGENT_REGISTER: Doc = Doc {
    summary: "Register an agent in the registry",
    description: "The entry is online while this connection is; it goes offline when the \
                  connection closes or its instance dies. An explicit registration replaces \
                  the one made from `connect {caps}`. A connection registers a bounded \
                  number of agents (-32002).",
    result: |g| record::<AgentEntry>(g),
    errors: &[error::CONFLICT, error::LIMIT_EXCEEDED, error::UNAVAILABLE],
};

pub const AGENT_STATUS: Doc = Doc {
    summary: "Set an agent's status",
    description: "For one of this connection's agents.",
    result: |_| object(&[("agentId", string()), ("status", string())]),
    errors: &[error::NOT_FOUND],
};

pub const AGENT_UNREGISTER: Doc = Doc {
    summary: "Remove an agent of this connection from the registry",
    description: "",
    result: |_| object(&[("agentId", string()), ("unregistered", constant(true))]),
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

pub const AGENTS_LIST: Doc = Doc {
    summary: "The registry, cluster-wide",
    description: "Filtered by capability, type and online state. Each entry carries its \
                  `definition` (null when its id has none); `defined` lists the definitions \
                  of ids with no entry (never registered, so offline).",
    result: |g| {
        let defined = array(super::agent_defs::definition(g));
        with(counted("agents", defined_entry(g)), &[("defined", defined)])
    },
    errors: &[error::UNAVAILABLE],
};

pub const AGENTS_GET: Doc = Doc {
    summary: "One registry entry",
    description: "With its `definition` (null when its id has none). A defined id never \
                  registered answers `{agentId, online: false, status, definition}`.",
    result: |g| {
        let def = super::agent_defs::definition(g);
        let unregistered = object(&[
            ("agentId", string()),
            ("online", constant(false)),
            ("status", constant("offline")),
            ("definition", def),
        ]);
        json!({ "anyOf": [defined_entry(g), unregistered] })
    },
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

/// A registry entry with its definition beside it.
fn defined_entry(g: &mut schemars::SchemaGenerator) -> serde_json::Value {
    record::<DefinedAgent>(g)
}

pub const TOOLS_LIST: Doc = Doc {
    summary: "The tools of online agents",
    description: "One entry per tool name, with the agents offering it, sorted by name.",
    result: |_| {
        counted(
            "tools",
            object(&[
                ("name", string()),
                ("description", string()),
                ("parameters", described(json_object(), "a JSON Schema")),
                ("agents", strings()),
            ]),
        )
    },
    errors: &[error::UNAVAILABLE],
};

pub const MODELS_LIST: Doc = Doc {
    summary: "The models of online agents",
    description: "One entry per model, with the agents serving it.",
    result: |_| counted("models", object(&[("id", string()), ("agents", strings())])),
    errors: &[error::UNAVAILABLE],
};
