//! What the protocol reference says of each method besides its row: a
//! summary, its rules in words, the JSON Schema of its result and the
//! errors particular to it ([`Doc`]); and what the server sends unasked
//! ([`pushes`]).
//!
//! Each row of the method table names its [`Doc`], so a method cannot be
//! added without one; the params schema comes from the type the row
//! decodes the params into. Result schemas are written here, one file per
//! namespace, with the helpers below; records the server stores and
//! returns whole (sessions, agents, runs, approvals, presence entries)
//! are described by their types (`schemars`), so those cannot drift.

mod agent_defs;
mod agents;
mod approvals;
mod channels;
mod cron;
mod devices;
pub mod pushes;
mod runs;
mod runtime_config;
mod sessions;
mod system;

pub use agent_defs::*;
pub use agents::*;
pub use approvals::*;
pub use channels::*;
pub use cron::*;
pub use devices::*;
pub use runs::*;
pub use runtime_config::*;
pub use sessions::*;
pub use system::*;

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// A JSON Schema built with the generator that holds the shared records
/// (`components.schemas`).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Value;

/// A method's entry in the reference.
pub struct Doc {
    /// One line.
    pub summary: &'static str,
    /// Who may call it, what it does, what it pushes (Markdown).
    pub description: &'static str,
    /// The JSON Schema of its result.
    pub result: SchemaFn,
    /// Codes it may answer besides those every call may (rate limited,
    /// internal) and those its requirement and params imply (unauthorized,
    /// forbidden, invalid params).
    pub errors: &'static [i32],
}

/// An object schema. A name ending in `?` is optional; the others are
/// always present.
fn object(properties: &[(&str, Value)]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (name, schema) in properties {
        let name = match name.strip_suffix('?') {
            Some(optional) => optional,
            None => {
                required.push(json!(name));
                name
            }
        };
        props.insert(name.to_string(), schema.clone());
    }
    json!({ "type": "object", "properties": props, "required": required })
}

/// An [`object`] schema with more properties, named as [`object`] takes
/// them.
fn with(mut schema: Value, properties: &[(&str, Value)]) -> Value {
    let more = object(properties);
    if let (Some(into), Some(from)) = (
        schema["properties"].as_object_mut(),
        more["properties"].as_object(),
    ) {
        into.extend(from.clone());
    }
    if let (Some(into), Some(from)) = (
        schema["required"].as_array_mut(),
        more["required"].as_array(),
    ) {
        into.extend(from.iter().cloned());
    }
    schema
}

/// An object whose keys are free and whose values are `values`.
fn map(values: Value) -> Value {
    json!({ "type": "object", "additionalProperties": values })
}

fn string() -> Value {
    json!({ "type": "string" })
}

/// A count, size or offset.
fn count() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

/// A time: milliseconds since the Unix epoch.
fn ms() -> Value {
    json!({ "type": "integer", "minimum": 0, "description": "Unix time in milliseconds" })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

/// Always this value.
fn constant(value: impl Into<Value>) -> Value {
    json!({ "const": value.into() })
}

/// One of these strings.
fn one_of(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

fn strings() -> Value {
    array(string())
}

/// `schema` or `null`.
fn nullable(schema: Value) -> Value {
    json!({ "anyOf": [schema, { "type": "null" }] })
}

/// Any JSON value.
fn any() -> Value {
    json!({})
}

/// `schema` with a description.
fn described(mut schema: Value, text: &str) -> Value {
    schema["description"] = json!(text);
    schema
}

/// The schema of `T`, a reference to `components.schemas`.
fn record<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

/// `{count, <key>: [items]}`: a whole list.
fn counted(key: &str, items: Value) -> Value {
    object(&[("count", count()), (key, array(items))])
}

/// `{count, total?, <key>: [items], nextCursor}`: one page of a list.
fn paged(head: &[(&str, Value)], key: &str, items: Value) -> Value {
    let mut properties = head.to_vec();
    properties.extend([
        ("count", described(count(), "entries in this page")),
        (key, array(items)),
        (
            "nextCursor",
            described(
                nullable(string()),
                "pass it back as `cursor` for the next page; null on the last",
            ),
        ),
    ]);
    object(&properties)
}

/// The epoch fields of a log read: which epoch the offsets belong to,
/// and whether the caller's offset belonged to an earlier one.
fn epoch_fields() -> [(&'static str, Value); 2] {
    [
        (
            "epoch",
            described(
                string(),
                "the backend's epoch the offsets belong to; it changes when the backend lost its \
                 state (Redis restarted empty) and the logs started over",
            ),
        ),
        (
            "epochChanged?",
            described(
                boolean(),
                "true when the offset asked for belonged to an earlier epoch: read from the new \
                 epoch's start, and `complete` is false",
            ),
        ),
    ]
}

/// What a replay did: `{replayed, latest, complete, epoch}`.
fn replayed() -> Value {
    let mut properties = vec![
        (
            "replayed",
            described(count(), "logged frames queued before the reply"),
        ),
        (
            "latest",
            described(count(), "the newest offset when the log was read"),
        ),
        (
            "complete",
            described(
                boolean(),
                "nothing after the asked offset was missing from the log",
            ),
        ),
    ];
    properties.extend(epoch_fields());
    object(&properties)
}

/// A page of a log: `head` plus `{events, latest, complete, more}`.
fn log_page(head: &[(&str, Value)], event: Value) -> Value {
    let mut properties = head.to_vec();
    properties.extend([
        ("events", described(array(event), "oldest first")),
        (
            "latest",
            described(count(), "the newest offset given so far"),
        ),
        (
            "complete",
            described(
                boolean(),
                "nothing between `since` and the first event returned is missing",
            ),
        ),
        (
            "more",
            described(boolean(), "newer events than those returned exist"),
        ),
    ]);
    properties.extend(epoch_fields());
    object(&properties)
}

/// The frame-order guarantees of the protocol.
pub fn order() -> Vec<String> {
    let guarantees = [
        "`welcome` is the first frame on every connection, before any reply or push (a \
         pending approval's catch-up, a publication); it is sent once the connection's \
         implicit channels are in place.",
        "A connection authenticated at the upgrade receives every publication on its \
         implicit channels (`global`, `user:<sub>`, `conn:<connId>`, and `approval` for \
         approvers) made after its `welcome`; one that authenticates in-band, every \
         publication made after its successful `connect` or `auth` reply.",
        "Calls on one connection run one at a time, in the order they arrive, and are \
         answered in that order. Methods marked long-running (`x-long-running`: they wait \
         on a node or a decision) run concurrently instead, at most {MAX_CALLS} per \
         connection, and answer when done: replies to later calls may come first. Calls in \
         a batch run in order and are answered together, in one array in their order.",
        "A `subscribe` reply comes once the subscription is in place everywhere: a \
         publication made after the reply reaches the subscriber.",
        "Publications on one channel reach each subscriber in the order they were \
         published. On a channel with history every publication is numbered as it is \
         published (`offset` 1, 2, 3…) and every subscriber receives them in that order.",
        "A session's `session.event`s and the `agent.event`s of its runs are numbered \
         together (`offset` 1, 2, 3…) and reach every member, on every instance, in that \
         order.",
        "`subscribe` with `recover` and `session.resume` queue what was missed before their \
         reply; live frames follow without gap or duplicate.",
        "The `invoke.progress` pushes of a call reach the caller before the call's reply.",
        "On shutdown every connection receives `shutdown`, after what was already queued to \
         it, then close code 1012.",
    ];
    let max_calls = crate::conn::MAX_CALLS_IN_FLIGHT.to_string();
    guarantees
        .iter()
        .map(|text| text.replace("{MAX_CALLS}", &max_calls))
        .collect()
}
