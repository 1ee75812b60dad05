//! Channels, presence, system methods and `node.invoke` over real sockets:
//! who may subscribe and publish where, who receives what (exactly once),
//! presence join/leave/tick, admin tools, server → client requests and the
//! per-connection / per-identity message limits.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchyard::config::Window;

const QUIET: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------- channels

/// A burst queues several frames for one socket; the writer sends them in
/// one write. Each must still arrive as its own frame, whole and in order.
#[tokio::test]
async fn a_burst_arrives_as_separate_frames_in_order() {
    let server = TestServer::default().await;
    let mut a = server.client(READER).await;
    let mut w = server.client(WRITER).await;
    a.call("subscribe", json!({"channels": ["burst"]})).await;
    const N: u64 = 400;
    // Notifications (no id, no reply): nothing paces the publisher.
    for n in 0..N {
        let pad = "x".repeat((n as usize * 37) % 600);
        w.send_json(&json!({"jsonrpc": "2.0", "method": "publish",
            "params": {"channel": "burst", "event": "b", "data": {"n": n, "pad": pad}}}))
            .await;
    }
    for n in 0..N {
        let push = a.expect_push("notify").await;
        assert_eq!(push["data"]["n"], n, "{push}");
        let pad = push["data"]["pad"].as_str().unwrap_or_default();
        assert_eq!(pad.len(), (n as usize * 37) % 600);
    }
    a.expect_no_push("notify", QUIET).await;
}

#[tokio::test]
async fn publish_reaches_each_subscriber_once_until_unsubscribed() {
    let server = TestServer::default().await;
    let mut a = server.client(READER).await;
    let mut b = server.client(APPROVER).await;
    let mut w = server.client(WRITER).await;

    let r = a.call("subscribe", json!({"channels": ["news"]})).await;
    assert_eq!(r["subscribed"], json!(["news"]));
    let r = b
        .call("notify.subscribe", json!({"channels": ["news"]}))
        .await;
    assert_eq!(r["subscribed"], json!(["news"]));

    let data = json!({"n": 1, "s": "x"});
    let r = w
        .call(
            "publish",
            json!({"channel": "news", "event": "e1", "data": data}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    for ws in [&mut a, &mut b] {
        let push = ws.expect_push("notify").await;
        assert_notify(&push, "news", "e1", &data);
        ws.expect_no_push("notify", QUIET).await;
    }
    // The publisher is not subscribed and gets nothing.
    w.expect_no_push("notify", QUIET).await;

    let r = a.call("unsubscribe", json!({"channels": ["news"]})).await;
    assert_eq!(r["unsubscribed"], json!(["news"]));
    let r = b
        .call("notify.unsubscribe", json!({"channels": ["news"]}))
        .await;
    assert_eq!(r["unsubscribed"], json!(["news"]));

    let r = w
        .call(
            "publish",
            json!({"channel": "news", "event": "e2", "data": 2}),
        )
        .await;
    assert_eq!(r["delivered"], 0, "{r}");
    a.expect_no_push("notify", QUIET).await;
    b.expect_no_push("notify", Duration::from_millis(50)).await;
    w.expect_no_push("notify", Duration::from_millis(50)).await;
}

#[tokio::test]
async fn one_unsubscribe_leaves_the_other_subscriber_receiving() {
    let server = TestServer::default().await;
    let mut a = server.client(READER).await;
    let mut b = server.client(READER).await;
    let mut w = server.client(WRITER).await;
    for ws in [&mut a, &mut b] {
        ws.call("subscribe", json!({"channels": ["room-1", "room-2"]}))
            .await;
    }
    a.call("unsubscribe", json!({"channels": ["room-1"]})).await;
    let r = w
        .call(
            "publish",
            json!({"channel": "room-1", "event": "e", "data": 1}),
        )
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
    assert_notify(&notify_on(&mut b, "room-1").await, "room-1", "e", &json!(1));
    a.expect_no_push("notify", QUIET).await;
    // a's other subscription is untouched.
    let r = w
        .call(
            "publish",
            json!({"channel": "room-2", "event": "e", "data": 2}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    assert_notify(&notify_on(&mut a, "room-2").await, "room-2", "e", &json!(2));
    assert_notify(&notify_on(&mut b, "room-2").await, "room-2", "e", &json!(2));
}

#[tokio::test]
async fn implicit_channels_need_no_subscription() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    let mut r1 = server.client(READER).await;
    let mut r2 = server.client(READER).await;
    let mut w = server.client(WRITER).await;
    let mut ap = server.client(APPROVER).await;
    let r1_id = conn_id(&mut r1).await;

    // global: every authenticated connection.
    let r = admin
        .call(
            "publish",
            json!({"channel": "global", "event": "g", "data": {"k": 1}}),
        )
        .await;
    assert_eq!(r["delivered"], 5, "{r}");
    for ws in [&mut admin, &mut r1, &mut r2, &mut w, &mut ap] {
        let push = ws.expect_push("notify").await;
        assert_notify(&push, "global", "g", &json!({"k": 1}));
        ws.expect_no_push("notify", Duration::from_millis(30)).await;
    }

    // user:reader: both READER connections, nobody else.
    let r = admin
        .call(
            "publish",
            json!({"channel": "user:reader", "event": "u", "data": 1}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    for ws in [&mut r1, &mut r2] {
        assert_notify(
            &ws.expect_push("notify").await,
            "user:reader",
            "u",
            &json!(1),
        );
    }
    for ws in [&mut w, &mut admin, &mut ap] {
        ws.expect_no_push("notify", Duration::from_millis(80)).await;
    }

    // conn:<id>: that connection only.
    let channel = format!("conn:{r1_id}");
    let r = admin
        .call(
            "publish",
            json!({"channel": channel, "event": "c", "data": 2}),
        )
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
    assert_notify(&r1.expect_push("notify").await, &channel, "c", &json!(2));
    r2.expect_no_push("notify", QUIET).await;

    // approval: approvals-scoped operators (admin implies it).
    let r = admin
        .call(
            "publish",
            json!({"channel": "approval", "event": "a", "data": 3}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    assert_notify(&ap.expect_push("notify").await, "approval", "a", &json!(3));
    assert_notify(
        &admin.expect_push("notify").await,
        "approval",
        "a",
        &json!(3),
    );
    for ws in [&mut r1, &mut r2, &mut w] {
        ws.expect_no_push("notify", Duration::from_millis(80)).await;
    }

    // Publishing to implicit channels is for admins.
    assert_eq!(
        w.error_code(
            "publish",
            json!({"channel": "global", "event": "x", "data": 0})
        )
        .await,
        -32003
    );
    assert_eq!(
        w.error_code("publish", json!({"channel": "user:writer", "event": "x"}))
            .await,
        -32003
    );
    assert_eq!(
        w.error_code("publish", json!({"channel": "approval", "event": "x"}))
            .await,
        -32003
    );
    // READER has no write scope at all.
    assert_eq!(
        r1.error_code("publish", json!({"channel": "news", "event": "x"}))
            .await,
        -32003
    );
    for ws in [&mut r1, &mut r2, &mut ap] {
        ws.expect_no_push("notify", Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unauthenticated_connections_get_no_implicit_channels() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    let mut anon = Ws::connect(&server.url("/ws")).await.expect("connects");
    conn_id(&mut anon).await;
    assert_eq!(
        anon.error_code("subscribe", json!({"channels": ["news"]}))
            .await,
        -32000
    );
    let r = admin
        .call(
            "publish",
            json!({"channel": "global", "event": "g", "data": 0}),
        )
        .await;
    assert_eq!(r["delivered"], 1, "only the admin itself: {r}");
    anon.expect_no_push("notify", QUIET).await;
}

#[tokio::test]
async fn channel_access_rules() {
    let server = TestServer::default().await;
    let mut reader = server.client(READER).await;
    let mut admin = server.client(ADMIN).await;

    let code = reader
        .error_code("subscribe", json!({"channels": ["user:writer"]}))
        .await;
    assert_eq!(code, -32003);
    reader
        .call("subscribe", json!({"channels": ["user:reader"]}))
        .await;
    let code = reader
        .error_code("subscribe", json!({"channels": ["conn:someone-else"]}))
        .await;
    assert_eq!(code, -32003);
    reader
        .call("subscribe", json!({"channels": ["private:team-a"]}))
        .await;
    let code = reader
        .error_code("subscribe", json!({"channels": ["private:other"]}))
        .await;
    assert_eq!(code, -32003);
    admin
        .call("subscribe", json!({"channels": ["private:other"]}))
        .await;
    // The node role has no operator scope: no approvals channel.
    let mut node = server.client(NODE).await;
    let code = node
        .error_code("subscribe", json!({"channels": ["approval"]}))
        .await;
    assert_eq!(code, -32003);
    // One forbidden name fails the whole call: nothing was subscribed.
    let code = reader
        .error_code("subscribe", json!({"channels": ["open-1", "user:writer"]}))
        .await;
    assert_eq!(code, -32003);
    let mut w = server.client(WRITER).await;
    let r = w
        .call(
            "publish",
            json!({"channel": "open-1", "event": "e", "data": 0}),
        )
        .await;
    assert_eq!(r["delivered"], 0, "{r}");

    // Claim holders may publish on their private channels too (claim rule).
    let r = reader
        .request(
            "publish",
            json!({"channel": "private:team-a", "event": "e", "data": 1}),
        )
        .await;
    assert_eq!(
        r["error"]["code"], -32003,
        "publish needs operator.write before channel rules: {r}"
    );
    let r = w
        .call(
            "publish",
            json!({"channel": "private:team-a", "event": "e", "data": 1}),
        )
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
    assert_notify(
        &notify_on(&mut reader, "private:team-a").await,
        "private:team-a",
        "e",
        &json!(1),
    );
}

#[tokio::test]
async fn invalid_channel_names() {
    let server = TestServer::default().await;
    let mut ws = server.client(ADMIN).await;
    let long = "x".repeat(300);
    for bad in ["$x", "$session:abc", "a b", "", "tab\there", long.as_str()] {
        let reply = ws.request("subscribe", json!({"channels": [bad]})).await;
        assert_eq!(reply["error"]["code"], -32602, "{bad:?}: {reply}");
        let reply = ws
            .request("publish", json!({"channel": bad, "event": "e", "data": 0}))
            .await;
        assert_eq!(reply["error"]["code"], -32602, "{bad:?}: {reply}");
        let reply = ws.request("presence.get", json!({"channel": bad})).await;
        assert_eq!(reply["error"]["code"], -32602, "{bad:?}: {reply}");
    }
    // 256 bytes is still fine.
    let max = "y".repeat(256);
    ws.call("subscribe", json!({"channels": [max]})).await;
    // No channel at all.
    assert_eq!(
        ws.error_code("subscribe", json!({"channels": []})).await,
        -32602
    );
    assert_eq!(ws.error_code("subscribe", json!({})).await, -32602);
}

#[tokio::test]
async fn subscription_limit() {
    let mut config = config();
    config.limits.max_subscriptions = 3;
    let server = TestServer::start(config).await;
    let mut ws = server.client(READER).await;
    let mut w = server.client(WRITER).await;
    ws.call("subscribe", json!({"channels": ["c1", "c2"]}))
        .await;
    ws.call("subscribe", json!({"channels": ["c3"]})).await;
    // Re-subscribing is not a new subscription; implicit ones do not count.
    ws.call(
        "subscribe",
        json!({"channels": ["c1", "user:reader", "global"]}),
    )
    .await;
    let reply = ws.request("subscribe", json!({"channels": ["c4"]})).await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    // A call that would cross the limit subscribes nothing.
    let code = ws
        .error_code("notify.subscribe", json!({"channels": ["c1", "c5"]}))
        .await;
    assert_eq!(code, -32002);
    for c in ["c1", "c2", "c3"] {
        let r = w
            .call("publish", json!({"channel": c, "event": "e", "data": c}))
            .await;
        assert_eq!(r["delivered"], 1, "{c}: {r}");
        assert_notify(&notify_on(&mut ws, c).await, c, "e", &json!(c));
    }
    for c in ["c4", "c5"] {
        let r = w
            .call("publish", json!({"channel": c, "event": "e", "data": 0}))
            .await;
        assert_eq!(r["delivered"], 0, "{c}: {r}");
    }
    // Freeing a slot makes room again.
    ws.call("unsubscribe", json!({"channels": ["c2"]})).await;
    ws.call("subscribe", json!({"channels": ["c4"]})).await;
    let r = w
        .call("publish", json!({"channel": "c4", "event": "e", "data": 4}))
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
}

// ---------------------------------------------------------------- presence

fn has_member(presence: &Value, conn: &str, identity: &str) -> bool {
    presence["members"].as_array().is_some_and(|m| {
        m.iter()
            .any(|e| e["connId"] == conn && e["identity"] == identity)
    })
}

async fn presence_count(ws: &mut Ws, channel: &str) -> u64 {
    let p = ws.call("presence.get", json!({"channel": channel})).await;
    let count = p["count"].as_u64().expect("count");
    assert_eq!(
        p["members"].as_array().map(Vec::len),
        Some(count as usize),
        "{p}"
    );
    count
}

#[tokio::test]
async fn presence_join_get_and_leave() {
    let server = TestServer::default().await;
    let mut a = server.client(READER).await;
    let mut b = server.client(WRITER).await;
    let a_id = conn_id(&mut a).await;
    let b_id = conn_id(&mut b).await;
    b.call(
        "connect",
        json!({"client": {"name": "b-app", "version": "1.0"}}),
    )
    .await;

    a.call("subscribe", json!({"channels": ["public:room"]}))
        .await;
    b.call("subscribe", json!({"channels": ["public:room"]}))
        .await;

    let join = push_where(&mut a, "presence.join", |p| p["connId"] == b_id.as_str()).await;
    assert_eq!(join["channel"], "public:room", "{join}");
    assert_eq!(join["identity"], "writer", "{join}");
    assert_eq!(join["client"]["name"], "b-app", "{join}");
    assert!(join["timestamp"].as_u64().is_some(), "{join}");

    let p = a
        .call("presence.get", json!({"channel": "public:room"}))
        .await;
    assert_eq!(p["channel"], "public:room");
    assert_eq!(p["count"], 2, "{p}");
    assert!(has_member(&p, &a_id, "reader"), "{p}");
    assert!(has_member(&p, &b_id, "writer"), "{p}");
    let b_entry = p["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["connId"] == b_id.as_str())
        .unwrap();
    assert_eq!(b_entry["client"]["name"], "b-app", "{p}");
    assert!(b_entry["joinedAt"].as_u64().is_some(), "{p}");

    // Leaving by unsubscribe.
    b.call("unsubscribe", json!({"channels": ["public:room"]}))
        .await;
    let leave = push_where(&mut a, "presence.leave", |p| p["connId"] == b_id.as_str()).await;
    assert_eq!(leave["channel"], "public:room", "{leave}");
    assert_eq!(leave["identity"], "writer", "{leave}");
    assert_eq!(presence_count(&mut a, "public:room").await, 1);

    // Leaving by disconnecting.
    b.call("subscribe", json!({"channels": ["public:room"]}))
        .await;
    push_where(&mut a, "presence.join", |p| p["connId"] == b_id.as_str()).await;
    assert_eq!(presence_count(&mut a, "public:room").await, 2);
    b.close().await;
    let leave = push_where(&mut a, "presence.leave", |p| p["connId"] == b_id.as_str()).await;
    assert_eq!(leave["identity"], "writer", "{leave}");
    let mut gone = false;
    for _ in 0..100 {
        if presence_count(&mut a, "public:room").await == 1 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the disconnected member left the presence set");
    let p = a
        .call("presence.get", json!({"channel": "public:room"}))
        .await;
    assert!(has_member(&p, &a_id, "reader"), "{p}");
    assert!(!has_member(&p, &b_id, "writer"), "{p}");
}

#[tokio::test]
async fn channels_without_presence_have_no_members() {
    let server = TestServer::default().await;
    let mut a = server.client(READER).await;
    let mut b = server.client(READER).await;
    a.call("subscribe", json!({"channels": ["user:reader"]}))
        .await;
    b.call("subscribe", json!({"channels": ["user:reader"]}))
        .await;
    a.expect_no_push("presence.join", QUIET).await;
    let p = a
        .call("presence.get", json!({"channel": "user:reader"}))
        .await;
    assert_eq!(p["count"], 0, "{p}");
    // Presence of a channel one may not subscribe to is not visible.
    assert_eq!(
        a.error_code("presence.get", json!({"channel": "user:writer"}))
            .await,
        -32003
    );
}

#[tokio::test]
async fn presence_tick_reports_connections() {
    let server = TestServer::default().await;
    let mut a = server.client(READER).await;
    let _b = server.client(NODE).await;
    let tick = push_where(&mut a, "presence.tick", |p| {
        p["connections"].as_u64().is_some_and(|n| n >= 2)
    })
    .await;
    assert!(tick["ts"].as_u64().is_some_and(|t| t > 0), "{tick}");
    assert_eq!(tick["nodes"], 1, "{tick}");
    assert_eq!(tick["instances"], 1, "{tick}");
    // And it keeps coming.
    a.pushed.clear();
    a.expect_push("presence.tick").await;
    // Not to a socket that has not authenticated: cluster counts are not
    // for anyone who can open a socket. Two ticks go by meanwhile.
    let mut anonymous = Ws::connect(&server.url("/ws")).await.expect("connects");
    anonymous.expect_push("welcome").await;
    a.pushed.clear();
    a.expect_push("presence.tick").await;
    a.expect_push("presence.tick").await;
    anonymous
        .expect_no_push("presence.tick", Duration::from_millis(50))
        .await;
    anonymous.call("auth", json!({"token": READER})).await;
    anonymous.expect_push("presence.tick").await;
}

// ---------------------------------------------------------------- system

#[tokio::test]
async fn health_status_and_client_lists() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    let mut reader = server.client(READER).await;
    let admin_id = conn_id(&mut admin).await;
    let reader_id = conn_id(&mut reader).await;
    let node_id = server.app.instance_id.clone();

    let h = reader.call("health", json!({})).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["nodeId"], node_id.as_str(), "{h}");
    assert_eq!(h["connections"], 2, "{h}");

    let s = reader.call("status", json!({})).await;
    assert_eq!(s["nodeId"], node_id.as_str(), "{s}");
    let instances = s["cluster"]["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1, "{s}");
    assert_eq!(instances[0]["id"], node_id.as_str(), "{s}");
    assert_eq!(s["cluster"]["connections"], 2, "{s}");
    assert_eq!(s["local"]["connections"], 2, "{s}");

    for (ws, method) in [
        (&mut reader, "system.presence"),
        (&mut admin, "clients.list"),
    ] {
        let list = ws.call(method, json!({})).await;
        assert_eq!(list["count"], 2, "{method}: {list}");
        let clients = list["clients"].as_array().expect("clients");
        for (id, who) in [(&admin_id, "admin"), (&reader_id, "reader")] {
            let entry = clients
                .iter()
                .find(|c| c["connId"] == id.as_str())
                .unwrap_or_else(|| panic!("{method} lists {who}: {list}"));
            assert_eq!(entry["identity"], who, "{entry}");
            assert_eq!(entry["role"], "operator", "{entry}");
            assert_eq!(entry["nodeId"], node_id.as_str(), "{entry}");
            assert!(entry["connectedAt"].as_u64().is_some(), "{entry}");
        }
    }
    assert_eq!(reader.error_code("clients.list", json!({})).await, -32003);
    assert_eq!(reader.error_code("logs.tail", json!({})).await, -32003);
    assert_eq!(
        reader
            .error_code("client.kick", json!({"connId": admin_id}))
            .await,
        -32003
    );
    // The node role has no operator scopes.
    let mut node = server.client(NODE).await;
    assert_eq!(node.error_code("health", json!({})).await, -32003);
}

#[tokio::test]
async fn kick_closes_the_target_with_4003() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    let mut target = server.client(READER).await;
    let mut bystander = server.client(READER).await;
    let target_id = conn_id(&mut target).await;

    let r = admin
        .call("client.kick", json!({"connId": target_id, "reason": "bye"}))
        .await;
    assert_eq!(r["kicked"], true, "{r}");
    assert_eq!(target.expect_close_code().await, 4003);
    // The other connection of the same identity stays.
    assert_eq!(bystander.call("ping", json!({})).await["pong"], true);
    assert!(
        eventually(|| async { server.app.hub.len() == 2 }).await,
        "the kicked connection is gone"
    );
    let list = admin.call("clients.list", json!({})).await;
    assert!(
        !list["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["connId"] == target_id.as_str()),
        "{list}"
    );

    assert_eq!(
        admin
            .error_code("client.kick", json!({"connId": "no-such-conn"}))
            .await,
        -32001
    );
    // Kicking it again: it is gone.
    assert_eq!(
        admin
            .error_code("client.kick", json!({"connId": target_id}))
            .await,
        -32001
    );
    assert_eq!(admin.error_code("client.kick", json!({})).await, -32602);
}

#[tokio::test]
async fn logs_tail_shape_and_level() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    let r = admin.call("logs.tail", json!({})).await;
    assert!(r["records"].is_array(), "{r}");
    let r = admin
        .call("logs.tail", json!({"limit": 5, "level": "warn"}))
        .await;
    let records = r["records"].as_array().expect("records");
    assert!(records.len() <= 5, "{r}");
    let reply = admin.request("logs.tail", json!({"level": "loud"})).await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    assert_eq!(reply["error"]["data"]["field"], "level", "{reply}");
}

// ---------------------------------------------------------------- node.invoke

#[tokio::test]
async fn invoke_by_node_id_and_by_capability() {
    let server = TestServer::default().await;
    let (mut node, node_id) = caps_node(&server, &["echo"]).await;
    let mut caller = server.client(WRITER).await;
    let caller_id = conn_id(&mut caller).await;

    let (reply, seen) = invoke_echoed(
        &mut caller,
        &mut node,
        json!({"nodeId": node_id, "command": "echo", "params": {"x": 1}, "timeoutMs": 2000}),
    )
    .await;
    assert_eq!(seen["command"], "echo", "{seen}");
    assert_eq!(seen["params"], json!({"x": 1}), "{seen}");
    assert_eq!(seen["caller"]["connId"], caller_id.as_str(), "{seen}");
    assert_eq!(seen["caller"]["identity"], "writer", "{seen}");
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(reply["result"]["nodeId"], node_id.as_str(), "{reply}");
    assert_eq!(
        reply["result"]["result"],
        json!({"echo": {"x": 1}}),
        "{reply}"
    );

    // By capability, from an admin.
    let mut admin = server.client(ADMIN).await;
    let (reply, _) = invoke_echoed(&mut admin, &mut node, json!({"capability": "echo", "command": "echo", "params": {"y": [1, 2]}, "timeoutMs": 2000})).await;
    assert_eq!(reply["result"]["nodeId"], node_id.as_str(), "{reply}");
    assert_eq!(
        reply["result"]["result"],
        json!({"echo": {"y": [1, 2]}}),
        "{reply}"
    );

    // Two calls in flight at once get their own answers.
    let (r1, r2, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": node_id, "command": "echo", "params": 1, "timeoutMs": 3000}),
        ),
        admin.request(
            "node.invoke",
            json!({"nodeId": node_id, "command": "echo", "params": 2, "timeoutMs": 3000}),
        ),
        async {
            let (id1, p1) = server_request(&mut node, "invoke").await;
            let (id2, p2) = server_request(&mut node, "invoke").await;
            assert_ne!(id1, id2);
            // Answer in reverse order.
            for (id, p) in [(id2, p2), (id1, p1)] {
                answer(&mut node, &id, json!({"echo": p["params"]})).await;
            }
        },
    );
    assert_eq!(r1["result"]["result"], json!({"echo": 1}), "{r1}");
    assert_eq!(r2["result"]["result"], json!({"echo": 2}), "{r2}");
}

#[tokio::test]
async fn invoke_errors() {
    let server = TestServer::default().await;
    let (mut node, node_id) = caps_node(&server, &["echo"]).await;
    let mut caller = server.client(WRITER).await;
    let caller_id = conn_id(&mut caller).await;

    // The node's error is passed through.
    let (reply, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": node_id, "command": "fail", "timeoutMs": 2000}),
        ),
        async {
            let (id, _) = server_request(&mut node, "invoke").await;
            answer_error(&mut node, &id, -32050, "boom").await;
        },
    );
    assert_eq!(reply["error"]["code"], -32050, "{reply}");
    assert_eq!(reply["error"]["message"], "boom", "{reply}");

    // Nobody there.
    let params = json!({"nodeId": "no-such-node", "command": "echo", "timeoutMs": 500});
    assert_eq!(caller.error_code("node.invoke", params).await, -32005);
    let params = json!({"capability": "nope", "command": "echo", "timeoutMs": 500});
    assert_eq!(caller.error_code("node.invoke", params).await, -32005);
    // An operator connection is not a node.
    let params = json!({"nodeId": caller_id, "command": "echo", "timeoutMs": 500});
    assert_eq!(caller.error_code("node.invoke", params).await, -32005);

    // Scopes: node.invoke needs operator.write.
    let mut reader = server.client(READER).await;
    let params = json!({"nodeId": node_id, "command": "echo", "timeoutMs": 500});
    assert_eq!(
        reader.error_code("node.invoke", params.clone()).await,
        -32003
    );
    assert_eq!(node.error_code("node.invoke", params).await, -32003);

    // A node that never answers.
    let started = Instant::now();
    let (reply, _) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": node_id, "command": "slow", "timeoutMs": 300}),
        ),
        server_request(&mut node, "invoke"),
    );
    assert_eq!(reply["error"]["code"], -32006, "{reply}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // A late or forged answer is ignored and the node connection stays usable.
    node.send_json(&json!({"jsonrpc": "2.0", "id": "srv-999999", "result": {"late": true}}))
        .await;
    assert_eq!(node.call("ping", json!({})).await["pong"], true);
    // Still answering normally afterwards.
    let (reply, _) = invoke_echoed(
        &mut caller,
        &mut node,
        json!({"nodeId": node_id, "command": "echo", "params": {"x": 1}, "timeoutMs": 2000}),
    )
    .await;
    assert_eq!(
        reply["result"]["result"],
        json!({"echo": {"x": 1}}),
        "{reply}"
    );
}

#[tokio::test]
async fn node_disconnecting_mid_call_fails_the_call_promptly() {
    let server = TestServer::default().await;
    let (node, node_id) = caps_node(&server, &["echo"]).await;
    let mut caller = server.client(WRITER).await;
    let started = Instant::now();
    let (reply, ()) = tokio::join!(
        caller.request(
            "node.invoke",
            json!({"nodeId": node_id, "command": "echo", "timeoutMs": 4500}),
        ),
        async move {
            let mut node = node;
            server_request(&mut node, "invoke").await;
            node.close().await;
        },
    );
    let code = reply["error"]["code"].as_i64();
    assert!(code.is_some(), "an error, not a result: {reply}");
    assert_ne!(code, Some(-32006), "not a timeout: {reply}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The node is gone for good.
    let params = json!({"nodeId": node_id, "command": "echo", "timeoutMs": 300});
    assert_eq!(caller.error_code("node.invoke", params).await, -32005);
    let params = json!({"capability": "echo", "command": "echo", "timeoutMs": 300});
    assert_eq!(caller.error_code("node.invoke", params).await, -32005);
}

// ---------------------------------------------------------------- rate limits

#[tokio::test]
async fn message_rate_limit_per_connection() {
    let mut config = config();
    config.rate_limits.messages_per_conn = Window::new(5, 60_000);
    let server = TestServer::start(config).await;
    let mut ws = server.client(WRITER).await;
    for i in 0..5 {
        let reply = ws.request("ping", json!({})).await;
        assert_eq!(reply["result"]["pong"], true, "ping {i}: {reply}");
    }
    let reply = ws.request("ping", json!({})).await;
    assert_eq!(reply["error"]["code"], -32004, "{reply}");
    let retry = reply["error"]["data"]["retryAfterMs"].as_u64();
    assert!(retry.is_some_and(|r| r > 0 && r <= 60_000), "{reply}");
    // Other methods are limited too, and the connection stays open.
    assert_eq!(ws.error_code("status", json!({})).await, -32004);
    // Another connection of the same identity has its own window.
    let mut other = server.client(WRITER).await;
    assert_eq!(other.call("ping", json!({})).await["pong"], true);
}

#[tokio::test]
async fn message_rate_limit_per_identity() {
    let mut config = config();
    config.rate_limits.messages_per_conn = Window::new(1000, 60_000);
    config.rate_limits.messages_per_identity = Window::new(8, 60_000);
    let server = TestServer::start(config).await;
    let mut a = server.client(WRITER).await;
    let mut b = server.client(WRITER).await;
    let mut outcomes = Vec::new();
    for i in 0..14 {
        let ws = if i % 2 == 0 { &mut a } else { &mut b };
        let reply = ws.request("ping", json!({})).await;
        if reply["result"]["pong"] == true {
            outcomes.push(true);
        } else {
            assert_eq!(reply["error"]["code"], -32004, "{reply}");
            assert!(
                reply["error"]["data"]["retryAfterMs"]
                    .as_u64()
                    .is_some_and(|r| r > 0),
                "{reply}"
            );
            outcomes.push(false);
        }
    }
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 8, "{outcomes:?}");
    assert!(
        outcomes[..8].iter().all(|ok| *ok) && outcomes[8..].iter().all(|ok| !*ok),
        "the first 8 pass, the rest are refused: {outcomes:?}"
    );
    // Other identities are not affected.
    let mut reader = server.client(READER).await;
    assert_eq!(reader.call("ping", json!({})).await["pong"], true);
}

#[tokio::test]
async fn caller_disconnecting_mid_invoke_is_cleaned_up_promptly() {
    let server = TestServer::default().await;
    let (mut node, node_id) = caps_node(&server, &["echo"]).await;
    let mut admin = server.client(ADMIN).await;
    let mut caller = server.client(WRITER).await;
    let caller_id = conn_id(&mut caller).await;
    caller
        .send_json(&json!({
            "jsonrpc": "2.0",
            "id": "inv",
            "method": "node.invoke",
            "params": {"nodeId": node_id, "command": "slow", "timeoutMs": 4500},
        }))
        .await;
    // The node holds the request and never answers; the caller goes away.
    server_request(&mut node, "invoke").await;
    caller.close().await;
    let started = Instant::now();
    let mut listed = true;
    while started.elapsed() < Duration::from_millis(1500) {
        let list = admin.call("clients.list", json!({})).await;
        listed = list["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .any(|c| c["connId"] == caller_id.as_str());
        if !listed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !listed,
        "a caller that disconnected while its node.invoke was pending is still listed \
         {:?} later (it lingers until the invoke's timeoutMs)",
        started.elapsed()
    );
    assert!(server.app.hub.get(&caller_id).is_none());
}

#[tokio::test]
async fn long_running_calls_per_connection_are_bounded() {
    let server = TestServer::default().await;
    let (mut node, node_id) = caps_node(&server, &["hold"]).await;
    // Room for more calls than one connection may have in flight.
    node.call("agent.register", json!({"maxConcurrency": 64}))
        .await;
    let mut caller = server.client(WRITER).await;
    // 32 calls the node never answers fill the connection's slots...
    let held: Vec<String> = (0..32).map(|i| format!("h{i}")).collect();
    for id in &held {
        send_request(
            &mut caller,
            id,
            "node.invoke",
            json!({"nodeId": node_id, "command": "hold", "timeoutMs": 60_000}),
        )
        .await;
    }
    // ...so a 33rd is refused at once, while short calls still run.
    let reply = caller
        .request(
            "node.invoke",
            json!({"nodeId": node_id, "command": "hold", "timeoutMs": 60_000}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    assert_eq!(caller.call("ping", json!({})).await["pong"], true);
    // The node going away ends them all, and the slots are free again.
    node.close().await;
    let ids: Vec<&str> = held.iter().map(String::as_str).collect();
    let ended = replies(&mut caller, &ids).await;
    assert!(
        ended.values().all(|r| r["error"]["code"] == -32005),
        "{ended:?}"
    );
    let (mut node, node_id) = caps_node(&server, &["hold"]).await;
    let (reply, _) = invoke_echoed(
        &mut caller,
        &mut node,
        json!({"nodeId": node_id, "command": "echo", "params": 1, "timeoutMs": 3000}),
    )
    .await;
    assert_eq!(reply["result"]["result"], json!({"echo": 1}), "{reply}");
}

/// `system.presence` / `clients.list` and `presence.get` answer a page at
/// a time: `limit` entries at most (default and maximum 1000), `total`
/// connections, `nextCursor` until the last page; a bad limit or cursor
/// is -32602.
#[tokio::test]
async fn presence_lists_come_in_pages() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(server.client(READER).await);
    }
    let mut ids = Vec::new();
    for ws in &mut others {
        ids.push(conn_id(ws).await);
    }
    ids.push(conn_id(&mut admin).await);
    let whole = admin.call("clients.list", json!({})).await;
    assert_eq!(whole["count"], 5, "{whole}");
    assert_eq!(whole["total"], 5, "{whole}");
    assert_eq!(whole["nextCursor"], Value::Null, "{whole}");

    let mut seen = std::collections::BTreeSet::new();
    let mut params = json!({"limit": 2});
    for page in 0.. {
        assert!(page < 10, "the walk ends");
        let r = admin.call("system.presence", params.clone()).await;
        assert_eq!(r["total"], 5, "{r}");
        let clients = r["clients"].as_array().expect("clients");
        assert_eq!(r["count"], clients.len(), "{r}");
        // Redis pages by a hint (a small hash comes back whole).
        assert!(clients.len() <= 5, "{r}");
        seen.extend(
            clients
                .iter()
                .map(|c| c["connId"].as_str().unwrap().to_owned()),
        );
        match r["nextCursor"].as_str() {
            Some(cursor) => params = json!({"limit": 2, "cursor": cursor}),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ids.iter().cloned().collect(),
        "every client, once walked"
    );

    for bad in [
        json!({"limit": 0}),
        json!({"limit": 1001}),
        json!({"limit": "x"}),
    ] {
        let code = admin.error_code("system.presence", bad.clone()).await;
        assert_eq!(code, -32602, "{bad}");
    }

    // presence.get pages a channel's members the same way.
    for ws in others.iter_mut().chain([&mut admin]) {
        ws.call("subscribe", json!({"channels": ["public:p"]}))
            .await;
    }
    let mut members = std::collections::BTreeSet::new();
    let mut params = json!({"channel": "public:p", "limit": 2});
    for page in 0.. {
        assert!(page < 10, "the walk ends");
        let r = admin.call("presence.get", params.clone()).await;
        let list = r["members"].as_array().expect("members");
        assert_eq!(r["count"], list.len(), "{r}");
        members.extend(
            list.iter()
                .map(|m| m["connId"].as_str().unwrap().to_owned()),
        );
        match r["nextCursor"].as_str() {
            Some(cursor) => params = json!({"channel": "public:p", "limit": 2, "cursor": cursor}),
            None => break,
        }
    }
    assert_eq!(members, ids.iter().cloned().collect(), "every member");
    let bad = json!({"channel": "public:p", "limit": 0});
    assert_eq!(admin.error_code("presence.get", bad).await, -32602);
    if redis_mode() {
        let code = admin
            .error_code("system.presence", json!({"cursor": "nonsense"}))
            .await;
        assert_eq!(code, -32602, "a cursor the server did not give");
    }
}

// ---------------------------------------------------------------- history

/// Publish `n` on `channel`; the reply.
async fn publish_n(ws: &mut Ws, channel: &str, n: u64) -> Value {
    ws.call(
        "publish",
        json!({"channel": channel, "event": "n", "data": n}),
    )
    .await
}

/// The offsets of the next `n` `notify` pushes on `channel`.
async fn notify_offsets(ws: &mut Ws, channel: &str, n: usize) -> Vec<u64> {
    let mut offsets = Vec::new();
    while offsets.len() < n {
        let push = notify_on(ws, channel).await;
        assert_eq!(push["data"], push["offset"], "{push}");
        offsets.push(push["offset"].as_u64().expect("offset"));
    }
    offsets
}

#[tokio::test]
async fn channels_with_history_number_keep_and_recover() {
    let mut config = config();
    keep_history(&mut config, 3);
    let server = TestServer::start(config).await;
    let mut w = server.client(WRITER).await;
    for n in 1..=2 {
        let r = publish_n(&mut w, "hist:a", n).await;
        assert_eq!(r["offset"], n, "{r}");
    }
    let mut alice = as_user(&server, "alice").await;
    alice
        .call("subscribe", json!({"channels": ["hist:a"]}))
        .await;
    publish_n(&mut w, "hist:a", 3).await;
    assert_eq!(notify_offsets(&mut alice, "hist:a", 1).await, [3]);
    alice.close().await;
    for n in 4..=5 {
        publish_n(&mut w, "hist:a", n).await;
    }

    // Back with the newest offset it had: the two it missed, then live.
    let mut back = as_user(&server, "alice").await;
    let r = back
        .call(
            "subscribe",
            json!({"channels": ["hist:a"], "recover": {"hist:a": 3}}),
        )
        .await;
    assert_eq!(
        r["recovered"]["hist:a"],
        json!({"replayed": 2, "latest": 5, "complete": true,
            "epoch": r["recovered"]["hist:a"]["epoch"]}),
        "{r}"
    );
    publish_n(&mut w, "hist:a", 6).await;
    assert_eq!(notify_offsets(&mut back, "hist:a", 3).await, [4, 5, 6]);
    back.expect_no_push("notify", QUIET).await;

    // Only the newest 3 are kept: recovering from further back says so.
    let mut late = as_user(&server, "bob").await;
    let r = late
        .call(
            "subscribe",
            json!({"channels": ["hist:a"], "recover": {"hist:a": 1}}),
        )
        .await;
    assert_eq!(r["recovered"]["hist:a"]["complete"], false, "{r}");
    assert_eq!(notify_offsets(&mut late, "hist:a", 3).await, [4, 5, 6]);
    let h = late.call("history", json!({"channel": "hist:a"})).await;
    assert_eq!(
        (h["latest"].clone(), h["complete"].clone()),
        (json!(6), json!(false))
    );
    assert_eq!(offsets_of(&h), [4, 5, 6], "{h}");
    assert_eq!(h["events"][0]["channel"], "hist:a", "{h}");
    let h = late
        .call(
            "history",
            json!({"channel": "hist:a", "since": 4, "limit": 1}),
        )
        .await;
    assert_eq!(h["events"][0]["offset"], 5, "{h}");
    assert_eq!(
        (h["complete"].clone(), h["more"].clone()),
        (json!(true), json!(true))
    );

    // Channels without history: no offset, no history, nothing to recover.
    let r = publish_n(&mut w, "public:plain", 1).await;
    assert!(r.get("offset").is_none(), "{r}");
    assert_eq!(
        late.error_code("history", json!({"channel": "public:plain"}))
            .await,
        -32602
    );
    let code = late
        .error_code(
            "subscribe",
            json!({"channels": ["public:plain"], "recover": {"public:plain": 0}}),
        )
        .await;
    assert_eq!(code, -32602);
    let code = late
        .error_code(
            "subscribe",
            json!({"channels": ["hist:b"], "recover": {"hist:a": 0}}),
        )
        .await;
    assert_eq!(code, -32602, "recover names a channel not subscribed");
    // Reading history takes the right to subscribe.
    let mut reader = server.client(READER).await;
    let code = reader
        .error_code("history", json!({"channel": "user:alice"}))
        .await;
    assert_eq!(code, -32003);
}
