//! Property-based fuzzing of everything that reads untrusted input: the
//! frame parser and JSON-RPC classification, credential extraction, JWT
//! and credential checks, JSON merge patch, and configuration from the
//! environment. Each target must never panic and must keep its promises
//! (a reply always parses, an id comes back as sent, a random credential
//! never authenticates).
//!
//! `PROPTEST_CASES` sets the cases per target (the suite runs a short
//! pass; `scripts/fuzz.sh` runs each target for longer). Inputs that once
//! failed are kept below as named regression cases.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use switchyard::auth::{Authenticator, Credential, credentials};
use switchyard::config::{AuthConfig, AuthMode, EnvSource, JwtConfig, ServeArgs, StaticCredential};
use switchyard::protocol::frame::{self, Incoming, Message};

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON-RPC-shaped frame: a mix of well-formed and subtly wrong fields.
fn rpc_frame() -> impl Strategy<Value = Value> {
    (
        prop::option::of(json_value()),
        prop::option::of(prop_oneof![".{0,20}".prop_map(Value::from), json_value()]),
        prop::option::of(json_value()),
        prop::option::of(prop_oneof![Just(json!("2.0")), json_value()]),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(id, method, params, jsonrpc, result, error)| {
            let mut o = serde_json::Map::new();
            for (k, v) in [
                ("id", id),
                ("method", method),
                ("params", params),
                ("jsonrpc", jsonrpc),
                ("result", result),
                ("error", error),
            ] {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            Value::Object(o)
        })
}

/// What the server answers for every element of a parsed frame: each
/// reply must be valid JSON with the request's id.
fn check_parse(text: &str) {
    match frame::parse_text(text, 100, 64) {
        Incoming::Reject(e) => {
            let reply = frame::response_json(&frame::Id::null(), &Err(e));
            serde_json::from_str::<Value>(&reply).expect("a rejection parses");
        }
        Incoming::Single(m) => check_message(m),
        Incoming::Batch(ms) => {
            assert!(!ms.is_empty() && ms.len() <= 100);
            ms.into_iter().for_each(check_message);
        }
    }
}

fn check_message(message: Message) {
    match message {
        Message::Call(call) => {
            if let Some(id) = &call.id {
                let reply = frame::response_json(id, &Ok(json!({"ok": true})));
                serde_json::from_str::<Value>(&reply).expect("a reply parses");
                let head = format!(r#"{{"jsonrpc":"2.0","id":{},"#, id.get());
                assert!(reply.starts_with(&head), "the id comes back as sent");
            }
            assert!(call.params.is_object() || call.params.is_array());
        }
        Message::Reply(_) => {}
        Message::Invalid { id, error } => {
            let reply = frame::response_json(&id, &Err(error));
            serde_json::from_str::<Value>(&reply).expect("an error reply parses");
        }
    }
}

fn authenticator() -> Authenticator {
    let cred = |secret: &str, sub: &str| StaticCredential {
        secret: secret.into(),
        sub: sub.into(),
        role: "operator".into(),
        scopes: vec!["operator.admin".into()],
        channels: Vec::new(),
    };
    let cfg = AuthConfig {
        tokens: vec![cred("fuzz-token-0123456789abcdef", "t")],
        api_keys: vec![cred("fuzz-key-0123456789abcdef", "k")],
        password: Some("fuzz-password-0123456789".into()),
        jwt: JwtConfig {
            secret: Some("fuzz-jwt-secret-0123456789abcdef0123456789".into()),
            ..JwtConfig::default()
        },
        ..AuthConfig::default()
    };
    let modes = [
        AuthMode::Jwt,
        AuthMode::Token,
        AuthMode::ApiKey,
        AuthMode::Password,
    ];
    Authenticator::new(&cfg, &modes).expect("authenticator")
}

struct Env(HashMap<String, String>);

impl EnvSource for Env {
    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

proptest! {
    #[test]
    fn frame_parser_survives_any_text(text in ".{0,300}") {
        check_parse(&text);
    }

    #[test]
    fn frame_parser_survives_rpc_shaped_frames(frames in prop::collection::vec(rpc_frame(), 1..4), batch in any::<bool>()) {
        let text = if batch {
            Value::Array(frames).to_string()
        } else {
            frames[0].to_string()
        };
        check_parse(&text);
        // Truncated and bit-flipped copies too.
        let cut = text.len() / 2;
        if text.is_char_boundary(cut) {
            check_parse(&text[..cut]);
        }
    }

    #[test]
    fn credential_extraction_survives_any_headers(
        headers in prop::collection::vec(
            (prop::sample::select(vec!["authorization", "x-api-key", "sec-websocket-protocol", "cookie"]), "[ -~]{0,80}"),
            0..4,
        ),
        query in prop::option::of("[ -~]{0,80}"),
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                map.append(HeaderName::from_static(name), value);
            }
        }
        let _ = credentials::extract(&map, query.as_deref());
    }

    #[test]
    fn random_credentials_never_authenticate(secret in "[ -~]{1,120}", kind in 0..3u8) {
        let auth = authenticator();
        let credential = match kind {
            0 => Credential::Bearer(secret.clone()),
            1 => Credential::ApiKey(secret.clone()),
            _ => Credential::Password(secret.clone()),
        };
        prop_assume!(!secret.starts_with("fuzz-"));
        prop_assert!(auth.authenticate(&credential).is_err());
    }

    #[test]
    fn jwt_shaped_garbage_never_authenticates(
        header in "[A-Za-z0-9_-]{0,60}",
        payload in "[A-Za-z0-9_-]{0,120}",
        signature in "[A-Za-z0-9_-]{0,60}",
    ) {
        let auth = authenticator();
        let token = format!("eyJ{header}.eyJ{payload}.{signature}");
        prop_assert!(auth.authenticate(&Credential::Bearer(token)).is_err());
    }

    #[test]
    fn in_band_credentials_survive_any_params(params in json_value()) {
        let _ = credentials::from_params(&params);
    }

    /// RFC 7386: applying the same merge patch twice changes nothing more.
    #[test]
    fn merge_patch_is_idempotent(mut target in json_value(), patch in json_value()) {
        json_patch::merge(&mut target, &patch);
        let once = target.clone();
        json_patch::merge(&mut target, &patch);
        prop_assert_eq!(once, target);
    }

    #[test]
    fn config_from_any_environment_is_loaded_or_refused(
        vars in prop::collection::hash_map(
            prop::sample::select(vec![
                "SWITCHYARD_PORT", "SWITCHYARD_BIND", "SWITCHYARD_TOKENS", "SWITCHYARD_API_KEYS",
                "SWITCHYARD_AUTH_MODE", "SWITCHYARD_TRUSTED_PROXIES", "SWITCHYARD_ALLOWED_ORIGINS",
                "SWITCHYARD_ALLOWED_HOSTS", "SWITCHYARD_LIMITS__MAX_PAYLOAD",
                "SWITCHYARD_RATE_LIMITS__CONNECT_PER_IP__LIMIT", "SWITCHYARD_JWT_SECRET",
                "SWITCHYARD_CHANNELS__PRESENCE", "SWITCHYARD_LOG__LEVEL", "SWITCHYARD_NOPE__X",
            ]).prop_map(str::to_owned),
            "[ -~]{0,40}",
            0..6,
        ),
    ) {
        let env = Env(vars);
        if let Ok(config) = switchyard::config::load(&ServeArgs::default(), &env) {
            // Whatever loads also validates or is refused with a field.
            if let Err(e) = config.validate() {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

/// Inputs that once misbehaved, kept as regression cases.
#[test]
fn past_failures() {
    for text in [
        // Integer ids at and beyond 2^53 and 2^64.
        r#"{"jsonrpc":"2.0","id":9007199254740993,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":-9223372036854775808,"method":"ping"}"#,
        // A fractional id must come back as the same number (serde_json
        // parses floats exactly: feature float_roundtrip).
        r#"{"jsonrpc":"2.0","id":5.798900193118243e-153,"method":"ping"}"#,
        // Deep nesting and an empty batch.
        &format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
        "[]",
        // A lone surrogate escape and a NUL.
        r#"{"jsonrpc":"2.0","id":"\ud800","method":"x"}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\u{0}b\"}",
    ] {
        check_parse(text);
    }
}
