//! The OpenRPC document rendered as Markdown (`docs/protocol.md`): an
//! index of the methods, then each method, notification, server request
//! and shared schema with its fields in a table. Nested objects are
//! flattened into dotted field names (`server.version`, `tools[].name`).

use serde_json::Value;
use std::fmt::Write as _;

/// How to regenerate the committed rendering.
pub const REGENERATE: &str = "cargo run -- openrpc --markdown > docs/protocol.md";

/// `document` (an OpenRPC document as [`super::document`] builds it) as
/// Markdown.
pub fn render(document: &Value) -> String {
    let mut out = String::new();
    let info = &document["info"];
    let _ = writeln!(
        out,
        "# {} protocol reference (version {})\n",
        text(&info["title"]),
        text(&info["version"])
    );
    let _ = writeln!(
        out,
        "<!-- Generated from the method table by `{REGENERATE}`; do not edit. -->\n"
    );
    let _ = writeln!(
        out,
        "The machine-readable form of this page is an OpenRPC {} document, served at \
         `GET /openrpc.json` and answered by the method `rpc.discover`.\n",
        text(&document["openrpc"])
    );
    out.push_str(text(&info["description"]));
    out.push('\n');
    methods(&mut out, document);
    notifications(&mut out, document);
    requests(&mut out, document);
    schemas(&mut out, document);
    // One blank line between blocks, one newline at the end.
    while out.contains("\n\n\n") {
        out = out.replace("\n\n\n", "\n\n");
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

fn methods(out: &mut String, document: &Value) {
    let methods = list(&document["methods"]);
    out.push_str(
        "\n## Methods\n\n| method | aliases | requirement | summary |\n|---|---|---|---|\n",
    );
    for m in methods {
        let name = text(&m["name"]);
        let _ = writeln!(
            out,
            "| [`{name}`](#{}) | {} | {} | {} |",
            anchor(&format!("`{name}`")),
            codes(&m["x-aliases"]),
            text(&m["x-requirement"]),
            cell(text(&m["summary"])),
        );
    }
    for m in methods {
        let name = text(&m["name"]);
        let _ = writeln!(out, "\n### `{name}`\n\n{}.\n", text(&m["summary"]));
        if let Some(description) = m["description"].as_str() {
            let _ = writeln!(out, "{description}\n");
        }
        let runs = if m["x-long-running"] == true {
            "runs concurrently with the connection's other calls (long-running)"
        } else {
            "runs in order"
        };
        let _ = writeln!(out, "Requirement: `{}`; {runs}.", text(&m["x-requirement"]));
        if !list(&m["x-aliases"]).is_empty() {
            let _ = writeln!(out, "Aliases: {}.", codes(&m["x-aliases"]));
        }
        out.push('\n');
        let params = list(&m["params"]);
        if params.is_empty() {
            out.push_str("Params: none.\n\n");
        } else {
            out.push_str("Params (by name):\n\n");
            let mut rows = Vec::new();
            for p in params {
                let at = rows.len();
                field(
                    &mut rows,
                    text(&p["name"]),
                    &p["schema"],
                    p["required"] == true,
                );
                rows[at].description = one_line(text(&p["description"]));
            }
            table(out, &rows);
        }
        block(out, "Result", &m["result"]["schema"]);
        let errors: Vec<String> = list(&m["errors"])
            .iter()
            .filter_map(|e| {
                let name = e["$ref"].as_str()?.rsplit('/').next()?;
                let code = &document["components"]["errors"][name]["code"];
                Some(format!("{code} {}", words(name)))
            })
            .collect();
        let _ = writeln!(out, "Errors: {}.", errors.join(", "));
    }
}

fn notifications(out: &mut String, document: &Value) {
    out.push_str("\n## Notifications the server pushes\n");
    for n in list(&document["x-notifications"]) {
        let _ = writeln!(
            out,
            "\n### `{}` (notification)\n\nTo {}. {}\n",
            text(&n["name"]),
            text(&n["to"]),
            text(&n["description"])
        );
        block(out, "Params", &n["params"]);
    }
}

fn requests(out: &mut String, document: &Value) {
    out.push_str("\n## Requests the server sends to nodes\n");
    for r in list(&document["x-server-requests"]) {
        let _ = writeln!(
            out,
            "\n### `{}` (server request)\n\n{}\n",
            text(&r["name"]),
            text(&r["description"])
        );
        block(out, "Params", &r["params"]);
        block(out, "Answer", &r["result"]);
    }
}

fn schemas(out: &mut String, document: &Value) {
    out.push_str("\n## Schemas\n");
    if let Some(schemas) = document["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            let _ = writeln!(out, "\n### `{name}` (schema)\n");
            if let Some(description) = schema["description"].as_str() {
                let _ = writeln!(out, "{}\n", one_line(description));
            }
            block(out, "Fields", schema);
        }
    }
}

/// One row of a field table.
struct Row {
    name: String,
    kind: String,
    required: bool,
    description: String,
}

/// `schema` under `label`: a table of its fields, the variants it may be,
/// or its type.
fn block(out: &mut String, label: &str, schema: &Value) {
    let schema = unwrap(schema);
    if schema["properties"].is_object() {
        let _ = writeln!(out, "{label}:\n");
        let mut rows = Vec::new();
        fields(&mut rows, "", schema);
        table(out, &rows);
    } else if let Some(variants) = schema["anyOf"].as_array().or(schema["oneOf"].as_array()) {
        let _ = writeln!(out, "{label}, one of:\n");
        for variant in variants {
            let variant = unwrap(variant);
            if variant["properties"].is_object() {
                let mut rows = Vec::new();
                fields(&mut rows, "", variant);
                table(out, &rows);
            } else {
                let _ = writeln!(out, "- {}\n", kind(variant));
            }
        }
    } else {
        let _ = writeln!(out, "{label}: {}.\n", kind(schema));
    }
}

fn table(out: &mut String, rows: &[Row]) {
    out.push_str("| field | type | required | description |\n|---|---|---|---|\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            row.name,
            cell(&row.kind),
            if row.required { "yes" } else { "" },
            cell(&row.description)
        );
    }
    out.push('\n');
}

/// The properties of an object schema, nested ones flattened.
fn fields(rows: &mut Vec<Row>, prefix: &str, schema: &Value) {
    let required: Vec<&str> = list(&schema["required"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            let name = format!("{prefix}{name}");
            field(
                rows,
                &name,
                property,
                required.contains(&&name[prefix.len()..]),
            );
        }
    }
}

/// One field, and the fields nested in it.
fn field(rows: &mut Vec<Row>, name: &str, schema: &Value, required: bool) {
    let schema = unwrap(schema);
    rows.push(Row {
        name: name.to_owned(),
        kind: kind(schema),
        required,
        description: one_line(schema["description"].as_str().unwrap_or_default()),
    });
    let items = unwrap(&schema["items"]);
    let values = unwrap(&schema["additionalProperties"]);
    if schema["properties"].is_object() {
        fields(rows, &format!("{name}."), schema);
    } else if items["properties"].is_object() {
        fields(rows, &format!("{name}[]."), items);
    } else if values["properties"].is_object() {
        fields(rows, &format!("{name}.<key>."), values);
    }
}

/// A schema's type in words; references link to their schema.
fn kind(schema: &Value) -> String {
    let schema = unwrap(schema);
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("[`{name}`](#{})", anchor(&format!("`{name}` (schema)")));
    }
    if let Some(value) = schema.get("const") {
        return format!("`{value}`");
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        return values.join(" or ");
    }
    if schema["properties"].is_object() {
        return "object".to_owned();
    }
    if let Some(variants) = schema["anyOf"].as_array().or(schema["oneOf"].as_array()) {
        let variants: Vec<String> = variants.iter().map(variant).collect();
        return variants.join(" or ");
    }
    match &schema["type"] {
        Value::String(t) => match t.as_str() {
            "array" => format!("array of {}", kind(&schema["items"])),
            "object" => object_kind(schema),
            other => other.to_owned(),
        },
        Value::Array(types) => {
            let types: Vec<String> = types
                .iter()
                .map(|t| {
                    let mut single = schema.clone();
                    single["type"] = t.clone();
                    kind(&single)
                })
                .collect();
            types.join(" or ")
        }
        _ => "any".to_owned(),
    }
}

/// A variant of an `anyOf`: an inline object shows its fields' names.
fn variant(schema: &Value) -> String {
    let schema = unwrap(schema);
    match schema["properties"].as_object() {
        Some(properties) => {
            let names: Vec<&str> = properties.keys().map(String::as_str).collect();
            format!("`{{{}}}`", names.join(", "))
        }
        None => kind(schema),
    }
}

fn object_kind(schema: &Value) -> String {
    match &schema["additionalProperties"] {
        values @ Value::Object(_) if !schema["properties"].is_object() => {
            if values.as_object().is_some_and(|v| v.is_empty()) {
                "object".to_owned()
            } else {
                format!("map of {}", kind(values))
            }
        }
        _ => "object".to_owned(),
    }
}

/// The schema an `allOf` of one schema stands for (a reference with a
/// description becomes one), or `schema`.
fn unwrap(schema: &Value) -> &Value {
    match schema["allOf"].as_array() {
        Some(all) if all.len() == 1 => &all[0],
        _ => schema,
    }
}

/// GitHub's anchor of a heading.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `RateLimited` as `rate limited`.
fn words(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// Names as inline code, comma separated.
fn codes(value: &Value) -> String {
    let names: Vec<String> = list(value)
        .iter()
        .map(|v| format!("`{}`", text(v)))
        .collect();
    names.join(", ")
}

/// Text fit for a table cell.
fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
