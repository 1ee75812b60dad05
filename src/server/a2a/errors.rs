//! A2A errors: JSON-RPC error objects carrying the A2A codes (-32001 …
//! -32009) or the JSON-RPC ones, with one `google.rpc.ErrorInfo` entry in
//! `data` (its `reason`, and string `metadata` a client surfaces as the
//! error's data). They are answered with HTTP 200, as the JSON-RPC binding
//! wants; only authentication (401), scope (403) and rate limits (429)
//! are HTTP statuses.
//!
//! A gateway error that has no A2A code ([`A2aError::from`] a
//! [`RpcError`]: no agent online, a limit, a timeout) is -32603 with the
//! gateway's own reason (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, …) in the
//! domain `switchyard` and its code in `metadata.gatewayCode`.

use crate::protocol::{RpcError, error as code};
use serde_json::{Map, Value, json};

/// The domain of the reasons the A2A specification defines.
const A2A_DOMAIN: &str = "a2a-protocol.org";
/// The domain of the gateway's own reasons.
const GATEWAY_DOMAIN: &str = "switchyard";

pub const TASK_NOT_FOUND: i32 = -32001;
pub const TASK_NOT_CANCELABLE: i32 = -32002;
pub const PUSH_NOT_SUPPORTED: i32 = -32003;
pub const UNSUPPORTED_OPERATION: i32 = -32004;
pub const VERSION_NOT_SUPPORTED: i32 = -32009;

/// One A2A error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct A2aError {
    pub code: i32,
    pub message: String,
    reason: &'static str,
    domain: &'static str,
    metadata: Map<String, Value>,
}

impl A2aError {
    fn new(code: i32, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reason,
            domain: A2A_DOMAIN,
            metadata: Map::new(),
        }
    }

    /// Add `key: value` to the ErrorInfo's metadata (strings only).
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata
            .insert(key.to_owned(), Value::String(value.into()));
        self
    }

    pub fn parse(detail: impl std::fmt::Display) -> Self {
        Self::new(
            code::PARSE_ERROR,
            "PARSE_ERROR",
            format!("invalid JSON: {detail}"),
        )
    }

    pub fn invalid_request(why: impl Into<String>) -> Self {
        Self::new(code::INVALID_REQUEST, "INVALID_REQUEST", why)
    }

    pub fn method_not_found(method: &str) -> Self {
        let shown: String = method.chars().take(128).collect();
        let hint = if shown.contains('/') {
            " (A2A 0.3 method names are not served: this endpoint speaks A2A 1.0, e.g. SendMessage)"
        } else {
            ""
        };
        Self::new(
            code::METHOD_NOT_FOUND,
            "METHOD_NOT_FOUND",
            format!("method not found: {shown}{hint}"),
        )
        .with("method", shown)
    }

    /// `field` is the offending parameter's path (`message.parts`).
    pub fn invalid_params(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            code::INVALID_PARAMS,
            "INVALID_PARAMS",
            format!("invalid params: {field}: {why}"),
        )
        .with("field", field)
    }

    pub fn task_not_found(id: &str) -> Self {
        let shown: String = id.chars().take(256).collect();
        Self::new(
            TASK_NOT_FOUND,
            "TASK_NOT_FOUND",
            format!("task not found: {shown}"),
        )
        .with("taskId", shown)
    }

    pub fn not_cancelable(why: impl Into<String>) -> Self {
        Self::new(TASK_NOT_CANCELABLE, "TASK_NOT_CANCELABLE", why)
    }

    pub fn unsupported(why: impl Into<String>) -> Self {
        Self::new(UNSUPPORTED_OPERATION, "UNSUPPORTED_OPERATION", why)
    }

    pub fn push_not_supported() -> Self {
        Self::new(
            PUSH_NOT_SUPPORTED,
            "PUSH_NOTIFICATION_NOT_SUPPORTED",
            "push notifications are not supported: stream the task (SendStreamingMessage, SubscribeToTask) or poll it (GetTask)",
        )
    }

    /// The `A2A-Version` asked for (`None`: no header, read as 0.3).
    pub fn version(asked: Option<&str>) -> Self {
        let message = match asked {
            Some(v) => format!(
                "A2A-Version {v} is not supported: this endpoint speaks A2A {}",
                super::PROTOCOL_VERSION
            ),
            None => format!(
                "no A2A-Version header, which means A2A 0.3: this endpoint speaks A2A {} (send A2A-Version: {})",
                super::PROTOCOL_VERSION,
                super::PROTOCOL_VERSION
            ),
        };
        Self::new(VERSION_NOT_SUPPORTED, "VERSION_NOT_SUPPORTED", message)
            .with("supportedVersions", super::PROTOCOL_VERSION)
    }

    /// A gateway error with no A2A code: -32603 with the gateway's reason.
    fn gateway(reason: &'static str, e: &RpcError) -> Self {
        let detail = e
            .data
            .as_ref()
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str);
        let message = match detail {
            Some(d) => format!("{}: {d}", e.message),
            None => e.message.clone(),
        };
        let mut out = Self {
            domain: GATEWAY_DOMAIN,
            ..Self::new(code::INTERNAL_ERROR, reason, message)
        }
        .with("gatewayCode", e.code.to_string());
        if let Some(id) = e
            .data
            .as_ref()
            .and_then(|d| d.get("correlationId"))
            .and_then(Value::as_str)
        {
            out = out.with("correlationId", id);
        }
        out
    }

    /// The JSON-RPC `error` member.
    pub fn to_json(&self) -> Value {
        json!({
            "code": self.code,
            "message": self.message,
            "data": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": self.reason,
                "domain": self.domain,
                "metadata": self.metadata,
            }],
        })
    }
}

impl From<RpcError> for A2aError {
    fn from(e: RpcError) -> Self {
        let detail = |key: &str| {
            e.data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match e.code {
            code::INVALID_PARAMS => Self::invalid_params(&detail("field"), detail("reason")),
            code::NOT_FOUND => Self::new(TASK_NOT_FOUND, "TASK_NOT_FOUND", e.message.clone()),
            // A context's one task at a time, a run that already ended.
            code::CONFLICT => Self::unsupported(format!("{}: {}", e.message, detail("reason"))),
            code::UNAVAILABLE => Self::gateway("UNAVAILABLE", &e),
            code::LIMIT_EXCEEDED | code::RATE_LIMITED => Self::gateway("RESOURCE_EXHAUSTED", &e),
            code::TIMEOUT => Self::gateway("DEADLINE_EXCEEDED", &e),
            code::FORBIDDEN | code::UNAUTHORIZED => Self::gateway("PERMISSION_DENIED", &e),
            _ => Self::gateway("INTERNAL", &e),
        }
    }
}

impl From<crate::backend::BackendError> for A2aError {
    fn from(e: crate::backend::BackendError) -> Self {
        RpcError::from(e).into()
    }
}

/// A JSON-RPC response: `result` or the error, with the request's id.
pub fn response(id: &Value, outcome: Result<Value, A2aError>) -> Value {
    match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(e) => json!({ "jsonrpc": "2.0", "id": id, "error": e.to_json() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_an_error_info() {
        let e = A2aError::task_not_found("t-1").to_json();
        assert_eq!(e["code"], -32001);
        assert_eq!(
            e["data"][0]["@type"],
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        assert_eq!(e["data"][0]["reason"], "TASK_NOT_FOUND");
        assert_eq!(e["data"][0]["metadata"]["taskId"], "t-1");
    }

    #[test]
    fn gateway_errors_map_to_a2a_codes() {
        let e = A2aError::from(RpcError::invalid_params("message", "required"));
        assert_eq!(e.code, -32602);
        assert!(e.message.contains("message: required"), "{}", e.message);
        let e = A2aError::from(RpcError::unavailable("no agent online"));
        assert_eq!(e.code, -32603);
        let json = e.to_json();
        assert_eq!(json["data"][0]["reason"], "UNAVAILABLE");
        assert_eq!(json["data"][0]["domain"], "switchyard");
        assert_eq!(json["data"][0]["metadata"]["gatewayCode"], "-32005");
        assert!(e.message.contains("no agent online"), "{}", e.message);
        assert_eq!(A2aError::from(RpcError::conflict("busy")).code, -32004);
        // An internal error keeps only its correlation id.
        let e = A2aError::from(RpcError::correlated("abc".into())).to_json();
        assert_eq!(e["data"][0]["metadata"]["correlationId"], "abc");
    }

    #[test]
    fn a_missing_version_reads_as_0_3() {
        let e = A2aError::version(None);
        assert_eq!(e.code, -32009);
        assert!(e.message.contains("0.3"), "{}", e.message);
    }
}
