//! The A2A endpoint with real processes and the official client: a
//! `redis-server` of the test's own, two gateway instances (A and B) on
//! it, an agent connected to B (the crate's Rust client, capability
//! `agent.run`), and `tests/a2a/check.py` driving the official `a2a-sdk`
//! against A and B — cards, blocking and streamed messages to the agent on
//! the other instance, tasks read, listed and cancelled from either
//! instance, a subscriber joining a running task from the other instance
//! with no gap, 401 / 403, and last a task followed to its end on B after
//! A, streaming it, was SIGKILLed (`pip install a2a-sdk==1.3.0`). Then malformed
//! and refused requests, raw, against an in-process gateway.

mod common;

use common::instance::{Instance, TOKENS};
use common::*;
use serde_json::{Value, json};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::client::{Client, Request};
use switchyard::protocol::RpcError;

/// The test agent's id.
const AGENT: &str = "worker";

/// The runs the agent saw cancelled.
type Cancels = Arc<Mutex<Vec<String>>>;

/// Connect the test agent to `url` (see check.py for what it does) and
/// serve until the test ends; the cancels it sees go to the returned list.
async fn start_agent(url: &str) -> Cancels {
    let client = Client::connect(url, Some(NODE))
        .await
        .expect("agent connects");
    client
        .call(
            "connect",
            json!({ "client": { "name": "a2a-test-agent" }, "role": "node" }),
        )
        .await
        .expect("connect");
    client
        .call(
            "agent.register",
            json!({
                "agentId": AGENT,
                "name": "Worker",
                "capabilities": ["agent.run"],
                "tools": [{ "name": "summarise", "description": "Summarises a text",
                            "parameters": { "type": "object" } }],
            }),
        )
        .await
        .expect("agent.register");
    let cancels = Cancels::default();
    let seen = cancels.clone();
    tokio::spawn(client.serve(
        move |request| {
            let seen = seen.clone();
            async move { run(request, seen).await }
        },
        |_| {},
    ));
    cancels
}

async fn run(request: Request, cancels: Cancels) -> Result<Value, RpcError> {
    if request.method != "agent.run" {
        return Err(RpcError::method_not_found(&request.method));
    }
    let task = request.params["task"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let run_id = request.params["runId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut words = task.split_whitespace();
    match (words.next(), words.next()) {
        (Some("slow"), None) => {
            let _ = request.event("token", json!("working")).await;
            tokio::select! {
                () = request.cancelled() => {
                    cancels.lock().unwrap().push(run_id);
                    Err(RpcError::new(-32000, "cancelled"))
                }
                () = tokio::time::sleep(Duration::from_secs(60)) => Ok(json!("too slow")),
            }
        }
        (Some("count"), Some(n)) => {
            let n: u32 = n.parse().unwrap_or(1);
            for i in 1..=n {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = request
                    .event("token", json!({ "text": format!("t{i}") }))
                    .await;
            }
            Ok(json!({ "output": format!("counted {n}") }))
        }
        (Some("fail"), None) => Err(RpcError::new(-32000, "the agent failed on purpose")),
        (first, _) => {
            if first == Some("stream") {
                // After the streaming client's first snapshot.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let _ = request
                .event("message", json!({ "text": "working on it" }))
                .await;
            let _ = request.event("tool", json!({ "name": "lookup" })).await;
            for word in task.split_whitespace() {
                let _ = request.event("token", json!(word)).await;
            }
            Ok(json!({ "output": task }))
        }
    }
}

/// Wait (bounded) until the detailed card at `addr` lists the agent.
async fn agent_listed(addr: std::net::SocketAddr) -> bool {
    let auth = bearer(WRITER);
    eventually(|| {
        let auth = auth.clone();
        async move {
            let headers = [("authorization", auth.as_str())];
            let (status, _, body) =
                http(addr, "GET", "/.well-known/agent-card.json", &headers, None).await;
            status == 200 && body.contains(&format!(r#""id":"{AGENT}""#))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_client_across_two_instances() {
    let redis = RedisProcess::start();
    let tokens = format!("{TOKENS},reader:{READER}:operator.read,node-1:{NODE}:node");
    let env = [("SWITCHYARD_TOKENS", tokens.as_str())];
    let a = Instance::start(&redis, "a", &env).await;
    let b = Instance::start(&redis, "b", &env).await;
    let cancels = start_agent(&format!("ws://127.0.0.1:{}/ws", b.port)).await;
    assert!(
        agent_listed(a.addr()).await,
        "the agent on B shows on A's card"
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/a2a/check.py");
    let (base_a, base_b) = (
        format!("http://127.0.0.1:{}", a.port),
        format!("http://127.0.0.1:{}", b.port),
    );
    // The script SIGKILLs A last, mid-stream.
    let pid_a = a.child.0.id().to_string();
    let started = Instant::now();
    let output = tokio::task::block_in_place(|| {
        Command::new("python3")
            .args([script, &base_a, &base_b, WRITER, READER, AGENT, &pid_a])
            .output()
            .expect("python3 runs")
    });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'a2a'"),
        "the a2a-sdk package is missing: pip install a2a-sdk==1.3.0"
    );
    assert!(
        output.status.success() && stdout.contains("ALL PASS"),
        "check.py failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}check.py took {:?}", started.elapsed());

    // The agent saw the cancel of the task the client cancelled.
    let task_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CANCELLED "))
        .expect("a cancelled task");
    let (_, run_id) = task_id.rsplit_once('~').expect("<context>~<run>");
    assert!(
        cancels.lock().unwrap().iter().any(|r| r == run_id),
        "the agent saw agent.cancel for run {run_id}: {:?}",
        cancels.lock().unwrap()
    );
}

// ------------------------------------------------ refused and malformed

/// POST a raw body to `path` with `headers`: (status, headers, body).
async fn post(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Value) {
    let (status, head, text) = http(server.addr, "POST", path, headers, Some(body)).await;
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, head, value)
}

/// A JSON-RPC call as `token` with `A2A-Version: 1.0`: (HTTP status, reply).
async fn call(server: &TestServer, token: &str, method: &str, params: Value) -> (u16, Value) {
    let auth = bearer(token);
    let headers = [("authorization", auth.as_str()), ("a2a-version", "1.0")];
    let body = json!({"jsonrpc": "2.0", "id": "r1", "method": method, "params": params});
    let (status, _, reply) = post(server, "/a2a", &headers, &body.to_string()).await;
    (status, reply)
}

fn message(text: &str) -> Value {
    json!({"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": text}]}})
}

#[tokio::test]
async fn malformed_and_refused_requests() {
    let server = TestServer::default().await;
    let versioned = [("a2a-version", "1.0")];
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}).to_string();

    // Credentials first: none → 401 with a Bearer challenge; read-only may
    // read but not send.
    let (status, head, _) = post(&server, "/a2a", &versioned, &body).await;
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    let (status, reply) = call(&server, READER, "SendMessage", message("hi")).await;
    assert_eq!(status, 403, "{reply}");
    let (status, reply) = call(&server, READER, "CancelTask", json!({"id": "x"})).await;
    assert_eq!(status, 403, "{reply}");
    let (status, reply) = call(&server, READER, "ListTasks", json!({})).await;
    assert_eq!(
        (status, &reply["result"]["tasks"]),
        (200, &json!([])),
        "{reply}"
    );

    // The envelope: JSON-RPC errors, HTTP 200.
    let auth = bearer(WRITER);
    let headers = [("authorization", auth.as_str()), ("a2a-version", "1.0")];
    for (raw, code) in [
        ("{not json", -32700),
        ("[]", -32600),
        (r#"{"jsonrpc":"2.0","method":"GetTask"}"#, -32600),
        (
            r#"{"jsonrpc":"2.0","id":"x","method":"GetTask","params":[]}"#,
            -32602,
        ),
    ] {
        let (status, _, reply) = post(&server, "/a2a", &headers, raw).await;
        assert_eq!(status, 200, "{raw}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{raw}: {reply}");
        assert_eq!(reply["jsonrpc"], "2.0", "{reply}");
    }
    let (_, _, reply) = post(&server, "/a2a", &headers, "{not json").await;
    assert_eq!(reply["id"], Value::Null, "{reply}");

    // The version header: none means 0.3, which is not served.
    let writer_only = [("authorization", auth.as_str())];
    let (status, _, reply) = post(&server, "/a2a", &writer_only, &body).await;
    assert_eq!(
        (status, &reply["error"]["code"]),
        (200, &json!(-32009)),
        "{reply}"
    );
    assert_eq!(reply["id"], 1, "{reply}");
    let old = [("authorization", auth.as_str()), ("a2a-version", "0.3")];
    let (_, _, reply) = post(&server, "/a2a", &old, &body).await;
    assert_eq!(reply["error"]["code"], -32009, "{reply}");

    // Methods and params.
    let cases = [
        ("NoSuchMethod", json!({}), -32601),
        ("message/send", message("hi"), -32601),
        ("GetTask", json!({}), -32602),
        ("GetTask", json!({"id": "unknown"}), -32001),
        ("GetTask", json!({"id": "ctx~0123abcd"}), -32001),
        ("GetTask", json!({"id": "x", "historyLength": -1}), -32602),
        ("CancelTask", json!({"id": "ctx~0123abcd"}), -32001),
        ("SubscribeToTask", json!({"id": "ctx~0123abcd"}), -32001),
        ("ListTasks", json!({"pageSize": 0}), -32602),
        ("ListTasks", json!({"pageToken": "garbage"}), -32602),
        ("ListTasks", json!({"status": "done"}), -32602),
        ("SendMessage", json!({}), -32602),
        (
            "SendMessage",
            json!({"message": {"role": "ROLE_USER", "parts": [{"text": "x"}]}}),
            -32602,
        ),
        (
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": []}}),
            -32602,
        ),
        (
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER",
            "parts": [{"text": "x", "url": "https://x"}]}}),
            -32602,
        ),
        (
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER",
            "parts": [{"text": "x"}], "contextId": "not a valid id!"}}),
            -32602,
        ),
        ("SendStreamingMessage", json!({}), -32602),
        ("CreateTaskPushNotificationConfig", json!({}), -32003),
        // No agent online: the gateway's -32005, as an A2A internal error.
        ("SendMessage", message("hi"), -32603),
    ];
    for (method, params, code) in cases {
        let (status, reply) = call(&server, WRITER, method, params.clone()).await;
        assert_eq!(status, 200, "{method} {params}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{method} {params}: {reply}");
        assert_eq!(reply["id"], "r1", "{reply}");
        let info = &reply["error"]["data"][0];
        assert_eq!(
            info["@type"], "type.googleapis.com/google.rpc.ErrorInfo",
            "{reply}"
        );
    }
    let (_, reply) = call(
        &server,
        WRITER,
        "SendMessage",
        json!({"message": {"messageId": "m", "parts": [{"text": "x"}]}}),
    )
    .await;
    assert_eq!(
        reply["error"]["data"][0]["metadata"]["field"], "message.role",
        "{reply}"
    );
    let (_, reply) = call(&server, WRITER, "SendMessage", message("hi")).await;
    assert_eq!(
        reply["error"]["data"][0]["reason"], "UNAVAILABLE",
        "{reply}"
    );
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no agent online"),
        "{reply}"
    );
    let (_, reply) = call(&server, WRITER, "message/send", json!({})).await;
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("A2A 1.0"),
        "{reply}"
    );

    // Cards: public without agents; an unknown agent's detailed card is 404.
    let (status, _, card) = http(
        server.addr,
        "GET",
        "/.well-known/agent-card.json",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{card}");
    let card: Value = serde_json::from_str(&card).unwrap();
    let url = format!("http://{}/a2a", server.addr);
    assert_eq!(
        card["supportedInterfaces"][0]["url"],
        url.as_str(),
        "{card}"
    );
    assert_eq!(
        card["supportedInterfaces"][0]["protocolVersion"], "1.0",
        "{card}"
    );
    let reader = bearer(READER);
    let path = "/a2a/agents/nobody/agent-card.json";
    let (status, _, _) = http(
        server.addr,
        "GET",
        path,
        &[("authorization", reader.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = http(server.addr, "GET", path, &[], None).await;
    assert_eq!(
        status, 200,
        "an anonymous caller is not told whether it exists"
    );
}

/// The whole life of a task on one gateway (the memory backend): sent,
/// read, listed, streamed, cancelled — raw HTTP this time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_a_standalone_gateway() {
    let server = TestServer::default().await;
    let cancels = start_agent(&server.url("/ws")).await;
    assert!(agent_listed(server.addr).await);

    let (status, reply) = call(&server, WRITER, "SendMessage", message("alpha beta")).await;
    assert_eq!(status, 200, "{reply}");
    let task = &reply["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{reply}");
    assert_eq!(
        task["artifacts"][1]["parts"][0]["text"], "alpha beta",
        "{reply}"
    );
    let id = task["id"].as_str().unwrap().to_owned();
    let (_, got) = call(&server, WRITER, "GetTask", json!({"id": id})).await;
    assert_eq!(&got["result"], task, "GetTask answers what SendMessage did");
    let (_, listed) = call(&server, WRITER, "ListTasks", json!({})).await;
    assert_eq!(listed["result"]["totalSize"], 1, "{listed}");
    assert_eq!(listed["result"]["nextPageToken"], "", "{listed}");

    // Streamed: SSE data lines, each a JSON-RPC response, then the end.
    let auth = bearer(WRITER);
    let headers = [("authorization", auth.as_str()), ("a2a-version", "1.0")];
    let mut body = json!({"jsonrpc": "2.0", "id": "s", "method": "SendStreamingMessage"});
    // ("stream …": the agent starts after the stream's first snapshot; a
    // task already over by then is one `task` event.)
    body["params"] = message("stream x y");
    let (status, head, text) = http(
        server.addr,
        "POST",
        "/a2a",
        &headers,
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("JSON data"))
        .collect();
    assert!(!text.contains("event:"), "no event lines: {text}");
    assert!(
        events
            .iter()
            .all(|e| e["id"] == "s" && e["jsonrpc"] == "2.0"),
        "{text}"
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| {
            e["result"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .as_str()
        })
        .collect();
    assert_eq!(kinds.first(), Some(&"task"), "{text}");
    let last = &events.last().unwrap()["result"]["statusUpdate"]["status"]["state"];
    assert_eq!(last, "TASK_STATE_COMPLETED", "{text}");

    // Cancelled: the task says so, the agent was told, a second cancel is
    // refused, and the context takes a new task.
    let mut slow = message("slow");
    slow["configuration"] = json!({"returnImmediately": true});
    let (_, reply) = call(&server, WRITER, "SendMessage", slow).await;
    let task = &reply["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_WORKING", "{reply}");
    let id = task["id"].as_str().unwrap().to_owned();
    let context = task["contextId"].as_str().unwrap().to_owned();
    let mut busy = message("meanwhile");
    busy["message"]["contextId"] = json!(context);
    let (_, reply) = call(&server, WRITER, "SendMessage", busy.clone()).await;
    assert_eq!(
        reply["error"]["code"], -32004,
        "one task at a time per context: {reply}"
    );
    let (_, reply) = call(&server, WRITER, "CancelTask", json!({"id": id})).await;
    assert_eq!(
        reply["result"]["status"]["state"], "TASK_STATE_CANCELED",
        "{reply}"
    );
    let run_id = id.rsplit_once('~').unwrap().1.to_owned();
    assert!(
        eventually(|| {
            let seen = cancels.lock().unwrap().contains(&run_id);
            async move { seen }
        })
        .await,
        "the agent saw the cancel"
    );
    let (_, reply) = call(&server, WRITER, "CancelTask", json!({"id": id})).await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    let (_, reply) = call(&server, WRITER, "SendMessage", busy).await;
    assert_eq!(
        reply["result"]["task"]["contextId"],
        context.as_str(),
        "{reply}"
    );
    assert_eq!(
        reply["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{reply}"
    );
}
