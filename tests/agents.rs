//! The agent layer on one instance, over real sockets: the registry
//! (`agent.register`, implicit `caps`, `agents.list` / `agents.get` and
//! their aliases, `tools.list`, `models.list`, offline entries), routed
//! calls (`node.invoke` by id and capability, errors, timeouts,
//! `maxConcurrency`, policies, progress, cancel, idempotency, method
//! providers), agent runs (`agent.run`, `agent.event`, lifecycle on
//! `global`, `agent.wait`, limits, `agent.cancel`, agent loss), chat and
//! approvals. Runs on the memory backend and, with
//! `SWITCHYARD_TEST_BACKEND=redis`, on Redis.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------- helpers

/// A JWT for an operator with operator.approvals only (no read).
fn approvals_only_jwt() -> String {
    jwt(json!({
        "sub": "approvals-only",
        "role": "operator",
        "scopes": ["operator.approvals"],
        "exp": now_secs() + 600,
    }))
}

/// A node connection with `token` that registered one agent with `params`;
/// returns it, its connection id and the entry.
async fn agent_with(server: &TestServer, token: &str, params: Value) -> (Ws, String, Value) {
    let mut ws = server.client(token).await;
    let id = conn_id(&mut ws).await;
    let entry = ws.call("agent.register", params).await;
    (ws, id, entry)
}

/// A node connection (NODE token) with agent `agent_id` of `caps`.
async fn agent(server: &TestServer, agent_id: &str, caps: &[&str]) -> Ws {
    let (ws, _, entry) = agent_with(
        server,
        NODE,
        json!({"agentId": agent_id, "capabilities": caps}),
    )
    .await;
    assert_eq!(entry["agentId"], agent_id, "{entry}");
    ws
}

/// Answer every `invoke` the node gets with `{"by": tag}` until aborted.
fn responder(mut node: Ws, tag: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(frame) = node.next_json().await {
            if frame["method"] == "invoke" {
                answer(
                    &mut node,
                    frame["id"].as_str().unwrap_or(""),
                    json!({"by": tag}),
                )
                .await;
            }
        }
    })
}

/// Agent ids of a list reply, checking `count`.
fn agent_ids(list: &Value) -> BTreeSet<String> {
    listed_ids(list, "agents", "agentId")
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

fn is_ms_timestamp(v: &Value) -> bool {
    // After 2020-01-01 in milliseconds.
    v.as_u64().is_some_and(|t| t > 1_577_836_800_000)
}

// ---------------------------------------------------------------- registry

#[tokio::test]
async fn register_returns_the_entry_and_updates_it() {
    let server = TestServer::default().await;
    let mut reader = server.client(READER).await;
    let tool = json!({
        "name": "search",
        "description": "web search",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    });
    let (mut node, node_conn, entry) = agent_with(
        &server,
        NODE,
        json!({
            "agentId": "alpha",
            "name": "Alpha",
            "type": "assistant",
            "capabilities": ["chat", "code"],
            "tools": [tool],
            "models": ["model-x"],
            "methods": ["skills.*", "updates.check"],
            "maxConcurrency": 2,
            "status": "ready",
        }),
    )
    .await;
    assert_eq!(entry["agentId"], "alpha", "{entry}");
    assert_eq!(entry["name"], "Alpha", "{entry}");
    assert_eq!(entry["type"], "assistant", "{entry}");
    assert_eq!(entry["capabilities"], json!(["chat", "code"]), "{entry}");
    assert_eq!(entry["tools"][0]["name"], "search", "{entry}");
    assert_eq!(entry["tools"][0]["description"], "web search", "{entry}");
    assert_eq!(
        entry["tools"][0]["parameters"], tool["parameters"],
        "{entry}"
    );
    assert_eq!(entry["models"], json!(["model-x"]), "{entry}");
    assert_eq!(
        entry["methods"],
        json!(["skills.*", "updates.check"]),
        "{entry}"
    );
    assert_eq!(entry["maxConcurrency"], 2, "{entry}");
    assert_eq!(entry["status"], "ready", "{entry}");
    assert_eq!(entry["online"], true, "{entry}");
    assert_eq!(entry["connId"], node_conn.as_str(), "{entry}");
    assert!(
        entry["instanceId"].as_str().is_some_and(|s| !s.is_empty()),
        "{entry}"
    );
    assert!(entry["generation"].is_number(), "{entry}");
    assert_eq!(entry["identity"], "node-1", "{entry}");
    assert_eq!(entry["load"], 0, "{entry}");
    assert!(is_ms_timestamp(&entry["registeredAt"]), "{entry}");
    assert!(is_ms_timestamp(&entry["updatedAt"]), "{entry}");

    // agents.get and its alias node.describe (with `nodeId`) return it.
    let got = reader.call("agents.get", json!({"agentId": "alpha"})).await;
    assert_eq!(got["agentId"], "alpha", "{got}");
    assert_eq!(got["connId"], node_conn.as_str(), "{got}");
    assert_eq!(got["capabilities"], json!(["chat", "code"]), "{got}");
    assert_eq!(got["maxConcurrency"], 2, "{got}");
    assert_eq!(got["online"], true, "{got}");
    let described = reader
        .call("node.describe", json!({"nodeId": "alpha"}))
        .await;
    assert_eq!(described["agentId"], "alpha", "{described}");
    assert_eq!(described["type"], "assistant", "{described}");
    assert_eq!(
        reader
            .error_code("agents.get", json!({"agentId": "nobody"}))
            .await,
        -32001
    );
    assert_eq!(
        reader
            .error_code("node.describe", json!({"nodeId": "nobody"}))
            .await,
        -32001
    );

    // Without agentId the entry is named after the connection, with defaults.
    let plain = node.call("agent.register", json!({})).await;
    assert_eq!(plain["agentId"], node_conn.as_str(), "{plain}");
    assert_eq!(plain["maxConcurrency"], 16, "{plain}");
    assert_eq!(plain["online"], true, "{plain}");

    // agent.status.
    let r = node
        .call(
            "agent.status",
            json!({"agentId": "alpha", "status": "busy"}),
        )
        .await;
    assert_eq!(r, json!({"agentId": "alpha", "status": "busy"}));
    let got = reader.call("agents.get", json!({"agentId": "alpha"})).await;
    assert_eq!(got["status"], "busy", "{got}");

    // Registering the same id again from the same connection updates it.
    let again = node
        .call(
            "agent.register",
            json!({"agentId": "alpha", "capabilities": ["chat"], "maxConcurrency": 3}),
        )
        .await;
    assert_eq!(again["capabilities"], json!(["chat"]), "{again}");
    assert_eq!(again["maxConcurrency"], 3, "{again}");
    let got = reader.call("agents.get", json!({"agentId": "alpha"})).await;
    assert_eq!(got["capabilities"], json!(["chat"]), "{got}");

    // agent.unregister.
    let r = node
        .call("agent.unregister", json!({"agentId": "alpha"}))
        .await;
    assert_eq!(r, json!({"agentId": "alpha", "unregistered": true}));
    assert_eq!(
        reader
            .error_code("agents.get", json!({"agentId": "alpha"}))
            .await,
        -32001
    );
    let list = reader.call("agents.list", json!({})).await;
    assert!(!agent_ids(&list).contains("alpha"), "{list}");
}

#[tokio::test]
async fn register_validation_and_permissions() {
    let server = TestServer::default().await;
    let mut node = server.client(NODE).await;
    for (params, what) in [
        (json!({"maxConcurrency": 0}), "maxConcurrency 0"),
        (json!({"methods": ["ping"]}), "a built-in method"),
        (json!({"methods": ["node.invoke"]}), "a built-in method"),
        (json!({"methods": ["agents.list"]}), "a built-in method"),
        (json!({"agentId": ""}), "an empty agentId"),
        (json!({"capabilities": [""]}), "an empty capability"),
        (
            json!({"tools": [{"name": "t", "parameters": "not an object"}]}),
            "tool parameters not an object",
        ),
        (json!({"capabilities": "chat"}), "capabilities not an array"),
    ] {
        let reply = node.request("agent.register", params.clone()).await;
        assert_eq!(reply["error"]["code"], -32602, "{what}: {params} → {reply}");
    }
    // Nothing was registered by the refused calls.
    let mut reader = server.client(READER).await;
    let list = reader.call("agents.list", json!({})).await;
    assert_eq!(list["count"], 0, "{list}");

    // Operators without operator.admin may not register (an admin: see
    // admin_may_act_as_a_node).
    for token in [WRITER, READER, APPROVER] {
        let mut op = server.client(token).await;
        let reply = op
            .request("agent.register", json!({"agentId": "op-agent"}))
            .await;
        assert_eq!(reply["error"]["code"], -32003, "{reply}");
        for (method, params) in [
            ("agent.status", json!({"status": "x"})),
            ("agent.unregister", json!({})),
        ] {
            let reply = op.request(method, params).await;
            assert_eq!(reply["error"]["code"], -32003, "{method}: {reply}");
        }
    }
    // Reading the registry needs operator.read.
    let mut approver = server.client(&approvals_only_jwt()).await;
    assert_eq!(approver.error_code("agents.list", json!({})).await, -32003);

    // At most 16 entries per connection.
    for i in 0..16 {
        node.call("agent.register", json!({"agentId": format!("many-{i}")}))
            .await;
    }
    let reply = node
        .request("agent.register", json!({"agentId": "many-16"}))
        .await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    // Updating one of the 16 is still fine.
    node.call(
        "agent.register",
        json!({"agentId": "many-3", "capabilities": ["x"]}),
    )
    .await;
    let list = reader.call("agents.list", json!({})).await;
    assert_eq!(list["count"], 16, "{list}");
    // Another connection has its own budget.
    let mut other = server.client(NODE).await;
    other
        .call("agent.register", json!({"agentId": "many-16"}))
        .await;
}

/// The brief: "An operator calling it → -32003" — an admin is an operator.
#[tokio::test]
async fn admin_may_act_as_a_node() {
    // operator.admin implies every other right, the node role's included
    // (the development token runs the example agent): an admin's entry
    // carries its identity and is routable like any node's.
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    let entry = admin
        .call(
            "agent.register",
            json!({"agentId": "admin-agent", "capabilities": ["adm"]}),
        )
        .await;
    assert_eq!(entry["identity"], "admin", "{entry}");
    let mut reader = server.client(READER).await;
    let got = reader
        .call("agents.get", json!({"agentId": "admin-agent"}))
        .await;
    assert_eq!(got["online"], true, "{got}");
}

#[tokio::test]
async fn register_conflicts_between_identities() {
    let server = TestServer::default().await;
    let mut reader = server.client(READER).await;
    let (first, first_conn, _) = agent_with(
        &server,
        NODE,
        json!({"agentId": "shared", "capabilities": ["a"]}),
    )
    .await;

    // Another node identity may not take a live id.
    let mut second = server.client(&node_jwt("node-2")).await;
    let reply = second
        .request("agent.register", json!({"agentId": "shared"}))
        .await;
    assert_eq!(reply["error"]["code"], -32007, "{reply}");
    let got = reader
        .call("agents.get", json!({"agentId": "shared"}))
        .await;
    assert_eq!(got["identity"], "node-1", "{got}");
    assert_eq!(got["connId"], first_conn.as_str(), "{got}");
    // Its own ids are fine.
    let own = second
        .call("agent.register", json!({"agentId": "mine"}))
        .await;
    assert_eq!(own["identity"], "node-2", "{own}");

    // Once the holder is gone (offline), the id is free.
    first.close().await;
    call_until(
        &mut reader,
        "agents.get",
        json!({"agentId": "shared"}),
        |r| r["result"]["online"] == false,
    )
    .await;
    let taken = second
        .call("agent.register", json!({"agentId": "shared"}))
        .await;
    assert_eq!(taken["identity"], "node-2", "{taken}");
    assert_eq!(taken["online"], true, "{taken}");
    let got = reader
        .call("agents.get", json!({"agentId": "shared"}))
        .await;
    assert_eq!(got["identity"], "node-2", "{got}");
}

#[tokio::test]
async fn connect_caps_register_a_node_implicitly() {
    let server = TestServer::default().await;
    let mut reader = server.client(READER).await;
    let (_node, node_id) = caps_node(&server, &["echo", "shell"]).await;
    let got = reader.call("agents.get", json!({"agentId": node_id})).await;
    assert_eq!(got["agentId"], node_id.as_str(), "{got}");
    assert_eq!(got["connId"], node_id.as_str(), "{got}");
    assert_eq!(got["type"], "node", "{got}");
    assert_eq!(
        strings(&got["capabilities"]),
        set(&["echo", "shell"]),
        "{got}"
    );
    assert_eq!(got["online"], true, "{got}");
    assert_eq!(got["identity"], "node-1", "{got}");
    let list = reader
        .call("node.list", json!({"capability": "shell"}))
        .await;
    assert_eq!(agent_ids(&list), set(&[&node_id]), "{list}");

    // An operator declaring caps is not registered.
    let mut op = server.client(WRITER).await;
    op.call(
        "connect",
        json!({"client": {"name": "op"}, "caps": ["echo"]}),
    )
    .await;
    let list = reader
        .call("agents.list", json!({"capability": "echo"}))
        .await;
    assert_eq!(agent_ids(&list), set(&[&node_id]), "{list}");
}

#[tokio::test]
async fn agents_list_filters_and_aliases() {
    let server = TestServer::default().await;
    let mut reader = server.client(READER).await;
    let _a = agent_with(
        &server,
        NODE,
        json!({"agentId": "a", "type": "assistant", "capabilities": ["chat", "code"]}),
    )
    .await;
    let (b, _, _) = agent_with(
        &server,
        NODE,
        json!({"agentId": "b", "type": "tool", "capabilities": ["code"]}),
    )
    .await;
    let (_n, node_id) = caps_node(&server, &["echo"]).await;

    let all = reader.call("agents.list", json!({})).await;
    assert_eq!(agent_ids(&all), set(&["a", "b", &node_id]), "{all}");
    for alias in ["node.list", "agent.list"] {
        let list = reader.call(alias, json!({})).await;
        assert_eq!(
            agent_ids(&list),
            set(&["a", "b", &node_id]),
            "{alias}: {list}"
        );
    }
    let list = reader
        .call("agents.list", json!({"capability": "code"}))
        .await;
    assert_eq!(agent_ids(&list), set(&["a", "b"]), "{list}");
    let list = reader
        .call("agents.list", json!({"capability": "chat"}))
        .await;
    assert_eq!(agent_ids(&list), set(&["a"]), "{list}");
    let list = reader
        .call("agents.list", json!({"capability": "none"}))
        .await;
    assert_eq!(agent_ids(&list), set(&[]), "{list}");
    let list = reader.call("agents.list", json!({"type": "node"})).await;
    assert_eq!(agent_ids(&list), set(&[&node_id]), "{list}");
    let list = reader.call("agents.list", json!({"type": "tool"})).await;
    assert_eq!(agent_ids(&list), set(&["b"]), "{list}");
    let list = reader
        .call(
            "agents.list",
            json!({"type": "assistant", "capability": "code"}),
        )
        .await;
    assert_eq!(agent_ids(&list), set(&["a"]), "{list}");
    let list = reader.call("agents.list", json!({"online": false})).await;
    assert_eq!(agent_ids(&list), set(&[]), "{list}");

    // b goes offline with its connection and stays listed.
    b.close().await;
    // b is listed as offline after its connection closed.
    call_until(&mut reader, "agents.list", json!({"online": false}), |r| {
        agent_ids(&r["result"]) == set(&["b"])
    })
    .await;
    let list = reader.call("agents.list", json!({"online": true})).await;
    assert_eq!(agent_ids(&list), set(&["a", &node_id]), "{list}");
    let all = reader.call("agents.list", json!({})).await;
    assert_eq!(agent_ids(&all), set(&["a", "b", &node_id]), "{all}");
    let b = all["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|e| e["agentId"] == "b")
        .expect("b listed")
        .clone();
    assert_eq!(b["online"], false, "{b}");
    assert_eq!(b["status"], "offline", "{b}");
    assert_eq!(b["load"], 0, "{b}");
}

#[tokio::test]
async fn offline_after_disconnect_and_not_invokable() {
    let server = TestServer::default().await;
    let mut reader = server.client(READER).await;
    let mut caller = server.client(WRITER).await;
    let (node, _, _) = agent_with(
        &server,
        NODE,
        json!({"agentId": "leaver", "capabilities": ["leave"], "tools": [{"name": "t1", "parameters": {}}], "models": ["m-leave"]}),
    )
    .await;
    node.close().await;
    call_until(
        &mut reader,
        "agents.get",
        json!({"agentId": "leaver"}),
        |r| r["result"]["online"] == false,
    )
    .await;
    let got = reader
        .call("agents.get", json!({"agentId": "leaver"}))
        .await;
    assert_eq!(got["status"], "offline", "{got}");
    assert_eq!(got["load"], 0, "{got}");
    let list = reader
        .call(
            "agents.list",
            json!({"capability": "leave", "online": true}),
        )
        .await;
    assert_eq!(list["count"], 0, "{list}");
    // Offline agents serve nothing and list no tools or models.
    let params = json!({"nodeId": "leaver", "command": "x", "timeoutMs": 500});
    assert_eq!(caller.error_code("node.invoke", params).await, -32005);
    let params = json!({"capability": "leave", "command": "x", "timeoutMs": 500});
    assert_eq!(caller.error_code("node.invoke", params).await, -32005);
    let tools = reader.call("tools.list", json!({})).await;
    assert_eq!(tools["count"], 0, "{tools}");
    let models = reader.call("models.list", json!({})).await;
    assert_eq!(models["count"], 0, "{models}");
}

#[tokio::test]
async fn tools_and_models_are_unions_over_online_agents() {
    let server = TestServer::default().await;
    let mut reader = server.client(READER).await;
    let schema = json!({"type": "object"});
    let _a = agent_with(
        &server,
        NODE,
        json!({
            "agentId": "ta",
            "tools": [
                {"name": "search", "description": "find things", "parameters": schema},
                {"name": "calc", "parameters": {"type": "object", "required": ["expr"]}},
            ],
            "models": ["m1", "m2"],
        }),
    )
    .await;
    let (b, _, _) = agent_with(
        &server,
        NODE,
        json!({
            "agentId": "tb",
            "tools": [{"name": "search", "description": "find things", "parameters": schema}],
            "models": ["m2", "m3"],
        }),
    )
    .await;

    let tools_of = |list: &Value| -> HashMap<String, Value> {
        let tools = list["tools"].as_array().expect("tools");
        assert_eq!(list["count"].as_u64(), Some(tools.len() as u64), "{list}");
        tools
            .iter()
            .map(|t| (t["name"].as_str().expect("name").to_owned(), t.clone()))
            .collect()
    };
    let models_of = |list: &Value| -> HashMap<String, BTreeSet<String>> {
        let models = list["models"].as_array().expect("models");
        assert_eq!(list["count"].as_u64(), Some(models.len() as u64), "{list}");
        models
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().expect("id").to_owned(),
                    strings(&m["agents"]),
                )
            })
            .collect()
    };

    let list = reader.call("tools.list", json!({})).await;
    let tools = tools_of(&list);
    assert_eq!(tools.len(), 2, "{list}");
    assert_eq!(
        strings(&tools["search"]["agents"]),
        set(&["ta", "tb"]),
        "{list}"
    );
    assert_eq!(tools["search"]["description"], "find things", "{list}");
    assert_eq!(tools["search"]["parameters"], schema, "{list}");
    assert_eq!(strings(&tools["calc"]["agents"]), set(&["ta"]), "{list}");
    assert_eq!(
        tools["calc"]["parameters"],
        json!({"type": "object", "required": ["expr"]}),
        "{list}"
    );
    let list = reader.call("models.list", json!({})).await;
    let models = models_of(&list);
    assert_eq!(models.len(), 3, "{list}");
    assert_eq!(models["m1"], set(&["ta"]), "{list}");
    assert_eq!(models["m2"], set(&["ta", "tb"]), "{list}");
    assert_eq!(models["m3"], set(&["tb"]), "{list}");

    // Only online agents count.
    b.close().await;
    // m3 is gone once tb is offline.
    call_until(&mut reader, "models.list", json!({}), |r| {
        !r["result"]["models"]
            .as_array()
            .expect("models")
            .iter()
            .any(|m| m["id"] == "m3")
    })
    .await;
    let list = reader.call("models.list", json!({})).await;
    let models = models_of(&list);
    assert_eq!(models.len(), 2, "{list}");
    assert_eq!(models["m2"], set(&["ta"]), "{list}");
    let list = reader.call("tools.list", json!({})).await;
    let tools = tools_of(&list);
    assert_eq!(strings(&tools["search"]["agents"]), set(&["ta"]), "{list}");

    // Scope: read.
    let mut approver = server.client(&approvals_only_jwt()).await;
    assert_eq!(approver.error_code("tools.list", json!({})).await, -32003);
    assert_eq!(approver.error_code("models.list", json!({})).await, -32003);
}

// ---------------------------------------------------------------- node.invoke

#[tokio::test]
async fn invoke_by_agent_id_and_capability() {
    let server = TestServer::default().await;
    let (mut node, node_conn, _) = agent_with(
        &server,
        NODE,
        json!({"agentId": "worker", "capabilities": ["build"]}),
    )
    .await;
    let mut caller = server.client(WRITER).await;
    let caller_conn = conn_id(&mut caller).await;

    let (reply, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": "worker", "command": "compile", "params": {"x": 1},
                   "timeoutMs": 3000, "invokeId": "inv-by-id"}),
        ),
        async {
            let (id, p) = server_request(&mut node, "invoke").await;
            assert_eq!(p["command"], "compile", "{p}");
            assert_eq!(p["params"], json!({"x": 1}), "{p}");
            assert_eq!(p["caller"]["connId"], caller_conn.as_str(), "{p}");
            assert_eq!(p["caller"]["identity"], "writer", "{p}");
            assert_eq!(p["caller"]["role"], "operator", "{p}");
            assert!(
                strings(&p["caller"]["scopes"]).contains("operator.write"),
                "{p}"
            );
            answer(&mut node, &id, json!({"built": true})).await;
        },
    );
    assert!(reply.get("error").is_none(), "{reply}");
    let r = &reply["result"];
    assert_eq!(r["nodeId"], "worker", "{reply}");
    assert_eq!(r["connId"], node_conn.as_str(), "{reply}");
    assert_eq!(r["invokeId"], "inv-by-id", "{reply}");
    assert_eq!(r["result"], json!({"built": true}), "{reply}");

    // By capability; the invokeId is generated when not given.
    let (reply, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"capability": "build", "command": "test", "params": [1, 2], "timeoutMs": 3000}),
        ),
        async {
            let (id, p) = server_request(&mut node, "invoke").await;
            assert_eq!(p["command"], "test", "{p}");
            assert_eq!(p["params"], json!([1, 2]), "{p}");
            answer(&mut node, &id, json!("ok")).await;
        },
    );
    assert_eq!(reply["result"]["nodeId"], "worker", "{reply}");
    assert_eq!(reply["result"]["result"], "ok", "{reply}");
    assert!(
        reply["result"]["invokeId"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{reply}"
    );

    // By the node's connection id too.
    let (reply, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": node_conn, "command": "x", "timeoutMs": 3000}),
        ),
        async {
            let (id, _) = server_request(&mut node, "invoke").await;
            answer(&mut node, &id, json!(7)).await;
        },
    );
    assert_eq!(reply["result"]["nodeId"], "worker", "{reply}");
    assert_eq!(reply["result"]["result"], 7, "{reply}");
}

#[tokio::test]
async fn invoke_errors_timeouts_and_validation() {
    let server = TestServer::default().await;
    let mut node = agent(&server, "erring", &["err"]).await;
    let mut caller = server.client(WRITER).await;

    // The node's error is passed through as is.
    let (reply, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": "erring", "command": "fail", "timeoutMs": 3000}),
        ),
        async {
            let (id, _) = server_request(&mut node, "invoke").await;
            node.send_json(&json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32050, "message": "boom", "data": {"why": "because"}}}))
                .await;
        },
    );
    assert_eq!(reply["error"]["code"], -32050, "{reply}");
    assert_eq!(reply["error"]["message"], "boom", "{reply}");
    assert_eq!(reply["error"]["data"], json!({"why": "because"}), "{reply}");

    // No matching online agent.
    for params in [
        json!({"nodeId": "nobody", "command": "x", "timeoutMs": 500}),
        json!({"capability": "nothing", "command": "x", "timeoutMs": 500}),
    ] {
        let reply = caller.request("node.invoke", params.clone()).await;
        assert_eq!(reply["error"]["code"], -32005, "{params} → {reply}");
    }

    // Invalid parameters.
    for params in [
        json!({"nodeId": "erring", "command": "x", "timeoutMs": 0}),
        json!({"nodeId": "erring", "command": "x", "timeoutMs": 600_001}),
        json!({"nodeId": "erring", "command": "x", "policy": "fastest"}),
    ] {
        let reply = caller.request("node.invoke", params.clone()).await;
        assert_eq!(reply["error"]["code"], -32602, "{params} → {reply}");
    }
    node.expect_no_push("invoke", QUIET).await;

    // Scopes.
    let mut reader = server.client(READER).await;
    let params = json!({"nodeId": "erring", "command": "x", "timeoutMs": 500});
    assert_eq!(reader.error_code("node.invoke", params).await, -32003);

    // A node that never answers: -32006 after timeoutMs, and the node is
    // told to stop.
    let started = Instant::now();
    let (reply, (request_id, _)) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": "erring", "command": "slow", "timeoutMs": 300}),
        ),
        server_request(&mut node, "invoke"),
    );
    assert_eq!(reply["error"]["code"], -32006, "{reply}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let cancel = node.expect_push("invoke.cancel").await;
    assert_eq!(cancel["id"], request_id.as_str(), "{cancel}");
    assert_eq!(cancel["reason"], "timeout", "{cancel}");
}

#[tokio::test]
async fn max_concurrency_one_refuses_a_second_call_as_busy() {
    let server = TestServer::default().await;
    let (mut a, _, _) = agent_with(
        &server,
        NODE,
        json!({"agentId": "mc-a", "capabilities": ["mc"], "maxConcurrency": 1}),
    )
    .await;
    // Registered strictly later than mc-a.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (mut b, _, _) = agent_with(
        &server,
        NODE,
        json!({"agentId": "mc-b", "capabilities": ["mc"], "maxConcurrency": 1}),
    )
    .await;
    let mut c1 = server.client(WRITER).await;
    let mut c2 = server.client(WRITER).await;
    let mut c3 = server.client(ADMIN).await;

    // c1 occupies mc-a.
    send_request(
        &mut c1,
        "hold-a",
        "node.invoke",
        json!({"nodeId": "mc-a", "command": "hold", "timeoutMs": 5000}),
    )
    .await;
    let (a_id, _) = server_request(&mut a, "invoke").await;

    // A second call to mc-a is refused as busy.
    let reply = c2
        .request(
            "node.invoke",
            json!({"nodeId": "mc-a", "command": "more", "timeoutMs": 2000}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    assert_eq!(reply["error"]["data"]["busy"], true, "{reply}");
    a.expect_no_push("invoke", QUIET).await;

    // By capability, it goes to the other matching agent instead, even
    // with policy first (mc-a is the earliest but full).
    send_request(
        &mut c2,
        "hold-b",
        "node.invoke",
        json!({"capability": "mc", "command": "hold", "policy": "first", "timeoutMs": 5000}),
    )
    .await;
    let (b_id, _) = server_request(&mut b, "invoke").await;

    // Both full: busy.
    let reply = c3
        .request(
            "node.invoke",
            json!({"capability": "mc", "command": "more", "timeoutMs": 2000}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    assert_eq!(reply["error"]["data"]["busy"], true, "{reply}");

    answer(&mut a, &a_id, json!("a-done")).await;
    answer(&mut b, &b_id, json!("b-done")).await;
    let r1 = c1.reply_to(json!("hold-a")).await;
    assert_eq!(r1["result"]["result"], "a-done", "{r1}");
    let r2 = c2.reply_to(json!("hold-b")).await;
    assert_eq!(r2["result"]["nodeId"], "mc-b", "{r2}");
    assert_eq!(r2["result"]["result"], "b-done", "{r2}");

    // Free again.
    let (reply, ()) = tokio::join!(
        c3.request(
            "node.invoke",
            json!({"nodeId": "mc-a", "command": "again", "timeoutMs": 3000}),
        ),
        async {
            let (id, _) = server_request(&mut a, "invoke").await;
            answer(&mut a, &id, json!("again")).await;
        },
    );
    assert_eq!(reply["result"]["result"], "again", "{reply}");
}

#[tokio::test]
async fn round_robin_alternates_and_first_picks_the_earliest() {
    let server = TestServer::default().await;
    let early = agent(&server, "early", &["rr"]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let late = agent(&server, "late", &["rr"]).await;
    let tasks = [responder(early, "early"), responder(late, "late")];
    let mut caller = server.client(WRITER).await;

    let mut call = async |policy: &str| -> String {
        let reply = caller
            .request(
                "node.invoke",
                json!({"capability": "rr", "command": "who", "policy": policy, "timeoutMs": 3000}),
            )
            .await;
        assert!(reply.get("error").is_none(), "{policy}: {reply}");
        let node = reply["result"]["nodeId"]
            .as_str()
            .expect("nodeId")
            .to_owned();
        assert_eq!(reply["result"]["result"]["by"], node.as_str(), "{reply}");
        node
    };

    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(call("round_robin").await);
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "round_robin alternates: {seen:?}");
    }
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        set(&["early", "late"]),
        "{seen:?}"
    );

    for _ in 0..4 {
        assert_eq!(
            call("first").await,
            "early",
            "first picks the earliest registered"
        );
    }
    // random and least_loaded are accepted and land on one of the two.
    for policy in ["random", "least_loaded"] {
        let node = call(policy).await;
        assert!(node == "early" || node == "late", "{policy}: {node}");
    }
    let reply = caller
        .request(
            "node.invoke",
            json!({"capability": "rr", "command": "who", "policy": "bogus", "timeoutMs": 3000}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    for task in tasks {
        task.abort();
    }
}

#[tokio::test]
async fn least_loaded_default_prefers_the_idle_agent() {
    let server = TestServer::default().await;
    let mut busy = agent(&server, "ll-busy", &["ll"]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let idle = agent(&server, "ll-idle", &["ll"]).await;
    let task = responder(idle, "ll-idle");
    let mut holder = server.client(WRITER).await;
    let mut caller = server.client(WRITER).await;

    // Two calls outstanding on ll-busy.
    send_request(
        &mut holder,
        "h1",
        "node.invoke",
        json!({"nodeId": "ll-busy", "command": "hold", "timeoutMs": 5000}),
    )
    .await;
    send_request(
        &mut holder,
        "h2",
        "node.invoke",
        json!({"nodeId": "ll-busy", "command": "hold", "timeoutMs": 5000}),
    )
    .await;
    let (h1, _) = server_request(&mut busy, "invoke").await;
    let (h2, _) = server_request(&mut busy, "invoke").await;

    for _ in 0..3 {
        let reply = caller
            .request(
                "node.invoke",
                json!({"capability": "ll", "command": "who", "timeoutMs": 3000}),
            )
            .await;
        assert_eq!(reply["result"]["nodeId"], "ll-idle", "{reply}");
    }
    busy.expect_no_push("invoke", QUIET).await;
    answer(&mut busy, &h1, json!(1)).await;
    answer(&mut busy, &h2, json!(2)).await;
    let got = replies(&mut holder, &["h1", "h2"]).await;
    assert_eq!(got["h1"]["result"]["result"], 1, "{got:?}");
    assert_eq!(got["h2"]["result"]["result"], 2, "{got:?}");
    task.abort();
}

#[tokio::test]
async fn progress_is_forwarded_in_order_before_the_reply() {
    let server = TestServer::default().await;
    let mut node = agent(&server, "prog", &["prog"]).await;
    let mut caller = server.client(WRITER).await;
    let mut other = server.client(WRITER).await;

    let (reply, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": "prog", "command": "work", "invokeId": "inv-p", "timeoutMs": 4000}),
        ),
        answer_with_progress(&mut node, 5, json!({"done": true})),
    );
    assert_eq!(reply["result"]["result"], json!({"done": true}), "{reply}");
    // Every progress notification was read before the reply, in order.
    let progress = progress_pushed(&caller);
    assert_eq!(progress.len(), 5, "{:?}", caller.pushed);
    for (step, p) in progress.iter().enumerate() {
        assert_eq!(p["invokeId"], "inv-p", "{p}");
        assert_eq!(p["data"], json!({"step": step}), "{p}");
    }
    // Nobody else gets them.
    other.expect_no_push("invoke.progress", QUIET).await;
    // The node may not send progress as an operator would.
    let mut op = server.client(WRITER).await;
    assert_eq!(
        op.error_code("invoke.progress", json!({"id": "srv-1", "data": 1}))
            .await,
        -32003
    );
}

#[tokio::test]
async fn invoke_cancel_by_the_caller() {
    let server = TestServer::default().await;
    let mut node = agent(&server, "cancellable", &["c"]).await;
    let mut caller = server.client(WRITER).await;

    send_request(
        &mut caller,
        "call",
        "node.invoke",
        json!({"nodeId": "cancellable", "command": "long", "invokeId": "inv-c", "timeoutMs": 8000}),
    )
    .await;
    let (srv_id, _) = server_request(&mut node, "invoke").await;
    let started = Instant::now();
    send_request(
        &mut caller,
        "cancel",
        "invoke.cancel",
        json!({"invokeId": "inv-c"}),
    )
    .await;
    let got = replies(&mut caller, &["call", "cancel"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let cancel = &got["cancel"];
    assert_eq!(
        cancel["result"],
        json!({"cancelled": true, "invokeId": "inv-c"}),
        "{cancel}"
    );
    let call = &got["call"];
    assert_eq!(call["error"]["code"], -32006, "{call}");
    assert_eq!(call["error"]["data"]["cancelled"], true, "{call}");
    let notice = node.expect_push("invoke.cancel").await;
    assert_eq!(notice["id"], srv_id.as_str(), "{notice}");

    // The node's late answer is ignored; the connection stays usable.
    answer(&mut node, &srv_id, json!("late")).await;
    assert_eq!(caller.call("ping", json!({})).await["pong"], true);

    // Unknown (or already finished) invoke ids.
    assert_eq!(
        caller
            .error_code("invoke.cancel", json!({"invokeId": "inv-c"}))
            .await,
        -32001
    );
    assert_eq!(
        caller
            .error_code("invoke.cancel", json!({"invokeId": "never"}))
            .await,
        -32001
    );
}

#[tokio::test]
async fn caller_disconnecting_cancels_at_the_node() {
    let server = TestServer::default().await;
    let mut node = agent(&server, "abandoned", &["c"]).await;
    let mut caller = server.client(WRITER).await;
    send_request(
        &mut caller,
        "call",
        "node.invoke",
        json!({"nodeId": "abandoned", "command": "long", "timeoutMs": 8000}),
    )
    .await;
    let (srv_id, _) = server_request(&mut node, "invoke").await;
    let started = Instant::now();
    caller.close().await;
    let notice = node.expect_push("invoke.cancel").await;
    assert_eq!(notice["id"], srv_id.as_str(), "{notice}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn agent_disconnecting_mid_invoke_fails_the_call_with_unavailable() {
    let server = TestServer::default().await;
    let mut node = agent(&server, "vanishing", &["v"]).await;
    let mut caller = server.client(WRITER).await;
    send_request(
        &mut caller,
        "call",
        "node.invoke",
        json!({"nodeId": "vanishing", "command": "long", "timeoutMs": 8000}),
    )
    .await;
    server_request(&mut node, "invoke").await;
    let started = Instant::now();
    node.close().await;
    let reply = caller.reply_to(json!("call")).await;
    assert_eq!(reply["error"]["code"], -32005, "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn idempotency_key_runs_the_call_once() {
    let server = TestServer::default().await;
    let mut node = agent(&server, "idem", &["idem"]).await;
    let mut caller = server.client(WRITER).await;
    let mut same_identity = server.client(WRITER).await;
    let mut admin = server.client(ADMIN).await;
    let params = json!({"nodeId": "idem", "command": "count", "params": {"n": 1},
                        "idempotencyKey": "key-1", "timeoutMs": 3000});

    let (first, ()) = tokio::join!(caller.request("node.invoke", params.clone()), async {
        let (id, _) = server_request(&mut node, "invoke").await;
        answer(&mut node, &id, json!({"count": 1})).await;
    });
    assert_eq!(first["result"]["result"], json!({"count": 1}), "{first}");

    // The same key again, from the same and from another connection of the
    // same identity: the same result, the node is not asked again.
    for ws in [&mut caller, &mut same_identity] {
        let again = ws.request("node.invoke", params.clone()).await;
        assert!(again.get("error").is_none(), "{again}");
        assert_eq!(again["result"]["result"], json!({"count": 1}), "{again}");
        assert_eq!(again["result"]["nodeId"], "idem", "{again}");
    }
    node.expect_no_push("invoke", QUIET).await;

    // Another key, or another identity with the same key, runs again.
    let mut other_key = params.clone();
    other_key["idempotencyKey"] = json!("key-2");
    let (reply, ()) = tokio::join!(caller.request("node.invoke", other_key), async {
        let (id, _) = server_request(&mut node, "invoke").await;
        answer(&mut node, &id, json!({"count": 2})).await;
    });
    assert_eq!(reply["result"]["result"], json!({"count": 2}), "{reply}");
    let (reply, ()) = tokio::join!(admin.request("node.invoke", params.clone()), async {
        let (id, _) = server_request(&mut node, "invoke").await;
        answer(&mut node, &id, json!({"count": 3})).await;
    });
    assert_eq!(reply["result"]["result"], json!({"count": 3}), "{reply}");

    // A failed first attempt does not stick: the retry runs.
    let mut failing = params.clone();
    failing["idempotencyKey"] = json!("key-fail");
    let (reply, ()) = tokio::join!(caller.request("node.invoke", failing.clone()), async {
        let (id, _) = server_request(&mut node, "invoke").await;
        answer_error(&mut node, &id, -32050, "transient").await;
    });
    assert_eq!(reply["error"]["code"], -32050, "{reply}");
    let (reply, ()) = tokio::join!(caller.request("node.invoke", failing), async {
        let (id, _) = server_request(&mut node, "invoke").await;
        answer(&mut node, &id, json!({"count": 4})).await;
    });
    assert_eq!(reply["result"]["result"], json!({"count": 4}), "{reply}");
}

#[tokio::test]
async fn idempotency_key_duplicate_joins_the_call_in_flight() {
    let server = TestServer::default().await;
    let mut node = agent(&server, "idem2", &["idem"]).await;
    let mut a = server.client(WRITER).await;
    let mut b = server.client(WRITER).await;
    let params = json!({"nodeId": "idem2", "command": "slow", "idempotencyKey": "dup",
                        "timeoutMs": 5000});
    send_request(&mut a, "first", "node.invoke", params.clone()).await;
    let (srv_id, _) = server_request(&mut node, "invoke").await;
    send_request(&mut b, "second", "node.invoke", params.clone()).await;
    // The duplicate does not reach the node.
    node.expect_no_push("invoke", QUIET).await;
    answer(&mut node, &srv_id, json!({"once": true})).await;
    let first = a.reply_to(json!("first")).await;
    let second = b.reply_to(json!("second")).await;
    assert_eq!(first["result"]["result"], json!({"once": true}), "{first}");
    assert_eq!(
        second["result"]["result"],
        json!({"once": true}),
        "{second}"
    );
    assert_eq!(first["result"]["nodeId"], second["result"]["nodeId"]);
    node.expect_no_push("invoke", QUIET).await;
}

#[tokio::test]
async fn method_providers_serve_unknown_methods() {
    let server = TestServer::default().await;
    let (mut node, _, _) = agent_with(
        &server,
        NODE,
        json!({"agentId": "skills", "methods": ["skills.*", "updates.check"]}),
    )
    .await;
    let mut caller = server.client(WRITER).await;
    let caller_conn = conn_id(&mut caller).await;

    for (method, params) in [
        ("skills.echo", json!({"a": 1})),
        ("skills.install", json!({"name": "x"})),
        ("updates.check", json!({})),
    ] {
        let (reply, ()) = tokio::join!(caller.request(method, params.clone()), async {
            let (id, p) = server_request(&mut node, "invoke").await;
            assert_eq!(p["command"], method, "{p}");
            assert_eq!(p["params"], params, "{p}");
            assert_eq!(p["caller"]["connId"], caller_conn.as_str(), "{p}");
            assert_eq!(p["caller"]["identity"], "writer", "{p}");
            answer(
                &mut node,
                &id,
                json!({"served": method, "echo": p["params"]}),
            )
            .await;
        });
        // The node's result, not wrapped.
        assert_eq!(
            reply["result"],
            json!({"served": method, "echo": params}),
            "{method}: {reply}"
        );
    }
    // The node's error is passed through.
    let (reply, ()) = tokio::join!(caller.request("skills.fail", json!({})), async {
        let (id, _) = server_request(&mut node, "invoke").await;
        answer_error(&mut node, &id, -32051, "no such skill").await;
    });
    assert_eq!(reply["error"]["code"], -32051, "{reply}");

    // Methods nobody serves.
    for method in ["unknown.method", "updates.checkall", "skill.echo"] {
        assert_eq!(
            caller.error_code(method, json!({})).await,
            -32601,
            "{method}"
        );
    }
    node.expect_no_push("invoke", QUIET).await;

    // Unauthenticated callers are not routed.
    let mut anon = Ws::connect(&server.url("/ws")).await.expect("connects");
    conn_id(&mut anon).await;
    assert_eq!(anon.error_code("skills.echo", json!({})).await, -32601);
    node.expect_no_push("invoke", QUIET).await;

    // Gone with the provider.
    node.close().await;
    // skills.* is -32601 once its provider is offline.
    call_until(&mut caller, "skills.echo", json!({}), |r| {
        r["error"]["code"] == -32601
    })
    .await;
}

// ---------------------------------------------------------------- agent runs

#[tokio::test]
async fn agent_run_streams_events_to_session_members() {
    let server = TestServer::default().await;
    let mut runner = agent(&server, "runner", &["agent.run"]).await;
    let mut owner = server.client(WRITER).await;
    let owner_conn = conn_id(&mut owner).await;
    let mut alice = server.client(&writer_jwt("alice")).await;
    let mut outsider = server.client(READER).await;

    let (run, (srv_id, p)) = tokio::join!(
        owner.call(
            "agent.run",
            json!({"task": "summarise", "input": {"doc": 1}, "maxTurns": 3, "tier": "fast"}),
        ),
        server_request(&mut runner, "agent.run"),
    );
    let session = run["sessionId"].as_str().expect("sessionId").to_owned();
    let run_id = run["runId"].as_str().expect("runId").to_owned();
    assert_eq!(run["agentId"], "runner", "{run}");
    assert_eq!(run["status"], "running", "{run}");
    assert_eq!(p["sessionId"], session.as_str(), "{p}");
    assert_eq!(p["runId"], run_id.as_str(), "{p}");
    assert_eq!(p["task"], "summarise", "{p}");
    assert_eq!(p["input"], json!({"doc": 1}), "{p}");
    assert_eq!(p["maxTurns"], 3, "{p}");
    assert_eq!(p["tier"], "fast", "{p}");
    assert_eq!(p["caller"]["connId"], owner_conn.as_str(), "{p}");
    assert_eq!(p["caller"]["identity"], "writer", "{p}");

    // Lifecycle on global, seen by everyone authenticated.
    for ws in [&mut owner, &mut outsider] {
        let started = push_where(ws, "agent.started", |s| s["runId"] == run_id.as_str()).await;
        assert_eq!(started["sessionId"], session.as_str(), "{started}");
        assert_eq!(started["agentId"], "runner", "{started}");
    }

    // Outsiders cannot join a run's session (its output is the owner's);
    // an invited second member can. Then the agent streams.
    assert_eq!(
        outsider
            .error_code("session.join", json!({"sessionId": session}))
            .await,
        -32003
    );
    owner
        .call(
            "session.invite",
            json!({"sessionId": session, "identities": ["alice"]}),
        )
        .await;
    alice
        .call("session.join", json!({"sessionId": session}))
        .await;
    // Still running.
    assert_eq!(
        owner
            .error_code(
                "agent.wait",
                json!({"sessionId": session, "timeoutMs": 200})
            )
            .await,
        -32006
    );
    for (kind, data) in [
        ("thinking", json!({"text": "hmm"})),
        ("token", json!("a")),
        ("token", json!("b")),
    ] {
        runner
            .send_json(&json!({"jsonrpc": "2.0", "method": "agent.event",
                "params": {"sessionId": session, "type": kind, "data": data}}))
            .await;
    }
    // As a request it is acknowledged too.
    let ack = runner
        .request(
            "agent.event",
            json!({"sessionId": session, "type": "tool", "data": {"name": "grep"}}),
        )
        .await;
    assert!(ack.get("error").is_none(), "{ack}");
    let expected = [
        ("thinking", json!({"text": "hmm"})),
        ("token", json!("a")),
        ("token", json!("b")),
        ("tool", json!({"name": "grep"})),
    ];
    assert_eq!(
        ack["result"]["offset"], 4,
        "numbered on the session's log: {ack}"
    );
    for ws in [&mut owner, &mut alice] {
        for (offset, (kind, data)) in (1..).zip(&expected) {
            let e = ws.expect_push("agent.event").await;
            assert_eq!(e["offset"], offset, "{e}");
            assert_eq!(e["sessionId"], session.as_str(), "{e}");
            assert_eq!(e["runId"], run_id.as_str(), "{e}");
            assert_eq!(e["agentId"], "runner", "{e}");
            assert_eq!(e["type"], *kind, "{e}");
            assert_eq!(e["data"], *data, "{e}");
            assert!(is_ms_timestamp(&e["timestamp"]), "{e}");
        }
    }
    outsider.expect_no_push("agent.event", QUIET).await;

    // Only the serving connection may send events for the session.
    let mut stranger = agent(&server, "stranger", &["other"]).await;
    let reply = stranger
        .request(
            "agent.event",
            json!({"sessionId": session, "type": "token", "data": "forged"}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32001, "{reply}");
    owner.expect_no_push("agent.event", QUIET).await;

    // The final answer completes the run.
    answer(&mut runner, &srv_id, json!({"summary": "short"})).await;
    let done = push_where(&mut outsider, "agent.completed", |c| {
        c["runId"] == run_id.as_str()
    })
    .await;
    assert_eq!(done["sessionId"], session.as_str(), "{done}");
    assert_eq!(done["agentId"], "runner", "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"], json!({"summary": "short"}), "{done}");
    assert_eq!(done["error"], Value::Null, "{done}");

    for ws in [&mut owner, &mut alice] {
        let record = ws
            .call(
                "agent.wait",
                json!({"sessionId": session, "timeoutMs": 3000}),
            )
            .await;
        assert_eq!(record["runId"], run_id.as_str(), "{record}");
        assert_eq!(record["sessionId"], session.as_str(), "{record}");
        assert_eq!(record["agentId"], "runner", "{record}");
        assert_eq!(record["task"], "summarise", "{record}");
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["result"], json!({"summary": "short"}), "{record}");
        assert_eq!(record["error"], Value::Null, "{record}");
        assert!(is_ms_timestamp(&record["startedAt"]), "{record}");
        assert!(is_ms_timestamp(&record["finishedAt"]), "{record}");
        assert!(
            record["finishedAt"].as_u64() >= record["startedAt"].as_u64(),
            "{record}"
        );
        assert!(record["instanceId"].is_string(), "{record}");
        assert!(!record["caller"].is_null(), "{record}");
    }
    // Not a member / no run.
    assert_eq!(
        outsider
            .error_code(
                "agent.wait",
                json!({"sessionId": session, "timeoutMs": 200})
            )
            .await,
        -32003
    );
    let empty = owner
        .call("session.create", json!({"invite": ["alice", "bob"], }))
        .await;
    assert_eq!(
        owner
            .error_code(
                "agent.wait",
                json!({"sessionId": empty["sessionId"], "timeoutMs": 200})
            )
            .await,
        -32001
    );

    // A follow-up run on the same session, by a member, with sessionId.
    let (run2, (srv2, p2)) = tokio::join!(
        alice.call("agent.run", json!({"task": "more", "sessionId": session})),
        server_request(&mut runner, "agent.run"),
    );
    assert_eq!(run2["sessionId"], session.as_str(), "{run2}");
    assert_ne!(run2["runId"], run_id.as_str(), "{run2}");
    assert_eq!(p2["task"], "more", "{p2}");
    answer(&mut runner, &srv2, json!("ok")).await;
    let record = alice
        .call(
            "agent.wait",
            json!({"sessionId": session, "timeoutMs": 3000}),
        )
        .await;
    assert_eq!(record["runId"], run2["runId"], "{record}");
    assert_eq!(record["result"], "ok", "{record}");
}

/// The caller of a run drops off mid-stream and comes back on a new
/// connection with the run's resume token: the events it missed are
/// replayed, then the stream goes on live; the session's history holds
/// the run's events too.
#[tokio::test]
async fn a_caller_catches_up_on_a_run_stream_after_a_reconnect() {
    let server = TestServer::default().await;
    let mut runner = agent(&server, "runner", &["agent.run"]).await;
    let mut owner = server.client(WRITER).await;
    let (run, (srv_id, _)) = tokio::join!(
        owner.call("agent.run", json!({"task": "write"})),
        server_request(&mut runner, "agent.run"),
    );
    let session = run["sessionId"].as_str().expect("sessionId").to_owned();
    let token = run["resumeToken"].as_str().expect("resumeToken").to_owned();
    let token_event = |data: &str| json!({"sessionId": session, "type": "token", "data": data});
    runner.call("agent.event", token_event("a")).await;
    assert_eq!(owner.expect_push("agent.event").await["offset"], 1);
    owner.close().await;
    assert!(
        detached(&server, &session).await,
        "the caller's session detaches"
    );
    for (offset, data) in [(2, "b"), (3, "c")] {
        let r = runner.call("agent.event", token_event(data)).await;
        assert_eq!(r["offset"], offset, "{r}");
    }

    let mut back = server.client(WRITER).await;
    let hello = back
        .call(
            "connect",
            json!({"resume": {"sessionId": session, "resumeToken": token, "offset": 1}}),
        )
        .await;
    assert_eq!(hello["resume"]["replayed"], 2, "{hello}");
    runner.call("agent.event", token_event("d")).await;
    for (offset, data) in [(2, "b"), (3, "c"), (4, "d")] {
        let e = back.expect_push("agent.event").await;
        assert_eq!(
            (e["offset"].clone(), e["data"].clone()),
            (json!(offset), json!(data))
        );
    }
    let h = back
        .call("session.history", json!({"sessionId": session}))
        .await;
    assert_eq!(offsets_of(&h), [1, 2, 3, 4], "{h}");
    assert_eq!(h["events"][0]["method"], "agent.event", "{h}");
    assert_eq!(h["events"][0]["type"], "token", "{h}");
    // Once it is over, a run on the existing session hands out no token.
    answer(&mut runner, &srv_id, json!({"text": "abcd"})).await;
    push_where(&mut back, "agent.completed", |c| {
        c["sessionId"] == session.as_str()
    })
    .await;
    let (again, _) = tokio::join!(
        back.call("agent.run", json!({"task": "more", "sessionId": session})),
        server_request(&mut runner, "agent.run"),
    );
    assert_eq!(again["sessionId"], session.as_str(), "{again}");
    assert!(again.get("resumeToken").is_none(), "{again}");
}

#[tokio::test]
async fn agent_run_selection_and_validation() {
    let server = TestServer::default().await;
    let mut owner = server.client(WRITER).await;
    let mut alice = server.client(&writer_jwt("alice")).await;
    let mut reader = server.client(READER).await;

    // Nobody serves runs yet.
    assert_eq!(
        owner.error_code("agent.run", json!({"task": "x"})).await,
        -32005
    );
    let mut special = agent(&server, "special", &["research"]).await;
    // Not capability agent.run: still -32005 without a selector.
    assert_eq!(
        owner.error_code("agent.run", json!({"task": "x"})).await,
        -32005
    );
    assert_eq!(
        owner
            .error_code("agent.run", json!({"task": "x", "capability": "nothing"}))
            .await,
        -32005
    );
    assert_eq!(
        owner
            .error_code("agent.run", json!({"task": "x", "agentId": "nobody"}))
            .await,
        -32005
    );
    assert_eq!(
        owner.error_code("agent.run", json!({"task": ""})).await,
        -32602
    );
    assert_eq!(owner.error_code("agent.run", json!({})).await, -32602);
    assert_eq!(
        reader.error_code("agent.run", json!({"task": "x"})).await,
        -32003
    );
    special.expect_no_push("agent.run", QUIET).await;

    // (A fresh connection: see failed_agent_runs_leave_no_sessions_behind.)
    let mut owner = server.client(WRITER).await;
    // By capability and by agentId; a given new sessionId is created.
    let (run, (id, _)) = tokio::join!(
        owner.call(
            "agent.run",
            json!({"task": "dig", "capability": "research", "sessionId": "run-new-1"}),
        ),
        server_request(&mut special, "agent.run"),
    );
    assert_eq!(run["sessionId"], "run-new-1", "{run}");
    assert_eq!(run["agentId"], "special", "{run}");
    answer(&mut special, &id, json!(1)).await;
    let got = owner
        .call("session.get", json!({"sessionId": "run-new-1"}))
        .await;
    assert_eq!(got["sessionId"], "run-new-1", "{got}");

    // An existing session the caller is not a member of.
    owner
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "private-1"}),
        )
        .await;
    let reply = alice
        .request(
            "agent.run",
            json!({"task": "x", "agentId": "special", "sessionId": "private-1"}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32003, "{reply}");
    special.expect_no_push("agent.run", QUIET).await;
}

/// A refused `agent.run` must not leave a session behind: each one would
/// count against the caller's session quota.
#[tokio::test]
async fn failed_agent_runs_leave_no_sessions_behind() {
    let server = TestServer::default().await;
    let mut owner = server.client(WRITER).await;
    let before = owner.call("session.list", json!({})).await;
    for _ in 0..3 {
        assert_eq!(
            owner.error_code("agent.run", json!({"task": "x"})).await,
            -32005
        );
    }
    let after = owner.call("session.list", json!({})).await;
    assert_eq!(
        after["count"], before["count"],
        "sessions after 3 refused runs: {before} → {after}"
    );
    // More refused runs than the session quota (5 per connection): still
    // -32005, never a session limit.
    for i in 0..4 {
        let reply = owner.request("agent.run", json!({"task": "x"})).await;
        assert_eq!(reply["error"]["code"], -32005, "attempt {}: {reply}", i + 4);
    }
    // The caller can still open sessions.
    let reply = owner
        .request("session.create", json!({"invite": ["alice", "bob"], }))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
}

#[tokio::test]
async fn agent_run_limits_per_caller_and_per_session() {
    let server = TestServer::default().await;
    let mut runner = agent(&server, "busy-runner", &["agent.run"]).await;
    let mut owner = server.client(WRITER).await;
    let mut owner2 = server.client(WRITER).await;
    let mut alice = server.client(&writer_jwt("alice")).await;

    // Five runs in progress for "writer".
    let mut pending: HashMap<String, String> = HashMap::new();
    for i in 0..5 {
        let (run, (srv, p)) = tokio::join!(
            owner.call("agent.run", json!({"task": format!("t{i}")})),
            server_request(&mut runner, "agent.run"),
        );
        assert_eq!(run["sessionId"], p["sessionId"], "{run} {p}");
        pending.insert(
            run["sessionId"].as_str().expect("sessionId").to_owned(),
            srv,
        );
    }
    // A sixth, from any connection of the same identity, is refused.
    for ws in [&mut owner, &mut owner2] {
        let reply = ws.request("agent.run", json!({"task": "t6"})).await;
        assert_eq!(reply["error"]["code"], -32002, "{reply}");
    }
    runner.expect_no_push("agent.run", QUIET).await;

    // Another identity is not affected; a second run on its busy session
    // is a conflict.
    let (run, (alice_srv, _)) = tokio::join!(
        alice.call("agent.run", json!({"task": "a1"})),
        server_request(&mut runner, "agent.run"),
    );
    let alice_session = run["sessionId"].as_str().expect("sessionId").to_owned();
    let reply = alice
        .request(
            "agent.run",
            json!({"task": "a2", "sessionId": alice_session}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32007, "{reply}");
    runner.expect_no_push("agent.run", QUIET).await;

    // Finishing one of the five frees a slot.
    let (done_session, srv) = pending.iter().next().expect("a run");
    answer(&mut runner, srv, json!("done")).await;
    let record = owner
        .call(
            "agent.wait",
            json!({"sessionId": done_session, "timeoutMs": 3000}),
        )
        .await;
    assert_eq!(record["status"], "completed", "{record}");
    // The finished session takes a new run once the slot is free.
    send_until_accepted(&mut owner, &mut runner, done_session).await;
    let reply = owner2.request("agent.run", json!({"task": "t8"})).await;
    assert_eq!(reply["error"]["code"], -32002, "five again: {reply}");
    answer(&mut runner, &alice_srv, json!("a-done")).await;
}

/// Start a run on `session` as soon as the caller has a free slot (-32002
/// until then), and take the agent's request.
async fn send_until_accepted(owner: &mut Ws, runner: &mut Ws, session: &str) {
    let reply = call_until(
        owner,
        "agent.run",
        json!({"task": "t7", "sessionId": session}),
        |r| r["error"]["code"] != -32002,
    )
    .await;
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(reply["result"]["sessionId"], session, "{reply}");
    assert_eq!(reply["result"]["status"], "running", "{reply}");
    let (_, p) = server_request(runner, "agent.run").await;
    assert_eq!(p["sessionId"], session, "{p}");
}

#[tokio::test]
async fn agent_cancel_stops_the_run() {
    let server = TestServer::default().await;
    let mut runner = agent(&server, "cancel-runner", &["agent.run"]).await;
    let mut owner = server.client(WRITER).await;
    let mut alice = server.client(&writer_jwt("alice")).await;

    let (run, (srv_id, _)) = tokio::join!(
        owner.call("agent.run", json!({"task": "long"})),
        server_request(&mut runner, "agent.run"),
    );
    let session = run["sessionId"].as_str().expect("sessionId").to_owned();
    let run_id = run["runId"].as_str().expect("runId").to_owned();
    owner
        .call(
            "session.invite",
            json!({"sessionId": session, "identities": ["alice"]}),
        )
        .await;
    alice
        .call("session.join", json!({"sessionId": session}))
        .await;

    // Events flow before the cancel.
    runner
        .send_json(&json!({"jsonrpc": "2.0", "method": "agent.event",
            "params": {"sessionId": session, "type": "token", "data": "before"}}))
        .await;
    let e = owner.expect_push("agent.event").await;
    assert_eq!(e["data"], "before", "{e}");
    let e = alice.expect_push("agent.event").await;
    assert_eq!(e["data"], "before", "{e}");

    // Only the run's caller (or an admin) may cancel.
    assert_eq!(
        alice
            .error_code("agent.cancel", json!({"sessionId": session}))
            .await,
        -32003
    );

    let r = owner
        .call("agent.cancel", json!({"sessionId": session}))
        .await;
    assert_eq!(
        r,
        json!({"cancelled": true, "sessionId": session, "runId": run_id})
    );
    let notice = runner.expect_push("agent.cancel").await;
    assert_eq!(notice["sessionId"], session.as_str(), "{notice}");
    assert_eq!(notice["runId"], run_id.as_str(), "{notice}");
    let ended = push_where(&mut owner, "agent.error", |e| e["runId"] == run_id.as_str()).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_eq!(ended["sessionId"], session.as_str(), "{ended}");

    // Later events from the agent are dropped.
    runner
        .send_json(&json!({"jsonrpc": "2.0", "method": "agent.event",
            "params": {"sessionId": session, "type": "token", "data": "after"}}))
        .await;
    // Even its late answer does not complete the run.
    answer(&mut runner, &srv_id, json!("late")).await;
    owner.expect_no_push("agent.event", QUIET).await;
    alice
        .expect_no_push("agent.event", Duration::from_millis(50))
        .await;
    no_push_where(&mut owner, "agent.completed", QUIET, |c| {
        c["runId"] == run_id.as_str()
    })
    .await;

    let record = owner
        .call(
            "agent.wait",
            json!({"sessionId": session, "timeoutMs": 3000}),
        )
        .await;
    assert_eq!(record["runId"], run_id.as_str(), "{record}");
    assert_eq!(record["status"], "cancelled", "{record}");
    assert_eq!(
        owner
            .error_code("agent.cancel", json!({"sessionId": session}))
            .await,
        -32007
    );

    // chat.abort is agent.cancel; an admin may cancel anyone's run.
    let (run, _) = tokio::join!(
        owner.call("agent.run", json!({"task": "again", "sessionId": session})),
        server_request(&mut runner, "agent.run"),
    );
    let mut admin = server.client(ADMIN).await;
    let r = admin
        .call("chat.abort", json!({"sessionId": session}))
        .await;
    assert_eq!(r["cancelled"], true, "{r}");
    assert_eq!(r["runId"], run["runId"], "{r}");
    let notice = runner.expect_push("agent.cancel").await;
    assert_eq!(notice["runId"], run["runId"], "{notice}");
    let record = owner
        .call(
            "agent.wait",
            json!({"sessionId": session, "timeoutMs": 3000}),
        )
        .await;
    assert_eq!(record["status"], "cancelled", "{record}");
}

#[tokio::test]
async fn agent_disconnecting_mid_run_ends_it_with_error() {
    let server = TestServer::default().await;
    let mut runner = agent(&server, "fragile", &["agent.run"]).await;
    let mut owner = server.client(WRITER).await;
    let (run, _) = tokio::join!(
        owner.call("agent.run", json!({"task": "long"})),
        server_request(&mut runner, "agent.run"),
    );
    let session = run["sessionId"].as_str().expect("sessionId").to_owned();
    let run_id = run["runId"].as_str().expect("runId").to_owned();
    let started = Instant::now();
    runner.close().await;
    let record = owner
        .call(
            "agent.wait",
            json!({"sessionId": session, "timeoutMs": 5000}),
        )
        .await;
    assert_eq!(record["runId"], run_id.as_str(), "{record}");
    assert_eq!(record["status"], "error", "{record}");
    assert!(!record["error"].is_null(), "{record}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let ended = push_where(&mut owner, "agent.error", |e| e["runId"] == run_id.as_str()).await;
    assert_eq!(ended["status"], "error", "{ended}");
    assert!(!ended["error"].is_null(), "{ended}");
}

// ---------------------------------------------------------------- chat

#[tokio::test]
async fn chat_send_history_and_inject() {
    let server = TestServer::default().await;
    let mut chatty = agent(&server, "chatty", &["chat"]).await;
    let mut owner = server.client(WRITER).await;
    let mut reader = server.client(READER).await;
    owner
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "chat-1"}),
        )
        .await;

    let (reply, ()) = tokio::join!(
        owner.call(
            "chat.send",
            json!({"sessionId": "chat-1", "message": "hello"})
        ),
        async {
            let (id, p) = server_request(&mut chatty, "chat.send").await;
            assert_eq!(p["sessionId"], "chat-1", "{p}");
            assert_eq!(p["message"], "hello", "{p}");
            assert!(p["runId"].as_str().is_some_and(|r| !r.is_empty()), "{p}");
            assert_eq!(p["history"], json!([]), "{p}");
            assert_eq!(p["caller"]["identity"], "writer", "{p}");
            // Streaming works as in runs.
            chatty
                .send_json(&json!({"jsonrpc": "2.0", "method": "agent.event",
                    "params": {"sessionId": "chat-1", "type": "token", "data": "hi"}}))
                .await;
            answer(&mut chatty, &id, json!("hi there")).await;
        },
    );
    assert_eq!(reply["sessionId"], "chat-1", "{reply}");
    assert_eq!(reply["agentId"], "chatty", "{reply}");
    assert_eq!(reply["reply"], "hi there", "{reply}");
    assert!(reply["runId"].is_string(), "{reply}");
    let e = owner.expect_push("agent.event").await;
    assert_eq!(e["data"], "hi", "{e}");
    assert_eq!(e["agentId"], "chatty", "{e}");

    // Second message: the agent sees the history so far; an object answer
    // is reduced to its content.
    let (reply, ()) = tokio::join!(
        owner.call(
            "chat.send",
            json!({"sessionId": "chat-1", "message": "again"})
        ),
        async {
            let (id, p) = server_request(&mut chatty, "chat.send").await;
            let history = p["history"].as_array().expect("history");
            assert_eq!(history.len(), 2, "{p}");
            assert_eq!(history[0]["role"], "user", "{p}");
            assert_eq!(history[0]["content"], "hello", "{p}");
            assert_eq!(history[1]["role"], "assistant", "{p}");
            assert_eq!(history[1]["content"], "hi there", "{p}");
            answer(&mut chatty, &id, json!({"content": "second", "usage": 3})).await;
        },
    );
    assert_eq!(reply["reply"], "second", "{reply}");

    let r = owner
        .call(
            "chat.inject",
            json!({"sessionId": "chat-1", "message": "be brief", "role": "system"}),
        )
        .await;
    assert_eq!(r["injected"], true, "{r}");
    chatty.expect_no_push("chat.send", QUIET).await;

    let h = owner
        .call("chat.history", json!({"sessionId": "chat-1"}))
        .await;
    assert_eq!(h["sessionId"], "chat-1", "{h}");
    assert_eq!(h["count"], 5, "{h}");
    let messages = h["messages"].as_array().expect("messages");
    let summary: Vec<(String, Value)> = messages
        .iter()
        .map(|m| {
            (
                m["role"].as_str().expect("role").to_owned(),
                m["content"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("user".to_owned(), json!("hello")),
            ("assistant".to_owned(), json!("hi there")),
            ("user".to_owned(), json!("again")),
            ("assistant".to_owned(), json!("second")),
            ("system".to_owned(), json!("be brief")),
        ],
        "{h}"
    );
    assert_eq!(messages[0]["from"], "writer", "{h}");
    assert_eq!(messages[1]["from"], "chatty", "{h}");
    assert_eq!(messages[4]["injected"], true, "{h}");
    for m in messages {
        assert!(is_ms_timestamp(&m["timestamp"]), "{m}");
    }
    for pair in messages.windows(2) {
        assert!(
            pair[0]["timestamp"].as_u64() <= pair[1]["timestamp"].as_u64(),
            "{h}"
        );
    }
    // limit: the latest entries, oldest first.
    let h = owner
        .call("chat.history", json!({"sessionId": "chat-1", "limit": 2}))
        .await;
    assert_eq!(h["count"], 2, "{h}");
    assert_eq!(h["messages"][0]["content"], "second", "{h}");
    assert_eq!(h["messages"][1]["content"], "be brief", "{h}");

    // Members only; bad role.
    assert_eq!(
        reader
            .error_code("chat.history", json!({"sessionId": "chat-1"}))
            .await,
        -32003
    );
    assert_eq!(
        owner
            .error_code(
                "chat.inject",
                json!({"sessionId": "chat-1", "message": "x", "role": "root"})
            )
            .await,
        -32602
    );
}

#[tokio::test]
async fn chat_without_an_agent_is_unavailable() {
    let server = TestServer::default().await;
    let mut owner = server.client(WRITER).await;
    owner
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "chat-none"}),
        )
        .await;
    let reply = owner
        .request(
            "chat.send",
            json!({"sessionId": "chat-none", "message": "anyone?", "timeoutMs": 1000}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32005, "{reply}");
}

// ---------------------------------------------------------------- approvals

/// Request an approval from `node`; returns its id.
async fn request_approval(node: &mut Ws, tool: &str, timeout_ms: u64) -> String {
    let r = node
        .call(
            "approval.request",
            json!({"tool": tool, "args": {"cmd": "ls"}, "summary": format!("run {tool}"),
                   "timeoutMs": timeout_ms}),
        )
        .await;
    assert!(is_ms_timestamp(&r["expiresAt"]), "{r}");
    r["approvalId"].as_str().expect("approvalId").to_owned()
}

/// `welcome` is always the first frame: an approver connecting while an
/// approval is pending gets it first, then the pending request.
#[tokio::test]
async fn welcome_comes_before_the_catch_up_of_pending_approvals() {
    let server = TestServer::default().await;
    let (mut node, _) = caps_node(&server, &["tools"]).await;
    let id = request_approval(&mut node, "shell", 60_000).await;
    for _ in 0..5 {
        let mut approver =
            Ws::connect_with(&server.url("/ws"), &[("authorization", &bearer(APPROVER))])
                .await
                .expect("connects");
        let first = approver.next_json().await.expect("a first frame");
        assert_eq!(first["method"], "welcome", "{first}");
        let next = approver.next_json().await.expect("the catch-up");
        assert_eq!(next["method"], "approval.requested", "{next}");
        assert_eq!(next["params"]["approvalId"], id.as_str(), "{next}");
    }
}

#[tokio::test]
async fn approval_request_resolve_and_wait() {
    let server = TestServer::default().await;
    let mut approver = server.client(APPROVER).await;
    let mut admin = server.client(ADMIN).await;
    let mut writer = server.client(WRITER).await;
    let (mut node, node_conn) = caps_node(&server, &["tools"]).await;

    let r = node
        .call(
            "approval.request",
            json!({"sessionId": "s-appr", "tool": "shell", "args": {"cmd": "rm -rf /tmp/x"},
                   "summary": "delete a temp dir", "timeoutMs": 60_000}),
        )
        .await;
    let id = r["approvalId"].as_str().expect("approvalId").to_owned();
    let expires = r["expiresAt"].as_u64().expect("expiresAt");
    for ws in [&mut approver, &mut admin] {
        let rec = push_where(ws, "approval.requested", |p| p["approvalId"] == id.as_str()).await;
        assert_eq!(rec["sessionId"], "s-appr", "{rec}");
        assert_eq!(rec["tool"], "shell", "{rec}");
        assert_eq!(rec["args"], json!({"cmd": "rm -rf /tmp/x"}), "{rec}");
        assert_eq!(rec["summary"], "delete a temp dir", "{rec}");
        assert_eq!(rec["requesterConn"], node_conn.as_str(), "{rec}");
        assert_eq!(rec["requester"], "node-1", "{rec}");
        assert_eq!(rec["status"], "pending", "{rec}");
        assert_eq!(rec["decidedBy"], Value::Null, "{rec}");
        assert_eq!(rec["resolvedAt"], Value::Null, "{rec}");
        assert_eq!(rec["expiresAt"], expires, "{rec}");
        assert!(is_ms_timestamp(&rec["createdAt"]), "{rec}");
        let created = rec["createdAt"].as_u64().unwrap_or(0);
        assert!(
            expires >= created + 59_000 && expires <= created + 61_000,
            "{rec}"
        );
    }
    writer
        .expect_no_push("approval.requested", Duration::from_millis(100))
        .await;

    let list = approver.call("approval.list", json!({})).await;
    let pending = list["approvals"].as_array().expect("approvals");
    assert_eq!(list["count"].as_u64(), Some(pending.len() as u64), "{list}");
    assert!(
        pending.iter().any(|a| a["approvalId"] == id.as_str()),
        "{list}"
    );
    assert!(pending.iter().all(|a| a["status"] == "pending"), "{list}");

    // Still pending: wait times out.
    assert_eq!(
        node.error_code("approval.wait", json!({"approvalId": id, "timeoutMs": 200}))
            .await,
        -32006
    );
    // Permissions and validation.
    for ws in [&mut writer, &mut node] {
        let reply = ws
            .request(
                "approval.resolve",
                json!({"approvalId": id, "decision": "approve"}),
            )
            .await;
        assert_eq!(reply["error"]["code"], -32003, "{reply}");
        assert_eq!(ws.error_code("approval.list", json!({})).await, -32003);
        assert_eq!(ws.error_code("approval.history", json!({})).await, -32003);
    }
    assert_eq!(
        approver
            .error_code(
                "approval.resolve",
                json!({"approvalId": id, "decision": "maybe"})
            )
            .await,
        -32602
    );
    assert_eq!(
        approver
            .error_code(
                "approval.resolve",
                json!({"approvalId": "no-such-approval", "decision": "approve"})
            )
            .await,
        -32001
    );
    assert_eq!(
        writer
            .error_code("approval.request", json!({"tool": "x"}))
            .await,
        -32003
    );

    // The requester waits; the approver decides.
    send_request(
        &mut node,
        "wait",
        "approval.wait",
        json!({"approvalId": id, "timeoutMs": 5000}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let decided = approver
        .call(
            "approval.resolve",
            json!({"approvalId": id, "decision": "approve", "note": "fine"}),
        )
        .await;
    assert_eq!(decided["approvalId"], id.as_str(), "{decided}");
    assert_eq!(decided["status"], "approved", "{decided}");
    assert_eq!(decided["decidedBy"], "approver", "{decided}");
    assert_eq!(decided["note"], "fine", "{decided}");
    assert!(is_ms_timestamp(&decided["resolvedAt"]), "{decided}");
    let waited = node.reply_to(json!("wait")).await;
    assert_eq!(waited["result"]["status"], "approved", "{waited}");
    assert_eq!(waited["result"]["decidedBy"], "approver", "{waited}");
    for ws in [&mut node, &mut approver, &mut admin] {
        let rec = push_where(ws, "approval.resolved", |p| p["approvalId"] == id.as_str()).await;
        assert_eq!(rec["status"], "approved", "{rec}");
        assert_eq!(rec["decidedBy"], "approver", "{rec}");
        assert_eq!(rec["note"], "fine", "{rec}");
    }
    writer
        .expect_no_push("approval.resolved", Duration::from_millis(100))
        .await;
    // Decided once.
    assert_eq!(
        admin
            .error_code(
                "approval.resolve",
                json!({"approvalId": id, "decision": "deny"})
            )
            .await,
        -32007
    );
    // A decided one is returned by wait at once.
    let again = node
        .call(
            "approval.wait",
            json!({"approvalId": id, "timeoutMs": 1000}),
        )
        .await;
    assert_eq!(again["status"], "approved", "{again}");

    // A second one is denied by the admin.
    let id2 = request_approval(&mut node, "deploy", 60_000).await;
    push_where(&mut approver, "approval.requested", |p| {
        p["approvalId"] == id2.as_str()
    })
    .await;
    let denied = admin
        .call(
            "approval.resolve",
            json!({"approvalId": id2, "decision": "deny"}),
        )
        .await;
    assert_eq!(denied["status"], "denied", "{denied}");
    assert_eq!(denied["decidedBy"], "admin", "{denied}");
    let rec = push_where(&mut node, "approval.resolved", |p| {
        p["approvalId"] == id2.as_str()
    })
    .await;
    assert_eq!(rec["status"], "denied", "{rec}");

    // Nothing pending; history newest first.
    let list = approver.call("approval.list", json!({})).await;
    assert_eq!(list["count"], 0, "{list}");
    let history = approver.call("approval.history", json!({})).await;
    let entries = history["entries"].as_array().expect("entries");
    assert_eq!(
        history["count"].as_u64(),
        Some(entries.len() as u64),
        "{history}"
    );
    let ids: Vec<&str> = entries
        .iter()
        .map(|e| e["approvalId"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, vec![id2.as_str(), id.as_str()], "{history}");
    assert_eq!(entries[0]["status"], "denied", "{history}");
    assert_eq!(entries[1]["status"], "approved", "{history}");
    let history = approver.call("approval.history", json!({"limit": 1})).await;
    assert_eq!(history["count"], 1, "{history}");
    assert_eq!(
        history["entries"][0]["approvalId"],
        id2.as_str(),
        "{history}"
    );
}

#[tokio::test]
async fn approval_expires_after_its_timeout() {
    let server = TestServer::default().await;
    let mut approver = server.client(APPROVER).await;
    let mut node = server.client(NODE).await;
    let started = Instant::now();
    let id = request_approval(&mut node, "shell", 300).await;
    push_where(&mut approver, "approval.requested", |p| {
        p["approvalId"] == id.as_str()
    })
    .await;
    // The requester's wait ends with the expiry.
    let waited = node
        .call(
            "approval.wait",
            json!({"approvalId": id, "timeoutMs": 5000}),
        )
        .await;
    assert_eq!(waited["status"], "expired", "{waited}");
    let rec = push_where(&mut approver, "approval.resolved", |p| {
        p["approvalId"] == id.as_str()
    })
    .await;
    assert_eq!(rec["status"], "expired", "{rec}");
    assert_eq!(rec["decidedBy"], "system", "{rec}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let rec = push_where(&mut node, "approval.resolved", |p| {
        p["approvalId"] == id.as_str()
    })
    .await;
    assert_eq!(rec["status"], "expired", "{rec}");
    assert_eq!(
        approver
            .error_code(
                "approval.resolve",
                json!({"approvalId": id, "decision": "approve"})
            )
            .await,
        -32007
    );
    let list = approver.call("approval.list", json!({})).await;
    assert_eq!(list["count"], 0, "{list}");
    let history = approver.call("approval.history", json!({})).await;
    assert_eq!(
        history["entries"][0]["approvalId"],
        id.as_str(),
        "{history}"
    );
    assert_eq!(history["entries"][0]["status"], "expired", "{history}");
}

#[tokio::test]
async fn late_approver_receives_pending_requests() {
    let server = TestServer::default().await;
    let mut node = server.client(NODE).await;
    let mut admin = server.client(ADMIN).await;
    let decided = request_approval(&mut node, "one", 60_000).await;
    let pending = request_approval(&mut node, "two", 60_000).await;
    admin
        .call(
            "approval.resolve",
            json!({"approvalId": decided, "decision": "approve"}),
        )
        .await;

    let mut late = server.client(APPROVER).await;
    let rec = push_where(&mut late, "approval.requested", |p| {
        p["approvalId"] == pending.as_str()
    })
    .await;
    assert_eq!(rec["tool"], "two", "{rec}");
    assert_eq!(rec["status"], "pending", "{rec}");
    // Not the decided one.
    no_push_where(&mut late, "approval.requested", QUIET, |p| {
        p["approvalId"] == decided.as_str()
    })
    .await;
    // And it can resolve it.
    let r = late
        .call(
            "approval.resolve",
            json!({"approvalId": pending, "decision": "deny", "note": "late"}),
        )
        .await;
    assert_eq!(r["status"], "denied", "{r}");
    assert_eq!(r["decidedBy"], "approver", "{r}");
    // A late writer gets nothing.
    let mut writer = server.client(WRITER).await;
    writer.expect_no_push("approval.requested", QUIET).await;
}

#[tokio::test]
async fn closing_a_session_cancels_its_run() {
    let server = TestServer::default().await;
    let mut worker = agent(&server, "closer", &["agent.run"]).await;
    let mut caller = server.client(WRITER).await;
    let (started, (_, params)) = tokio::join!(
        caller.call("agent.run", json!({"task": "long"})),
        server_request(&mut worker, "agent.run"),
    );
    let session = started["sessionId"].as_str().expect("sessionId").to_owned();
    assert_eq!(params["sessionId"], session.as_str(), "{params}");

    let closed = caller
        .call("session.close", json!({"sessionId": session}))
        .await;
    assert_eq!(closed["closed"], true, "{closed}");
    // The agent is told to stop, and the run ends as cancelled on global.
    let cancel = worker.expect_push("agent.cancel").await;
    assert_eq!(cancel["sessionId"], session.as_str(), "{cancel}");
    let ended = push_where(&mut caller, "agent.error", |p| {
        p["sessionId"] == session.as_str()
    })
    .await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    // Its slot is free: five new runs fit for this caller.
    for _ in 0..5 {
        let reply = caller.request("agent.run", json!({"task": "again"})).await;
        assert_eq!(reply["result"]["status"], "running", "{reply}");
        server_request(&mut worker, "agent.run").await;
    }
}

/// An agent written with `switchyard::client`: `Client::serve` answers
/// requests concurrently, streams progress, and sees the caller's cancel.
#[tokio::test]
async fn client_library_serves_requests_and_sees_cancels() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use switchyard::client::Client;

    let server = TestServer::default().await;
    let client = Client::connect(&server.url("/ws"), Some(NODE))
        .await
        .expect("connects");
    client
        .call(
            "agent.register",
            json!({"agentId": "lib", "capabilities": ["lib"]}),
        )
        .await
        .expect("registers");
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let seen = saw_cancel.clone();
    let serving = tokio::spawn(client.serve(
        move |request| {
            let seen = seen.clone();
            async move {
                match request.params["command"].as_str() {
                    Some("echo") => {
                        request.progress(json!({"step": 1})).await.ok();
                        Ok(request.params["params"].clone())
                    }
                    Some("wait") => {
                        request.cancelled().await;
                        seen.store(true, Ordering::SeqCst);
                        Err(switchyard::protocol::RpcError::timeout("stopped"))
                    }
                    _ => Err(switchyard::protocol::RpcError::method_not_found("?")),
                }
            }
        },
        |_| {},
    ));

    let mut caller = server.client(WRITER).await;
    let reply = caller
        .call(
            "node.invoke",
            json!({"nodeId": "lib", "command": "echo", "params": {"x": 1}, "invokeId": "e1"}),
        )
        .await;
    assert_eq!(reply["result"], json!({"x": 1}), "{reply}");
    let progress = caller.expect_push("invoke.progress").await;
    assert_eq!(progress["invokeId"], "e1", "{progress}");
    assert_eq!(progress["data"], json!({"step": 1}), "{progress}");

    // A call the agent waits on, cancelled by the caller: the handler sees it.
    send_request(
        &mut caller,
        "w",
        "node.invoke",
        json!({"nodeId": "lib", "command": "wait", "invokeId": "w1", "timeoutMs": 10_000}),
    )
    .await;
    let cancelled = call_until(
        &mut caller,
        "invoke.cancel",
        json!({"invokeId": "w1"}),
        |r| r["result"]["cancelled"] == true,
    )
    .await;
    assert_eq!(cancelled["result"]["invokeId"], "w1", "{cancelled}");
    let got = replies(&mut caller, &["w"]).await;
    assert_eq!(got["w"]["error"]["data"]["cancelled"], true, "{got:?}");
    assert!(
        within(WAIT, || async { saw_cancel.load(Ordering::SeqCst) }).await,
        "the handler's cancelled() resolved"
    );
    serving.abort();
}
