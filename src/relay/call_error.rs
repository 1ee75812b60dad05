//! How a relayed call ends without the node's result, as a type: callers
//! match a variant (try the next agent on `Busy`, report `InstanceLost`)
//! instead of reading error JSON, and a client is told the `RpcError` each
//! variant maps to.

use crate::protocol::RpcError;

/// The `reason` in the error data of a call (and a run) whose serving
/// instance was lost mid-call.
pub const INSTANCE_LOST: &str = "instance_lost";

/// Why a relayed call ended without the node's result. Decided where it
/// happens (or decoded once from the relay message's `busy` flag), so
/// callers match on a variant instead of reading error JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The agent is at its `maxConcurrency`: try the next candidate. (The
    /// error is what a client would be told.)
    Busy(RpcError),
    /// The node, its instance or the backend is gone (-32005).
    Gone(String),
    /// The instance serving the call dropped out of the live instances
    /// mid-call (killed, or cut off for `node_ttl`): -32005 with data
    /// `{reason: "instance_lost", instanceId}`, so a caller can tell it
    /// from a refusal and retry elsewhere.
    InstanceLost {
        instance_id: String,
        conn_id: String,
    },
    /// No answer in time (-32006).
    Timeout(String),
    /// The node (or the serving instance for it) answered with an error.
    Remote(RpcError),
}

impl From<CallError> for RpcError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Busy(e) | CallError::Remote(e) => e,
            CallError::Gone(why) => RpcError::unavailable(why),
            CallError::InstanceLost {
                instance_id,
                conn_id,
            } => RpcError::unavailable(INSTANCE_LOST).with_data(serde_json::json!({
                "reason": INSTANCE_LOST,
                "instanceId": instance_id,
                "detail": format!("instance {instance_id} holding node {conn_id} was lost mid-call"),
            })),
            CallError::Timeout(why) => RpcError::timeout(why),
        }
    }
}

impl From<crate::backend::BackendError> for CallError {
    fn from(e: crate::backend::BackendError) -> Self {
        CallError::Remote(e.into())
    }
}
