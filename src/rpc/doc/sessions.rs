//! Sessions: create, join, invite, leave, get, patch, list, send, history,
//! resume and close.

use super::pushes::{agent_event, session_event};
use super::{
    Doc, boolean, constant, count, counted, described, log_page, object, record, replayed, string,
    with,
};
use crate::backend::SessionRecord;
use crate::protocol::error;
use schemars::SchemaGenerator;
use serde_json::{Value, json};

pub const SESSION_CREATE: Doc = Doc {
    summary: "Open a session owned by this connection",
    description: "The creating connection owns the session and is its first member. Keep \
                  `resumeToken`: with it the owner's identity takes the session back \
                  (`session.resume`) after its connection drops, within the resume window. \
                  At most `limits.max_sessions_per_client` sessions per connection.",
    result: |_| {
        object(&[
            ("sessionId", string()),
            (
                "resumeToken",
                described(string(), "a secret: shown only here"),
            ),
            ("version", constant(0)),
        ])
    },
    errors: &[error::LIMIT_EXCEEDED, error::CONFLICT, error::UNAVAILABLE],
};

pub const SESSION_JOIN: Doc = Doc {
    summary: "Join a session as a member",
    description: "Allowed to the owner's identity, an identity already a member, an invited \
                  identity, anyone with `operator.write` when the session is open, and admins. \
                  Members receive the session's `session.event`, `session.updated`, \
                  `session.closed` and `agent.event`s.",
    result: session,
    errors: &[
        error::NOT_FOUND,
        error::FORBIDDEN,
        error::LIMIT_EXCEEDED,
        error::UNAVAILABLE,
    ],
};

pub const SESSION_INVITE: Doc = Doc {
    summary: "Invite identities to join (the owner or an admin)",
    description: "Members receive `session.updated` with `invited`.",
    result: session,
    errors: &[
        error::NOT_FOUND,
        error::FORBIDDEN,
        error::LIMIT_EXCEEDED,
        error::UNAVAILABLE,
    ],
};

pub const SESSION_LEAVE: Doc = Doc {
    summary: "Stop being a member",
    description: "An owner that leaves detaches the session: its identity may take it back \
                  with `session.resume` within the resume window.",
    result: |_| {
        object(&[
            ("left", described(boolean(), "this connection was a member")),
            ("sessionId", string()),
        ])
    },
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

pub const SESSION_GET: Doc = Doc {
    summary: "A session's record",
    description: "Visible to the owner's identity, the member identities and admins; to \
                  anyone else the session does not exist (-32001).",
    result: session,
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

pub const SESSION_PATCH: Doc = Doc {
    summary: "Change a session's metadata (the owner or an admin)",
    description: "`meta` is a JSON merge patch; with `baseVersion` it applies only to that \
                  version (-32007 otherwise). Members receive `session.updated`.",
    result: session,
    errors: &[
        error::NOT_FOUND,
        error::FORBIDDEN,
        error::CONFLICT,
        error::UNAVAILABLE,
    ],
};

pub const SESSION_LIST: Doc = Doc {
    summary: "The sessions the caller owns or belongs to",
    description: "Admins see every session.",
    result: |g| counted("sessions", record::<SessionRecord>(g)),
    errors: &[error::UNAVAILABLE],
};

pub const SESSION_SEND: Doc = Doc {
    summary: "Send an event to a session's members",
    description: "Members (and admins) only. Every member, on every instance, receives \
                  `session.event` with the next `offset` of the session's log.",
    result: |_| {
        object(&[
            ("delivered", described(count(), "sockets it was queued to")),
            (
                "offset",
                described(count(), "its number in the session's log"),
            ),
        ])
    },
    errors: &[error::NOT_FOUND, error::FORBIDDEN, error::UNAVAILABLE],
};

pub const SESSION_HISTORY: Doc = Doc {
    summary: "A session's logged events",
    description: "Members, the owner's identity and admins: the `session.event`s and the \
                  `agent.event`s of its runs after offset `since`, oldest first, each naming \
                  its notification `method`. `complete: false` when events after `since` were \
                  trimmed from the log or lost.",
    result: |g| {
        let event = json!({
            "anyOf": [
                with_method(session_event(g), "session.event"),
                with_method(agent_event(g), "agent.event"),
            ]
        });
        log_page(&[("sessionId", string())], event)
    },
    errors: &[error::NOT_FOUND, error::FORBIDDEN, error::UNAVAILABLE],
};

pub const SESSION_RESUME: Doc = Doc {
    summary: "Take a session back with its resume token",
    description: "From any connection of the owner's identity, on any instance, within the \
                  resume window: the connection becomes the owner and is sent every logged \
                  event after `offset`, in order, before this reply; live events follow \
                  without gap or duplicate. Also `connect {resume}`.",
    result: resumed,
    errors: &[
        error::NOT_FOUND,
        error::FORBIDDEN,
        error::LIMIT_EXCEEDED,
        error::UNAVAILABLE,
    ],
};

pub const SESSION_CLOSE: Doc = Doc {
    summary: "Close a session (the owner or an admin)",
    description: "Members receive `session.closed {reason: \"closed\"}`; a run in progress \
                  on it is cancelled, and its run record and chat history are dropped.",
    result: |_| object(&[("closed", constant(true)), ("sessionId", string())]),
    errors: &[error::NOT_FOUND, error::FORBIDDEN, error::UNAVAILABLE],
};

fn session(g: &mut SchemaGenerator) -> Value {
    record::<SessionRecord>(g)
}

/// What `session.resume` answers (and `connect {resume}` when it worked).
pub(super) fn resumed(g: &mut SchemaGenerator) -> Value {
    with(
        replayed(),
        &[
            ("sessionId", string()),
            ("resumed", constant(true)),
            ("session", record::<SessionRecord>(g)),
        ],
    )
}

/// A logged event's params with the `method` of its notification.
fn with_method(event: Value, method: &str) -> Value {
    with(event, &[("method", constant(method))])
}
