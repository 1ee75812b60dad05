//! Cluster mode with real processes: several `switchyard` binaries sharing
//! one `redis-server`. An instance killed with SIGKILL is reaped by the
//! survivors (presence, channel members, sessions, instance record); the
//! pub/sub subscriber survives `CLIENT KILL TYPE pubsub`; publish and
//! `client.kick` cross instances; a SIGTERM drain removes an instance and
//! its clients from the cluster view.
//!
//! Not a behaviour test: it starts its own Redis and processes whatever
//! `SWITCHYARD_TEST_BACKEND` says.

mod common;

use common::instance::*;
use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// What is left until `deadline` (zero once it passed).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The next push with `method`, or None when `deadline` passes first.
async fn push_by(ws: &mut Ws, method: &str, deadline: Instant) -> Option<Value> {
    tokio::time::timeout(left(deadline), ws.expect_push(method))
        .await
        .ok()
}

fn conn_ids(presence: &Value) -> Vec<String> {
    presence["clients"]
        .as_array()
        .unwrap_or_else(|| panic!("system.presence lists clients: {presence}"))
        .iter()
        .map(|c| c["connId"].as_str().expect("connId").to_owned())
        .collect()
}

#[tokio::test]
async fn sigkilled_instance_is_reaped_by_the_survivors() {
    let redis = RedisProcess::start();
    let env = [("SWITCHYARD_LIMITS__RESUME_WINDOW_MS", "500")];
    let a = Instance::start(&redis, "a", &env).await;
    let mut b = Instance::start(&redis, "b", &env).await;
    let c = Instance::start(&redis, "c", &env).await;

    let mut watcher = a.client(ADMIN).await;
    watcher
        .call("subscribe", json!({"channels": ["public:room"]}))
        .await;
    let mut doomed = b.client(WRITER).await;
    let doomed_id = doomed
        .call("connect", json!({"client": {"name": "doomed"}}))
        .await["connId"]
        .as_str()
        .expect("connId")
        .to_owned();
    doomed
        .call("subscribe", json!({"channels": ["public:room"]}))
        .await;
    let join = tokio::time::timeout(
        Duration::from_secs(5),
        push_where(&mut watcher, "presence.join", |p| {
            p["connId"] == doomed_id.as_str()
        }),
    )
    .await
    .expect("the watcher on a sees the b client join");
    assert_eq!(join["connId"], doomed_id.as_str(), "{join}");

    let session = doomed
        .call(
            "session.create",
            json!({"invite": ["alice", "bob"], "sessionId": "crash-1"}),
        )
        .await;
    assert_eq!(session["sessionId"], "crash-1");
    let mut member = a.client(BOB).await;
    member
        .call("session.join", json!({"sessionId": "crash-1"}))
        .await;
    let before = watcher.call("system.presence", json!({})).await;
    assert!(conn_ids(&before).contains(&doomed_id), "{before}");
    assert_eq!(
        instance_ids(&watcher.call("status", json!({})).await),
        set(&["a", "b", "c"])
    );

    let killed = Instant::now();
    b.kill9();
    let deadline = killed + NODE_TTL + Duration::from_secs(3);

    let leave = tokio::time::timeout(
        left(deadline),
        push_where(&mut watcher, "presence.leave", |p| {
            p["connId"] == doomed_id.as_str()
        }),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no presence.leave for the killed client within {:?}",
            killed.elapsed()
        )
    });
    assert_eq!(leave["channel"], "public:room", "{leave}");
    assert_eq!(leave["connId"], doomed_id.as_str(), "{leave}");
    assert_eq!(leave["identity"], "writer", "{leave}");

    let (gone, last_presence) = poll_call(
        &mut watcher,
        left(deadline),
        "system.presence",
        json!({}),
        |r| !conn_ids(&r["result"]).contains(&doomed_id),
    )
    .await;
    assert!(
        gone,
        "system.presence on a still lists the dead connection: {last_presence}"
    );
    let members = watcher
        .call("presence.get", json!({"channel": "public:room"}))
        .await;
    assert_eq!(members["count"], 1, "only the watcher is left: {members}");

    let (live, last_status) = poll_call(&mut watcher, left(deadline), "status", json!({}), |r| {
        instance_ids(&r["result"]) == set(&["a", "c"])
    })
    .await;
    assert!(live, "status lists only live instances: {last_status}");

    // Resume window 500 ms after the reaper detached it, then the next
    // pass of the session janitor (every second): "owner gone".
    let closed = push_by(
        &mut member,
        "session.closed",
        deadline + Duration::from_millis(2500),
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "no session.closed for the member on a within {:?}",
            killed.elapsed()
        )
    });
    assert_eq!(closed["sessionId"], "crash-1", "{closed}");
    assert_eq!(closed["reason"], "owner gone", "{closed}");
    assert_eq!(
        member
            .error_code("session.get", json!({"sessionId": "crash-1"}))
            .await,
        -32001,
        "the closed session is gone"
    );
    drop(c);
}

#[tokio::test]
async fn delivery_recovers_after_the_subscriber_connections_are_killed() {
    let redis = RedisProcess::start();
    let a = Instance::start(&redis, "a", &[]).await;
    let b = Instance::start(&redis, "b", &[]).await;
    let mut publisher = a.client(ADMIN).await;
    let mut subscriber = b.client(ADMIN).await;
    subscriber
        .call("subscribe", json!({"channels": ["public:canary"]}))
        .await;
    // Works before.
    publisher
        .call(
            "publish",
            json!({"channel": "public:canary", "event": "before", "data": 0}),
        )
        .await;
    let before = push_by(
        &mut subscriber,
        "notify",
        Instant::now() + Duration::from_secs(5),
    )
    .await
    .expect("cross-instance delivery before the kill");
    assert_eq!(before["event"], "before");

    let killed = redis.kill_clients("pubsub");
    assert!(
        killed >= 2,
        "every instance has a subscriber connection: killed {killed}"
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut arrived = None;
    let mut n = 0;
    while arrived.is_none() && Instant::now() < deadline {
        n += 1;
        let reply = publisher
            .request(
                "publish",
                json!({"channel": "public:canary", "event": "after", "data": n}),
            )
            .await;
        if reply.get("error").is_none() {
            let wait = (Instant::now() + Duration::from_millis(250)).min(deadline);
            arrived = push_by(&mut subscriber, "notify", wait).await;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let arrived = arrived.unwrap_or_else(|| {
        panic!("no cross-instance delivery within 10 s of CLIENT KILL TYPE pubsub ({n} tries)")
    });
    assert_eq!(arrived["event"], "after", "{arrived}");
    assert_eq!(arrived["channel"], "public:canary", "{arrived}");

    for instance in [&a, &b] {
        let mut status = instance.ready_status().await;
        while status != 200 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            status = instance.ready_status().await;
        }
        assert_eq!(status, 200, "/ready of {} back to 200", instance.id);
    }
    // And the other direction too (a's subscriber was killed as well).
    let mut back = a.client(ADMIN).await;
    back.call("subscribe", json!({"channels": ["public:back"]}))
        .await;
    let mut b_pub = b.client(ADMIN).await;
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        b_pub
            .call(
                "publish",
                json!({"channel": "public:back", "event": "b2a", "data": 1}),
            )
            .await;
        let wait = (Instant::now() + Duration::from_millis(250)).min(deadline);
        got = push_by(&mut back, "notify", wait).await;
    }
    assert!(got.is_some(), "b → a delivery after the kill");
}

#[tokio::test]
async fn publish_and_kick_cross_instances() {
    let redis = RedisProcess::start();
    let a = Instance::start(&redis, "a", &[]).await;
    let b = Instance::start(&redis, "b", &[]).await;
    let mut on_a = a.client(ADMIN).await;
    let mut on_b = b.client(WRITER).await;
    let b_conn = on_b.call("connect", json!({})).await["connId"]
        .as_str()
        .expect("connId")
        .to_owned();
    on_b.call("subscribe", json!({"channels": ["public:news"]}))
        .await;

    let delivered = on_a
        .call(
            "publish",
            json!({"channel": "public:news", "event": "headline", "data": {"n": 1}}),
        )
        .await;
    assert_eq!(delivered["delivered"], 1, "{delivered}");
    let notify = push_by(&mut on_b, "notify", Instant::now() + Duration::from_secs(5))
        .await
        .expect("publish on a reaches the subscriber on b");
    assert_eq!(notify["channel"], "public:news");
    assert_eq!(notify["event"], "headline");
    assert_eq!(notify["data"], json!({"n": 1}));

    // The connection's own channel reaches it through its instance's inbox.
    on_a.call(
        "publish",
        json!({"channel": format!("conn:{b_conn}"), "event": "direct", "data": 2}),
    )
    .await;
    let direct = push_by(&mut on_b, "notify", Instant::now() + Duration::from_secs(5))
        .await
        .expect("conn:<id> published on a reaches b");
    assert_eq!(direct["event"], "direct", "{direct}");

    let kicked = on_a
        .call("client.kick", json!({"connId": b_conn, "reason": "test"}))
        .await;
    assert_eq!(kicked["kicked"], true, "{kicked}");
    assert_eq!(on_b.expect_close_code().await, 4003);
    assert_eq!(
        on_a.error_code("client.kick", json!({"connId": "no-such-conn"}))
            .await,
        -32001
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let (gone, presence) = poll_call(
        &mut on_a,
        left(deadline),
        "system.presence",
        json!({}),
        |r| !conn_ids(&r["result"]).contains(&b_conn),
    )
    .await;
    assert!(
        gone,
        "the kicked connection leaves system.presence: {presence}"
    );
}

#[tokio::test]
async fn sigterm_drains_one_instance_out_of_the_cluster() {
    let redis = RedisProcess::start();
    let a = Instance::start(&redis, "a", &[]).await;
    let b = Instance::start(
        &redis,
        "b",
        &[("SWITCHYARD_LIMITS__DRAIN_DEADLINE_MS", "2000")],
    )
    .await;
    let mut observer = a.client(ADMIN).await;
    let mut leaving = Vec::new();
    let mut leaving_ids = Vec::new();
    for token in [WRITER, BOB] {
        let mut ws = b.client(token).await;
        let id = ws.call("connect", json!({})).await["connId"]
            .as_str()
            .expect("connId")
            .to_owned();
        ws.call("subscribe", json!({"channels": ["public:drain"]}))
            .await;
        leaving_ids.push(id);
        leaving.push(ws);
    }
    let presence = observer.call("system.presence", json!({})).await;
    for id in &leaving_ids {
        assert!(conn_ids(&presence).contains(id), "{presence}");
    }
    assert_eq!(
        instance_ids(&observer.call("status", json!({})).await),
        set(&["a", "b"])
    );

    let started = Instant::now();
    b.sigterm();
    for ws in &mut leaving {
        let shutdown = push_by(ws, "shutdown", started + Duration::from_secs(5))
            .await
            .expect("a shutdown push before the close");
        assert!(shutdown["reason"].is_string(), "{shutdown}");
        assert!(shutdown["reconnectAfterMs"].is_u64(), "{shutdown}");
        assert_eq!(ws.expect_close_code().await, 1012);
    }

    // Drained, not reaped: the cluster view is clean well before node_ttl
    // would matter, and the instance is gone from status.
    let deadline = started + Duration::from_secs(4);
    let (clean, last) = poll_call(
        &mut observer,
        left(deadline),
        "system.presence",
        json!({}),
        |r| {
            let listed = conn_ids(&r["result"]);
            leaving_ids.iter().all(|id| !listed.contains(id))
        },
    )
    .await;
    assert!(clean, "drained clients still listed on a: {last}");
    let members = observer
        .call("presence.get", json!({"channel": "public:drain"}))
        .await;
    assert_eq!(members["count"], 0, "{members}");
    let (gone, status) = poll_call(&mut observer, left(deadline), "status", json!({}), |r| {
        instance_ids(&r["result"]) == set(&["a"])
    })
    .await;
    assert!(gone, "status still lists the drained instance: {status}");

    let mut b = b;
    let exit = loop {
        if let Some(exit) = b.child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "b exits after draining: {}",
            b.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0), "{}", b.stderr_text());
}

/// An instance that crashed and comes back at once under the same id (a new
/// generation) before `node_ttl` passed: the old run's connections are
/// reaped, and nothing of it keeps counting as a subscriber.
#[tokio::test]
async fn crashed_instance_restarted_under_its_id_leaves_no_phantoms() {
    let redis = RedisProcess::start();
    let mut a = Instance::start(&redis, "a", &[]).await;
    let b = Instance::start(&redis, "b", &[]).await;
    let mut old = a.client(WRITER).await;
    let old_id = old.call("connect", json!({})).await["connId"]
        .as_str()
        .expect("connId")
        .to_owned();
    old.call("subscribe", json!({"channels": ["public:ghost"]}))
        .await;
    let mut on_b = b.client(ADMIN).await;
    let publish = json!({"channel": "public:ghost", "event": "e", "data": 1});
    assert_eq!(on_b.call("publish", publish.clone()).await["delivered"], 1);

    a.kill9();
    drop(old);
    let restarted = Instant::now();
    let a2 = Instance::start(&redis, "a", &[]).await;
    let deadline = restarted + NODE_TTL + Duration::from_secs(3);

    let (gone, presence) = poll_call(
        &mut on_b,
        left(deadline),
        "system.presence",
        json!({}),
        |r| !conn_ids(&r["result"]).contains(&old_id),
    )
    .await;
    assert!(
        gone,
        "the old run's connection is reaped although its id is alive again: {presence}"
    );
    let members = on_b
        .call("presence.get", json!({"channel": "public:ghost"}))
        .await;
    assert_eq!(members["count"], 0, "{members}");

    let mut delivered = Value::Null;
    while Instant::now() < deadline {
        delivered = on_b.call("publish", publish.clone()).await["delivered"].clone();
        if delivered == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        delivered,
        0,
        "publish still counts the crashed run's subscriber after {:?}",
        restarted.elapsed()
    );
    let status = on_b.call("status", json!({})).await;
    assert_eq!(instance_ids(&status), set(&["a", "b"]), "{status}");
    drop(a2);
}

/// `switchyard_reaper_scans_total` of one instance (0 before its first).
async fn reaper_scans(instance: &Instance) -> u64 {
    let (status, _, body) = http(instance.addr(), "GET", "/metrics", &[], None).await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find(|l| l.starts_with("switchyard_reaper_scans_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Wait (bounded) until `instance` has scanned at least `n` times.
async fn scanned_at_least(instance: &Instance, n: u64) -> u64 {
    let deadline = Instant::now() + NODE_TTL * 4;
    loop {
        let scans = reaper_scans(instance).await;
        if scans >= n || Instant::now() > deadline {
            return scans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reaper reads every presence entry only when the instance view
/// changes: a quiet cluster is not scanned pass after pass, an instance
/// that dies is.
#[tokio::test]
async fn the_reaper_scans_presence_only_when_the_view_changes() {
    let redis = RedisProcess::start();
    let a = Instance::start(&redis, "a", &[]).await;
    assert!(scanned_at_least(&a, 1).await >= 1, "first pass scans");
    let mut b = Instance::start(&redis, "b", &[]).await;
    // b's first pass, and a's first pass that sees b.
    assert!(scanned_at_least(&b, 1).await >= 1, "b's first pass scans");
    assert!(scanned_at_least(&a, 2).await >= 2, "a scans once b joins");

    let (a_before, b_before) = (reaper_scans(&a).await, reaper_scans(&b).await);
    // Four reaper periods (node_ttl / 2 each) of a quiet cluster.
    tokio::time::sleep(NODE_TTL * 2).await;
    assert_eq!(
        reaper_scans(&a).await,
        a_before,
        "a quiet cluster is not scanned"
    );
    assert_eq!(
        reaper_scans(&b).await,
        b_before,
        "a quiet cluster is not scanned"
    );

    b.kill9();
    let after = scanned_at_least(&a, a_before + 1).await;
    assert!(after > a_before, "b's death brings a scan about");
}

/// What is published right after a `welcome` reaches the socket, on fresh
/// clusters whose instances had no socket before (the first subscriber of
/// `global` and `user:<sub>` on each instance), published over HTTP on
/// another instance.
#[tokio::test]
async fn fresh_clusters_deliver_what_is_published_right_after_welcome() {
    let admin = bearer(ADMIN);
    for round in 0..4u64 {
        let redis = RedisProcess::start();
        let a = Instance::start(&redis, "a", &[]).await;
        let b = Instance::start(&redis, "b", &[]).await;
        let c = Instance::start(&redis, "c", &[]).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        for instance in [&a, &b, &c] {
            while instance.ready_status().await != 200 {
                assert!(Instant::now() < deadline, "{} never ready", instance.id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut on_b = b.client(WRITER).await;
        let mut on_c = c.client(BOB).await;
        for channel in ["global", "user:bob"] {
            let body = json!({"channel": channel, "event": "e", "data": round}).to_string();
            let (status, _, reply) = http(
                a.addr(),
                "POST",
                "/api/publish",
                &[("authorization", &admin)],
                Some(&body),
            )
            .await;
            assert_eq!(status, 200, "{reply}");
            let heard = |p: &Value| p["channel"] == channel && p["data"] == round;
            if channel == "global" {
                push_where(&mut on_b, "notify", heard).await;
            }
            push_where(&mut on_c, "notify", heard).await;
        }
    }
}

/// `switchyard_max_connections` in this process's `/metrics`.
async fn exported_cap(instance: &Instance) -> Option<f64> {
    let (_, _, body) = http(instance.addr(), "GET", "/metrics", &[], None).await;
    body.lines().find_map(|l| {
        l.strip_prefix("switchyard_max_connections ")?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn the_exported_connection_cap_follows_a_live_change() {
    let redis = RedisProcess::start();
    let a = Instance::start(
        &redis,
        "a",
        &[("SWITCHYARD_LIMITS__MAX_CONNECTIONS", "5000")],
    )
    .await;
    assert_eq!(exported_cap(&a).await, Some(5000.0));
    let mut admin = a.client(ADMIN).await;
    admin
        .call(
            "config.set",
            json!({"path": "limits.max_connections", "value": 1234}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while exported_cap(&a).await != Some(1234.0) {
        assert!(Instant::now() < deadline, "{:?}", exported_cap(&a).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
