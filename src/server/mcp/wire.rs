//! The HTTP shape of MCP answers: a JSON-RPC response as
//! `application/json` with the status the revision asks for, and the
//! protocol revisions this server speaks.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The stateless revision: every request stands alone, with its version,
/// method and name in headers as well as in the body.
pub const MODERN: &str = "2026-07-28";
/// Revisions with an `initialize` handshake (newest first).
pub const HANDSHAKE: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Error codes of the 2026-07-28 revision.
pub const HEADER_MISMATCH: i32 = -32020;
pub const UNSUPPORTED_VERSION: i32 = -32022;

/// Which revision a request speaks, from its `MCP-Protocol-Version`
/// header (absent: a handshake revision, as `initialize` comes without).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Modern,
    Handshake,
}

/// A JSON-RPC error answered with an HTTP status.
#[derive(Debug)]
pub struct McpError {
    pub status: StatusCode,
    pub code: i32,
    pub message: String,
    pub data: Option<Value>,
}

impl McpError {
    pub fn new(status: StatusCode, code: i32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// -32020: a routing header disagrees with the body.
    pub fn mismatch(what: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            HEADER_MISMATCH,
            format!("header mismatch: {what}"),
        )
    }

    /// An error answered as the revision says: 404 for an unknown method
    /// and 400 for bad requests in the stateless revision; 200 otherwise.
    pub fn rpc(era: Era, e: &crate::protocol::RpcError) -> Self {
        use crate::protocol::error::*;
        let status = match (era, e.code) {
            (Era::Modern, METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
            (Era::Modern, PARSE_ERROR | INVALID_REQUEST | INVALID_PARAMS) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::OK,
        };
        Self {
            status,
            code: e.code,
            message: e.message.clone(),
            data: e.data.clone(),
        }
    }

    pub fn into_response(self, id: &Value) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(data) = self.data {
            error["data"] = data;
        }
        let body = json!({ "jsonrpc": "2.0", "id": id, "error": error });
        json_response(self.status, &body)
    }
}

/// A JSON-RPC result.
pub fn result(id: &Value, result: Value) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "jsonrpc": "2.0", "id": id, "result": result }),
    )
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A `text/event-stream` response of `body`, never cached or buffered
/// by a proxy.
pub fn sse_response(body: axum::body::Body) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One SSE event carrying a JSON-RPC message (no `id:` line: a client
/// would try to resume the stream with it).
pub fn sse_event(message: &Value) -> String {
    format!("event: message\ndata: {message}\n\n")
}

/// A header value as sent: plain, or `=?base64?<utf-8 in base64>?=`.
pub fn decode_header(raw: &str) -> Option<String> {
    use base64::Engine;
    match raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_decode_plain_and_base64() {
        assert_eq!(decode_header("echo").as_deref(), Some("echo"));
        assert_eq!(
            decode_header("=?base64?w6ljaG8=?=").as_deref(),
            Some("écho")
        );
        assert_eq!(decode_header("=?base64?!!?="), None);
    }
}
