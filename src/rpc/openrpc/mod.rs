//! The protocol reference: an OpenRPC 1.3 document generated from the
//! method table, served at `GET /openrpc.json` and by `rpc.discover`, and
//! rendered to Markdown ([`markdown`], `switchyard openrpc --markdown`,
//! committed as `docs/protocol.md`).
//!
//! Every row of [`METHODS`] becomes a method: its name, aliases
//! (`x-aliases`), requirement (`x-requirement`), whether it runs
//! concurrently (`x-long-running`), its params (by name, from the type the
//! row decodes them into), its result schema and errors ([`Doc`]). The
//! records methods return whole are `components.schemas` (from their
//! types), the error codes `components.errors` (from
//! [`crate::protocol::error::CODES`]). What the server sends unasked is in
//! `x-notifications` and `x-server-requests`, the frame-order guarantees in
//! `x-frame-order`. Nothing here is written twice: a method, a params
//! field or a record type added to the code shows up in the document.

pub mod markdown;

use super::doc::pushes::{PUSHES, REQUESTS};
use super::doc::{self, Doc};
use super::{METHODS, Method};
use crate::auth::Requirement;
use crate::protocol::error::{self, CODES};
use crate::services::system::VERSION;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

/// The version of the OpenRPC specification the document follows.
pub const OPENRPC_VERSION: &str = "1.3.2";

/// The document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// The document as JSON text, built once (`GET /openrpc.json`).
pub fn document_json() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| serde_json::to_string(document()).unwrap_or_default())
}

/// The document's name for a requirement (`x-requirement`).
pub fn requirement_name(requirement: Requirement) -> &'static str {
    match requirement {
        Requirement::Any => "any",
        Requirement::Authenticated => "authenticated",
        Requirement::Scope(scope) => scope.as_str(),
        Requirement::Node => "node",
    }
}

/// Where the two kinds of schemas come from: params (as they are read,
/// every type inlined) and records (as they are written, shared through
/// `components.schemas`).
struct Generators {
    params: SchemaGenerator,
    records: SchemaGenerator,
}

impl Generators {
    fn new() -> Self {
        let draft = || {
            SchemaSettings::draft07().with(|s| {
                s.meta_schema = None;
                s.definitions_path = "/components/schemas".into();
            })
        };
        Self {
            params: draft()
                .with(|s| s.inline_subschemas = true)
                .for_deserialize()
                .into_generator(),
            records: draft().for_serialize().into_generator(),
        }
    }

    /// A schema made with the records generator, in the document's draft.
    fn record(&mut self, make: doc::SchemaFn) -> Value {
        let schema = make(&mut self.records);
        draft07(&mut self.records, schema)
    }
}

/// `schema` after the generator's draft-07 transforms (a `$ref` with
/// siblings becomes an `allOf`, …).
fn draft07(generator: &mut SchemaGenerator, schema: Value) -> Value {
    let Ok(mut schema) = schemars::Schema::try_from(schema) else {
        return json!({});
    };
    for transform in generator.transforms_mut() {
        transform.transform(&mut schema);
    }
    schema.to_value()
}

fn build() -> Value {
    let mut generators = Generators::new();
    let methods: Vec<Value> = METHODS.iter().map(|m| method(m, &mut generators)).collect();
    let notifications: Vec<Value> = PUSHES
        .iter()
        .map(|push| {
            json!({
                "name": push.name,
                "to": push.to,
                "description": push.description,
                "params": generators.record(push.params),
            })
        })
        .collect();
    let requests: Vec<Value> = REQUESTS
        .iter()
        .map(|request| {
            json!({
                "name": request.name,
                "description": request.description,
                "params": generators.record(request.params),
                "result": generators.record(request.result),
            })
        })
        .collect();
    let schemas = generators.records.take_definitions(true);
    let mut document = json!({
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "Switchyard",
            "version": VERSION,
            "description": description(),
            "license": { "name": env!("CARGO_PKG_LICENSE") },
        },
        "servers": [{
            "name": "websocket",
            "url": "ws://{host}/ws",
            "summary": "JSON-RPC 2.0 over WebSocket text frames (also on `/` and `/ws/agent`)",
            "variables": {
                "host": {
                    "default": "127.0.0.1:18789",
                    "description": "the gateway's address (wss:// with TLS)",
                },
            },
        }],
        "methods": methods,
        "components": { "schemas": schemas, "errors": errors() },
        "x-notifications": notifications,
        "x-server-requests": requests,
        "x-frame-order": doc::order(),
    });
    for part in [
        "methods",
        "components",
        "x-notifications",
        "x-server-requests",
    ] {
        rejoin_descriptions(&mut document[part]);
    }
    document
}

/// Doc comments come with their line breaks: every `description` is made
/// one paragraph per blank-line-separated block.
fn rejoin_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => rejoin_descriptions(value),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rejoin_descriptions),
        _ => {}
    }
}

fn method(m: &Method, generators: &mut Generators) -> Value {
    let doc: &Doc = m.doc;
    let params = match m.params {
        Some(schema) => {
            let schema = schema(&mut generators.params).to_value();
            let schema = draft07(&mut generators.params, schema);
            content_descriptors(&schema)
        }
        None => Vec::new(),
    };
    let errors: Vec<Value> = error_codes(m)
        .into_iter()
        .filter_map(|code| CODES.iter().find(|c| c.code == code))
        .map(|c| json!({ "$ref": format!("#/components/errors/{}", c.name) }))
        .collect();
    let mut out = json!({
        "name": m.name,
        "summary": doc.summary,
        "paramStructure": "by-name",
        "params": params,
        "result": { "name": "result", "schema": generators.record(doc.result) },
        "errors": errors,
        "x-aliases": m.aliases,
        "x-requirement": requirement_name(m.requirement),
        "x-long-running": m.long_running,
    });
    if !doc.description.is_empty() {
        out["description"] = json!(doc.description);
    }
    out
}

/// The codes `m` may answer, in the order of the protocol's table.
fn error_codes(m: &Method) -> Vec<i32> {
    let mut codes = vec![error::RATE_LIMITED, error::INTERNAL_ERROR];
    match m.requirement {
        Requirement::Any => {}
        Requirement::Authenticated => codes.push(error::UNAUTHORIZED),
        Requirement::Scope(_) | Requirement::Node => {
            codes.extend([error::UNAUTHORIZED, error::FORBIDDEN]);
        }
    }
    if m.params.is_some() {
        codes.push(error::INVALID_PARAMS);
    }
    codes.extend(m.doc.errors);
    CODES
        .iter()
        .map(|c| c.code)
        .filter(|code| codes.contains(code))
        .collect()
}

/// One content descriptor per property of a params object schema; a
/// property's description moves to its descriptor.
fn content_descriptors(schema: &Value) -> Vec<Value> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, schema)| {
            let mut schema = schema.clone();
            let description = schema.as_object_mut().and_then(|s| s.remove("description"));
            let mut descriptor = json!({
                "name": name,
                "required": required.contains(&name.as_str()),
                "schema": schema,
            });
            if let Some(description) = description {
                descriptor["description"] = description;
            }
            descriptor
        })
        .collect()
}

/// `components.errors`: each code with its message and an example `data`.
fn errors() -> Map<String, Value> {
    CODES
        .iter()
        .map(|c| {
            let example = (c.example)();
            let mut error = json!({ "code": example.code, "message": example.message });
            if let Some(data) = example.data {
                error["data"] = data;
            }
            (c.name.to_owned(), error)
        })
        .collect()
}

/// `info.description`: the protocol around the methods.
fn description() -> String {
    let mut text = String::from(INTRO);
    text.push_str("\n\n## Errors\n\n| code | message (an example) | meaning |\n|---|---|---|\n");
    for c in CODES {
        let message = (c.example)().message;
        text.push_str(&format!("| {} | {message} | {} |\n", c.code, c.meaning));
    }
    text.push_str("\n## Frame order\n\n");
    for guarantee in doc::order() {
        text.push_str(&format!("- {guarantee}\n"));
    }
    text
}

const INTRO: &str = "A real-time gateway for AI agents, tools and their operators: \
JSON-RPC 2.0 over WebSocket text frames. `jsonrpc` may be left out of a request; every \
reply carries it. A call without `id` is a notification: it runs and gets no reply. A \
batch (a JSON array, at most `limits.max_batch` calls) gets one array of replies.

The server pushes notifications (`x-notifications`: `{\"jsonrpc\":\"2.0\",\"method\":…,\
\"params\":…}`) and sends requests to nodes (`x-server-requests`), with string ids \
prefixed `srv-`, answered with a normal response.

Credentials come with the upgrade (`Authorization: Bearer`, `X-API-Key`, a \
`Sec-WebSocket-Protocol` entry `bearer.<token>`, or `?token=`), or in-band with \
`connect {auth}` or `auth`. A method's `x-requirement` is what its caller needs: `any` \
(before authentication too), `authenticated`, an operator scope (`operator.read`, \
`operator.write`, `operator.admin`, `operator.approvals`; `operator.admin` implies the \
others) or `node` (role node; admins pass too). A method marked `x-long-running` waits \
on another party and runs concurrently with the connection's other calls. A name that is \
not built in is routed to a node that registered it (`agent.register {methods}`), else \
-32601.";
