//! `invoke`: a node on the last URL answering every `invoke` at once, and
//! callers on the first URL calling `node.invoke` on it back to back.

use super::BenchError;
use super::common::{call, call_loop, connect, percentiles};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A node on the last URL answering every `invoke` at once; callers on the
/// first URL calling `node.invoke` on it back to back for `seconds`: the
/// routed round trip caller → instance → (Redis) → node's instance → node
/// and back.
pub async fn invoke(
    urls: &[String],
    token: &str,
    connections: usize,
    seconds: u64,
) -> Result<Value, BenchError> {
    let last = urls
        .last()
        .ok_or_else(|| BenchError::Protocol("no URL".into()))?;
    let mut node = connect(last, token).await?;
    let agent_id = format!("bench-{}", std::process::id());
    let register = json!({
        "agentId": agent_id,
        "capabilities": ["bench"],
        "maxConcurrency": (connections * 2).max(1),
    });
    call(&mut node, 1, "agent.register", register).await?;
    let answering = tokio::spawn(async move {
        while let Some(Ok(msg)) = node.next().await {
            let Message::Text(text) = msg else { continue };
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            if frame["method"] == "invoke" && frame["id"].is_string() {
                let reply = json!({"jsonrpc": "2.0", "id": frame["id"], "result": frame["params"]["params"]});
                if node
                    .send(Message::Text(reply.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let params =
        json!({"nodeId": agent_id, "command": "echo", "params": {"n": 1}, "timeoutMs": 5000});
    let all = call_loop(&urls[0], token, connections, seconds, "node.invoke", params).await;
    answering.abort();
    let all = all?;
    Ok(json!({
        "scenario": "invoke",
        "connections": connections,
        "seconds": seconds,
        "cross_instance": urls.len() > 1,
        "calls": all.len(),
        "calls_per_second": (all.len() as f64 / seconds as f64).round(),
        "latency": percentiles(all),
    }))
}
