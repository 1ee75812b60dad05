//! Checking values against the OpenRPC document a server serves.
//!
//! Every object a schema describes with `properties` is closed before
//! checking (`additionalProperties: false` unless the schema says
//! otherwise): a field a reply carries that the document does not
//! describe fails, as does one it describes as always present that is
//! missing. The published document stays open to additions.

use crate::common::{TestServer, Ws, http};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The served document and what was checked against it.
pub struct Reference {
    pub document: Value,
    components: Value,
    /// Methods whose params and result were checked.
    pub methods: BTreeSet<String>,
    /// Notifications and server requests whose params were checked.
    pub pushes: BTreeSet<String>,
}

impl Reference {
    /// The document `server` serves at `GET /openrpc.json`.
    pub async fn of(server: &TestServer) -> Self {
        let (status, _, body) = http(server.addr, "GET", "/openrpc.json", &[], None).await;
        assert_eq!(status, 200, "{body}");
        Self::new(serde_json::from_str(&body).expect("the document is JSON"))
    }

    pub fn new(document: Value) -> Self {
        let mut components = document["components"].clone();
        close(&mut components);
        Self {
            document,
            components,
            methods: BTreeSet::new(),
            pushes: BTreeSet::new(),
        }
    }

    /// The method object named `name`.
    pub fn method(&self, name: &str) -> &Value {
        self.document["methods"]
            .as_array()
            .and_then(|methods| methods.iter().find(|m| m["name"] == name))
            .unwrap_or_else(|| panic!("{name} is not in the document"))
    }

    /// The params object a method's content descriptors describe.
    pub fn params_schema(&self, name: &str) -> Value {
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        for param in self.method(name)["params"].as_array().expect("params") {
            let param_name = param["name"].as_str().expect("a param has a name");
            properties.insert(param_name.to_owned(), param["schema"].clone());
            if param["required"] == true {
                required.push(json!(param_name));
            }
        }
        json!({ "type": "object", "properties": properties, "required": required })
    }

    /// The schema of the `x-notifications` or `x-server-requests` entry
    /// `name` at `key` (`params`, `result`).
    fn unasked(&self, list: &str, name: &str, key: &str) -> Value {
        self.document[list]
            .as_array()
            .and_then(|l| l.iter().find(|n| n["name"] == name))
            .unwrap_or_else(|| panic!("{name} is not in {list}"))[key]
            .clone()
    }

    /// `schema` (closed) as a draft-07 validator whose references resolve
    /// in the document.
    fn validator(&self, schema: &Value) -> Result<jsonschema::Validator, String> {
        let mut schema = schema.clone();
        close(&mut schema);
        let root = json!({ "allOf": [schema], "components": self.components });
        jsonschema::draft7::new(&root).map_err(|e| format!("{e}: {root}"))
    }

    /// Whether `schema` is a valid draft-07 schema whose references
    /// resolve.
    pub fn compiles(&self, schema: &Value) -> bool {
        self.validator(schema).is_ok()
    }

    /// The errors of `instance` against `schema` (closed); empty when it fits.
    pub fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let validator = self
            .validator(schema)
            .unwrap_or_else(|e| panic!("the schema does not compile: {e}"));
        validator
            .iter_errors(instance)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect()
    }

    /// Assert `instance` fits `schema`.
    pub fn check(&self, what: &str, schema: &Value, instance: &Value) {
        let errors = self.errors(schema, instance);
        assert!(
            errors.is_empty(),
            "{what} does not fit its schema:\n{}\ninstance: {instance}\nschema: {schema}",
            errors.join("\n")
        );
    }

    /// Check a call's params and its result against `method`'s schemas.
    pub fn result(&mut self, method: &str, params: &Value, result: &Value) {
        self.check(
            &format!("{method} params"),
            &self.params_schema(method),
            params,
        );
        let schema = self.method(method)["result"]["schema"].clone();
        self.check(&format!("{method} result"), &schema, result);
        self.methods.insert(method.to_owned());
    }

    /// Call `method` (its params checked), expecting success; its result
    /// checked.
    pub async fn call(&mut self, ws: &mut Ws, method: &str, params: Value) -> Value {
        let result = ws.call(method, params.clone()).await;
        self.result(method, &params, &result);
        result
    }

    /// Check the params of a pushed notification.
    pub fn push(&mut self, name: &str, params: &Value) {
        let schema = self.unasked("x-notifications", name, "params");
        self.check(&format!("notification {name}"), &schema, params);
        self.pushes.insert(name.to_owned());
    }

    /// Check the params of a request the server sent a node.
    pub fn request(&mut self, name: &str, params: &Value) {
        let schema = self.unasked("x-server-requests", name, "params");
        self.check(&format!("server request {name}"), &schema, params);
        self.pushes.insert(name.to_owned());
    }

    /// Assert exactly `methods` and `pushes` were checked.
    pub fn covered(&self, methods: &[&str], pushes: &[&str]) {
        let want: BTreeSet<String> = methods.iter().map(|m| m.to_string()).collect();
        assert_eq!(self.methods, want, "methods checked");
        let want: BTreeSet<String> = pushes.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            self.pushes, want,
            "notifications and server requests checked"
        );
    }
}

/// Close every object schema that lists `properties` and does not say
/// whether others may appear.
fn close(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.get("properties").is_some_and(Value::is_object)
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".into(), false.into());
            }
            map.values_mut().for_each(close);
        }
        Value::Array(items) => items.iter_mut().for_each(close),
        _ => {}
    }
}
