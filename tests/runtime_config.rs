//! Runtime config: `config.get/set/patch/apply/history` on real instances,
//! the change reaching every instance of a cluster within a second (by
//! announcement, or by the version poll when the announcement is lost),
//! and the store's contract on every backend.
//!
//! Single-instance tests run on the suite's backend (memory, or Redis with
//! `SWITCHYARD_TEST_BACKEND=redis`); cross-instance tests always share a
//! Redis of their own (a Redis Cluster with `SWITCHYARD_TEST_REDIS=cluster`).

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::backend::memory::MemoryBackend;
use switchyard::backend::redis::{RedisBackend, RedisSettings};
use switchyard::backend::*;

/// The bound the cluster must meet for a change to be in force everywhere.
const PROPAGATION: Duration = Duration::from_secs(1);

/// The error object of a failed call.
async fn error_of(ws: &mut Ws, method: &str, params: Value) -> Value {
    let reply = ws.request(method, params).await;
    assert!(
        reply.get("error").is_some(),
        "{method} should fail: {reply}"
    );
    reply["error"].clone()
}

/// How long until `server` has `version` in force (polled every 2 ms,
/// bounded by `limit`); `None` if it never did.
async fn in_force_after(server: &TestServer, version: u64, since: Instant) -> Option<Duration> {
    let deadline = since + WAIT;
    while Instant::now() < deadline {
        if server.app.live().version >= version {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Send `n` pings; how many were refused as rate limited (-32004).
async fn pings_limited(ws: &mut Ws, n: usize) -> usize {
    let mut limited = 0;
    for _ in 0..n {
        let reply = ws.request("ping", json!({})).await;
        if reply["error"]["code"] == -32004 {
            limited += 1;
        }
    }
    limited
}

#[tokio::test]
async fn a_rate_limit_set_on_one_instance_is_enforced_on_another_within_a_second() {
    let (_redis, servers) = cluster(3, |_| {}).await;
    let (a, c) = (&servers[0], &servers[2]);
    let mut admin = a.client(ADMIN).await;
    let mut writer = c.client(WRITER).await;
    // Before: the default (500 frames a second) lets 20 pings through.
    assert_eq!(pings_limited(&mut writer, 20).await, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let since = Instant::now();
    let set = admin
        .call(
            "config.set",
            json!({"path": "rate_limits.messages_per_conn", "value": {"limit": 5, "window_ms": 60000}}),
        )
        .await;
    let version = set["version"].as_u64().expect("version");
    assert!(version >= 1, "{set}");
    assert_eq!(
        set["config"]["rate_limits"]["messages_per_conn"]["limit"],
        5
    );
    let took = in_force_after(c, version, since)
        .await
        .expect("the change reaches C");
    println!("runtime config propagation A -> C: {} ms", took.as_millis());
    assert!(took < PROPAGATION, "took {took:?}");
    assert!(in_force_after(&servers[1], version, since).await.is_some());

    // Enforced on C, on a connection opened before the change.
    let limited = pings_limited(&mut writer, 10).await;
    assert!(limited >= 5, "only {limited} of 10 pings refused");
    // And C reports it.
    let mut c_admin = c.client(ADMIN).await;
    let got = c_admin.call("config.get", json!({})).await;
    assert_eq!(got["version"], version);
    assert_eq!(
        got["config"]["rate_limits"]["messages_per_conn"]["limit"],
        5
    );
    let mut overridden: Vec<&str> = got["overridden"]
        .as_array()
        .expect("overridden")
        .iter()
        .map(|p| p.as_str().expect("a path"))
        .collect();
    overridden.sort_unstable();
    assert_eq!(
        overridden,
        [
            "rate_limits.messages_per_conn.limit",
            "rate_limits.messages_per_conn.window_ms"
        ]
    );
}

#[tokio::test]
async fn a_stale_base_version_is_a_conflict_naming_the_current_version() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    let first = admin
        .call(
            "config.patch",
            json!({"patch": {"limits": {"max_batch": 10}}, "baseVersion": 0}),
        )
        .await;
    assert_eq!(first["version"], 1);
    let err = error_of(
        &mut admin,
        "config.patch",
        json!({"patch": {"limits": {"max_batch": 20}}, "baseVersion": 0}),
    )
    .await;
    assert_eq!(err["code"], -32007, "{err}");
    assert_eq!(err["data"]["currentVersion"], 1, "{err}");
    let err = error_of(
        &mut admin,
        "config.apply",
        json!({"config": {}, "baseVersion": 7}),
    )
    .await;
    assert_eq!(err["code"], -32007, "{err}");
    // The stale writes changed nothing.
    let got = admin.call("config.get", json!({})).await;
    assert_eq!(got["version"], 1);
    assert_eq!(got["config"]["limits"]["max_batch"], 10);
}

#[tokio::test]
async fn an_invalid_value_is_refused_naming_the_field() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    for (method, params, field) in [
        (
            "config.set",
            json!({"path": "rate_limits.messages_per_conn.limit", "value": 0}),
            "rate_limits.messages_per_conn.limit",
        ),
        (
            "config.set",
            json!({"path": "limits.max_batch", "value": "lots"}),
            "limits.max_batch",
        ),
        (
            "config.patch",
            json!({"patch": {"limits": {"client_timeout_ms": 10}}}),
            "limits.client_timeout_ms",
        ),
        (
            "config.apply",
            json!({"config": {"rate_limits": {"no_such_window": {"limit": 1}}}}),
            "rate_limits.no_such_window",
        ),
        (
            "config.set",
            json!({"path": "channels.rules", "value": [{"prefix": "x:", "subscribe": "nobody"}]}),
            "channels.rules[0]",
        ),
    ] {
        let err = error_of(&mut admin, method, params.clone()).await;
        assert_eq!(err["code"], -32602, "{params}: {err}");
        let named = err["data"]["field"].as_str().unwrap_or_default();
        assert!(named.starts_with(field), "{params}: {err}");
    }
    let deep = format!("rate_limits{}", ".a".repeat(100_000));
    let err = error_of(&mut admin, "config.set", json!({"path": deep, "value": 1})).await;
    assert_eq!(err["data"]["field"], "path", "{err}");
    let got = admin.call("config.get", json!({})).await;
    assert_eq!(got["version"], 0, "nothing was stored: {got}");
    // The instance still serves.
    admin.call("ping", json!({})).await;
}

#[tokio::test]
async fn settings_that_need_a_restart_are_refused_by_name() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    for (method, params, field) in [
        ("config.set", json!({"path": "port", "value": 1234}), "port"),
        (
            "config.set",
            json!({"path": "auth.tokens", "value": []}),
            "auth",
        ),
        (
            "config.patch",
            json!({"patch": {"redis_url": "redis://elsewhere"}}),
            "redis_url",
        ),
        (
            "config.apply",
            json!({"config": {"limits": {"node_ttl_ms": 5000}}}),
            "limits.node_ttl_ms",
        ),
        ("config.set", json!({"path": "tls", "value": null}), "tls"),
    ] {
        let err = error_of(&mut admin, method, params.clone()).await;
        assert_eq!(err["code"], -32602, "{params}: {err}");
        assert_eq!(err["data"]["field"], field, "{params}: {err}");
        let reason = err["data"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("restart"), "{params}: {err}");
    }
    let err = error_of(
        &mut admin,
        "config.set",
        json!({"path": "colour", "value": 1}),
    )
    .await;
    assert_eq!(err["data"]["field"], "colour", "{err}");
}

#[tokio::test]
async fn null_removes_the_override_and_the_file_value_applies_again() {
    let mut c = config();
    c.limits.max_subscriptions = 3;
    let server = TestServer::start(c).await;
    let mut admin = server.client(ADMIN).await;
    let set = admin
        .call(
            "config.set",
            json!({"path": "limits.max_subscriptions", "value": 1}),
        )
        .await;
    assert_eq!(set["overridden"], json!(["limits.max_subscriptions"]));
    // In force: a second subscription is over the limit.
    let mut writer = server.client(WRITER).await;
    writer
        .call("subscribe", json!({"channels": ["public:a"]}))
        .await;
    let code = writer
        .error_code("subscribe", json!({"channels": ["public:b"]}))
        .await;
    assert_eq!(code, -32002);

    let removed = admin
        .call(
            "config.set",
            json!({"path": "limits.max_subscriptions", "value": null}),
        )
        .await;
    assert_eq!(removed["config"]["limits"]["max_subscriptions"], 3);
    assert_eq!(removed["overridden"], json!([]));
    assert_eq!(removed["overrides"], json!({}));
    writer
        .call("subscribe", json!({"channels": ["public:b"]}))
        .await;
}

#[tokio::test]
async fn history_records_who_changed_what_when_and_the_versions() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    let before = now_ms();
    admin
        .call(
            "config.set",
            json!({"path": "rate_limits.http_per_key.limit", "value": 50}),
        )
        .await;
    admin
        .call(
            "config.patch",
            json!({"patch": {"hooks": [{"name": "gh", "secret": "hook-secret-0123456789"}]}, "baseVersion": 1}),
        )
        .await;
    admin
        .call("config.apply", json!({"config": {}, "baseVersion": 2}))
        .await;
    let history = admin.call("config.history", json!({})).await;
    assert_eq!(history["count"], 3, "{history}");
    let entries = history["entries"].as_array().unwrap();
    let ops: Vec<&str> = entries.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["apply", "patch", "set"]);
    for (entry, (from, to)) in entries.iter().zip([(2, 3), (1, 2), (0, 1)]) {
        assert_eq!(entry["by"], "admin", "{entry}");
        assert_eq!(entry["fromVersion"], from, "{entry}");
        assert_eq!(entry["version"], to, "{entry}");
        let at = entry["at"].as_u64().unwrap();
        assert!(at >= before && at <= now_ms() + 1, "{entry}");
    }
    assert_eq!(entries[2]["path"], "rate_limits.http_per_key.limit");
    assert_eq!(entries[2]["value"], 50);
    assert!(
        !history.to_string().contains("hook-secret"),
        "secrets never shown: {history}"
    );
    let one = admin.call("config.history", json!({"limit": 1})).await;
    assert_eq!(one["count"], 1);
    // Every instance exports the version it has in force (one process-wide
    // recorder in this test binary, so only the series is checked).
    let (status, _, metrics) = http(server.addr, "GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_config_version ")),
        "{metrics}"
    );
}

#[tokio::test]
async fn patch_merges_and_apply_replaces() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    admin
        .call(
            "config.patch",
            json!({"patch": {"limits": {"max_batch": 7, "request_timeout_ms": 9000}}}),
        )
        .await;
    let merged = admin
        .call(
            "config.patch",
            json!({"patch": {"limits": {"max_batch": null}, "rate_limits": {"connect_per_ip": {"limit": 9}}}}),
        )
        .await;
    assert_eq!(
        merged["overrides"],
        json!({"limits": {"request_timeout_ms": 9000}, "rate_limits": {"connect_per_ip": {"limit": 9}}})
    );
    assert_eq!(merged["config"]["limits"]["max_batch"], 100);
    assert_eq!(
        merged["config"]["rate_limits"]["connect_per_ip"]["window_ms"],
        10_000
    );
    let replaced = admin
        .call(
            "config.apply",
            json!({"config": {"limits": {"max_batch": 3}}}),
        )
        .await;
    assert_eq!(replaced["overrides"], json!({"limits": {"max_batch": 3}}));
    assert_eq!(replaced["config"]["limits"]["request_timeout_ms"], 30_000);
    // The live limit holds on this connection's next batch.
    let batch: Vec<Value> = (0..4)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "ping"}))
        .collect();
    admin.send_json(&Value::Array(batch)).await;
    let reply = admin.next_reply().await;
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
}

#[tokio::test]
async fn only_admins_may_read_or_change_the_runtime_config() {
    let server = TestServer::default().await;
    for token in [WRITER, READER, APPROVER] {
        let mut ws = server.client(token).await;
        for (method, params) in [
            ("config.get", json!({})),
            (
                "config.set",
                json!({"path": "limits.max_batch", "value": 5}),
            ),
            ("config.patch", json!({"patch": {}})),
            ("config.apply", json!({"config": {}})),
            ("config.history", json!({})),
        ] {
            assert_eq!(ws.error_code(method, params).await, -32003, "{method}");
        }
    }
    let mut admin = server.client(ADMIN).await;
    let got = admin.call("config.get", json!({"schema": true})).await;
    assert_eq!(got["version"], 0);
    let limits = &got["schema"]["$defs"]["Limits"]["properties"];
    assert!(limits.get("max_subscriptions").is_some(), "{got}");
    assert!(limits.get("node_ttl_ms").is_none(), "restart-only: {got}");
}

#[tokio::test]
async fn an_instance_started_after_a_change_applies_it() {
    let (redis, servers) = cluster(1, |_| {}).await;
    let mut admin = servers[0].client(ADMIN).await;
    admin
        .call(
            "config.set",
            json!({"path": "limits.max_subscriptions", "value": 2}),
        )
        .await;
    let later = TestServer::start_on(cluster_config(&redis)).await;
    assert_eq!(later.app.live().version, 1, "applied before serving");
    assert_eq!(later.app.live().limits.max_subscriptions, 2);
    let mut late_admin = later.client(ADMIN).await;
    let got = late_admin.call("config.get", json!({})).await;
    assert_eq!(got["config"]["limits"]["max_subscriptions"], 2);
}

#[tokio::test]
async fn an_instance_that_missed_the_announcement_still_converges() {
    let (redis, servers) = cluster(2, |_| {}).await;
    let (a, c) = (&servers[0], &servers[1]);
    let mut admin = a.client(ADMIN).await;

    // Every subscriber connection is cut, then the config changes.
    let killed = redis.kill_clients("pubsub");
    assert!(killed >= 2, "killed {killed} subscriber connections");
    let since = Instant::now();
    let set = admin
        .call(
            "config.set",
            json!({"path": "limits.max_batch", "value": 11}),
        )
        .await;
    let version = set["version"].as_u64().unwrap();
    let took = in_force_after(c, version, since).await.expect("converges");
    println!(
        "after CLIENT KILL TYPE pubsub: in force on C after {} ms",
        took.as_millis()
    );
    assert!(took < PROPAGATION, "took {took:?}");

    // A document written without any announcement at all (as if every
    // message were lost) reaches both instances through the poll.
    let doc = json!({"limits": {"max_batch": 12}}).to_string();
    let next = (version + 1).to_string();
    let since = Instant::now();
    redis
        .cli(&[
            "HSET",
            "sy:{sy}:config",
            "version",
            &next,
            "overrides",
            &doc,
        ])
        .expect("HSET");
    for server in &servers {
        let took = in_force_after(server, version + 1, since)
            .await
            .expect("converges by polling");
        println!("unannounced change in force after {} ms", took.as_millis());
        assert!(took < PROPAGATION, "took {took:?}");
        assert_eq!(server.app.live().limits.max_batch, 12);
    }
}

#[tokio::test]
async fn a_document_lost_with_redis_is_written_back() {
    let (mut redis, servers) = cluster(1, |_| {}).await;
    let mut admin = servers[0].client(ADMIN).await;
    admin
        .call(
            "config.set",
            json!({"path": "limits.max_batch", "value": 13}),
        )
        .await;
    redis.restart();
    let back = eventually(|| async {
        redis
            .cli(&["HGET", "sy:{sy}:config", "version"])
            .is_some_and(|v| v.trim() == "1")
    })
    .await;
    assert!(back, "the instance wrote its document back");
    assert_eq!(servers[0].app.live().limits.max_batch, 13);
    let later = TestServer::start_on(cluster_config(&redis)).await;
    assert_eq!(later.app.live().limits.max_batch, 13);
}

#[tokio::test]
async fn channel_rules_change_live() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    let mut writer = server.client(WRITER).await;
    writer
        .call(
            "publish",
            json!({"channel": "ops:a", "event": "e", "data": 1}),
        )
        .await;
    let mut rules = server.app.config.channels.rules.clone();
    rules.insert(
        0,
        switchyard::config::ChannelRule::new(
            "ops:",
            switchyard::config::Access::Authenticated,
            switchyard::config::Access::Admin,
            false,
        ),
    );
    admin
        .call(
            "config.set",
            json!({"path": "channels.rules", "value": rules}),
        )
        .await;
    let code = writer
        .error_code(
            "publish",
            json!({"channel": "ops:a", "event": "e", "data": 1}),
        )
        .await;
    assert_eq!(code, -32003);
}

#[tokio::test]
async fn concurrent_changes_from_several_instances_all_land_once() {
    let (_redis, servers) = cluster(2, |_| {}).await;
    let windows = [
        "connect_per_ip",
        "auth_failures_per_ip",
        "messages_per_identity",
        "http_per_key",
    ];
    let mut writers = Vec::new();
    for (i, window) in windows.iter().enumerate() {
        let mut admin = servers[i % 2].client(ADMIN).await;
        let path = format!("rate_limits.{window}.limit");
        writers.push(tokio::spawn(async move {
            for n in 1..=5 {
                admin
                    .call("config.set", json!({"path": path, "value": 1000 + n}))
                    .await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let mut admin = servers[1].client(ADMIN).await;
    let history = admin.call("config.history", json!({"limit": 100})).await;
    assert_eq!(history["count"], 20, "{history}");
    let got = admin.call("config.get", json!({})).await;
    assert_eq!(got["version"], 20, "{got}");
    for window in windows {
        assert_eq!(got["config"]["rate_limits"][window]["limit"], 1005, "{got}");
    }
    // Versions follow each other without a gap or a repeat.
    let entries = history["entries"].as_array().unwrap();
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["version"], 20 - i as u64, "{entry}");
        assert_eq!(entry["fromVersion"], 19 - i as u64, "{entry}");
    }
}

#[tokio::test]
async fn webhooks_and_connection_limits_change_live() {
    let server = TestServer::default().await;
    let mut admin = server.client(ADMIN).await;
    let writer = bearer(WRITER);
    let headers = [("authorization", writer.as_str())];
    let (status, _, _) = http(server.addr, "POST", "/hooks/deploys", &headers, Some("{}")).await;
    assert_eq!(status, 404, "no such hook yet");
    admin
        .call(
            "config.set",
            json!({"path": "hooks", "value": [{"name": "deploys"}]}),
        )
        .await;
    let (status, _, body) = http(server.addr, "POST", "/hooks/deploys", &headers, Some("{}")).await;
    assert_eq!(status, 200, "{body}");

    // A smaller `max_payload` holds for connections opened afterwards.
    admin
        .call(
            "config.set",
            json!({"path": "limits.max_payload", "value": 2048}),
        )
        .await;
    let mut fresh = server.client(WRITER).await;
    let big = "x".repeat(4096);
    fresh
        .send_json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": big}}))
        .await;
    assert_eq!(fresh.expect_close_code().await, 1009);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Memory and Redis (a `redis-server` of its own), each attached.
async fn stores() -> Vec<(Arc<dyn Backend>, Option<RedisProcess>)> {
    let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let redis_server = RedisProcess::start();
    let settings = RedisSettings {
        url: redis_server.url(),
        prefix: "sy".into(),
        tls: Default::default(),
        alive_ttl: Duration::from_secs(10),
        command_timeout: Duration::from_secs(2),
    };
    let redis: Arc<dyn Backend> = Arc::new(RedisBackend::connect(settings).await.unwrap());
    let mut all = Vec::new();
    for (backend, server) in [(memory, None), (redis, Some(redis_server))] {
        struct Nobody;
        impl Inbox for Nobody {
            fn deliver(&self, _: Envelope) -> usize {
                0
            }
        }
        backend
            .attach("test-instance", 1, Arc::new(Nobody))
            .await
            .unwrap();
        all.push((backend, server));
    }
    all
}

fn change(by: &str, op: &str) -> ConfigChange {
    ConfigChange {
        from_version: 0,
        version: 0,
        by: by.into(),
        at: 5,
        op: op.into(),
        path: None,
        value: json!({"x": 1}),
    }
}

#[tokio::test]
async fn store_compares_and_sets_keeps_history_and_announces() {
    for (store, redis) in stores().await {
        let kind = if redis.is_some() { "redis" } else { "memory" };
        assert_eq!(store.config_version().await.unwrap(), 0, "{kind}");
        assert_eq!(
            store.config_document().await.unwrap(),
            ConfigDocument::default()
        );
        let mut announced = store.config_changes();
        let doc = json!({"limits": {"max_batch": 1}});
        let first = store
            .put_config(0, &doc, &change("ann", "set"), 10)
            .await
            .unwrap();
        assert_eq!(first, ConfigWrite::Written(1), "{kind}");
        let stale = store
            .put_config(0, &json!({}), &change("bob", "apply"), 11)
            .await
            .unwrap();
        assert_eq!(stale, ConfigWrite::Stale { current: 1 }, "{kind}");
        let stored = store.config_document().await.unwrap();
        assert_eq!(
            (stored.version, &stored.overrides, stored.updated_at),
            (1, &doc, 10),
            "{kind}"
        );
        tokio::time::timeout(WAIT, announced.wait_for(|v| *v == 1))
            .await
            .unwrap_or_else(|_| panic!("{kind}: version 1 announced"))
            .unwrap();
        for i in 1..=105 {
            let w = store
                .put_config(i, &json!({}), &change("ann", "patch"), 20)
                .await
                .unwrap();
            assert_eq!(w, ConfigWrite::Written(i + 1));
        }
        let history = store.config_history(1000).await.unwrap();
        assert_eq!(history.len(), 100, "{kind}: capped");
        assert_eq!(
            (history[0].from_version, history[0].version),
            (105, 106),
            "{kind}"
        );
        assert_eq!(history[0].by, "ann");
        assert_eq!(history[0].value, json!({"x": 1}));
        assert_eq!(store.config_history(2).await.unwrap().len(), 2);
        // A write-back only lands where nothing is stored.
        let lost = ConfigDocument {
            version: 50,
            overrides: json!({}),
            updated_at: 1,
        };
        assert!(!store.restore_config(&lost).await.unwrap(), "{kind}");
        assert_eq!(store.config_version().await.unwrap(), 106, "{kind}");
    }
    let memory = MemoryBackend::new();
    let doc = ConfigDocument {
        version: 7,
        overrides: json!({"a": 1}),
        updated_at: 3,
    };
    assert!(memory.restore_config(&doc).await.unwrap());
    assert_eq!(memory.config_document().await.unwrap(), doc);
}
