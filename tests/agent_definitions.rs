//! Agent definitions against real instances: on the memory backend one
//! instance plays every part; with `SWITCHYARD_TEST_BACKEND=redis` three
//! in-process instances share one fresh Redis (a Redis Cluster with
//! `SWITCHYARD_TEST_REDIS=cluster`), and the admin, the node, the caller and
//! the approver sit on different ones. Also the definition store's contract
//! on memory and on Redis.

mod common;

use common::cluster::cluster_config;
use common::frames::*;
use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchyard::backend::memory::MemoryBackend;
use switchyard::backend::redis::{RedisBackend, RedisSettings};
use switchyard::backend::*;
use switchyard::config::Config;

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(400);

/// Instances for one test: three on one fresh Redis in Redis mode, one on
/// memory. Index them with [`at`].
async fn instances(tweak: impl Fn(&mut Config)) -> (Option<RedisProcess>, Vec<TestServer>) {
    if !redis_mode() {
        let mut c = config();
        tweak(&mut c);
        return (None, vec![TestServer::start(c).await]);
    }
    let redis = RedisProcess::start();
    let mut c = cluster_config(&redis);
    tweak(&mut c);
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(TestServer::start_on(c.clone()).await);
    }
    (Some(redis), servers)
}

/// Instance `i` (A = 0, B = 1, C = 2), the only one on memory.
fn at(servers: &[TestServer], i: usize) -> &TestServer {
    &servers[i % servers.len()]
}

fn tool(name: &str) -> Value {
    json!({"name": name, "description": name, "parameters": {"type": "object"}})
}

/// A node on `server` registering `params`: (socket, whole reply).
async fn register(server: &TestServer, params: Value) -> (Ws, Value) {
    let mut ws = server.client(NODE).await;
    let reply = ws.request("agent.register", params).await;
    (ws, reply)
}

/// `agents.get` of `id` until `pred` holds (bounded), from `ws`.
async fn get_until(ws: &mut Ws, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    call_until(ws, "agents.get", json!({"agentId": id}), |r| {
        pred(&r["result"])
    })
    .await["result"]
        .clone()
}

// ---------------------------------------------------------------- store contract

async fn stores() -> Vec<(Arc<dyn Backend>, Option<RedisProcess>)> {
    let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let server = RedisProcess::start();
    let settings = RedisSettings {
        url: server.url(),
        prefix: "sy".into(),
        tls: Default::default(),
        alive_ttl: Duration::from_secs(10),
        command_timeout: Duration::from_secs(2),
    };
    let redis: Arc<dyn Backend> = Arc::new(RedisBackend::connect(settings).await.unwrap());
    vec![(memory, None), (redis, Some(server))]
}

fn definition(id: &str) -> AgentDefinition {
    serde_json::from_value(json!({"agentId": id, "tools": ["a"], "maxConcurrency": 2}))
        .expect("a definition")
}

#[tokio::test]
async fn store_versions_definitions_and_refuses_stale_writes() {
    for (b, _redis) in stores().await {
        let kind = b.kind();
        let def = definition("d1");
        assert_eq!(def.weight, 1, "{kind}: default weight");
        assert!(def.enabled, "{kind}: enabled by default");
        let v1 = b.put_definition(&def, 0).await.unwrap();
        assert_eq!(v1.version, 1, "{kind}");
        let again = b.put_definition(&def, 0).await;
        assert!(
            matches!(again, Err(BackendError::Conflict(_))),
            "{kind}: {again:?}"
        );
        let missing = b.put_definition(&definition("nope"), 1).await;
        assert!(
            matches!(missing, Err(BackendError::NotFound(_))),
            "{kind}: {missing:?}"
        );

        let changed = AgentDefinition {
            max_concurrency: Some(1),
            ..v1.clone()
        };
        let v2 = b.put_definition(&changed, 1).await.unwrap();
        assert_eq!((v2.version, v2.max_concurrency), (2, Some(1)), "{kind}");
        let stale = b.put_definition(&changed, 1).await;
        assert!(
            matches!(stale, Err(BackendError::Conflict(_))),
            "{kind}: {stale:?}"
        );
        assert_eq!(
            b.definition("d1").await.unwrap(),
            Some(v2.clone()),
            "{kind}"
        );

        b.put_definition(&definition("d0"), 0).await.unwrap();
        let ids: Vec<String> = b
            .definitions()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.agent_id)
            .collect();
        assert_eq!(ids, ["d0", "d1"], "{kind}");

        for base in [0, 1] {
            let stale = b.delete_definition("d1", Some(base)).await;
            assert!(
                matches!(stale, Err(BackendError::Conflict(_))),
                "{kind}: {stale:?}"
            );
        }
        let removed = b.delete_definition("d1", Some(2)).await.unwrap();
        assert_eq!(removed, v2, "{kind}");
        let gone = b.delete_definition("d1", None).await;
        assert!(
            matches!(gone, Err(BackendError::NotFound(_))),
            "{kind}: {gone:?}"
        );
        assert_eq!(b.definition("d1").await.unwrap(), None, "{kind}");
        // Created anew, it starts over at version 1.
        assert_eq!(
            b.put_definition(&def, 0).await.unwrap().version,
            1,
            "{kind}"
        );
        b.delete_definition("d0", None).await.unwrap();
        b.delete_definition("d1", None).await.unwrap();

        // Bounded.
        for i in 0..MAX_DEFINITIONS {
            b.put_definition(&definition(&format!("n{i}")), 0)
                .await
                .unwrap();
        }
        let full = b.put_definition(&definition("one-more"), 0).await;
        assert!(
            matches!(full, Err(BackendError::Limit(..))),
            "{kind}: {full:?}"
        );
        // An update of an existing one still fits.
        b.put_definition(&definition("n0"), 1).await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_writers_over_one_version_one_wins() {
    for (b, _redis) in stores().await {
        let kind = b.kind();
        let v1 = b.put_definition(&definition("race"), 0).await.unwrap();
        let writes = (0..8).map(|i| {
            let b = b.clone();
            let def = AgentDefinition {
                weight: i + 1,
                ..v1.clone()
            };
            tokio::spawn(async move { b.put_definition(&def, 1).await })
        });
        let mut won = 0;
        for w in writes {
            match w.await.unwrap() {
                Ok(d) => {
                    won += 1;
                    assert_eq!(d.version, 2, "{kind}");
                }
                Err(BackendError::Conflict(_)) => {}
                Err(e) => panic!("{kind}: {e}"),
            }
        }
        assert_eq!(won, 1, "{kind}: exactly one write over version 1");
    }
}

// ---------------------------------------------------------------- held to it

#[tokio::test]
async fn a_node_registering_elsewhere_is_held_to_its_definition() {
    let (_redis, servers) = instances(|_| {}).await;
    let mut admin = at(&servers, 0).client(ADMIN).await;
    let def = admin
        .call(
            "agents.create",
            json!({"agentId": "files", "name": "Files", "type": "worker",
                   "capabilities": ["files"], "tools": ["search", "delete"],
                   "approvalRequired": ["delete"], "maxConcurrency": 2, "weight": 5}),
        )
        .await;
    assert_eq!(def["version"], 1, "{def}");
    assert_eq!(def["updatedBy"], "admin", "{def}");
    assert_eq!(def["enabled"], true, "{def}");

    // A tool outside the definition is refused, naming it.
    let (_, refused) = register(
        at(&servers, 2),
        json!({"agentId": "files", "tools": [tool("search"), tool("shell")]}),
    )
    .await;
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    assert_eq!(refused["error"]["data"]["name"], "shell", "{refused}");
    assert_eq!(refused["error"]["data"]["field"], "tool", "{refused}");
    assert!(
        refused["error"]["data"]["reason"]
            .as_str()
            .is_some_and(|m| m.contains("shell")),
        "{refused}"
    );
    let (_, refused) = register(
        at(&servers, 2),
        json!({"agentId": "files", "capabilities": ["net"]}),
    )
    .await;
    assert_eq!(refused["error"]["data"]["name"], "net", "{refused}");

    // Within it: capped, named and typed by it, given its capabilities.
    let (mut node, reply) = register(
        at(&servers, 2),
        json!({"agentId": "files", "name": "mine", "tools": [tool("search"), tool("delete")],
               "maxConcurrency": 10}),
    )
    .await;
    let entry = &reply["result"];
    assert_eq!(entry["maxConcurrency"], 2, "{reply}");
    assert_eq!(entry["name"], "Files", "{reply}");
    assert_eq!(entry["type"], "worker", "{reply}");
    assert_eq!(entry["capabilities"], json!(["files"]), "{reply}");
    assert_eq!(entry["defined"]["version"], 1, "{reply}");
    assert_eq!(
        entry["defined"]["approvalRequired"],
        json!(["delete"]),
        "{reply}"
    );
    assert_eq!(entry["defined"]["weight"], 5, "{reply}");

    // The registry shows definition and live state together, anywhere.
    let mut reader = at(&servers, 1).client(READER).await;
    let got = reader.call("agents.get", json!({"agentId": "files"})).await;
    assert_eq!(got["online"], true, "{got}");
    assert_eq!(got["definition"]["version"], 1, "{got}");
    assert_eq!(
        got["definition"]["tools"],
        json!(["search", "delete"]),
        "{got}"
    );

    // A tool without approval runs at once.
    let mut caller = at(&servers, 0).client(WRITER).await;
    let (reply, seen) = invoke_echoed(
        &mut caller,
        &mut node,
        json!({"nodeId": "files", "command": "search", "params": {"q": 1}, "timeoutMs": 5000}),
    )
    .await;
    assert_eq!(seen["command"], "search", "{seen}");
    assert_eq!(
        reply["result"]["result"],
        json!({"echo": {"q": 1}}),
        "{reply}"
    );

    // The gated tool: an approver on B sees the request; approved, it runs.
    let mut approver = at(&servers, 1).client(APPROVER).await;
    let params = json!({"nodeId": "files", "command": "delete", "params": {"path": "/x"},
                        "timeoutMs": 8000});
    let sent = std::time::Instant::now();
    let (reply, ()) = tokio::join!(caller.request("node.invoke", params.clone()), async {
        let asked = push_where(&mut approver, "approval.requested", |a| {
            a["tool"] == "delete"
        })
        .await;
        eprintln!(
            "node.invoke on A to approval.requested on B: {:?}",
            sent.elapsed()
        );
        assert_eq!(asked["args"], json!({"path": "/x"}), "{asked}");
        assert_eq!(asked["requester"], "writer", "{asked}");
        node.expect_no_push("invoke", Duration::from_millis(200))
            .await;
        approver
            .call(
                "approval.resolve",
                json!({"approvalId": asked["approvalId"], "decision": "approve"}),
            )
            .await;
        let seen = answer_echo(&mut node).await;
        assert_eq!(seen["command"], "delete", "{seen}");
    });
    assert_eq!(
        reply["result"]["result"],
        json!({"echo": {"path": "/x"}}),
        "{reply}"
    );

    // Denied: the call fails and the node never hears of it.
    let (reply, ()) = tokio::join!(caller.request("node.invoke", params.clone()), async {
        let asked = push_where(&mut approver, "approval.requested", |a| {
            a["tool"] == "delete"
        })
        .await;
        approver
            .call(
                "approval.resolve",
                json!({"approvalId": asked["approvalId"], "decision": "deny", "note": "no"}),
            )
            .await;
    });
    assert_eq!(reply["error"]["code"], -32003, "{reply}");
    assert_eq!(reply["error"]["data"]["status"], "denied", "{reply}");
    assert!(reply["error"]["data"]["approvalId"].is_string(), "{reply}");
    node.expect_no_push("invoke", QUIET).await;

    // Unanswered: it times out with the call.
    let quick = json!({"nodeId": "files", "command": "delete", "timeoutMs": 300});
    let reply = caller.request("node.invoke", quick).await;
    assert_eq!(reply["error"]["code"], -32006, "{reply}");
    assert_eq!(reply["error"]["data"]["status"], "expired", "{reply}");
    node.expect_no_push("invoke", QUIET).await;
}

// ---------------------------------------------------------------- live updates

#[tokio::test]
async fn updates_apply_to_the_live_node_and_stale_versions_conflict() {
    let (_redis, servers) = instances(|_| {}).await;
    let mut admin = at(&servers, 0).client(ADMIN).await;
    admin
        .call(
            "agents.create",
            json!({"agentId": "w", "tools": ["a", "b"], "maxConcurrency": 4}),
        )
        .await;
    let (mut node, reply) = register(
        at(&servers, 2),
        json!({"agentId": "w", "tools": [tool("a"), tool("b")], "maxConcurrency": 4}),
    )
    .await;
    assert_eq!(reply["result"]["maxConcurrency"], 4, "{reply}");

    let v2 = admin
        .call(
            "agents.update",
            json!({"agentId": "w", "baseVersion": 1, "maxConcurrency": 1, "tools": ["a"]}),
        )
        .await;
    assert_eq!(v2["version"], 2, "{v2}");
    assert_eq!(v2["tools"], json!(["a"]), "{v2}");
    let stale = admin
        .request(
            "agents.update",
            json!({"agentId": "w", "baseVersion": 1, "weight": 3}),
        )
        .await;
    assert_eq!(stale["error"]["code"], -32007, "{stale}");

    // On B the registry soon shows the node re-limited on C.
    let mut reader = at(&servers, 1).client(READER).await;
    let entry = get_until(&mut reader, "w", |e| e["defined"]["version"] == 2).await;
    assert_eq!(entry["maxConcurrency"], 1, "{entry}");
    let tools: Vec<&str> = entry["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["a"], "{entry}");

    // The lowered cap is enforced where the node is: one call held, the
    // second refused busy.
    let mut caller = at(&servers, 0).client(WRITER).await;
    send_request(
        &mut caller,
        "held",
        "node.invoke",
        json!({"nodeId": "w", "command": "a", "timeoutMs": 5000}),
    )
    .await;
    let (srv, _) = server_request(&mut node, "invoke").await;
    let busy = caller
        .request(
            "node.invoke",
            json!({"nodeId": "w", "command": "a", "timeoutMs": 2000}),
        )
        .await;
    assert_eq!(busy["error"]["code"], -32002, "{busy}");
    answer(&mut node, &srv, json!("done")).await;
    let held = replies(&mut caller, &["held"]).await;
    assert_eq!(held["held"]["result"]["result"], "done", "{held:?}");

    // Lifted again: what the node offered comes back.
    admin
        .call(
            "agents.update",
            json!({"agentId": "w", "maxConcurrency": null, "tools": null}),
        )
        .await;
    let entry = get_until(&mut reader, "w", |e| e["defined"]["version"] == 3).await;
    assert_eq!(entry["maxConcurrency"], 4, "{entry}");
    assert_eq!(entry["tools"].as_array().map(Vec::len), Some(2), "{entry}");

    // Disabled: the live agent is deregistered, and may not come back.
    let asked = std::time::Instant::now();
    let v3 = admin
        .call("agents.update", json!({"agentId": "w", "enabled": false}))
        .await;
    assert_eq!(v3["version"], 4, "{v3}");
    let gone = node.expect_push("agent.deregistered").await;
    eprintln!(
        "agents.update on A to agent.deregistered on C: {:?}",
        asked.elapsed()
    );
    assert_eq!(gone["agentId"], "w", "{gone}");
    assert!(
        gone["reason"]
            .as_str()
            .is_some_and(|r| r.contains("disabled")),
        "{gone}"
    );
    let entry = get_until(&mut reader, "w", |e| e["online"] == false).await;
    assert_eq!(entry["definition"]["enabled"], false, "{entry}");
    let again = node
        .request(
            "agent.register",
            json!({"agentId": "w", "tools": [tool("a")]}),
        )
        .await;
    assert_eq!(again["error"]["code"], -32003, "{again}");
    assert!(
        again["error"]["data"]["reason"]
            .as_str()
            .is_some_and(|m| m.contains("disabled")),
        "{again}"
    );

    // Deleted (with a stale version first): the id works undefined again.
    let stale = admin
        .request("agents.delete", json!({"agentId": "w", "baseVersion": 2}))
        .await;
    assert_eq!(stale["error"]["code"], -32007, "{stale}");
    let deleted = admin
        .call("agents.delete", json!({"agentId": "w", "baseVersion": 4}))
        .await;
    assert_eq!(deleted["version"], 4, "{deleted}");
    let missing = admin
        .request("agents.delete", json!({"agentId": "w"}))
        .await;
    assert_eq!(missing["error"]["code"], -32001, "{missing}");
    let back = node
        .call(
            "agent.register",
            json!({"agentId": "w", "tools": [tool("shell")], "maxConcurrency": 9}),
        )
        .await;
    assert_eq!(back["maxConcurrency"], 9, "{back}");
    assert!(back.get("defined").is_none(), "{back}");
    let got = reader.call("agents.get", json!({"agentId": "w"})).await;
    assert_eq!(got["definition"], Value::Null, "{got}");
}

#[tokio::test]
async fn a_definition_created_for_a_live_agent_applies_to_it() {
    let (_redis, servers) = instances(|_| {}).await;
    let (_node, reply) = register(
        at(&servers, 1),
        json!({"agentId": "late", "tools": [tool("x"), tool("y")], "maxConcurrency": 8}),
    )
    .await;
    assert!(reply["result"].get("defined").is_none(), "{reply}");
    let mut admin = at(&servers, 0).client(ADMIN).await;
    admin
        .call(
            "agents.create",
            json!({"agentId": "late", "tools": ["y"], "maxConcurrency": 3}),
        )
        .await;
    let mut reader = at(&servers, 2).client(READER).await;
    let entry = get_until(&mut reader, "late", |e| e["defined"]["version"] == 1).await;
    assert_eq!(entry["maxConcurrency"], 3, "{entry}");
    assert_eq!(entry["tools"].as_array().map(Vec::len), Some(1), "{entry}");
    assert_eq!(entry["tools"][0]["name"], "y", "{entry}");
}

#[tokio::test]
async fn required_definitions_refuse_undefined_ids_and_deletion_deregisters() {
    let (_redis, servers) = instances(|c| c.agents.require_definition = true).await;
    let (_, refused) = register(at(&servers, 1), json!({"agentId": "free"})).await;
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    assert!(
        refused["error"]["data"]["reason"]
            .as_str()
            .is_some_and(|m| m.contains("require_definition")),
        "{refused}"
    );
    // Nodes that only declare caps at connect are not registered either.
    let (_ws, caps_conn) = caps_node(at(&servers, 2), &["cap-only"]).await;
    let mut reader = at(&servers, 0).client(READER).await;
    let none = reader
        .request("agents.get", json!({"agentId": caps_conn}))
        .await;
    assert_eq!(none["error"]["code"], -32001, "{none}");

    let mut admin = at(&servers, 0).client(ADMIN).await;
    admin
        .call("agents.create", json!({"agentId": "bound"}))
        .await;
    let (mut node, reply) = register(at(&servers, 1), json!({"agentId": "bound"})).await;
    assert_eq!(reply["result"]["online"], true, "{reply}");
    admin
        .call("agents.delete", json!({"agentId": "bound"}))
        .await;
    let gone = node.expect_push("agent.deregistered").await;
    assert_eq!(gone["agentId"], "bound", "{gone}");
    call_until(
        &mut reader,
        "agents.get",
        json!({"agentId": "bound"}),
        |r| r["error"]["code"] == -32001,
    )
    .await;
}

// ---------------------------------------------------------------- broadcast, stats

#[tokio::test]
async fn broadcast_reaches_matching_agents_on_every_instance_and_no_others() {
    let (_redis, servers) = instances(|_| {}).await;
    let (mut w1, _) = register(
        at(&servers, 0),
        json!({"agentId": "w1", "capabilities": ["x"]}),
    )
    .await;
    let (mut w2, _) = register(
        at(&servers, 1),
        json!({"agentId": "w2", "capabilities": ["x"]}),
    )
    .await;
    let (mut w3, _) = register(
        at(&servers, 2),
        json!({"agentId": "w3", "capabilities": ["y"]}),
    )
    .await;
    let (mut w4, _) = register(
        at(&servers, 2),
        json!({"agentId": "w4", "type": "tool", "capabilities": ["x"]}),
    )
    .await;
    let mut writer = at(&servers, 1).client(WRITER).await;
    let sent = writer
        .call(
            "agents.broadcast",
            json!({"capability": "x", "event": "reload", "data": {"v": 7}}),
        )
        .await;
    assert_eq!(sent["sent"], 3, "{sent}");
    for (ws, id) in [(&mut w1, "w1"), (&mut w2, "w2"), (&mut w4, "w4")] {
        let got = ws.expect_push("agents.broadcast").await;
        assert_eq!(
            got,
            json!({"event": "reload", "data": {"v": 7}, "agentId": id})
        );
    }
    w3.expect_no_push("agents.broadcast", QUIET).await;

    let sent = writer
        .call("agents.broadcast", json!({"type": "tool", "event": "t"}))
        .await;
    assert_eq!(sent["sent"], 1, "{sent}");
    assert_eq!(w4.expect_push("agents.broadcast").await["event"], "t");
    for ws in [&mut w1, &mut w2, &mut w3] {
        ws.expect_no_push("agents.broadcast", QUIET).await;
    }
    let none = writer
        .call(
            "agents.broadcast",
            json!({"capability": "nobody", "event": "t"}),
        )
        .await;
    assert_eq!(none["sent"], 0, "{none}");

    // Reading is not enough; a bad event is named.
    let mut reader = at(&servers, 0).client(READER).await;
    let denied = reader
        .request("agents.broadcast", json!({"event": "t"}))
        .await;
    assert_eq!(denied["error"]["code"], -32003, "{denied}");
    let bad = writer
        .request("agents.broadcast", json!({"event": ""}))
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    assert_eq!(bad["error"]["data"]["field"], "event", "{bad}");
}

#[tokio::test]
async fn stats_count_online_and_defined_offline_agents_cluster_wide() {
    let (_redis, servers) = instances(|_| {}).await;
    let mut admin = at(&servers, 0).client(ADMIN).await;
    for (id, caps) in [("s1", json!(["c1"])), ("s2", json!(["c1", "c3"]))] {
        admin
            .call(
                "agents.create",
                json!({"agentId": id, "type": "worker", "capabilities": caps}),
            )
            .await;
    }
    let (_s1, _) = register(at(&servers, 1), json!({"agentId": "s1"})).await;
    let (_u1, _) = register(
        at(&servers, 2),
        json!({"agentId": "u1", "capabilities": ["c2"]}),
    )
    .await;
    let mut reader = at(&servers, 1).client(READER).await;
    let stats = reader.call("agents.stats", json!({})).await;
    assert_eq!(stats["online"], 2, "{stats}");
    assert_eq!(stats["offline"], 1, "{stats}");
    assert_eq!(stats["defined"], 2, "{stats}");
    assert_eq!(
        stats["byType"]["worker"],
        json!({"online": 1, "offline": 1}),
        "{stats}"
    );
    assert_eq!(
        stats["byType"]["agent"],
        json!({"online": 1, "offline": 0}),
        "{stats}"
    );
    assert_eq!(
        stats["byCapability"]["c1"],
        json!({"online": 1, "offline": 1}),
        "{stats}"
    );
    assert_eq!(
        stats["byCapability"]["c2"],
        json!({"online": 1, "offline": 0}),
        "{stats}"
    );
    assert_eq!(
        stats["byCapability"]["c3"],
        json!({"online": 0, "offline": 1}),
        "{stats}"
    );

    // agents.list: entries with their definitions, and the defined-only ids.
    let list = reader.call("agents.list", json!({})).await;
    let defined: Vec<&str> = list["defined"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["agentId"].as_str().unwrap())
        .collect();
    assert_eq!(defined, ["s2"], "{list}");
    let s1 = counted(&list, "agents")
        .iter()
        .find(|a| a["agentId"] == "s1")
        .expect("s1 listed");
    assert_eq!(s1["definition"]["type"], "worker", "{s1}");
    let online_only = reader.call("agents.list", json!({"online": true})).await;
    assert_eq!(online_only["defined"], json!([]), "{online_only}");
    let got = reader.call("agents.get", json!({"agentId": "s2"})).await;
    assert_eq!(got["online"], false, "{got}");
    assert_eq!(got["definition"]["agentId"], "s2", "{got}");
}

// ---------------------------------------------------------------- validation, scope, alias

#[tokio::test]
async fn invalid_definitions_name_the_field_and_only_admins_write() {
    let (_redis, servers) = instances(|_| {}).await;
    let mut admin = at(&servers, 0).client(ADMIN).await;
    for (params, field) in [
        (json!({"agentId": ""}), "agentId"),
        (json!({"agentId": "v", "weight": 0}), "weight"),
        (json!({"agentId": "v", "weight": 1001}), "weight"),
        (
            json!({"agentId": "v", "maxConcurrency": 0}),
            "maxConcurrency",
        ),
        (json!({"agentId": "v", "tools": ["a", ""]}), "tools[1]"),
        (
            json!({"agentId": "v", "tools": ["a"], "approvalRequired": ["b"]}),
            "approvalRequired",
        ),
    ] {
        let reply = admin.request("agents.create", params.clone()).await;
        assert_eq!(reply["error"]["code"], -32602, "{params}: {reply}");
        assert_eq!(reply["error"]["data"]["field"], field, "{params}: {reply}");
    }
    let unknown = admin
        .request("agents.create", json!({"agentId": "v", "colour": "red"}))
        .await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");

    admin.call("agents.create", json!({"agentId": "v"})).await;
    let twice = admin
        .request("agents.create", json!({"agentId": "v"}))
        .await;
    assert_eq!(twice["error"]["code"], -32007, "{twice}");
    let bad_update = admin
        .request("agents.update", json!({"agentId": "v", "weight": 0}))
        .await;
    assert_eq!(
        bad_update["error"]["data"]["field"], "weight",
        "{bad_update}"
    );
    let missing = admin
        .request("agents.update", json!({"agentId": "none", "weight": 2}))
        .await;
    assert_eq!(missing["error"]["code"], -32001, "{missing}");
    // Null clears a limit.
    admin
        .call("agents.update", json!({"agentId": "v", "tools": ["a"]}))
        .await;
    let cleared = admin
        .call("agents.update", json!({"agentId": "v", "tools": null}))
        .await;
    assert_eq!(cleared["tools"], Value::Null, "{cleared}");
    assert_eq!(cleared["version"], 3, "{cleared}");

    for token in [WRITER, READER, APPROVER, NODE] {
        let mut ws = at(&servers, 1).client(token).await;
        for (method, params) in [
            ("agents.create", json!({"agentId": "x"})),
            ("agents.update", json!({"agentId": "v", "weight": 2})),
            ("agents.delete", json!({"agentId": "v"})),
        ] {
            assert_eq!(
                ws.error_code(method, params).await,
                -32003,
                "{token} {method}"
            );
        }
    }
    let got = admin.call("agents.get", json!({"agentId": "v"})).await;
    assert_eq!(got["definition"]["version"], 3, "untouched: {got}");
}

#[tokio::test]
async fn agent_is_an_alias_of_agent_run() {
    let (_redis, servers) = instances(|_| {}).await;
    let mut caller = at(&servers, 0).client(WRITER).await;
    let none = caller.request("agent", json!({"task": "t"})).await;
    assert_eq!(none["error"]["code"], -32005, "no agent online yet: {none}");
    let (mut runner, _) = register(
        at(&servers, 2),
        json!({"agentId": "runner", "capabilities": ["agent.run"]}),
    )
    .await;
    let (run, (_, p)) = tokio::join!(
        caller.call("agent", json!({"task": "summarise"})),
        server_request(&mut runner, "agent.run"),
    );
    assert_eq!(run["agentId"], "runner", "{run}");
    assert_eq!(run["status"], "running", "{run}");
    assert_eq!(p["task"], "summarise", "{p}");
}

#[tokio::test]
async fn a_gated_tool_called_over_http_waits_for_its_approval() {
    let (_redis, servers) = instances(|_| {}).await;
    let mut admin = at(&servers, 0).client(ADMIN).await;
    admin
        .call(
            "agents.create",
            json!({"agentId": "ops", "tools": ["reboot"], "approvalRequired": ["reboot"]}),
        )
        .await;
    let (mut node, _) = register(
        at(&servers, 2),
        json!({"agentId": "ops", "tools": [tool("reboot")]}),
    )
    .await;
    let mut approver = at(&servers, 1).client(APPROVER).await;
    let body = json!({"tool": "reboot", "args": {"host": "h1"}, "timeoutMs": 8000}).to_string();
    let headers = [("x-api-key", API_KEY), ("content-type", "application/json")];
    let ((status, _, reply), ()) = tokio::join!(
        http(
            at(&servers, 0).addr,
            "POST",
            "/tools/invoke",
            &headers,
            Some(&body)
        ),
        async {
            let asked = push_where(&mut approver, "approval.requested", |a| {
                a["tool"] == "reboot"
            })
            .await;
            assert_eq!(asked["requester"], "service", "{asked}");
            node.expect_no_push("invoke", Duration::from_millis(200))
                .await;
            approver
                .call(
                    "approval.resolve",
                    json!({"approvalId": asked["approvalId"], "decision": "approve"}),
                )
                .await;
            answer_echo(&mut node).await;
        }
    );
    assert_eq!(status, 200, "{reply}");
    let reply: Value = serde_json::from_str(&reply).expect("JSON");
    assert_eq!(reply["result"], json!({"echo": {"host": "h1"}}), "{reply}");
}
