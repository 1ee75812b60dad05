//! Real replies, pushes and server → node requests against the document
//! a live server serves: each test drives one area of the method table
//! (what it drives is listed in the crate root), checking every call's
//! params and result and every push's params.

use crate::CONFIG;
use crate::CRON;
use crate::common::*;
use crate::reference::Reference;
use crate::{
    AGENT_PUSHES, AGENTS, APPROVAL_PUSHES, APPROVALS, DEVICE_PUSHES, DEVICES, DURABILITY_PUSHES,
    REATTACH, REATTACH_PUSHES, SESSION_PUSHES, SESSIONS, SYSTEM, SYSTEM_PUSHES,
};
use serde_json::json;

#[tokio::test]
async fn system_and_channel_replies_fit_their_schemas() {
    let mut config = config();
    keep_history(&mut config, 10);
    let mut server = TestServer::start(config).await;
    let mut r = Reference::of(&server).await;

    let mut admin = server.client(ADMIN).await;
    let welcome = admin.expect_push("welcome").await;
    r.push("welcome", &welcome);
    r.call(&mut admin, "ping", json!({})).await;
    r.call(&mut admin, "system.ping", json!({})).await;
    let hello = r
        .call(
            &mut admin,
            "connect",
            json!({"client": {"name": "reference", "version": "1"}, "minProtocol": 1}),
        )
        .await;
    assert_eq!(hello["authenticated"], true, "{hello}");
    r.call(&mut admin, "health", json!({})).await;
    r.call(&mut admin, "status", json!({})).await;
    r.call(&mut admin, "system.presence", json!({"limit": 1}))
        .await;
    r.call(&mut admin, "clients.list", json!({})).await;
    r.call(&mut admin, "logs.tail", json!({"limit": 5})).await;
    r.call(&mut admin, "rpc.discover", json!({})).await;

    // In-band authentication on a socket that came without credentials.
    let mut anon = Ws::connect(&server.url("/ws")).await.expect("connects");
    r.push("welcome", &anon.expect_push("welcome").await);
    r.call(&mut anon, "auth", json!({"token": WRITER})).await;

    let mut doomed = server.client(READER).await;
    let doomed_id = conn_id(&mut doomed).await;
    r.call(
        &mut admin,
        "client.kick",
        json!({"connId": doomed_id, "reason": "reference"}),
    )
    .await;

    // Channels: presence, a plain publication, one with history.
    let mut writer = server.client(WRITER).await;
    let writer_id = conn_id(&mut writer).await;
    r.call(
        &mut admin,
        "subscribe",
        json!({"channels": ["public:room", "hist:a"]}),
    )
    .await;
    r.call(&mut writer, "subscribe", json!({"channel": "public:room"}))
        .await;
    let join = push_where(&mut admin, "presence.join", |p| {
        p["connId"] == writer_id.as_str()
    })
    .await;
    r.push("presence.join", &join);
    r.call(
        &mut writer,
        "publish",
        json!({"channel": "public:room", "event": "hello", "data": {"n": 1}}),
    )
    .await;
    r.push("notify", &notify_on(&mut admin, "public:room").await);
    let logged = r
        .call(
            &mut writer,
            "publish",
            json!({"channel": "hist:a", "event": "logged", "data": [1]}),
        )
        .await;
    assert_eq!(logged["offset"], 1, "{logged}");
    let numbered = notify_on(&mut admin, "hist:a").await;
    assert_eq!(numbered["offset"], 1, "{numbered}");
    r.push("notify", &numbered);
    r.call(
        &mut admin,
        "presence.get",
        json!({"channel": "public:room", "limit": 10}),
    )
    .await;
    let history = r
        .call(
            &mut admin,
            "history",
            json!({"channel": "hist:a", "limit": 10}),
        )
        .await;
    assert_eq!(
        history["events"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
    let mut late = server.client(WRITER).await;
    let recovered = r
        .call(
            &mut late,
            "subscribe",
            json!({"channels": ["hist:a"], "recover": {"hist:a": 0}}),
        )
        .await;
    assert_eq!(
        recovered["recovered"]["hist:a"]["replayed"], 1,
        "{recovered}"
    );
    r.push("notify", &notify_on(&mut late, "hist:a").await);
    r.call(
        &mut writer,
        "unsubscribe",
        json!({"channels": ["public:room"]}),
    )
    .await;
    let leave = push_where(&mut admin, "presence.leave", |p| {
        p["connId"] == writer_id.as_str()
    })
    .await;
    r.push("presence.leave", &leave);
    r.push("presence.tick", &admin.expect_push("presence.tick").await);

    server.trigger_stop();
    r.push("shutdown", &admin.expect_push("shutdown").await);
    r.covered(SYSTEM, SYSTEM_PUSHES);
}

#[tokio::test]
async fn session_replies_fit_their_schemas() {
    let server = TestServer::default().await;
    let mut r = Reference::of(&server).await;
    let mut owner = server.client(WRITER).await;
    let mut alice = as_user(&server, "alice").await;
    let mut bob = as_user(&server, "bob").await;

    let created = r
        .call(
            &mut owner,
            "session.create",
            json!({"sessionId": "ref", "meta": {"topic": "x"}, "invite": ["alice"]}),
        )
        .await;
    let token = created["resumeToken"].as_str().expect("token").to_owned();
    r.call(&mut alice, "session.join", json!({"sessionId": "ref"}))
        .await;
    r.call(
        &mut owner,
        "session.invite",
        json!({"sessionId": "ref", "identities": ["bob"]}),
    )
    .await;
    let invited = push_where(&mut alice, "session.updated", |p| p["invited"].is_array()).await;
    r.push("session.updated", &invited);
    r.call(
        &mut owner,
        "session.patch",
        json!({"sessionId": "ref", "meta": {"topic": "y"}, "baseVersion": 0}),
    )
    .await;
    let patched = push_where(&mut alice, "session.updated", |p| p["meta"]["topic"] == "y").await;
    r.push("session.updated", &patched);
    r.call(&mut alice, "session.get", json!({"sessionId": "ref"}))
        .await;
    r.call(&mut owner, "session.list", json!({})).await;
    let sent = r
        .call(
            &mut owner,
            "session.send",
            json!({"sessionId": "ref", "event": "note", "data": {"text": "hi"}}),
        )
        .await;
    assert_eq!(sent["offset"], 1, "{sent}");
    r.push("session.event", &alice.expect_push("session.event").await);
    r.call(
        &mut alice,
        "session.history",
        json!({"sessionId": "ref", "since": 0}),
    )
    .await;
    r.call(&mut bob, "session.join", json!({"sessionId": "ref"}))
        .await;
    r.call(&mut bob, "session.leave", json!({"sessionId": "ref"}))
        .await;

    // The owner's identity takes the session back from other connections:
    // by `session.resume`, by `connect {resume}`, and a refused resume.
    let mut again = server.client(WRITER).await;
    let resumed = r
        .call(
            &mut again,
            "session.resume",
            json!({"sessionId": "ref", "resumeToken": token, "offset": 0}),
        )
        .await;
    assert_eq!(resumed["replayed"], 1, "{resumed}");
    let mut third = server.client(WRITER).await;
    let hello = r
        .call(
            &mut third,
            "connect",
            json!({"resume": {"sessionId": "ref", "resumeToken": token, "offset": 1}}),
        )
        .await;
    assert_eq!(hello["resume"]["resumed"], true, "{hello}");
    let mut wrong = server.client(WRITER).await;
    let refused = r
        .call(
            &mut wrong,
            "connect",
            json!({"resume": {"sessionId": "ref", "resumeToken": "nope"}}),
        )
        .await;
    assert_eq!(refused["resume"]["resumed"], false, "{refused}");

    r.call(&mut third, "session.close", json!({"sessionId": "ref"}))
        .await;
    r.push("session.closed", &alice.expect_push("session.closed").await);
    r.covered(SESSIONS, SESSION_PUSHES);
}

#[tokio::test]
async fn agent_replies_fit_their_schemas() {
    let server = TestServer::default().await;
    let mut r = Reference::of(&server).await;
    let mut node = server.client(NODE).await;
    let mut caller = server.client(WRITER).await;

    let entry = r
        .call(
            &mut node,
            "agent.register",
            json!({"agentId": "echo", "name": "Echo", "type": "tool-runner",
                   "capabilities": ["echo", "agent.run", "chat", "chat.completions"],
                   "tools": [{"name": "lookup", "description": "finds", "parameters": {"type": "object"}}],
                   "models": ["m1"], "maxConcurrency": 4}),
        )
        .await;
    assert_eq!(entry["online"], true, "{entry}");
    r.call(&mut node, "agent.status", json!({"status": "idle"}))
        .await;
    r.call(&mut caller, "agents.list", json!({"capability": "echo"}))
        .await;
    r.call(&mut caller, "agents.get", json!({"agentId": "echo"}))
        .await;
    r.call(&mut caller, "tools.list", json!({})).await;
    r.call(&mut caller, "models.list", json!({})).await;

    // node.invoke with progress: the node reports it as a request, so its
    // answer is checked too.
    let params = json!({"capability": "echo", "command": "say", "params": {"x": 1},
                        "timeoutMs": 5000, "invokeId": "inv-1"});
    let (reply, (request, progress, progressed)) =
        tokio::join!(caller.request("node.invoke", params.clone()), async {
            let (id, request) = server_request(&mut node, "invoke").await;
            let progress = json!({"id": id, "data": {"step": 1}});
            let progressed = node.call("invoke.progress", progress.clone()).await;
            answer(&mut node, &id, json!({"said": 1})).await;
            (request, progress, progressed)
        });
    r.request("invoke", &request);
    r.result("invoke.progress", &progress, &progressed);
    r.result("node.invoke", &params, &reply["result"]);
    r.push(
        "invoke.progress",
        &caller.expect_push("invoke.progress").await,
    );

    // invoke.cancel while the node works on it.
    send_request(
        &mut caller,
        "slow",
        "node.invoke",
        json!({"capability": "echo", "command": "wait", "invokeId": "inv-2"}),
    )
    .await;
    let _ = server_request(&mut node, "invoke").await;
    let cancel = json!({"invokeId": "inv-2"});
    send_request(&mut caller, "cancel", "invoke.cancel", cancel.clone()).await;
    let got = replies(&mut caller, &["slow", "cancel"]).await;
    assert_eq!(got["slow"]["error"]["code"], -32006, "{:?}", got["slow"]);
    r.result("invoke.cancel", &cancel, &got["cancel"]["result"]);
    r.push("invoke.cancel", &node.expect_push("invoke.cancel").await);

    // A run: accepted, streamed, completed, waited for.
    let run_params = json!({"task": "summarise", "input": {"doc": 1}, "maxTurns": 2});
    let (run, (srv, request)) = tokio::join!(
        caller.call("agent.run", run_params.clone()),
        server_request(&mut node, "agent.run")
    );
    r.request("agent.run", &request);
    r.result("agent.run", &run_params, &run);
    let session = run["sessionId"].as_str().expect("sessionId").to_owned();
    r.push("agent.started", &caller.expect_push("agent.started").await);
    let event = json!({"sessionId": session, "type": "token", "data": "a"});
    let streamed = r.call(&mut node, "agent.event", event).await;
    assert_eq!(streamed["offset"], 1, "{streamed}");
    r.push("agent.event", &caller.expect_push("agent.event").await);
    answer(&mut node, &srv, json!({"summary": "done"})).await;
    r.push(
        "agent.completed",
        &caller.expect_push("agent.completed").await,
    );
    let done = r
        .call(
            &mut caller,
            "agent.wait",
            json!({"sessionId": session, "timeoutMs": 5000}),
        )
        .await;
    assert_eq!(done["status"], "completed", "{done}");

    // A run cancelled.
    let again = json!({"task": "again", "sessionId": session});
    let _ = tokio::join!(
        caller.call("agent.run", again),
        server_request(&mut node, "agent.run")
    );
    r.call(&mut caller, "agent.cancel", json!({"sessionId": session}))
        .await;
    r.push("agent.cancel", &node.expect_push("agent.cancel").await);
    r.push(
        "agent.error",
        &push_where(&mut caller, "agent.error", |p| p["status"] == "cancelled").await,
    );

    // Chat with the session's agent, then a chat reply aborted.
    let chat = json!({"sessionId": session, "message": "hello", "timeoutMs": 5000});
    let (reply, request) = tokio::join!(caller.call("chat.send", chat.clone()), async {
        let (id, request) = server_request(&mut node, "chat.send").await;
        answer(&mut node, &id, json!({"content": "hi there"})).await;
        request
    });
    r.request("chat.send", &request);
    r.result("chat.send", &chat, &reply);
    r.call(
        &mut caller,
        "chat.inject",
        json!({"sessionId": session, "message": {"note": 1}, "role": "system"}),
    )
    .await;
    r.call(
        &mut caller,
        "chat.history",
        json!({"sessionId": session, "limit": 10}),
    )
    .await;
    send_request(
        &mut caller,
        "chat",
        "chat.send",
        json!({"sessionId": session, "message": "more"}),
    )
    .await;
    let _ = server_request(&mut node, "chat.send").await;
    let abort = json!({"sessionId": session});
    send_request(&mut caller, "abort", "chat.abort", abort.clone()).await;
    let got = replies(&mut caller, &["chat", "abort"]).await;
    r.result("chat.abort", &abort, &got["abort"]["result"]);

    // An OpenAI-compatible completion reaches the node as a request.
    let auth = bearer(WRITER);
    let body = json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let headers = [("authorization", auth.as_str())];
    let ((status, _, completion), request) = tokio::join!(
        http(
            server.addr,
            "POST",
            "/v1/chat/completions",
            &headers,
            Some(&body)
        ),
        async {
            let (id, request) = server_request(&mut node, "chat.completions").await;
            answer(&mut node, &id, json!({"content": "hi"})).await;
            request
        }
    );
    assert_eq!(status, 200, "{completion}");
    r.request("chat.completions", &request);

    r.call(
        &mut node,
        "agent.register",
        json!({"agentId": "extra", "capabilities": ["spare"]}),
    )
    .await;
    r.call(&mut node, "agent.unregister", json!({"agentId": "extra"}))
        .await;

    // Agent definitions, a broadcast, the counts.
    let mut admin = server.client(ADMIN).await;
    r.call(
        &mut admin,
        "agents.create",
        json!({"agentId": "echo", "tools": ["lookup"], "approvalRequired": ["lookup"],
               "maxConcurrency": 2, "weight": 2}),
    )
    .await;
    call_until(&mut caller, "agents.get", json!({"agentId": "echo"}), |g| {
        g["result"]["defined"]["version"] == 1
    })
    .await;
    r.call(&mut caller, "agents.get", json!({"agentId": "echo"}))
        .await;
    r.call(&mut admin, "agents.create", json!({"agentId": "spare"}))
        .await;
    r.call(&mut caller, "agents.list", json!({})).await;
    r.call(&mut caller, "agents.get", json!({"agentId": "spare"}))
        .await;
    r.call(&mut caller, "agents.stats", json!({})).await;
    r.call(
        &mut caller,
        "agents.broadcast",
        json!({"capability": "echo", "event": "reload", "data": {"v": 1}}),
    )
    .await;
    r.push(
        "agents.broadcast",
        &node.expect_push("agents.broadcast").await,
    );
    r.call(
        &mut admin,
        "agents.update",
        json!({"agentId": "echo", "baseVersion": 1, "enabled": false}),
    )
    .await;
    r.push(
        "agent.deregistered",
        &node.expect_push("agent.deregistered").await,
    );
    r.call(
        &mut admin,
        "agents.delete",
        json!({"agentId": "echo", "baseVersion": 2}),
    )
    .await;
    r.covered(AGENTS, AGENT_PUSHES);
}

#[tokio::test]
async fn approval_replies_fit_their_schemas() {
    let server = TestServer::default().await;
    let mut r = Reference::of(&server).await;
    let mut approver = server.client(APPROVER).await;
    let mut node = server.client(NODE).await;

    let asked = r
        .call(
            &mut node,
            "approval.request",
            json!({"tool": "shell", "args": {"cmd": "ls"}, "summary": "list", "timeoutMs": 60000}),
        )
        .await;
    let id = asked["approvalId"].as_str().expect("approvalId").to_owned();
    r.push(
        "approval.requested",
        &approver.expect_push("approval.requested").await,
    );
    r.call(&mut approver, "approval.list", json!({})).await;
    r.call(
        &mut approver,
        "approval.resolve",
        json!({"approvalId": id, "decision": "approve", "note": "fine"}),
    )
    .await;
    r.push(
        "approval.resolved",
        &approver.expect_push("approval.resolved").await,
    );
    let decided = r
        .call(
            &mut node,
            "approval.wait",
            json!({"approvalId": id, "timeoutMs": 5000}),
        )
        .await;
    assert_eq!(decided["status"], "approved", "{decided}");
    r.call(&mut approver, "approval.history", json!({"limit": 10}))
        .await;
    r.covered(APPROVALS, APPROVAL_PUSHES);
}

#[tokio::test]
async fn runtime_config_replies_fit_their_schemas() {
    let server = TestServer::default().await;
    let mut r = Reference::of(&server).await;
    let mut admin = server.client(ADMIN).await;
    r.call(&mut admin, "config.get", json!({})).await;
    let described = r
        .call(&mut admin, "config.get", json!({"schema": true}))
        .await;
    assert!(described["schema"].is_object(), "{described}");
    r.call(
        &mut admin,
        "config.set",
        json!({"path": "rate_limits.messages_per_conn.limit", "value": 400}),
    )
    .await;
    r.call(
        &mut admin,
        "config.patch",
        json!({"patch": {"hooks": [{"name": "gh", "secret": "hook-secret-0123456789"}]}, "baseVersion": 1}),
    )
    .await;
    r.call(
        &mut admin,
        "config.apply",
        json!({"config": {"limits": {"max_batch": 50}}}),
    )
    .await;
    let history = r
        .call(&mut admin, "config.history", json!({"limit": 10}))
        .await;
    assert_eq!(history["count"], 3, "{history}");
    r.covered(CONFIG, &[]);
}

#[tokio::test]
async fn device_replies_fit_their_schemas() {
    let mut c = config();
    c.auth.modes.push(switchyard::config::AuthMode::Device);
    let server = TestServer::start(c).await;
    let mut r = Reference::of(&server).await;
    let mut admin = server.client(ADMIN).await;
    let mut device = Ws::connect(&server.url("/ws")).await.expect("connects");
    device.expect_push("welcome").await;

    let pair = json!({"deviceId": "d1", "name": "Tablet", "platform": "android"});
    r.call(&mut device, "device.pair.request", pair).await;
    r.push(
        "device.pair.requested",
        &admin.expect_push("device.pair.requested").await,
    );
    r.call(&mut admin, "device.list", json!({"status": "pending"}))
        .await;
    r.call(
        &mut admin,
        "device.pair.approve",
        json!({"deviceId": "d1", "role": "operator", "scopes": ["operator.read"], "note": "ok"}),
    )
    .await;
    r.push("device.paired", &device.expect_push("device.paired").await);
    r.push(
        "device.pair.resolved",
        &admin.expect_push("device.pair.resolved").await,
    );
    r.call(&mut admin, "device.get", json!({"deviceId": "d1"}))
        .await;
    r.call(&mut admin, "device.token.rotate", json!({"deviceId": "d1"}))
        .await;

    let mut other = Ws::connect(&server.url("/ws")).await.expect("connects");
    other.expect_push("welcome").await;
    let pair = json!({"deviceId": "d2", "name": "Phone", "platform": "ios"});
    r.call(&mut other, "device.pair.request", pair).await;
    r.call(
        &mut admin,
        "device.pair.reject",
        json!({"deviceId": "d2", "note": "no"}),
    )
    .await;
    r.push(
        "device.pair.rejected",
        &other.expect_push("device.pair.rejected").await,
    );
    r.call(&mut admin, "device.revoke", json!({"deviceId": "d1"}))
        .await;
    r.push("device.revoked", &admin.expect_push("device.revoked").await);
    r.call(&mut admin, "device.history", json!({"limit": 10}))
        .await;
    r.covered(DEVICES, DEVICE_PUSHES);
}

#[tokio::test]
async fn cron_replies_fit_their_schemas() {
    let server = TestServer::default().await;
    let mut r = Reference::of(&server).await;
    let mut admin = server.client(ADMIN).await;
    r.call(
        &mut admin,
        "cron.add",
        json!({"id": "ref", "schedule": "0 9 * * 1-5", "timezone": "Europe/Berlin",
            "target": {"channel": "public:ref", "event": "tick", "data": {"n": 1}}}),
    )
    .await;
    r.call(
        &mut admin,
        "cron.add",
        json!({"id": "ref-method", "schedule": "@every 1h", "enabled": false,
            "target": {"method": "status", "params": {}}}),
    )
    .await;
    r.call(
        &mut admin,
        "cron.update",
        json!({"id": "ref", "schedule": "*/30 * * * * *", "enabled": true}),
    )
    .await;
    r.call(&mut admin, "cron.get", json!({"id": "ref"})).await;
    r.call(&mut admin, "cron.list", json!({})).await;
    let ok = r
        .call(&mut admin, "cron.run", json!({"id": "ref-method"}))
        .await;
    assert_eq!(ok["outcome"], "ok", "{ok}");
    r.call(&mut admin, "cron.run", json!({"id": "ref"})).await;
    r.call(
        &mut admin,
        "cron.runs",
        json!({"id": "ref-method", "limit": 5}),
    )
    .await;
    r.call(&mut admin, "cron.remove", json!({"id": "ref"}))
        .await;
    r.covered(CRON, &[]);
}

#[tokio::test]
async fn a_new_epoch_is_announced_in_its_schema() {
    // Its own single Redis whatever the run's mode: the default run covers
    // it, the cluster and Sentinel runs would restart theirs differently.
    if redis_cluster_mode() || redis_sentinel_mode() {
        return;
    }
    let mut redis = RedisProcess::start();
    let server = TestServer::start(cluster_config(&redis)).await;
    let mut r = Reference::of(&server).await;
    let mut admin = server.client(ADMIN).await;
    redis.restart();
    let told = admin.expect_push("epoch.changed").await;
    r.push("epoch.changed", &told);
    r.covered(&[], DURABILITY_PUSHES);
}

#[tokio::test]
async fn a_reattached_run_fits_its_schemas() {
    // Real processes on their own single Redis: one is killed mid-run.
    if redis_cluster_mode() || redis_sentinel_mode() {
        return;
    }
    use crate::common::instance::{Instance, TOKENS};
    let redis = RedisProcess::start();
    let tokens = format!("{TOKENS},keeper:{NODE}:node");
    let env = [("SWITCHYARD_TOKENS", tokens.as_str())];
    let a = Instance::start(&redis, "a", &env).await;
    let mut b = Instance::start(&redis, "b", &env).await;
    let mut r = Reference::new(switchyard::rpc::openrpc::document().clone());
    let register = json!({"agentId": "again", "capabilities": ["agent.run"]});

    let mut agent = b.client(NODE).await;
    agent.call("agent.register", register.clone()).await;
    let mut caller = a.client(ADMIN).await;
    let (run, (_, request)) = tokio::join!(
        caller.call("agent.run", json!({"agentId": "again", "task": "t"})),
        server_request(&mut agent, "agent.run"),
    );
    r.request("agent.run", &request);
    let (session, run_id) = (run["sessionId"].clone(), run["runId"].clone());
    r.push("agent.started", &caller.expect_push("agent.started").await);

    b.kill9();
    let lost = push_where(&mut caller, "agent.error", |e| e["runId"] == run_id).await;
    r.push("agent.error", &lost);
    let mut back = a.client(NODE).await;
    back.call("agent.register", register).await;
    let ids = json!({"sessionId": session, "runId": run_id});
    let reattached = r.call(&mut back, "agent.reattach", ids.clone()).await;
    assert_eq!(reattached["attached"], 1, "{reattached}");
    let started = push_where(&mut caller, "agent.started", |e| {
        e.get("attached").is_some()
    })
    .await;
    r.push("agent.started", &started);
    let mut finish = ids;
    finish["result"] = json!({"ok": true});
    let finished = r.call(&mut back, "agent.finish", finish).await;
    assert_eq!(finished["finished"], true, "{finished}");
    r.push(
        "agent.completed",
        &caller.expect_push("agent.completed").await,
    );
    r.covered(REATTACH, REATTACH_PUSHES);
}
