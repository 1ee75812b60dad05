//! `/mcp` driven by the official SDKs, with real processes: two
//! `switchyard` instances share one `redis-server`.
//!
//! - The `mcp` Python package (`tests/mcp/check.py`): a Switchyard Python
//!   SDK agent on instance B serves the tools; the MCP client on A lists
//!   and calls them in the stateless revision (progress, cancellation by
//!   leaving, an approval-gated tool approved by an operator) and in the
//!   handshake revision with every request on the other instance than the
//!   one before, a cancellation included, and goes on in the same session
//!   after A is SIGKILLed.
//! - `@modelcontextprotocol/sdk` on Node (`tests/mcp/check.mjs`): lists
//!   and calls the tools of a node this test serves, with progress.
//!
//! Not a behaviour test: it starts its own Redis and processes.

mod common;

use common::instance::*;
use common::*;
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp");

fn tokens() -> String {
    format!("{TOKENS},node-1:{NODE}:node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_across_instances_and_a_kill() {
    let redis = RedisProcess::start();
    let tokens = tokens();
    let env = [("SWITCHYARD_TOKENS", tokens.as_str())];
    let a = Instance::start(&redis, "a", &env).await;
    let b = Instance::start(&redis, "b", &env).await;
    let url = |i: &Instance| format!("http://127.0.0.1:{}", i.port);
    let pid = a.child.0.id().to_string();
    let run = tokio::process::Command::new("python3")
        .arg(format!("{DIR}/check.py"))
        .args([&url(&a), &url(&b), &pid, WRITER, NODE, ADMIN])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("check.py finished within 2 minutes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'mcp'"),
        "the mcp package is missing: scripts/test-deps.sh installs it"
    );
    assert!(
        output.status.success() && stdout.contains("ALL PASS"),
        "check.py failed:\n{stdout}\n{stderr}\nA: {}\nB: {}",
        a.stderr_text(),
        b.stderr_text()
    );
    for line in stdout.lines().filter(|l| l.starts_with("TIMING")) {
        println!("{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_typescript_client_lists_and_calls_tools() {
    assert!(
        std::path::Path::new(DIR)
            .join("node_modules/@modelcontextprotocol/sdk")
            .is_dir(),
        "run `npm ci` in tests/mcp (scripts/test-deps.sh does)"
    );
    let server = TestServer::default().await;
    let (mut node, _) = caps_node(&server, &[]).await;
    node.call(
        "agent.register",
        json!({"agentId": "tooler", "tools": [
            {"name": "echo", "parameters": {"type": "object"}},
            {"name": "slow"},
        ]}),
    )
    .await;
    let run = tokio::process::Command::new("node")
        .arg(format!("{DIR}/check.mjs"))
        .args([&server.http(""), WRITER])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let serve = async {
        let (id, params) = server_request(&mut node, "invoke").await;
        assert_eq!(params["command"], "echo", "{params}");
        answer(&mut node, &id, params["params"].clone()).await;
        answer_with_progress(&mut node, 3, json!("done")).await;
    };
    let (output, ()) = tokio::join!(
        async {
            tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .expect("check.mjs finished within a minute")
                .expect("node runs")
        },
        serve
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("ALL PASS"),
        "check.mjs failed:\n{stdout}\n{stderr}"
    );
}
