//! JSON-RPC error objects and the error-code table of the protocol.
//!
//! Every failure a client can see is an [`RpcError`]. Constructors exist for
//! each code in the table so handlers never spell a raw number, and internal
//! errors carry only a correlation id: the detail goes to the log.

use serde::Serialize;
use serde_json::{Value, json};

pub const PARSE_ERROR: i32 = -32700;
pub const INVALID_REQUEST: i32 = -32600;
pub const METHOD_NOT_FOUND: i32 = -32601;
pub const INVALID_PARAMS: i32 = -32602;
pub const INTERNAL_ERROR: i32 = -32603;
pub const UNAUTHORIZED: i32 = -32000;
pub const NOT_FOUND: i32 = -32001;
pub const LIMIT_EXCEEDED: i32 = -32002;
pub const FORBIDDEN: i32 = -32003;
pub const RATE_LIMITED: i32 = -32004;
pub const UNAVAILABLE: i32 = -32005;
pub const TIMEOUT: i32 = -32006;
pub const CONFLICT: i32 = -32007;

/// The `error` member of a JSON-RPC response.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn parse(detail: impl Into<String>) -> Self {
        Self::new(PARSE_ERROR, "parse error").with_data(json!({ "reason": detail.into() }))
    }

    pub fn invalid_request(reason: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, "invalid request").with_data(json!({ "reason": reason.into() }))
    }

    pub fn method_not_found(method: &str) -> Self {
        let shown: String = method.chars().take(128).collect();
        Self::new(METHOD_NOT_FOUND, "method not found").with_data(json!({ "method": shown }))
    }

    /// `field` names the offending parameter (empty for the whole object).
    pub fn invalid_params(field: &str, reason: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, "invalid params")
            .with_data(json!({ "field": field, "reason": reason.into() }))
    }

    /// An internal failure: a fresh correlation id is returned to the
    /// client and logged together with the real cause.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        let correlation = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(%correlation, %cause, "internal error");
        Self::new(INTERNAL_ERROR, "internal error")
            .with_data(json!({ "correlationId": correlation }))
    }

    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::new(UNAUTHORIZED, "unauthorized").with_data(json!({ "reason": reason.into() }))
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(NOT_FOUND, format!("{what} not found")).with_data(json!({ "id": id }))
    }

    pub fn limit(what: &str, max: usize) -> Self {
        Self::new(LIMIT_EXCEEDED, format!("limit exceeded: {what}"))
            .with_data(json!({ "limit": what, "max": max }))
    }

    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(FORBIDDEN, "forbidden").with_data(json!({ "reason": reason.into() }))
    }

    pub fn rate_limited(retry_after_ms: u64) -> Self {
        Self::new(RATE_LIMITED, "rate limited").with_data(json!({ "retryAfterMs": retry_after_ms }))
    }

    /// How long a rate-limited caller should wait ([`Self::rate_limited`]).
    pub fn retry_after_ms(&self) -> Option<u64> {
        if self.code != RATE_LIMITED {
            return None;
        }
        self.data.as_ref()?.get("retryAfterMs")?.as_u64()
    }

    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(UNAVAILABLE, "unavailable").with_data(json!({ "reason": reason.into() }))
    }

    pub fn timeout(reason: impl Into<String>) -> Self {
        Self::new(TIMEOUT, "timeout").with_data(json!({ "reason": reason.into() }))
    }

    pub fn conflict(reason: impl Into<String>) -> Self {
        Self::new(CONFLICT, "conflict").with_data(json!({ "reason": reason.into() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_the_cause_behind_a_correlation_id() {
        let e = RpcError::internal(&"database password is hunter2");
        assert_eq!(e.code, INTERNAL_ERROR);
        assert!(!serde_json::to_string(&e).unwrap().contains("hunter2"));
        let id = e.data.unwrap()["correlationId"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 32);
    }

    #[test]
    fn every_code_has_a_constructor() {
        let codes = [
            RpcError::parse("x").code,
            RpcError::invalid_request("x").code,
            RpcError::method_not_found("x").code,
            RpcError::invalid_params("f", "x").code,
            RpcError::internal(&"x").code,
            RpcError::unauthorized("x").code,
            RpcError::not_found("session", "x").code,
            RpcError::limit("x", 1).code,
            RpcError::forbidden("x").code,
            RpcError::rate_limited(1).code,
            RpcError::unavailable("x").code,
            RpcError::timeout("x").code,
            RpcError::conflict("x").code,
        ];
        let expected = [
            -32700, -32600, -32601, -32602, -32603, -32000, -32001, -32002, -32003, -32004, -32005,
            -32006, -32007,
        ];
        assert_eq!(codes, expected);
    }
}
