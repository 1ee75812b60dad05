//! Incoming and outgoing JSON-RPC frames.
//!
//! [`parse_text`] turns one WebSocket text message into an [`Incoming`]: a
//! single call, a batch, or a client's response to a server → client
//! request. Everything that can be wrong with a frame is decided here, so the
//! connection loop only routes. Outgoing frames are serialised once into
//! [`Frame`] (shared bytes) so a fan-out to many sockets never re-encodes.

use super::error::RpcError;
use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

/// A serialised outgoing frame; cloning shares the bytes.
pub type Frame = Utf8Bytes;

/// One call from a client. `id: None` is a notification (no reply).
#[derive(Debug, Clone)]
pub struct Call {
    pub id: Option<Value>,
    pub method: String,
    pub params: Value,
}

/// A client's answer to a server → client request (`srv-…` ids).
#[derive(Debug, Clone)]
pub struct ClientReply {
    pub id: String,
    pub outcome: Result<Value, RpcError>,
}

/// One element of a frame after classification.
#[derive(Debug)]
pub enum Message {
    Call(Call),
    Reply(ClientReply),
    /// Not a valid JSON-RPC object; answer with this error under this id.
    Invalid {
        id: Value,
        error: RpcError,
    },
}

/// A whole incoming frame.
#[derive(Debug)]
pub enum Incoming {
    Single(Message),
    Batch(Vec<Message>),
    /// The frame itself is unusable (parse error, empty or oversized batch).
    Reject(RpcError),
}

/// Parse a text frame. `max_batch` bounds batches, `max_depth` the nesting.
pub fn parse_text(text: &str, max_batch: usize, max_depth: usize) -> Incoming {
    // serde_json refuses nesting past 128 on its own; this stricter check
    // runs on raw bytes first so a deep frame never builds a deep tree.
    if nesting_depth(text) > max_depth {
        return Incoming::Reject(RpcError::invalid_request(format!(
            "nesting deeper than {max_depth}"
        )));
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Incoming::Reject(RpcError::parse(e.to_string())),
    };
    match value {
        Value::Array(items) if items.is_empty() => {
            Incoming::Reject(RpcError::invalid_request("empty batch"))
        }
        Value::Array(items) if items.len() > max_batch => Incoming::Reject(
            RpcError::invalid_request(format!("batch larger than {max_batch}")),
        ),
        Value::Array(items) => Incoming::Batch(items.into_iter().map(classify).collect()),
        other => Incoming::Single(classify(other)),
    }
}

/// Deepest bracket nesting outside strings.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn classify(value: Value) -> Message {
    let Value::Object(mut obj) = value else {
        return invalid(Value::Null, "not a JSON-RPC object");
    };
    let id = obj.remove("id");
    if let Some(id) = &id
        && !(id.is_string() || id.is_number() || id.is_null())
    {
        return invalid(Value::Null, "id must be a string or a number");
    }
    if let Some(v) = obj.get("jsonrpc")
        && v != "2.0"
    {
        return invalid(id.unwrap_or(Value::Null), "jsonrpc must be \"2.0\"");
    }
    match obj.remove("method") {
        Some(Value::String(method)) => call(id, method, obj),
        Some(_) => invalid(id.unwrap_or(Value::Null), "method must be a string"),
        None => reply(id, obj),
    }
}

fn call(id: Option<Value>, method: String, mut obj: Map<String, Value>) -> Message {
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(_) => {
            return invalid(
                id.unwrap_or(Value::Null),
                "params must be an object or an array",
            );
        }
    };
    Message::Call(Call { id, method, params })
}

fn reply(id: Option<Value>, mut obj: Map<String, Value>) -> Message {
    let Some(Value::String(id)) = id else {
        return invalid(id.unwrap_or(Value::Null), "missing method");
    };
    let outcome = match (obj.remove("result"), obj.remove("error")) {
        (Some(result), None) => Ok(result),
        (None, Some(error)) => match serde_json::from_value::<RpcError>(error) {
            Ok(e) => Err(e),
            Err(_) => return invalid(Value::String(id), "malformed error object"),
        },
        _ => return invalid(Value::String(id), "missing method"),
    };
    Message::Reply(ClientReply { id, outcome })
}

fn invalid(id: Value, reason: &str) -> Message {
    Message::Invalid {
        id,
        error: RpcError::invalid_request(reason),
    }
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RpcError>,
}

#[derive(Serialize)]
struct RequestOut<'a, P: Serialize> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    method: &'a str,
    params: &'a P,
}

/// The JSON of a response (not yet a frame: batches join several).
pub fn response_json(id: &Value, outcome: &Result<Value, RpcError>) -> String {
    let out = ResponseOut {
        jsonrpc: "2.0",
        id,
        result: outcome.as_ref().ok(),
        error: outcome.as_ref().err(),
    };
    to_json(&out)
}

/// A server push: `{"jsonrpc":"2.0","method":…,"params":…}`.
pub fn notification<P: Serialize>(method: &str, params: &P) -> Frame {
    to_json(&RequestOut {
        jsonrpc: "2.0",
        id: None,
        method,
        params,
    })
    .into()
}

/// A server → client request with a `srv-…` id.
pub fn request<P: Serialize>(id: &str, method: &str, params: &P) -> Frame {
    to_json(&RequestOut {
        jsonrpc: "2.0",
        id: Some(id),
        method,
        params,
    })
    .into()
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serialising plain data (Value, strings, numbers) into a String cannot
    // fail; the fallback keeps the connection alive if it ever did.
    serde_json::to_string(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "serialising an outgoing frame failed");
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}"#.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn single(text: &str) -> Message {
        match parse_text(text, 100, 64) {
            Incoming::Single(m) => m,
            other => panic!("expected single, got {other:?}"),
        }
    }

    #[test]
    fn lenient_jsonrpc_and_default_params() {
        let Message::Call(c) = single(r#"{"id":1,"method":"ping"}"#) else {
            panic!()
        };
        assert_eq!(c.id, Some(json!(1)));
        assert_eq!(c.params, json!({}));
    }

    #[test]
    fn notification_has_no_id() {
        let Message::Call(c) = single(r#"{"jsonrpc":"2.0","method":"ping"}"#) else {
            panic!()
        };
        assert!(c.id.is_none());
    }

    #[test]
    fn wrong_version_and_shapes_are_invalid() {
        for text in [
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"id":1,"method":5}"#,
            r#"{"id":{},"method":"ping"}"#,
            r#"{"id":1,"method":"ping","params":3}"#,
            r#"42"#,
            r#"{"id":1}"#,
        ] {
            assert!(
                matches!(single(text), Message::Invalid { .. }),
                "{text} should be invalid"
            );
        }
    }

    #[test]
    fn replies_are_recognised() {
        let Message::Reply(r) = single(r#"{"id":"srv-1","result":{"ok":true}}"#) else {
            panic!()
        };
        assert_eq!(r.outcome, Ok(json!({"ok": true})));
        let Message::Reply(r) = single(r#"{"id":"srv-2","error":{"code":-1,"message":"x"}}"#)
        else {
            panic!()
        };
        assert_eq!(r.outcome.unwrap_err().code, -1);
    }

    #[test]
    fn batches_are_bounded() {
        assert!(matches!(parse_text("[]", 100, 64), Incoming::Reject(_)));
        let big = format!("[{}]", [r#"{"method":"ping"}"#; 3].join(","));
        assert!(matches!(parse_text(&big, 2, 64), Incoming::Reject(_)));
        assert!(matches!(parse_text(&big, 3, 64), Incoming::Batch(v) if v.len() == 3));
    }

    #[test]
    fn parse_errors_and_depth() {
        let Incoming::Reject(e) = parse_text("{not json", 100, 64) else {
            panic!()
        };
        assert_eq!(e.code, crate::protocol::error::PARSE_ERROR);
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let Incoming::Reject(e) = parse_text(&deep, 100, 64) else {
            panic!()
        };
        assert_eq!(e.code, crate::protocol::error::INVALID_REQUEST);
        // Brackets inside strings do not count.
        let text = format!(
            r#"{{"method":"ping","params":{{"s":"{}"}}}}"#,
            "[".repeat(500)
        );
        assert!(matches!(
            parse_text(&text, 100, 64),
            Incoming::Single(Message::Call(_))
        ));
    }

    #[test]
    fn outgoing_frames() {
        let r = response_json(&json!(7), &Ok(json!({"pong": true})));
        assert_eq!(r, r#"{"jsonrpc":"2.0","id":7,"result":{"pong":true}}"#);
        let n = notification("notify", &json!({"a": 1}));
        assert_eq!(
            n.as_str(),
            r#"{"jsonrpc":"2.0","method":"notify","params":{"a":1}}"#
        );
    }
}
