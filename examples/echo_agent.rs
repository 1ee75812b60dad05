//! An agent in a few lines: it registers capability `chat.completions`
//! for model `echo` (and `agent.run`, `chat`), two tools, and answers:
//!
//! - `chat.completions` (the OpenAI-compatible HTTP façade): echoes the
//!   last user message, streamed word by word when asked to stream;
//! - `agent.run`: streams each word of the task as an `agent.event`, then
//!   returns the whole text;
//! - `chat.send`: replies `echo: <message>`;
//! - `invoke` of tool `echo` (returns its arguments) and of tool
//!   `delete_file`, a "dangerous" tool that first asks a human for an
//!   approval and only runs when approved.
//!
//! ```sh
//! cargo run --example echo_agent -- ws://127.0.0.1:18789 <node token>
//! ```
//! (or `SWITCHYARD_URL` / `SWITCHYARD_TOKEN`). The token must be for role
//! `node`.

use serde_json::{Value, json};
use switchyard::client::{Client, Request};
use switchyard::protocol::RpcError;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("SWITCHYARD_URL").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:18789".into());
    let token = args
        .next()
        .or_else(|| std::env::var("SWITCHYARD_TOKEN").ok());

    let client = Client::connect(&url, token.as_deref()).await?;
    client
        .call(
            "connect",
            json!({ "client": { "name": "echo-agent" }, "role": "node" }),
        )
        .await?;
    let entry = client
        .call(
            "agent.register",
            json!({
                "agentId": "echo",
                "name": "Echo",
                "type": "agent",
                "capabilities": ["chat.completions", "agent.run", "chat"],
                "models": ["echo"],
                "maxConcurrency": 8,
                "tools": [
                    {
                        "name": "echo",
                        "description": "Returns its arguments",
                        "parameters": { "type": "object" }
                    },
                    {
                        "name": "delete_file",
                        "description": "Deletes a file (asks a human first)",
                        "parameters": {
                            "type": "object",
                            "properties": { "path": { "type": "string" } },
                            "required": ["path"]
                        }
                    }
                ]
            }),
        )
        .await?;
    println!("registered: {entry}");
    client
        .serve(handle, |event| println!("notification: {}", event.method))
        .await;
    Ok(())
}

async fn handle(request: Request) -> Result<Value, RpcError> {
    match request.method.as_str() {
        "chat.completions" => completion(&request).await,
        "agent.run" => run(&request).await,
        "chat.send" => {
            Ok(json!({ "content": format!("echo: {}", text(&request.params["message"])) }))
        }
        "invoke" => tool(&request).await,
        other => Err(RpcError::method_not_found(other)),
    }
}

/// The text of a message that is a string or `{content}`.
fn text(message: &Value) -> String {
    match message {
        Value::String(s) => s.clone(),
        other => other["content"].as_str().unwrap_or_default().to_owned(),
    }
}

async fn completion(request: &Request) -> Result<Value, RpcError> {
    let last = request.params["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(text)
        .unwrap_or_default();
    let reply = format!("echo: {last}");
    if request.params["stream"] == true {
        for (i, word) in reply.split(' ').enumerate() {
            let delta = if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            };
            let _ = request.progress(json!({ "delta": delta })).await;
        }
    }
    Ok(json!({ "content": reply }))
}

async fn run(request: &Request) -> Result<Value, RpcError> {
    let task = request.params["task"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for word in task.split_whitespace() {
        if request.is_cancelled() {
            return Err(RpcError::new(-32000, "cancelled"));
        }
        let _ = request.event("token", json!({ "text": word })).await;
    }
    Ok(json!({ "output": task }))
}

async fn tool(request: &Request) -> Result<Value, RpcError> {
    let args = request.params["params"].clone();
    match request.params["command"].as_str() {
        Some("echo") => Ok(args),
        Some("delete_file") => {
            let path = args["path"].as_str().unwrap_or_default().to_owned();
            let asked = request
                .client()
                .call(
                    "approval.request",
                    json!({
                        "tool": "delete_file",
                        "args": args,
                        "summary": format!("delete {path}"),
                        "timeoutMs": 25_000,
                    }),
                )
                .await
                .map_err(|e| RpcError::unavailable(e.to_string()))?;
            let decided = request
                .client()
                .call(
                    "approval.wait",
                    json!({ "approvalId": asked["approvalId"], "timeoutMs": 25_000 }),
                )
                .await
                .map_err(|e| RpcError::timeout(e.to_string()))?;
            if decided["status"] == "approved" {
                // A real agent would delete the file here.
                Ok(json!({ "deleted": path, "approvedBy": decided["decidedBy"] }))
            } else {
                Err(RpcError::forbidden(format!(
                    "not approved: {}",
                    decided["status"]
                )))
            }
        }
        other => Err(RpcError::method_not_found(other.unwrap_or("?"))),
    }
}
