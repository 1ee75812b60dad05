//! The HTTP side: probes, metrics, /status, the server API (auth, scopes,
//! errors, rate limit), CORS, and the order of a graceful shutdown.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use switchyard::config::Window;

fn body_json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body ({e}): {body:?}"))
}

/// The value of a response header (case-insensitive name).
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    http(server.addr, "GET", path, headers, None).await
}

async fn post(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    http(server.addr, "POST", path, headers, Some(body)).await
}

/// Asserts the error shape `{"error":{"status","message"}}`.
fn assert_error(status: u16, body: &str, expected: u16) {
    assert_eq!(status, expected, "{body}");
    let v = body_json(body);
    assert_eq!(v["error"]["status"], expected, "{body}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn probes_and_metrics() {
    let server = TestServer::default().await;
    let (status, _, body) = get(&server, "/health", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body_json(&body)["status"], "ok");
    let (status, _, body) = get(&server, "/ready", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body_json(&body)["ready"], true);

    let mut ws = server.client(ADMIN).await;
    ws.call("status", json!({})).await;
    let (status, head, metrics) = get(&server, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(
        header(&head, "content-type").is_some_and(|c| c.starts_with("text/plain")),
        "{head}"
    );
    for name in [
        "switchyard_connections",
        "switchyard_messages_in_total",
        "switchyard_rpc_duration_seconds",
        // Rare events are exported from the start (at 0 until one happens).
        "switchyard_pubsub_dropped_total",
        "switchyard_pubsub_resubscribes_total",
        "switchyard_reaped_connections_total",
        "switchyard_sessions_restored_total",
        "switchyard_refusals_total{reason=\"capacity\"}",
        // The configured cap, next to the count it bounds.
        "switchyard_max_connections",
        // The container's memory limit (0 outside one).
        "switchyard_memory_limit_bytes",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    // The standard process series, read at the scrape: this process has
    // some resident memory and some open descriptors (and has used CPU time,
    // in ticks that may still round to 0).
    for (name, least) in [
        ("process_resident_memory_bytes", 1.0),
        ("process_open_fds", 1.0),
        ("process_cpu_seconds_total", 0.0),
    ] {
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"));
        assert!(value >= least, "{name} = {value}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_messages_in_total{") && l.contains("status")),
        "the status call is counted by method:\n{metrics}"
    );
}

#[tokio::test]
async fn status_needs_credentials() {
    let server = TestServer::default().await;
    let (status, head, body) = get(&server, "/status", &[]).await;
    assert_error(status, &body, 401);
    assert!(header(&head, "www-authenticate").is_some(), "{head}");

    let (status, head, body) = get(
        &server,
        "/status",
        &[("authorization", "Bearer wrong-token-xxxxxxxxxxxx")],
    )
    .await;
    assert_error(status, &body, 401);
    assert!(header(&head, "www-authenticate").is_some(), "{head}");

    let auth = bearer(READER);
    let (status, _, body) = get(&server, "/status", &[("authorization", &auth)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body_json(&body)["nodeId"],
        server.app.instance_id.as_str(),
        "{body}"
    );
    // An API key works too.
    let (status, _, body) = get(&server, "/status", &[("x-api-key", API_KEY)]).await;
    assert_eq!(status, 200, "{body}");
}

/// On a channel with history the HTTP publish is numbered like any other.
#[tokio::test]
async fn api_publish_on_a_channel_with_history_answers_its_offset() {
    let mut config = config();
    keep_history(&mut config, 10);
    let server = TestServer::start(config).await;
    let key = [("x-api-key", API_KEY)];
    for n in 1..=2 {
        let body = json!({"channel": "hist:h", "event": "e", "data": n}).to_string();
        let (status, _, reply) = post(&server, "/api/publish", &key, &body).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(body_json(&reply)["offset"], n, "{reply}");
    }
}

#[tokio::test]
async fn api_publish() {
    let server = TestServer::default().await;
    let mut sub = server.client(READER).await;
    sub.call("subscribe", json!({"channels": ["public:x"]}))
        .await;

    let body = r#"{"channel":"public:x","event":"deploy","data":{"v":2}}"#;
    let (status, _, reply) = post(&server, "/api/publish", &[("x-api-key", API_KEY)], body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(body_json(&reply)["delivered"], 1, "{reply}");
    assert!(
        body_json(&reply).get("offset").is_none(),
        "no history: {reply}"
    );
    let push = sub.expect_push("notify").await;
    assert_eq!(push["channel"], "public:x");
    assert_eq!(push["event"], "deploy");
    assert_eq!(push["data"], json!({"v": 2}));
    assert!(push["timestamp"].as_u64().is_some(), "{push}");

    // Read-only credentials: 403; none: 401 with WWW-Authenticate.
    let auth = bearer(READER);
    let (status, _, reply) = post(&server, "/api/publish", &[("authorization", &auth)], body).await;
    assert_error(status, &reply, 403);
    let (status, head, reply) = post(&server, "/api/publish", &[], body).await;
    assert_error(status, &reply, 401);
    assert!(header(&head, "www-authenticate").is_some(), "{head}");

    // Bad bodies: 400.
    let key = [("x-api-key", API_KEY)];
    let (status, _, reply) = post(&server, "/api/publish", &key, "{not json").await;
    assert_error(status, &reply, 400);
    let (status, _, reply) = post(&server, "/api/publish", &key, r#"{"event":"e"}"#).await;
    assert_error(status, &reply, 400);
    for bad in ["$internal", "has space", ""] {
        let body = json!({"channel": bad, "event": "e", "data": 1}).to_string();
        let (status, _, reply) = post(&server, "/api/publish", &key, &body).await;
        assert_error(status, &reply, 400);
    }
    // None of the rejected requests reached the subscriber.
    sub.expect_no_push("notify", Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn api_broadcast_reaches_every_channel() {
    let server = TestServer::default().await;
    let mut a = server.client(READER).await;
    a.call("subscribe", json!({"channels": ["public:a"]})).await;
    let mut b = server.client(WRITER).await;
    b.call("subscribe", json!({"channels": ["public:b"]})).await;

    let auth = bearer(WRITER);
    let body = r#"{"channels":["public:a","public:b"],"event":"all","data":"hi"}"#;
    let (status, _, reply) =
        post(&server, "/api/broadcast", &[("authorization", &auth)], body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(body_json(&reply)["delivered"], 2, "{reply}");
    let pa = a.expect_push("notify").await;
    assert_eq!(
        (
            pa["channel"].as_str(),
            pa["event"].as_str(),
            pa["data"].as_str()
        ),
        (Some("public:a"), Some("all"), Some("hi"))
    );
    let pb = b.expect_push("notify").await;
    assert_eq!(
        (
            pb["channel"].as_str(),
            pb["event"].as_str(),
            pb["data"].as_str()
        ),
        (Some("public:b"), Some("all"), Some("hi"))
    );

    let (status, _, reply) = post(
        &server,
        "/api/broadcast",
        &[("authorization", &auth)],
        r#"{"channels":[],"event":"e"}"#,
    )
    .await;
    assert_error(status, &reply, 400);
    let auth = bearer(READER);
    let (status, _, reply) =
        post(&server, "/api/broadcast", &[("authorization", &auth)], body).await;
    assert_error(status, &reply, 403);
}

#[tokio::test]
async fn api_disconnect_by_conn_and_by_user() {
    let server = TestServer::default().await;
    let mut victim = server.client(WRITER).await;
    let conn_id = victim.expect_push("welcome").await["connId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut r1 = server.client(READER).await;
    let mut r2 = server.client(READER).await;
    let mut bystander = server.client(ADMIN).await;
    bystander.call("ping", json!({})).await;

    // Admin scope required.
    let writer = bearer(WRITER);
    let body = json!({"connId": conn_id}).to_string();
    let (status, _, reply) = post(
        &server,
        "/api/disconnect",
        &[("authorization", &writer)],
        &body,
    )
    .await;
    assert_error(status, &reply, 403);

    let key = [("x-api-key", API_KEY)];
    let (status, _, reply) = post(&server, "/api/disconnect", &key, &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(body_json(&reply)["disconnected"], 1, "{reply}");
    assert_eq!(victim.expect_close_code().await, 4003);

    let (status, _, reply) = post(&server, "/api/disconnect", &key, r#"{"user":"reader"}"#).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(body_json(&reply)["disconnected"], 2, "{reply}");
    assert_eq!(r1.expect_close_code().await, 4003);
    assert_eq!(r2.expect_close_code().await, 4003);

    // Nobody else was touched.
    assert_eq!(bystander.call("ping", json!({})).await["pong"], true);
    assert!(eventually(|| async { server.app.hub.len() == 1 }).await);
    let (status, _, reply) = post(
        &server,
        "/api/disconnect",
        &key,
        r#"{"connId":"no-such-conn"}"#,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(body_json(&reply)["disconnected"], 0, "{reply}");
    let (status, _, reply) = post(&server, "/api/disconnect", &key, "{}").await;
    assert_error(status, &reply, 400);
}

#[tokio::test]
async fn api_presence_channels_and_sessions() {
    let server = TestServer::default().await;
    let mut a = server.client(READER).await;
    let a_id = a.expect_push("welcome").await["connId"]
        .as_str()
        .unwrap()
        .to_owned();
    a.call("subscribe", json!({"channels": ["public:x"]})).await;
    let mut w = server.client(WRITER).await;
    let w_id = w.expect_push("welcome").await["connId"]
        .as_str()
        .unwrap()
        .to_owned();
    w.call("subscribe", json!({"channels": ["public:x", "public:y"]}))
        .await;
    let session = w
        .call(
            "session.create",
            json!({"sessionId": "http-s1", "meta": {"k": 1}}),
        )
        .await;
    assert_eq!(session["sessionId"], "http-s1");

    let auth = bearer(READER);
    let h = [("authorization", auth.as_str())];
    let (status, _, body) = get(&server, "/api/presence/public:x", &h).await;
    assert_eq!(status, 200, "{body}");
    let v = body_json(&body);
    assert_eq!(v["channel"], "public:x");
    assert_eq!(v["count"], 2, "{body}");
    let mut ids: Vec<&str> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["connId"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![a_id.as_str(), w_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "{body}");
    let identities: Vec<&str> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["identity"].as_str())
        .collect();
    assert!(
        identities.contains(&"reader") && identities.contains(&"writer"),
        "{body}"
    );
    assert_eq!(v["nextCursor"], Value::Null, "{body}");
    // A page at a time: ?limit= and ?cursor=, as presence.get.
    let mut walked = Vec::new();
    let mut path = "/api/presence/public:x?limit=1".to_owned();
    for _ in 0..5 {
        let (status, _, body) = get(&server, &path, &h).await;
        assert_eq!(status, 200, "{body}");
        let v = body_json(&body);
        walked.extend(
            v["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["connId"].as_str().unwrap().to_owned()),
        );
        match v["nextCursor"].as_str() {
            Some(c) => path = format!("/api/presence/public:x?limit=1&cursor={c}"),
            None => break,
        }
    }
    walked.sort_unstable();
    assert_eq!(walked, expected, "every member over the pages");
    for bad in ["limit=0", "limit=many"] {
        let (status, _, body) = get(&server, &format!("/api/presence/public:x?{bad}"), &h).await;
        assert_error(status, &body, 400);
    }

    let (status, _, body) = get(&server, "/api/channels", &h).await;
    assert_eq!(status, 200, "{body}");
    let v = body_json(&body);
    let names: Vec<&str> = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"public:x") && names.contains(&"public:y"),
        "{body}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with('$')),
        "internal channels leaked: {body}"
    );
    let x = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "public:x")
        .unwrap();
    assert_eq!(x["subscribers"], 2, "{body}");
    assert_eq!(v["count"], names.len(), "{body}");

    // Sessions are listed as `session.list` lists them: an outsider (the
    // reader) does not see the writer's session, its owner does.
    let (status, _, body) = get(&server, "/api/sessions", &h).await;
    assert_eq!(status, 200, "{body}");
    let v = body_json(&body);
    assert!(
        !v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["sessionId"] == "http-s1"),
        "an outsider sees the session: {body}"
    );
    let owner = bearer(WRITER);
    let (status, _, body) = get(&server, "/api/sessions", &[("authorization", &owner)]).await;
    assert_eq!(status, 200, "{body}");
    let v = body_json(&body);
    let s = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sessionId"] == "http-s1");
    let s = s.unwrap_or_else(|| panic!("session missing: {body}"));
    assert_eq!(s["ownerIdentity"], "writer", "{body}");
    assert_eq!(s["meta"], json!({"k": 1}), "{body}");
    assert!(
        s.get("resumeToken").is_none(),
        "the resume token is a secret: {body}"
    );

    // Read scope needed, invalid channel 400.
    let (status, _, body) = get(&server, "/api/channels", &[]).await;
    assert_error(status, &body, 401);
    let (status, _, body) = get(&server, "/api/presence/$x", &h).await;
    assert_error(status, &body, 400);
    let nodes = bearer(NODE);
    let (status, _, body) = get(&server, "/api/sessions", &[("authorization", &nodes)]).await;
    assert_error(status, &body, 403);
}

#[tokio::test]
async fn api_rate_limit_per_key() {
    let mut config = config();
    config.rate_limits.http_per_key = Window::new(3, 60_000);
    let server = TestServer::start(config).await;
    let auth = bearer(READER);
    let h = [("authorization", auth.as_str())];
    for i in 0..3 {
        let (status, _, body) = get(&server, "/status", &h).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let (status, head, body) = get(&server, "/status", &h).await;
    assert_error(status, &body, 429);
    let retry: u64 = header(&head, "retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After missing: {head}"));
    assert!(retry >= 1, "{head}");
    // Another key has its own budget.
    let auth = bearer(WRITER);
    let (status, _, body) = get(&server, "/status", &[("authorization", &auth)]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn cors_preflight() {
    let mut config = config();
    config.cors.allowed_origins = vec!["https://app.example.com".into()];
    let server = TestServer::start(config).await;
    let preflight = |origin: &'static str| {
        let addr = server.addr;
        async move {
            http(
                addr,
                "OPTIONS",
                "/api/publish",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "content-type,x-api-key"),
                ],
                None,
            )
            .await
        }
    };
    let (status, head, _) = preflight("https://app.example.com").await;
    assert!((200..300).contains(&status), "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com"),
        "{head}"
    );
    let (_, head, _) = preflight("https://evil.example.com").await;
    assert!(
        header(&head, "access-control-allow-origin").is_none(),
        "{head}"
    );

    // Actual requests carry the header too.
    let (status, head, _) = get(&server, "/health", &[("origin", "https://app.example.com")]).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com"),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_order() {
    let mut config = config();
    config.limits.drain_deadline_ms = 2000;
    config.rate_limits.messages_per_conn = Window::new(100_000, 1_000);
    config.rate_limits.messages_per_identity = Window::new(100_000, 1_000);
    let mut server = TestServer::start(config).await;
    let addr = server.addr;

    let mut client = server.client(WRITER).await;
    client
        .call("subscribe", json!({"channels": ["public:x"]}))
        .await;
    // A subscriber that stopped reading with data still queued keeps the
    // drain going until the deadline.
    let _stuck = stuck_subscriber(
        server.addr,
        &server.url("/ws"),
        &bearer(READER),
        "public:stall",
    )
    .await;
    let mut admin = server.client(ADMIN).await;
    let pad = "p".repeat(128 * 1024);
    for i in 0..64 {
        let r = admin
            .call(
                "publish",
                json!({"channel": "public:stall", "event": "fill", "data": {"i": i, "pad": pad}}),
            )
            .await;
        assert_eq!(r["delivered"], 1);
    }
    assert!(eventually(|| async { server.app.hub.len() == 3 }).await);

    let started = tokio::time::Instant::now();
    server.trigger_stop();
    let shutdown = client.expect_push("shutdown").await;
    assert!(
        shutdown["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{shutdown}"
    );
    assert!(
        shutdown["reconnectAfterMs"].as_u64().is_some(),
        "{shutdown}"
    );
    assert_eq!(client.expect_close_code().await, 1012);

    // Still draining (the stuck client): not ready, no new sockets.
    let (status, _, body) = http(addr, "GET", "/ready", &[], None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body_json(&body)["ready"], false, "{body}");
    match Ws::connect_with(&server.url("/ws"), &[("authorization", &bearer(ADMIN))]).await {
        Err(ConnectError::Http(503, _)) => {}
        Err(other) => panic!("expected 503 while draining, got {other:?}"),
        Ok(_) => panic!("upgrade accepted while draining"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the checks ran inside the drain window"
    );
    // The drain is bounded by its deadline: the server then stops.
    // The drain is bounded by its deadline (2 s): it waited for the stuck
    // client up to then, and the server stopped right after.
    server.stop().await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(4),
        "stopped after {elapsed:?}"
    );
}

// ---------------------------------------------------------------- webhooks

const HOOK_SECRET: &str = "hook-secret-0123456789abcdef";

fn hooks_config() -> switchyard::config::Config {
    let mut c = config();
    c.hooks = vec![
        switchyard::config::HookConfig {
            name: "gh".into(),
            secret: Some(HOOK_SECRET.into()),
        },
        switchyard::config::HookConfig {
            name: "open".into(),
            secret: None,
        },
    ];
    c
}

#[tokio::test]
async fn webhooks_publish_signed_or_authenticated_bodies() {
    let server = TestServer::start(hooks_config()).await;
    let mut ws = server.client(ADMIN).await;
    ws.call("subscribe", json!({"channels": ["hook:gh", "hook:open"]}))
        .await;

    // A signed body: published as event `hook` on hook:gh.
    let body = r#"{"action":"opened","number":7}"#;
    let signature = switchyard::server::tools::sign(HOOK_SECRET, body.as_bytes());
    let (status, _, reply) = post(
        &server,
        "/hooks/gh",
        &[
            ("x-hub-signature-256", &signature),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(body_json(&reply)["delivered"], 1, "{reply}");
    let push = notify_on(&mut ws, "hook:gh").await;
    assert_notify(
        &push,
        "hook:gh",
        "hook",
        &json!({"action": "opened", "number": 7}),
    );

    // Tampered, missing or foreign signatures: 401, nothing published.
    let tampered = r#"{"action":"closed","number":7}"#;
    for headers in [
        vec![("x-signature-256", signature.as_str())],
        vec![],
        vec![("authorization", "Bearer admin-token-0123456789abcdef")],
    ] {
        let (status, _, reply) = post(&server, "/hooks/gh", &headers, tampered).await;
        assert_error(status, &reply, 401);
    }
    ws.expect_no_push("notify", Duration::from_millis(200))
        .await;

    // A hook without a secret takes an API credential with write.
    let (status, _, reply) = post(&server, "/hooks/open", &[], "plain text").await;
    assert_error(status, &reply, 401);
    let reader = bearer(READER);
    let (status, _, reply) = post(&server, "/hooks/open", &[("authorization", &reader)], "x").await;
    assert_error(status, &reply, 403);
    let writer = bearer(WRITER);
    let (status, _, reply) = post(
        &server,
        "/hooks/open",
        &[("authorization", &writer)],
        "plain text",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let push = notify_on(&mut ws, "hook:open").await;
    assert_notify(&push, "hook:open", "hook", &json!("plain text"));

    // Hooks that are not configured do not exist.
    let (status, _, reply) =
        post(&server, "/hooks/nope", &[("authorization", &writer)], "{}").await;
    assert_error(status, &reply, 404);
}

/// Every HTTP route that acts on a channel decides as its WebSocket method
/// does, for the same credential: `POST /api/publish` and
/// `POST /api/broadcast` as `publish`, `GET /api/presence/{channel}` as
/// `presence.get`; `GET /api/channels` lists only what the caller may
/// subscribe to.
#[tokio::test]
async fn http_routes_authorize_as_their_websocket_methods() {
    let server = TestServer::default().await;
    // Someone else's connection, for `conn:<id>`.
    let mut other = server.client(ADMIN).await;
    let other_id = other.expect_push("welcome").await["connId"]
        .as_str()
        .unwrap()
        .to_owned();
    other
        .call(
            "subscribe",
            json!({"channels": ["private:board", "private:team-red", "public:m"]}),
        )
        .await;
    let conn_channel = format!("conn:{other_id}");
    let channels = [
        "public:m",
        "plain",
        "global",
        "approval",
        "user:writer",
        "user:admin",
        conn_channel.as_str(),
        "private:team-red",
        "private:board",
    ];
    let mut refusals = 0;
    for token in [READER, WRITER, ADMIN] {
        let mut ws = server.client(token).await;
        let auth = bearer(token);
        let h = [("authorization", auth.as_str())];
        for channel in channels {
            let ws_publish = ws
                .request(
                    "publish",
                    json!({"channel": channel, "event": "probe", "data": {}}),
                )
                .await;
            let ws_allowed = ws_publish.get("error").is_none();
            if !ws_allowed {
                assert_eq!(ws_publish["error"]["code"], -32003, "{ws_publish}");
                refusals += 1;
            }
            let body = json!({"channel": channel, "event": "probe", "data": {}}).to_string();
            let (status, _, reply) = post(&server, "/api/publish", &h, &body).await;
            let expected = if ws_allowed { 200 } else { 403 };
            assert_eq!(
                status, expected,
                "POST /api/publish {channel} as {token}: {reply} (publish: {ws_publish})"
            );
            let body = json!({"channels": [channel], "event": "probe"}).to_string();
            let (status, _, reply) = post(&server, "/api/broadcast", &h, &body).await;
            assert_eq!(
                status, expected,
                "POST /api/broadcast {channel} as {token}: {reply}"
            );

            let ws_presence = ws
                .request("presence.get", json!({"channel": channel}))
                .await;
            let ws_allowed = ws_presence.get("error").is_none();
            if !ws_allowed {
                assert_eq!(ws_presence["error"]["code"], -32003, "{ws_presence}");
            }
            let (status, _, reply) = get(&server, &format!("/api/presence/{channel}"), &h).await;
            let expected = if ws_allowed { 200 } else { 403 };
            assert_eq!(
                status, expected,
                "GET /api/presence/{channel} as {token}: {reply} (presence.get: {ws_presence})"
            );
        }
        ws.close().await;
    }
    assert!(refusals >= 10, "the matrix refused only {refusals} times");

    // A broadcast naming one forbidden channel publishes nothing.
    let mut listener = server.client(READER).await;
    listener
        .call("subscribe", json!({"channels": ["public:m"]}))
        .await;
    let auth = bearer(WRITER);
    let body = json!({"channels": ["public:m", "approval"], "event": "forged"}).to_string();
    let (status, _, reply) = post(
        &server,
        "/api/broadcast",
        &[("authorization", &auth)],
        &body,
    )
    .await;
    assert_eq!(status, 403, "{reply}");
    listener
        .expect_no_push("notify", Duration::from_millis(300))
        .await;

    // The listing shows a reader neither private channels nor other users'.
    let auth = bearer(READER);
    let (status, _, body) = get(&server, "/api/channels", &[("authorization", &auth)]).await;
    assert_eq!(status, 200, "{body}");
    let v = body_json(&body);
    let names: Vec<&str> = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"public:m"), "{body}");
    assert!(names.contains(&"private:team-red"), "its claim: {body}");
    for hidden in ["private:board", "user:admin"] {
        assert!(!names.contains(&hidden), "{hidden} listed: {body}");
    }
    let auth = bearer(ADMIN);
    let (_, _, body) = get(&server, "/api/channels", &[("authorization", &auth)]).await;
    assert!(body.contains("private:board"), "an admin sees all: {body}");
}

/// The official OpenAI, MCP and A2A clients send their key as
/// `Authorization: Bearer`: a configured API key is accepted that way on
/// `/api` and `/v1`, and a `/v1` 429 says when to retry, as `/api` does.
#[tokio::test]
async fn api_keys_work_as_bearer_and_v1_rate_limits_say_when_to_retry() {
    let mut config = config();
    config.rate_limits.http_per_key = Window::new(3, 60_000);
    let server = TestServer::start(config).await;
    let auth = bearer(API_KEY);
    let h = [("authorization", auth.as_str())];
    let body = r#"{"channel":"public:k","event":"e","data":{}}"#;
    let (status, _, reply) = post(&server, "/api/publish", &h, body).await;
    assert_eq!(status, 200, "{reply}");
    let (status, _, reply) = get(&server, "/v1/models", &h).await;
    assert_eq!(status, 200, "{reply}");
    let (status, _, _) = get(&server, "/v1/models", &h).await;
    assert_eq!(status, 200);
    let (status, head, reply) = get(&server, "/v1/models", &h).await;
    assert_eq!(status, 429, "{reply}");
    let retry: u64 = header(&head, "retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {head}"))
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        body_json(&reply)["error"]["type"],
        "rate_limit_error",
        "{reply}"
    );
    // A wrong key is still refused, as a bearer too.
    let wrong = bearer("not-a-configured-key-0123456789");
    let (status, _, _) = get(&server, "/v1/models", &[("authorization", &wrong)]).await;
    assert_eq!(status, 401);
}

/// Every HTTP answer carries the security headers, errors and probes too.
#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let server = TestServer::default().await;
    let auth = bearer(READER);
    for (path, headers) in [
        ("/health", vec![]),
        ("/ready", vec![]),
        ("/status", vec![("authorization", auth.as_str())]),
        ("/status", vec![]),
        ("/api/channels", vec![("authorization", auth.as_str())]),
        ("/v1/models", vec![("authorization", auth.as_str())]),
        ("/no-such-route", vec![]),
    ] {
        let (status, head, _) = get(&server, path, &headers).await;
        assert!(status > 0, "{path}");
        assert_eq!(
            header(&head, "x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}: {head}"
        );
        assert_eq!(
            header(&head, "cache-control").as_deref(),
            Some("no-store"),
            "{path}: {head}"
        );
        assert_eq!(
            header(&head, "referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}: {head}"
        );
    }
}

/// A body over the size limit is 413, as HTTP says, on every JSON route.
#[tokio::test]
async fn oversized_bodies_answer_413() {
    let server = TestServer::default().await;
    let auth = bearer(WRITER);
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let big = format!(
        r#"{{"channel":"public:big","data":"{}"}}"#,
        "x".repeat(3 << 20)
    );
    for path in [
        "/api/publish",
        "/api/broadcast",
        "/v1/chat/completions",
        "/tools/invoke",
    ] {
        let (status, _, reply) = post(&server, path, &h, &big).await;
        assert_eq!(status, 413, "{path}: {}", &reply[..reply.len().min(300)]);
    }
    let (status, _, _) = post(&server, "/api/publish", &h, "{not json").await;
    assert_eq!(status, 400);
}

/// DNS rebinding: a page on an attacker's name that resolves to a
/// loopback gateway sends that name as `Host` (and as `Origin`, so the
/// same-origin check alone would pass). A loopback gateway answers only to
/// loopback names unless told others; upgrades are refused the same way.
#[tokio::test]
async fn a_loopback_gateway_answers_only_to_loopback_names() {
    let server = TestServer::default().await;
    let port = server.addr.port();
    let auth = bearer(WRITER);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, _, body) = get(
            &server,
            "/status",
            &[("authorization", &auth), ("host", &host)],
        )
        .await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    let evil = format!("rebind.evil.example:{port}");
    let body = r#"{"channel":"public:x","event":"e","data":{}}"#;
    let (status, _, reply) = post(
        &server,
        "/api/publish",
        &[("authorization", &auth), ("host", &evil)],
        body,
    )
    .await;
    assert_error(status, &reply, 403);
    let (status, _, _) = get(&server, "/metrics", &[("host", &evil)]).await;
    assert_eq!(status, 403);
    // Probes answer whatever the name (load balancers send none).
    let (status, _, _) = get(&server, "/health", &[("host", &evil)]).await;
    assert_eq!(status, 200);
    let upgrade = Ws::connect_with(
        &server.url("/ws"),
        &[
            ("host", evil.as_str()),
            ("origin", &format!("http://{evil}")),
            ("authorization", &auth),
        ],
    )
    .await;
    assert!(
        matches!(upgrade, Err(ConnectError::Http(403, _))),
        "the upgrade is refused: {:?}",
        upgrade.err()
    );

    // Configured names replace the loopback ones.
    let mut config = config();
    config.allowed_hosts = vec!["gw.example.com".into()];
    let named = TestServer::start(config).await;
    let h = [("authorization", auth.as_str()), ("host", "gw.example.com")];
    let (status, _, _) = get(&named, "/status", &h).await;
    assert_eq!(status, 200);
    let h = [("authorization", auth.as_str()), ("host", "localhost")];
    let (status, _, _) = get(&named, "/status", &h).await;
    assert_eq!(status, 403);
}

/// `GET /` without an upgrade says what this is and where to connect: the
/// address the request came to, not a placeholder.
#[tokio::test]
async fn the_root_page_names_the_real_address() {
    let server = TestServer::default().await;
    let (status, _, body) = http(server.addr, "GET", "/", &[], None).await;
    assert_eq!(status, 200);
    let url = format!("ws://{}/ws", server.addr);
    assert!(body.contains(&url), "{body}");
}
