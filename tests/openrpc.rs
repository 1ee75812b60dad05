//! The protocol reference (`GET /openrpc.json`, `rpc.discover`,
//! `docs/protocol.md`) against a real server: every method of the table is
//! described with params, result and errors; the document is served
//! without credentials and answered by `rpc.discover`; the committed
//! Markdown is the one generated; and real replies, pushes and server →
//! node requests fit the document's schemas — every method of the table
//! is driven through a live server, its params and its result checked.

mod common;
#[path = "openrpc/live.rs"]
mod live;
#[path = "openrpc/reference.rs"]
mod reference;

use common::*;
use reference::Reference;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use switchyard::auth::Requirement;
use switchyard::rpc::openrpc::{self, markdown};

// What each live test below drives; together, every method and every
// notification and server request of the document.
const SYSTEM: &[&str] = &[
    "ping",
    "system.ping",
    "connect",
    "auth",
    "health",
    "status",
    "system.presence",
    "clients.list",
    "client.kick",
    "logs.tail",
    "rpc.discover",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence.get",
    "history",
];
const SYSTEM_PUSHES: &[&str] = &[
    "welcome",
    "notify",
    "presence.join",
    "presence.leave",
    "presence.tick",
    "shutdown",
];
/// Driven by an empty Redis restart (its own single `redis-server`).
const DURABILITY_PUSHES: &[&str] = &["epoch.changed"];
/// Driven with real processes: a run taken back after its instance died.
const REATTACH: &[&str] = &["agent.reattach", "agent.finish"];
const REATTACH_PUSHES: &[&str] = &[
    "agent.run",
    "agent.started",
    "agent.error",
    "agent.completed",
];
const SESSIONS: &[&str] = &[
    "connect",
    "session.create",
    "session.join",
    "session.invite",
    "session.leave",
    "session.get",
    "session.patch",
    "session.list",
    "session.send",
    "session.history",
    "session.resume",
    "session.close",
];
const SESSION_PUSHES: &[&str] = &["session.event", "session.updated", "session.closed"];
const AGENTS: &[&str] = &[
    "agent.register",
    "agent.status",
    "agent.unregister",
    "agents.list",
    "agents.get",
    "tools.list",
    "models.list",
    "node.invoke",
    "invoke.progress",
    "invoke.cancel",
    "agent.run",
    "agent.event",
    "agent.wait",
    "agent.cancel",
    "chat.send",
    "chat.history",
    "chat.inject",
    "chat.abort",
    "agents.create",
    "agents.update",
    "agents.delete",
    "agents.broadcast",
    "agents.stats",
];
const AGENT_PUSHES: &[&str] = &[
    "invoke",
    "invoke.progress",
    "invoke.cancel",
    "agent.run",
    "agent.started",
    "agent.event",
    "agent.completed",
    "agent.cancel",
    "agent.error",
    "chat.send",
    "chat.completions",
    "agents.broadcast",
    "agent.deregistered",
];
const APPROVALS: &[&str] = &[
    "approval.request",
    "approval.list",
    "approval.resolve",
    "approval.wait",
    "approval.history",
];
const APPROVAL_PUSHES: &[&str] = &["approval.requested", "approval.resolved"];
const CONFIG: &[&str] = &[
    "config.get",
    "config.set",
    "config.patch",
    "config.apply",
    "config.history",
];
const DEVICES: &[&str] = &[
    "device.pair.request",
    "device.pair.approve",
    "device.pair.reject",
    "device.list",
    "device.get",
    "device.revoke",
    "device.token.rotate",
    "device.history",
];
const DEVICE_PUSHES: &[&str] = &[
    "device.pair.requested",
    "device.pair.resolved",
    "device.paired",
    "device.pair.rejected",
    "device.revoked",
];
const CRON: &[&str] = &[
    "cron.add",
    "cron.update",
    "cron.get",
    "cron.list",
    "cron.run",
    "cron.remove",
    "cron.runs",
];

fn names(lists: &[&[&str]]) -> BTreeSet<String> {
    lists
        .iter()
        .flat_map(|l| l.iter().map(|s| s.to_string()))
        .collect()
}

fn listed(document: &Value, key: &str) -> BTreeSet<String> {
    document[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} listed"))
        .iter()
        .map(|entry| entry["name"].as_str().expect("a name").to_owned())
        .collect()
}

#[test]
fn the_live_tests_cover_every_method_notification_and_server_request() {
    let document = openrpc::document();
    let table: BTreeSet<String> = switchyard::rpc::METHODS
        .iter()
        .map(|m| m.name.to_owned())
        .collect();
    assert_eq!(
        names(&[
            SYSTEM, SESSIONS, AGENTS, APPROVALS, CONFIG, DEVICES, CRON, REATTACH,
        ]),
        table
    );
    let unasked: BTreeSet<String> = listed(document, "x-notifications")
        .union(&listed(document, "x-server-requests"))
        .cloned()
        .collect();
    let driven = names(&[
        SYSTEM_PUSHES,
        SESSION_PUSHES,
        AGENT_PUSHES,
        APPROVAL_PUSHES,
        DEVICE_PUSHES,
        DURABILITY_PUSHES,
        REATTACH_PUSHES,
    ]);
    assert_eq!(driven, unasked);
}

/// The document's name for a requirement, said independently of the
/// generator.
fn requirement(r: Requirement) -> String {
    match r {
        Requirement::Any => "any".into(),
        Requirement::Authenticated => "authenticated".into(),
        Requirement::Scope(scope) => scope.to_string(),
        Requirement::Node => "node".into(),
    }
}

#[tokio::test]
async fn every_method_of_the_table_is_described() {
    let server = TestServer::default().await;
    let (status, head, body) = http(server.addr, "GET", "/openrpc.json", &[], None).await;
    assert_eq!(status, 200, "served without credentials: {body}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert_eq!(body, openrpc::document_json());
    // The Host check applies as on every other route.
    let (status, _, _) = http(
        server.addr,
        "GET",
        "/openrpc.json",
        &[("host", "attacker.example")],
        None,
    )
    .await;
    assert_eq!(status, 403);

    let reference = Reference::new(serde_json::from_str(&body).expect("JSON"));
    let document = &reference.document;
    assert_eq!(document["openrpc"], openrpc::OPENRPC_VERSION);
    assert_eq!(
        document["methods"].as_array().map(Vec::len),
        Some(switchyard::rpc::METHODS.len()),
        "one method object per row"
    );
    let errors = &document["components"]["errors"];
    for row in switchyard::rpc::METHODS {
        let m = reference.method(row.name);
        assert_eq!(m["x-aliases"], json!(row.aliases), "{}", row.name);
        assert_eq!(
            m["x-requirement"],
            requirement(row.requirement),
            "{}",
            row.name
        );
        assert_eq!(m["x-long-running"], row.long_running, "{}", row.name);
        assert_eq!(m["paramStructure"], "by-name", "{}", row.name);
        assert!(m["summary"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
        let params = m["params"].as_array().expect("params");
        assert_eq!(!params.is_empty(), row.params.is_some(), "{}", row.name);
        for param in params {
            assert!(
                param["name"].is_string() && param["required"].is_boolean(),
                "{param}"
            );
            assert!(
                param["schema"].is_object() || param["schema"].is_boolean(),
                "{param}"
            );
        }
        let result = &m["result"]["schema"];
        assert!(result.is_object(), "{}: {m}", row.name);
        // Both are draft-07 schemas that resolve in the document.
        assert!(reference.compiles(result), "{}: {result}", row.name);
        let params = reference.params_schema(row.name);
        assert!(reference.compiles(&params), "{}: {params}", row.name);
        let codes: Vec<i64> = m["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| {
                let name = e["$ref"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/components/errors/"))
                    .unwrap_or_else(|| panic!("{}: {e}", row.name));
                errors[name]["code"].as_i64().expect("a defined error")
            })
            .collect();
        // Every call may be rate limited or fail inside; what it requires
        // and reads says the rest.
        for code in [-32004, -32603] {
            assert!(codes.contains(&code), "{}: {codes:?}", row.name);
        }
        if row.requirement != Requirement::Any {
            assert!(codes.contains(&-32000), "{}: {codes:?}", row.name);
        }
        assert_eq!(
            codes.contains(&-32602),
            row.params.is_some(),
            "{}",
            row.name
        );
    }
    // Every reference points into the document.
    let text = body.as_str();
    for (at, _) in text.match_indices("\"$ref\":\"#/components/") {
        let rest = &text[at + "\"$ref\":\"#/".len()..];
        let pointer = &rest[..rest.find('"').expect("closed")];
        assert!(
            document.pointer(&format!("/{pointer}")).is_some(),
            "{pointer} does not resolve"
        );
    }
    assert!(
        !reference.compiles(&json!({"type": 5})),
        "schemas are checked"
    );
    // The check is strict: an undescribed field or a missing one fails.
    let pong = &reference.method("ping")["result"]["schema"];
    assert!(
        reference
            .errors(pong, &json!({"pong": true, "ts": 1}))
            .is_empty()
    );
    assert!(
        !reference
            .errors(pong, &json!({"pong": true, "ts": 1, "x": 1}))
            .is_empty()
    );
    assert!(!reference.errors(pong, &json!({"pong": true})).is_empty());
    let session = json!({"$ref": "#/components/schemas/Session"});
    assert!(
        !reference.errors(&session, &json!({})).is_empty(),
        "shared records too"
    );
}

#[tokio::test]
async fn rpc_discover_answers_the_served_document_before_authentication() {
    let server = TestServer::default().await;
    let mut ws = Ws::connect(&server.url("/ws")).await.expect("connects");
    let welcome = ws.expect_push("welcome").await;
    assert_eq!(welcome["authenticated"], false, "{welcome}");
    let discovered = ws.call("rpc.discover", json!({})).await;
    let reference = Reference::of(&server).await;
    assert_eq!(discovered, reference.document);
    let schema = &reference.method("rpc.discover")["result"]["schema"];
    reference.check("rpc.discover result", schema, &discovered);
}

#[test]
fn docs_protocol_md_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = markdown::render(openrpc::document());
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "docs/protocol.md is not the generated reference (first difference at line {}); \
             regenerate it with `{}`",
            line + 1,
            markdown::REGENERATE
        );
    }
}

#[test]
fn params_the_suite_sends_fit_the_param_schemas() {
    let reference = Reference::new(openrpc::document().clone());
    // As the other test files send them.
    let sent = [
        ("subscribe", json!({"channels": ["public:room"]})),
        (
            "subscribe",
            json!({"channels": ["hist:a"], "recover": {"hist:a": 2}}),
        ),
        (
            "publish",
            json!({"channel": "hist:a", "event": "n", "data": 3}),
        ),
        (
            "history",
            json!({"channel": "hist:a", "since": 1, "limit": 2}),
        ),
        (
            "presence.get",
            json!({"channel": "public:room", "limit": 1, "cursor": "0"}),
        ),
        (
            "connect",
            json!({"client": {"name": "node-app"}, "caps": ["echo"]}),
        ),
        (
            "connect",
            json!({"auth": {"token": "t"}, "minProtocol": 1, "maxProtocol": 1}),
        ),
        ("auth", json!({"apiKey": "k"})),
        (
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "p",
            "meta": {"a": {"x": 1, "y": 2}, "b": 1, "c": "keep"}}),
        ),
        (
            "session.patch",
            json!({"sessionId": "p", "meta": {"c": 2}, "baseVersion": 1}),
        ),
        (
            "session.resume",
            json!({"sessionId": "p", "resumeToken": "t", "offset": 4}),
        ),
        (
            "node.invoke",
            json!({"nodeId": "worker", "command": "compile", "params": {"x": 1},
            "timeoutMs": 3000, "invokeId": "inv-by-id"}),
        ),
        (
            "node.invoke",
            json!({"capability": "build", "command": "test", "params": [1, 2],
            "timeoutMs": 3000}),
        ),
        (
            "agent.register",
            json!({"agentId": "runner", "capabilities": ["agent.run"],
            "tools": [{"name": "grep", "parameters": {"type": "object"}}], "maxConcurrency": 2}),
        ),
        (
            "agent.run",
            json!({"task": "summarise", "input": {"doc": 1}, "maxTurns": 3,
            "tier": "fast"}),
        ),
        (
            "approval.request",
            json!({"sessionId": "s-appr", "tool": "shell",
            "args": {"cmd": "rm -rf /tmp/x"}, "summary": "run shell", "timeoutMs": 5000}),
        ),
        (
            "approval.resolve",
            json!({"approvalId": "a", "decision": "approve", "note": "ok"}),
        ),
        ("system.presence", json!({"limit": 2})),
        ("logs.tail", json!({"limit": 5, "level": "info"})),
        (
            "config.set",
            json!({"path": "rate_limits.messages_per_conn.limit", "value": 5}),
        ),
        (
            "config.set",
            json!({"path": "limits.max_batch", "value": null}),
        ),
        (
            "config.patch",
            json!({"patch": {"limits": {"max_batch": 10}}, "baseVersion": 0}),
        ),
        ("config.apply", json!({"config": {}, "baseVersion": 7})),
        ("config.history", json!({"limit": 1})),
    ];
    for (method, params) in &sent {
        reference.check(method, &reference.params_schema(method), params);
    }
    // And refuse what the handlers refuse.
    let refused = [
        ("publish", json!({"event": "e"})),
        ("subscribe", json!({"channels": "public:room"})),
        ("session.create", json!({"maxMembers": "three"})),
        ("session.patch", json!({"sessionId": "p", "meta": [1]})),
        ("node.invoke", json!({"capability": "build"})),
        ("history", json!({"channel": "hist:a", "since": -1})),
        ("config.set", json!({"path": "limits.max_batch"})),
        ("config.patch", json!({"patch": {}, "baseVersion": -1})),
    ];
    for (method, params) in &refused {
        let errors = reference.errors(&reference.params_schema(method), params);
        assert!(!errors.is_empty(), "{method} {params} should not fit");
    }
}
