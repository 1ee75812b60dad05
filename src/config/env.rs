//! The environment layer: `SWITCHYARD_*` variables written into the file's
//! TOML table before it is deserialized.
//!
//! Two spellings are understood. Named shortcuts (`SHORTCUTS`) map a short
//! name to a fixed key and parse the value by its `Kind`: comma lists,
//! ports, booleans, credential entries. Any other variable with a `__` in
//! its name addresses a dotted path (`SWITCHYARD_LIMITS__MAX_PAYLOAD` →
//! `limits.max_payload`), its value read as TOML when it parses as TOML,
//! else as a string. Variables that are neither (`SWITCHYARD_TOKEN` and
//! `SWITCHYARD_URL`, read by `switchyard call`) are ignored.

use super::ConfigError;
use super::auth::{normalize_mode, parse_credentials};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Prefix of every environment variable this layer reads.
const ENV_PREFIX: &str = "SWITCHYARD_";

/// Where environment variables come from: the process environment in
/// `main`, a map in tests.
pub trait EnvSource {
    fn vars(&self) -> Vec<(String, String)>;
}

impl EnvSource for HashMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        // vars_os + lossy conversion: a non-UTF-8 variable elsewhere in the
        // environment must not make std::env::vars() panic.
        std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    }
}

/// `SWITCHYARD_*` variables, sorted so that the overlay is deterministic
/// whatever order the source returns them in.
pub(super) fn switchyard_vars(env: &dyn EnvSource) -> BTreeMap<String, String> {
    env.vars()
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

/// How a named shortcut's value is turned into a TOML value.
#[derive(Clone, Copy)]
enum Kind {
    /// Kept as a string.
    Str,
    /// Lower-cased string (enum names such as `lan`, `json`).
    Lower,
    /// A u16.
    Port,
    /// true/false/1/0/yes/no/on/off.
    Bool,
    /// Comma-separated strings.
    List,
    /// Comma-separated auth mode names (`api-key` accepted for `api_key`).
    Modes,
    /// Comma-separated CIDRs; a bare IP becomes a /32 or /128.
    Cidrs,
    /// Comma-separated credential entries; the string is the default `sub` stem.
    Creds(&'static str),
}

/// Named shortcuts: variable name (without prefix), dotted path, kind.
const SHORTCUTS: &[(&str, &str, Kind)] = &[
    ("BIND", "bind", Kind::Lower),
    ("PORT", "port", Kind::Port),
    ("INSTANCE_ID", "instance_id", Kind::Str),
    ("REDIS_URL", "redis_url", Kind::Str),
    ("REDIS_PREFIX", "redis_prefix", Kind::Str),
    ("REDIS_TLS_CA", "redis_tls.ca", Kind::Str),
    ("REDIS_TLS_CERT", "redis_tls.cert", Kind::Str),
    ("REDIS_TLS_KEY", "redis_tls.key", Kind::Str),
    ("METRICS_PORT", "metrics_port", Kind::Port),
    ("LOG", "log.level", Kind::Str),
    ("LOG_FORMAT", "log.format", Kind::Lower),
    ("TLS_CERT", "tls.cert", Kind::Str),
    ("TLS_KEY", "tls.key", Kind::Str),
    ("AUTH_MODE", "auth.modes", Kind::Modes),
    ("JWT_SECRET", "auth.jwt.secret", Kind::Str),
    ("JWT_PUBLIC_KEY", "auth.jwt.public_key", Kind::Str),
    ("JWT_PRIVATE_KEY", "auth.jwt.private_key", Kind::Str),
    ("JWT_ISSUER", "auth.jwt.issuer", Kind::Str),
    ("JWT_AUDIENCE", "auth.jwt.audience", Kind::Str),
    ("JWT_ALGORITHMS", "auth.jwt.algorithms", Kind::List),
    ("PASSWORD", "auth.password", Kind::Str),
    (
        "ALLOW_INSECURE_NONE",
        "auth.allow_insecure_none",
        Kind::Bool,
    ),
    ("ALLOWED_ORIGINS", "allowed_origins", Kind::List),
    ("ALLOWED_HOSTS", "allowed_hosts", Kind::List),
    ("TRUSTED_PROXIES", "trusted_proxies", Kind::Cidrs),
    ("CORS_ORIGINS", "cors.allowed_origins", Kind::List),
    ("DEV_TOKEN_FILE", "auth.dev_token_file", Kind::Str),
    ("API_KEYS", "auth.api_keys", Kind::Creds("api-key")),
    ("TOKENS", "auth.tokens", Kind::Creds("token")),
];

/// Writes the `SWITCHYARD_*` variables into the file's table. Generic
/// `__` paths go first so that a named shortcut wins over a generic
/// variable addressing the same key.
pub(super) fn apply(
    table: &mut toml::Table,
    vars: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, raw) in vars {
        let suffix = &name[ENV_PREFIX.len()..];
        if shortcut(suffix).is_none() && suffix.contains("__") {
            let path = generic_path(name, suffix)?;
            set_path(table, &path, generic_value(raw))?;
        }
    }
    for (name, raw) in vars {
        if let Some((path, kind)) = shortcut(&name[ENV_PREFIX.len()..]) {
            let value = shortcut_value(name, path, kind, raw)?;
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            set_path(table, &segments, value)?;
        }
    }
    Ok(())
}

fn shortcut(suffix: &str) -> Option<(&'static str, Kind)> {
    SHORTCUTS
        .iter()
        .find(|(n, _, _)| *n == suffix)
        .map(|&(_, path, kind)| (path, kind))
}

/// `LIMITS__MAX_PAYLOAD` → `["limits", "max_payload"]`.
fn generic_path(name: &str, suffix: &str) -> Result<Vec<String>, ConfigError> {
    let segments: Vec<String> = suffix.split("__").map(str::to_ascii_lowercase).collect();
    if segments.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            name,
            "empty path segment (use `__` only between key names)",
        ));
    }
    Ok(segments)
}

/// A generic value is TOML when it parses as one (`5`, `true`,
/// `["a", "b"]`, `"quoted"`), otherwise the raw string, so that plain
/// words need no quoting in a shell.
fn generic_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn shortcut_value(
    name: &str,
    path: &str,
    kind: Kind,
    raw: &str,
) -> Result<toml::Value, ConfigError> {
    use toml::Value;
    let strings = |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
    Ok(match kind {
        Kind::Str => Value::String(raw.to_owned()),
        Kind::Lower => Value::String(raw.trim().to_ascii_lowercase()),
        Kind::Port => Value::Integer(i64::from(parse_port(name, path, raw)?)),
        Kind::Bool => Value::Boolean(parse_bool(name, path, raw)?),
        Kind::List => strings(split_list(raw)),
        Kind::Modes => strings(split_list(raw).iter().map(|m| normalize_mode(m)).collect()),
        Kind::Cidrs => strings(split_list(raw).iter().map(|c| normalize_cidr(c)).collect()),
        Kind::Creds(stem) => credentials_value(path, stem, &split_list(raw))?,
    })
}

fn parse_port(name: &str, path: &str, raw: &str) -> Result<u16, ConfigError> {
    raw.trim().parse::<u16>().map_err(|_| {
        ConfigError::new(
            path,
            format!("{name}: expected a number 0-65535, got {raw:?}"),
        )
    })
}

fn parse_bool(name: &str, path: &str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::new(
            path,
            format!("{name}: expected true or false, got {raw:?}"),
        )),
    }
}

/// Splits a comma list, trimming entries and dropping empty ones (so a
/// trailing comma is harmless).
fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A bare address is accepted where a network is expected.
pub(super) fn normalize_cidr(entry: &str) -> String {
    match entry.parse::<IpAddr>() {
        Ok(ip) => IpNet::from(ip).to_string(),
        Err(_) => entry.to_owned(),
    }
}

fn credentials_value(
    path: &str,
    stem: &str,
    entries: &[String],
) -> Result<toml::Value, ConfigError> {
    let creds = parse_credentials(path, stem, entries)?;
    toml::Value::try_from(creds)
        .map_err(|e| ConfigError::new(path, format!("cannot encode credentials: {e}")))
}

/// Sets `value` at `path`, creating intermediate tables.
fn set_path(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
) -> Result<(), ConfigError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for (i, key) in parents.iter().enumerate() {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            ConfigError::new(
                path[..=i].join("."),
                "is not a table, cannot set a key inside it",
            )
        })?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::{AuthMode, BindMode, LogFormat, load};
    use std::path::PathBuf;

    #[test]
    fn string_shortcuts() {
        let c = load_env(&[
            ("SWITCHYARD_BIND", "LAN"),
            ("SWITCHYARD_INSTANCE_ID", "node-a"),
            ("SWITCHYARD_REDIS_URL", "redis://localhost:6379"),
            ("SWITCHYARD_REDIS_PREFIX", "app"),
            ("SWITCHYARD_METRICS_PORT", "9100"),
            ("SWITCHYARD_LOG", "switchyard=debug"),
            ("SWITCHYARD_LOG_FORMAT", "json"),
            ("SWITCHYARD_DEV_TOKEN_FILE", "/tmp/dev-token"),
        ])
        .unwrap();
        assert_eq!(c.bind, BindMode::Lan);
        assert_eq!(c.instance_id.as_deref(), Some("node-a"));
        assert_eq!(c.redis_url.as_deref(), Some("redis://localhost:6379"));
        assert_eq!(c.redis_prefix, "app");
        assert_eq!(c.metrics_port, Some(9100));
        assert_eq!(c.log.level, "switchyard=debug");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.auth.dev_token_file, Some(PathBuf::from("/tmp/dev-token")));
    }

    #[test]
    fn list_and_bool_shortcuts() {
        let c = load_env(&[
            (
                "SWITCHYARD_ALLOWED_ORIGINS",
                "https://a.example, https://*.b.example,",
            ),
            ("SWITCHYARD_TRUSTED_PROXIES", "10.0.0.0/8,192.168.1.1"),
            ("SWITCHYARD_CORS_ORIGINS", "*"),
            ("SWITCHYARD_ALLOW_INSECURE_NONE", "true"),
            ("SWITCHYARD_AUTH_MODE", "none,api-key"),
            ("SWITCHYARD_API_KEYS", &secret('k')),
        ])
        .unwrap();
        assert_eq!(
            c.allowed_origins,
            ["https://a.example", "https://*.b.example"]
        );
        let proxies: Vec<String> = c.trusted_proxies.iter().map(IpNet::to_string).collect();
        assert_eq!(proxies, ["10.0.0.0/8", "192.168.1.1/32"]);
        assert_eq!(c.cors.allowed_origins, ["*"]);
        assert!(c.auth.allow_insecure_none);
        assert_eq!(c.auth.modes, [AuthMode::None, AuthMode::ApiKey]);
        let err = load_env(&[("SWITCHYARD_ALLOW_INSECURE_NONE", "maybe")]).unwrap_err();
        assert_eq!(err.field, "auth.allow_insecure_none");
    }

    #[test]
    fn jwt_and_password_shortcuts() {
        let key = temp_file("pub.pem", "-----BEGIN PUBLIC KEY-----\n");
        let c = load_env(&[
            ("SWITCHYARD_JWT_SECRET", &"s".repeat(32)),
            ("SWITCHYARD_JWT_PUBLIC_KEY", key.to_str().unwrap()),
            ("SWITCHYARD_JWT_ISSUER", "iss"),
            ("SWITCHYARD_JWT_AUDIENCE", "aud"),
            ("SWITCHYARD_JWT_ALGORITHMS", "HS256,EdDSA"),
            ("SWITCHYARD_PASSWORD", "hunter2hunter2"),
        ])
        .unwrap();
        let jwt = &c.auth.jwt;
        assert_eq!(jwt.secret.as_deref(), Some("s".repeat(32).as_str()));
        assert_eq!(jwt.public_key.as_deref(), Some(key.as_path()));
        assert_eq!(jwt.issuer.as_deref(), Some("iss"));
        assert_eq!(jwt.audience.as_deref(), Some("aud"));
        assert_eq!(jwt.algorithms, ["HS256", "EdDSA"]);
        assert_eq!(c.auth.password.as_deref(), Some("hunter2hunter2"));
    }

    #[test]
    fn tls_shortcuts_need_existing_files() {
        let cert = temp_file("cert.pem", "cert");
        let key = temp_file("key.pem", "key");
        let c = load_env(&[
            ("SWITCHYARD_TLS_CERT", cert.to_str().unwrap()),
            ("SWITCHYARD_TLS_KEY", key.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(c.tls.unwrap().cert, cert);
        let err = load_env(&[
            ("SWITCHYARD_TLS_CERT", cert.to_str().unwrap()),
            ("SWITCHYARD_TLS_KEY", "/nonexistent/key.pem"),
        ])
        .unwrap_err();
        assert_eq!(err.field, "tls.key");
    }

    #[test]
    fn redis_tls_shortcuts_and_file_section() {
        let ca = temp_file("ca.pem", "ca");
        let cert = temp_file("client.pem", "cert");
        let key = temp_file("client-key.pem", "key");
        let c = load_env(&[
            ("SWITCHYARD_REDIS_URL", "rediss://127.0.0.1:6380"),
            ("SWITCHYARD_REDIS_TLS_CA", ca.to_str().unwrap()),
            ("SWITCHYARD_REDIS_TLS_CERT", cert.to_str().unwrap()),
            ("SWITCHYARD_REDIS_TLS_KEY", key.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(c.redis_tls.ca.as_deref(), Some(ca.as_path()));
        assert_eq!(c.redis_tls.cert.as_deref(), Some(cert.as_path()));
        assert_eq!(c.redis_tls.key.as_deref(), Some(key.as_path()));
        let file = format!(
            "redis_url = \"rediss-cluster://127.0.0.1:7000\"\n[redis_tls]\nca = {:?}\n",
            ca.to_str().unwrap()
        );
        let c = load(&with_file(&file), &env(&[])).unwrap();
        assert_eq!(c.redis_tls.ca.as_deref(), Some(ca.as_path()));
        assert!(c.redis_tls.cert.is_none());
        let err = load_env(&[
            ("SWITCHYARD_REDIS_URL", "redis://127.0.0.1:6380"),
            ("SWITCHYARD_REDIS_TLS_CA", ca.to_str().unwrap()),
        ])
        .unwrap_err();
        assert_eq!(err.field, "redis_tls");
        let err = load(&with_file("[redis_tls]\nkey_file = \"x\"\n"), &env(&[])).unwrap_err();
        assert_eq!(err.field, "redis_tls.key_file");
    }

    #[test]
    fn env_credentials_replace_file_ones() {
        let file = format!(
            "[[auth.tokens]]\nsecret = \"{}\"\nsub = \"file\"\n",
            secret('f')
        );
        let tokens = format!("{},carol:{}", secret('x'), secret('y'));
        let c = load(&with_file(&file), &env(&[("SWITCHYARD_TOKENS", &tokens)])).unwrap();
        let subs: Vec<&str> = c.auth.tokens.iter().map(|t| t.sub.as_str()).collect();
        assert_eq!(subs, ["token-1", "carol"]);
        assert_eq!(
            c.effective_auth_modes(),
            [AuthMode::Token, AuthMode::Device]
        );
    }

    #[test]
    fn the_node_word_makes_an_agent_credential() {
        let entry = format!("echo:{}:node", secret('n'));
        let c = load_env(&[("SWITCHYARD_TOKENS", &entry)]).unwrap();
        assert_eq!(c.auth.tokens[0].role, "node");
        assert!(c.auth.tokens[0].scopes.is_empty());
        let entry = format!("ops:{}:operator.read", secret('o'));
        let c = load_env(&[("SWITCHYARD_TOKENS", &entry)]).unwrap();
        assert_eq!(c.auth.tokens[0].role, "operator");
        assert_eq!(c.auth.tokens[0].scopes, ["operator.read"]);
    }

    #[test]
    fn generic_paths_number_bool_array() {
        let c = load_env(&[
            ("SWITCHYARD_LIMITS__MAX_PAYLOAD", "2048"),
            ("SWITCHYARD_RATE_LIMITS__CONNECT_PER_IP__LIMIT", "5"),
            ("SWITCHYARD_CHANNELS__PRESENCE", "false"),
            (
                "SWITCHYARD_AUTH__NONE_SCOPES",
                "[\"operator.read\", \"operator.write\"]",
            ),
            ("SWITCHYARD_LOG__LEVEL", "warn"),
        ])
        .unwrap();
        assert_eq!(c.limits.max_payload, 2048);
        assert_eq!(c.rate_limits.connect_per_ip.limit, 5);
        assert_eq!(c.rate_limits.connect_per_ip.window_ms, 10_000);
        assert!(!c.channels.presence);
        assert_eq!(c.auth.none_scopes, ["operator.read", "operator.write"]);
        assert_eq!(c.log.level, "warn");
    }

    #[test]
    fn named_shortcut_wins_over_generic_path() {
        let c = load_env(&[
            ("SWITCHYARD_LOG", "debug"),
            ("SWITCHYARD_LOG__LEVEL", "warn"),
        ])
        .unwrap();
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn unrelated_vars_are_ignored() {
        let c = load_env(&[
            ("SWITCHYARD_TOKEN", "x"),
            ("SWITCHYARD_URL", "ws://x"),
            ("SWITCHYARD_WHATEVER", "1"),
            ("HOME", "/root"),
        ])
        .unwrap();
        assert_eq!(c.port, 18789);
    }

    #[test]
    fn unknown_generic_key_is_named() {
        let err = load_env(&[("SWITCHYARD_LIMITS__NONSENSE", "1")]).unwrap_err();
        assert_eq!(err.field, "limits.nonsense");
        assert!(err.message.contains("nonsense"), "{err}");
        let err = load_env(&[("SWITCHYARD_BOGUS__KEY", "1")]).unwrap_err();
        assert_eq!(err.field, "bogus");
    }

    #[test]
    fn bad_enum_values_are_explained() {
        let err = load_env(&[("SWITCHYARD_BIND", "moon")]).unwrap_err();
        assert_eq!(err.field, "bind");
        assert!(err.message.contains("loopback, lan, tailnet"), "{err}");
        let err = load_env(&[("SWITCHYARD_AUTH_MODE", "magic")]).unwrap_err();
        assert_eq!(err.field, "auth.modes");
        assert!(err.message.contains("magic"), "{err}");
    }

    #[test]
    fn bad_port_string_names_port() {
        let err = load_env(&[("SWITCHYARD_PORT", "abc")]).unwrap_err();
        assert_eq!(err.field, "port");
        assert!(err.message.contains("SWITCHYARD_PORT"), "{err}");
        assert!(err.message.contains("\"abc\""), "{err}");
        let err = load_env(&[("SWITCHYARD_METRICS_PORT", "70000")]).unwrap_err();
        assert_eq!(err.field, "metrics_port");
    }

    /// The `Env: SWITCHYARD_…` in each flag's help is what users read, so
    /// every flag names a variable and every variable named is one this
    /// layer (or `SWITCHYARD_CONFIG`) reads.
    #[test]
    fn every_flag_help_names_a_variable_that_is_read() {
        use clap::Args;
        let command = crate::config::ServeArgs::augment_args(clap::Command::new("serve"));
        let defaults = toml::Value::try_from(crate::config::Config::default()).unwrap();
        for arg in command.get_arguments() {
            let flag = arg.get_long().unwrap_or_default();
            let help = [arg.get_help(), arg.get_long_help()]
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            let names: Vec<&str> = help
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with(ENV_PREFIX))
                .collect();
            assert!(!names.is_empty(), "--{flag} names no variable: {help}");
            for name in names {
                let suffix = &name[ENV_PREFIX.len()..];
                if suffix == "CONFIG" || shortcut(suffix).is_some() {
                    continue;
                }
                let path = generic_path(name, suffix).unwrap();
                let found = path
                    .iter()
                    .try_fold(&defaults, |value, key| value.get(key.as_str()));
                assert!(found.is_some(), "--{flag} names {name}, which is not read");
            }
        }
    }
}
