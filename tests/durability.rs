//! Durability with real processes: what the gateway acknowledged survives
//! Redis being killed with SIGKILL and restarted from its append-only file
//! (`appendfsync everysec`, as docker-compose and the chart's built-in
//! Redis run it; docs/durability.md), and every instance resumes with no
//! manual step.
//!
//! Not a behaviour test: it starts its own persistent Redis and processes
//! whatever `SWITCHYARD_TEST_BACKEND` says.

mod common;

use common::instance::*;
use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// What `appendfsync everysec` may lose: the writes of the last second.
const FSYNC_WINDOW: Duration = Duration::from_millis(1500);

/// Credentials of both instances: the usual ones, a node and an approver.
fn tokens() -> String {
    format!("{TOKENS},keeper:{NODE}:node,approver:{APPROVER}:operator.approvals")
}

/// Every record the test wrote, as the gateway reads it back.
async fn records(admin: &mut Ws, approver: &mut Ws, session: &str) -> Value {
    let pending = approver.call("approval.list", json!({})).await;
    let audit = approver.call("approval.history", json!({})).await;
    let log = admin
        .call("session.history", json!({"sessionId": session}))
        .await;
    let chat = admin
        .call("chat.history", json!({"sessionId": session}))
        .await;
    let channel = admin
        .call("history", json!({"channel": "audit:trail"}))
        .await;
    let run = admin
        .call(
            "agent.wait",
            json!({"sessionId": "run-kept", "timeoutMs": 2000}),
        )
        .await;
    let cron = admin.call("cron.get", json!({"id": "kept-job"})).await;
    let cron_runs = admin.call("cron.runs", json!({"id": "kept-job"})).await;
    json!({"pending": pending, "audit": audit, "log": log, "chat": chat,
           "channel": channel, "run": run, "cron": cron, "cronRuns": cron_runs})
}

#[tokio::test]
async fn acknowledged_records_survive_a_redis_crash_with_the_append_only_file() {
    let mut redis = RedisProcess::start_persistent();
    let config = audit_config("durability.toml");
    let tokens = tokens();
    let env = [
        ("SWITCHYARD_TOKENS", tokens.as_str()),
        ("SWITCHYARD_CONFIG", config.to_str().expect("utf-8 path")),
    ];
    let a = Instance::start(&redis, "a", &env).await;
    let b = Instance::start(&redis, "b", &env).await;

    let mut node = a.client(NODE).await;
    node.call(
        "agent.register",
        json!({"agentId": "keeper", "capabilities": ["agent.run", "count"]}),
    )
    .await;
    let mut admin = b.client(ADMIN).await;
    let mut approver = a.client(APPROVER).await;

    // Approvals: one left pending, one decided (the audit trail).
    let pending = node
        .call(
            "approval.request",
            json!({"tool": "shell", "summary": "kept pending", "timeoutMs": 600_000}),
        )
        .await["approvalId"]
        .clone();
    let decided = node
        .call(
            "approval.request",
            json!({"tool": "shell", "summary": "decided", "timeoutMs": 600_000}),
        )
        .await["approvalId"]
        .clone();
    approver
        .call(
            "approval.resolve",
            json!({"approvalId": decided, "decision": "approve", "note": "fine"}),
        )
        .await;

    // A session's log and chat history; a channel's log.
    admin
        .call("session.create", json!({"sessionId": "kept"}))
        .await;
    for i in 1..=3 {
        admin
            .call(
                "session.send",
                json!({"sessionId": "kept", "event": "step", "data": {"i": i}}),
            )
            .await;
    }
    admin
        .call(
            "chat.inject",
            json!({"sessionId": "kept", "message": "remember me"}),
        )
        .await;
    for i in 1..=3 {
        admin
            .call(
                "publish",
                json!({"channel": "audit:trail", "event": "entry", "data": {"i": i}}),
            )
            .await;
    }

    // A finished run.
    admin
        .call("session.create", json!({"sessionId": "run-kept"}))
        .await;
    let (run, ()) = tokio::join!(
        admin.call(
            "agent.run",
            json!({"sessionId": "run-kept", "agentId": "keeper", "task": "keep"}),
        ),
        async {
            let (id, _) = server_request(&mut node, "agent.run").await;
            answer(&mut node, &id, json!({"kept": true})).await;
        }
    );
    assert_eq!(run["sessionId"], "run-kept", "{run}");

    // An idempotent call's result.
    let invoke = json!({"nodeId": "keeper", "command": "count", "params": {},
                        "idempotencyKey": "kept-key", "timeoutMs": 5000});
    let (first, ()) = tokio::join!(admin.call("node.invoke", invoke.clone()), async {
        let (id, _) = server_request(&mut node, "invoke").await;
        answer(&mut node, &id, json!({"count": 1})).await;
    });
    assert_eq!(first["result"], json!({"count": 1}), "{first}");

    // A cron job (once a year: it does not fire during the test) and
    // its history.
    admin
        .call(
            "cron.add",
            json!({"id": "kept-job", "schedule": "0 0 1 1 *",
                "target": {"channel": "public:cron", "event": "cron"}}),
        )
        .await;
    let fired = admin.call("cron.run", json!({"id": "kept-job"})).await;
    assert_eq!(fired["outcome"], "ok", "{fired}");

    let before = records(&mut admin, &mut approver, "kept").await;
    assert_eq!(before["cronRuns"]["count"], 1, "{before}");
    assert_eq!(before["run"]["status"], "completed", "{before}");
    assert_eq!(before["log"]["events"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        before["channel"]["events"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(before["audit"]["count"], 1, "{before}");
    assert!(
        before["pending"]["approvals"]
            .as_array()
            .is_some_and(|l| l.iter().any(|p| p["approvalId"] == pending)),
        "{before}"
    );

    // A subscriber on one instance from before the crash: its instance
    // must subscribe again on its own for publications from the other.
    let mut watcher = a.client(WRITER).await;
    watcher
        .call("subscribe", json!({"channels": ["audit:trail"]}))
        .await;

    // Past the fsync window, Redis dies without a chance to save anything.
    tokio::time::sleep(FSYNC_WINDOW).await;
    let crashed = Instant::now();
    redis.crash_and_restart();
    let restarted = crashed.elapsed();

    // Both instances come back on their own.
    let deadline = Instant::now() + Duration::from_secs(30);
    a.ready_again(deadline).await;
    b.ready_again(deadline).await;
    eprintln!(
        "redis restarted from its append-only file in {} ms; instances ready {} ms after the crash",
        restarted.as_millis(),
        crashed.elapsed().as_millis()
    );

    // Every record reads back as it was (a call may meet the reconnect:
    // retried while the answer is -32005).
    let after = loop {
        let pending = approver.request("approval.list", json!({})).await;
        if pending["error"]["code"] != -32005 {
            break records(&mut admin, &mut approver, "kept").await;
        }
        assert!(Instant::now() < deadline, "{pending}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The logs' epoch changes (`everysec` may have lost the last second,
    // and nothing proves it did not); apart from it, nothing changed.
    let epoch_of = |records: &Value| records["channel"]["epoch"].as_str().map(str::to_owned);
    let (old_epoch, new_epoch) = (epoch_of(&before), epoch_of(&after));
    assert!(
        old_epoch.is_some() && new_epoch.is_some() && old_epoch != new_epoch,
        "{after}"
    );
    let without_epochs = |mut records: Value| {
        for log in ["channel", "log"] {
            records[log].as_object_mut().map(|o| o.remove("epoch"));
        }
        records
    };
    assert_eq!(
        without_epochs(after),
        without_epochs(before),
        "records changed across the crash"
    );
    // Connections are told, and a reader of the old epoch learns it.
    let told = watcher.expect_push("epoch.changed").await;
    assert_eq!(told["epoch"].as_str(), new_epoch.as_deref(), "{told}");
    let read = admin
        .call(
            "history",
            json!({"channel": "audit:trail", "since": 3, "epoch": old_epoch}),
        )
        .await;
    assert_eq!(read["epochChanged"], true, "{read}");
    assert_eq!(read["complete"], false, "{read}");

    // The idempotent call answers its stored result; the node is not asked.
    let again = admin.call("node.invoke", invoke).await;
    assert_eq!(again["result"], json!({"count": 1}), "{again}");
    node.expect_no_push("invoke", Duration::from_millis(300))
        .await;

    // The decided approval stays decided; the pending one is decided once.
    assert_eq!(
        approver
            .error_code(
                "approval.resolve",
                json!({"approvalId": decided, "decision": "deny"}),
            )
            .await,
        -32007
    );
    approver
        .call(
            "approval.resolve",
            json!({"approvalId": pending, "decision": "deny", "note": "after the crash"}),
        )
        .await;
    let decision = node
        .call(
            "approval.wait",
            json!({"approvalId": pending, "timeoutMs": 2000}),
        )
        .await;
    assert_eq!(decision["status"], "denied", "{decision}");

    // The logs keep numbering after what they hold; live delivery crosses
    // instances again, to the subscription made before the crash.
    let sent = admin
        .call(
            "session.send",
            json!({"sessionId": "kept", "event": "step", "data": {"i": 4}}),
        )
        .await;
    assert_eq!(sent["offset"], 4, "{sent}");
    let published = admin
        .call(
            "publish",
            json!({"channel": "audit:trail", "event": "entry", "data": {"i": 4}}),
        )
        .await;
    assert_eq!(published["offset"], 4, "{published}");
    let push = notify_on(&mut watcher, "audit:trail").await;
    assert_eq!(push["data"], json!({"i": 4}), "{push}");
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn a_run_whose_agent_instance_dies_ends_as_instance_lost_within_node_ttl() {
    let redis = RedisProcess::start();
    let tokens = tokens();
    let env = [("SWITCHYARD_TOKENS", tokens.as_str())];
    let a = Instance::start(&redis, "a", &env).await;
    let mut b = Instance::start(&redis, "b", &env).await;

    let mut node = b.client(NODE).await;
    node.call(
        "agent.register",
        json!({"agentId": "doomed", "capabilities": ["agent.run"]}),
    )
    .await;
    let mut caller = a.client(ADMIN).await;
    caller
        .call("session.create", json!({"sessionId": "lost-run"}))
        .await;
    let (run, _) = tokio::join!(
        caller.call(
            "agent.run",
            json!({"sessionId": "lost-run", "agentId": "doomed", "task": "long"}),
        ),
        server_request(&mut node, "agent.run"),
    );
    let run_id = run["runId"].clone();

    // The agent has the run; its instance dies without a word.
    let killed = Instant::now();
    b.kill9();
    let ended = push_where(&mut caller, "agent.error", |e| e["runId"] == run_id).await;
    let after = killed.elapsed();
    eprintln!(
        "run ended as instance_lost {} ms after its agent's instance was killed (node_ttl {} ms)",
        after.as_millis(),
        NODE_TTL.as_millis()
    );
    // Within `node_ttl` of the death, give or take the scheduling of a
    // loaded machine.
    assert!(
        after <= NODE_TTL + Duration::from_millis(750),
        "{after:?}: {ended}"
    );
    assert_eq!(ended["status"], "error", "{ended}");
    assert_eq!(ended["error"]["code"], -32005, "{ended}");
    assert_eq!(ended["error"]["data"]["reason"], "instance_lost", "{ended}");
    assert_eq!(ended["error"]["data"]["instanceId"], "b", "{ended}");

    // The record says so, and the session takes a new run at once.
    let record = caller
        .call(
            "agent.wait",
            json!({"sessionId": "lost-run", "timeoutMs": 1000}),
        )
        .await;
    assert_eq!(record["status"], "error", "{record}");
    assert_eq!(record["error"]["data"]["reason"], "instance_lost");
    let mut rescuer = a.client(NODE).await;
    rescuer
        .call(
            "agent.register",
            json!({"agentId": "rescuer", "capabilities": ["agent.run"]}),
        )
        .await;
    let (again, _) = tokio::join!(
        caller.call(
            "agent.run",
            json!({"sessionId": "lost-run", "agentId": "rescuer", "task": "again"}),
        ),
        server_request(&mut rescuer, "agent.run"),
    );
    assert_ne!(again["runId"], run_id, "{again}");
}

#[tokio::test]
async fn a_requester_away_during_the_decision_gets_it_on_any_instance() {
    let redis = RedisProcess::start();
    let tokens = tokens();
    let env = [("SWITCHYARD_TOKENS", tokens.as_str())];
    let a = Instance::start(&redis, "a", &env).await;
    let b = Instance::start(&redis, "b", &env).await;
    let c = Instance::start(&redis, "c", &env).await;

    // Asked on a, then the requester is gone (its instance lives on).
    let mut requester = a.client(NODE).await;
    let hello = requester
        .call("connect", json!({"client": {"name": "requester"}}))
        .await;
    let requester_id = hello["connId"].as_str().expect("connId").to_owned();
    let waiting = requester
        .call(
            "approval.request",
            json!({"tool": "deploy", "summary": "while away", "timeoutMs": 600_000}),
        )
        .await["approvalId"]
        .clone();
    let early = requester
        .call(
            "approval.request",
            json!({"tool": "deploy", "summary": "back before", "timeoutMs": 600_000}),
        )
        .await["approvalId"]
        .clone();
    drop(requester);
    let mut admin = b.client(ADMIN).await;
    let (gone, list) = poll_call(&mut admin, WAIT, "system.presence", json!({}), |r| {
        r["result"]["clients"]
            .as_array()
            .is_some_and(|c| !c.iter().any(|e| e["connId"] == requester_id.as_str()))
    })
    .await;
    assert!(gone, "the requester's connection left presence: {list}");

    // Decided on b while nobody of the requester's is connected.
    let mut approver = b.client(APPROVER).await;
    approver
        .call(
            "approval.resolve",
            json!({"approvalId": waiting, "decision": "approve", "note": "go"}),
        )
        .await;

    // Back on c: the decision made meanwhile is pushed to it, once; it
    // can read it too, and one still pending is decided later while it
    // waits.
    let mut back = c.client(NODE).await;
    let pushed = back.expect_push("approval.resolved").await;
    assert_eq!(pushed["approvalId"], waiting, "{pushed}");
    assert_eq!(pushed["status"], "approved", "{pushed}");
    let mut again = b.client(NODE).await;
    again
        .expect_no_push("approval.resolved", Duration::from_millis(300))
        .await;
    let decided = back
        .call(
            "approval.wait",
            json!({"approvalId": waiting, "timeoutMs": 1000}),
        )
        .await;
    assert_eq!(decided["status"], "approved", "{decided}");
    assert_eq!(decided["decidedBy"], "approver", "{decided}");
    assert_eq!(decided["note"], "go", "{decided}");
    let (later, ()) = tokio::join!(
        back.call(
            "approval.wait",
            json!({"approvalId": early, "timeoutMs": 5000}),
        ),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            approver
                .call(
                    "approval.resolve",
                    json!({"approvalId": early, "decision": "deny"}),
                )
                .await;
        }
    );
    assert_eq!(later["status"], "denied", "{later}");
}

#[tokio::test]
async fn a_connection_closed_while_redis_was_down_leaves_no_trace_once_it_is_back() {
    let mut redis = RedisProcess::start_persistent();
    let tokens = tokens();
    let env = [("SWITCHYARD_TOKENS", tokens.as_str())];
    let a = Instance::start(&redis, "a", &env).await;
    let mut admin = a.client(ADMIN).await;
    let mut leaving = a.client(WRITER).await;
    let gone = leaving.call("connect", json!({})).await["connId"]
        .as_str()
        .expect("connId")
        .to_owned();
    leaving
        .call("subscribe", json!({"channels": ["public:room"]}))
        .await;
    let members = |p: &Value| -> Vec<String> {
        p["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|e| e["connId"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let room = admin
        .call("presence.get", json!({"channel": "public:room"}))
        .await;
    assert!(members(&room).contains(&gone), "{room}");

    // On disk, then Redis dies, and the socket closes while it is down:
    // its instance cannot remove anything.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.kill();
    drop(leaving);
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.start_again();

    // Back from its file, Redis still holds the entry; the instance removes
    // it on its own once it reconnects.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let presence = admin.request("system.presence", json!({})).await;
        let room = admin
            .request("presence.get", json!({"channel": "public:room"}))
            .await;
        let listed = presence["result"]["clients"]
            .as_array()
            .is_some_and(|c| c.iter().any(|e| e["connId"] == gone.as_str()));
        let member = members(&room["result"]).contains(&gone);
        if presence.get("error").is_none() && room.get("error").is_none() && !listed && !member {
            assert_eq!(presence["result"]["total"], 1, "{presence}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection is still there: {presence} {room}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_empty_restart_brings_back_what_live_work_proves() {
    let mut redis = RedisProcess::start();
    let tokens = tokens();
    let env = [
        ("SWITCHYARD_TOKENS", tokens.as_str()),
        ("SWITCHYARD_AUTH_MODE", "token,device"),
    ];
    let a = Instance::start(&redis, "a", &env).await;
    let b = Instance::start(&redis, "b", &env).await;

    let mut node = a.client(NODE).await;
    node.call(
        "agent.register",
        json!({"agentId": "keeper", "capabilities": ["agent.run"]}),
    )
    .await;
    let mut admin = b.client(ADMIN).await;
    let mut approver = b.client(APPROVER).await;

    // A device paired and connected on a.
    let url = format!("ws://127.0.0.1:{}/ws", a.port);
    let mut waiting = Ws::connect(&url).await.expect("connects");
    waiting.expect_push("welcome").await;
    waiting
        .call(
            "device.pair.request",
            json!({"deviceId": "tablet-9", "name": "Tablet", "platform": "android"}),
        )
        .await;
    admin
        .call("device.pair.approve", json!({"deviceId": "tablet-9"}))
        .await;
    let paired = waiting.expect_push("device.paired").await;
    let token = paired["deviceToken"].as_str().expect("a token").to_owned();
    let mut device = a.client(&token).await;
    assert_eq!(device.call("connect", json!({})).await["role"], "node");

    // A run in progress: the agent on a holds it.
    admin
        .call("session.create", json!({"sessionId": "live"}))
        .await;
    let started = admin
        .call(
            "agent.run",
            json!({"sessionId": "live", "agentId": "keeper", "task": "go on"}),
        )
        .await;
    let (run_request, _) = server_request(&mut node, "agent.run").await;

    // A pending approval, requested from a.
    let pending = node
        .call(
            "approval.request",
            json!({"tool": "shell", "summary": "survives", "timeoutMs": 600_000}),
        )
        .await["approvalId"]
        .clone();

    // Redis comes back with nothing.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    a.ready_again(deadline).await;
    b.ready_again(deadline).await;
    let told = approver.expect_push("epoch.changed").await;
    assert!(told["epoch"].is_string(), "{told}");
    device.expect_push("epoch.changed").await;

    // The pending approval is back (written by a), and decided once.
    let listed = call_when_back(&mut approver, "approval.list", json!({})).await;
    let back = listed["result"]["approvals"]
        .as_array()
        .is_some_and(|l| l.iter().any(|p| p["approvalId"] == pending));
    assert!(back, "{listed}");
    approver
        .call(
            "approval.resolve",
            json!({"approvalId": pending, "decision": "approve"}),
        )
        .await;
    let decision = node
        .call(
            "approval.wait",
            json!({"approvalId": pending, "timeoutMs": 2000}),
        )
        .await;
    assert_eq!(decision["status"], "approved", "{decision}");

    // The run is recorded as running again (written by a) and ends with
    // the agent's answer.
    let still = admin
        .request("agent.wait", json!({"sessionId": "live", "timeoutMs": 300}))
        .await;
    assert_eq!(still["error"]["code"], -32006, "still running: {still}");
    answer(&mut node, &run_request, json!({"done": true})).await;
    let ended = admin
        .call(
            "agent.wait",
            json!({"sessionId": "live", "timeoutMs": 5000}),
        )
        .await;
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["runId"], started["runId"], "{ended}");
    assert_eq!(ended["result"], json!({"done": true}), "{ended}");

    // The connected device's record is back: it shows in the list and its
    // token still connects, on the other instance too.
    let devices = admin.call("device.list", json!({})).await;
    assert!(devices.to_string().contains("tablet-9"), "{devices}");
    let mut again = b.client(&token).await;
    assert_eq!(again.call("connect", json!({})).await["role"], "node");
}

/// The agent on b streams `agent.event {i}` on session `handoff`.
async fn stream(agent: &mut Ws, from: u64, to: u64) {
    for i in from..to {
        agent
            .call(
                "agent.event",
                json!({"sessionId": "handoff", "type": "delta", "data": {"i": i}}),
            )
            .await;
    }
}

#[tokio::test]
async fn a_caller_whose_instance_dies_resumes_its_run_and_its_approval_elsewhere() {
    let redis = RedisProcess::start();
    let tokens = tokens();
    let env = [("SWITCHYARD_TOKENS", tokens.as_str())];
    let mut a = Instance::start(&redis, "a", &env).await;
    let b = Instance::start(&redis, "b", &env).await;

    let mut agent = b.client(NODE).await;
    agent
        .call(
            "agent.register",
            json!({"agentId": "runner", "capabilities": ["agent.run"]}),
        )
        .await;
    let mut approver = b.client(APPROVER).await;

    // On a: the caller owns a session with a run, a requester waits for a
    // decision.
    let mut caller = a.client(WRITER).await;
    let created = caller
        .call("session.create", json!({"sessionId": "handoff"}))
        .await;
    let token = created["resumeToken"].clone();
    let (started, (run_request, _)) = tokio::join!(
        caller.call(
            "agent.run",
            json!({"sessionId": "handoff", "agentId": "runner", "task": "long"}),
        ),
        server_request(&mut agent, "agent.run"),
    );
    let run_id = started["runId"].clone();
    stream(&mut agent, 0, 3).await;
    let mut last = 0;
    for i in 0..3 {
        let e = caller.expect_push("agent.event").await;
        assert_eq!(e["data"]["i"], i, "{e}");
        last = e["offset"].as_u64().expect("an offset");
    }
    let mut requester = a.client(NODE).await;
    let asked = requester
        .call(
            "approval.request",
            json!({"tool": "deploy", "summary": "while away", "timeoutMs": 600_000}),
        )
        .await["approvalId"]
        .clone();
    requester
        .send_json(
            &json!({"jsonrpc": "2.0", "id": 99, "method": "approval.wait",
                           "params": {"approvalId": asked, "timeoutMs": 60_000}}),
        )
        .await;

    // The caller's instance dies; the work goes on meanwhile.
    a.kill9();
    stream(&mut agent, 3, 5).await;
    approver
        .call(
            "approval.resolve",
            json!({"approvalId": asked, "decision": "approve", "note": "done"}),
        )
        .await;

    // The caller comes back on b and resumes from its last offset: the
    // events it missed, in order, then the live ones.
    let mut back = b.client(WRITER).await;
    let resumed = back
        .call(
            "session.resume",
            json!({"sessionId": "handoff", "resumeToken": token, "offset": last}),
        )
        .await;
    assert_eq!(resumed["complete"], true, "{resumed}");
    assert_eq!(resumed["replayed"], 2, "{resumed}");
    for i in 3..5 {
        let e = back.expect_push("agent.event").await;
        assert_eq!(
            (e["data"]["i"].clone(), e["runId"].clone()),
            (json!(i), run_id.clone()),
            "{e}"
        );
    }
    stream(&mut agent, 5, 6).await;
    let e = back.expect_push("agent.event").await;
    assert_eq!(e["data"]["i"], 5, "{e}");
    answer(&mut agent, &run_request, json!({"done": true})).await;
    let ended = back
        .call(
            "agent.wait",
            json!({"sessionId": "handoff", "timeoutMs": 5000}),
        )
        .await;
    assert_eq!(
        (ended["status"].clone(), ended["runId"].clone()),
        (json!("completed"), run_id),
        "{ended}"
    );

    // The requester, back on b, gets the decision made while it was gone.
    let mut again = b.client(NODE).await;
    let decision = again
        .call(
            "approval.wait",
            json!({"approvalId": asked, "timeoutMs": 2000}),
        )
        .await;
    assert_eq!(
        (decision["status"].clone(), decision["note"].clone()),
        (json!("approved"), json!("done")),
        "{decision}"
    );
}

/// A persistent Redis, instances a and b, and a run on new session
/// `session`: started by a caller on b, sent to agent `steady` on a, and
/// synced to the append-only file.
struct SentRun {
    redis: RedisProcess,
    _instances: (Instance, Instance),
    caller: Ws,
    agent: Ws,
    run_id: Value,
    /// The id of the `agent.run` request the agent answers.
    request: String,
}

async fn run_sent(session: &str) -> SentRun {
    let redis = RedisProcess::start_persistent();
    let tokens = tokens();
    let env = [("SWITCHYARD_TOKENS", tokens.as_str())];
    let a = Instance::start(&redis, "a", &env).await;
    let b = Instance::start(&redis, "b", &env).await;
    let mut caller = b.client(WRITER).await;
    let mut agent = agent_as(&a, "steady").await;
    caller
        .call("session.create", json!({"sessionId": session}))
        .await;
    let (started, (request, _)) = tokio::join!(
        caller.call(
            "agent.run",
            json!({"sessionId": session, "agentId": "steady", "task": "answer"}),
        ),
        server_request(&mut agent, "agent.run"),
    );
    tokio::time::sleep(FSYNC_WINDOW).await;
    SentRun {
        redis,
        _instances: (a, b),
        caller,
        agent,
        run_id: started["runId"].clone(),
        request,
    }
}

/// `agent.wait` on `session` from `caller` until the run has ended, through
/// a backend coming back; the record.
async fn run_ended(caller: &mut Ws, session: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = call_when_back(
            caller,
            "agent.wait",
            json!({"sessionId": session, "timeoutMs": 2000}),
        )
        .await;
        if reply["error"]["code"] != -32006 {
            return reply["result"].clone();
        }
        assert!(Instant::now() < deadline, "the run never ended: {reply}");
    }
}

#[tokio::test]
async fn a_run_answered_while_redis_is_down_ends_with_the_answer_once_it_is_back() {
    let mut run = run_sent("answered-away").await;

    // The agent answers while Redis is down: its instance keeps the answer
    // until it can write it.
    run.redis.kill();
    answer(&mut run.agent, &run.request, json!({"done": "while away"})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.redis.start_again();
    let ended = run_ended(&mut run.caller, "answered-away").await;
    assert_eq!(
        (&ended["status"], &ended["runId"], &ended["result"]),
        (
            &json!("completed"),
            &run.run_id,
            &json!({"done": "while away"})
        ),
        "{ended}"
    );
}

#[tokio::test]
async fn a_run_end_lost_with_the_last_writes_is_written_again() {
    let mut run = run_sent("end-lost").await;
    let saved = run.redis.save_files();

    answer(&mut run.agent, &run.request, json!({"done": "once"})).await;
    let ended = run_ended(&mut run.caller, "end-lost").await;
    assert_eq!(ended["status"], "completed", "{ended}");

    // Redis comes back from files synced before the end: the run reads as
    // running, served by a live instance; that instance ends it again.
    run.redis.crash_and_restart_from(&saved);
    let again = run_ended(&mut run.caller, "end-lost").await;
    assert_eq!(
        (&again["status"], &again["runId"], &again["result"]),
        (&json!("completed"), &run.run_id, &json!({"done": "once"})),
        "{again}"
    );
}

/// Sessions of the runs lost together in the re-attach test, and the
/// agent serving each.
const LOST: [(&str, &str); 3] = [
    ("reborn-done", "phoenix"),
    ("reborn-cancel", "phoenix-2"),
    ("reborn-gone", "phoenix-3"),
];

/// An agent connection on `instance` registered as `agent_id`.
async fn agent_as(instance: &Instance, agent_id: &str) -> Ws {
    let mut agent = instance.client(NODE).await;
    agent
        .call(
            "agent.register",
            json!({"agentId": agent_id, "capabilities": ["agent.run"]}),
        )
        .await;
    agent
}

/// `caller` creates `session` and runs `agent_id` on it, served on
/// `instance`: the run id, the session's resume token and the agent's
/// connection (which has the run's request).
async fn run_served_on(
    instance: &Instance,
    caller: &mut Ws,
    session: &str,
    agent_id: &str,
) -> (Value, Value, Ws) {
    let mut agent = agent_as(instance, agent_id).await;
    let created = caller
        .call("session.create", json!({"sessionId": session}))
        .await;
    let (run, (_, request)) = tokio::join!(
        caller.call(
            "agent.run",
            json!({"sessionId": session, "agentId": agent_id, "task": "long"}),
        ),
        server_request(&mut agent, "agent.run"),
    );
    assert_eq!(request["runId"], run["runId"], "{request}");
    (run["runId"].clone(), created["resumeToken"].clone(), agent)
}

/// An agent connection on `instance`, registered as `agent_id` and
/// re-attached to run `run_id` of `session`, and the run's record as the
/// re-attach answered it (running again).
async fn taken_back(
    instance: &Instance,
    agent_id: &str,
    session: &str,
    run_id: &Value,
) -> (Ws, Value) {
    let mut agent = agent_as(instance, agent_id).await;
    let back = agent
        .call(
            "agent.reattach",
            json!({"sessionId": session, "runId": run_id}),
        )
        .await;
    assert_eq!(back["status"], "running", "{back}");
    (agent, back)
}

/// `agent.event {i}` on `session` from `agent`.
async fn emit(agent: &mut Ws, session: &str, i: u64) -> u64 {
    let sent = agent
        .call(
            "agent.event",
            json!({"sessionId": session, "type": "delta", "data": {"i": i}}),
        )
        .await;
    sent["offset"].as_u64().unwrap_or_else(|| panic!("{sent}"))
}

#[tokio::test]
async fn an_agent_whose_instance_dies_reattaches_to_its_run_on_another() {
    let redis = RedisProcess::start();
    let tokens = tokens();
    let env = [("SWITCHYARD_TOKENS", tokens.as_str())];
    let a = Instance::start(&redis, "a", &env).await;
    let mut b = Instance::start(&redis, "b", &env).await;
    let mut c = Instance::start(&redis, "c", &env).await;

    // Three runs served on b, each by its own agent; the first streams two
    // events before b dies.
    let mut caller = a.client(ADMIN).await;
    let mut runs = Vec::new();
    for (session, agent_id) in LOST {
        let (run_id, _, agent) = run_served_on(&b, &mut caller, session, agent_id).await;
        runs.push((run_id, agent));
    }
    let (session, _) = LOST[0];
    let mut offsets = Vec::new();
    for i in 0..2 {
        offsets.push(emit(&mut runs[0].1, session, i).await);
    }

    // b dies. The first agent is back on c at once and asks for its run:
    // the call waits until the loss is noticed, then hands the run over.
    b.kill9();
    let killed = Instant::now();
    let run_id = runs[0].0.clone();
    let (mut back, reattached) = taken_back(&c, "phoenix", session, &run_id).await;
    eprintln!(
        "run re-attached on c {} ms after its instance was killed (node_ttl {} ms)",
        killed.elapsed().as_millis(),
        NODE_TTL.as_millis()
    );
    assert_eq!(
        (
            reattached["status"].clone(),
            reattached["attached"].clone(),
            reattached["instanceId"].clone(),
            reattached["runId"].clone()
        ),
        (json!("running"), json!(1), json!("c"), run_id.clone()),
        "{reattached}"
    );
    // The caller saw the loss (terminal for the call, resumable for the
    // run), then the re-attach.
    let lost = push_where(&mut caller, "agent.error", |e| e["runId"] == run_id).await;
    assert_eq!(lost["error"]["data"]["reason"], "instance_lost", "{lost}");
    assert_eq!(lost["agentId"], "phoenix", "{lost}");
    let until = lost["error"]["data"]["resumableUntil"]
        .as_u64()
        .expect("resumableUntil");
    assert!(until > now_ms(), "{lost}");
    let started = push_where(&mut caller, "agent.started", |e| {
        e["runId"] == run_id && e.get("attached").is_some()
    })
    .await;
    assert_eq!(started["attached"], 1, "{started}");

    // Only once, and only by its agent.
    let again = back
        .request(
            "agent.reattach",
            json!({"sessionId": session, "runId": run_id}),
        )
        .await;
    assert_eq!(again["error"]["code"], -32007, "{again}");
    let mut stranger = c.client(ADMIN).await;
    let refused = stranger
        .request(
            "agent.reattach",
            json!({"sessionId": session, "runId": run_id}),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    let unknown = back
        .request(
            "agent.reattach",
            json!({"sessionId": session, "runId": "no-such-run"}),
        )
        .await;
    assert_eq!(unknown["error"]["code"], -32001, "{unknown}");

    // Its events go on in the same log, numbered right after the others,
    // and the caller gets them live.
    offsets.push(emit(&mut back, session, 2).await);

    // c dies too: the caller's instance, following the run, ends it as
    // lost again, and the agent takes it back once more, on a.
    c.kill9();
    drop(back);
    let again = push_where(&mut caller, "agent.error", |e| {
        e["runId"] == run_id && e["error"]["data"]["instanceId"] == "c"
    })
    .await;
    assert_eq!(again["error"]["data"]["reason"], "instance_lost", "{again}");
    let (mut back, twice) = taken_back(&a, "phoenix", session, &run_id).await;
    assert_eq!(
        (twice["attached"].clone(), twice["instanceId"].clone()),
        (json!(2), json!("a")),
        "{twice}"
    );
    offsets.push(emit(&mut back, session, 3).await);
    for i in 0..4 {
        let e = push_where(&mut caller, "agent.event", |e| {
            e["sessionId"] == session && e["data"]["i"] == i
        })
        .await;
        assert_eq!(
            (e["runId"].clone(), e["agentId"].clone()),
            (run_id.clone(), json!("phoenix")),
            "{e}"
        );
    }
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "offsets {offsets:?}"
    );
    let history = caller
        .call("session.history", json!({"sessionId": session}))
        .await;
    // The session's log holds the run's four events and nothing else.
    assert_eq!(offsets_of(&history), offsets, "{history}");
    assert_eq!(history["complete"], true, "{history}");

    // The agent ends it; the answer is the run's.
    let finished = back
        .call(
            "agent.finish",
            json!({"sessionId": session, "runId": run_id, "result": {"done": true}}),
        )
        .await;
    assert_eq!(finished["status"], "completed", "{finished}");
    let completed = push_where(&mut caller, "agent.completed", |e| e["runId"] == run_id).await;
    assert_eq!(completed["result"], json!({"done": true}), "{completed}");
    let record = caller
        .call(
            "agent.wait",
            json!({"sessionId": session, "timeoutMs": 1000}),
        )
        .await;
    assert_eq!(
        (
            record["status"].clone(),
            record["attached"].clone(),
            record["result"].clone()
        ),
        (json!("completed"), json!(2), json!({"done": true})),
        "{record}"
    );

    // A re-attached run the caller cancels: the agent is told.
    let (session, agent_id) = LOST[1];
    let run_id = runs[1].0.clone();
    let (mut second, _) = taken_back(&a, agent_id, session, &run_id).await;
    caller
        .call("agent.cancel", json!({"sessionId": session}))
        .await;
    let told = second.expect_push("agent.cancel").await;
    assert_eq!(told["runId"], run_id, "{told}");
    let late = second
        .call(
            "agent.finish",
            json!({"sessionId": session, "runId": run_id, "result": "late"}),
        )
        .await;
    assert_eq!(late["finished"], false, "{late}");
    let record = caller
        .call(
            "agent.wait",
            json!({"sessionId": session, "timeoutMs": 1000}),
        )
        .await;
    assert_eq!(record["status"], "cancelled", "{record}");

    // A re-attached run whose agent goes away again ends with an error.
    let (session, agent_id) = LOST[2];
    let run_id = runs[2].0.clone();
    let (third, _) = taken_back(&a, agent_id, session, &run_id).await;
    drop(third);
    let ended = push_where(&mut caller, "agent.error", |e| {
        e["runId"] == run_id && e["error"]["data"]["reason"] == "agent_disconnected"
    })
    .await;
    assert_eq!(ended["status"], "error", "{ended}");
}

#[tokio::test]
async fn a_run_whose_caller_and_agent_instances_both_die_is_ended_by_whoever_reads_it() {
    let redis = RedisProcess::start();
    let tokens = tokens();
    let env = [("SWITCHYARD_TOKENS", tokens.as_str())];
    let mut a = Instance::start(&redis, "a", &env).await;
    let mut b = Instance::start(&redis, "b", &env).await;
    let c = Instance::start(&redis, "c", &env).await;

    // Two runs called from a, served on b: one its agent takes back, one
    // whose session gets a new run.
    let mut caller = a.client(WRITER).await;
    let mut runs = Vec::new();
    for (session, agent_id) in [("orphan", "stray"), ("orphan-2", "stray-2")] {
        runs.push(run_served_on(&b, &mut caller, session, agent_id).await);
    }
    let first = emit(&mut runs[0].2, "orphan", 0).await;

    // Both die together: nobody is left who started the run or serves it.
    a.kill9();
    b.kill9();
    let killed = Instant::now();

    // The caller, back on c, waits for its run: c ends it as lost.
    let mut back = c.client(WRITER).await;
    let resumed = back
        .call(
            "session.resume",
            json!({"sessionId": "orphan", "resumeToken": runs[0].1}),
        )
        .await;
    assert_eq!(resumed["sessionId"], "orphan", "{resumed}");
    let lost = back
        .call(
            "agent.wait",
            json!({"sessionId": "orphan", "timeoutMs": 20_000}),
        )
        .await;
    eprintln!(
        "orphaned run ended as lost {} ms after both instances were killed (node_ttl {} ms)",
        killed.elapsed().as_millis(),
        NODE_TTL.as_millis()
    );
    assert_eq!(
        (
            lost["status"].clone(),
            lost["runId"].clone(),
            lost["error"]["data"]["reason"].clone(),
            lost["error"]["data"]["instanceId"].clone(),
        ),
        (
            json!("error"),
            runs[0].0.clone(),
            json!("instance_lost"),
            json!("b")
        ),
        "{lost}"
    );
    assert!(
        lost["error"]["data"]["resumableUntil"].as_u64() > Some(now_ms()),
        "{lost}"
    );

    // Its agent takes it back on c, streams on and finishes it.
    let (mut agent, taken) = taken_back(&c, "stray", "orphan", &runs[0].0).await;
    assert_eq!(
        (taken["attached"].clone(), taken["instanceId"].clone()),
        (json!(1), json!("c")),
        "{taken}"
    );
    assert_eq!(emit(&mut agent, "orphan", 1).await, first + 1);
    let finished = agent
        .call(
            "agent.finish",
            json!({"sessionId": "orphan", "runId": runs[0].0, "result": "done"}),
        )
        .await;
    assert_eq!(finished["status"], "completed", "{finished}");
    let record = back
        .call(
            "agent.wait",
            json!({"sessionId": "orphan", "timeoutMs": 2000}),
        )
        .await;
    assert_eq!(
        (record["status"].clone(), record["result"].clone()),
        (json!("completed"), json!("done")),
        "{record}"
    );

    // The other session is not held by its dead run: a new run starts.
    back.call(
        "session.resume",
        json!({"sessionId": "orphan-2", "resumeToken": runs[1].1}),
    )
    .await;
    let mut fresh = agent_as(&c, "fresh").await;
    let (run, _) = tokio::join!(
        back.call(
            "agent.run",
            json!({"sessionId": "orphan-2", "agentId": "fresh", "task": "again"}),
        ),
        server_request(&mut fresh, "agent.run"),
    );
    assert_ne!(run["runId"], runs[1].0, "{run}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An epoch read that carries the view of a Redis that is gone (the client
/// sends a command again after a reconnect, so a read begun just before a
/// crash runs on the server that came back) starts no epoch: only the
/// instance that looked at the server that came back does, once.
#[tokio::test]
async fn an_epoch_read_with_the_view_of_a_server_that_is_gone_starts_no_epoch() {
    use switchyard::backend::Health;
    use switchyard::backend::redis::{RedisBackend, RedisSettings};
    let mut redis = RedisProcess::start_persistent();
    let url = redis.url();
    let connect = || {
        RedisBackend::connect(RedisSettings {
            url: url.clone(),
            prefix: "sy".into(),
            tls: Default::default(),
            alive_ttl: Duration::from_secs(10),
            command_timeout: Duration::from_secs(2),
        })
    };
    // Not attached: it keeps the view it took when it connected.
    let stale = connect().await.expect("connects");
    let first = stale.epoch().await.expect("an epoch");
    tokio::time::sleep(FSYNC_WINDOW).await;

    // A restart from the append-only file: the data stays, the server's
    // replication id is new, and the stored history names the old one.
    redis.crash_and_restart();
    let fresh = connect().await.expect("connects");
    let second = fresh.epoch().await.expect("an epoch");
    assert_ne!(second, first, "a restart from disk starts an epoch");

    // The stale view reaches the restarted server.
    let mut read = None;
    for _ in 0..100 {
        match stale.epoch().await {
            Ok(epoch) => {
                read = Some(epoch);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(
        read.as_deref(),
        Some(second.as_str()),
        "the stale view started another epoch"
    );
    assert_eq!(fresh.epoch().await.expect("an epoch"), second);
}
