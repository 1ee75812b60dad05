//! The agent layer across instances: several in-process instances sharing
//! one fresh Redis per test (a Redis Cluster or a Sentinel setup when
//! `SWITCHYARD_TEST_REDIS` says so). In every flow the caller sits on one
//! instance and the agent on another: routed calls (`node.invoke` by agent
//! id, by capability, method providers), timeouts, disconnects, progress,
//! cancel, `maxConcurrency`, the registry view, agent runs and their event
//! stream, the per-caller run limit, approvals raced by approvers on two
//! instances, expiry, catch-up, idempotent retries and chat. The last test
//! runs real processes and SIGKILLs the agent's instance.
//!
//! Not a behaviour test: it starts its own Redis whatever
//! `SWITCHYARD_TEST_BACKEND` says.

mod common;

use common::instance::Instance;
use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(400);
/// `limits.node_ttl_ms` of every instance (in-process and real processes).
const NODE_TTL: Duration = common::instance::NODE_TTL;

// ---------------------------------------------------------------- helpers

/// (connection id, instance id) from the `welcome` push; the push stays
/// available.
async fn welcome(ws: &mut Ws) -> (String, String) {
    let w = ws.expect_push("welcome").await;
    ws.pushed
        .push_front(json!({"jsonrpc": "2.0", "method": "welcome", "params": w}));
    (
        w["connId"].as_str().expect("connId").to_owned(),
        w["nodeId"].as_str().expect("nodeId").to_owned(),
    )
}

/// A node connection on `server` registering `params`; (socket, entry).
async fn agent_on(server: &TestServer, params: Value) -> (Ws, Value) {
    let mut ws = server.client(NODE).await;
    let entry = ws.call("agent.register", params).await;
    assert_eq!(entry["online"], true, "{entry}");
    (ws, entry)
}

/// The usual layout: an agent registered with `params` on the second
/// instance and a caller (WRITER) on the first.
async fn agent_across(servers: &[TestServer], params: Value) -> (Ws, Ws) {
    let (agent, _) = agent_on(&servers[1], params).await;
    (agent, servers[0].client(WRITER).await)
}

/// The entry of `agent_id` in an `agents.list` reply.
fn listed<'a>(list: &'a Value, agent_id: &str) -> Option<&'a Value> {
    counted(list, "agents")
        .iter()
        .find(|a| a["agentId"] == agent_id)
}

// ---------------------------------------------------------------- node.invoke

#[tokio::test]
async fn invoke_by_agent_id_and_capability_across_instances() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (mut agent, entry) = agent_on(
        b,
        json!({"agentId": "echo-agent", "name": "Echo", "capabilities": ["echo"]}),
    )
    .await;
    let (agent_conn, b_id) = welcome(&mut agent).await;
    assert_eq!(entry["agentId"], "echo-agent", "{entry}");
    assert_eq!(entry["connId"], agent_conn.as_str(), "{entry}");
    assert_eq!(entry["instanceId"], b_id.as_str(), "{entry}");

    let mut caller = a.client(WRITER).await;
    let (caller_conn, a_id) = welcome(&mut caller).await;
    assert_ne!(a_id, b_id, "two distinct instances");

    // By agent id.
    let (reply, seen) = invoke_echoed(
        &mut caller,
        &mut agent,
        json!({"nodeId": "echo-agent", "command": "echo", "params": {"x": 1},
                   "timeoutMs": 5000, "invokeId": "inv-id-1"}),
    )
    .await;
    assert_eq!(seen["command"], "echo", "{seen}");
    assert_eq!(seen["params"], json!({"x": 1}), "{seen}");
    assert_eq!(seen["caller"]["connId"], caller_conn.as_str(), "{seen}");
    assert_eq!(seen["caller"]["identity"], "writer", "{seen}");
    assert_eq!(seen["caller"]["role"], "operator", "{seen}");
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(reply["result"]["nodeId"], "echo-agent", "{reply}");
    assert_eq!(reply["result"]["connId"], agent_conn.as_str(), "{reply}");
    assert_eq!(reply["result"]["invokeId"], "inv-id-1", "{reply}");
    assert_eq!(
        reply["result"]["result"],
        json!({"echo": {"x": 1}}),
        "{reply}"
    );

    // By capability.
    let (reply, seen) = invoke_echoed(
        &mut caller,
        &mut agent,
        json!({"capability": "echo", "command": "echo", "params": [1, 2], "timeoutMs": 5000}),
    )
    .await;
    assert_eq!(seen["params"], json!([1, 2]), "{seen}");
    assert_eq!(reply["result"]["nodeId"], "echo-agent", "{reply}");
    assert_eq!(
        reply["result"]["result"],
        json!({"echo": [1, 2]}),
        "{reply}"
    );

    // An implicit node (caps at connect) on B, by its connection id.
    let mut node = b.client(NODE).await;
    let hello = node
        .call(
            "connect",
            json!({"client": {"name": "node-app"}, "caps": ["cam"]}),
        )
        .await;
    let node_conn = hello["connId"].as_str().expect("connId").to_owned();
    let (reply, _) = invoke_echoed(
        &mut caller,
        &mut node,
        json!({"nodeId": node_conn, "command": "snap", "params": "p", "timeoutMs": 5000}),
    )
    .await;
    assert_eq!(reply["result"]["nodeId"], node_conn.as_str(), "{reply}");
    assert_eq!(reply["result"]["result"], json!({"echo": "p"}), "{reply}");

    // The agent's error passes through as is.
    let (reply, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": "echo-agent", "command": "fail", "timeoutMs": 5000}),
        ),
        async {
            let (id, _) = server_request(&mut agent, "invoke").await;
            answer_error(&mut agent, &id, -32050, "boom").await;
        },
    );
    assert_eq!(reply["error"]["code"], -32050, "{reply}");
    assert_eq!(reply["error"]["message"], "boom", "{reply}");

    // Nobody matching anywhere.
    let params = json!({"nodeId": "nobody", "command": "echo", "timeoutMs": 500});
    assert_eq!(caller.error_code("node.invoke", params).await, -32005);
    let params = json!({"capability": "nope", "command": "echo", "timeoutMs": 500});
    assert_eq!(caller.error_code("node.invoke", params).await, -32005);
}

#[tokio::test]
async fn method_provider_on_another_instance() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mut node = b.client(NODE).await;
    // A built-in method cannot be provided.
    let reply = node
        .request(
            "agent.register",
            json!({"agentId": "bad", "methods": ["ping"]}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    let entry = node
        .call(
            "agent.register",
            json!({"agentId": "skills", "methods": ["skills.*", "updates.check"]}),
        )
        .await;
    assert_eq!(
        entry["methods"],
        json!(["skills.*", "updates.check"]),
        "{entry}"
    );

    let mut caller = a.client(WRITER).await;
    let (reply, seen) = tokio::join!(
        caller.request("skills.install", json!({"name": "x", "v": 2})),
        async {
            let (id, params) = server_request(&mut node, "invoke").await;
            answer(&mut node, &id, json!({"installed": "x"})).await;
            params
        },
    );
    assert_eq!(seen["command"], "skills.install", "{seen}");
    assert_eq!(seen["params"], json!({"name": "x", "v": 2}), "{seen}");
    assert_eq!(seen["caller"]["identity"], "writer", "{seen}");
    // Not wrapped.
    assert_eq!(reply["result"], json!({"installed": "x"}), "{reply}");

    let (reply, _) = tokio::join!(caller.request("updates.check", json!({})), async {
        let (id, params) = server_request(&mut node, "invoke").await;
        answer(&mut node, &id, json!("up to date")).await;
        params
    },);
    assert_eq!(reply["result"], "up to date", "{reply}");

    // The provider's error passes through.
    let (reply, ()) = tokio::join!(caller.request("skills.remove", json!({})), async {
        let (id, _) = server_request(&mut node, "invoke").await;
        answer_error(&mut node, &id, -32050, "no such skill").await;
    });
    assert_eq!(reply["error"]["code"], -32050, "{reply}");

    // Nobody provides these.
    assert_eq!(caller.error_code("updates.apply", json!({})).await, -32601);
    assert_eq!(caller.error_code("other.thing", json!({})).await, -32601);

    // Provider gone → unknown method again.
    node.close().await;
    let (gone, last) = poll_call(
        &mut caller,
        WAIT,
        "skills.install",
        json!({"name": "x"}),
        |r| r["error"]["code"] == -32601,
    )
    .await;
    assert!(gone, "provider offline → -32601; last reply: {last}");
}

#[tokio::test]
async fn invoke_timeout_across_instances() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (mut agent, mut caller) = agent_across(
        &servers,
        json!({"agentId": "slow", "capabilities": ["slow"]}),
    )
    .await;
    let started = Instant::now();
    let (reply, (_, seen)) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": "slow", "command": "sleep", "timeoutMs": 600}),
        ),
        server_request(&mut agent, "invoke"),
    );
    let took = started.elapsed();
    assert_eq!(seen["command"], "sleep", "{seen}");
    assert_eq!(reply["error"]["code"], -32006, "{reply}");
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(600 + 3000),
        "timeout 600 ms, failed after {took:?}"
    );
    // The serving instance tells the agent to stop.
    let cancel = agent.expect_push("invoke.cancel").await;
    assert_eq!(cancel["reason"], "timeout", "{cancel}");
    // The agent is still usable afterwards (its slot was released).
    let (reply, _) = invoke_echoed(
        &mut caller,
        &mut agent,
        json!({"nodeId": "slow", "command": "echo", "params": 7, "timeoutMs": 5000}),
    )
    .await;
    assert_eq!(reply["result"]["result"], json!({"echo": 7}), "{reply}");
}

#[tokio::test]
async fn agent_disconnecting_mid_call_fails_the_remote_caller_promptly() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (agent, _) = agent_on(
        &servers[1],
        json!({"agentId": "flaky", "capabilities": ["f"]}),
    )
    .await;
    let mut caller = servers[0].client(WRITER).await;
    let started = Instant::now();
    let (reply, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": "flaky", "command": "work", "timeoutMs": 8000}),
        ),
        async move {
            let mut agent = agent;
            server_request(&mut agent, "invoke").await;
            agent.close().await;
        },
    );
    let took = started.elapsed();
    let code = reply["error"]["code"].as_i64();
    assert!(code.is_some(), "an error, not a result: {reply}");
    assert_ne!(
        code,
        Some(-32006),
        "not a timeout (after {took:?}): {reply}"
    );
    assert_eq!(
        code,
        Some(-32005),
        "agent gone → unavailable (after {took:?}): {reply}"
    );
    assert!(
        took < Duration::from_secs(3),
        "failed after {took:?}: {reply}"
    );
    // Gone for good.
    let params = json!({"nodeId": "flaky", "command": "work", "timeoutMs": 500});
    assert_eq!(caller.error_code("node.invoke", params).await, -32005);
    let params = json!({"capability": "f", "command": "work", "timeoutMs": 500});
    assert_eq!(caller.error_code("node.invoke", params).await, -32005);
}

#[tokio::test]
async fn invoke_progress_crosses_instances_in_order() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (mut agent, mut caller) =
        agent_across(&servers, json!({"agentId": "prog", "capabilities": ["p"]})).await;
    let (reply, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": "prog", "command": "long", "timeoutMs": 5000, "invokeId": "p-1"}),
        ),
        answer_with_progress(&mut agent, 8, json!({"done": true})),
    );
    assert_eq!(reply["result"]["result"], json!({"done": true}), "{reply}");
    // Every progress notification arrived before the reply, in order.
    let progress = progress_pushed(&caller);
    assert_eq!(progress.len(), 8, "{progress:?}");
    for (i, p) in progress.iter().enumerate() {
        assert_eq!(p["invokeId"], "p-1", "{p}");
        assert_eq!(p["data"], json!({"step": i}), "{progress:?}");
    }
}

#[tokio::test]
async fn invoke_cancel_crosses_instances() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (mut agent, mut caller) =
        agent_across(&servers, json!({"agentId": "canc", "capabilities": ["c"]})).await;
    send_request(
        &mut caller,
        "inv",
        "node.invoke",
        json!({"nodeId": "canc", "command": "long", "timeoutMs": 8000, "invokeId": "c-1"}),
    )
    .await;
    let (srv_id, _) = server_request(&mut agent, "invoke").await;
    let started = Instant::now();
    send_request(
        &mut caller,
        "cx",
        "invoke.cancel",
        json!({"invokeId": "c-1"}),
    )
    .await;
    let got = replies(&mut caller, &["inv", "cx"]).await;
    let cancel = &got["cx"];
    assert_eq!(cancel["result"]["cancelled"], true, "{cancel}");
    assert_eq!(cancel["result"]["invokeId"], "c-1", "{cancel}");
    let invoke = &got["inv"];
    assert_eq!(invoke["error"]["code"], -32006, "{invoke}");
    assert_eq!(invoke["error"]["data"]["cancelled"], true, "{invoke}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The agent on B is told.
    let note = push_where(&mut agent, "invoke.cancel", |p| p["id"] == srv_id.as_str()).await;
    assert_eq!(note["id"], srv_id.as_str(), "{note}");
    // A late answer is ignored; unknown ids are refused.
    answer(&mut agent, &srv_id, json!("late")).await;
    let reply = caller
        .request("invoke.cancel", json!({"invokeId": "c-1"}))
        .await;
    assert_eq!(reply["error"]["code"], -32001, "{reply}");
    assert_eq!(
        caller
            .error_code("invoke.cancel", json!({"invokeId": "nope"}))
            .await,
        -32001
    );
    assert_eq!(agent.call("ping", json!({})).await["pong"], true);
}

#[tokio::test]
async fn caller_disconnecting_cancels_the_remote_call() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (mut agent, mut caller) =
        agent_across(&servers, json!({"agentId": "hold", "capabilities": ["h"]})).await;
    send_request(
        &mut caller,
        "inv",
        "node.invoke",
        json!({"nodeId": "hold", "command": "long", "timeoutMs": 8000}),
    )
    .await;
    let (srv_id, _) = server_request(&mut agent, "invoke").await;
    let started = Instant::now();
    caller.close().await;
    push_where(&mut agent, "invoke.cancel", |p| p["id"] == srv_id.as_str()).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cancel reached the agent after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn max_concurrency_one_holds_across_instances() {
    let (_redis, servers) = cluster(3, |_| {}).await;
    let (mut agent, entry) = agent_on(
        &servers[1],
        json!({"agentId": "single", "capabilities": ["one"], "maxConcurrency": 1}),
    )
    .await;
    assert_eq!(entry["maxConcurrency"], 1, "{entry}");
    let mut first = servers[0].client(WRITER).await;
    let mut second = servers[2].client(ADMIN).await;
    send_request(
        &mut first,
        "one",
        "node.invoke",
        json!({"nodeId": "single", "command": "hold", "timeoutMs": 8000}),
    )
    .await;
    let (srv_id, _) = server_request(&mut agent, "invoke").await;

    // From instance C, by id and by capability: busy.
    for params in [
        json!({"nodeId": "single", "command": "x", "timeoutMs": 3000}),
        json!({"capability": "one", "command": "x", "timeoutMs": 3000}),
    ] {
        let reply = second.request("node.invoke", params).await;
        assert_eq!(reply["error"]["code"], -32002, "{reply}");
        assert_eq!(reply["error"]["data"]["busy"], true, "{reply}");
    }
    // And from A itself too.
    let mut third = servers[0].client(WRITER).await;
    let reply = third
        .request(
            "node.invoke",
            json!({"nodeId": "single", "command": "x", "timeoutMs": 3000}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    // The busy calls never reached the agent.
    no_push_where(&mut agent, "invoke", QUIET, |_| true).await;

    answer(&mut agent, &srv_id, json!("first done")).await;
    let done = first.reply_to(json!("one")).await;
    assert_eq!(done["result"]["result"], "first done", "{done}");

    // The slot is free again once the first call ended.
    let (reply, _) = invoke_echoed(
        &mut second,
        &mut agent,
        json!({"nodeId": "single", "command": "echo", "params": 2, "timeoutMs": 5000}),
    )
    .await;
    assert_eq!(reply["result"]["result"], json!({"echo": 2}), "{reply}");
}

/// A busy agent on another instance is skipped: its refusal comes back as
/// the relay's busy flag, and the call goes on to the next candidate.
#[tokio::test]
async fn a_busy_agent_elsewhere_passes_the_call_to_the_next_one() {
    let (_redis, servers) = cluster(3, |_| {}).await;
    let (mut busy, _) = agent_on(
        &servers[1],
        json!({"agentId": "pair-a", "capabilities": ["pair"], "maxConcurrency": 1}),
    )
    .await;
    // Registered later: `first` tries pair-a before it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (mut free, _) = agent_on(
        &servers[2],
        json!({"agentId": "pair-b", "capabilities": ["pair"], "maxConcurrency": 1}),
    )
    .await;
    let mut holder = servers[0].client(WRITER).await;
    send_request(
        &mut holder,
        "hold",
        "node.invoke",
        json!({"nodeId": "pair-a", "command": "hold", "timeoutMs": 8000}),
    )
    .await;
    let (held, _) = server_request(&mut busy, "invoke").await;
    let mut caller = servers[0].client(WRITER).await;
    for n in 0..3 {
        let (reply, _) = invoke_echoed(
            &mut caller,
            &mut free,
            json!({"capability": "pair", "policy": "first", "command": "x", "params": n,
                   "timeoutMs": 5000}),
        )
        .await;
        assert_eq!(reply["result"]["result"], json!({"echo": n}), "{reply}");
        assert_eq!(reply["result"]["nodeId"], "pair-b", "{reply}");
    }
    no_push_where(&mut busy, "invoke", QUIET, |_| true).await;
    answer(&mut busy, &held, json!("done")).await;
}

// ---------------------------------------------------------------- registry

#[tokio::test]
async fn agents_list_on_a_shows_agent_of_b_online_then_offline() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mut agent = b.client(NODE).await;
    let (agent_conn, b_id) = welcome(&mut agent).await;
    let registered = agent
        .call(
            "agent.register",
            json!({
                "agentId": "listed-agent",
                "name": "Lister",
                "type": "assistant",
                "capabilities": ["search", "agent.run"],
                "tools": [{"name": "web.search", "description": "search the web",
                           "parameters": {"type": "object"}}],
                "models": ["m-large"],
                "maxConcurrency": 3,
            }),
        )
        .await;
    let mut reader = a.client(READER).await;
    let (_, a_id) = welcome(&mut reader).await;
    assert_ne!(a_id, b_id);

    let list = reader.call("agents.list", json!({})).await;
    let e = listed(&list, "listed-agent").unwrap_or_else(|| panic!("listed on A: {list}"));
    assert_eq!(e["online"], true, "{e}");
    assert_eq!(e["instanceId"], b_id.as_str(), "{e}");
    assert_eq!(e["connId"], agent_conn.as_str(), "{e}");
    assert_eq!(e["identity"], "node-1", "{e}");
    assert_eq!(e["name"], "Lister", "{e}");
    assert_eq!(e["type"], "assistant", "{e}");
    assert_eq!(e["capabilities"], json!(["search", "agent.run"]), "{e}");
    assert_eq!(e["models"], json!(["m-large"]), "{e}");
    assert_eq!(e["maxConcurrency"], 3, "{e}");
    assert_eq!(e["tools"][0]["name"], "web.search", "{e}");
    assert_eq!(e["generation"], registered["generation"], "{e}");
    assert!(e["registeredAt"].as_u64().is_some_and(|t| t > 0), "{e}");

    // Filters and the other views, from A.
    let list = reader
        .call("agents.list", json!({"capability": "search"}))
        .await;
    assert!(listed(&list, "listed-agent").is_some(), "{list}");
    let list = reader
        .call("agents.list", json!({"capability": "other"}))
        .await;
    assert!(listed(&list, "listed-agent").is_none(), "{list}");
    let got = reader
        .call("agents.get", json!({"agentId": "listed-agent"}))
        .await;
    assert_eq!(got["instanceId"], b_id.as_str(), "{got}");
    assert_eq!(got["online"], true, "{got}");
    let tools = reader.call("tools.list", json!({})).await;
    let tool = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["name"] == "web.search")
        .unwrap_or_else(|| panic!("tool listed on A: {tools}"))
        .clone();
    assert_eq!(tool["agents"], json!(["listed-agent"]), "{tools}");
    let models = reader.call("models.list", json!({})).await;
    assert!(
        models["models"]
            .as_array()
            .expect("models")
            .iter()
            .any(|m| m["id"] == "m-large" && m["agents"] == json!(["listed-agent"])),
        "{models}"
    );

    // Disconnect on B → offline as seen from A.
    agent.close().await;
    let (offline, last) = poll_call(&mut reader, WAIT, "agents.list", json!({}), |r| {
        listed(&r["result"], "listed-agent").is_some_and(|e| e["online"] == false)
    })
    .await;
    let last = last["result"].clone();
    assert!(offline, "offline on A after disconnect on B: {last}");
    let e = listed(&last, "listed-agent").expect("still listed");
    assert_eq!(e["status"], "offline", "{e}");
    assert_eq!(e["load"], 0, "{e}");
    let online_only = reader.call("agents.list", json!({"online": true})).await;
    assert!(
        listed(&online_only, "listed-agent").is_none(),
        "{online_only}"
    );
    let offline_only = reader.call("agents.list", json!({"online": false})).await;
    assert!(
        listed(&offline_only, "listed-agent").is_some(),
        "{offline_only}"
    );
    let tools = reader.call("tools.list", json!({})).await;
    assert!(
        !tools["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .any(|t| t["name"] == "web.search"),
        "offline agents' tools are not listed: {tools}"
    );
}

#[tokio::test]
async fn agent_id_owned_by_another_identity_on_another_instance_is_refused() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (_agent, _) = agent_on(&servers[1], json!({"agentId": "owned"})).await;
    let other = jwt(json!({"sub": "node-2", "role": "node", "exp": now_secs() + 600}));
    let mut intruder = servers[0].client(&other).await;
    let reply = intruder
        .request("agent.register", json!({"agentId": "owned"}))
        .await;
    assert_eq!(reply["error"]["code"], -32007, "{reply}");
}

// ---------------------------------------------------------------- runs

#[tokio::test]
async fn agent_run_streams_to_members_on_every_instance() {
    let (_redis, servers) = cluster(3, |_| {}).await;
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
    let (mut agent, _) = agent_on(
        b,
        json!({"agentId": "runner", "capabilities": ["agent.run"]}),
    )
    .await;
    let (_, b_id) = welcome(&mut agent).await;
    let mut caller = a.client(WRITER).await;
    let mut bob = as_user(c, "bob").await;
    let mut outsider = as_user(c, "eve").await;
    caller
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "run-s1"}),
        )
        .await;
    bob.call("session.join", json!({"sessionId": "run-s1"}))
        .await;

    let (started, (srv_id, params)) = tokio::join!(
        caller.call(
            "agent.run",
            json!({"task": "summarise", "input": {"doc": 1}, "sessionId": "run-s1", "maxTurns": 3}),
        ),
        server_request(&mut agent, "agent.run"),
    );
    assert_eq!(started["sessionId"], "run-s1", "{started}");
    assert_eq!(started["agentId"], "runner", "{started}");
    assert_eq!(started["status"], "running", "{started}");
    let run_id = started["runId"].as_str().expect("runId").to_owned();
    assert_eq!(params["sessionId"], "run-s1", "{params}");
    assert_eq!(params["runId"], run_id.as_str(), "{params}");
    assert_eq!(params["task"], "summarise", "{params}");
    assert_eq!(params["input"], json!({"doc": 1}), "{params}");
    assert_eq!(params["maxTurns"], 3, "{params}");
    assert_eq!(params["caller"]["identity"], "writer", "{params}");

    // Lifecycle on global, seen on C.
    let s = push_where(&mut bob, "agent.started", |p| p["runId"] == run_id.as_str()).await;
    assert_eq!(s["sessionId"], "run-s1", "{s}");
    assert_eq!(s["agentId"], "runner", "{s}");

    for i in 0..5 {
        agent
            .send_json(&json!({"jsonrpc": "2.0", "method": "agent.event",
                               "params": {"sessionId": "run-s1", "type": "delta", "data": {"i": i}}}))
            .await;
    }
    for member in [&mut caller, &mut bob] {
        for i in 0..5 {
            let e = push_where(member, "agent.event", |p| p["sessionId"] == "run-s1").await;
            assert_eq!(e["runId"], run_id.as_str(), "{e}");
            assert_eq!(e["agentId"], "runner", "{e}");
            assert_eq!(e["type"], "delta", "{e}");
            assert_eq!(e["data"], json!({"i": i}), "events in order: {e}");
            assert!(e["timestamp"].as_u64().is_some_and(|t| t > 0), "{e}");
        }
    }
    // Not a member: nothing.
    no_push_where(&mut outsider, "agent.event", QUIET, |_| true).await;

    // agent.wait on C blocks until the agent answers on B.
    let (done, ()) = tokio::join!(
        bob.call(
            "agent.wait",
            json!({"sessionId": "run-s1", "timeoutMs": 5000})
        ),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            answer(&mut agent, &srv_id, json!({"summary": "short"})).await;
        },
    );
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["runId"], run_id.as_str(), "{done}");
    assert_eq!(done["sessionId"], "run-s1", "{done}");
    assert_eq!(done["agentId"], "runner", "{done}");
    assert_eq!(done["caller"], "writer", "{done}");
    assert_eq!(done["task"], "summarise", "{done}");
    assert_eq!(done["result"], json!({"summary": "short"}), "{done}");
    assert!(done["error"].is_null(), "{done}");
    assert!(done["finishedAt"].as_u64().is_some(), "{done}");
    assert_eq!(done["instanceId"], b_id.as_str(), "served by B: {done}");

    let c = push_where(&mut bob, "agent.completed", |p| {
        p["runId"] == run_id.as_str()
    })
    .await;
    assert_eq!(c["status"], "completed", "{c}");
    assert_eq!(c["result"], json!({"summary": "short"}), "{c}");
    assert!(c["error"].is_null(), "{c}");
    let c = push_where(&mut caller, "agent.completed", |p| {
        p["runId"] == run_id.as_str()
    })
    .await;
    assert_eq!(c["agentId"], "runner", "{c}");
    // Once.
    no_push_where(&mut bob, "agent.completed", QUIET, |p| {
        p["runId"] == run_id.as_str()
    })
    .await;

    // After the run, the agent may no longer emit events for the session.
    let reply = agent
        .request(
            "agent.event",
            json!({"sessionId": "run-s1", "type": "late"}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32001, "{reply}");
}

#[tokio::test]
async fn agent_cancel_from_a_reaches_the_agent_on_b() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (mut agent, mut caller) = agent_across(
        &servers,
        json!({"agentId": "cx", "capabilities": ["agent.run"]}),
    )
    .await;
    let (started, (srv_id, _)) = tokio::join!(
        caller.call("agent.run", json!({"agentId": "cx", "task": "long job"})),
        server_request(&mut agent, "agent.run"),
    );
    let session = started["sessionId"].as_str().expect("sessionId").to_owned();
    let run_id = started["runId"].as_str().expect("runId").to_owned();

    // Events flow before the cancel.
    agent
        .send_json(&json!({"jsonrpc": "2.0", "method": "agent.event",
                           "params": {"sessionId": session, "type": "delta", "data": "before"}}))
        .await;
    let e = push_where(&mut caller, "agent.event", |p| {
        p["sessionId"] == session.as_str()
    })
    .await;
    assert_eq!(e["data"], "before", "{e}");

    let cancelled = caller
        .call("agent.cancel", json!({"sessionId": session}))
        .await;
    assert_eq!(cancelled["cancelled"], true, "{cancelled}");
    assert_eq!(cancelled["sessionId"], session.as_str(), "{cancelled}");
    assert_eq!(cancelled["runId"], run_id.as_str(), "{cancelled}");
    let note = push_where(&mut agent, "agent.cancel", |p| {
        p["sessionId"] == session.as_str()
    })
    .await;
    assert_eq!(note["runId"], run_id.as_str(), "{note}");
    let err = push_where(&mut caller, "agent.error", |p| {
        p["runId"] == run_id.as_str()
    })
    .await;
    assert_eq!(err["status"], "cancelled", "{err}");

    // Later events are dropped; a late answer changes nothing.
    agent
        .send_json(&json!({"jsonrpc": "2.0", "method": "agent.event",
                           "params": {"sessionId": session, "type": "delta", "data": "after"}}))
        .await;
    answer(&mut agent, &srv_id, json!("finished anyway")).await;
    no_push_where(&mut caller, "agent.event", QUIET, |_| true).await;
    no_push_where(&mut caller, "agent.completed", Duration::ZERO, |p| {
        p["runId"] == run_id.as_str()
    })
    .await;
    let run = caller
        .call(
            "agent.wait",
            json!({"sessionId": session, "timeoutMs": 2000}),
        )
        .await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["runId"], run_id.as_str(), "{run}");
    assert_eq!(
        caller
            .error_code("agent.cancel", json!({"sessionId": session}))
            .await,
        -32007
    );
}

#[tokio::test]
async fn agent_disconnecting_mid_run_ends_it_with_error() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (mut agent, mut caller) = agent_across(
        &servers,
        json!({"agentId": "dies", "capabilities": ["agent.run"]}),
    )
    .await;
    let (started, _) = tokio::join!(
        caller.call("agent.run", json!({"task": "t"})),
        server_request(&mut agent, "agent.run"),
    );
    assert_eq!(started["agentId"], "dies", "{started}");
    let session = started["sessionId"].as_str().expect("sessionId").to_owned();
    let run_id = started["runId"].as_str().expect("runId").to_owned();
    agent.close().await;
    let begun = Instant::now();
    let run = caller
        .call(
            "agent.wait",
            json!({"sessionId": session, "timeoutMs": 5000}),
        )
        .await;
    assert_eq!(run["status"], "error", "{run}");
    assert!(
        begun.elapsed() < Duration::from_secs(3),
        "{:?}",
        begun.elapsed()
    );
    let err = push_where(&mut caller, "agent.error", |p| {
        p["runId"] == run_id.as_str()
    })
    .await;
    assert_eq!(err["status"], "error", "{err}");
}

#[tokio::test]
async fn run_limit_of_five_per_caller_is_cluster_wide() {
    let (_redis, servers) = cluster(2, |c| c.limits.max_sessions_per_client = 50).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (mut agent, _) =
        agent_on(b, json!({"agentId": "many", "capabilities": ["agent.run"]})).await;
    let mut on_a = a.client(WRITER).await;
    let mut on_b = b.client(WRITER).await;
    // Sessions first, so that only the run limit can refuse below.
    for i in 0..8 {
        let ws = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        ws.call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": format!("lim-{i}")}),
        )
        .await;
    }
    let mut held = Vec::new();
    // Three via A (sessions 0, 2, 4), two via B (1, 3).
    for i in [0, 2, 4, 1, 3] {
        let ws = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        let session = format!("lim-{i}");
        let (started, (srv_id, params)) = tokio::join!(
            ws.call("agent.run", json!({"task": "t", "sessionId": session})),
            server_request(&mut agent, "agent.run"),
        );
        assert_eq!(started["status"], "running", "run {i}: {started}");
        assert_eq!(params["sessionId"], session.as_str(), "{params}");
        held.push(srv_id);
    }
    // The sixth, whichever instance it comes through.
    let reply = on_a
        .request("agent.run", json!({"task": "t", "sessionId": "lim-6"}))
        .await;
    assert_eq!(reply["error"]["code"], -32002, "6th run via A: {reply}");
    let reply = on_b
        .request("agent.run", json!({"task": "t", "sessionId": "lim-7"}))
        .await;
    assert_eq!(reply["error"]["code"], -32002, "6th run via B: {reply}");
    no_push_where(&mut agent, "agent.run", QUIET, |_| true).await;

    // Another identity is not limited by the writer's runs.
    let mut bob = as_user(a, "bob").await;
    let (started, (bob_srv, _)) = tokio::join!(
        bob.call("agent.run", json!({"task": "bob's"})),
        server_request(&mut agent, "agent.run"),
    );
    assert_eq!(started["status"], "running", "{started}");

    // One of the writer's runs ends → room for one more.
    answer(&mut agent, &held[0], json!("done")).await;
    let run = on_b
        .call(
            "agent.wait",
            json!({"sessionId": "lim-0", "timeoutMs": 5000}),
        )
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    let (started, _) = tokio::join!(
        on_b.call("agent.run", json!({"task": "t", "sessionId": "lim-7"})),
        server_request(&mut agent, "agent.run"),
    );
    assert_eq!(started["status"], "running", "{started}");
    let reply = on_a
        .request("agent.run", json!({"task": "t", "sessionId": "lim-6"}))
        .await;
    assert_eq!(reply["error"]["code"], -32002, "5 running again: {reply}");
    answer(&mut agent, &bob_srv, json!("ok")).await;
}

#[tokio::test]
async fn second_run_on_a_busy_session_from_another_instance_conflicts() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let (mut agent, mut caller) = agent_across(
        &servers,
        json!({"agentId": "busy", "capabilities": ["agent.run"]}),
    )
    .await;
    let mut again = servers[1].client(WRITER).await;
    caller
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "one-run"}),
        )
        .await;
    let (started, _) = tokio::join!(
        caller.call("agent.run", json!({"task": "t", "sessionId": "one-run"})),
        server_request(&mut agent, "agent.run"),
    );
    assert_eq!(started["status"], "running", "{started}");
    let reply = again
        .request("agent.run", json!({"task": "t2", "sessionId": "one-run"}))
        .await;
    assert_eq!(reply["error"]["code"], -32007, "{reply}");
}

// ---------------------------------------------------------------- approvals

#[tokio::test]
async fn approvals_raced_by_two_approvers_on_two_instances() {
    let (_redis, servers) = cluster(3, |_| {}).await;
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
    let mut approver = a.client(APPROVER).await;
    let mut admin = b.client(ADMIN).await;
    let mut requester = c.client(NODE).await;
    let (requester_conn, _) = welcome(&mut requester).await;
    let mut writer = a.client(WRITER).await;

    let mut winners = Vec::new();
    for round in 0..4 {
        let req = requester
            .call(
                "approval.request",
                json!({"tool": "shell.exec", "args": {"cmd": "rm -rf /tmp/x", "round": round},
                       "summary": "delete", "timeoutMs": 60000, "sessionId": "s-appr"}),
            )
            .await;
        let id = req["approvalId"].as_str().expect("approvalId").to_owned();
        assert!(req["expiresAt"].as_u64().is_some(), "{req}");
        for ws in [&mut approver, &mut admin] {
            let r = push_where(ws, "approval.requested", |p| p["approvalId"] == id.as_str()).await;
            assert_eq!(r["status"], "pending", "{r}");
            assert_eq!(r["tool"], "shell.exec", "{r}");
            assert_eq!(r["args"]["round"], round, "{r}");
            assert_eq!(r["summary"], "delete", "{r}");
            assert_eq!(r["requester"], "node-1", "{r}");
            assert_eq!(r["requesterConn"], requester_conn.as_str(), "{r}");
            assert_eq!(r["sessionId"], "s-appr", "{r}");
        }
        // Both decide at the same time.
        let (ra, rb) = tokio::join!(
            approver.request(
                "approval.resolve",
                json!({"approvalId": id, "decision": "approve", "note": "ok"}),
            ),
            admin.request(
                "approval.resolve",
                json!({"approvalId": id, "decision": "deny", "note": "no"}),
            ),
        );
        let ok: Vec<&Value> = [&ra, &rb]
            .into_iter()
            .filter(|r| r.get("error").is_none())
            .collect();
        assert_eq!(ok.len(), 1, "exactly one resolver wins: {ra} / {rb}");
        let (won, lost, status, by) = if ra.get("error").is_none() {
            (&ra, &rb, "approved", "approver")
        } else {
            (&rb, &ra, "denied", "admin")
        };
        assert_eq!(lost["error"]["code"], -32007, "{lost}");
        let decided = &won["result"];
        assert_eq!(decided["status"], status, "{decided}");
        assert_eq!(decided["decidedBy"], by, "{decided}");
        assert_eq!(decided["approvalId"], id.as_str(), "{decided}");
        assert!(decided["resolvedAt"].as_u64().is_some(), "{decided}");
        winners.push(by);

        // Requester on C and both approvers see the same decision, once.
        for ws in [&mut requester, &mut approver, &mut admin] {
            let r = push_where(ws, "approval.resolved", |p| p["approvalId"] == id.as_str()).await;
            assert_eq!(r["status"], status, "{r}");
            assert_eq!(r["decidedBy"], by, "{r}");
        }
        let waited = requester
            .call(
                "approval.wait",
                json!({"approvalId": id, "timeoutMs": 2000}),
            )
            .await;
        assert_eq!(waited["status"], status, "{waited}");
        // A third attempt is refused too.
        assert_eq!(
            approver
                .error_code(
                    "approval.resolve",
                    json!({"approvalId": id, "decision": "deny"})
                )
                .await,
            -32007
        );
    }
    for ws in [&mut requester, &mut approver, &mut admin] {
        no_push_where(ws, "approval.resolved", QUIET, |_| true).await;
    }
    // Operators without operator.approvals get none of it.
    no_push_where(&mut writer, "approval.requested", Duration::ZERO, |_| true).await;
    no_push_where(&mut writer, "approval.resolved", Duration::ZERO, |_| true).await;
    let pending = approver.call("approval.list", json!({})).await;
    assert_eq!(pending["count"], 0, "{pending}");
    let history = admin.call("approval.history", json!({"limit": 10})).await;
    assert_eq!(history["count"], 4, "{history}");
    eprintln!("race winners: {winners:?}");
    assert_eq!(
        approver
            .error_code(
                "approval.resolve",
                json!({"approvalId": "nope", "decision": "approve"})
            )
            .await,
        -32001
    );
}

#[tokio::test]
async fn approval_expiry_is_announced_once_across_instances() {
    let (_redis, servers) = cluster(3, |_| {}).await;
    let mut approver = servers[0].client(APPROVER).await;
    let mut requester = servers[1].client(NODE).await;
    let mut admin = servers[2].client(ADMIN).await;
    let started = Instant::now();
    let req = requester
        .call(
            "approval.request",
            json!({"tool": "deploy", "timeoutMs": 800}),
        )
        .await;
    let id = req["approvalId"].as_str().expect("approvalId").to_owned();
    push_where(&mut approver, "approval.requested", |p| {
        p["approvalId"] == id.as_str()
    })
    .await;
    let r = push_where(&mut approver, "approval.resolved", |p| {
        p["approvalId"] == id.as_str()
    })
    .await;
    let took = started.elapsed();
    assert_eq!(r["status"], "expired", "{r}");
    assert_eq!(r["decidedBy"], "system", "{r}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(800 + 3000),
        "expired after {took:?}"
    );
    for ws in [&mut requester, &mut admin] {
        let r = push_where(ws, "approval.resolved", |p| p["approvalId"] == id.as_str()).await;
        assert_eq!(r["status"], "expired", "{r}");
    }
    let waited = requester
        .call(
            "approval.wait",
            json!({"approvalId": id, "timeoutMs": 1000}),
        )
        .await;
    assert_eq!(waited["status"], "expired", "{waited}");
    assert_eq!(
        approver
            .error_code(
                "approval.resolve",
                json!({"approvalId": id, "decision": "approve"})
            )
            .await,
        -32007
    );
    // Three janitors, one announcement.
    no_push_where(
        &mut approver,
        "approval.resolved",
        Duration::from_millis(1500),
        |_| true,
    )
    .await;
    no_push_where(&mut admin, "approval.resolved", Duration::ZERO, |_| true).await;
    let pending = admin.call("approval.list", json!({})).await;
    assert_eq!(pending["count"], 0, "{pending}");
}

#[tokio::test]
async fn approval_wait_times_out_then_sees_a_remote_decision() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let mut requester = servers[1].client(NODE).await;
    let mut approver = servers[0].client(APPROVER).await;
    let req = requester
        .call("approval.request", json!({"tool": "t", "timeoutMs": 60000}))
        .await;
    let id = req["approvalId"].as_str().expect("approvalId").to_owned();
    let reply = requester
        .request("approval.wait", json!({"approvalId": id, "timeoutMs": 300}))
        .await;
    assert_eq!(reply["error"]["code"], -32006, "{reply}");
    let (waited, ()) = tokio::join!(
        requester.call(
            "approval.wait",
            json!({"approvalId": id, "timeoutMs": 5000})
        ),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            approver
                .call(
                    "approval.resolve",
                    json!({"approvalId": id, "decision": "approve"}),
                )
                .await;
        },
    );
    assert_eq!(waited["status"], "approved", "{waited}");
    assert_eq!(waited["decidedBy"], "approver", "{waited}");
}

#[tokio::test]
async fn late_approver_on_another_instance_receives_pending_requests() {
    let (_redis, servers) = cluster(3, |_| {}).await;
    let mut requester = servers[1].client(NODE).await;
    let mut ids = Vec::new();
    for tool in ["first.tool", "second.tool"] {
        let req = requester
            .call(
                "approval.request",
                json!({"tool": tool, "timeoutMs": 60000}),
            )
            .await;
        ids.push(req["approvalId"].as_str().expect("approvalId").to_owned());
    }
    // Connecting on A after both were requested.
    let mut approver = servers[0].client(APPROVER).await;
    for (id, tool) in ids.iter().zip(["first.tool", "second.tool"]) {
        let r = push_where(&mut approver, "approval.requested", |p| {
            p["approvalId"] == id.as_str()
        })
        .await;
        assert_eq!(r["tool"], tool, "{r}");
        assert_eq!(r["status"], "pending", "{r}");
    }
    let list = approver.call("approval.list", json!({})).await;
    assert_eq!(list["count"], 2, "{list}");
    let decided = approver
        .call(
            "approval.resolve",
            json!({"approvalId": ids[0], "decision": "deny"}),
        )
        .await;
    assert_eq!(decided["status"], "denied", "{decided}");
    let r = push_where(&mut requester, "approval.resolved", |p| {
        p["approvalId"] == ids[0].as_str()
    })
    .await;
    assert_eq!(r["status"], "denied", "{r}");

    // A later one on C gets only what is still pending.
    let mut admin = servers[2].client(ADMIN).await;
    push_where(&mut admin, "approval.requested", |p| {
        p["approvalId"] == ids[1].as_str()
    })
    .await;
    no_push_where(&mut admin, "approval.requested", QUIET, |p| {
        p["approvalId"] == ids[0].as_str()
    })
    .await;
    // A writer connecting gets nothing.
    let mut writer = servers[2].client(WRITER).await;
    no_push_where(&mut writer, "approval.requested", QUIET, |_| true).await;
}

// ---------------------------------------------------------------- idempotency

#[tokio::test]
async fn idempotent_invoke_retried_on_another_instance() {
    let (_redis, servers) = cluster(3, |_| {}).await;
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
    let (mut agent, _) = agent_on(b, json!({"agentId": "idem", "capabilities": ["idem"]})).await;
    let mut on_a = a.client(WRITER).await;
    let mut on_b = b.client(WRITER).await;
    let mut on_c = c.client(WRITER).await;
    let call = |key: &str| {
        json!({"nodeId": "idem", "command": "charge", "params": {"amount": 5},
               "idempotencyKey": key, "timeoutMs": 5000})
    };

    // First on A, retried on B and C: the agent runs it once.
    let (first, _) = tokio::join!(on_a.call("node.invoke", call("k1")), async {
        let (id, _) = server_request(&mut agent, "invoke").await;
        answer(&mut agent, &id, json!({"charged": 1})).await;
    });
    assert_eq!(first["result"], json!({"charged": 1}), "{first}");
    let retry_b = on_b.call("node.invoke", call("k1")).await;
    assert_eq!(retry_b, first, "same result on B");
    let retry_c = on_c.call("node.invoke", call("k1")).await;
    assert_eq!(retry_c, first, "same result on C");
    no_push_where(&mut agent, "invoke", QUIET, |_| true).await;

    // Another identity with the same key is another call.
    let mut admin = c.client(ADMIN).await;
    let (other, _) = tokio::join!(admin.call("node.invoke", call("k1")), async {
        let (id, _) = server_request(&mut agent, "invoke").await;
        answer(&mut agent, &id, json!({"charged": 2})).await;
    });
    assert_eq!(other["result"], json!({"charged": 2}), "{other}");

    // A retry while the first is in flight joins it.
    send_request(&mut on_a, "k2-a", "node.invoke", call("k2")).await;
    let (srv_id, _) = server_request(&mut agent, "invoke").await;
    send_request(&mut on_c, "k2-c", "node.invoke", call("k2")).await;
    no_push_where(&mut agent, "invoke", QUIET, |_| true).await;
    answer(&mut agent, &srv_id, json!({"charged": 3})).await;
    let ra = on_a.reply_to(json!("k2-a")).await;
    let rc = on_c.reply_to(json!("k2-c")).await;
    assert_eq!(ra["result"]["result"], json!({"charged": 3}), "{ra}");
    assert_eq!(
        rc["result"], ra["result"],
        "joined the call in flight: {rc}"
    );
    no_push_where(&mut agent, "invoke", QUIET, |_| true).await;

    // A failed first call does not stick: the retry runs again.
    let (failed, ()) = tokio::join!(on_a.request("node.invoke", call("k3")), async {
        let (id, _) = server_request(&mut agent, "invoke").await;
        answer_error(&mut agent, &id, -32050, "card declined").await;
    });
    assert_eq!(failed["error"]["code"], -32050, "{failed}");
    let (retried, _) = tokio::join!(on_b.call("node.invoke", call("k3")), async {
        let (id, _) = server_request(&mut agent, "invoke").await;
        answer(&mut agent, &id, json!({"charged": 4})).await;
    });
    assert_eq!(retried["result"], json!({"charged": 4}), "{retried}");
}

// ---------------------------------------------------------------- chat

#[tokio::test]
async fn chat_send_on_a_to_agent_on_b_history_on_c() {
    let (_redis, servers) = cluster(3, |_| {}).await;
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
    let (mut agent, _) = agent_on(b, json!({"agentId": "chatty", "capabilities": ["chat"]})).await;
    let mut caller = a.client(WRITER).await;
    let mut bob = as_user(c, "bob").await;
    caller
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "chat-1"}),
        )
        .await;
    bob.call("session.join", json!({"sessionId": "chat-1"}))
        .await;

    let (reply, seen) = tokio::join!(
        caller.call(
            "chat.send",
            json!({"sessionId": "chat-1", "message": "hello", "timeoutMs": 5000}),
        ),
        async {
            let (id, params) = server_request(&mut agent, "chat.send").await;
            agent
                .send_json(&json!({"jsonrpc": "2.0", "method": "agent.event",
                                   "params": {"sessionId": "chat-1", "type": "delta", "data": "hi"}}))
                .await;
            answer(&mut agent, &id, json!({"content": "hi there"})).await;
            params
        },
    );
    assert_eq!(seen["sessionId"], "chat-1", "{seen}");
    assert_eq!(seen["message"], "hello", "{seen}");
    assert!(seen["runId"].as_str().is_some(), "{seen}");
    assert_eq!(seen["caller"]["identity"], "writer", "{seen}");
    assert!(seen["history"].is_array(), "{seen}");
    assert_eq!(reply["sessionId"], "chat-1", "{reply}");
    assert_eq!(reply["agentId"], "chatty", "{reply}");
    assert_eq!(reply["reply"], "hi there", "{reply}");
    assert_eq!(reply["runId"], seen["runId"], "{reply}");
    let e = push_where(&mut bob, "agent.event", |p| p["sessionId"] == "chat-1").await;
    assert_eq!(e["data"], "hi", "streamed to C: {e}");

    let history = bob
        .call("chat.history", json!({"sessionId": "chat-1"}))
        .await;
    assert_eq!(history["count"], 2, "{history}");
    let m = &history["messages"];
    assert_eq!(m[0]["role"], "user", "{history}");
    assert_eq!(m[0]["content"], "hello", "{history}");
    assert_eq!(m[1]["role"], "assistant", "{history}");
    assert_eq!(m[1]["content"], "hi there", "{history}");
    assert!(m[0]["timestamp"].as_u64().is_some(), "{history}");

    // From C: the same agent, with the conversation so far; a string reply.
    let (reply, seen) = tokio::join!(
        bob.call(
            "chat.send",
            json!({"sessionId": "chat-1", "message": "again", "timeoutMs": 5000})
        ),
        async {
            let (id, params) = server_request(&mut agent, "chat.send").await;
            answer(&mut agent, &id, json!("second answer")).await;
            params
        },
    );
    assert_eq!(reply["reply"], "second answer", "{reply}");
    assert_eq!(reply["agentId"], "chatty", "{reply}");
    let h = seen["history"].as_array().expect("history");
    assert!(h.len() >= 2, "{seen}");
    assert_eq!(h[0]["content"], "hello", "{seen}");
    assert_eq!(h[1]["content"], "hi there", "{seen}");
    assert_eq!(seen["caller"]["identity"], "bob", "{seen}");

    let history = caller
        .call("chat.history", json!({"sessionId": "chat-1"}))
        .await;
    let contents: Vec<&Value> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| &m["content"])
        .collect();
    assert_eq!(
        contents,
        vec![
            &json!("hello"),
            &json!("hi there"),
            &json!("again"),
            &json!("second answer")
        ],
        "{history}"
    );
    // Not a member: refused.
    let mut eve = as_user(c, "eve").await;
    assert_eq!(
        eve.error_code("chat.history", json!({"sessionId": "chat-1"}))
            .await,
        -32003
    );
}

// ---------------------------------------------------------------- real processes

#[tokio::test]
async fn agent_on_a_sigkilled_instance_goes_offline_on_the_survivor() {
    let redis = RedisProcess::start();
    let jwt_env = [("SWITCHYARD_JWT_SECRET", JWT_SECRET)];
    let (sa, sb) = tokio::join!(
        Instance::start(&redis, "inst-a", &jwt_env),
        Instance::start(&redis, "inst-b", &jwt_env),
    );
    let mut b = sb;
    let node_token = jwt(json!({"sub": "node-k", "role": "node", "exp": now_secs() + 600}));
    let mut agent = b.client(&node_token).await;
    let entry = agent
        .call(
            "agent.register",
            json!({"agentId": "doomed", "capabilities": ["x"]}),
        )
        .await;
    assert_eq!(entry["instanceId"], "inst-b", "{entry}");
    let mut operator = sa.client(WRITER).await;
    let list = operator.call("agents.list", json!({})).await;
    let e = listed(&list, "doomed").unwrap_or_else(|| panic!("listed on A: {list}"));
    assert_eq!(e["online"], true, "{e}");
    assert_eq!(e["instanceId"], "inst-b", "{e}");

    b.kill9();
    let killed = Instant::now();
    let (offline, last) = poll_call(
        &mut operator,
        // The alive key lasts node_ttl; the reaper looks every node_ttl / 2.
        // A few seconds more for a loaded machine.
        NODE_TTL + Duration::from_secs(5),
        "agents.list",
        json!({}),
        |r| listed(&r["result"], "doomed").is_some_and(|e| e["online"] == false),
    )
    .await;
    let last = last["result"].clone();
    let took = killed.elapsed();
    assert!(
        offline,
        "still online {took:?} after SIGKILL of its instance: {last}"
    );
    eprintln!("offline {took:?} after SIGKILL (node_ttl {NODE_TTL:?})");
    let e = listed(&last, "doomed").expect("listed");
    assert_eq!(e["status"], "offline", "{e}");
    // Calls to it fail at once instead of waiting for a dead instance.
    let begun = Instant::now();
    let params = json!({"nodeId": "doomed", "command": "x", "timeoutMs": 5000});
    assert_eq!(operator.error_code("node.invoke", params).await, -32005);
    assert!(
        begun.elapsed() < Duration::from_secs(2),
        "{:?}",
        begun.elapsed()
    );
    drop(agent);
}

#[tokio::test]
async fn registry_is_repopulated_after_redis_restarts_empty() {
    let (mut redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let (mut agent, _) = agent_on(
        b,
        json!({"agentId": "phoenix", "capabilities": ["rebirth"]}),
    )
    .await;
    let (gone, _) = agent_on(b, json!({"agentId": "gone"})).await;
    gone.close().await;
    let mut caller = a.client(ADMIN).await;
    let (ok, offline) = poll_call(&mut caller, WAIT, "agents.list", json!({}), |r| {
        listed(&r["result"], "gone").is_some_and(|e| e["online"] == false)
    })
    .await;
    assert!(ok, "gone goes offline: {offline}");
    assert!(listed(&offline["result"], "phoenix").is_some(), "{offline}");

    redis.restart();
    assert!(
        within(WAIT, || async {
            a.ready_status().await == 200 && b.ready_status().await == 200
        })
        .await,
        "both instances ready again after Redis came back empty"
    );
    // The live agent is written back by the instance holding its socket; the
    // one whose connection is gone is not resurrected.
    let (ok, list) = poll_call(&mut caller, WAIT, "agents.list", json!({}), |r| {
        listed(&r["result"], "phoenix").is_some_and(|e| e["online"] == true)
    })
    .await;
    assert!(ok, "phoenix is listed online again: {list}");
    assert!(listed(&list["result"], "gone").is_none(), "{list}");
    // And calls reach it again on the same sockets.
    let (reply, seen) = invoke_echoed(
        &mut caller,
        &mut agent,
        json!({"capability": "rebirth", "command": "echo", "params": {"n": 7}, "timeoutMs": 3000}),
    )
    .await;
    assert_eq!(seen["params"], json!({"n": 7}), "{seen}");
    assert_eq!(
        reply["result"]["result"],
        json!({"echo": {"n": 7}}),
        "{reply}"
    );
}

#[tokio::test]
async fn calls_in_flight_end_when_the_node_instance_dies() {
    let redis = RedisProcess::start();
    let jwt_env = [("SWITCHYARD_JWT_SECRET", JWT_SECRET)];
    let (a, b) = tokio::join!(
        Instance::start(&redis, "inst-a", &jwt_env),
        Instance::start(&redis, "inst-b", &jwt_env),
    );
    let mut b = b;
    let node_token = jwt(json!({"sub": "node-z", "role": "node", "exp": now_secs() + 600}));
    let mut agent = b.client(&node_token).await;
    agent
        .call(
            "agent.register",
            json!({"agentId": "mortal", "capabilities": ["agent.run", "m"]}),
        )
        .await;
    let mut caller = a.client(WRITER).await;
    // A routed call and a run, both far from their timeouts, both held by
    // the agent on B without an answer.
    send_request(
        &mut caller,
        "inv",
        "node.invoke",
        json!({"capability": "m", "command": "hang", "timeoutMs": 60_000}),
    )
    .await;
    server_request(&mut agent, "invoke").await;
    let run = caller
        .call("agent.run", json!({"task": "hang", "timeoutMs": 60_000}))
        .await;
    server_request(&mut agent, "agent.run").await;
    let session = run["sessionId"].as_str().expect("sessionId").to_owned();

    b.kill9();
    let killed = Instant::now();
    // node_ttl until B drops out of the live list, node_ttl of grace, a
    // heartbeat, and slack for a loaded machine: far below 60 s.
    let bound = NODE_TTL * 2 + Duration::from_secs(6);
    let reply = tokio::time::timeout(bound, caller.reply_to(json!("inv")))
        .await
        .unwrap_or_else(|_| panic!("node.invoke still waiting {bound:?} after SIGKILL"));
    assert_eq!(reply["error"]["code"], -32005, "{reply}");
    eprintln!("node.invoke ended {:?} after SIGKILL", killed.elapsed());
    let (ended, last) = poll_call(
        &mut caller,
        bound.saturating_sub(killed.elapsed()) + Duration::from_secs(1),
        "agent.wait",
        json!({"sessionId": session, "timeoutMs": 500}),
        |r| r["result"]["status"] == "error",
    )
    .await;
    assert!(ended, "the run ends with an error: {last}");
    assert_eq!(last["result"]["error"]["code"], -32005, "{last}");
}
