//! Loading and validating [`Config`].
//!
//! Three layers are merged, each overriding the previous one:
//!
//! 1. **File** — the TOML file named by `--config` or `SWITCHYARD_CONFIG`
//!    (no file: built-in defaults). It is parsed into a [`toml::Table`].
//! 2. **Environment** — `SWITCHYARD_*` variables are written into that same
//!    table *before* it is deserialized, so the file and the environment go
//!    through one serde pass with one set of defaults and one
//!    `deny_unknown_fields` check. Named shortcuts (`SWITCHYARD_PORT`,
//!    `SWITCHYARD_JWT_SECRET`, …) map to fixed keys; any other variable with a
//!    `__` in its name addresses a dotted path (`SWITCHYARD_LIMITS__MAX_PAYLOAD`
//!    → `limits.max_payload`) and its value is read as a TOML value when it
//!    parses as one, else as a string.
//! 3. **Flags** — [`ServeArgs`] given on the command line are applied to the
//!    deserialized struct. A given flag replaces the value; repeatable flags
//!    replace the whole list.
//!
//! Finally [`Config::validate`] checks the result. Every error is a
//! [`ConfigError`] naming the dotted field it is about.

use super::{AuthMode, BindMode, Config, LogFormat, RateLimits, StaticCredential, TlsConfig};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// Prefix of every environment variable this loader reads.
const ENV_PREFIX: &str = "SWITCHYARD_";

// Flags of `switchyard serve`. Settings are read from the config file,
// then SWITCHYARD_* environment variables, then these flags; a flag given
// overrides both. (Plain comments: a doc comment here would replace the
// command's own help text.)
//
// Every field is an `Option` (or a `bool` that only ever turns something
// on) so that "not given" leaves the file / environment value alone.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file. Default: none (built-in defaults).
    /// Env: SWITCHYARD_CONFIG.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Where to listen: loopback (127.0.0.1), lan (0.0.0.0), tailnet (this
    /// host's 100.64.0.0/10 address, error if none), auto (tailnet address if
    /// any, else loopback) or a literal IP address. Default: loopback.
    /// Env: SWITCHYARD_BIND.
    #[arg(long, value_name = "loopback|lan|tailnet|auto|IP", value_parser = parse_bind_mode)]
    pub bind: Option<BindMode>,

    /// TCP port for WebSocket and HTTP. Default: 18789. Env: SWITCHYARD_PORT.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Stable name of this instance. Default: random. Env: SWITCHYARD_INSTANCE_ID.
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,

    /// Redis URL (redis://, rediss://, redis-sentinel://, rediss-sentinel://,
    /// redis-cluster://, rediss-cluster://). Default: none (standalone, in-process backend).
    /// Env: SWITCHYARD_REDIS_URL.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel. Default: sy.
    /// Env: SWITCHYARD_REDIS_PREFIX.
    #[arg(long, value_name = "PREFIX")]
    pub redis_prefix: Option<String>,

    /// Also serve /metrics on this port (it is always on the main port).
    /// Default: none. Env: SWITCHYARD_METRICS_PORT.
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,

    /// Log filter (tracing env-filter syntax, e.g. info or switchyard=debug).
    /// Default: info. Env: SWITCHYARD_LOG.
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,

    /// Log output format: pretty or json. Default: pretty.
    /// Env: SWITCHYARD_LOG_FORMAT.
    #[arg(long, value_name = "pretty|json", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,

    /// PEM certificate chain; enables TLS together with --tls-key.
    /// Default: none (plain TCP). Env: SWITCHYARD_TLS_CERT.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key matching --tls-cert. Default: none.
    /// Env: SWITCHYARD_TLS_KEY.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// Enabled authentication modes, comma separated: jwt, token, api_key,
    /// password, none. Default: derived from the credentials configured.
    /// Env: SWITCHYARD_AUTH_MODE.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_auth_mode)]
    pub auth_mode: Option<Vec<AuthMode>>,

    /// HMAC secret for JWTs (at least 32 bytes). Default: none.
    /// Env: SWITCHYARD_JWT_SECRET.
    #[arg(long, value_name = "SECRET")]
    pub jwt_secret: Option<String>,

    /// PEM file with the RSA, EC or Ed25519 public key that verifies JWTs.
    /// Default: none. Env: SWITCHYARD_JWT_PUBLIC_KEY.
    #[arg(long, value_name = "PATH")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required JWT `iss` claim. Default: not checked. Env: SWITCHYARD_JWT_ISSUER.
    #[arg(long, value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required JWT `aud` claim. Default: not checked. Env: SWITCHYARD_JWT_AUDIENCE.
    #[arg(long, value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Shared operator password (at least 8 characters). Default: none.
    /// Env: SWITCHYARD_PASSWORD.
    #[arg(long, value_name = "PASSWORD")]
    pub password: Option<String>,

    /// API key, repeatable: `<secret>`, `<sub>:<secret>` or
    /// `<sub>:<secret>:<scope> <scope>…` (default scope operator.admin).
    /// Replaces all configured API keys. Default: none.
    /// Env: SWITCHYARD_API_KEYS (comma separated).
    #[arg(long = "api-key", value_name = "ENTRY")]
    pub api_key: Option<Vec<String>>,

    /// Static bearer token, repeatable; same syntax as --api-key. Replaces all
    /// configured tokens. Default: none. Env: SWITCHYARD_TOKENS (comma separated).
    #[arg(long = "token", value_name = "ENTRY")]
    pub token: Option<Vec<String>>,

    /// Allow auth mode none on a non-loopback bind (logged loudly).
    /// Default: false. Env: SWITCHYARD_ALLOW_INSECURE_NONE.
    #[arg(long)]
    pub allow_insecure_none: bool,

    /// Allowed WebSocket Origin, repeatable; `*` wildcards allowed. Replaces
    /// the configured list. Default: none (only same-host or no Origin).
    /// Env: SWITCHYARD_ALLOWED_ORIGINS (comma separated).
    #[arg(long = "allowed-origin", value_name = "PATTERN")]
    pub allowed_origin: Option<Vec<String>>,

    /// Proxy whose X-Forwarded-For / X-Real-IP is believed, as a CIDR or a
    /// bare IP; repeatable. Replaces the configured list. Default: none.
    /// Env: SWITCHYARD_TRUSTED_PROXIES (comma separated).
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_cidr)]
    pub trusted_proxy: Option<Vec<IpNet>>,

    /// Largest accepted WebSocket message in bytes (1024..=64 MiB).
    /// Default: 1048576. Env: SWITCHYARD_LIMITS__MAX_PAYLOAD.
    #[arg(long, value_name = "BYTES")]
    pub max_payload: Option<usize>,

    /// Most concurrent connections on this instance. Default: 100000.
    /// Env: SWITCHYARD_LIMITS__MAX_CONNECTIONS.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Outbound frames queued per connection before it counts as a slow
    /// consumer. Default: 1024. Env: SWITCHYARD_LIMITS__OUTBOUND_QUEUE.
    #[arg(long, value_name = "FRAMES")]
    pub outbound_queue: Option<usize>,

    /// Interval between server pings, in ms (>= 100). Default: 15000.
    /// Env: SWITCHYARD_LIMITS__HEARTBEAT_MS.
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,

    /// Silence after which a client is dropped, in ms (> heartbeat).
    /// Default: 45000. Env: SWITCHYARD_LIMITS__CLIENT_TIMEOUT_MS.
    #[arg(long, value_name = "MS")]
    pub client_timeout_ms: Option<u64>,

    /// Time allowed for the connect handshake, in ms (>= 100). Default: 10000.
    /// Env: SWITCHYARD_LIMITS__HANDSHAKE_TIMEOUT_MS.
    #[arg(long, value_name = "MS")]
    pub handshake_timeout_ms: Option<u64>,

    /// Time given to connections to close on shutdown, in ms (<= 600000).
    /// Default: 10000. Env: SWITCHYARD_LIMITS__DRAIN_DEADLINE_MS.
    #[arg(long, value_name = "MS")]
    pub drain_deadline_ms: Option<u64>,

    /// Interval of presence updates, in ms (>= 100). Default: 5000.
    /// Env: SWITCHYARD_LIMITS__PRESENCE_TICK_MS.
    #[arg(long, value_name = "MS")]
    pub presence_tick_ms: Option<u64>,

    /// Where the generated development token is written (loopback only).
    /// Default: none. Env: SWITCHYARD_DEV_TOKEN_FILE.
    #[arg(long, value_name = "PATH")]
    pub dev_token_file: Option<PathBuf>,
}

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

/// A configuration problem, naming the dotted field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Merges file → `SWITCHYARD_*` env → flags, then validates.
pub fn load(args: &ServeArgs, env: &dyn EnvSource) -> Result<Config, ConfigError> {
    let vars = switchyard_vars(env);
    let mut table = match config_path(args, &vars) {
        Some(path) => read_file(&path)?,
        None => toml::Table::new(),
    };
    apply_env(&mut table, &vars)?;
    let mut config = deserialize(table)?;
    apply_flags(&mut config, args)?;
    config.validate()?;
    Ok(config)
}

// ---------------------------------------------------------------- file layer

/// `SWITCHYARD_*` variables, sorted so that the overlay is deterministic
/// whatever order the source returns them in.
fn switchyard_vars(env: &dyn EnvSource) -> BTreeMap<String, String> {
    env.vars()
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

fn config_path(args: &ServeArgs, vars: &BTreeMap<String, String>) -> Option<PathBuf> {
    if let Some(path) = &args.config {
        return Some(path.clone());
    }
    // An empty SWITCHYARD_CONFIG counts as unset, as shells make it easy to
    // export one by accident.
    vars.get("SWITCHYARD_CONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::new("config", format!("{}: {e}", path.display())))
}

/// Deserializes the merged table, turning serde errors into field errors.
fn deserialize(mut table: toml::Table) -> Result<Config, ConfigError> {
    fill_window_defaults(&mut table)?;
    table.try_into::<Config>().map_err(|e| de_error(&e))
}

/// `Window` has no serde defaults of its own (each window's default
/// differs), so `rate_limits.connect_per_ip.limit = 5` alone would fail
/// with "missing field `window_ms`". Fill the missing half of every
/// partially given window from [`RateLimits::default`].
fn fill_window_defaults(table: &mut toml::Table) -> Result<(), ConfigError> {
    let Some(given) = table
        .get_mut("rate_limits")
        .and_then(toml::Value::as_table_mut)
    else {
        return Ok(());
    };
    let defaults = toml::Table::try_from(RateLimits::default())
        .map_err(|e| ConfigError::new("rate_limits", format!("cannot encode defaults: {e}")))?;
    for (name, default) in defaults {
        let (Some(window), toml::Value::Table(default)) = (
            given.get_mut(&name).and_then(toml::Value::as_table_mut),
            default,
        ) else {
            continue;
        };
        for (key, value) in default {
            window.entry(key).or_insert(value);
        }
    }
    Ok(())
}

/// Builds a [`ConfigError`] from a toml deserialization error.
///
/// When deserializing from a `Table` (no source text), toml's `Display`
/// ends with a line ``in `a.b` `` naming the key path; that is the only
/// public way to get at it. An unknown field is reported against its
/// parent, so its own name is appended.
fn de_error(err: &toml::de::Error) -> ConfigError {
    let rendered = err.to_string();
    let mut path: Vec<String> = rendered
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `").and_then(|r| r.strip_suffix('`')))
        .map(|p| p.split('.').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut message = err.message().trim().to_owned();
    // serde's message for the untagged `Addr` fallback says nothing useful.
    if message.contains("untagged enum BindMode") {
        message = "expected loopback, lan, tailnet, auto or an IP address".to_owned();
    }
    if let Some(name) = unknown_field_name(&message) {
        path.push(name.to_owned());
    }
    let field = if path.is_empty() {
        "config".to_owned()
    } else {
        path.join(".")
    };
    ConfigError::new(field, message)
}

/// The name in serde's "unknown field `x`, expected …" message.
fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

// ----------------------------------------------------------------- env layer

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
    ("TRUSTED_PROXIES", "trusted_proxies", Kind::Cidrs),
    ("CORS_ORIGINS", "cors.allowed_origins", Kind::List),
    ("DEV_TOKEN_FILE", "auth.dev_token_file", Kind::Str),
    ("API_KEYS", "auth.api_keys", Kind::Creds("api-key")),
    ("TOKENS", "auth.tokens", Kind::Creds("token")),
];

/// Writes the `SWITCHYARD_*` variables into the file's table. Generic
/// `__` paths go first so that a named shortcut wins over a generic
/// variable addressing the same key.
fn apply_env(table: &mut toml::Table, vars: &BTreeMap<String, String>) -> Result<(), ConfigError> {
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

fn normalize_mode(mode: &str) -> String {
    mode.trim().to_ascii_lowercase().replace('-', "_")
}

/// A bare address is accepted where a network is expected.
fn normalize_cidr(entry: &str) -> String {
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

// ---------------------------------------------------------- table plumbing

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

// ------------------------------------------------------------ credentials

/// Parses credential entries (`<secret>`, `<sub>:<secret>` or
/// `<sub>:<secret>:<scope> <scope>…`) shared by env and flags. A bare
/// secret gets `sub` `<stem>-<n>` (1-based); missing scopes mean
/// `operator.admin`, as a key given on the command line is meant to work.
pub(crate) fn parse_credentials(
    field: &str,
    stem: &str,
    entries: &[String],
) -> Result<Vec<StaticCredential>, ConfigError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| parse_credential(&format!("{field}[{i}]"), stem, i + 1, entry))
        .collect()
}

fn parse_credential(
    field: &str,
    stem: &str,
    n: usize,
    entry: &str,
) -> Result<StaticCredential, ConfigError> {
    let parts: Vec<&str> = entry.trim().splitn(3, ':').collect();
    let (sub, secret, scopes) = match parts.as_slice() {
        [secret] => (format!("{stem}-{n}"), *secret, None),
        [sub, secret] => ((*sub).to_owned(), *secret, None),
        [sub, secret, scopes] => ((*sub).to_owned(), *secret, Some(*scopes)),
        _ => return Err(ConfigError::new(field, "empty credential entry")),
    };
    let mut scopes: Vec<String> = scopes
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    // The word `node` makes it an agent's credential (role node).
    let node = scopes.iter().any(|s| s == "node");
    scopes.retain(|s| s != "node");
    if scopes.is_empty() && !node {
        scopes.push("operator.admin".to_owned());
    }
    Ok(StaticCredential {
        secret: secret.to_owned(),
        sub,
        role: if node { "node" } else { "operator" }.to_owned(),
        scopes,
        channels: Vec::new(),
    })
}

// ---------------------------------------------------------------- flag layer

fn apply_flags(config: &mut Config, args: &ServeArgs) -> Result<(), ConfigError> {
    apply_server_flags(config, args);
    apply_tls_flags(config, args)?;
    apply_auth_flags(config, args)?;
    apply_limit_flags(config, args);
    Ok(())
}

/// Replaces `slot` with a clone of `flag` when the flag was given.
fn set<T: Clone>(slot: &mut T, flag: &Option<T>) {
    if let Some(v) = flag {
        *slot = v.clone();
    }
}

/// Like [`set`] for optional settings.
fn set_some<T: Clone>(slot: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        slot.clone_from(flag);
    }
}

fn apply_server_flags(c: &mut Config, a: &ServeArgs) {
    set(&mut c.bind, &a.bind);
    set(&mut c.port, &a.port);
    set_some(&mut c.instance_id, &a.instance_id);
    set_some(&mut c.redis_url, &a.redis_url);
    set(&mut c.redis_prefix, &a.redis_prefix);
    set_some(&mut c.metrics_port, &a.metrics_port);
    set(&mut c.log.level, &a.log);
    set(&mut c.log.format, &a.log_format);
    set(&mut c.allowed_origins, &a.allowed_origin);
    set(&mut c.trusted_proxies, &a.trusted_proxy);
}

/// TLS needs both files; a single flag may complete or replace one half
/// of a `[tls]` section from the file / env.
fn apply_tls_flags(c: &mut Config, a: &ServeArgs) -> Result<(), ConfigError> {
    match (&mut c.tls, &a.tls_cert, &a.tls_key) {
        (_, None, None) => {}
        (_, Some(cert), Some(key)) => {
            c.tls = Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        (Some(tls), cert, key) => {
            set(&mut tls.cert, cert);
            set(&mut tls.key, key);
        }
        (None, Some(_), None) => {
            return Err(ConfigError::new("tls.key", "--tls-cert needs --tls-key"));
        }
        (None, None, Some(_)) => {
            return Err(ConfigError::new("tls.cert", "--tls-key needs --tls-cert"));
        }
    }
    Ok(())
}

fn apply_auth_flags(c: &mut Config, a: &ServeArgs) -> Result<(), ConfigError> {
    let auth = &mut c.auth;
    set(&mut auth.modes, &a.auth_mode);
    set_some(&mut auth.jwt.secret, &a.jwt_secret);
    set_some(&mut auth.jwt.public_key, &a.jwt_public_key);
    set_some(&mut auth.jwt.issuer, &a.jwt_issuer);
    set_some(&mut auth.jwt.audience, &a.jwt_audience);
    set_some(&mut auth.password, &a.password);
    set_some(&mut auth.dev_token_file, &a.dev_token_file);
    if a.allow_insecure_none {
        auth.allow_insecure_none = true;
    }
    if let Some(entries) = &a.api_key {
        auth.api_keys = parse_credentials("auth.api_keys", "api-key", entries)?;
    }
    if let Some(entries) = &a.token {
        auth.tokens = parse_credentials("auth.tokens", "token", entries)?;
    }
    Ok(())
}

fn apply_limit_flags(c: &mut Config, a: &ServeArgs) {
    let l = &mut c.limits;
    set(&mut l.max_payload, &a.max_payload);
    set(&mut l.max_connections, &a.max_connections);
    set(&mut l.outbound_queue, &a.outbound_queue);
    set(&mut l.heartbeat_ms, &a.heartbeat_ms);
    set(&mut l.client_timeout_ms, &a.client_timeout_ms);
    set(&mut l.handshake_timeout_ms, &a.handshake_timeout_ms);
    set(&mut l.drain_deadline_ms, &a.drain_deadline_ms);
    set(&mut l.presence_tick_ms, &a.presence_tick_ms);
}

// ------------------------------------------------------------ clap parsers

fn parse_bind_mode(s: &str) -> Result<BindMode, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "loopback" => Ok(BindMode::Loopback),
        "lan" => Ok(BindMode::Lan),
        "tailnet" => Ok(BindMode::Tailnet),
        "auto" => Ok(BindMode::Auto),
        other => other.parse::<IpAddr>().map(BindMode::Addr).map_err(|_| {
            format!("expected loopback, lan, tailnet, auto or an IP address, got {s:?}")
        }),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("expected pretty or json, got {s:?}")),
    }
}

fn parse_auth_mode(s: &str) -> Result<AuthMode, String> {
    match normalize_mode(s).as_str() {
        "jwt" => Ok(AuthMode::Jwt),
        "token" => Ok(AuthMode::Token),
        "api_key" => Ok(AuthMode::ApiKey),
        "password" => Ok(AuthMode::Password),
        "none" => Ok(AuthMode::None),
        _ => Err(format!(
            "expected jwt, token, api_key, password or none, got {s:?}"
        )),
    }
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    normalize_cidr(s.trim())
        .parse::<IpNet>()
        .map_err(|_| format!("expected a CIDR such as 10.0.0.0/8 or an IP address, got {s:?}"))
}

// ------------------------------------------------------------ bind address

/// True for 100.64.0.0/10, the CGNAT range Tailscale assigns from.
fn is_tailnet(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 100 && (o[1] & 0xC0) == 64
        }
        IpAddr::V6(_) => false,
    }
}

fn first_tailnet(addrs: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
    addrs.into_iter().find(|ip| is_tailnet(*ip))
}

fn tailnet_addr() -> Result<Option<IpAddr>, ConfigError> {
    let interfaces = if_addrs::get_if_addrs()
        .map_err(|e| ConfigError::new("bind", format!("cannot list network interfaces: {e}")))?;
    Ok(first_tailnet(
        interfaces.iter().map(if_addrs::Interface::ip),
    ))
}

impl Config {
    /// The IP to bind. `tailnet` fails when no interface has a
    /// 100.64.0.0/10 address; `auto` then falls back to loopback.
    pub fn bind_addr(&self) -> Result<IpAddr, ConfigError> {
        match self.bind {
            BindMode::Loopback => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            BindMode::Lan => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            BindMode::Addr(ip) => Ok(ip),
            BindMode::Tailnet => tailnet_addr()?.ok_or_else(|| {
                ConfigError::new(
                    "bind",
                    "tailnet: no local interface has an address in 100.64.0.0/10 (is Tailscale up?)",
                )
            }),
            BindMode::Auto => Ok(tailnet_addr()
                .ok()
                .flatten()
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))),
        }
    }

    /// True when [`Config::bind_addr`] is a loopback address (false when it
    /// cannot be resolved, the safe answer for security checks).
    pub fn is_loopback(&self) -> bool {
        self.bind_addr().is_ok_and(|ip| ip.is_loopback())
    }

    /// `auth.modes` when set, else the modes implied by the credentials
    /// configured (empty when there are none).
    pub fn effective_auth_modes(&self) -> Vec<AuthMode> {
        let auth = &self.auth;
        if !auth.modes.is_empty() {
            return auth.modes.clone();
        }
        let mut modes = Vec::new();
        if auth.jwt.secret.is_some() || auth.jwt.public_key.is_some() {
            modes.push(AuthMode::Jwt);
        }
        if !auth.tokens.is_empty() {
            modes.push(AuthMode::Token);
        }
        if !auth.api_keys.is_empty() {
            modes.push(AuthMode::ApiKey);
        }
        if auth.password.is_some() {
            modes.push(AuthMode::Password);
        }
        modes
    }

    /// Rejects inconsistent settings; the error names the dotted field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bind_addr()?;
        validate_limits(&self.limits)?;
        validate_rate_limits(&self.rate_limits)?;
        validate_server(self)?;
        validate_tls(self.tls.as_ref())?;
        validate_jwt(self)?;
        validate_auth_modes(self)?;
        validate_credentials(&self.auth)?;
        validate_none_mode(self)?;
        validate_lists(self)
    }
}

// -------------------------------------------------------------- validation

const MAX_PAYLOAD_CAP: u64 = 64 << 20;
const JWT_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];
const SCOPES: &[&str] = &[
    "operator.admin",
    "operator.read",
    "operator.write",
    "operator.approvals",
    "operator.pairing",
];
/// URL schemes the Redis client (fred) understands.
const REDIS_SCHEMES: &[&str] = &[
    "redis://",
    "rediss://",
    "redis-sentinel://",
    "rediss-sentinel://",
    "redis-cluster://",
    "rediss-cluster://",
];

/// `Err` naming `field` unless `ok`.
fn ensure(ok: bool, field: &str, message: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(field, message))
    }
}

fn validate_limits(l: &super::Limits) -> Result<(), ConfigError> {
    validate_sizes(l)?;
    validate_timings(l)
}

/// `Err` naming `field` unless `lo <= value <= hi`.
fn in_range(value: u64, lo: u64, hi: u64, field: &str) -> Result<(), ConfigError> {
    let message = if hi == u64::MAX {
        format!("must be at least {lo}, got {value}")
    } else {
        format!("must be in {lo}..={hi}, got {value}")
    };
    ensure((lo..=hi).contains(&value), field, message)
}

fn validate_sizes(l: &super::Limits) -> Result<(), ConfigError> {
    // usize → u64 is lossless on every supported target.
    let checks = [
        (l.max_payload, 1024, MAX_PAYLOAD_CAP, "limits.max_payload"),
        (l.max_batch, 1, 10_000, "limits.max_batch"),
        (l.outbound_queue, 1, 1_000_000, "limits.outbound_queue"),
        (l.max_json_depth, 2, 1024, "limits.max_json_depth"),
        (
            l.max_sessions_per_client,
            1,
            u64::MAX,
            "limits.max_sessions_per_client",
        ),
        (l.max_subscriptions, 1, u64::MAX, "limits.max_subscriptions"),
        (l.session_history, 1, 100_000, "limits.session_history"),
        (l.max_connections, 1, u64::MAX, "limits.max_connections"),
        (
            l.max_connections_per_ip,
            1,
            u64::MAX,
            "limits.max_connections_per_ip",
        ),
    ];
    for (value, lo, hi, field) in checks {
        in_range(value as u64, lo, hi, field)?;
    }
    Ok(())
}

fn validate_timings(l: &super::Limits) -> Result<(), ConfigError> {
    in_range(l.heartbeat_ms, 100, u64::MAX, "limits.heartbeat_ms")?;
    in_range(
        l.handshake_timeout_ms,
        100,
        u64::MAX,
        "limits.handshake_timeout_ms",
    )?;
    in_range(l.presence_tick_ms, 100, u64::MAX, "limits.presence_tick_ms")?;
    in_range(l.node_ttl_ms, 300, 600_000, "limits.node_ttl_ms")?;
    in_range(l.drain_deadline_ms, 0, 600_000, "limits.drain_deadline_ms")?;
    ensure(
        l.client_timeout_ms > l.heartbeat_ms,
        "limits.client_timeout_ms",
        format!(
            "must be greater than limits.heartbeat_ms ({}), got {}",
            l.heartbeat_ms, l.client_timeout_ms
        ),
    )
}

fn validate_rate_limits(r: &super::RateLimits) -> Result<(), ConfigError> {
    let windows = [
        ("connect_per_ip", r.connect_per_ip),
        ("auth_failures_per_ip", r.auth_failures_per_ip),
        ("messages_per_conn", r.messages_per_conn),
        ("messages_per_identity", r.messages_per_identity),
        ("http_per_key", r.http_per_key),
    ];
    for (name, w) in windows {
        ensure(
            w.limit >= 1,
            &format!("rate_limits.{name}.limit"),
            "must be at least 1",
        )?;
        ensure(
            w.window_ms >= 1,
            &format!("rate_limits.{name}.window_ms"),
            "must be at least 1",
        )?;
    }
    Ok(())
}

fn validate_server(c: &Config) -> Result<(), ConfigError> {
    // tracing-subscriber is not a dependency here; `main` reports a filter
    // it cannot parse. Empty would silently mean "log nothing".
    ensure(
        !c.log.level.trim().is_empty(),
        "log.level",
        "must not be empty",
    )?;
    if let Some(url) = &c.redis_url {
        ensure(
            REDIS_SCHEMES.iter().any(|s| url.starts_with(s)),
            "redis_url",
            format!("must start with one of {}", REDIS_SCHEMES.join(", ")),
        )?;
    }
    let p = &c.redis_prefix;
    ensure(!p.is_empty(), "redis_prefix", "must not be empty")?;
    ensure(
        !p.chars().any(char::is_whitespace),
        "redis_prefix",
        "must not contain spaces",
    )?;
    ensure(
        p.len() <= 64,
        "redis_prefix",
        "must be at most 64 characters",
    )?;
    if let Some(m) = c.metrics_port {
        ensure(
            m == 0 || c.port == 0 || m != c.port,
            "metrics_port",
            format!("must differ from port ({m})"),
        )?;
    }
    Ok(())
}

fn validate_tls(tls: Option<&TlsConfig>) -> Result<(), ConfigError> {
    let Some(tls) = tls else { return Ok(()) };
    ensure_file(&tls.cert, "tls.cert")?;
    ensure_file(&tls.key, "tls.key")
}

/// The path names a readable regular file.
fn ensure_file(path: &Path, field: &str) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .and_then(|f| f.metadata())
        .map_err(|e| ConfigError::new(field, format!("cannot read {}: {e}", path.display())))
        .and_then(|m| {
            ensure(
                m.is_file(),
                field,
                format!("{} is not a file", path.display()),
            )
        })
}

fn validate_jwt(c: &Config) -> Result<(), ConfigError> {
    let jwt = &c.auth.jwt;
    if c.effective_auth_modes().contains(&AuthMode::Jwt) {
        ensure(
            jwt.secret.is_some() || jwt.public_key.is_some(),
            "auth.jwt",
            "mode jwt needs auth.jwt.secret or auth.jwt.public_key",
        )?;
    }
    if let Some(path) = &jwt.public_key {
        ensure_file(path, "auth.jwt.public_key")?;
    }
    if let Some(path) = &jwt.private_key {
        ensure_file(path, "auth.jwt.private_key")?;
    }
    if let Some(secret) = &jwt.secret {
        ensure(
            secret.len() >= 32,
            "auth.jwt.secret",
            "must be at least 32 bytes",
        )?;
    }
    for (i, alg) in jwt.algorithms.iter().enumerate() {
        let field = format!("auth.jwt.algorithms[{i}]");
        ensure(
            !alg.eq_ignore_ascii_case("none"),
            &field,
            "algorithm none is never accepted",
        )?;
        ensure(
            JWT_ALGORITHMS.contains(&alg.as_str()),
            &field,
            format!(
                "unknown algorithm {alg:?}, expected one of {}",
                JWT_ALGORITHMS.join(" ")
            ),
        )?;
    }
    Ok(())
}

fn validate_auth_modes(c: &Config) -> Result<(), ConfigError> {
    let auth = &c.auth;
    let modes = c.effective_auth_modes();
    if modes.contains(&AuthMode::Token) {
        ensure(
            !auth.tokens.is_empty(),
            "auth.tokens",
            "mode token needs at least one token",
        )?;
    }
    if modes.contains(&AuthMode::ApiKey) {
        ensure(
            !auth.api_keys.is_empty(),
            "auth.api_keys",
            "mode api_key needs at least one key",
        )?;
    }
    if modes.contains(&AuthMode::Password) {
        ensure(
            auth.password.is_some(),
            "auth.password",
            "mode password needs a password",
        )?;
    }
    if let Some(pw) = &auth.password {
        ensure(
            pw.chars().count() >= 8,
            "auth.password",
            "must be at least 8 characters",
        )?;
    }
    validate_scopes(&auth.none_scopes, "auth.none_scopes")?;
    validate_scopes(&auth.password_scopes, "auth.password_scopes")
}

fn validate_scopes(scopes: &[String], field: &str) -> Result<(), ConfigError> {
    for (i, scope) in scopes.iter().enumerate() {
        ensure(
            SCOPES.contains(&scope.as_str()),
            &format!("{field}[{i}]"),
            format!(
                "unknown scope {scope:?}, expected one of {}",
                SCOPES.join(" ")
            ),
        )?;
    }
    Ok(())
}

fn validate_credentials(auth: &super::AuthConfig) -> Result<(), ConfigError> {
    // Secrets map to identities, so one secret in two entries would make
    // the identity depend on lookup order.
    let mut seen: HashMap<&str, String> = HashMap::new();
    let lists = [
        ("auth.tokens", &auth.tokens),
        ("auth.api_keys", &auth.api_keys),
    ];
    for (list, creds) in lists {
        for (i, cred) in creds.iter().enumerate() {
            let field = format!("{list}[{i}]");
            validate_credential(cred, &field)?;
            if let Some(first) = seen.insert(&cred.secret, field.clone()) {
                return Err(ConfigError::new(
                    format!("{field}.secret"),
                    format!("same secret as {first}"),
                ));
            }
        }
    }
    Ok(())
}

fn validate_credential(cred: &StaticCredential, field: &str) -> Result<(), ConfigError> {
    ensure(
        cred.secret.chars().count() >= 16,
        &format!("{field}.secret"),
        "must be at least 16 characters",
    )?;
    ensure(
        !cred.sub.trim().is_empty(),
        &format!("{field}.sub"),
        "must not be empty",
    )?;
    ensure(
        cred.role == "operator" || cred.role == "node",
        &format!("{field}.role"),
        format!("must be operator or node, got {:?}", cred.role),
    )?;
    validate_scopes(&cred.scopes, &format!("{field}.scopes"))
}

fn validate_none_mode(c: &Config) -> Result<(), ConfigError> {
    let none = c.effective_auth_modes().contains(&AuthMode::None);
    ensure(
        !none || c.auth.allow_insecure_none || c.is_loopback(),
        "auth.modes",
        "mode none lets anyone in and is refused on a non-loopback bind unless \
         auth.allow_insecure_none (SWITCHYARD_ALLOW_INSECURE_NONE=true, \
         --allow-insecure-none) is set",
    )
}

fn validate_lists(c: &Config) -> Result<(), ConfigError> {
    for (i, rule) in c.channels.rules.iter().enumerate() {
        ensure(
            !rule.prefix.is_empty(),
            &format!("channels.rules[{i}].prefix"),
            "must not be empty",
        )?;
        in_range(
            rule.access.history as u64,
            0,
            100_000,
            &format!("channels.rules[{i}].history"),
        )?;
    }
    in_range(
        c.channels.default.history as u64,
        0,
        100_000,
        "channels.default.history",
    )?;
    for (i, hook) in c.hooks.iter().enumerate() {
        let field = format!("hooks[{i}].name");
        let valid = !hook.name.is_empty()
            && hook.name.len() <= 64
            && hook
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
        ensure(valid, &field, "1-64 characters from A-Z a-z 0-9 - _ .")?;
        ensure(
            c.hooks[..i].iter().all(|h| h.name != hook.name),
            &field,
            format!("{} is configured twice", hook.name),
        )?;
        if let Some(secret) = &hook.secret {
            ensure(
                secret.len() >= 16,
                &format!("hooks[{i}].secret"),
                "must be at least 16 bytes",
            )?;
        }
    }
    let origin_lists = [
        ("allowed_origins", &c.allowed_origins),
        ("cors.allowed_origins", &c.cors.allowed_origins),
    ];
    for (name, list) in origin_lists {
        for (i, origin) in list.iter().enumerate() {
            ensure(
                !origin.trim().is_empty(),
                &format!("{name}[{i}]"),
                "must not be empty",
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// A unique file under the temp dir holding `contents`.
    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("switchyard-load-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load(&ServeArgs::default(), &env(pairs))
    }

    fn with_file(toml: &str) -> ServeArgs {
        ServeArgs {
            config: Some(temp_file("config.toml", toml)),
            ..ServeArgs::default()
        }
    }

    fn secret(c: char) -> String {
        std::iter::repeat_n(c, 20).collect()
    }

    /// Validates a default config after `edit`, returning the failing field.
    fn invalid_field(edit: impl FnOnce(&mut Config)) -> String {
        let mut config = Config::default();
        edit(&mut config);
        config.validate().unwrap_err().field
    }

    #[test]
    fn defaults_load_with_empty_env() {
        let config = load_env(&[]).unwrap();
        assert_eq!(config.port, 18789);
        assert_eq!(config.bind, BindMode::Loopback);
        assert_eq!(config.redis_prefix, "sy");
        assert!(config.is_loopback());
        assert!(config.effective_auth_modes().is_empty());
    }

    #[test]
    fn file_then_env_then_flags_for_port() {
        let mut args = with_file("port = 1000\n");
        assert_eq!(load(&args, &env(&[])).unwrap().port, 1000);
        let e = env(&[("SWITCHYARD_PORT", "2000")]);
        assert_eq!(load(&args, &e).unwrap().port, 2000);
        args.port = Some(3000);
        assert_eq!(load(&args, &e).unwrap().port, 3000);
    }

    #[test]
    fn config_path_from_env() {
        let path = temp_file("env.toml", "instance_id = \"from-file\"\n");
        let path = path.to_str().unwrap();
        let config = load_env(&[("SWITCHYARD_CONFIG", path)]).unwrap();
        assert_eq!(config.instance_id.as_deref(), Some("from-file"));
    }

    #[test]
    fn missing_file_names_config_and_path() {
        let args = ServeArgs {
            config: Some(PathBuf::from("/nonexistent/switchyard.toml")),
            ..ServeArgs::default()
        };
        let err = load(&args, &env(&[])).unwrap_err();
        assert_eq!(err.field, "config");
        assert!(
            err.message.contains("/nonexistent/switchyard.toml"),
            "{err}"
        );
    }

    #[test]
    fn toml_syntax_error_has_position() {
        let err = load(&with_file("port = \n"), &env(&[])).unwrap_err();
        assert_eq!(err.field, "config");
        assert!(err.message.contains("line 1"), "{err}");
    }

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
    fn bind_literal_ip_from_env_and_file() {
        let c = load_env(&[("SWITCHYARD_BIND", "127.0.0.2")]).unwrap();
        assert_eq!(c.bind, BindMode::Addr("127.0.0.2".parse().unwrap()));
        assert!(c.is_loopback());
        let c = load(&with_file("bind = \"::1\"\n"), &env(&[])).unwrap();
        assert_eq!(c.bind, BindMode::Addr("::1".parse().unwrap()));
        let err = load_env(&[("SWITCHYARD_BIND", "moon")]).unwrap_err();
        assert_eq!(err.field, "bind");
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
    fn credential_entries_in_all_three_forms() {
        let entries = [
            secret('a'),
            format!("alice:{}", secret('b')),
            format!("bob:{}:operator.read operator.write", secret('c')),
        ];
        let creds = parse_credentials("auth.api_keys", "api-key", &entries).unwrap();
        assert_eq!(creds[0].sub, "api-key-1");
        assert_eq!(creds[0].secret, secret('a'));
        assert_eq!(creds[0].scopes, ["operator.admin"]);
        assert_eq!(creds[1].sub, "alice");
        assert_eq!(creds[1].secret, secret('b'));
        assert_eq!(creds[1].scopes, ["operator.admin"]);
        assert_eq!(creds[2].sub, "bob");
        assert_eq!(creds[2].scopes, ["operator.read", "operator.write"]);
        assert!(creds.iter().all(|c| c.role == "operator"));
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
        assert_eq!(c.effective_auth_modes(), [AuthMode::Token]);
    }

    #[test]
    fn hooks_are_validated() {
        use crate::config::HookConfig;
        let hook = |name: &str, secret: Option<&str>| HookConfig {
            name: name.into(),
            secret: secret.map(str::to_owned),
        };
        assert_eq!(
            invalid_field(|c| c.hooks = vec![hook("a/b", None)]),
            "hooks[0].name"
        );
        assert_eq!(
            invalid_field(|c| c.hooks = vec![hook("gh", None), hook("gh", None)]),
            "hooks[1].name"
        );
        assert_eq!(
            invalid_field(|c| c.hooks = vec![hook("gh", Some("short"))]),
            "hooks[0].secret"
        );
        let ok = Config {
            hooks: vec![
                hook("gh", Some("a-secret-of-16-bytes")),
                hook("ci.v2", None),
            ],
            ..Config::default()
        };
        assert!(ok.validate().is_ok());
        // Debug output never shows the secret.
        let shown = format!("{:?}", ok.hooks[0]);
        assert!(!shown.contains("a-secret"), "{shown}");
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
    fn flag_credentials_replace_env_ones() {
        let args = ServeArgs {
            api_key: Some(vec![format!("dave:{}", secret('d'))]),
            ..ServeArgs::default()
        };
        let e = env(&[("SWITCHYARD_API_KEYS", &secret('e'))]);
        let c = load(&args, &e).unwrap();
        assert_eq!(c.auth.api_keys.len(), 1);
        assert_eq!(c.auth.api_keys[0].sub, "dave");
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
    fn wrong_type_in_file_names_path() {
        let err = load(&with_file("[limits]\nmax_batch = \"lots\"\n"), &env(&[])).unwrap_err();
        assert_eq!(err.field, "limits.max_batch");
    }

    #[test]
    fn channel_rules_from_file() {
        let file =
            "[[channels.rules]]\nprefix = \"team:\"\nsubscribe = \"read\"\npublish = \"admin\"\n";
        let c = load(&with_file(file), &env(&[])).unwrap();
        assert_eq!(c.channels.rules.len(), 1);
        assert_eq!(c.channels.rules[0].prefix, "team:");
        assert!(c.channels.rules[0].access.presence);
        assert_eq!(
            c.channels.rules[0].access.history, 0,
            "no history unless asked"
        );
        let file = "[[channels.rules]]\nprefix = \"log:\"\nsubscribe = \"read\"\npublish = \"write\"\nhistory = 50\n";
        let c = load(&with_file(file), &env(&[])).unwrap();
        assert_eq!(c.channels.rules[0].access.history, 50);
    }

    #[test]
    fn partial_rate_limit_window_in_file() {
        let file = "[rate_limits.http_per_key]\nwindow_ms = 5\n";
        let c = load(&with_file(file), &env(&[])).unwrap();
        assert_eq!(
            c.rate_limits.http_per_key,
            super::super::Window::new(600, 5)
        );
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

    #[test]
    fn flags_override_everything() {
        let args = ServeArgs {
            bind: Some(BindMode::Addr("127.0.0.3".parse().unwrap())),
            log: Some("trace".into()),
            log_format: Some(LogFormat::Json),
            max_payload: Some(4096),
            heartbeat_ms: Some(1000),
            client_timeout_ms: Some(3000),
            allowed_origin: Some(vec!["https://x".into()]),
            trusted_proxy: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            ..ServeArgs::default()
        };
        let e = env(&[
            ("SWITCHYARD_LOG", "info"),
            ("SWITCHYARD_ALLOWED_ORIGINS", "https://a,https://b"),
        ]);
        let c = load(&args, &e).unwrap();
        assert_eq!(c.bind, BindMode::Addr("127.0.0.3".parse().unwrap()));
        assert_eq!(c.log.level, "trace");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.limits.max_payload, 4096);
        assert_eq!(c.limits.client_timeout_ms, 3000);
        assert_eq!(c.allowed_origins, ["https://x"]);
        assert_eq!(c.trusted_proxies.len(), 1);
    }

    #[test]
    fn half_tls_flags_are_refused() {
        let args = ServeArgs {
            tls_cert: Some(PathBuf::from("/x/cert.pem")),
            ..ServeArgs::default()
        };
        assert_eq!(load(&args, &env(&[])).unwrap_err().field, "tls.key");
    }

    #[test]
    fn clap_parses_flags() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Cli::try_parse_from([
            "switchyard",
            "--bind",
            "tailnet",
            "--auth-mode",
            "jwt,api-key",
            "--token",
            "a",
            "--token",
            "b",
            "--trusted-proxy",
            "10.1.2.3",
            "--allow-insecure-none",
        ])
        .unwrap();
        let s = cli.serve;
        assert_eq!(s.bind, Some(BindMode::Tailnet));
        assert_eq!(s.auth_mode, Some(vec![AuthMode::Jwt, AuthMode::ApiKey]));
        assert_eq!(s.token, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(s.trusted_proxy.unwrap()[0].to_string(), "10.1.2.3/32");
        assert!(s.allow_insecure_none);
        assert!(s.port.is_none() && s.api_key.is_none());
        assert!(Cli::try_parse_from(["switchyard", "--bind", "moon"]).is_err());
    }

    #[test]
    fn validate_limit_failures_name_fields() {
        assert_eq!(
            invalid_field(|c| c.limits.max_payload = 10),
            "limits.max_payload"
        );
        assert_eq!(
            invalid_field(|c| c.limits.max_batch = 0),
            "limits.max_batch"
        );
        assert_eq!(
            invalid_field(|c| c.limits.outbound_queue = 0),
            "limits.outbound_queue"
        );
        assert_eq!(
            invalid_field(|c| c.limits.heartbeat_ms = 50),
            "limits.heartbeat_ms"
        );
        assert_eq!(
            invalid_field(|c| c.limits.client_timeout_ms = 15_000),
            "limits.client_timeout_ms"
        );
        assert_eq!(
            invalid_field(|c| c.limits.max_json_depth = 1),
            "limits.max_json_depth"
        );
        assert_eq!(
            invalid_field(|c| c.limits.drain_deadline_ms = 600_001),
            "limits.drain_deadline_ms"
        );
        assert_eq!(
            invalid_field(|c| c.limits.session_history = 0),
            "limits.session_history"
        );
        assert_eq!(
            invalid_field(|c| c.channels.rules[0].access.history = 100_001),
            "channels.rules[0].history"
        );
        assert_eq!(
            invalid_field(|c| c.channels.default.history = 100_001),
            "channels.default.history"
        );
        assert_eq!(
            invalid_field(|c| c.rate_limits.connect_per_ip.limit = 0),
            "rate_limits.connect_per_ip.limit"
        );
        assert_eq!(
            invalid_field(|c| c.rate_limits.http_per_key.window_ms = 0),
            "rate_limits.http_per_key.window_ms"
        );
    }

    #[test]
    fn validate_server_failures_name_fields() {
        assert_eq!(invalid_field(|c| c.log.level = " ".into()), "log.level");
        assert_eq!(
            invalid_field(|c| c.redis_url = Some("http://x".into())),
            "redis_url"
        );
        assert_eq!(
            invalid_field(|c| c.redis_prefix = "a b".into()),
            "redis_prefix"
        );
        assert_eq!(
            invalid_field(|c| c.metrics_port = Some(18789)),
            "metrics_port"
        );
        assert_eq!(
            invalid_field(|c| c.channels.rules[0].prefix.clear()),
            "channels.rules[0].prefix"
        );
        assert_eq!(
            invalid_field(|c| c.allowed_origins = vec![String::new()]),
            "allowed_origins[0]"
        );
    }

    #[test]
    fn validate_auth_failures_name_fields() {
        let err = Config {
            auth: super::super::AuthConfig {
                jwt: super::super::JwtConfig {
                    secret: Some("short".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "auth.jwt.secret");
        assert_eq!(err.message, "must be at least 32 bytes");
        assert_eq!(
            invalid_field(|c| c.auth.modes = vec![AuthMode::Jwt]),
            "auth.jwt"
        );
        assert_eq!(
            invalid_field(|c| c.auth.modes = vec![AuthMode::Token]),
            "auth.tokens"
        );
        assert_eq!(
            invalid_field(|c| c.auth.modes = vec![AuthMode::ApiKey]),
            "auth.api_keys"
        );
        assert_eq!(
            invalid_field(|c| c.auth.modes = vec![AuthMode::Password]),
            "auth.password"
        );
        assert_eq!(
            invalid_field(|c| c.auth.password = Some("short".into())),
            "auth.password"
        );
        assert_eq!(
            invalid_field(|c| c.auth.none_scopes = vec!["root".into()]),
            "auth.none_scopes[0]"
        );
    }

    #[test]
    fn validate_jwt_algorithms() {
        fn set(c: &mut Config, algs: &[&str]) {
            c.auth.jwt.secret = Some("s".repeat(32));
            c.auth.jwt.algorithms = algs.iter().map(|a| (*a).to_owned()).collect();
        }
        assert_eq!(
            invalid_field(|c| set(c, &["HS256", "NONE"])),
            "auth.jwt.algorithms[1]"
        );
        assert_eq!(
            invalid_field(|c| set(c, &["HS999"])),
            "auth.jwt.algorithms[0]"
        );
        let mut ok = Config::default();
        set(&mut ok, &["HS256", "ES256"]);
        ok.validate().unwrap();
        let missing = |c: &mut Config| c.auth.jwt.public_key = Some("/nonexistent.pem".into());
        assert_eq!(invalid_field(missing), "auth.jwt.public_key");
    }

    #[test]
    fn validate_credential_failures_name_fields() {
        let cred = |s: &str| StaticCredential {
            secret: s.to_owned(),
            sub: "x".into(),
            role: "operator".into(),
            scopes: vec![],
            channels: vec![],
        };
        let short = cred("short");
        assert_eq!(
            invalid_field(|c| c.auth.tokens = vec![short]),
            "auth.tokens[0].secret"
        );
        let mut bad_role = cred(&secret('r'));
        bad_role.role = "admin".into();
        assert_eq!(
            invalid_field(|c| c.auth.api_keys = vec![bad_role]),
            "auth.api_keys[0].role"
        );
        let mut bad_scope = cred(&secret('s'));
        bad_scope.scopes = vec!["operator.read".into(), "god".into()];
        assert_eq!(
            invalid_field(|c| c.auth.tokens = vec![bad_scope]),
            "auth.tokens[0].scopes[1]"
        );
        let mut no_sub = cred(&secret('n'));
        no_sub.sub.clear();
        assert_eq!(
            invalid_field(|c| c.auth.tokens = vec![no_sub]),
            "auth.tokens[0].sub"
        );
        let dup = |c: &mut Config| {
            c.auth.tokens = vec![cred(&secret('d'))];
            c.auth.api_keys = vec![cred(&secret('e')), cred(&secret('d'))];
        };
        assert_eq!(invalid_field(dup), "auth.api_keys[1].secret");
    }

    #[test]
    fn mode_none_on_lan_needs_opt_in() {
        let e = [("SWITCHYARD_BIND", "lan"), ("SWITCHYARD_AUTH_MODE", "none")];
        let err = load_env(&e).unwrap_err();
        assert_eq!(err.field, "auth.modes");
        assert!(err.message.contains("allow_insecure_none"), "{err}");
        let mut e = e.to_vec();
        e.push(("SWITCHYARD_ALLOW_INSECURE_NONE", "true"));
        let c = load_env(&e).unwrap();
        assert_eq!(c.effective_auth_modes(), [AuthMode::None]);
        assert!(!c.is_loopback());
        let on_loopback = load_env(&[("SWITCHYARD_AUTH_MODE", "none")]).unwrap();
        assert!(on_loopback.is_loopback());
    }

    #[test]
    fn effective_auth_modes_are_derived() {
        let mut c = Config::default();
        assert!(c.effective_auth_modes().is_empty());
        c.auth.jwt.secret = Some("s".repeat(32));
        c.auth.password = Some("password1".into());
        c.auth.api_keys = parse_credentials("k", "api-key", &[secret('a')]).unwrap();
        assert_eq!(
            c.effective_auth_modes(),
            [AuthMode::Jwt, AuthMode::ApiKey, AuthMode::Password]
        );
        c.auth.tokens = parse_credentials("t", "token", &[secret('t')]).unwrap();
        assert_eq!(c.effective_auth_modes().len(), 4);
        c.auth.modes = vec![AuthMode::Token];
        assert_eq!(c.effective_auth_modes(), [AuthMode::Token]);
    }

    #[test]
    fn bind_addresses() {
        let mut c = Config::default();
        assert_eq!(c.bind_addr().unwrap(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        c.bind = BindMode::Lan;
        assert_eq!(c.bind_addr().unwrap(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        c.bind = BindMode::Auto;
        let auto = c.bind_addr().unwrap();
        assert!(auto.is_loopback() || is_tailnet(auto));
        let ips: Vec<IpAddr> = ["10.0.0.1", "100.63.255.255", "100.101.2.3", "100.64.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(first_tailnet(ips), Some("100.101.2.3".parse().unwrap()));
        assert!(!is_tailnet("100.128.0.1".parse().unwrap()));
    }
}
