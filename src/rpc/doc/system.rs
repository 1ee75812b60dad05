//! Connection and system methods.

use super::{
    Doc, any, array, boolean, constant, count, described, ms, nullable, object, one_of, paged,
    record, string, strings,
};
use crate::backend::{InstanceInfo, PresenceEntry};
use crate::protocol::{RpcError, error};
use crate::telemetry::LogRecord;
use schemars::SchemaGenerator;
use serde_json::Value;

pub const PING: Doc = Doc {
    summary: "Check the connection",
    description: "Answers at once, before authentication too.",
    result: |_| object(&[("pong", constant(true)), ("ts", ms())]),
    errors: &[],
};

pub const CONNECT: Doc = Doc {
    summary: "The hello handshake",
    description: "Says who the client is, may authenticate (`auth`), take a role, declare a \
                  node's `caps` (registering it as an agent under its connection id), check \
                  the protocol version range and take a session back (`resume`, as \
                  `session.resume`). The handshake succeeds even when the resume fails: then \
                  the reply's `resume` is `{sessionId, resumed: false, error}`.",
    result: hello,
    errors: &[error::UNAUTHORIZED, error::FORBIDDEN, error::UNAVAILABLE],
};

pub const AUTH: Doc = Doc {
    summary: "Authenticate in-band",
    description: "Exactly one of `token` (a JWT or a static token), `apiKey` (`api_key`) or \
                  `password`. Also refreshes an expiring JWT. Failed attempts count towards \
                  the per-address lock-out.",
    result: |_| {
        object(&[
            ("authenticated", constant(true)),
            ("sub", string()),
            ("role", one_of(&["operator", "node"])),
            ("scopes", strings()),
            (
                "expiresAt",
                described(
                    nullable(count()),
                    "when the credential expires (Unix seconds)",
                ),
            ),
        ])
    },
    errors: &[error::UNAUTHORIZED, error::RATE_LIMITED, error::UNAVAILABLE],
};

pub const HEALTH: Doc = Doc {
    summary: "This instance's health",
    description: "`degraded` while the instance drains, while the backend is unreachable, \
                  and while the instance re-asserts its state after a backend reconnect.",
    result: |_| {
        object(&[
            ("status", one_of(&["ok", "degraded"])),
            ("nodeId", string()),
            ("uptimeMs", count()),
            ("draining", boolean()),
            ("backend", backend()),
            (
                "connections",
                described(count(), "sockets on this instance"),
            ),
        ])
    },
    errors: &[],
};

pub const STATUS: Doc = Doc {
    summary: "This instance and the cluster",
    description: "Also `GET /status`.",
    result: |g| {
        object(&[
            ("nodeId", string()),
            ("version", string()),
            ("uptimeMs", count()),
            ("draining", boolean()),
            ("ready", boolean()),
            ("backend", backend()),
            ("local", object(&[("connections", count())])),
            (
                "cluster",
                object(&[
                    ("instances", array(record::<InstanceInfo>(g))),
                    ("connections", count()),
                    ("sessions", count()),
                    ("channels", described(count(), "channels with subscribers")),
                ]),
            ),
        ])
    },
    errors: &[error::UNAVAILABLE],
};

pub const SYSTEM_PRESENCE: Doc = Doc {
    summary: "Connected clients, cluster-wide, a page at a time",
    description: "Pass `nextCursor` back as `cursor` until it is null.",
    result: presence,
    errors: &[error::UNAVAILABLE],
};

pub const CLIENTS_LIST: Doc = Doc {
    summary: "Connected clients, cluster-wide (admin)",
    description: "As `system.presence`.",
    result: presence,
    errors: &[error::UNAVAILABLE],
};

pub const CLIENT_KICK: Doc = Doc {
    summary: "Close a connection on whichever instance holds it",
    description: "The connection is closed with code 4003 and `reason`.",
    result: |_| object(&[("kicked", constant(true)), ("connId", string())]),
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

pub const LOGS_TAIL: Doc = Doc {
    summary: "Recent log records of this instance",
    description: "From a bounded ring in memory, newest last.",
    result: |g| {
        object(&[
            ("nodeId", string()),
            ("records", array(record::<LogRecord>(g))),
        ])
    },
    errors: &[],
};

pub const RPC_DISCOVER: Doc = Doc {
    summary: "This document",
    description: "The OpenRPC document of the protocol, as `GET /openrpc.json` serves it.",
    result: |_| {
        let mut document = object(&[
            ("openrpc", string()),
            ("info", any()),
            ("methods", array(any())),
        ]);
        document["additionalProperties"] = true.into();
        described(document, "an OpenRPC 1.3 document")
    },
    errors: &[],
};

/// `{kind, available}` of the backend.
fn backend() -> Value {
    object(&[
        ("kind", one_of(&["memory", "redis"])),
        ("available", boolean()),
    ])
}

fn presence(g: &mut SchemaGenerator) -> Value {
    paged(
        &[("total", described(count(), "connections, cluster-wide"))],
        "clients",
        record::<PresenceEntry>(g),
    )
}

/// `connect`'s reply.
fn hello(g: &mut SchemaGenerator) -> Value {
    let limits = object(&[
        ("maxPayload", count()),
        ("maxSessions", count()),
        ("maxSubscriptions", count()),
        ("maxBatch", count()),
        ("heartbeatMs", count()),
    ]);
    let resumed = super::sessions::resumed(g);
    let refused = object(&[
        ("sessionId", string()),
        ("resumed", constant(false)),
        ("error", record::<RpcError>(g)),
    ]);
    object(&[
        ("connId", string()),
        (
            "nodeId",
            described(string(), "the instance holding the socket"),
        ),
        ("protocol", count()),
        (
            "server",
            object(&[("version", string()), ("uptimeMs", count())]),
        ),
        ("authenticated", boolean()),
        ("role", nullable(one_of(&["operator", "node"]))),
        ("scopes", nullable(strings())),
        (
            "presence",
            object(&[
                ("connections", nullable(count())),
                ("instances", nullable(count())),
            ]),
        ),
        ("limits", limits),
        ("features", strings()),
        (
            "resume?",
            described(
                serde_json::json!({ "anyOf": [resumed, refused] }),
                "when `resume` was asked: as `session.resume` answers, or why not",
            ),
        ),
    ])
}
