//! `node.invoke`: call a connected node (role `node`) and route its answer
//! back, over the server → client request plumbing.
//!
//! A node is addressed by its connection id (`nodeId`) or by a capability
//! it declared in `connect.caps`; the first node with that capability on
//! this instance is chosen. The cluster-wide agent registry and routing
//! policies build on this path.

use super::Ctx;
use crate::auth::Role;
use crate::conn::ConnHandle;
use crate::protocol::RpcError;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Longest accepted invoke timeout.
const MAX_TIMEOUT_MS: u64 = 600_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeParams {
    node_id: Option<String>,
    capability: Option<String>,
    command: String,
    #[serde(default)]
    params: Value,
    timeout_ms: Option<u64>,
}

pub async fn invoke(ctx: &Ctx<'_>, p: InvokeParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let timeout_ms = p
        .timeout_ms
        .unwrap_or(ctx.app.config.limits.request_timeout_ms);
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(RpcError::invalid_params(
            "timeoutMs",
            format!("between 1 and {MAX_TIMEOUT_MS}"),
        ));
    }
    let node = match (&p.node_id, &p.capability) {
        (Some(id), _) => find_by_id(ctx, id)?,
        (None, Some(cap)) => find_by_capability(ctx, cap)?,
        (None, None) => {
            return Err(RpcError::invalid_params(
                "nodeId",
                "nodeId or capability is required",
            ));
        }
    };
    let request = json!({
        "command": p.command,
        "params": p.params,
        "caller": { "connId": ctx.conn.id(), "identity": identity.sub },
    });
    let result = node
        .request("invoke", &request, Duration::from_millis(timeout_ms))
        .await?;
    Ok(json!({ "nodeId": node.id(), "result": result }))
}

fn is_node(conn: &ConnHandle) -> bool {
    conn.identity().is_some_and(|i| i.role == Role::Node)
}

fn find_by_id(ctx: &Ctx<'_>, id: &str) -> Result<ConnHandle, RpcError> {
    ctx.app
        .hub
        .get(id)
        .filter(is_node)
        .ok_or_else(|| RpcError::unavailable(format!("node {id} is not online")))
}

fn find_by_capability(ctx: &Ctx<'_>, capability: &str) -> Result<ConnHandle, RpcError> {
    ctx.app
        .hub
        .all()
        .into_iter()
        .filter(is_node)
        .find(|c| c.state().caps.iter().any(|cap| cap == capability))
        .ok_or_else(|| {
            RpcError::unavailable(format!("no node online with capability {capability}"))
        })
}
