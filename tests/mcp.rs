//! `/mcp` spoken by hand, byte for byte, on one instance (memory, or
//! Redis in the Redis run): authentication and scopes, both protocol
//! generations (the 2025-11-25 handshake with its session, the stateless
//! 2026-07-28 revision with its header checks), the tools of online
//! agents listed and called (plain JSON, and a stream with progress), and
//! bad input answered with the revision's errors. The official SDKs drive
//! it across instances in `mcp_clients.rs`.

mod common;

use common::*;
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";

/// POST `body` to `/mcp` with `token` and `extra` headers: (status, head, body).
async fn post(
    server: &TestServer,
    token: &str,
    extra: &[(&str, &str)],
    body: &Value,
) -> (u16, String, String) {
    let auth = bearer(token);
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("accept", "application/json, text/event-stream"),
    ];
    headers.extend_from_slice(extra);
    http(
        server.addr,
        "POST",
        "/mcp",
        &headers,
        Some(&body.to_string()),
    )
    .await
}

fn parsed(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The JSON-RPC messages of an SSE body.
fn events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(parsed)
        })
        .collect()
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
    })
}

/// `initialize` in the 2025-11-25 revision: the session id and the reply.
async fn initialize(server: &TestServer) -> (String, Value) {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    let (status, head, body) = post(server, WRITER, &[], &init).await;
    assert_eq!(status, 200, "{body}");
    let sid = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("mcp-session-id: ")
                .map(str::to_owned)
        })
        .expect("an Mcp-Session-Id");
    (sid, parsed(&body))
}

/// A node on `server` offering `echo` and `slow`.
async fn tool_node(server: &TestServer) -> Ws {
    let (mut node, _) = caps_node(server, &[]).await;
    node.call(
        "agent.register",
        json!({"agentId": "tooler", "tools": [
            {"name": "echo", "description": "says it back",
             "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}},
            {"name": "slow", "description": "takes steps"},
        ]}),
    )
    .await;
    node
}

#[tokio::test]
async fn credentials_and_scopes_are_checked() {
    let server = TestServer::default().await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let (status, head, _) = http(server.addr, "POST", "/mcp", &[], Some(&list.to_string())).await;
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    let (status, _, _) = post(&server, "wrong-token-0123456789abcdef", &[], &list).await;
    assert_eq!(status, 401);
    // A reader lists but does not call.
    let (status, _, body) = post(&server, READER, &[], &list).await;
    assert_eq!(status, 200, "{body}");
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {}}});
    let (status, _, body) = post(&server, READER, &[], &call).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(parsed(&body)["error"]["code"], -32003, "{body}");
}

#[tokio::test]
async fn the_handshake_revision_keeps_its_session_in_the_backend() {
    let server = TestServer::default().await;
    let _node = tool_node(&server).await;
    let (sid, reply) = initialize(&server).await;
    assert_eq!(reply["result"]["protocolVersion"], "2025-11-25", "{reply}");
    assert_eq!(
        reply["result"]["serverInfo"]["name"], "switchyard",
        "{reply}"
    );
    let session = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _) = post(&server, WRITER, &session, &initialized).await;
    assert_eq!(status, 202);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let (status, _, body) = post(&server, WRITER, &session, &list).await;
    assert_eq!(status, 200, "{body}");
    let tools = parsed(&body)["result"]["tools"].clone();
    assert_eq!(tools[0]["name"], "echo", "{tools}");
    assert_eq!(
        tools[0]["inputSchema"]["properties"]["text"]["type"],
        "string"
    );
    assert_eq!(
        tools[1]["inputSchema"],
        json!({"type": "object"}),
        "{tools}"
    );
    // Another identity cannot use the session; an unknown one is 404.
    let (status, _, _) = post(&server, ADMIN, &session, &list).await;
    assert_eq!(status, 404);
    let unknown = [
        ("mcp-session-id", "nope"),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let (status, _, body) = post(&server, WRITER, &unknown, &list).await;
    assert_eq!(status, 404, "{body}");
    // Empty lists rather than errors; ping; an unknown method.
    for (method, key) in [("resources/list", "resources"), ("prompts/list", "prompts")] {
        let request = json!({"jsonrpc": "2.0", "id": 3, "method": method});
        let (_, _, body) = post(&server, WRITER, &session, &request).await;
        assert_eq!(parsed(&body)["result"][key], json!([]), "{body}");
    }
    let ping = json!({"jsonrpc": "2.0", "id": 4, "method": "ping"});
    assert_eq!(
        parsed(&post(&server, WRITER, &session, &ping).await.2)["result"],
        json!({})
    );
    let odd = json!({"jsonrpc": "2.0", "id": 5, "method": "sampling/whatever"});
    let (status, _, body) = post(&server, WRITER, &session, &odd).await;
    assert_eq!(
        (status, parsed(&body)["error"]["code"].clone()),
        (200, json!(-32601))
    );
    // DELETE ends it.
    let auth = bearer(WRITER);
    let delete = [
        ("authorization", auth.as_str()),
        ("mcp-session-id", sid.as_str()),
    ];
    let (status, _, _) = http(server.addr, "DELETE", "/mcp", &delete, None).await;
    assert_eq!(status, 204);
    let (status, _, _) = post(&server, WRITER, &session, &list).await;
    assert_eq!(status, 404);
    // The ended session has no stream either.
    let listen = [delete[0], delete[1], ("accept", "text/event-stream")];
    let (status, _, _) = http(server.addr, "GET", "/mcp", &listen, None).await;
    assert_eq!(status, 404);
    let (status, head, _) = http(server.addr, "GET", "/mcp", &delete[..1], None).await;
    assert_eq!(status, 405);
    assert!(
        head.to_ascii_lowercase()
            .contains("allow: post, get, delete"),
        "{head}"
    );
}

#[tokio::test]
async fn the_stateless_revision_checks_its_headers_against_the_body() {
    let server = TestServer::default().await;
    let _node = tool_node(&server).await;
    let v = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "server/discover"),
    ];
    let discover = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta()}});
    let (status, _, body) = post(&server, WRITER, &v, &discover).await;
    assert_eq!(status, 200, "{body}");
    let result = parsed(&body)["result"].clone();
    assert_eq!(result["supportedVersions"], json!([MODERN]), "{result}");
    assert!(result["capabilities"]["tools"].is_object(), "{result}");

    let list =
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": meta()}});
    let h = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/list"),
    ];
    let result = parsed(&post(&server, WRITER, &h, &list).await.2)["result"].clone();
    assert_eq!(result["resultType"], "complete", "{result}");
    assert_eq!(result["ttlMs"], 0, "{result}");
    assert_eq!(result["tools"].as_array().unwrap().len(), 2, "{result}");

    // Mcp-Method that is not the body's method.
    let wrong = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
    ];
    let (status, _, body) = post(&server, WRITER, &wrong, &list).await;
    assert_eq!(
        (status, parsed(&body)["error"]["code"].clone()),
        (400, json!(-32020))
    );
    // Mcp-Name that is not the tool's name (base64 form decoded first).
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"}, "_meta": meta()}});
    let named = |name: &'static str| {
        [
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", name),
        ]
    };
    let (status, _, body) = post(&server, WRITER, &named("slow"), &call).await;
    assert_eq!(
        (status, parsed(&body)["error"]["code"].clone()),
        (400, json!(-32020))
    );
    // No _meta.
    let bare = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"});
    let (status, _, body) = post(&server, WRITER, &h, &bare).await;
    assert_eq!(
        (status, parsed(&body)["error"]["code"].clone()),
        (400, json!(-32602))
    );
    // An unknown method is 404; a version nobody speaks is -32022.
    let odd =
        json!({"jsonrpc": "2.0", "id": 5, "method": "odd/thing", "params": {"_meta": meta()}});
    let (status, _, body) = post(
        &server,
        WRITER,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "odd/thing"),
        ],
        &odd,
    )
    .await;
    assert_eq!(
        (status, parsed(&body)["error"]["code"].clone()),
        (404, json!(-32601))
    );
    let (status, _, body) = post(
        &server,
        WRITER,
        &[("mcp-protocol-version", "1999-01-01")],
        &list,
    )
    .await;
    let error = parsed(&body)["error"].clone();
    assert_eq!(
        (status, error["code"].clone()),
        (400, json!(-32022)),
        "{error}"
    );
    assert_eq!(error["data"]["requested"], "1999-01-01");
    // Notifications are accepted, and nothing answers them.
    let note =
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}});
    assert_eq!(post(&server, WRITER, &h, &note).await.0, 202);
    // Not JSON, a batch, a wrong jsonrpc.
    let auth = bearer(WRITER);
    let raw = |body: &'static str| {
        let auth = auth.clone();
        async move {
            http(
                server.addr,
                "POST",
                "/mcp",
                &[("authorization", auth.as_str())],
                Some(body),
            )
            .await
        }
    };
    let (status, _, body) = raw("{nope").await;
    assert_eq!(
        (status, parsed(&body)["error"]["code"].clone()),
        (400, json!(-32700))
    );
    let (status, _, body) = raw("[]").await;
    assert_eq!(
        (status, parsed(&body)["error"]["code"].clone()),
        (400, json!(-32600))
    );
    let (_, _, body) = raw(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#).await;
    assert_eq!(parsed(&body)["error"]["code"], -32600);
}

#[tokio::test]
async fn a_tool_call_reaches_the_agent_as_json_or_as_a_stream_with_progress() {
    let server = TestServer::default().await;
    let mut node = tool_node(&server).await;
    // Plain JSON for a client that takes only JSON.
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hello"}}});
    let auth = bearer(WRITER);
    let headers = [
        ("authorization", auth.as_str()),
        ("accept", "application/json"),
    ];
    let body = call.to_string();
    let request = http(server.addr, "POST", "/mcp", &headers, Some(&body));
    let serve = async {
        let (id, params) = server_request(&mut node, "invoke").await;
        assert_eq!(params["command"], "echo", "{params}");
        assert_eq!(params["caller"]["via"], "mcp", "{params}");
        answer(&mut node, &id, json!({"echoed": params["params"]["text"]})).await;
    };
    let ((status, head, body), ()) = tokio::join!(request, serve);
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("application/json"), "{head}");
    let result = parsed(&body)["result"].clone();
    assert_eq!(
        result["structuredContent"],
        json!({"echoed": "hello"}),
        "{result}"
    );
    assert_eq!(result["isError"], false);

    // A stream with the agent's progress, then the answer.
    let call = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
        "params": {"name": "slow", "arguments": {}, "_meta": {"progressToken": 8}}});
    let request = post(&server, WRITER, &[], &call);
    let serve = answer_with_progress(&mut node, 3, json!("done"));
    let ((status, head, body), ()) = tokio::join!(request, serve);
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("text/event-stream"), "{head}");
    let messages = events(&body);
    let progress: Vec<&Value> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3, "{body}");
    assert_eq!(progress[0]["params"]["progressToken"], 8);
    let last = messages.last().unwrap();
    assert_eq!(last["id"], 8, "{body}");
    assert_eq!(last["result"]["content"][0]["text"], "done", "{body}");

    // The agent's error is the model's to read; an unknown tool is not.
    let failing = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "echo"}});
    let body = failing.to_string();
    let request = http(server.addr, "POST", "/mcp", &headers, Some(&body));
    let serve = async {
        let (id, _) = server_request(&mut node, "invoke").await;
        answer_error(&mut node, &id, -32000, "the disk is full").await;
    };
    let ((_, _, body), ()) = tokio::join!(request, serve);
    let result = parsed(&body)["result"].clone();
    assert_eq!(result["isError"], true, "{body}");
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("disk is full"),
        "{body}"
    );
    let unknown =
        json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "nope"}});
    let (_, _, body) = post(&server, WRITER, &[], &unknown).await;
    assert_eq!(parsed(&body)["error"]["code"], -32602, "{body}");
}

/// Open `GET /mcp` for session `sid` and read it until `needle` shows or
/// `wait` passes; what was read.
async fn listen_until(
    server: &TestServer,
    sid: &str,
    needle: &str,
    wait: std::time::Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {WRITER}\r\n\
         Accept: text/event-stream\r\nMcp-Session-Id: {sid}\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => break,
        }
    }
    seen
}

#[tokio::test]
async fn a_session_stream_announces_that_the_tools_changed() {
    let server = TestServer::default().await;
    let mut node = tool_node(&server).await;
    let (sid, reply) = initialize(&server).await;
    assert_eq!(
        reply["result"]["capabilities"]["tools"]["listChanged"], true,
        "{reply}"
    );
    let changed = "notifications/tools/list_changed";
    let quiet = std::time::Duration::from_millis(2500);
    let listening = listen_until(&server, &sid, changed, std::time::Duration::from_secs(10));
    let change = async {
        // Nothing changes for a while; then the node offers one more tool.
        tokio::time::sleep(quiet).await;
        node.call(
            "agent.register",
            json!({"agentId": "tooler", "tools": [
                {"name": "echo"}, {"name": "slow"}, {"name": "fresh"}]}),
        )
        .await;
        tokio::time::Instant::now()
    };
    let started = tokio::time::Instant::now();
    let (seen, changed_at) = tokio::join!(listening, change);
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(seen.contains(changed), "no announcement: {seen}");
    assert!(
        changed_at - started >= quiet,
        "announced before the change: {seen}"
    );
    assert_eq!(seen.matches(changed).count(), 1, "{seen}");
    // Without a session there is no stream.
    let auth = bearer(WRITER);
    let (status, _, _) = http(
        server.addr,
        "GET",
        "/mcp",
        &[("authorization", auth.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 405);
}
