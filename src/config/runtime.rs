//! Runtime config: the part of [`Config`] that may change while the
//! instance runs, and how an override document is applied to it.
//!
//! # Flow
//!
//! The start-up config (file → env → flags) is the *base*. Operators
//! change settings at run time through an *override document*: a JSON
//! object shaped like the config file (`{"rate_limits": {"messages_per_conn":
//! {"limit": 5}}}`), versioned in the backend and shared by every
//! instance. [`effective`] merges the document onto the base (RFC 7396
//! merge patch), decodes the result with the same types as the file and
//! runs the same [`Config::validate`], so a runtime value is accepted
//! exactly when the same value in the file would be.
//!
//! Only [`LIVE`] settings may be overridden: those every reader takes
//! from [`LiveConfig`] at the moment it needs them (rate limits, channel
//! rules, webhooks and the limits read per call or per new connection).
//! The others are wired into something built once at start (listeners,
//! the Redis client, credentials, timers) and are refused with an error
//! naming the field and saying it needs a restart ([`check_paths`]).
//!
//! [`LiveConfig`] holds the [`RuntimeSettings`] in force behind an
//! `ArcSwap`: readers load the current `Arc` without a lock, and an
//! update swaps the whole value at once, so a reader never sees half of a
//! change.

use super::{Config, ConfigError};
use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Settings that change while running: whole sections, and single
/// `limits` fields. A path under one of these is live.
pub const LIVE: &[&str] = &[
    "rate_limits",
    "channels",
    "hooks",
    "limits.max_payload",
    "limits.max_batch",
    "limits.max_json_depth",
    "limits.outbound_queue",
    "limits.heartbeat_ms",
    "limits.client_timeout_ms",
    "limits.handshake_timeout_ms",
    "limits.max_sessions_per_client",
    "limits.max_session_members",
    "limits.session_history",
    "limits.max_subscriptions",
    "limits.max_connections",
    "limits.resume_window_ms",
    "limits.request_timeout_ms",
    "limits.drain_deadline_ms",
    "limits.unready_after_ms",
];

/// Settings that exist but are read once at start (listeners, the Redis
/// client, credentials, timers): changing them needs a restart.
pub const RESTART: &[&str] = &[
    "bind",
    "port",
    "instance_id",
    "redis_url",
    "redis_prefix",
    "redis_tls",
    "metrics_port",
    "log",
    "tls",
    "auth",
    "cors",
    "allowed_origins",
    "allowed_hosts",
    "trusted_proxies",
    "agents",
    "ui",
    "limits.presence_tick_ms",
    "limits.node_ttl_ms",
    "limits.header_timeout_ms",
    "limits.max_pending_handshakes",
    "limits.max_connections_per_ip",
];

/// The sections an override document may touch (the first segment of
/// every [`LIVE`] path).
const SECTIONS: &[&str] = &["limits", "rate_limits", "channels", "hooks"];

/// Most segments of a dotted path (`rate_limits.messages_per_conn.limit`
/// has three).
const MAX_PATH_DEPTH: usize = 6;

/// Largest override document (serialized JSON).
pub const MAX_DOCUMENT: usize = 64 * 1024;

/// What replaces a secret in anything shown to clients or kept in history.
pub const REDACTED: &str = "<redacted>";

/// The settings in force: the effective config and the document version
/// that produced it (0: no override applied).
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub version: u64,
    /// The override document applied (an object; empty at version 0).
    pub overrides: Value,
    /// Base plus overrides, validated.
    pub config: Config,
}

impl std::ops::Deref for RuntimeSettings {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

/// The live holder: the current [`RuntimeSettings`], swapped atomically.
pub struct LiveConfig {
    current: ArcSwap<RuntimeSettings>,
}

impl LiveConfig {
    /// Start with the base config and no overrides.
    pub fn new(base: Config) -> Self {
        Self {
            current: ArcSwap::from_pointee(RuntimeSettings {
                version: 0,
                overrides: Value::Object(Map::new()),
                config: base,
            }),
        }
    }

    /// The settings in force now.
    pub fn get(&self) -> Arc<RuntimeSettings> {
        self.current.load_full()
    }

    /// The settings in force now, for a short look on a hot path (a frame,
    /// a rate check): no reference count is taken. Do not hold it across
    /// an `.await`.
    pub fn peek(&self) -> arc_swap::Guard<Arc<RuntimeSettings>> {
        self.current.load()
    }

    /// Put `settings` in force for every later reader.
    pub fn set(&self, settings: RuntimeSettings) {
        self.current.store(Arc::new(settings));
    }
}

/// Whether `path` (dotted) is a live setting or lies under one.
pub fn is_live(path: &str) -> bool {
    LIVE.iter()
        .any(|live| path == *live || path.starts_with(&format!("{live}.")))
}

/// Refuse anything in `overrides` that is not a live setting: a known
/// setting read only at start is named with "needs a restart", anything
/// else as unknown. `overrides` must be an object.
pub fn check_paths(overrides: &Value) -> Result<(), ConfigError> {
    let Value::Object(top) = overrides else {
        return Err(ConfigError::new("config", "must be an object"));
    };
    for (key, value) in top {
        if key == "limits" {
            let Value::Object(fields) = value else {
                return Err(ConfigError::new("limits", "must be an object"));
            };
            for field in fields.keys() {
                check_setting(&format!("limits.{field}"))?;
            }
        } else {
            check_setting(key)?;
        }
    }
    Ok(())
}

/// Refuse a setting that is not live: one read only at start is named
/// with "needs a restart", anything else as unknown. `limits` itself is
/// accepted (its members are checked one by one).
pub fn check_setting(path: &str) -> Result<(), ConfigError> {
    if path == "limits" || is_live(path) {
        return Ok(());
    }
    let setting = match path.strip_prefix("limits.") {
        Some(rest) => format!("limits.{}", rest.split('.').next().unwrap_or_default()),
        None => path.split('.').next().unwrap_or_default().to_owned(),
    };
    if RESTART.contains(&setting.as_str()) {
        Err(ConfigError::new(
            setting,
            "cannot change while running; it needs a restart (set it in the file or environment)",
        ))
    } else {
        Err(ConfigError::new(path, "unknown setting"))
    }
}

/// The base with `overrides` merged onto its live sections, validated
/// like the start-up config. Errors name the dotted field.
pub fn effective(base: &Config, overrides: &Value) -> Result<Config, ConfigError> {
    check_paths(overrides)?;
    let mut merged = view(base, false)?;
    json_patch::merge(&mut merged, overrides);
    let mut config = base.clone();
    let section = |name: &str| merged.get(name).cloned().unwrap_or(Value::Null);
    let limits: super::Limits = decode("limits", section("limits"))?;
    // Only the live limits may differ from the base.
    config.limits = super::Limits {
        presence_tick_ms: base.limits.presence_tick_ms,
        node_ttl_ms: base.limits.node_ttl_ms,
        header_timeout_ms: base.limits.header_timeout_ms,
        max_pending_handshakes: base.limits.max_pending_handshakes,
        max_connections_per_ip: base.limits.max_connections_per_ip,
        ..limits
    };
    config.rate_limits = decode("rate_limits", section("rate_limits"))?;
    config.channels = decode("channels", section("channels"))?;
    config.hooks = decode("hooks", section("hooks"))?;
    for (i, hook) in config.hooks.iter().enumerate() {
        // What `config.get` shows instead of a secret, sent back as is.
        if hook.secret.as_deref() == Some(REDACTED) {
            return Err(ConfigError::new(
                format!("hooks[{i}].secret"),
                "is the redacted placeholder; give the secret itself",
            ));
        }
    }
    config.validate()?;
    Ok(config)
}

/// Decode one section, the error naming the dotted field.
fn decode<T: serde::de::DeserializeOwned>(section: &str, value: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = if inner == "." {
            section.to_owned()
        } else if inner.starts_with('[') {
            format!("{section}{inner}")
        } else {
            format!("{section}.{inner}")
        };
        ConfigError::new(field, e.into_inner().to_string())
    })
}

/// The live settings of `config` as JSON, shaped like the file (only the
/// live `limits` fields); with `redact`, webhook secrets are hidden.
pub fn view(config: &Config, redact: bool) -> Result<Value, ConfigError> {
    let encode = |name: &str, value: Result<Value, serde_json::Error>| {
        value.map_err(|e| ConfigError::new(name, format!("cannot encode: {e}")))
    };
    let mut out = Map::new();
    let Value::Object(all_limits) = encode("limits", serde_json::to_value(&config.limits))? else {
        return Err(ConfigError::new("limits", "cannot encode"));
    };
    let limits: Map<String, Value> = all_limits
        .into_iter()
        .filter(|(k, _)| is_live(&format!("limits.{k}")))
        .collect();
    out.insert("limits".into(), Value::Object(limits));
    out.insert(
        "rate_limits".into(),
        encode("rate_limits", serde_json::to_value(&config.rate_limits))?,
    );
    out.insert(
        "channels".into(),
        encode("channels", serde_json::to_value(&config.channels))?,
    );
    out.insert(
        "hooks".into(),
        encode("hooks", serde_json::to_value(&config.hooks))?,
    );
    let mut out = Value::Object(out);
    if redact {
        redact_secrets(&mut out);
    }
    debug_assert!(SECTIONS.iter().all(|s| out.get(s).is_some()));
    Ok(out)
}

/// The sections an override document may hold, for their JSON Schema.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct LiveSections {
    limits: super::Limits,
    rate_limits: super::RateLimits,
    channels: super::ChannelConfig,
    hooks: Vec<super::HookConfig>,
}

/// The JSON Schema of the live settings (as [`view`] shows them: only the
/// live `limits` fields), with the descriptions of the config types.
pub fn schema() -> Value {
    let mut schema = schemars::schema_for!(LiveSections).to_value();
    for defs in ["$defs", "definitions"] {
        if let Some(Value::Object(props)) =
            schema.pointer_mut(&format!("/{defs}/Limits/properties"))
        {
            props.retain(|name, _| is_live(&format!("limits.{name}")));
        }
    }
    schema
}

/// Replace every non-null `secret` member (webhook HMAC keys) with
/// [`REDACTED`], at any depth.
pub fn redact_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, member) in map.iter_mut() {
                if key == "secret" && !member.is_null() {
                    *member = Value::String(REDACTED.into());
                } else {
                    redact_secrets(member);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

/// The dotted paths an override document sets (its leaves; an array is
/// one leaf).
pub fn overridden(overrides: &Value) -> Vec<String> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, member) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, member, out);
                }
            }
            _ if !prefix.is_empty() => out.push(prefix.to_owned()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", overrides, &mut out);
    out
}

/// Set (or with `null` remove) the value at dotted `path` in an override
/// document, dropping objects left empty. Segments must be non-empty.
pub fn set_path(overrides: &mut Value, path: &str, value: Value) -> Result<(), ConfigError> {
    let segments: Vec<&str> = path.split('.').collect();
    if path.is_empty() || segments.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::new("path", "must be a dotted setting name"));
    }
    // No setting is nested deeper; a deeper path would only build a deep
    // tree to refuse.
    if segments.len() > MAX_PATH_DEPTH || path.len() > 256 {
        return Err(ConfigError::new(
            "path",
            format!("at most {MAX_PATH_DEPTH} segments and 256 bytes"),
        ));
    }
    // A merge patch with the path's nesting does exactly this: a null
    // member removes, objects merge, the rest replace.
    let patch = segments.iter().rev().fold(value, |inner, key| {
        Value::Object(Map::from_iter([(key.to_string(), inner)]))
    });
    json_patch::merge(overrides, &patch);
    prune(overrides);
    Ok(())
}

/// Drop members that are empty objects (left by removals), recursively.
pub fn prune(value: &mut Value) {
    if let Value::Object(map) = value {
        for member in map.values_mut() {
            prune(member);
        }
        map.retain(|_, member| !matches!(member, Value::Object(m) if m.is_empty()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_setting_is_either_live_or_needs_a_restart() {
        let all = serde_json::to_value(Config::default()).unwrap();
        let mut known = Vec::new();
        for (key, value) in all.as_object().unwrap() {
            if key == "limits" {
                for field in value.as_object().unwrap().keys() {
                    known.push(format!("limits.{field}"));
                }
            } else {
                known.push(key.clone());
            }
        }
        for path in &known {
            let live = is_live(path);
            let restart = RESTART.contains(&path.as_str());
            assert!(live != restart, "{path}: live {live}, restart {restart}");
        }
        for path in LIVE.iter().chain(RESTART) {
            assert!(known.contains(&path.to_string()), "{path} is not a setting");
        }
    }

    #[test]
    fn overrides_apply_and_validate_like_the_file() {
        let base = Config::default();
        let doc = json!({"rate_limits": {"messages_per_conn": {"limit": 5}}});
        let c = effective(&base, &doc).unwrap();
        assert_eq!(c.rate_limits.messages_per_conn.limit, 5);
        assert_eq!(c.rate_limits.messages_per_conn.window_ms, 1_000);
        let bad = json!({"rate_limits": {"messages_per_conn": {"limit": 0}}});
        let e = effective(&base, &bad).unwrap_err();
        assert_eq!(e.field, "rate_limits.messages_per_conn.limit");
        let typed = json!({"limits": {"max_batch": "many"}});
        assert_eq!(
            effective(&base, &typed).unwrap_err().field,
            "limits.max_batch"
        );
        let unknown = json!({"rate_limits": {"nope": 1}});
        assert_eq!(
            effective(&base, &unknown).unwrap_err().field,
            "rate_limits.nope"
        );
    }

    #[test]
    fn restart_only_settings_are_refused_by_name() {
        let base = Config::default();
        for (doc, field) in [
            (json!({"port": 1}), "port"),
            (json!({"auth": {}}), "auth"),
            (
                json!({"limits": {"node_ttl_ms": 1000}}),
                "limits.node_ttl_ms",
            ),
        ] {
            let e = effective(&base, &doc).unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.message.contains("restart"), "{e}");
        }
        assert_eq!(
            effective(&base, &json!({"colour": 1})).unwrap_err().field,
            "colour"
        );
    }

    #[test]
    fn set_path_sets_and_null_removes() {
        let mut doc = json!({});
        set_path(&mut doc, "rate_limits.messages_per_conn.limit", json!(7)).unwrap();
        set_path(&mut doc, "limits.max_batch", json!(3)).unwrap();
        let mut paths = overridden(&doc);
        paths.sort_unstable();
        assert_eq!(
            paths,
            ["limits.max_batch", "rate_limits.messages_per_conn.limit"]
        );
        set_path(&mut doc, "rate_limits.messages_per_conn.limit", Value::Null).unwrap();
        assert_eq!(doc, json!({"limits": {"max_batch": 3}}));
        assert!(set_path(&mut doc, "a..b", json!(1)).is_err());
        let deep = format!("rate_limits{}", ".a".repeat(100_000));
        assert_eq!(
            set_path(&mut doc, &deep, json!(1)).unwrap_err().field,
            "path"
        );
    }

    #[test]
    fn the_schema_lists_only_live_limits() {
        let schema = schema();
        let limits = &schema["$defs"]["Limits"]["properties"];
        assert!(limits.get("max_batch").is_some(), "{schema}");
        assert!(limits.get("node_ttl_ms").is_none(), "{schema}");
        assert!(
            schema["properties"].get("rate_limits").is_some(),
            "{schema}"
        );
    }

    #[test]
    fn secrets_are_redacted_in_views() {
        let base = Config {
            hooks: vec![super::super::HookConfig {
                name: "gh".into(),
                secret: Some("s3cret".into()),
            }],
            ..Config::default()
        };
        let shown = view(&base, true).unwrap();
        assert_eq!(shown["hooks"][0]["secret"], REDACTED);
        assert!(!shown.to_string().contains("s3cret"));
        assert!(shown["limits"].get("node_ttl_ms").is_none());
        let back = json!({"hooks": shown["hooks"].clone()});
        let e = effective(&base, &back).unwrap_err();
        assert_eq!(e.field, "hooks[0].secret");
    }
}
