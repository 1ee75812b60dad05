//! Incoming and outgoing JSON-RPC frames.
//!
//! [`parse_text`] turns one WebSocket text message into an [`Incoming`]: a
//! single call, a batch, or a client's response to a server → client
//! request. Everything that can be wrong with a frame is decided here, so the
//! connection loop only routes. Outgoing frames are serialised once into
//! [`Frame`] (shared bytes) so a fan-out to many sockets never re-encodes.

use super::error::RpcError;
use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A serialised outgoing frame; cloning shares the bytes.
pub type Frame = Utf8Bytes;

/// A request id exactly as the client wrote it. JSON-RPC answers with the
/// id it was sent, and a number that does not survive a trip through
/// [`Value`] (past `u64`, below `i64`, `1e3`, `1.50`) is kept as its text.
#[derive(Debug, Clone)]
pub struct Id(Box<RawValue>);

impl Id {
    /// `null`: the id of an answer to a frame whose id could not be read.
    pub fn null() -> Self {
        Self::from_value(&Value::Null)
    }

    fn from_value(value: &Value) -> Self {
        // A `Value` always serialises; `null` is the fallback all the same.
        serde_json::value::to_raw_value(value)
            .or_else(|_| RawValue::from_string("null".into()))
            .map(Self)
            .unwrap_or_else(|_| unreachable!("null is JSON"))
    }

    /// The id's JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// One call from a client. `id: None` is a notification (no reply).
#[derive(Debug, Clone)]
pub struct Call {
    pub id: Option<Id>,
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
        id: Id,
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
    match common_call(text) {
        Some(call) => Incoming::Single(Message::Call(call)),
        None => parse_tree(text, max_batch),
    }
}

/// Parse a frame into a [`Value`] and classify each element.
fn parse_tree(text: &str, max_batch: usize) -> Incoming {
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
        Value::Array(items) => {
            let mut exact = ExactIds::new(text);
            let messages = items.into_iter().enumerate();
            Incoming::Batch(messages.map(|(i, v)| classify(v, i, &mut exact)).collect())
        }
        other => Incoming::Single(classify(other, 0, &mut ExactIds::new(text))),
    }
}

/// The members of a single call that decide what it is, as written.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
}

/// A member that is present, `null` included (`Option`'s own reading
/// would take `"id": null` for no id at all).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The common frame, read without building its tree: one object holding
/// `"jsonrpc":"2.0"` (or none), a `method` string without escapes, an id
/// that is absent, `null`, a string without escapes or an integer, and
/// params that are absent, `null`, an object or an array. Only the params
/// become a [`Value`]. Anything else — a batch, a reply, a repeated
/// member, an id or method that reads differently through [`Value`], a
/// frame that does not parse — is `None`, and [`classify`] decides it
/// from the whole tree, so both roads give the same [`Message`] (a
/// property test holds them to it).
fn common_call(text: &str) -> Option<Call> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let envelope: Envelope = serde_json::from_str(text).ok()?;
    if envelope.jsonrpc.is_some_and(|v| v.get() != r#""2.0""#) {
        return None;
    }
    let method = plain_string(envelope.method?)?.to_owned();
    let id = match envelope.id {
        None => None,
        Some(raw) if plain_id(raw.get()) => Some(Id(raw.to_owned())),
        Some(_) => return None,
    };
    let params = match envelope.params.map(RawValue::get) {
        None | Some("null") => Value::Object(Map::new()),
        Some(raw) if raw.starts_with(['{', '[']) => serde_json::from_str(raw).ok()?,
        Some(_) => return None,
    };
    Some(Call { id, method, params })
}

/// The text of a JSON string written without escapes.
fn plain_string(raw: &RawValue) -> Option<&str> {
    let inner = raw.get().strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// Whether an id reads the same through [`Value`] as written: `null`, a
/// string without escapes, or an integer of at most 18 digits (`raw` has
/// parsed as JSON, so no leading zeros).
fn plain_id(raw: &str) -> bool {
    if raw == "null" {
        return true;
    }
    if raw.starts_with('"') {
        return !raw.contains('\\');
    }
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    (1..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The ids of a frame as written, read only when some numeric id came out
/// of [`Value`] as a float (the rare case: a second parse of the frame).
struct ExactIds<'a> {
    text: &'a str,
    ids: Option<Vec<Option<&'a RawValue>>>,
}

impl<'a> ExactIds<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, ids: None }
    }

    /// The id of element `index` (0 for a single call) as an [`Id`].
    fn id(&mut self, index: usize, value: &Value) -> Id {
        if !value.is_f64() {
            return Id::from_value(value);
        }
        let ids = self.ids.get_or_insert_with(|| raw_ids(self.text));
        match ids.get(index).copied().flatten() {
            Some(raw) => Id(raw.to_owned()),
            None => Id::from_value(value),
        }
    }
}

/// Every element's `id` as written (`None` where it cannot be read).
fn raw_ids<'a>(text: &'a str) -> Vec<Option<&'a RawValue>> {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    let id_of = |item: &'a RawValue| -> Option<&'a RawValue> {
        serde_json::from_str::<IdOnly<'a>>(item.get()).ok()?.id
    };
    let Ok(top) = serde_json::from_str::<&RawValue>(text) else {
        return Vec::new();
    };
    if top.get().starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(top.get()).unwrap_or_default();
        items.into_iter().map(id_of).collect()
    } else {
        vec![id_of(top)]
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

fn classify(value: Value, index: usize, exact: &mut ExactIds) -> Message {
    let Value::Object(mut obj) = value else {
        return invalid(Id::null(), "not a JSON-RPC object");
    };
    let raw_id = obj.remove("id");
    if let Some(id) = &raw_id
        && !(id.is_string() || id.is_number() || id.is_null())
    {
        return invalid(Id::null(), "id must be a string or a number");
    }
    let id = raw_id.as_ref().map(|v| exact.id(index, v));
    if let Some(v) = obj.get("jsonrpc")
        && v != "2.0"
    {
        return invalid(id.unwrap_or_else(Id::null), "jsonrpc must be \"2.0\"");
    }
    match obj.remove("method") {
        Some(Value::String(method)) => call(id, method, obj),
        Some(_) => invalid(id.unwrap_or_else(Id::null), "method must be a string"),
        None => match raw_id {
            // A reply to a server request: its id is one of ours, a string.
            Some(Value::String(srv)) => reply(srv, obj),
            _ => invalid(id.unwrap_or_else(Id::null), "missing method"),
        },
    }
}

fn call(id: Option<Id>, method: String, mut obj: Map<String, Value>) -> Message {
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(_) => {
            return invalid(
                id.unwrap_or_else(Id::null),
                "params must be an object or an array",
            );
        }
    };
    Message::Call(Call { id, method, params })
}

fn reply(id: String, mut obj: Map<String, Value>) -> Message {
    let outcome = match (obj.remove("result"), obj.remove("error")) {
        (Some(result), None) => Ok(result),
        (None, Some(error)) => match serde_json::from_value::<RpcError>(error) {
            Ok(e) => Err(e),
            Err(_) => return invalid(Id::from_value(&id.into()), "malformed error object"),
        },
        _ => return invalid(Id::from_value(&id.into()), "missing method"),
    };
    Message::Reply(ClientReply { id, outcome })
}

fn invalid(id: Id, reason: &str) -> Message {
    Message::Invalid {
        id,
        error: RpcError::invalid_request(reason),
    }
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    jsonrpc: &'static str,
    id: &'a Id,
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
pub fn response_json(id: &Id, outcome: &Result<Value, RpcError>) -> String {
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
    use proptest::prelude::Strategy;
    use serde_json::json;

    fn single(text: &str) -> Message {
        match parse_text(text, 100, 64) {
            Incoming::Single(m) => m,
            other => panic!("expected single, got {other:?}"),
        }
    }

    /// The pieces a generated frame is made of: each list mixes forms
    /// the common reading takes with forms it must leave to the tree.
    const IDS: &[&str] = &[
        "null",
        "0",
        "-0",
        "7",
        "-42",
        "007",
        "123456789012345678",
        "1234567890123456789012",
        "1.5",
        "1e3",
        "-1.0",
        r#""a""#,
        r#""""#,
        r#""a\"b""#,
        r#""\u0041""#,
        r#""é ☃""#,
        "true",
        "{}",
        "[1]",
    ];
    const VERSIONS: &[&str] = &[r#""2.0""#, r#""2.1""#, "2.0", r#""2\u002e0""#, "null"];
    const METHODS: &[&str] = &[
        r#""ping""#,
        r#""channels.publish""#,
        r#""""#,
        r#""pi\u006eg""#,
        "5",
        "null",
        "{}",
    ];
    const PARAMS: &[&str] = &[
        "null",
        "{}",
        r#"{"a":[1,{"b":null}],"c":"d"}"#,
        "[1,2]",
        "[]",
        "5",
        r#""x""#,
        "true",
    ];
    const EXTRAS: &[&str] = &[r#""result":1"#, r#""x":{"y":[]}"#, r#""error":null"#];

    /// A frame from the pieces above, members in the given order, some
    /// of them repeated.
    fn frame_of(members: &[(&str, &str)], spaced: bool) -> String {
        let sep = if spaced { " , " } else { "," };
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| {
                if k.is_empty() {
                    (*v).to_string()
                } else if spaced {
                    format!("\"{k}\" : {v}")
                } else {
                    format!("\"{k}\":{v}")
                }
            })
            .collect();
        format!("{{{}}}", body.join(sep))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// Wherever the common reading takes a frame, it gives what the
        /// whole tree gives.
        #[test]
        fn the_common_reading_agrees_with_the_tree(
            id in proptest::option::of(proptest::sample::select(IDS)),
            version in proptest::option::of(proptest::sample::select(VERSIONS)),
            method in proptest::option::of(proptest::sample::select(METHODS)),
            params in proptest::option::of(proptest::sample::select(PARAMS)),
            extra in proptest::option::of(proptest::sample::select(EXTRAS)),
            repeat in proptest::option::of(0usize..4),
            order in proptest::sample::subsequence(vec![0usize, 1, 2, 3, 4], 0..=5)
                .prop_shuffle(),
            spaced in proptest::bool::ANY,
        ) {
            let all = [
                id.map(|v| ("id", v)),
                version.map(|v| ("jsonrpc", v)),
                method.map(|v| ("method", v)),
                params.map(|v| ("params", v)),
                extra.map(|v| ("", v)),
            ];
            let mut members: Vec<(&str, &str)> =
                order.iter().filter_map(|&i| all[i]).collect();
            if let Some(r) = repeat.and_then(|r| members.get(r).copied()) {
                members.push(r);
            }
            let text = frame_of(&members, spaced);
            if let Some(call) = common_call(&text) {
                let Incoming::Single(tree) = parse_tree(&text, 100) else {
                    panic!("{text}: the tree reads no single message");
                };
                proptest::prop_assert_eq!(
                    format!("{:?}", Message::Call(call)),
                    format!("{tree:?}"),
                    "{}", text
                );
            }
        }
    }

    #[test]
    fn the_common_reading_takes_the_common_frames() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":"c-1","method":"channels.publish","params":{"channel":"a","data":[1]}}"#,
            r#" { "method" : "ping" , "params" : null , "id" : null } "#,
            r#"{"method":"x","params":[1,2],"id":-12,"extra":{"k":"v"}}"#,
            r#"{"method":"x","id":-0}"#,
            r#"{"method":"x","id":0}"#,
            r#"{"method":"x","id":123456789012345678}"#,
        ] {
            let call = common_call(text).unwrap_or_else(|| panic!("{text} took the tree"));
            let Incoming::Single(tree) = parse_tree(text, 100) else {
                panic!("{text}");
            };
            assert_eq!(format!("{:?}", Message::Call(call)), format!("{tree:?}"));
        }
        for text in [
            r#"[{"id":1,"method":"ping"}]"#,
            r#"{"id":1.0,"method":"ping"}"#,
            r#"{"id":1,"method":"p\u0069ng"}"#,
            r#"{"id":1,"id":2,"method":"ping"}"#,
            r#"{"id":"srv-1","result":{}}"#,
            r#"{"id":1,"method":"ping","params":5}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"id":1,"method":"ping"} x"#,
        ] {
            assert!(
                common_call(text).is_none(),
                "{text} took the common reading"
            );
        }
    }

    #[test]
    fn lenient_jsonrpc_and_default_params() {
        let Message::Call(c) = single(r#"{"id":1,"method":"ping"}"#) else {
            panic!()
        };
        assert_eq!(c.id.as_ref().map(Id::get), Some("1"));
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
    fn ids_come_back_as_written() {
        let ids = [
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "1e3",
            "1.50",
            "7",
            "\"a\"",
            "null",
        ];
        for id in ids {
            let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            let Message::Call(c) = single(&text) else {
                panic!("{text}")
            };
            assert_eq!(c.id.as_ref().map(Id::get), Some(id), "{text}");
            let out = response_json(c.id.as_ref().unwrap(), &Ok(json!(1)));
            assert!(out.contains(&format!(r#""id":{id},"#)), "{out}");
        }
        // In a batch each element keeps its own; an invalid element too.
        let text = r#"[{"id":1e2,"method":"a"},{"id":2,"method":"b"},{"id":3.0,"jsonrpc":"1"}]"#;
        let Incoming::Batch(items) = parse_text(text, 10, 64) else {
            panic!()
        };
        let got: Vec<&str> = items
            .iter()
            .map(|m| match m {
                Message::Call(c) => c.id.as_ref().unwrap().get(),
                Message::Invalid { id, .. } => id.get(),
                Message::Reply(_) => panic!("not a reply"),
            })
            .collect();
        assert_eq!(got, ["1e2", "2", "3.0"]);
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
        let seven = Id::from_value(&json!(7));
        let r = response_json(&seven, &Ok(json!({"pong": true})));
        assert_eq!(r, r#"{"jsonrpc":"2.0","id":7,"result":{"pong":true}}"#);
        let n = notification("notify", &json!({"a": 1}));
        assert_eq!(
            n.as_str(),
            r#"{"jsonrpc":"2.0","method":"notify","params":{"a":1}}"#
        );
    }
}
