//! Agent runs and chat.

use super::pushes::chat_entry;
use super::{Doc, any, array, constant, count, described, nullable, object, record, string};
use crate::backend::RunRecord;
use crate::protocol::error;
use schemars::SchemaGenerator;
use serde_json::Value;

/// What starting a run can answer (agent.run, chat.send).
const START_ERRORS: &[i32] = &[
    error::NOT_FOUND,
    error::FORBIDDEN,
    error::LIMIT_EXCEEDED,
    error::UNAVAILABLE,
    error::TIMEOUT,
    error::CONFLICT,
];

pub const AGENT_RUN: Doc = Doc {
    summary: "Start an agent run on a session",
    description: "Picks an online agent (`agentId`, or by `capability`, default `agent.run`) \
                  and a session (the caller's `sessionId`, or a new one whose `resumeToken` \
                  comes back), sends the agent the request `agent.run` and answers once it \
                  accepted. The agent's `agent.event`s reach the session's members; \
                  `agent.started`, `agent.completed` and `agent.error` go to channel `global`. \
                  One run at a time per session, a few per caller (-32002). Wait for the end \
                  with `agent.wait`.",
    result: |_| {
        object(&[
            ("sessionId", string()),
            ("runId", string()),
            ("agentId", described(string(), "the agent that accepted")),
            ("status", constant("running")),
            (
                "resumeToken?",
                described(string(), "when the session was created for this run"),
            ),
        ])
    },
    errors: START_ERRORS,
};

pub const AGENT_WAIT: Doc = Doc {
    summary: "Wait for a session's run to end",
    description: "Members only. Answers the run's record once it is no longer running \
                  (-32006 after `timeoutMs`).",
    result: run,
    errors: &[
        error::NOT_FOUND,
        error::FORBIDDEN,
        error::TIMEOUT,
        error::UNAVAILABLE,
    ],
};

pub const AGENT_CANCEL: Doc = Doc {
    summary: "Cancel a session's run",
    description: "The run's caller or an admin. The agent receives `agent.cancel`; later \
                  events of the run are dropped; `agent.error` with status `cancelled` goes \
                  to `global`.",
    result: cancelled,
    errors: &[
        error::NOT_FOUND,
        error::FORBIDDEN,
        error::CONFLICT,
        error::UNAVAILABLE,
    ],
};

pub const AGENT_EVENT: Doc = Doc {
    summary: "An event of a run (from the agent serving it)",
    description: "Reaches every member of the session as `agent.event {sessionId, runId, \
                  agentId, type, data, timestamp, offset}`, numbered in the session's log \
                  with its `session.event`s. Events of a cancelled run are dropped.",
    result: |_| {
        let logged = object(&[("delivered", count()), ("offset", count())]);
        let dropped = object(&[("delivered", constant(0)), ("dropped", constant(true))]);
        serde_json::json!({ "anyOf": [logged, dropped] })
    },
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

pub const AGENT_REATTACH: Doc = Doc {
    summary: "Take back a run whose instance was lost (from its agent)",
    description: "For an agent that reconnected (to any instance) after the instance serving \
                  its run died: register the same `agentId` on this connection, as the same \
                  identity, then call this with the run's `sessionId` and `runId` (from its \
                  `agent.run` request) before the `resumableUntil` of the run's `agent.error` \
                  (`limits.resume_window_ms` after the loss). While the record still says \
                  running, waits up to twice `limits.node_ttl_ms` for the loss to be noticed. The run \
                  goes back to running here (`attached` counts the re-attaches; \
                  `agent.started` with `attached` goes to `global`); its `agent.event`s go on \
                  in the same session log, a cancel reaches the agent as `agent.cancel`, and \
                  the agent ends it with `agent.finish` (or it ends with -32005 \
                  `{reason: \"agent_disconnected\"}` if the connection closes, -32006 at its \
                  deadline). -32007 when the run is still served elsewhere, ended otherwise, \
                  was taken back already or the window passed; -32003 for another agent or \
                  identity.",
    result: run,
    errors: &[
        error::NOT_FOUND,
        error::FORBIDDEN,
        error::CONFLICT,
        error::TIMEOUT,
        error::UNAVAILABLE,
    ],
};

pub const AGENT_FINISH: Doc = Doc {
    summary: "End a re-attached run (from its agent)",
    description: "Ends the run this connection re-attached to (`agent.reattach`) with \
                  `result`, or with `error` (`{message, code?, data?}`, code default -32603): \
                  `agent.completed` or `agent.error` goes to `global`. `finished: false` when \
                  the run was cancelled meanwhile. A run sent to the agent as a request is \
                  answered by replying to that request instead (-32001 here).",
    result: |_| {
        object(&[
            (
                "finished",
                described(super::boolean(), "false: cancelled meanwhile"),
            ),
            ("runId", string()),
            ("status", string()),
        ])
    },
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

pub const CHAT_SEND: Doc = Doc {
    summary: "Send a chat message to a session's agent and wait for its reply",
    description: "Members only. Goes to the agent of the session's latest run if it is \
                  online, else to one with capability `chat`, as the request `chat.send` with \
                  the last 50 entries of the chat history. The message and the reply are \
                  appended to the history.",
    result: |_| {
        object(&[
            ("sessionId", string()),
            ("runId", string()),
            ("agentId", nullable(string())),
            (
                "reply",
                described(any(), "the agent's `content`, or its whole answer"),
            ),
        ])
    },
    errors: START_ERRORS,
};

pub const CHAT_HISTORY: Doc = Doc {
    summary: "A session's chat history",
    description: "Members only; the newest `limit` entries, oldest first.",
    result: |_| {
        object(&[
            ("sessionId", string()),
            ("count", count()),
            ("messages", array(chat_entry())),
        ])
    },
    errors: &[error::NOT_FOUND, error::FORBIDDEN, error::UNAVAILABLE],
};

pub const CHAT_ABORT: Doc = Doc {
    summary: "Cancel a session's chat reply in progress",
    description: "As `agent.cancel`.",
    result: cancelled,
    errors: &[
        error::NOT_FOUND,
        error::FORBIDDEN,
        error::CONFLICT,
        error::UNAVAILABLE,
    ],
};

pub const CHAT_INJECT: Doc = Doc {
    summary: "Append to a session's chat history without running the agent",
    description: "Members only.",
    result: |_| object(&[("sessionId", string()), ("injected", constant(true))]),
    errors: &[error::NOT_FOUND, error::FORBIDDEN, error::UNAVAILABLE],
};

fn run(g: &mut SchemaGenerator) -> Value {
    record::<RunRecord>(g)
}

fn cancelled(_: &mut SchemaGenerator) -> Value {
    object(&[
        ("cancelled", constant(true)),
        ("sessionId", string()),
        ("runId", string()),
    ])
}
