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

/// One code of the protocol, for its reference: what it means and an
/// error of that code as a handler answers it (its `message` and `data`).
pub struct Code {
    pub code: i32,
    /// Its name in the reference.
    pub name: &'static str,
    pub meaning: &'static str,
    pub example: fn() -> RpcError,
}

/// Every code of the protocol, in the order of the constants above.
pub const CODES: &[Code] = &[
    Code {
        code: PARSE_ERROR,
        name: "ParseError",
        meaning: "the frame is not JSON",
        example: || RpcError::parse("expected value at line 1 column 1"),
    },
    Code {
        code: INVALID_REQUEST,
        name: "InvalidRequest",
        meaning: "not a JSON-RPC object, a binary frame, an empty batch or one too big",
        example: || RpcError::invalid_request("missing method"),
    },
    Code {
        code: METHOD_NOT_FOUND,
        name: "MethodNotFound",
        meaning: "no such method, and no node serves it",
        example: || RpcError::method_not_found("skills.install"),
    },
    Code {
        code: INVALID_PARAMS,
        name: "InvalidParams",
        meaning: "`data.field` names the offending parameter and `data.reason` says why",
        example: || RpcError::invalid_params("channels", "at least one channel"),
    },
    Code {
        code: INTERNAL_ERROR,
        name: "InternalError",
        meaning: "a failure inside the gateway; the log has the cause under `data.correlationId`",
        example: || RpcError::correlated("4f1c2a9d8e7b4c3a9f0e1d2c3b4a5968".into()),
    },
    Code {
        code: UNAUTHORIZED,
        name: "Unauthorized",
        meaning: "not authenticated, or bad credentials",
        example: || RpcError::unauthorized("authenticate first (connect or auth)"),
    },
    Code {
        code: NOT_FOUND,
        name: "NotFound",
        meaning: "the session, approval, agent, run or connection named does not exist \
                  (or is not visible to the caller); the message names what",
        example: || RpcError::not_found("session", "s-42"),
    },
    Code {
        code: LIMIT_EXCEEDED,
        name: "LimitExceeded",
        meaning: "a limit was reached (sessions, subscriptions, members…); the message and \
                  `data.limit` name it, `data.max` is its value",
        example: || RpcError::limit("subscriptions per connection", 100),
    },
    Code {
        code: FORBIDDEN,
        name: "Forbidden",
        meaning: "authenticated, but lacking the scope, role or right (channel rule, session owner)",
        example: || RpcError::forbidden("publish requires scope operator.write"),
    },
    Code {
        code: RATE_LIMITED,
        name: "RateLimited",
        meaning: "too many calls; retry after `data.retryAfterMs`",
        example: || RpcError::rate_limited(250),
    },
    Code {
        code: UNAVAILABLE,
        name: "Unavailable",
        meaning: "no agent or provider online for this, or the backend is unreachable",
        example: || RpcError::unavailable("no agent online"),
    },
    Code {
        code: TIMEOUT,
        name: "Timeout",
        meaning: "no answer in time from an agent, an approver or a provider, or cancelled by the caller",
        example: || RpcError::timeout("no agent accepted the run"),
    },
    Code {
        code: CONFLICT,
        name: "Conflict",
        meaning: "already exists, already decided, not running, or a version mismatch",
        example: || RpcError::conflict("the run already ended"),
    },
];

/// The `error` member of a JSON-RPC response.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
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
        Self::correlated(correlation)
    }

    /// The internal error the log holds under `correlation`.
    pub fn correlated(correlation: String) -> Self {
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
        let catalogued: Vec<i32> = CODES.iter().map(|c| c.code).collect();
        assert_eq!(catalogued, expected, "every code, in order");
        for code in CODES {
            assert_eq!((code.example)().code, code.code, "{}", code.name);
        }
    }
}
