//! The HTTP side of agents, served by the real `examples/echo_agent.rs`
//! process: the OpenAI-compatible façade driven by the official `openai`
//! Python package (`pip install openai`) — models, chat completions plain
//! and streamed, the Responses API, clean OpenAI-style errors once no agent
//! is online — and `/tools/invoke`, including a tool that waits for a
//! human approval.

mod common;

use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The built echo agent example (cargo builds examples for `cargo test`;
/// built here if missing).
fn echo_agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let binary = dir.join("examples").join("echo_agent");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "echo_agent"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the echo agent failed");
    }
    binary
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python_check(server: &TestServer, mode: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai/check.py");
    let output = Command::new("python3")
        .args([script, &server.http("/v1"), WRITER, mode])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'openai'"),
        "the openai package is missing: pip install openai"
    );
    assert!(
        output.status.success() && stdout.contains("ALL PASS"),
        "check.py {mode} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

async fn echo_online(server: &TestServer, online: bool) -> bool {
    let mut ws = server.client(ADMIN).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        let list = ws.call("agents.list", json!({"online": true})).await;
        let found = list["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["agentId"] == "echo"));
        if found == online {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// A server and the echo agent process connected to it (as a node).
async fn server_with_echo_agent() -> (TestServer, Agent) {
    let server = TestServer::default().await;
    let agent = Command::new(echo_agent_binary())
        .args([&server.url("/ws"), NODE])
        .stdout(Stdio::null())
        .spawn()
        .map(Agent)
        .expect("echo agent starts");
    assert!(
        echo_online(&server, true).await,
        "the echo agent registered"
    );
    (server, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_against_the_echo_agent() {
    let (server, agent) = server_with_echo_agent().await;
    let stdout = tokio::task::block_in_place(|| python_check(&server, "served"));
    assert!(stdout.contains("PASS streamed text"), "{stdout}");

    drop(agent);
    assert!(
        echo_online(&server, false).await,
        "the echo agent went offline"
    );
    let stdout = tokio::task::block_in_place(|| python_check(&server, "absent"));
    assert!(
        stdout.contains("PASS no agent: model_not_found"),
        "{stdout}"
    );
}

/// `POST /tools/invoke` and `GET /tools/invoke` reach the echo agent's
/// tools; its "dangerous" tool waits for a human decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_over_http_with_an_approval() {
    let (server, _agent) = server_with_echo_agent().await;
    let writer = format!("Bearer {WRITER}");
    let auth = [
        ("authorization", writer.as_str()),
        ("content-type", "application/json"),
    ];

    let body = json!({"tool": "echo", "args": {"a": 1}}).to_string();
    let (status, _, reply) = http(server.addr, "POST", "/tools/invoke", &auth, Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
    let reply: serde_json::Value = serde_json::from_str(&reply).expect("JSON");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["agentId"], "echo", "{reply}");
    assert_eq!(reply["result"], json!({"a": 1}), "{reply}");

    let path = "/tools/invoke?tool=echo&args=%7B%22b%22%3A2%7D";
    let (status, _, reply) = http(server.addr, "GET", path, &auth, None).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains(r#""result":{"b":2}"#), "{reply}");

    let body = json!({"tool": "no-such-tool"}).to_string();
    let (status, _, reply) = http(server.addr, "POST", "/tools/invoke", &auth, Some(&body)).await;
    assert_eq!(status, 503, "{reply}");
    let (status, _, _) = http(server.addr, "POST", "/tools/invoke", &[], Some(&body)).await;
    assert_eq!(status, 401);

    // delete_file asks for an approval: approved, then denied.
    let mut approver = server.client(APPROVER).await;
    for (decision, expected) in [("approve", 200), ("deny", 403)] {
        let body = json!({"tool": "delete_file", "args": {"path": "/tmp/x"}}).to_string();
        let ((status, _, reply), ()) = tokio::join!(
            http(server.addr, "POST", "/tools/invoke", &auth, Some(&body)),
            async {
                let asked = approver.expect_push("approval.requested").await;
                assert_eq!(asked["tool"], "delete_file", "{asked}");
                assert_eq!(asked["args"], json!({"path": "/tmp/x"}), "{asked}");
                approver
                    .call(
                        "approval.resolve",
                        json!({"approvalId": asked["approvalId"], "decision": decision}),
                    )
                    .await;
            },
        );
        assert_eq!(status, expected, "{decision}: {reply}");
        if decision == "approve" {
            assert!(reply.contains(r#""deleted":"/tmp/x""#), "{reply}");
            assert!(reply.contains(r#""approvedBy":"approver""#), "{reply}");
        }
    }
}
