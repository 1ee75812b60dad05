//! Devices and pairing on real instances: on the memory backend one
//! instance plays every part; with `SWITCHYARD_TEST_BACKEND=redis` three
//! instances share one Redis (a Redis Cluster with
//! `SWITCHYARD_TEST_REDIS=cluster`), and the device, the operators and the
//! approver sit on different instances.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchyard::config::{AuthMode, Config, StaticCredential, Window};

/// An operator with `operator.pairing` only.
const PAIRER: &str = "pairer-token-0123456789abcdef";

/// The instances of a test: three on one Redis, or the one memory
/// instance standing for all three.
struct Instances {
    servers: Vec<TestServer>,
    _redis: Option<RedisProcess>,
}

impl Instances {
    async fn start(tweak: impl Fn(&mut Config)) -> Self {
        if redis_mode() {
            let redis = RedisProcess::start();
            let mut c = cluster_config(&redis);
            with_devices(&mut c);
            tweak(&mut c);
            let mut servers = Vec::new();
            for _ in 0..3 {
                servers.push(TestServer::start_on(c.clone()).await);
            }
            Self {
                servers,
                _redis: Some(redis),
            }
        } else {
            let mut c = config();
            with_devices(&mut c);
            tweak(&mut c);
            Self {
                servers: vec![TestServer::start(c).await],
                _redis: None,
            }
        }
    }

    /// Instance `i` (0: A, 1: B, 2: C).
    fn at(&self, i: usize) -> &TestServer {
        &self.servers[i % self.servers.len()]
    }
}

fn with_devices(c: &mut Config) {
    c.auth.modes.push(AuthMode::Device);
    c.auth.tokens.push(StaticCredential {
        secret: PAIRER.into(),
        sub: "pairer".into(),
        role: "operator".into(),
        scopes: vec!["operator.pairing".into()],
        channels: Vec::new(),
    });
}

/// An unauthenticated connection and the `challenge` of its `welcome`.
async fn anonymous(server: &TestServer) -> (Ws, String) {
    let mut ws = Ws::connect(&server.url("/ws")).await.expect("connects");
    let welcome = ws.expect_push("welcome").await;
    let challenge = welcome["challenge"]
        .as_str()
        .unwrap_or_else(|| panic!("welcome has a challenge: {welcome}"))
        .to_owned();
    (ws, challenge)
}

/// Ask to pair `id` from `device`; returns the reply.
async fn ask(device: &mut Ws, id: &str, extra: Value) -> Value {
    let mut params = json!({"deviceId": id, "name": "Kitchen tablet", "platform": "android"});
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    device.call("device.pair.request", params).await
}

/// Pair `id` from a fresh connection on `server` and approve it with
/// `approval` from `approver`; returns the device's token.
async fn paired(server: &TestServer, approver: &mut Ws, id: &str, extra: Value) -> String {
    let (mut device, _) = anonymous(server).await;
    ask(&mut device, id, extra).await;
    approver
        .call("device.pair.approve", json!({"deviceId": id}))
        .await;
    token_of(&device.expect_push("device.paired").await)
}

fn token_of(paired: &Value) -> String {
    paired["deviceToken"]
        .as_str()
        .unwrap_or_else(|| panic!("a token: {paired}"))
        .to_owned()
}

/// The HTTP status an upgrade with `token` as a bearer token gets (101
/// when it connects).
async fn upgrade_status(server: &TestServer, token: &str) -> u16 {
    match Ws::connect_with(&server.url("/ws"), &[("authorization", &bearer(token))]).await {
        Ok(_) => 101,
        Err(ConnectError::Http(status, _)) => status,
        Err(e) => panic!("upgrade failed otherwise: {e:?}"),
    }
}

/// `connect` in-band with `auth`; the whole reply.
async fn connect_with(ws: &mut Ws, auth: Value) -> Value {
    ws.request("connect", json!({"auth": auth})).await
}

/// The close code `ws` gets within `within` (pushes keep arriving, so
/// the wait is bounded here rather than per frame).
async fn closed_within(ws: &mut Ws, within: Duration) -> u16 {
    tokio::time::timeout(within, ws.expect_close_code())
        .await
        .unwrap_or_else(|_| panic!("not closed within {within:?}"))
}

fn error_of(reply: &Value) -> i64 {
    reply["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("an error: {reply}"))
}

fn ids(list: &Value) -> Vec<String> {
    counted(list, "devices")
        .iter()
        .map(|d| d["deviceId"].as_str().expect("deviceId").to_owned())
        .collect()
}

#[tokio::test]
async fn a_request_on_one_instance_approved_on_another_reaches_the_waiting_device() {
    let at = Instances::start(|_| {}).await;
    let mut watcher = at.at(0).client(PAIRER).await;
    let mut approver = at.at(1).client(ADMIN).await;
    let (mut device, _) = anonymous(at.at(2)).await;

    let asked = ask(&mut device, "tablet-1", json!({})).await;
    assert_eq!(asked["status"], "pending", "{asked}");
    let code = asked["code"].as_str().expect("a pairing code").to_owned();
    assert_eq!(code.len(), 9, "{code}");
    let seen = watcher.expect_push("device.pair.requested").await;
    assert_eq!(
        (seen["deviceId"].clone(), seen["code"].clone()),
        (json!("tablet-1"), json!(code)),
        "{seen}"
    );

    let decided = approver
        .call(
            "device.pair.approve",
            json!({"deviceId": "tablet-1", "note": "kitchen"}),
        )
        .await;
    assert_eq!(decided["delivered"], true, "{decided}");
    assert_eq!(decided["device"]["status"], "paired", "{decided}");
    assert!(
        !decided.to_string().contains("sydev_"),
        "no token: {decided}"
    );
    let pushed = device.expect_push("device.paired").await;
    assert_eq!(pushed["role"], "node", "{pushed}");
    let token = token_of(&pushed);
    let resolved = watcher.expect_push("device.pair.resolved").await;
    assert_eq!(resolved["status"], "paired", "{resolved}");
    assert!(!resolved.to_string().contains(&token));

    // A second decision, on any instance, loses.
    let again = watcher
        .request("device.pair.reject", json!({"deviceId": "tablet-1"}))
        .await;
    assert_eq!(error_of(&again), -32007, "{again}");

    // The token works at the upgrade (instance A) …
    let mut up = at.at(0).client(&token).await;
    let hello = up.call("connect", json!({})).await;
    assert_eq!(
        (hello["authenticated"].clone(), hello["role"].clone()),
        (json!(true), json!("node")),
        "{hello}"
    );
    // … and in-band on the waiting connection and elsewhere (B).
    let hello = device
        .call("connect", json!({"auth": {"deviceToken": token}}))
        .await;
    assert_eq!(hello["role"], "node", "{hello}");
    let (mut other, _) = anonymous(at.at(1)).await;
    let reply = other.call("auth", json!({"token": token})).await;
    assert_eq!(reply["sub"], "device:tablet-1", "{reply}");

    let list = approver
        .call("device.list", json!({"status": "paired"}))
        .await;
    assert_eq!(ids(&list), ["tablet-1"], "{list}");
    let listed = &counted(&list, "devices")[0];
    assert!(listed["lastSeen"].as_u64().is_some(), "{listed}");
    assert!(listed.get("tokens").is_none(), "no hashes listed: {listed}");
    let history = approver
        .call("device.history", json!({"deviceId": "tablet-1"}))
        .await;
    let actions: Vec<&str> = counted(&history, "entries")
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["approved", "requested"], "{history}");
    assert_eq!(counted(&history, "entries")[0]["by"], "admin");
}

#[tokio::test]
async fn revoking_closes_the_device_on_another_instance_at_once() {
    let at = Instances::start(|_| {}).await;
    let mut operator = at.at(0).client(ADMIN).await;
    let token = paired(at.at(2), &mut operator, "phone-7", json!({})).await;
    let mut device = at.at(2).client(&token).await;
    device.call("ping", json!({})).await;

    let started = Instant::now();
    let revoked = operator
        .call(
            "device.revoke",
            json!({"deviceId": "phone-7", "note": "lost"}),
        )
        .await;
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    let close = closed_within(&mut device, Duration::from_secs(3)).await;
    let took = started.elapsed();
    println!("revocation closed the device's connection on another instance in {took:?}");
    assert_eq!(close, 4003);
    assert!(took < Duration::from_secs(1), "took {took:?}");

    assert_eq!(upgrade_status(at.at(1), &token).await, 401);
    let (mut again, _) = anonymous(at.at(2)).await;
    let reply = connect_with(&mut again, json!({"deviceToken": token})).await;
    assert_eq!(error_of(&reply), -32000, "{reply}");
    let twice = operator
        .request("device.revoke", json!({"deviceId": "phone-7"}))
        .await;
    assert_eq!(error_of(&twice), -32007, "{twice}");

    // A revoked device may ask again; the operator decides anew.
    let (mut back, _) = anonymous(at.at(1)).await;
    ask(&mut back, "phone-7", json!({})).await;
    let history = operator
        .call(
            "device.history",
            json!({"deviceId": "phone-7", "limit": 10}),
        )
        .await;
    let actions: Vec<&str> = counted(&history, "entries")
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["requested", "revoked", "approved", "requested"],
        "{history}"
    );
}

#[tokio::test]
async fn a_rejection_tells_the_device_and_a_second_decision_conflicts() {
    let at = Instances::start(|_| {}).await;
    let mut first = at.at(0).client(PAIRER).await;
    let mut second = at.at(1).client(ADMIN).await;
    let (mut device, _) = anonymous(at.at(2)).await;
    ask(&mut device, "kiosk", json!({})).await;

    let decided = first
        .call(
            "device.pair.reject",
            json!({"deviceId": "kiosk", "note": "unknown device"}),
        )
        .await;
    assert_eq!(decided["device"]["status"], "rejected", "{decided}");
    let told = device.expect_push("device.pair.rejected").await;
    assert_eq!(
        (told["deviceId"].clone(), told["note"].clone()),
        (json!("kiosk"), json!("unknown device")),
        "{told}"
    );
    for method in [
        "device.pair.approve",
        "node.pair.approve",
        "device.pair.reject",
    ] {
        let reply = second.request(method, json!({"deviceId": "kiosk"})).await;
        assert_eq!(error_of(&reply), -32007, "{method}: {reply}");
    }
    device
        .expect_no_push("device.paired", Duration::from_millis(200))
        .await;
    let missing = second
        .request("device.pair.approve", json!({"deviceId": "nobody"}))
        .await;
    assert_eq!(error_of(&missing), -32001, "{missing}");
}

#[tokio::test]
async fn racing_approvals_on_every_instance_pair_the_device_once() {
    let at = Instances::start(|_| {}).await;
    let mut approvers = Vec::new();
    for i in 0..3 {
        approvers.push(at.at(i).client(ADMIN).await);
    }
    let (mut device, _) = anonymous(at.at(0)).await;
    ask(&mut device, "raced", json!({})).await;
    let replies = futures_util::future::join_all(approvers.iter_mut().map(|ws| async move {
        ws.request("node.pair.approve", json!({"deviceId": "raced"}))
            .await
    }))
    .await;
    let won = replies.iter().filter(|r| r.get("result").is_some()).count();
    let lost = replies
        .iter()
        .filter(|r| r["error"]["code"] == -32007)
        .count();
    assert_eq!((won, lost), (1, 2), "{replies:?}");
    device.expect_push("device.paired").await;
    device
        .expect_no_push("device.paired", Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn a_rotated_token_works_for_the_grace_only() {
    let grace = Duration::from_millis(1500);
    let at = Instances::start(|c| c.auth.devices.rotation_grace_ms = 1500).await;
    let mut operator = at.at(0).client(PAIRER).await;
    let old = paired(at.at(1), &mut operator, "sensor", json!({})).await;
    let mut on_old = at.at(2).client(&old).await;

    let rotated = operator
        .call("device.token.rotate", json!({"deviceId": "sensor"}))
        .await;
    let new = token_of(&rotated);
    assert_ne!(new, old);
    assert_eq!(upgrade_status(at.at(1), &new).await, 101);
    assert_eq!(
        upgrade_status(at.at(2), &old).await,
        101,
        "within the grace"
    );

    // The device may rotate its own token, with either token.
    let mut itself = at.at(1).client(&new).await;
    let own = itself
        .call("device.token.rotate", json!({"deviceId": "sensor"}))
        .await;
    let rotated_at = Instant::now();
    let newest = token_of(&own);
    let other = itself
        .request("device.token.rotate", json!({"deviceId": "tablet"}))
        .await;
    assert_eq!(error_of(&other), -32003, "{other}");
    // The first token was rotated out twice: it stopped at the second.
    assert_eq!(upgrade_status(at.at(0), &old).await, 401);

    tokio::time::sleep(grace.saturating_sub(rotated_at.elapsed()) + Duration::from_millis(300))
        .await;
    assert_eq!(upgrade_status(at.at(0), &newest).await, 101);
    assert_eq!(upgrade_status(at.at(0), &new).await, 401, "after the grace");
    let (mut late, _) = anonymous(at.at(1)).await;
    let reply = connect_with(&mut late, json!({"deviceToken": new})).await;
    assert_eq!(error_of(&reply), -32000, "{reply}");
    // The connection made with the first token predates the rotation and
    // stays; revocation is what closes connections.
    on_old.call("ping", json!({})).await;
}

#[tokio::test]
async fn a_connection_on_a_rotated_out_token_ends_with_its_grace() {
    let at = Instances::start(|c| c.auth.devices.rotation_grace_ms = 1500).await;
    let mut operator = at.at(0).client(PAIRER).await;
    let old = paired(at.at(1), &mut operator, "meter", json!({})).await;
    operator
        .call("device.token.rotate", json!({"deviceId": "meter"}))
        .await;
    let started = Instant::now();
    let mut late = at.at(2).client(&old).await;
    let close = closed_within(&mut late, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert_eq!(close, 4001, "closed as an expired credential");
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

fn keypair() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("key");
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key")
}

fn sign(key: &Ed25519KeyPair, challenge: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.sign(challenge.as_bytes()).as_ref())
}

#[tokio::test]
async fn a_device_with_a_key_signs_its_own_connections_challenge_once() {
    let at = Instances::start(|_| {}).await;
    let mut operator = at.at(0).client(ADMIN).await;
    let key = keypair();
    // Standard base64 is accepted too.
    let public = STANDARD.encode(key.public_key().as_ref());
    let token = paired(
        at.at(1),
        &mut operator,
        "signer",
        json!({"publicKey": public}),
    )
    .await;
    let listed = operator
        .call("device.get", json!({"deviceId": "signer"}))
        .await;
    assert_eq!(
        listed["publicKey"],
        URL_SAFE_NO_PAD.encode(key.public_key().as_ref()),
        "{listed}"
    );

    // No challenge at the upgrade: refused, in-band only.
    assert_eq!(upgrade_status(at.at(2), &token).await, 401);

    let (mut good, challenge) = anonymous(at.at(2)).await;
    let proof = sign(&key, &challenge);
    let hello = good
        .call(
            "connect",
            json!({"auth": {"deviceToken": token, "signature": proof}}),
        )
        .await;
    assert_eq!(hello["authenticated"], true, "{hello}");
    // The same challenge again on the same connection: used.
    let replayed = good
        .request("auth", json!({"deviceToken": token, "signature": proof}))
        .await;
    assert_eq!(error_of(&replayed), -32000, "{replayed}");

    // Another connection's challenge.
    let (mut thief, _) = anonymous(at.at(0)).await;
    let reply = connect_with(
        &mut thief,
        json!({"deviceToken": token, "signature": proof}),
    )
    .await;
    assert_eq!(error_of(&reply), -32000, "{reply}");

    // The wrong key.
    let (mut wrong, challenge) = anonymous(at.at(1)).await;
    let forged = sign(&keypair(), &challenge);
    let reply = connect_with(
        &mut wrong,
        json!({"deviceToken": token, "signature": forged}),
    )
    .await;
    assert_eq!(error_of(&reply), -32000, "{reply}");

    // No signature, or a bearer `token` (which carries none).
    let (mut bare, _) = anonymous(at.at(1)).await;
    let reply = connect_with(&mut bare, json!({"deviceToken": token})).await;
    assert_eq!(error_of(&reply), -32000, "{reply}");
    let reply = connect_with(&mut bare, json!({"token": token})).await;
    assert_eq!(error_of(&reply), -32000, "{reply}");

    let bad_key = operator
        .request(
            "device.pair.request",
            json!({"deviceId": "x", "name": "x", "platform": "x", "publicKey": "c2hvcnQ"}),
        )
        .await;
    assert_eq!(error_of(&bad_key), -32602, "{bad_key}");
    assert_eq!(bad_key["error"]["data"]["field"], "publicKey", "{bad_key}");
}

#[tokio::test]
async fn pairing_decisions_need_the_scope_and_grants_stay_within_the_approvers() {
    let at = Instances::start(|_| {}).await;
    let mut reader = at.at(0).client(READER).await;
    let mut pairer = at.at(1).client(PAIRER).await;
    let (mut device, _) = anonymous(at.at(2)).await;
    ask(&mut device, "desk", json!({})).await;

    for (method, params) in [
        ("device.pair.approve", json!({"deviceId": "desk"})),
        ("node.pair.reject", json!({"deviceId": "desk"})),
        ("device.list", json!({})),
        ("device.revoke", json!({"deviceId": "desk"})),
        ("device.history", json!({})),
        ("device.token.rotate", json!({"deviceId": "desk"})),
    ] {
        let reply = reader.request(method, params).await;
        assert_eq!(error_of(&reply), -32003, "{method}: {reply}");
    }
    let unauthenticated = device.request("device.list", json!({})).await;
    assert_eq!(error_of(&unauthenticated), -32000, "{unauthenticated}");

    let wider = pairer
        .request(
            "device.pair.approve",
            json!({"deviceId": "desk", "role": "operator", "scopes": ["operator.write"]}),
        )
        .await;
    assert_eq!(error_of(&wider), -32003, "{wider}");
    let bad_role = pairer
        .request(
            "device.pair.approve",
            json!({"deviceId": "desk", "role": "root"}),
        )
        .await;
    assert_eq!(bad_role["error"]["data"]["field"], "role", "{bad_role}");

    pairer
        .call(
            "device.pair.approve",
            json!({"deviceId": "desk", "role": "operator", "scopes": ["operator.pairing"]}),
        )
        .await;
    let pushed = device.expect_push("device.paired").await;
    assert_eq!(
        (pushed["role"].clone(), pushed["scopes"].clone()),
        (json!("operator"), json!(["operator.pairing"])),
        "{pushed}"
    );
    let mut desk = at.at(0).client(&token_of(&pushed)).await;
    let list = desk.call("device.list", json!({})).await;
    assert_eq!(ids(&list), ["desk"], "{list}");
    let forbidden = desk
        .request("publish", json!({"channel": "x", "data": 1}))
        .await;
    assert_eq!(error_of(&forbidden), -32003, "{forbidden}");
}

#[tokio::test]
async fn an_operator_connecting_later_sees_what_is_pending() {
    let at = Instances::start(|_| {}).await;
    let (mut device, _) = anonymous(at.at(0)).await;
    let asked = ask(&mut device, "late-1", json!({})).await;

    let mut late = at.at(1).client(PAIRER).await;
    let caught = late.expect_push("device.pair.requested").await;
    assert_eq!(caught["deviceId"], "late-1", "{caught}");
    assert_eq!(caught["code"], asked["code"], "{caught}");
    let list = late.call("device.list", json!({"status": "pending"})).await;
    assert_eq!(ids(&list), ["late-1"], "{list}");
    assert!(ids(&late.call("device.list", json!({"status": "paired"})).await).is_empty());
    // Someone without the scope is not told.
    let mut reader = at.at(2).client(READER).await;
    reader
        .expect_no_push("device.pair.requested", Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn pending_requests_are_bounded_expire_and_are_rate_limited_per_address() {
    let at = Instances::start(|c| {
        c.auth.devices.max_pending = 2;
        c.auth.devices.pairing_ttl_ms = 1000;
        c.auth.devices.requests_per_ip = Window::new(6, 60_000);
    })
    .await;
    let mut operator = at.at(0).client(PAIRER).await;
    let (mut a, _) = anonymous(at.at(1)).await;
    ask(&mut a, "p1", json!({})).await;
    let same = a
        .request(
            "device.pair.request",
            json!({"deviceId": "p1", "name": "n", "platform": "p"}),
        )
        .await;
    assert_eq!(error_of(&same), -32007, "pending already: {same}");
    let (mut b, _) = anonymous(at.at(2)).await;
    ask(&mut b, "p2", json!({})).await;
    let (mut c, _) = anonymous(at.at(0)).await;
    let full = c
        .request(
            "device.pair.request",
            json!({"deviceId": "p3", "name": "n", "platform": "p"}),
        )
        .await;
    assert_eq!(error_of(&full), -32002, "{full}");
    for (params, field) in [
        (
            json!({"deviceId": "", "name": "n", "platform": "p"}),
            "deviceId",
        ),
        (
            json!({"deviceId": "a b", "name": "n", "platform": "p"}),
            "deviceId",
        ),
        (
            json!({"deviceId": "ok", "name": "", "platform": "p"}),
            "name",
        ),
        (
            json!({"deviceId": "ok", "name": "n\u{7}", "platform": "p"}),
            "name",
        ),
    ] {
        let reply = c.request("device.pair.request", params).await;
        assert_eq!(reply["error"]["data"]["field"], field, "{reply}");
    }

    // Unanswered, they expire: gone from the list, not approvable, and
    // the device may ask again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let list = operator
        .call("device.list", json!({"status": "pending"}))
        .await;
    assert!(ids(&list).is_empty(), "{list}");
    let late = operator
        .request("device.pair.approve", json!({"deviceId": "p1"}))
        .await;
    assert_eq!(error_of(&late), -32001, "{late}");
    ask(&mut c, "p3", json!({})).await;
    // The sixth request from this address in the window is the last.
    let limited = c
        .request(
            "device.pair.request",
            json!({"deviceId": "p4", "name": "n", "platform": "p"}),
        )
        .await;
    let limited = if limited.get("result").is_some() {
        c.request(
            "device.pair.request",
            json!({"deviceId": "p5", "name": "n", "platform": "p"}),
        )
        .await
    } else {
        limited
    };
    assert_eq!(error_of(&limited), -32004, "{limited}");
    assert!(limited["error"]["data"]["retryAfterMs"].as_u64().is_some());
}

#[tokio::test]
async fn bad_device_tokens_count_towards_the_lock_out() {
    let at =
        Instances::start(|c| c.rate_limits.auth_failures_per_ip = Window::new(3, 60_000)).await;
    let mut operator = at.at(0).client(ADMIN).await;
    let token = paired(at.at(1), &mut operator, "locked", json!({})).await;
    for i in 0..3 {
        let wrong = format!("sydev_wrong-{i}");
        assert_eq!(upgrade_status(at.at(i), &wrong).await, 401);
    }
    // The window is full: even the good token waits.
    assert_eq!(upgrade_status(at.at(2), &token).await, 429);
    let (mut ws, _) = anonymous(at.at(0)).await;
    let reply = connect_with(&mut ws, json!({"deviceToken": token})).await;
    assert_eq!(error_of(&reply), -32004, "{reply}");
}

#[tokio::test]
async fn device_mode_off_refuses_pairing_and_device_tokens() {
    let server = TestServer::start(config()).await;
    let (mut device, _) = anonymous(&server).await;
    let reply = device
        .request(
            "device.pair.request",
            json!({"deviceId": "d", "name": "n", "platform": "p"}),
        )
        .await;
    assert_eq!(error_of(&reply), -32005, "{reply}");
    assert_eq!(upgrade_status(&server, "sydev_anything").await, 401);
}
