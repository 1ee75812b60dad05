//! Sessions over real sockets: create / join / leave / get, JSON merge
//! patches with versions, events to every member connection, listing,
//! limits, close, and what happens when the owner goes away.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(250);

async fn create(ws: &mut Ws, id: &str) -> Value {
    ws.call(
        "session.create",
        json!({"invite": ["alice", "bob"], "sessionId": id}),
    )
    .await
}

/// Session ids of a `session.list` reply.
fn ids(list: &Value) -> BTreeSet<String> {
    listed_ids(list, "sessions", "sessionId")
}

/// The next push with `method` for session `id`.
async fn push_for(ws: &mut Ws, method: &str, id: &str) -> Value {
    let push = ws.expect_push(method).await;
    assert_eq!(push["sessionId"], id, "{push}");
    push
}

#[tokio::test]
async fn create_with_generated_and_given_ids() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let w_id = conn_id(&mut w).await;

    let r = w
        .call("session.create", json!({"invite": ["alice", "bob"], }))
        .await;
    let generated = r["sessionId"].as_str().expect("sessionId");
    assert!(!generated.is_empty(), "{r}");
    assert!(
        r["resumeToken"].as_str().is_some_and(|t| !t.is_empty()),
        "{r}"
    );
    assert_eq!(r["version"], 0, "{r}");
    let again = w
        .call("session.create", json!({"invite": ["alice", "bob"], }))
        .await;
    assert_ne!(again["sessionId"], r["sessionId"], "ids are unique");

    let r = w
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "s-1", "meta": {"topic": "t", "n": 1}}),
        )
        .await;
    assert_eq!(r["sessionId"], "s-1");
    assert_eq!(r["version"], 0);

    let g = w.call("session.get", json!({"sessionId": "s-1"})).await;
    assert_eq!(g["sessionId"], "s-1", "{g}");
    assert_eq!(g["owner"], w_id.as_str(), "{g}");
    assert_eq!(g["ownerIdentity"], "writer", "{g}");
    assert_eq!(g["members"], json!([w_id]), "{g}");
    assert_eq!(g["memberIdentities"], json!(["writer"]), "{g}");
    assert_eq!(g["meta"], json!({"topic": "t", "n": 1}), "{g}");
    assert_eq!(g["version"], 0, "{g}");
    assert_eq!(g["maxMembers"], 100, "{g}");
    assert!(g["createdAt"].as_u64().is_some_and(|t| t > 0), "{g}");
    assert!(g["updatedAt"].as_u64().is_some_and(|t| t > 0), "{g}");
    assert!(g["detachedAt"].is_null(), "{g}");
    assert!(
        g.get("resumeToken").is_none(),
        "the resume token is secret: {g}"
    );

    // Duplicates conflict, also from another identity.
    assert_eq!(
        w.error_code(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "s-1"})
        )
        .await,
        -32007
    );
    let mut alice = as_user(&server, "alice").await;
    assert_eq!(
        alice
            .error_code(
                "session.create",
                json!({"invite": ["alice", "bob"], "sessionId": "s-1"})
            )
            .await,
        -32007
    );
    // Bad ids and params.
    for bad in ["a b", "", "with/slash", &"x".repeat(129)] {
        let reply = w
            .request(
                "session.create",
                json!({"invite": ["alice", "bob"], "sessionId": bad}),
            )
            .await;
        assert_eq!(reply["error"]["code"], -32602, "{bad:?}: {reply}");
    }
    assert_eq!(
        w.error_code(
            "session.create",
            json!({"invite": ["alice", "bob"], "meta": "not an object"})
        )
        .await,
        -32602
    );
    assert_eq!(
        w.error_code(
            "session.create",
            json!({"invite": ["alice", "bob"], "maxMembers": 0})
        )
        .await,
        -32602
    );
    // Scopes: a reader cannot create.
    let mut reader = server.client(READER).await;
    assert_eq!(
        reader
            .error_code("session.create", json!({"invite": ["alice", "bob"], }))
            .await,
        -32003
    );
}

#[tokio::test]
async fn join_leave_and_get() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let mut alice = as_user(&server, "alice").await;
    let mut reader = server.client(READER).await;
    let w_id = conn_id(&mut w).await;
    let a_id = conn_id(&mut alice).await;
    create(&mut w, "room").await;

    let r = alice
        .call("session.join", json!({"sessionId": "room"}))
        .await;
    assert_eq!(r["sessionId"], "room", "{r}");
    assert_eq!(r["members"], json!([w_id, a_id]), "{r}");
    assert_eq!(r["memberIdentities"], json!(["writer", "alice"]), "{r}");
    // Joining twice changes nothing.
    let r = alice
        .call("session.join", json!({"sessionId": "room"}))
        .await;
    assert_eq!(r["members"], json!([w_id, a_id]), "{r}");

    // Members look; an outsider is told there is no such session.
    let g = alice
        .call("session.get", json!({"sessionId": "room"}))
        .await;
    assert_eq!(g["members"], json!([w_id, a_id]), "{g}");
    assert_eq!(g["owner"], w_id.as_str(), "{g}");
    assert_eq!(
        reader
            .error_code("session.get", json!({"sessionId": "room"}))
            .await,
        -32001
    );
    assert_eq!(
        reader
            .error_code("session.join", json!({"sessionId": "room"}))
            .await,
        -32003
    );

    let r = alice
        .call("session.leave", json!({"sessionId": "room"}))
        .await;
    assert_eq!(r["left"], true, "{r}");
    let g = w.call("session.get", json!({"sessionId": "room"})).await;
    assert_eq!(g["members"], json!([w_id]), "{g}");
    assert_eq!(g["memberIdentities"], json!(["writer"]), "{g}");
    // Leaving again: not a member.
    let r = alice
        .call("session.leave", json!({"sessionId": "room"}))
        .await;
    assert_eq!(r["left"], false, "{r}");

    // A member that disconnects is dropped from the member list.
    alice
        .call("session.join", json!({"sessionId": "room"}))
        .await;
    alice.close().await;
    let mut dropped = false;
    for _ in 0..100 {
        let g = w.call("session.get", json!({"sessionId": "room"})).await;
        if g["members"] == json!([w_id]) {
            assert_eq!(g["memberIdentities"], json!(["writer"]), "{g}");
            assert!(g["detachedAt"].is_null(), "the owner is still here: {g}");
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dropped, "the disconnected member left the session");
}

#[tokio::test]
async fn patch_merges_and_versions() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let mut alice = as_user(&server, "alice").await;
    w.call(
        "session.create",
        json!({"invite": ["alice", "bob"], "sessionId": "p", "meta": {"a": {"x": 1, "y": 2}, "b": 1, "c": "keep"}}),
    )
    .await;
    alice.call("session.join", json!({"sessionId": "p"})).await;

    let r = w
        .call(
            "session.patch",
            json!({"sessionId": "p", "meta": {"a": {"y": null, "z": 3}, "b": null, "d": [1]}}),
        )
        .await;
    let expected = json!({"a": {"x": 1, "z": 3}, "c": "keep", "d": [1]});
    assert_eq!(r["version"], 1, "{r}");
    assert_eq!(r["meta"], expected, "{r}");
    for ws in [&mut alice, &mut w] {
        let push = push_for(ws, "session.updated", "p").await;
        assert_eq!(push["version"], 1, "{push}");
        assert_eq!(push["meta"], expected, "{push}");
        ws.expect_no_push("session.updated", Duration::from_millis(50))
            .await;
    }
    let g = alice.call("session.get", json!({"sessionId": "p"})).await;
    assert_eq!(g["meta"], expected, "{g}");
    assert_eq!(g["version"], 1, "{g}");

    // Optimistic concurrency.
    let reply = w
        .request(
            "session.patch",
            json!({"sessionId": "p", "meta": {"c": 2}, "baseVersion": 0}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32007, "{reply}");
    let r = w
        .call(
            "session.patch",
            json!({"sessionId": "p", "meta": {"c": 2}, "baseVersion": 1}),
        )
        .await;
    assert_eq!(r["version"], 2, "{r}");
    assert_eq!(r["meta"]["c"], 2, "{r}");
    let push = push_for(&mut alice, "session.updated", "p").await;
    assert_eq!(push["version"], 2, "{push}");

    // A member that is neither the owner nor an admin may not patch.
    let reply = alice
        .request("session.patch", json!({"sessionId": "p", "meta": {"c": 3}}))
        .await;
    assert_eq!(reply["error"]["code"], -32003, "{reply}");
    // Another connection of the owner's identity may.
    let mut w2 = server.client(WRITER).await;
    let r = w2
        .call(
            "session.patch",
            json!({"sessionId": "p", "meta": {"e": true}}),
        )
        .await;
    assert_eq!(r["version"], 3, "{r}");
    // So may an admin that is not a member.
    let mut admin = server.client(ADMIN).await;
    let r = admin
        .call(
            "session.patch",
            json!({"sessionId": "p", "meta": {"e": null}, "baseVersion": 3}),
        )
        .await;
    assert_eq!(r["version"], 4, "{r}");
    // The refused patch changed nothing.
    let g = w.call("session.get", json!({"sessionId": "p"})).await;
    assert_eq!(
        g["meta"],
        json!({"a": {"x": 1, "z": 3}, "c": 2, "d": [1]}),
        "{g}"
    );
    assert_eq!(g["version"], 4, "{g}");
    // Non-members get no updates.
    w2.expect_no_push("session.updated", QUIET).await;
}

#[tokio::test]
async fn send_reaches_every_member_connection() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let mut alice1 = as_user(&server, "alice").await;
    let mut alice2 = as_user(&server, "alice").await;
    let mut bob = as_user(&server, "bob").await;
    let w_id = conn_id(&mut w).await;
    let a1_id = conn_id(&mut alice1).await;
    create(&mut w, "chat").await;
    alice1
        .call("session.join", json!({"sessionId": "chat"}))
        .await;
    alice2
        .call("session.join", json!({"sessionId": "chat"}))
        .await;

    let r = w
        .call(
            "session.send",
            json!({"sessionId": "chat", "event": "msg", "data": {"t": "hi"}}),
        )
        .await;
    assert_eq!(r["delivered"], 3, "{r}");
    for ws in [&mut w, &mut alice1, &mut alice2] {
        let push = push_for(ws, "session.event", "chat").await;
        assert_eq!(push["event"], "msg", "{push}");
        assert_eq!(push["data"], json!({"t": "hi"}), "{push}");
        assert_eq!(push["from"]["connId"], w_id.as_str(), "{push}");
        assert_eq!(push["from"]["identity"], "writer", "{push}");
        assert!(push["timestamp"].as_u64().is_some_and(|t| t > 0), "{push}");
        ws.expect_no_push("session.event", Duration::from_millis(50))
            .await;
    }
    bob.expect_no_push("session.event", Duration::from_millis(50))
        .await;

    // A member sends too.
    alice1
        .call(
            "session.send",
            json!({"sessionId": "chat", "event": "re", "data": 1}),
        )
        .await;
    let push = push_for(&mut w, "session.event", "chat").await;
    assert_eq!(push["from"]["connId"], a1_id.as_str(), "{push}");
    assert_eq!(push["from"]["identity"], "alice", "{push}");

    // A non-member may not send.
    let code = bob
        .error_code("session.send", json!({"sessionId": "chat", "event": "x"}))
        .await;
    assert_eq!(code, -32003);
    // Neither may a member that left.
    alice2
        .call("session.leave", json!({"sessionId": "chat"}))
        .await;
    alice2.pushed.clear();
    let code = alice2
        .error_code("session.send", json!({"sessionId": "chat", "event": "x"}))
        .await;
    assert_eq!(code, -32003);
    let r = w
        .call(
            "session.send",
            json!({"sessionId": "chat", "event": "after", "data": 0}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    alice2.expect_no_push("session.event", QUIET).await;
    bob.expect_no_push("session.event", Duration::from_millis(50))
        .await;
}

#[tokio::test]
async fn plural_aliases() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let mut alice = as_user(&server, "alice").await;
    let r = w
        .call(
            "sessions.create",
            json!({"invite": ["alice", "bob"], "sessionId": "alias"}),
        )
        .await;
    assert_eq!(r["sessionId"], "alias");
    alice
        .call("sessions.join", json!({"sessionId": "alias"}))
        .await;
    let r = w
        .call(
            "sessions.send",
            json!({"sessionId": "alias", "event": "e", "data": 1}),
        )
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    push_for(&mut alice, "session.event", "alias").await;
    let list = w.call("sessions.list", json!({})).await;
    assert_eq!(ids(&list), set(&["alias"]));
    let r = w
        .call(
            "sessions.patch",
            json!({"sessionId": "alias", "meta": {"k": 1}}),
        )
        .await;
    assert_eq!(r["version"], 1, "{r}");
    let g = alice
        .call("sessions.get", json!({"sessionId": "alias"}))
        .await;
    assert_eq!(g["meta"], json!({"k": 1}), "{g}");
    alice
        .call("sessions.leave", json!({"sessionId": "alias"}))
        .await;
    w.call("sessions.close", json!({"sessionId": "alias"}))
        .await;
    assert_eq!(
        w.error_code("sessions.get", json!({"sessionId": "alias"}))
            .await,
        -32001
    );
    assert_eq!(w.error_code("sessions.nope", json!({})).await, -32601);
}

#[tokio::test]
async fn list_shows_own_and_joined_sessions_all_for_admin() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let mut alice = as_user(&server, "alice").await;
    let mut bob = as_user(&server, "bob").await;
    let mut reader = server.client(READER).await;
    let mut admin = server.client(ADMIN).await;
    create(&mut w, "s-w").await;
    create(&mut alice, "s-a").await;
    create(&mut bob, "s-b").await;
    alice
        .call("session.join", json!({"sessionId": "s-w"}))
        .await;

    assert_eq!(ids(&w.call("session.list", json!({})).await), set(&["s-w"]));
    assert_eq!(
        ids(&alice.call("session.list", json!({})).await),
        set(&["s-w", "s-a"])
    );
    assert_eq!(
        ids(&bob.call("session.list", json!({})).await),
        set(&["s-b"])
    );
    assert_eq!(ids(&reader.call("session.list", json!({})).await), set(&[]));
    assert_eq!(
        ids(&admin.call("session.list", json!({})).await),
        set(&["s-w", "s-a", "s-b"])
    );
    // Another connection of an identity sees that identity's sessions.
    let mut w2 = server.client(WRITER).await;
    assert_eq!(
        ids(&w2.call("session.list", json!({})).await),
        set(&["s-w"])
    );
    // After leaving, alice no longer sees s-w.
    alice
        .call("session.leave", json!({"sessionId": "s-w"}))
        .await;
    assert_eq!(
        ids(&alice.call("session.list", json!({})).await),
        set(&["s-a"])
    );
}

#[tokio::test]
async fn owned_sessions_limit_is_per_connection() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    for i in 0..5 {
        create(&mut w, &format!("own-{i}")).await;
    }
    let reply = w
        .request(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "own-5"}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    assert_eq!(
        w.error_code("session.create", json!({"invite": ["alice", "bob"], }))
            .await,
        -32002
    );
    // The refused session does not exist.
    assert_eq!(
        w.error_code("session.get", json!({"sessionId": "own-5"}))
            .await,
        -32001
    );
    // Another connection of the same identity has its own allowance.
    let mut w2 = server.client(WRITER).await;
    create(&mut w2, "own-5").await;
    // Closing one frees a slot.
    w.call("session.close", json!({"sessionId": "own-0"})).await;
    create(&mut w, "own-6").await;
    assert_eq!(
        w.error_code("session.create", json!({"invite": ["alice", "bob"], }))
            .await,
        -32002
    );
}

#[tokio::test]
async fn member_limit() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let mut alice = as_user(&server, "alice").await;
    let mut bob = as_user(&server, "bob").await;
    let r = w
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "pair", "maxMembers": 2}),
        )
        .await;
    assert_eq!(r["sessionId"], "pair");
    alice
        .call("session.join", json!({"sessionId": "pair"}))
        .await;
    let reply = bob
        .request("session.join", json!({"sessionId": "pair"}))
        .await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    let g = w.call("session.get", json!({"sessionId": "pair"})).await;
    assert_eq!(g["maxMembers"], 2, "{g}");
    assert_eq!(g["members"].as_array().map(Vec::len), Some(2), "{g}");
    // The refused joiner gets no events.
    w.call("session.send", json!({"sessionId": "pair", "event": "e"}))
        .await;
    bob.expect_no_push("session.event", QUIET).await;
    // A slot freed by leaving can be taken.
    alice
        .call("session.leave", json!({"sessionId": "pair"}))
        .await;
    bob.call("session.join", json!({"sessionId": "pair"})).await;
}

#[tokio::test]
async fn unknown_sessions_are_not_found() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let calls = [
        ("session.get", json!({"sessionId": "nope"})),
        ("session.join", json!({"sessionId": "nope"})),
        ("session.send", json!({"sessionId": "nope", "event": "e"})),
        (
            "session.patch",
            json!({"sessionId": "nope", "meta": {"a": 1}}),
        ),
        ("session.close", json!({"sessionId": "nope"})),
    ];
    for (method, params) in calls {
        let reply = w.request(method, params).await;
        assert_eq!(reply["error"]["code"], -32001, "{method}: {reply}");
    }
    // An admin gets the same answer.
    let mut admin = server.client(ADMIN).await;
    let reply = admin
        .request("session.send", json!({"sessionId": "nope", "event": "e"}))
        .await;
    assert_eq!(reply["error"]["code"], -32001, "{reply}");
}

#[tokio::test]
async fn close_by_owner_tells_members() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let mut alice = as_user(&server, "alice").await;
    create(&mut w, "c").await;
    alice.call("session.join", json!({"sessionId": "c"})).await;

    // A member that is not the owner may not close.
    assert_eq!(
        alice
            .error_code("session.close", json!({"sessionId": "c"}))
            .await,
        -32003
    );
    let r = w.call("session.close", json!({"sessionId": "c"})).await;
    assert_eq!(r["closed"], true, "{r}");
    for ws in [&mut alice, &mut w] {
        let push = push_for(ws, "session.closed", "c").await;
        assert_eq!(push["reason"], "closed", "{push}");
        ws.expect_no_push("session.closed", Duration::from_millis(50))
            .await;
    }
    for ws in [&mut alice, &mut w] {
        assert_eq!(
            ws.error_code("session.get", json!({"sessionId": "c"}))
                .await,
            -32001
        );
        assert_eq!(
            ws.error_code("session.send", json!({"sessionId": "c", "event": "e"}))
                .await,
            -32001
        );
        assert_eq!(
            ws.error_code("session.close", json!({"sessionId": "c"}))
                .await,
            -32001
        );
    }
    assert_eq!(ids(&alice.call("session.list", json!({})).await), set(&[]));

    // The id is free again; the old members hear nothing of the new one.
    let mut bob = as_user(&server, "bob").await;
    create(&mut bob, "c").await;
    bob.call("session.send", json!({"sessionId": "c", "event": "new"}))
        .await;
    alice.expect_no_push("session.event", QUIET).await;
    w.expect_no_push("session.event", Duration::from_millis(50))
        .await;

    // An admin may close a session it is not part of.
    let mut admin = server.client(ADMIN).await;
    admin.call("session.close", json!({"sessionId": "c"})).await;
    let push = push_for(&mut bob, "session.closed", "c").await;
    assert_eq!(push["reason"], "closed", "{push}");
}

#[tokio::test]
async fn owner_disconnect_detaches_then_closes() {
    let mut config = config();
    config.limits.resume_window_ms = 300;
    let server = TestServer::start(config).await;
    let mut w = server.client(WRITER).await;
    let mut alice = as_user(&server, "alice").await;
    let a_id = conn_id(&mut alice).await;
    create(&mut w, "o").await;
    alice.call("session.join", json!({"sessionId": "o"})).await;
    w.close().await;

    // Detached first: no owner connection, detachedAt set, the member stays.
    let mut detached = None;
    for _ in 0..100 {
        let reply = alice
            .request("session.get", json!({"sessionId": "o"}))
            .await;
        assert!(
            reply.get("error").is_none(),
            "closed before it was seen detached: {reply}"
        );
        let g = reply["result"].clone();
        if !g["detachedAt"].is_null() {
            detached = Some(g);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let g = detached.expect("detachedAt is set after the owner disconnects");
    assert!(g["detachedAt"].as_u64().is_some_and(|t| t > 0), "{g}");
    assert!(g["owner"].is_null(), "{g}");
    assert_eq!(g["ownerIdentity"], "writer", "{g}");
    assert_eq!(g["members"], json!([a_id]), "{g}");

    // Then closed after the resume window.
    let push = push_for(&mut alice, "session.closed", "o").await;
    assert_eq!(push["reason"], "owner gone", "{push}");
    assert_eq!(
        alice
            .error_code("session.get", json!({"sessionId": "o"}))
            .await,
        -32001
    );
    assert_eq!(
        alice
            .error_code("session.send", json!({"sessionId": "o", "event": "e"}))
            .await,
        -32001
    );
}

#[tokio::test]
async fn sessions_whose_owner_stays_are_not_closed() {
    let mut config = config();
    config.limits.resume_window_ms = 300;
    let server = TestServer::start(config).await;
    let mut w = server.client(WRITER).await;
    let mut alice = as_user(&server, "alice").await;
    create(&mut w, "stay").await;
    alice
        .call("session.join", json!({"sessionId": "stay"}))
        .await;
    // A member leaving (by disconnect) does not end it.
    alice.close().await;
    w.expect_no_push("session.closed", Duration::from_millis(1500))
        .await;
    let g = w.call("session.get", json!({"sessionId": "stay"})).await;
    assert!(g["detachedAt"].is_null(), "{g}");
}

/// The offsets of `session.event` pushes for session `id`, in arrival
/// order, until `n` have arrived.
async fn event_offsets(ws: &mut Ws, id: &str, n: usize) -> Vec<u64> {
    let mut offsets = Vec::new();
    while offsets.len() < n {
        let push = push_for(ws, "session.event", id).await;
        offsets.push(push["offset"].as_u64().expect("offset"));
    }
    offsets
}

async fn send(ws: &mut Ws, id: &str, n: u64) -> Value {
    ws.call(
        "session.send",
        json!({"sessionId": id, "event": "e", "data": {"n": n}}),
    )
    .await
}

#[tokio::test]
async fn events_are_numbered_and_kept() {
    let mut config = config();
    config.limits.session_history = 4;
    let server = TestServer::start(config).await;
    let mut w = server.client(WRITER).await;
    let mut alice = as_user(&server, "alice").await;
    let mut bob = as_user(&server, "bob").await;
    create(&mut w, "log").await;
    alice
        .call("session.join", json!({"sessionId": "log"}))
        .await;
    for n in 1..=3 {
        let r = send(&mut w, "log", n).await;
        assert_eq!(r["offset"], n, "{r}");
    }
    assert_eq!(event_offsets(&mut alice, "log", 3).await, [1, 2, 3]);

    let h = alice
        .call("session.history", json!({"sessionId": "log"}))
        .await;
    assert_eq!(h["latest"], 3, "{h}");
    assert_eq!(h["complete"], true, "{h}");
    assert_eq!(h["more"], false, "{h}");
    assert_eq!(offsets_of(&h), [1, 2, 3], "{h}");
    assert_eq!(h["events"][1]["data"], json!({"n": 2}), "{h}");
    assert_eq!(h["events"][1]["from"]["identity"], "writer", "{h}");
    // A page after an offset, and a short page that says more follow.
    let h = alice
        .call(
            "session.history",
            json!({"sessionId": "log", "since": 1, "limit": 1}),
        )
        .await;
    assert_eq!(h["events"][0]["offset"], 2, "{h}");
    assert_eq!(h["events"].as_array().map(Vec::len), Some(1), "{h}");
    assert_eq!(
        (h["complete"].clone(), h["more"].clone()),
        (json!(true), json!(true))
    );

    // The log keeps the newest 4: a reader from before them hears of the hole.
    for n in 4..=6 {
        send(&mut w, "log", n).await;
    }
    let h = w.call("session.history", json!({"sessionId": "log"})).await;
    assert_eq!(offsets_of(&h), [3, 4, 5, 6], "{h}");
    assert_eq!(h["complete"], false, "1 and 2 were trimmed: {h}");
    let h = w
        .call("session.history", json!({"sessionId": "log", "since": 2}))
        .await;
    assert_eq!(h["complete"], true, "{h}");
    // An offset from nowhere is answered, not choked on.
    let h = w
        .call(
            "session.history",
            json!({"sessionId": "log", "since": u64::MAX}),
        )
        .await;
    assert_eq!(
        (h["events"].clone(), h["complete"].clone()),
        (json!([]), json!(false))
    );

    // Members only; bad limits are refused.
    assert_eq!(
        bob.error_code("session.history", json!({"sessionId": "log"}))
            .await,
        -32003
    );
    assert_eq!(
        alice
            .error_code("session.history", json!({"sessionId": "log", "limit": 0}))
            .await,
        -32602
    );
    assert_eq!(
        alice
            .error_code("session.history", json!({"sessionId": "nope"}))
            .await,
        -32001
    );
}

#[tokio::test]
async fn the_owner_resumes_on_a_new_connection_with_what_it_missed() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let mut alice = as_user(&server, "alice").await;
    let created = create(&mut w, "r").await;
    let token = created["resumeToken"].as_str().expect("token").to_owned();
    alice.call("session.join", json!({"sessionId": "r"})).await;
    send(&mut alice, "r", 1).await;
    assert_eq!(event_offsets(&mut w, "r", 1).await, [1]);
    w.close().await;
    // Detached; the member carries on.
    assert!(
        detached(&server, "r").await,
        "the owner's disconnect detaches the session"
    );
    for n in 2..=3 {
        send(&mut alice, "r", n).await;
    }

    let mut back = server.client(WRITER).await;
    let back_id = conn_id(&mut back).await;
    let hello = back
        .call(
            "connect",
            json!({"resume": {"sessionId": "r", "resumeToken": token, "offset": 1}}),
        )
        .await;
    let resume = &hello["resume"];
    assert_eq!(resume["resumed"], true, "{hello}");
    assert_eq!(resume["replayed"], 2, "{hello}");
    assert_eq!(resume["latest"], 3, "{hello}");
    assert_eq!(resume["complete"], true, "{hello}");
    assert_eq!(resume["session"]["owner"], back_id.as_str(), "{hello}");
    assert!(resume["session"]["detachedAt"].is_null(), "{hello}");
    assert!(resume["session"].get("resumeToken").is_none(), "{hello}");
    // The missed events came first, in order, and live ones follow.
    assert_eq!(event_offsets(&mut back, "r", 2).await, [2, 3]);
    send(&mut alice, "r", 4).await;
    assert_eq!(event_offsets(&mut back, "r", 1).await, [4]);
    back.expect_no_push("session.event", QUIET).await;
    let g = alice.call("session.get", json!({"sessionId": "r"})).await;
    assert_eq!(g["owner"], back_id.as_str(), "{g}");
    assert!(
        g["members"]
            .as_array()
            .is_some_and(|m| m.contains(&json!(back_id)))
    );

    // Resuming again from the same socket is a no-op with nothing missed.
    let again = back
        .call(
            "session.resume",
            json!({"sessionId": "r", "resumeToken": token, "offset": 4}),
        )
        .await;
    assert_eq!(
        (again["replayed"].clone(), again["complete"].clone()),
        (json!(0), json!(true))
    );
    back.expect_no_push("session.event", QUIET).await;
}

#[tokio::test]
async fn resume_needs_the_token_and_the_owner_identity() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let w_id = conn_id(&mut w).await;
    let created = create(&mut w, "t").await;
    let token = created["resumeToken"].as_str().expect("token").to_owned();

    // A wrong token: the handshake succeeds, the resume does not.
    let mut other = server.client(WRITER).await;
    let hello = other
        .call(
            "connect",
            json!({"resume": {"sessionId": "t", "resumeToken": "guess"}}),
        )
        .await;
    assert_eq!(hello["authenticated"], true, "{hello}");
    assert_eq!(hello["resume"]["resumed"], false, "{hello}");
    assert_eq!(hello["resume"]["error"]["code"], -32003, "{hello}");
    // Another identity with the right token.
    let mut mallory = as_user(&server, "mallory").await;
    let params = json!({"sessionId": "t", "resumeToken": token});
    assert_eq!(
        mallory.error_code("session.resume", params.clone()).await,
        -32003
    );
    // A reader may not take ownership.
    let mut reader = server.client(READER).await;
    let hello = reader
        .call("connect", json!({"resume": params.clone()}))
        .await;
    assert_eq!(hello["resume"]["error"]["code"], -32003, "{hello}");
    // Unknown sessions, missing fields.
    assert_eq!(
        other
            .error_code(
                "session.resume",
                json!({"sessionId": "none", "resumeToken": token})
            )
            .await,
        -32001
    );
    assert_eq!(
        other
            .error_code("session.resume", json!({"sessionId": "t"}))
            .await,
        -32602
    );
    let g = w.call("session.get", json!({"sessionId": "t"})).await;
    assert_eq!(g["owner"], w_id.as_str(), "nothing changed hands: {g}");
}

#[tokio::test]
async fn resume_takes_over_from_an_owner_socket_still_attached() {
    let server = TestServer::default().await;
    let mut old = server.client(WRITER).await;
    let old_id = conn_id(&mut old).await;
    let created = create(&mut old, "h").await;
    let token = created["resumeToken"].as_str().expect("token").to_owned();
    let mut new = server.client(WRITER).await;
    let new_id = conn_id(&mut new).await;
    let r = new
        .call(
            "session.resume",
            json!({"sessionId": "h", "resumeToken": token}),
        )
        .await;
    assert_eq!(r["resumed"], true, "{r}");
    let g = new.call("session.get", json!({"sessionId": "h"})).await;
    assert_eq!(g["owner"], new_id.as_str(), "{g}");
    let members: BTreeSet<String> = g["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        members,
        set(&[&old_id, &new_id]),
        "the old socket stays a member"
    );
    // Both hear events; the old socket closing no longer detaches it.
    send(&mut new, "h", 1).await;
    assert_eq!(event_offsets(&mut old, "h", 1).await, [1]);
    old.close().await;
    tokio::time::sleep(QUIET).await;
    let g = new.call("session.get", json!({"sessionId": "h"})).await;
    assert_eq!(g["owner"], new_id.as_str(), "{g}");
    assert!(g["detachedAt"].is_null(), "{g}");
}

/// Joining takes the session's rule: its owner's identity, an identity
/// already a member, an invited identity, anyone when the owner opened it,
/// or an admin. Outsiders see nothing of it (get, history, list).
#[tokio::test]
async fn joining_needs_an_invitation() {
    let server = TestServer::default().await;
    let mut w = server.client(WRITER).await;
    let mut carol = as_user(&server, "carol").await;
    let mut dave = as_user(&server, "dave").await;
    let mut admin = server.client(ADMIN).await;
    w.call("session.create", json!({"sessionId": "closed"}))
        .await;
    send(&mut w, "closed", 1).await;

    // An outsider may neither join nor look.
    assert_eq!(
        carol
            .error_code("session.join", json!({"sessionId": "closed"}))
            .await,
        -32003
    );
    assert_eq!(
        carol
            .error_code("session.get", json!({"sessionId": "closed"}))
            .await,
        -32001
    );
    assert_eq!(
        carol
            .error_code("session.history", json!({"sessionId": "closed"}))
            .await,
        -32003
    );
    let l = carol.call("session.list", json!({})).await;
    assert_eq!(l["count"], 0, "{l}");
    // Only the owner invites.
    assert_eq!(
        dave.error_code(
            "session.invite",
            json!({"sessionId": "closed", "identities": ["dave"]})
        )
        .await,
        -32003
    );
    for bad in [json!([]), json!(["a\nb"]), json!([""])] {
        let reply = w
            .request(
                "session.invite",
                json!({"sessionId": "closed", "identities": bad}),
            )
            .await;
        assert_eq!(reply["error"]["code"], -32602, "{reply}");
    }
    let r = w
        .call(
            "session.invite",
            json!({"sessionId": "closed", "identities": ["carol"]}),
        )
        .await;
    assert_eq!(r["invited"], json!(["carol"]), "{r}");
    let r = carol
        .call("session.join", json!({"sessionId": "closed"}))
        .await;
    assert_eq!(r["memberIdentities"], json!(["writer", "carol"]), "{r}");
    let h = carol
        .call("session.history", json!({"sessionId": "closed"}))
        .await;
    assert_eq!(h["events"].as_array().map(Vec::len), Some(1), "{h}");
    // The owner's identity joins from another connection; an admin joins
    // anything; dave is still out.
    let mut w2 = server.client(WRITER).await;
    w2.call("session.join", json!({"sessionId": "closed"}))
        .await;
    admin
        .call("session.join", json!({"sessionId": "closed"}))
        .await;
    assert_eq!(
        dave.error_code("session.join", json!({"sessionId": "closed"}))
            .await,
        -32003
    );
    // The owner may open a session to anyone with the right to write.
    w.call(
        "session.create",
        json!({"sessionId": "lobby", "open": true}),
    )
    .await;
    dave.call("session.join", json!({"sessionId": "lobby"}))
        .await;
    let mut reader = server.client(READER).await;
    assert_eq!(
        reader
            .error_code("session.join", json!({"sessionId": "lobby"}))
            .await,
        -32003,
        "joining still takes operator.write"
    );
}
