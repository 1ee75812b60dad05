//! Cluster mode: several in-process instances sharing one `redis-server`.
//! Channels, implicit channels, sessions, kicks, presence, shared rate
//! windows, external notifications (`PUBLISH sy:notify:*`), a Redis outage
//! survived on the same sockets, and restarted instances (generations).

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use switchyard::config::Window;

const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------- helpers

/// conn id → entry of `system.presence`.
fn presence_entries(list: &Value) -> Vec<Value> {
    counted(list, "clients").clone()
}

fn entry<'a>(entries: &'a [Value], conn: &str) -> Option<&'a Value> {
    entries.iter().find(|e| e["connId"] == conn)
}

/// Connection ids of a `presence.get` reply.
fn member_ids(presence: &Value) -> BTreeSet<String> {
    listed_ids(presence, "members", "connId")
}

// ---------------------------------------------------------------- channels

#[tokio::test]
async fn channel_delivery_across_instances() {
    let (_redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let mut sub_b = b.client(READER).await;
    let mut w_a = a.client(WRITER).await;

    sub_b.call("subscribe", json!({"channels": ["news"]})).await;
    let r = w_a
        .call(
            "publish",
            json!({"channel": "news", "event": "e1", "data": {"n": 1}}),
        )
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
    assert_notify(
        &notify_on(&mut sub_b, "news").await,
        "news",
        "e1",
        &json!({"n": 1}),
    );
    no_notify_on(&mut sub_b, "news", QUIET).await;
    w_a.expect_no_push("notify", Duration::from_millis(50))
        .await;

    // Subscribers on both instances: delivered counts sockets cluster-wide.
    let mut sub_a = a.client(READER).await;
    sub_a.call("subscribe", json!({"channels": ["news"]})).await;
    let r = w_a
        .call(
            "publish",
            json!({"channel": "news", "event": "e2", "data": 2}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    for ws in [&mut sub_a, &mut sub_b] {
        assert_notify(&notify_on(ws, "news").await, "news", "e2", &json!(2));
        no_notify_on(ws, "news", QUIET).await;
    }
    // Publishing on B reaches A as well.
    let mut w_b = b.client(WRITER).await;
    let r = w_b
        .call(
            "publish",
            json!({"channel": "news", "event": "e3", "data": 3}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    for ws in [&mut sub_a, &mut sub_b] {
        assert_notify(&notify_on(ws, "news").await, "news", "e3", &json!(3));
    }

    // Unsubscribing on B stops it there.
    sub_b
        .call("unsubscribe", json!({"channels": ["news"]}))
        .await;
    let r = w_a
        .call(
            "publish",
            json!({"channel": "news", "event": "e4", "data": 4}),
        )
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
    assert_notify(
        &notify_on(&mut sub_a, "news").await,
        "news",
        "e4",
        &json!(4),
    );
    no_notify_on(&mut sub_b, "news", QUIET).await;
    no_notify_on(&mut sub_a, "news", Duration::from_millis(50)).await;
}

/// A `publish` sent as a notification (no id) skips the subscriber count
/// (there is no reply to carry it: no `HVALS` in Redis) but is delivered
/// the same way: to both instances, in the order sent, and the publisher
/// gets no frame back.
#[tokio::test]
async fn notification_publishes_reach_every_instance_in_order() {
    let (redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let mut sub_a = a.client(READER).await;
    let mut sub_b = b.client(READER).await;
    for ws in [&mut sub_a, &mut sub_b] {
        ws.call("subscribe", json!({"channels": ["feed"]})).await;
    }
    let mut w = a.client(WRITER).await;
    let counted = redis.command_calls("hvals");
    const N: u64 = 50;
    for n in 0..N {
        w.send_json(&json!({"jsonrpc": "2.0", "method": "publish",
            "params": {"channel": "feed", "event": "n", "data": n}}))
            .await;
    }
    for ws in [&mut sub_a, &mut sub_b] {
        for n in 0..N {
            assert_notify(&notify_on(ws, "feed").await, "feed", "n", &json!(n));
        }
        no_notify_on(ws, "feed", QUIET).await;
    }
    // Replies go out in order: had any publish been answered, that answer
    // would come before the ping's.
    w.send_json(&json!({"jsonrpc": "2.0", "id": "after", "method": "ping"}))
        .await;
    let first = loop {
        let frame = w.next_json().await.expect("a reply");
        // Pushes (presence.tick) may come in between.
        if frame.get("method").is_none() {
            break frame;
        }
    };
    assert_eq!(
        first["id"], "after",
        "a notification gets no reply: {first}"
    );
    assert_eq!(
        redis.command_calls("hvals"),
        counted,
        "no subscriber count is read for a notification"
    );
    // A call wants `delivered`: that one reads the count.
    let r = w
        .call(
            "publish",
            json!({"channel": "feed", "event": "n", "data": N}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    assert!(redis.command_calls("hvals") > counted);
}

#[tokio::test]
async fn implicit_channels_across_instances() {
    let (_redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let mut admin = a.client(ADMIN).await;
    let mut reader_b = b.client(READER).await;
    let mut other_b = b.client(READER).await;
    let mut writer_b = b.client(WRITER).await;
    let mut writer_a = a.client(WRITER).await;
    let reader_id = conn_id(&mut reader_b).await;

    // user:<sub>: both READER connections on B, nobody else.
    let r = admin
        .call(
            "publish",
            json!({"channel": "user:reader", "event": "u", "data": 1}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    for ws in [&mut reader_b, &mut other_b] {
        assert_notify(
            &notify_on(ws, "user:reader").await,
            "user:reader",
            "u",
            &json!(1),
        );
        no_notify_on(ws, "user:reader", Duration::from_millis(100)).await;
    }
    for ws in [&mut writer_b, &mut writer_a, &mut admin] {
        ws.expect_no_push("notify", Duration::from_millis(100))
            .await;
    }

    // conn:<id> of a B connection, published on A.
    let channel = format!("conn:{reader_id}");
    let r = admin
        .call(
            "publish",
            json!({"channel": channel, "event": "c", "data": 2}),
        )
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
    assert_notify(
        &notify_on(&mut reader_b, &channel).await,
        &channel,
        "c",
        &json!(2),
    );
    no_notify_on(&mut reader_b, &channel, QUIET).await;
    other_b
        .expect_no_push("notify", Duration::from_millis(50))
        .await;

    // global: everyone on both instances, exactly once.
    let r = admin
        .call(
            "publish",
            json!({"channel": "global", "event": "g", "data": {"k": 1}}),
        )
        .await;
    assert_eq!(r["delivered"], 5, "{r}");
    for ws in [
        &mut admin,
        &mut writer_a,
        &mut reader_b,
        &mut other_b,
        &mut writer_b,
    ] {
        assert_notify(
            &notify_on(ws, "global").await,
            "global",
            "g",
            &json!({"k": 1}),
        );
        no_notify_on(ws, "global", Duration::from_millis(100)).await;
    }
}

/// Everything published after `welcome` (authenticated at the upgrade) or
/// after the `auth` reply reaches the socket, also when it is the first
/// socket of its instance on `global` and `user:<sub>` while the previous
/// one is leaving, and the publication comes from another instance at once.
#[tokio::test]
async fn publications_right_after_welcome_or_auth_arrive() {
    let (_redis, s) = cluster(3, |_| {}).await;
    let mut admin = s[0].client(ADMIN).await;
    for round in 0..40u64 {
        let target = &s[1 + (round as usize) % 2];
        let mut ws = if round % 2 == 0 {
            target.client(READER).await
        } else {
            let mut ws = Ws::connect(&target.url("/ws")).await.expect("connects");
            ws.expect_push("welcome").await;
            ws.call("auth", json!({"token": READER})).await;
            ws
        };
        for channel in ["global", "user:reader"] {
            let r = admin
                .call(
                    "publish",
                    json!({"channel": channel, "event": "e", "data": round}),
                )
                .await;
            assert!(r["delivered"].as_u64().unwrap_or(0) >= 1, "{r}");
            push_where(&mut ws, "notify", |p| {
                p["channel"] == channel && p["data"] == round
            })
            .await;
        }
        ws.close().await;
    }
}

// ---------------------------------------------------------------- sessions

#[tokio::test]
async fn sessions_across_instances() {
    let (_redis, s) = cluster(3, |_| {}).await;
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    let mut owner = a.client(WRITER).await;
    let mut alice = as_user(b, "alice").await;
    let mut bob = as_user(c, "bob").await;
    let mut outsider = as_user(b, "carol").await;
    let owner_id = conn_id(&mut owner).await;
    let alice_id = conn_id(&mut alice).await;
    let bob_id = conn_id(&mut bob).await;

    owner
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "x", "meta": {"k": 1}}),
        )
        .await;
    let r = alice.call("session.join", json!({"sessionId": "x"})).await;
    assert_eq!(r["members"], json!([owner_id, alice_id]), "{r}");
    let r = bob.call("session.join", json!({"sessionId": "x"})).await;
    assert_eq!(r["members"], json!([owner_id, alice_id, bob_id]), "{r}");
    let g = bob.call("session.get", json!({"sessionId": "x"})).await;
    assert_eq!(g["owner"], owner_id.as_str(), "{g}");
    assert_eq!(
        g["memberIdentities"],
        json!(["writer", "alice", "bob"]),
        "{g}"
    );

    // send from B reaches the owner on A and the member on C.
    let r = alice
        .call(
            "session.send",
            json!({"sessionId": "x", "event": "msg", "data": {"t": "hi"}}),
        )
        .await;
    assert_eq!(r["delivered"], 3, "{r}");
    for ws in [&mut owner, &mut bob, &mut alice] {
        let push = ws.expect_push("session.event").await;
        assert_eq!(push["sessionId"], "x", "{push}");
        assert_eq!(push["event"], "msg", "{push}");
        assert_eq!(push["data"], json!({"t": "hi"}), "{push}");
        assert_eq!(push["from"]["connId"], alice_id.as_str(), "{push}");
        assert_eq!(push["from"]["identity"], "alice", "{push}");
        ws.expect_no_push("session.event", Duration::from_millis(100))
            .await;
    }
    outsider
        .expect_no_push("session.event", Duration::from_millis(50))
        .await;
    assert_eq!(
        outsider
            .error_code("session.send", json!({"sessionId": "x", "event": "e"}))
            .await,
        -32003
    );

    // patch on A → session.updated on B and C.
    let r = owner
        .call(
            "session.patch",
            json!({"sessionId": "x", "meta": {"k": null, "z": 2}}),
        )
        .await;
    assert_eq!(r["version"], 1, "{r}");
    for ws in [&mut alice, &mut bob] {
        let push = ws.expect_push("session.updated").await;
        assert_eq!(push["sessionId"], "x", "{push}");
        assert_eq!(push["version"], 1, "{push}");
        assert_eq!(push["meta"], json!({"z": 2}), "{push}");
    }
    // A member on B may not patch or close; versions are shared.
    assert_eq!(
        alice
            .error_code("session.patch", json!({"sessionId": "x", "meta": {"a": 1}}))
            .await,
        -32003
    );
    assert_eq!(
        alice
            .error_code("session.close", json!({"sessionId": "x"}))
            .await,
        -32003
    );

    // close on A → session.closed on B and C.
    let r = owner.call("session.close", json!({"sessionId": "x"})).await;
    assert_eq!(r["closed"], true, "{r}");
    for ws in [&mut alice, &mut bob, &mut owner] {
        let push = ws.expect_push("session.closed").await;
        assert_eq!(push["sessionId"], "x", "{push}");
        assert_eq!(push["reason"], "closed", "{push}");
        ws.expect_no_push("session.closed", Duration::from_millis(50))
            .await;
    }
    assert_eq!(
        bob.error_code("session.get", json!({"sessionId": "x"}))
            .await,
        -32001
    );
}

#[tokio::test]
async fn session_limits_across_instances() {
    let (_redis, s) = cluster(3, |_| {}).await;
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    let mut w_a = a.client(WRITER).await;
    let mut w_b = b.client(WRITER).await;
    for i in 0..5 {
        w_a.call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": format!("own-{i}")}),
        )
        .await;
    }
    assert_eq!(
        w_a.error_code(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "own-5"})
        )
        .await,
        -32002
    );
    // The refused session does not exist anywhere.
    assert_eq!(
        w_b.error_code("session.get", json!({"sessionId": "own-5"}))
            .await,
        -32001
    );
    // Another connection of the same identity (on B) has its own allowance.
    for i in 5..10 {
        w_b.call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": format!("own-{i}")}),
        )
        .await;
    }
    assert_eq!(
        w_b.error_code("session.create", json!({"invite": ["alice", "bob"], }))
            .await,
        -32002
    );
    // Closing one of A's sessions from B (same identity) frees A's slot.
    w_b.call("session.close", json!({"sessionId": "own-0"}))
        .await;
    w_a.call(
        "session.create",
        json!({"invite": ["alice", "bob"], "sessionId": "own-again"}),
    )
    .await;
    assert_eq!(
        w_a.error_code("session.create", json!({"invite": ["alice", "bob"], }))
            .await,
        -32002
    );

    // maxMembers holds across instances.
    let mut w_a2 = a.client(WRITER).await;
    w_a2.call(
        "session.create",
        json!({"invite": ["alice", "bob"], "sessionId": "pair", "maxMembers": 2}),
    )
    .await;
    let mut alice = as_user(b, "alice").await;
    let mut bob = as_user(c, "bob").await;
    alice
        .call("session.join", json!({"sessionId": "pair"}))
        .await;
    let reply = bob
        .request("session.join", json!({"sessionId": "pair"}))
        .await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    let g = w_a2.call("session.get", json!({"sessionId": "pair"})).await;
    assert_eq!(g["members"].as_array().map(Vec::len), Some(2), "{g}");
    // Refused, bob stays an outsider: the session is not shown to him.
    assert_eq!(
        bob.error_code("session.get", json!({"sessionId": "pair"}))
            .await,
        -32001
    );
    w_a2.call("session.send", json!({"sessionId": "pair", "event": "e"}))
        .await;
    alice.expect_push("session.event").await;
    bob.expect_no_push("session.event", QUIET).await;
}

// ---------------------------------------------------------------- kicks

/// Many sockets subscribing to one channel at once share interest writes
/// (a caller whose change an earlier write already carried writes nothing).
/// Every one of them must still be counted and reached, and the last ones
/// leaving must unsubscribe the instance.
#[tokio::test]
async fn concurrent_subscribes_to_one_channel_are_all_counted() {
    let (_redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    const N: usize = 40;
    let mut subs = Vec::new();
    for _ in 0..N {
        subs.push(a.client(READER).await);
    }
    futures_util::future::join_all(
        subs.iter_mut()
            .map(|ws| ws.call("subscribe", json!({"channels": ["storm"]}))),
    )
    .await;
    let mut w = b.client(WRITER).await;
    let r = w
        .call(
            "publish",
            json!({"channel": "storm", "event": "e", "data": 1}),
        )
        .await;
    assert_eq!(r["delivered"], N, "{r}");
    for ws in &mut subs {
        assert_notify(&notify_on(ws, "storm").await, "storm", "e", &json!(1));
    }
    // All leave at once: the count drops to 0 and nothing is delivered.
    futures_util::future::join_all(
        subs.iter_mut()
            .map(|ws| ws.call("unsubscribe", json!({"channels": ["storm"]}))),
    )
    .await;
    let r = w
        .call(
            "publish",
            json!({"channel": "storm", "event": "e", "data": 2}),
        )
        .await;
    assert_eq!(r["delivered"], 0, "{r}");
    for ws in &mut subs {
        no_notify_on(ws, "storm", Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn kick_and_disconnect_across_instances() {
    let (_redis, s) = cluster(3, |_| {}).await;
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    let mut admin = a.client(ADMIN).await;
    let mut target = b.client(READER).await;
    let mut bystander = b.client(READER).await;
    let target_id = conn_id(&mut target).await;

    let r = admin
        .call("client.kick", json!({"connId": target_id, "reason": "bye"}))
        .await;
    assert_eq!(r["kicked"], true, "{r}");
    assert_eq!(target.expect_close_code().await, 4003);
    assert_eq!(bystander.call("ping", json!({})).await["pong"], true);
    assert!(
        within(WAIT, || async { b.app.hub.len() == 1 }).await,
        "the kicked connection is gone from B"
    );
    let list = admin.call("system.presence", json!({})).await;
    assert!(
        entry(&presence_entries(&list), &target_id).is_none(),
        "{list}"
    );
    assert_eq!(
        admin
            .error_code("client.kick", json!({"connId": target_id}))
            .await,
        -32001
    );
    assert_eq!(
        admin
            .error_code("client.kick", json!({"connId": "no-such-conn"}))
            .await,
        -32001
    );

    // POST /api/disconnect on A for a user connected to B and C.
    let mut alice_b = as_user(b, "alice").await;
    let mut alice_c = as_user(c, "alice").await;
    let mut bob_b = as_user(b, "bob").await;
    let (status, _, body) = http(
        a.addr,
        "POST",
        "/api/disconnect",
        &[("authorization", &format!("Bearer {ADMIN}"))],
        Some(r#"{"user":"alice","reason":"api"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["disconnected"], 2, "{body}");
    for ws in [&mut alice_b, &mut alice_c] {
        assert_eq!(ws.expect_close_code().await, 4003);
    }
    assert_eq!(bob_b.call("ping", json!({})).await["pong"], true);
}

// ---------------------------------------------------------------- presence

#[tokio::test]
async fn presence_is_cluster_wide() {
    let (_redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let mut reader_a = a.client(READER).await;
    let mut admin_a = a.client(ADMIN).await;
    let mut writer_b = b.client(WRITER).await;
    let ra = conn_id(&mut reader_a).await;
    let aa = conn_id(&mut admin_a).await;
    let wb = conn_id(&mut writer_b).await;
    writer_b
        .call(
            "connect",
            json!({"client": {"name": "b-app", "version": "1"}}),
        )
        .await;

    // system.presence on A lists both instances' connections with nodeIds.
    let list = reader_a.call("system.presence", json!({})).await;
    let entries = presence_entries(&list);
    assert_eq!(entries.len(), 3, "{list}");
    for (id, who, node) in [
        (&ra, "reader", &a.app.instance_id),
        (&aa, "admin", &a.app.instance_id),
        (&wb, "writer", &b.app.instance_id),
    ] {
        let e = entry(&entries, id).unwrap_or_else(|| panic!("lists {who}: {list}"));
        assert_eq!(e["identity"], who, "{e}");
        assert_eq!(e["nodeId"], node.as_str(), "{e}");
        assert!(e["connectedAt"].as_u64().is_some(), "{e}");
    }
    assert_eq!(
        entry(&entries, &wb).unwrap()["client"]["name"],
        "b-app",
        "{list}"
    );
    assert_ne!(a.app.instance_id, b.app.instance_id);
    // The same on B, and clients.list too.
    let list = admin_a.call("clients.list", json!({})).await;
    assert_eq!(presence_entries(&list).len(), 3, "{list}");
    let list = writer_b.call("system.presence", json!({})).await;
    assert_eq!(presence_entries(&list).len(), 3, "{list}");

    // presence.join / presence.get / presence.leave across instances.
    reader_a
        .call("subscribe", json!({"channels": ["public:room"]}))
        .await;
    writer_b
        .call("subscribe", json!({"channels": ["public:room"]}))
        .await;
    let join = push_where(&mut reader_a, "presence.join", |p| {
        p["connId"] == wb.as_str()
    })
    .await;
    assert_eq!(join["channel"], "public:room", "{join}");
    assert_eq!(join["identity"], "writer", "{join}");
    assert_eq!(join["client"]["name"], "b-app", "{join}");
    for ws in [&mut reader_a, &mut writer_b] {
        let p = ws
            .call("presence.get", json!({"channel": "public:room"}))
            .await;
        assert_eq!(member_ids(&p), set(&[&ra, &wb]), "{p}");
    }
    // The member on A shows up to B as well.
    reader_a
        .call("unsubscribe", json!({"channels": ["public:room"]}))
        .await;
    let leave = push_where(&mut writer_b, "presence.leave", |p| {
        p["connId"] == ra.as_str()
    })
    .await;
    assert_eq!(leave["channel"], "public:room", "{leave}");
    assert_eq!(leave["identity"], "reader", "{leave}");
    reader_a
        .call("subscribe", json!({"channels": ["public:room"]}))
        .await;
    push_where(&mut writer_b, "presence.join", |p| {
        p["connId"] == ra.as_str()
    })
    .await;
    // Leaving by disconnecting on B.
    writer_b.close().await;
    let leave = push_where(&mut reader_a, "presence.leave", |p| {
        p["connId"] == wb.as_str()
    })
    .await;
    assert_eq!(leave["identity"], "writer", "{leave}");
    let (ok, last) = poll_call(
        &mut admin_a,
        WAIT,
        "presence.get",
        json!({"channel": "public:room"}),
        |r| member_ids(&r["result"]) == set(&[&ra]),
    )
    .await;
    assert!(ok, "the B member left the presence set: {last}");

    // Ticks and status count the whole cluster.
    let _w2 = b.client(WRITER).await;
    let _w3 = b.client(WRITER).await;
    let total = 4; // reader_a, admin_a on A; two writers on B
    let tick = push_where(&mut reader_a, "presence.tick", |p| {
        p["connections"].as_u64().is_some_and(|n| n >= total)
    })
    .await;
    assert_eq!(tick["instances"], 2, "{tick}");
    let st = reader_a.call("status", json!({})).await;
    assert_eq!(
        instance_ids(&st),
        [a.app.instance_id.clone(), b.app.instance_id.clone()]
            .into_iter()
            .collect(),
        "{st}"
    );
    assert_eq!(st["cluster"]["connections"], total, "{st}");
    assert_eq!(st["local"]["connections"], 2, "{st}");
}

// ---------------------------------------------------------------- rate limits

#[tokio::test]
async fn connect_rate_is_shared() {
    let (_redis, s) = cluster(2, |c| {
        c.rate_limits.connect_per_ip = Window::new(3, 60_000);
    })
    .await;
    let (a, b) = (&s[0], &s[1]);
    let _c1 = a.client(READER).await;
    let _c2 = a.client(READER).await;
    let _c3 = b.client(READER).await;
    let bearer = format!("Bearer {READER}");
    for server in [a, b] {
        match Ws::connect_with(&server.url("/ws"), &[("authorization", &bearer)]).await {
            Err(ConnectError::Http(429, retry)) => {
                let retry: u64 = retry
                    .expect("Retry-After")
                    .parse()
                    .expect("Retry-After in seconds");
                assert!(retry > 0 && retry <= 60, "{retry}");
            }
            Err(e) => panic!("expected 429, got {e:?}"),
            Ok(_) => panic!("a 4th upgrade from the IP was accepted"),
        }
    }
}

#[tokio::test]
async fn auth_failures_are_shared() {
    let (_redis, s) = cluster(2, |c| {
        c.rate_limits.auth_failures_per_ip = Window::new(3, 60_000);
    })
    .await;
    let (a, b) = (&s[0], &s[1]);
    let bad = [("authorization", "Bearer wrong-token-0123456789")];
    match Ws::connect_with(&a.url("/ws"), &bad).await {
        Err(ConnectError::Http(401, _)) => {}
        other => panic!("bad upgrade on A: {:?}", other.err()),
    }
    // An in-band failure on B counts too.
    let mut anon = Ws::connect(&b.url("/ws")).await.expect("connects");
    assert_eq!(
        anon.error_code("auth", json!({"token": "wrong-token-0123456789"}))
            .await,
        -32000
    );
    match Ws::connect_with(&b.url("/ws"), &bad).await {
        Err(ConnectError::Http(401, _)) => {}
        other => panic!("bad upgrade on B: {:?}", other.err()),
    }
    // Three failures over A and B: the IP is locked out on both.
    let good = format!("Bearer {ADMIN}");
    for server in [a, b] {
        match Ws::connect_with(&server.url("/ws"), &[("authorization", &good)]).await {
            Err(ConnectError::Http(429, retry)) => {
                assert!(retry.is_some(), "Retry-After");
            }
            other => panic!("expected 429 while locked out: {:?}", other.err()),
        }
    }
    let reply = anon.request("auth", json!({"token": ADMIN})).await;
    assert_eq!(reply["error"]["code"], -32004, "{reply}");
    assert!(
        reply["error"]["data"]["retryAfterMs"]
            .as_u64()
            .is_some_and(|r| r > 0),
        "{reply}"
    );
}

#[tokio::test]
async fn identity_message_rate_is_shared() {
    let (_redis, s) = cluster(2, |c| {
        c.rate_limits.messages_per_conn = Window::new(100_000, 60_000);
        c.rate_limits.messages_per_identity = Window::new(10, 60_000);
    })
    .await;
    let (a, b) = (&s[0], &s[1]);
    let mut on_a = a.client(WRITER).await;
    let mut on_b = b.client(WRITER).await;
    let mut outcomes = Vec::new();
    for i in 0..16 {
        let ws = if i % 2 == 0 { &mut on_a } else { &mut on_b };
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
    assert_eq!(
        outcomes.iter().filter(|ok| **ok).count(),
        10,
        "{outcomes:?}"
    );
    assert!(
        outcomes[..10].iter().all(|ok| *ok),
        "the first 10 pass: {outcomes:?}"
    );
    // Another identity is not affected, on either instance.
    let mut reader = b.client(READER).await;
    assert_eq!(reader.call("ping", json!({})).await["pong"], true);
}

// ---------------------------------------------------------------- notify ingestion

fn publish(redis: &RedisProcess, channel: &str, payload: &str) {
    let topic = format!("sy:notify:{channel}");
    let out = redis.cli(&["PUBLISH", &topic, payload]);
    assert!(out.is_some(), "redis-cli PUBLISH {topic} failed");
}

#[tokio::test]
async fn external_notifications_reach_channel_subscribers() {
    let (redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let mut sub_a = a.client(READER).await;
    let mut sub_b = b.client(WRITER).await;
    let mut other = b.client(READER).await;
    for ws in [&mut sub_a, &mut sub_b] {
        ws.call("subscribe", json!({"channels": ["public:n"]}))
            .await;
    }
    publish(&redis, "public:n", r#"{"event":"e","data":{"x":1}}"#);
    for ws in [&mut sub_a, &mut sub_b] {
        assert_notify(
            &notify_on(ws, "public:n").await,
            "public:n",
            "e",
            &json!({"x": 1}),
        );
        no_notify_on(ws, "public:n", QUIET).await;
    }
    other
        .expect_no_push("notify", Duration::from_millis(50))
        .await;

    // A given timestamp is kept.
    publish(
        &redis,
        "public:n",
        r#"{"event":"t","data":null,"timestamp":123}"#,
    );
    let push = notify_on(&mut sub_b, "public:n").await;
    assert_eq!(push["event"], "t", "{push}");
    assert_eq!(push["timestamp"], 123, "{push}");
    notify_on(&mut sub_a, "public:n").await;

    // Malformed payloads are dropped and do not stop the subscriber.
    let garbage = "g".repeat(100 * 1024);
    for bad in ["not json", "[]", "{}", r#"{"event":5}"#, garbage.as_str()] {
        publish(&redis, "public:n", bad);
    }
    publish(&redis, "public:n", r#"{"event":"after","data":7}"#);
    for ws in [&mut sub_a, &mut sub_b] {
        let push = notify_on(ws, "public:n").await;
        assert_notify(&push, "public:n", "after", &json!(7));
        no_notify_on(ws, "public:n", QUIET).await;
    }
    let (status, _, body) = http(a.addr, "GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    let count: f64 = body
        .lines()
        .find(|l| l.starts_with("switchyard_notify_malformed_total"))
        .unwrap_or_else(|| panic!("switchyard_notify_malformed_total in /metrics:\n{body}"))
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a value");
    // Both instances saw five bad payloads (metrics are process-wide).
    assert!(count >= 10.0, "{count}");
}

#[tokio::test]
async fn external_notifications_to_implicit_audiences() {
    let (redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let mut admin_a = a.client(ADMIN).await;
    let mut reader_a = a.client(READER).await;
    let mut approver_b = b.client(APPROVER).await;
    let mut writer_b = b.client(WRITER).await;
    let mut anon_b = Ws::connect(&b.url("/ws")).await.expect("connects");
    conn_id(&mut anon_b).await;

    // global: every authenticated connection on both instances.
    publish(&redis, "global", r#"{"event":"g","data":1}"#);
    for ws in [&mut admin_a, &mut reader_a, &mut approver_b, &mut writer_b] {
        assert_notify(&notify_on(ws, "global").await, "global", "g", &json!(1));
        no_notify_on(ws, "global", Duration::from_millis(100)).await;
    }
    anon_b.expect_no_push("notify", QUIET).await;

    // approval: approvers (and admins), not readers or writers.
    publish(&redis, "approval", r#"{"event":"ap","data":{"id":9}}"#);
    for ws in [&mut approver_b, &mut admin_a] {
        assert_notify(
            &notify_on(ws, "approval").await,
            "approval",
            "ap",
            &json!({"id": 9}),
        );
    }
    for ws in [&mut reader_a, &mut writer_b] {
        ws.expect_no_push("notify", QUIET).await;
    }
    approver_b
        .expect_no_push("notify", Duration::from_millis(50))
        .await;

    // agent:<sessionId>: only the owner's connection.
    let mut owner_a = a.client(WRITER).await;
    let mut member_b = as_user(b, "alice").await;
    owner_a
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "ag-1"}),
        )
        .await;
    member_b
        .call("session.join", json!({"sessionId": "ag-1"}))
        .await;
    publish(&redis, "agent:ag-1", r#"{"event":"task","data":{"t":1}}"#);
    assert_notify(
        &notify_on(&mut owner_a, "agent:ag-1").await,
        "agent:ag-1",
        "task",
        &json!({"t": 1}),
    );
    no_notify_on(&mut owner_a, "agent:ag-1", QUIET).await;
    member_b
        .expect_no_push("notify", Duration::from_millis(50))
        .await;
    writer_b
        .expect_no_push("notify", Duration::from_millis(50))
        .await;
    // Unknown sessions go nowhere.
    publish(&redis, "agent:nope", r#"{"event":"task"}"#);
    owner_a.expect_no_push("notify", QUIET).await;
}

// ---------------------------------------------------------------- outage

/// Time a call and return (reply, elapsed).
/// Kill Redis (its data is gone) and wait until every instance's `/ready`
/// says 503.
async fn redis_down(redis: &mut RedisProcess, servers: &[TestServer]) {
    redis.kill();
    for (i, server) in servers.iter().enumerate() {
        assert!(
            within(Duration::from_secs(5), || async {
                server.ready_status().await == 503
            })
            .await,
            "instance {i}: /ready turns 503 while Redis is down"
        );
    }
}

/// Start Redis again, empty, and wait until every instance is ready.
async fn redis_back(redis: &mut RedisProcess, servers: &[TestServer]) {
    redis.restart();
    for (i, server) in servers.iter().enumerate() {
        assert!(
            within(Duration::from_secs(10), || async {
                server.ready_status().await == 200
            })
            .await,
            "instance {i}: /ready is 200 after Redis is back"
        );
    }
}

async fn timed(ws: &mut Ws, method: &str, params: Value) -> (Value, Duration) {
    let started = Instant::now();
    let reply = ws.request(method, params).await;
    (reply, started.elapsed())
}

#[tokio::test]
async fn redis_outage_is_survived_on_the_same_sockets() {
    let (mut redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let mut on_a = a.client(ADMIN).await;
    let mut on_b = b.client(READER).await;
    let a_id = conn_id(&mut on_a).await;
    let b_id = conn_id(&mut on_b).await;
    for ws in [&mut on_a, &mut on_b] {
        ws.call("subscribe", json!({"channels": ["public:x"]}))
            .await;
    }
    let r = on_a
        .call(
            "publish",
            json!({"channel": "public:x", "event": "before", "data": 0}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    notify_on(&mut on_b, "public:x").await;
    notify_on(&mut on_a, "public:x").await;

    redis_down(&mut redis, &s).await;
    let (_, _, body) = http(a.addr, "GET", "/ready", &[], None).await;
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["backend"], false, "{body}");
    // Local fan-out keeps working: the subscriber on A gets it, B cannot.
    let (reply, took) = timed(
        &mut on_a,
        "publish",
        json!({"channel": "public:x", "event": "down", "data": 0}),
    )
    .await;
    assert_eq!(reply["result"]["delivered"], 1, "{reply}");
    assert!(took < Duration::from_secs(3), "publish took {took:?}");
    assert_eq!(notify_on(&mut on_a, "public:x").await["event"], "down");
    on_b.expect_no_push("notify", Duration::from_millis(300))
        .await;
    for (method, params) in [
        ("status", json!({})),
        ("session.create", json!({"invite": ["alice", "bob"], })),
    ] {
        let (reply, took) = timed(&mut on_a, method, params).await;
        assert_eq!(reply["error"]["code"], -32005, "{method}: {reply}");
        assert!(took < Duration::from_secs(3), "{method} took {took:?}");
    }
    assert_eq!(on_a.call("ping", json!({})).await["pong"], true);
    assert_eq!(on_b.call("ping", json!({})).await["pong"], true);

    redis_back(&mut redis, &s).await;
    // Presence, instances and subscriptions are re-asserted.
    let long = Duration::from_secs(10);
    let (ok, last) = poll_call(&mut on_a, long, "system.presence", json!({}), |r| {
        r["result"]["clients"].as_array().is_some_and(|c| {
            [&a_id, &b_id]
                .iter()
                .all(|id| c.iter().any(|e| e["connId"] == id.as_str()))
        })
    })
    .await;
    assert!(ok, "system.presence lists both again: {last}");
    let (ok, last) = poll_call(&mut on_a, long, "status", json!({}), |r| {
        r["result"]["cluster"]["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 2)
    })
    .await;
    assert!(ok, "status lists both instances again: {last}");
    assert_eq!(
        instance_ids(&last["result"]),
        [a.app.instance_id.clone(), b.app.instance_id.clone()]
            .into_iter()
            .collect(),
        "{last}"
    );
    let (ok, last) = poll_call(
        &mut on_b,
        long,
        "presence.get",
        json!({"channel": "public:x"}),
        |r| {
            r["result"]["members"]
                .as_array()
                .is_some_and(|m| m.len() == 2)
        },
    )
    .await;
    assert!(ok, "presence of public:x lists both again: {last}");
    let p = on_a
        .call("presence.get", json!({"channel": "public:x"}))
        .await;
    assert_eq!(member_ids(&p), set(&[&a_id, &b_id]), "{p}");

    // Delivery on the same sockets: the subscriber connections come back
    // on their own schedule, so publish until B hears one (bounded).
    on_a.pushed.clear();
    on_b.pushed.clear();
    let started = Instant::now();
    let mut heard = None;
    let mut n = 0;
    while heard.is_none() && started.elapsed() < Duration::from_secs(10) {
        n += 1;
        let r = on_a
            .call(
                "publish",
                json!({"channel": "public:x", "event": format!("retry-{n}"), "data": n}),
            )
            .await;
        assert_eq!(r["delivered"], 2, "{r}");
        heard = tokio::time::timeout(
            Duration::from_millis(300),
            push_where(&mut on_b, "notify", |p| p["channel"] == "public:x"),
        )
        .await
        .ok();
    }
    assert!(
        heard.is_some(),
        "B never heard a publish from A after the outage"
    );
    // From now on: exactly once on each socket.
    tokio::time::sleep(Duration::from_millis(300)).await;
    on_a.pushed.clear();
    on_b.pushed.clear();
    drain(&mut on_a).await;
    drain(&mut on_b).await;
    let r = on_a
        .call(
            "publish",
            json!({"channel": "public:x", "event": "after", "data": 1}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    for ws in [&mut on_b, &mut on_a] {
        assert_notify(
            &notify_on(ws, "public:x").await,
            "public:x",
            "after",
            &json!(1),
        );
        no_notify_on(ws, "public:x", Duration::from_millis(100)).await;
    }
    // Targeted delivery and kicks work again too.
    let r = on_a
        .call(
            "publish",
            json!({"channel": format!("conn:{b_id}"), "event": "c", "data": 2}),
        )
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
    notify_on(&mut on_b, &format!("conn:{b_id}")).await;
}

/// Kill every command connection to Redis (it keeps its data) and wait
/// until `server` has reconnected and re-asserted, with every connection
/// back (a Redis Cluster reconnects node by node).
async fn reconnect(redis: &RedisProcess, server: &TestServer) {
    let round = *server.app.backend.resync_events().borrow();
    assert!(redis.kill_clients("normal") > 0, "killed the connections");
    assert!(
        within(Duration::from_secs(10), || async {
            server
                .app
                .reasserted
                .load(std::sync::atomic::Ordering::SeqCst)
                > round
                && server.ready_status().await == 200
        })
        .await,
        "re-asserted after the reconnect"
    );
}

/// Poll `session.get` from `ws` until the session lists exactly `members`.
async fn session_with_members(ws: &mut Ws, id: &str, members: &[&str]) -> Value {
    let want = set(members);
    let (ok, last) = poll_call(
        ws,
        Duration::from_secs(10),
        "session.get",
        json!({"sessionId": id}),
        |r| {
            r["result"]["members"].as_array().is_some_and(|m| {
                m.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<BTreeSet<_>>()
                    == want
            })
        },
    )
    .await;
    assert!(ok, "session {id} is back with members {want:?}: {last}");
    last["result"].clone()
}

/// Redis restarted empty: the sessions whose owners are still connected
/// come back — same id, owner, metadata (including a patch made on
/// another instance), version and member cap — with every connected
/// member, and work on the same sockets. A session closed before the
/// restart stays closed.
#[tokio::test]
async fn sessions_come_back_after_an_empty_redis_restart() {
    let (mut redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let mut owner = a.client(WRITER).await;
    let mut owner_on_b = b.client(WRITER).await;
    let mut alice = as_user(b, "alice").await;
    let mut bob = as_user(a, "bob").await;
    let owner_id = conn_id(&mut owner).await;
    let alice_id = conn_id(&mut alice).await;
    let bob_id = conn_id(&mut bob).await;

    // x: owned on A, joined from both instances, patched from B.
    owner
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "x", "meta": {"k": 1}, "maxMembers": 3}),
        )
        .await;
    alice.call("session.join", json!({"sessionId": "x"})).await;
    bob.call("session.join", json!({"sessionId": "x"})).await;
    let r = owner_on_b
        .call(
            "session.patch",
            json!({"sessionId": "x", "meta": {"k": 2, "by": "b"}}),
        )
        .await;
    assert_eq!(r["version"], 1, "{r}");
    // The owner's instance has seen the patch made on B.
    let push = owner.expect_push("session.updated").await;
    assert_eq!(push["version"], 1, "{push}");
    // An invitation made on B reaches the owner's copy on A too.
    owner_on_b
        .call(
            "session.invite",
            json!({"sessionId": "x", "identities": ["carol"]}),
        )
        .await;
    let push = owner.expect_push("session.updated").await;
    assert_eq!(push["invited"], json!(["alice", "bob", "carol"]), "{push}");
    // Two events, numbered 1 and 2; the owner's instance sees the second.
    for n in 1..=2 {
        let r = bob
            .call(
                "session.send",
                json!({"sessionId": "x", "event": "before", "data": n}),
            )
            .await;
        assert_eq!(r["offset"], n, "{r}");
    }
    push_where(&mut owner, "session.event", |p| p["offset"] == 2).await;
    // z: owned on B, joined from A. gone: closed before the restart.
    alice
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "z"}),
        )
        .await;
    bob.call("session.join", json!({"sessionId": "z"})).await;
    alice
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "gone"}),
        )
        .await;
    alice
        .call("session.close", json!({"sessionId": "gone"}))
        .await;
    // left: its owner left it, so the owner's instance keeps no copy.
    owner
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "left"}),
        )
        .await;
    owner
        .call("session.leave", json!({"sessionId": "left"}))
        .await;

    redis_down(&mut redis, &s).await;
    redis_back(&mut redis, &s).await;

    let x = session_with_members(&mut alice, "x", &[&owner_id, &alice_id, &bob_id]).await;
    assert_eq!(x["owner"], owner_id.as_str(), "{x}");
    assert_eq!(x["ownerIdentity"], "writer", "{x}");
    assert_eq!(x["meta"], json!({"k": 2, "by": "b"}), "{x}");
    assert_eq!(x["version"], 1, "{x}");
    assert_eq!(x["maxMembers"], 3, "{x}");
    assert_eq!(x["invited"], json!(["alice", "bob", "carol"]), "{x}");
    assert_eq!(x["detachedAt"], Value::Null, "{x}");
    let z = session_with_members(&mut bob, "z", &[&alice_id, &bob_id]).await;
    assert_eq!(z["owner"], alice_id.as_str(), "{z}");
    assert_eq!(
        alice
            .error_code("session.get", json!({"sessionId": "gone"}))
            .await,
        -32001,
        "a closed session stays closed"
    );
    assert_eq!(
        owner
            .error_code("session.get", json!({"sessionId": "left"}))
            .await,
        -32001,
        "a session its owner left is not written back by the owner's instance"
    );

    // The same sockets use them again: events, versions, the member cap.
    for ws in [&mut owner, &mut alice, &mut bob] {
        drain(ws).await;
    }
    let r = alice
        .call(
            "session.send",
            json!({"sessionId": "x", "event": "again", "data": 1}),
        )
        .await;
    assert_eq!(r["delivered"], 3, "{r}");
    // Past where members left off, with room for events numbered before the
    // loss that the owner's instance never saw.
    let resumed = 2 + switchyard::services::sessions::RESTORE_OFFSET_MARGIN + 1;
    assert_eq!(r["offset"], resumed, "numbering goes on past the loss: {r}");
    for ws in [&mut owner, &mut bob, &mut alice] {
        let push = push_where(ws, "session.event", |p| p["sessionId"] == "x").await;
        assert_eq!(push["event"], "again", "{push}");
    }
    // The events from before the restart are gone, and history says so.
    let h = bob.call("session.history", json!({"sessionId": "x"})).await;
    assert_eq!(h["events"].as_array().map(Vec::len), Some(1), "{h}");
    assert_eq!(
        (h["latest"].clone(), h["complete"].clone()),
        (json!(resumed), json!(false))
    );
    // What members had (up to 2) is followed by a gap, then the new event.
    let h = bob
        .call("session.history", json!({"sessionId": "x", "since": 2}))
        .await;
    assert_eq!(h["complete"], false, "{h}");
    let h = bob
        .call(
            "session.history",
            json!({"sessionId": "x", "since": resumed - 1}),
        )
        .await;
    assert_eq!(h["complete"], true, "{h}");
    assert_eq!(offsets_of(&h), [resumed], "{h}");
    let r = owner
        .call(
            "session.patch",
            json!({"sessionId": "x", "meta": {"k": 3}, "baseVersion": 1}),
        )
        .await;
    assert_eq!(r["version"], 2, "{r}");
    let mut carol = as_user(b, "carol").await;
    assert_eq!(
        carol
            .error_code("session.join", json!({"sessionId": "x"}))
            .await,
        -32002,
        "the member cap of 3 came back with the session"
    );
    let l = owner.call("session.list", json!({})).await;
    assert_eq!(listed_ids(&l, "sessions", "sessionId"), set(&["x"]), "{l}");
}

/// A session nobody can write back after an empty restart (its owner had
/// already gone, so no instance holds its record): once `node_ttl` has
/// passed without it coming back, its members hear it is gone.
#[tokio::test]
async fn members_hear_of_sessions_that_did_not_come_back() {
    let (mut redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let mut owner = a.client(WRITER).await;
    let mut alice = as_user(b, "alice").await;
    owner
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "orphan"}),
        )
        .await;
    alice
        .call("session.join", json!({"sessionId": "orphan"}))
        .await;
    owner.close().await;
    let (ok, last) = poll_call(
        &mut alice,
        Duration::from_secs(5),
        "session.get",
        json!({"sessionId": "orphan"}),
        |r| r["result"]["owner"].is_null() && r["result"]["detachedAt"].is_u64(),
    )
    .await;
    assert!(ok, "the owner's departure detached it: {last}");

    redis_down(&mut redis, &s).await;
    redis_back(&mut redis, &s).await;
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        push_where(&mut alice, "session.closed", |p| p["sessionId"] == "orphan"),
    )
    .await
    .expect("session.closed within node_ttl and a margin");
    assert_eq!(closed["reason"], "gone", "{closed}");
    assert_eq!(
        alice
            .error_code("session.get", json!({"sessionId": "orphan"}))
            .await,
        -32001
    );
}

/// A reconnect that lost nothing restores nothing: a session that
/// disappeared from Redis while its instance was connected (as if it was
/// closed while that instance was cut off and missed `session.closed`) is
/// not written back; its local members are told it is gone, and a later
/// real loss does not bring it back either.
#[tokio::test]
async fn a_reconnect_without_data_loss_restores_nothing() {
    let (mut redis, s) = cluster(1, |_| {}).await;
    let a = &s[0];
    let mut owner = a.client(WRITER).await;
    let mut bob = as_user(a, "bob").await;
    let owner_id = conn_id(&mut owner).await;
    owner
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "x"}),
        )
        .await;
    bob.call("session.join", json!({"sessionId": "x"})).await;
    owner
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "kept"}),
        )
        .await;
    redis
        .cli(&["DEL", "sy:{sy}:session:x"])
        .expect("DEL the session record");
    redis
        .cli(&["SREM", "sy:{sy}:sessions", "x"])
        .expect("SREM the session id");
    reconnect(&redis, a).await;
    for ws in [&mut owner, &mut bob] {
        let push = push_where(ws, "session.closed", |p| p["sessionId"] == "x").await;
        assert_eq!(push["reason"], "gone", "{push}");
    }
    let (_, got) = poll_call(
        &mut owner,
        Duration::from_secs(5),
        "session.get",
        json!({"sessionId": "x"}),
        |r| r["error"]["code"] != -32005,
    )
    .await;
    assert_eq!(got["error"]["code"], -32001, "not brought back: {got}");

    // Redis restarted empty: only the session that still existed returns.
    redis_down(&mut redis, &s).await;
    redis_back(&mut redis, &s).await;
    let kept = session_with_members(&mut owner, "kept", &[&owner_id]).await;
    assert_eq!(kept["owner"], owner_id.as_str(), "{kept}");
    assert_eq!(
        owner
            .error_code("session.get", json!({"sessionId": "x"}))
            .await,
        -32001,
        "a session known gone stays gone"
    );
    bob.expect_no_push("session.closed", Duration::from_millis(200))
        .await;
}

/// An instance cut off from Redis for longer than `node_ttl` is reaped:
/// the sessions its clients own are detached (owner gone, resume window
/// running). When it reconnects, owners still on its sockets take their
/// sessions back, so the window does not close them under a live owner.
#[tokio::test]
async fn owners_take_back_sessions_detached_while_cut_off() {
    let (redis, s) = cluster(2, |c| c.limits.resume_window_ms = 3_000).await;
    let (a, b) = (&s[0], &s[1]);
    let mut owner = a.client(WRITER).await;
    let mut alice = as_user(b, "alice").await;
    let owner_id = conn_id(&mut owner).await;
    let alice_id = conn_id(&mut alice).await;
    owner
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "x"}),
        )
        .await;
    alice.call("session.join", json!({"sessionId": "x"})).await;
    // What a reaper on B does to the connections of an instance it takes
    // for dead.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    b.app
        .backend
        .detach_connection(&owner_id, now)
        .await
        .expect("detach");
    let g = alice.call("session.get", json!({"sessionId": "x"})).await;
    assert_eq!(g["owner"], Value::Null, "{g}");

    reconnect(&redis, a).await;
    let x = session_with_members(&mut alice, "x", &[&owner_id, &alice_id]).await;
    assert_eq!(x["owner"], owner_id.as_str(), "{x}");
    assert_eq!(x["detachedAt"], Value::Null, "{x}");
    // Past the resume window it is still open, and delivers.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let r = alice
        .call(
            "session.send",
            json!({"sessionId": "x", "event": "still", "data": 1}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    let push = push_where(&mut owner, "session.event", |p| p["sessionId"] == "x").await;
    assert_eq!(push["event"], "still", "{push}");
    owner
        .expect_no_push("session.closed", Duration::from_millis(50))
        .await;
}

/// Calls `method` with `params(n)` for n = 1..=[`SEAM_EVENTS`] from `ws`
/// in a task of its own, each reply carrying offset n; returns once 20
/// have gone out, with the task.
async fn number_in_background(
    mut ws: Ws,
    method: &'static str,
    params: impl Fn(u64) -> Value + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let progress = sent.clone();
    let task = tokio::spawn(async move {
        for n in 1..=SEAM_EVENTS {
            let r = ws.call(method, params(n)).await;
            assert_eq!(r["offset"], n, "{r}");
            progress.store(n, Ordering::SeqCst);
        }
    });
    let started = within(WAIT, || {
        let n = sent.load(Ordering::SeqCst);
        async move { n >= 20 }
    })
    .await;
    assert!(started, "{method} goes on in the background");
    task
}

/// How many numbered frames a seam test streams.
const SEAM_EVENTS: u64 = 400;

/// The offsets of the next [`SEAM_EVENTS`] pushes `method` that `pred`
/// picks, each carrying its own offset as data; then nothing more.
async fn seam_offsets(
    ws: &mut Ws,
    method: &str,
    pred: impl Fn(&Value) -> bool + Copy,
    replayed: u64,
) {
    let mut offsets = Vec::new();
    while offsets.len() < SEAM_EVENTS as usize {
        let push = push_where(ws, method, pred).await;
        assert_eq!(push["data"], push["offset"], "{push}");
        offsets.push(push["offset"].as_u64().expect("offset"));
    }
    let expected: Vec<u64> = (1..=SEAM_EVENTS).collect();
    assert_eq!(offsets, expected, "replayed {replayed}, then live");
    assert!(
        no_push_where(ws, method, QUIET, pred).await,
        "the socket stays open"
    );
    println!("replayed {replayed} of {SEAM_EVENTS}, the rest live");
}

/// The owner comes back on another instance while a member on a third
/// keeps sending: it gets every event exactly once, in order — those it
/// missed replayed, the rest live, none lost or doubled at the seam.
#[tokio::test]
async fn the_owner_resumes_on_another_instance_without_gap_or_duplicate() {
    let (_redis, s) = cluster(3, |c| c.limits.resume_window_ms = 30_000).await;
    let mut owner = s[0].client(WRITER).await;
    let mut alice = as_user(&s[2], "alice").await;
    let created = owner
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "seam"}),
        )
        .await;
    let token = created["resumeToken"].as_str().expect("token").to_owned();
    alice
        .call("session.join", json!({"sessionId": "seam"}))
        .await;
    owner.close().await;
    assert!(
        detached(&s[2], "seam").await,
        "the owner's disconnect detaches the session"
    );
    let sender = number_in_background(
        alice,
        "session.send",
        |n| json!({"sessionId": "seam", "event": "n", "data": n}),
    )
    .await;
    let mut back = s[1].client(WRITER).await;
    let hello = back
        .call(
            "connect",
            json!({"resume": {"sessionId": "seam", "resumeToken": token}}),
        )
        .await;
    assert_eq!(hello["resume"]["resumed"], true, "{hello}");
    assert_eq!(hello["resume"]["complete"], true, "{hello}");
    let replayed = hello["resume"]["replayed"].as_u64().expect("replayed");
    assert!(replayed >= 20, "{hello}");
    let seam = |p: &Value| p["sessionId"] == "seam";
    seam_offsets(&mut back, "session.event", seam, replayed).await;
    sender.await.expect("sender");
}

/// A subscriber of a channel with history comes back on another instance
/// while a publisher on a third keeps publishing: `recover` gives it every
/// publication exactly once, in order — the missed ones replayed, the rest
/// live.
#[tokio::test]
async fn a_subscriber_recovers_on_another_instance_without_gap_or_duplicate() {
    let (_redis, s) = cluster(3, |c| keep_history(c, 1000)).await;
    let w = s[2].client(WRITER).await;
    let publisher = number_in_background(
        w,
        "publish",
        |n| json!({"channel": "hist:seam", "event": "n", "data": n}),
    )
    .await;
    let mut back = as_user(&s[1], "alice").await;
    let r = back
        .call(
            "subscribe",
            json!({"channels": ["hist:seam"], "recover": {"hist:seam": 0}}),
        )
        .await;
    let recovered = &r["recovered"]["hist:seam"];
    assert_eq!(recovered["complete"], true, "{r}");
    let replayed = recovered["replayed"].as_u64().expect("replayed");
    assert!(replayed >= 20, "{r}");
    let seam = |p: &Value| p["channel"] == "hist:seam";
    seam_offsets(&mut back, "notify", seam, replayed).await;
    publisher.await.expect("publisher");
}

/// Publications made while an instance's subscriber connection was gone
/// (`CLIENT KILL TYPE pubsub`: it reconnects after 50 ms at the soonest)
/// reach its subscribers once it is back, read from the channel's log:
/// every one, once, in order, without the subscriber asking.
#[tokio::test]
async fn publications_missed_while_the_subscriptions_were_gone_are_caught_up() {
    let (redis, s) = cluster(2, |c| keep_history(c, 100)).await;
    let mut sub = s[0].client(WRITER).await;
    sub.call("subscribe", json!({"channels": ["hist:gap"]}))
        .await;
    let mut publisher = s[1].client(WRITER).await;
    let on_gap = |p: &Value| p["channel"] == "hist:gap";
    let publish = |n: u64| json!({"channel": "hist:gap", "event": "n", "data": n});
    publisher.call("publish", publish(0)).await;
    let first = push_where(&mut sub, "notify", on_gap).await;
    let first = first["offset"].as_u64().expect("an offset");

    assert!(
        redis.kill_clients("pubsub") >= 2,
        "both instances subscribe"
    );
    for n in 1..=10 {
        publisher.call("publish", publish(n)).await;
    }
    let mut offsets = Vec::new();
    for n in 1..=10 {
        let push = push_where(&mut sub, "notify", on_gap).await;
        assert_eq!(push["data"], n, "{push}");
        offsets.push(push["offset"].as_u64().expect("an offset"));
    }
    let expected: Vec<u64> = (first + 1..=first + 10).collect();
    assert_eq!(offsets, expected);
    assert!(
        no_push_where(&mut sub, "notify", QUIET, on_gap).await,
        "no duplicate, and the socket stays open"
    );
    // Live again.
    publisher.call("publish", publish(11)).await;
    let live = push_where(&mut sub, "notify", on_gap).await;
    assert_eq!(live["offset"], first + 11, "{live}");
}

/// Read and drop whatever the socket has pending right now.
async fn drain(ws: &mut Ws) {
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), ws.next_json()).await {}
    ws.pushed.clear();
}

/// `/ready` 200 means the instance delivers again: once both instances
/// report ready after Redis came back (empty), a publish reaches the
/// subscribers on both — nothing published after "ready" is lost.
/// With `limits.unready_after_ms`, a Redis outage shorter than the grace
/// leaves `/ready` 200 (`degraded: true`) so a load balancer keeps every
/// instance while each serves its own sockets; past the grace it turns
/// 503; with Redis back it is 200 and not degraded. Local fan-out works
/// throughout.
#[tokio::test]
async fn readiness_has_a_grace_for_redis_blips() {
    let grace = Duration::from_millis(1500);
    let (mut redis, s) = cluster(2, |c| c.limits.unready_after_ms = 1500).await;
    let a = &s[0];
    let mut sub = a.client(WRITER).await;
    sub.call("subscribe", json!({"channels": ["public:g"]}))
        .await;
    let mut publisher = a.client(ADMIN).await;
    let ready = |server: &TestServer| {
        let addr = server.addr;
        async move {
            let (status, _, body) = http(addr, "GET", "/ready", &[], None).await;
            let body: Value = serde_json::from_str(&body).unwrap_or_default();
            (status, body["degraded"] == true)
        }
    };
    assert_eq!(ready(a).await, (200, false));
    // (A first call leases the publisher's frame budget from Redis.)
    publisher
        .call(
            "publish",
            json!({"channel": "public:g", "event": "e", "data": 0}),
        )
        .await;
    push_where(&mut sub, "notify", |p| p["data"] == 0).await;
    redis.kill();
    let down = Instant::now();
    // Degraded yet ready while within the grace.
    assert!(
        within(Duration::from_secs(1), || async {
            ready(a).await == (200, true)
        })
        .await,
        "ready and degraded right after Redis went away"
    );
    publisher
        .call(
            "publish",
            json!({"channel": "public:g", "event": "e", "data": 1}),
        )
        .await;
    push_where(&mut sub, "notify", |p| p["data"] == 1).await;
    // 503 once the grace is over, not before.
    assert!(
        within(Duration::from_secs(5), || async { ready(a).await.0 == 503 }).await,
        "503 after the grace"
    );
    assert!(
        down.elapsed() >= grace - Duration::from_millis(250),
        "503 before the grace ended"
    );
    redis.restart();
    assert!(
        within(Duration::from_secs(10), || async {
            ready(a).await == (200, false)
        })
        .await,
        "ready and not degraded with Redis back"
    );
}

#[tokio::test]
async fn ready_after_redis_restart_means_publishes_are_delivered() {
    let (mut redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let mut on_a = a.client(WRITER).await;
    let mut on_b = b.client(READER).await;
    for ws in [&mut on_a, &mut on_b] {
        ws.call("subscribe", json!({"channels": ["public:r"]}))
            .await;
    }
    for round in 0..3 {
        redis.kill();
        assert!(
            within(Duration::from_secs(5), || async {
                a.ready_status().await == 503 && b.ready_status().await == 503
            })
            .await,
            "round {round}: /ready turns 503"
        );
        redis.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if a.ready_status().await == 200 && b.ready_status().await == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: never ready again"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let event = format!("round-{round}");
        let r = on_a
            .call(
                "publish",
                json!({"channel": "public:r", "event": event, "data": round}),
            )
            .await;
        for (name, ws) in [("B", &mut on_b), ("A", &mut on_a)] {
            let got = tokio::time::timeout(
                Duration::from_secs(2),
                push_where(ws, "notify", |p| p["event"] == event.as_str()),
            )
            .await;
            assert!(
                got.is_ok(),
                "round {round}: a publish made after /ready was 200 on both instances \
                 never reached the subscriber on {name}"
            );
        }
        assert_eq!(
            r["delivered"], 2,
            "round {round}: delivered counts both subscribers once ready: {r}"
        );
    }
}

// ---------------------------------------------------------------- generations

#[tokio::test]
async fn restarted_instance_drops_the_old_runs_connections() {
    let redis = RedisProcess::start();
    let base = cluster_config(&redis);
    let mut fixed = base.clone();
    fixed.instance_id = Some("gen-a".into());
    let a1 = TestServer::start_on(fixed.clone()).await;
    let b = TestServer::start_on(base).await;
    assert_eq!(a1.app.instance_id, "gen-a");

    let mut old1 = a1.client(READER).await;
    let mut old2 = a1.client(WRITER).await;
    let mut watcher = b.client(ADMIN).await;
    let old1_id = conn_id(&mut old1).await;
    let old2_id = conn_id(&mut old2).await;
    let watcher_id = conn_id(&mut watcher).await;
    for ws in [&mut old1, &mut watcher] {
        ws.call("subscribe", json!({"channels": ["public:g"]}))
            .await;
    }
    let list = watcher.call("system.presence", json!({})).await;
    let entries = presence_entries(&list);
    assert_eq!(entries.len(), 3, "{list}");
    let old_generation = entry(&entries, &old1_id).expect("old conn listed")["generation"].clone();
    assert!(old_generation.as_u64().is_some(), "{list}");

    a1.stop().await;
    // The old sockets were told and closed.
    for ws in [&mut old1, &mut old2] {
        assert_eq!(ws.expect_close_code().await, 1012);
    }
    let a2 = TestServer::start_on(fixed).await;
    assert_eq!(a2.app.instance_id, "gen-a");
    let mut new = a2.client(READER).await;
    let new_id = conn_id(&mut new).await;

    let expected = set(&[&watcher_id, &new_id]);
    let (ok, last) = poll_call(&mut watcher, WAIT, "system.presence", json!({}), |r| {
        let ids: BTreeSet<String> = r["result"]["clients"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["connId"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids == expected
    })
    .await;
    assert!(
        ok,
        "presence after the restart is the watcher and the new conn: {last}"
    );
    let last = last["result"].clone();
    let entries = presence_entries(&last);
    let new_entry = entry(&entries, &new_id).expect("new conn");
    assert_eq!(new_entry["nodeId"], "gen-a", "{last}");
    assert_ne!(
        new_entry["generation"], old_generation,
        "a restarted instance runs a new generation: {last}"
    );
    assert!(entry(&entries, &old2_id).is_none(), "{last}");
    let p = watcher
        .call("presence.get", json!({"channel": "public:g"}))
        .await;
    assert_eq!(member_ids(&p), set(&[&watcher_id]), "{p}");
    let st = watcher.call("status", json!({})).await;
    assert_eq!(
        instance_ids(&st),
        ["gen-a".to_owned(), b.app.instance_id.clone()]
            .into_iter()
            .collect(),
        "{st}"
    );
    // The restarted instance is reachable by id.
    let r = watcher
        .call(
            "publish",
            json!({"channel": format!("conn:{new_id}"), "event": "hi", "data": 0}),
        )
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
    notify_on(&mut new, &format!("conn:{new_id}")).await;
}

// ---------------------------------------------------------------- internal errors

/// A record another program corrupted in Redis surfaces as -32603 with a
/// correlation id (never the cause), and the connection keeps working.
#[tokio::test]
async fn corrupt_shared_state_is_an_internal_error() {
    let (redis, s) = cluster(1, |_| {}).await;
    let mut ws = s[0].client(ADMIN).await;
    ws.call(
        "session.create",
        json!({"invite": ["alice", "bob"], "sessionId": "broken"}),
    )
    .await;
    redis
        .cli(&["HSET", "sy:{sy}:session:broken", "data", "{not json"])
        .expect("redis-cli HSET");
    let reply = ws
        .request("session.get", json!({"sessionId": "broken"}))
        .await;
    assert_eq!(reply["error"]["code"], -32603, "{reply}");
    assert_eq!(reply["error"]["message"], "internal error");
    let correlation = reply["error"]["data"]["correlationId"]
        .as_str()
        .expect("a correlation id");
    assert_eq!(correlation.len(), 32);
    assert!(!reply.to_string().contains("not json"), "{reply}");
    assert_eq!(ws.call("ping", json!({})).await["pong"], true);
}

/// The node count of `presence.tick` comes from a set kept beside the
/// presence entries. An id left there without its entry (a write that
/// reached one and not the other) is pruned by the reaper's next scan of
/// the entries, which a change of the instance view (here: an instance
/// joining) brings about, so the count heals.
#[tokio::test]
async fn stray_node_ids_are_pruned_from_the_count() {
    let redis = RedisProcess::start();
    let config = cluster_config(&redis);
    let a = TestServer::start_on(config.clone()).await;
    let mut watcher = a.client(READER).await;
    let _node = a.client(NODE).await;
    push_where(&mut watcher, "presence.tick", |p| p["nodes"] == 1).await;

    redis
        .cli(&["SADD", "sy:{sy}:nodes", "ghost-conn"])
        .expect("redis-cli SADD");
    push_where(&mut watcher, "presence.tick", |p| p["nodes"] == 2).await;
    watcher.pushed.clear();

    let _b = TestServer::start_on(config).await;
    let tick = push_where(&mut watcher, "presence.tick", |p| {
        p["nodes"] == 1 && p["instances"] == 2
    })
    .await;
    assert_eq!(tick["connections"], 2, "{tick}");
    let members = redis
        .cli(&["SMEMBERS", "sy:{sy}:nodes"])
        .unwrap_or_default();
    assert!(!members.contains("ghost-conn"), "{members}");
}

/// Redis sits inside the trust boundary, but garbage written there must
/// not act: a bare `1` on a channel's topic (a "last" flag with no frame,
/// which would drop the channel's subscribers) and frames that are not
/// JSON-RPC are counted and ignored; subscribers keep receiving.
#[tokio::test]
async fn malformed_envelopes_on_redis_are_ignored() {
    let (redis, s) = cluster(2, |_| {}).await;
    let (a, b) = (&s[0], &s[1]);
    let mut sub = a.client(READER).await;
    sub.call("subscribe", json!({"channels": ["public:junk"]}))
        .await;
    let topic = "sy:ch:{public:junk}";
    let command = if redis_cluster_mode() {
        "SPUBLISH"
    } else {
        "PUBLISH"
    };
    for junk in ["1", "0", "0not json", "1{}", "7{\"jsonrpc\":\"2.0\"}"] {
        let out = redis.cli(&[command, topic, junk]);
        assert!(out.is_some(), "redis-cli {command} {topic} failed");
    }
    let mut publisher = b.client(WRITER).await;
    publisher
        .call(
            "publish",
            json!({"channel": "public:junk", "event": "after", "data": 1}),
        )
        .await;
    let got = notify_on(&mut sub, "public:junk").await;
    assert_eq!(got["event"], "after", "{got}");
    no_notify_on(&mut sub, "public:junk", QUIET).await;
}

/// Histories across an empty Redis restart: every reply names the
/// backend's epoch; a reader that gives the epoch its offset belongs to
/// learns the log started over (`epochChanged`, `complete: false`, the new
/// epoch's events from its start) instead of reading a log that looks
/// complete. The same for a subscriber recovering with `recoverEpoch`.
#[tokio::test]
async fn histories_say_when_an_empty_restart_lost_them() {
    let (mut redis, s) = cluster(1, |c| keep_history(c, 100)).await;
    let a = &s[0];
    let mut writer = a.client(WRITER).await;
    for n in 1..=5 {
        writer
            .call(
                "publish",
                json!({"channel": "hist:x", "event": "n", "data": n}),
            )
            .await;
    }
    let before = writer
        .call("history", json!({"channel": "hist:x", "since": 0}))
        .await;
    assert_eq!(before["latest"], 5, "{before}");
    let epoch = before["epoch"].as_str().expect("an epoch").to_owned();
    // Same epoch: an ordinary read.
    let same = writer
        .call(
            "history",
            json!({"channel": "hist:x", "since": 3, "epoch": epoch}),
        )
        .await;
    assert_eq!(same["complete"], true, "{same}");
    assert!(same["epochChanged"].is_null(), "{same}");
    assert_eq!(same["events"].as_array().unwrap().len(), 2, "{same}");

    redis_down(&mut redis, &s).await;
    redis_back(&mut redis, &s).await;
    let mut writer = a.client(WRITER).await;
    for n in 1..=7 {
        writer
            .call(
                "publish",
                json!({"channel": "hist:x", "event": "after", "data": n}),
            )
            .await;
    }
    // Without the epoch, offset 3 of the old log looks like offset 3 of
    // the new one; with it, the loss shows.
    let after = writer
        .call(
            "history",
            json!({"channel": "hist:x", "since": 3, "epoch": epoch}),
        )
        .await;
    assert_ne!(after["epoch"], epoch.as_str(), "{after}");
    assert_eq!(after["epochChanged"], true, "{after}");
    assert_eq!(after["complete"], false, "{after}");
    let events = after["events"].as_array().unwrap();
    assert_eq!(
        events.len(),
        7,
        "the new epoch's events from its start: {after}"
    );
    assert_eq!(events[0]["event"], "after", "{after}");
    // A subscriber recovering from offset 3 of the old epoch.
    let mut late = a.client(WRITER).await;
    let reply = late
        .call(
            "subscribe",
            json!({"channels": ["hist:x"], "recover": {"hist:x": 3}, "recoverEpoch": epoch}),
        )
        .await;
    let recovered = &reply["recovered"]["hist:x"];
    assert_eq!(recovered["epochChanged"], true, "{reply}");
    assert_eq!(recovered["complete"], false, "{reply}");
    assert_eq!(recovered["replayed"], 7, "{reply}");
}
