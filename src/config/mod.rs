//! Typed configuration: the settings of one instance and how they are read.
//!
//! # Flow
//!
//! [`load`] merges three layers, each overriding the previous one, then
//! validates. Each step has its own module:
//!
//! 1. `file.rs`: the TOML file named by `--config` or `SWITCHYARD_CONFIG`
//!    is parsed into a [`toml::Table`] (no file: an empty table, so the
//!    built-in defaults).
//! 2. `env.rs`: `SWITCHYARD_*` variables are written into that same table
//!    *before* it is deserialized, so the file and the environment go
//!    through one serde pass with one set of defaults and one
//!    `deny_unknown_fields` check. Named shortcuts (`SWITCHYARD_PORT`,
//!    `SWITCHYARD_JWT_SECRET`, …) map to fixed keys; any other variable with
//!    a `__` in its name addresses a dotted path
//!    (`SWITCHYARD_LIMITS__MAX_PAYLOAD` → `limits.max_payload`). `file.rs`
//!    then deserializes the table and turns serde's errors into ones naming
//!    the key path.
//! 3. `flags.rs`: [`ServeArgs`] given on the command line are applied to
//!    the deserialized struct. A given flag replaces the value; repeatable
//!    flags replace the whole list.
//! 4. `validate.rs`: [`Config::validate`] rejects anything inconsistent.
//!
//! Every error is a [`ConfigError`] naming the dotted field it is about;
//! `main` turns it into exit code 64. Beside the layers, `auth.rs` and
//! `channels.rs` hold those sections' types (and the credential entry
//! format that env and flags share), and `bind.rs` resolves the listen
//! address.
//!
//! Durations are plain integers with an `_ms` suffix so that every layer
//! (TOML, env, flags) spells them the same way.
//!
//! # Adding a setting
//!
//! 1. Add the field, with a `///` line, to its struct (here, or in
//!    `auth.rs` / `channels.rs`) and its default to that struct's
//!    `Default`. Nothing else is needed for the file (`[limits] x = 1`) or
//!    the environment (`SWITCHYARD_LIMITS__X=1`, the value read as TOML when
//!    it parses as TOML, else as a string).
//! 2. If the value has bounds, check them in `validate.rs`: a size or
//!    timing under `[limits]` is one row of `LIMIT_RANGES`.
//! 3. Only for a short variable name (`SWITCHYARD_PORT` rather than a `__`
//!    path): one row of `SHORTCUTS` in `env.rs`, whose `Kind` picks the
//!    parser (string, lower-cased, port, bool, comma list, CIDRs, auth
//!    modes, credentials).
//! 4. Only for a flag: a field of [`ServeArgs`] and its line in the
//!    `apply_*_flags` function of its section, both in `flags.rs`. Its help
//!    text states the default and the variable (`--help` is the reference
//!    users read); a test checks that every variable it names is read.
//! 5. Name it in `runtime.rs`: in `LIVE` if every reader takes it from
//!    `App::live()` when it needs it (then it can change at run time),
//!    else in `RESTART`. A test fails while a setting is in neither.

mod agents;
mod auth;
mod bind;
mod channels;
mod env;
mod file;
mod flags;
pub mod runtime;
mod validate;

#[cfg(test)]
mod test_support;

pub use agents::AgentsConfig;
pub use auth::{AuthConfig, AuthMode, JwtConfig, StaticCredential};
pub use channels::{Access, ChannelAccess, ChannelConfig, ChannelRule};
pub use env::{EnvSource, ProcessEnv};
pub use flags::ServeArgs;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

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
pub fn load(args: &ServeArgs, source: &dyn EnvSource) -> Result<Config, ConfigError> {
    let vars = env::switchyard_vars(source);
    let mut table = match file::config_path(args, &vars) {
        Some(path) => file::read(&path)?,
        None => toml::Table::new(),
    };
    env::apply(&mut table, &vars)?;
    let mut config = file::deserialize(table)?;
    args.apply(&mut config)?;
    config.validate()?;
    Ok(config)
}

/// The whole configuration of one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `loopback`, `lan`, `tailnet`, `auto` or a literal IP address.
    pub bind: BindMode,
    /// TCP port for WebSocket and HTTP.
    pub port: u16,
    /// Stable name of this instance; random when unset.
    pub instance_id: Option<String>,
    /// Redis URL; unset means standalone mode with the in-process backend.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel.
    pub redis_prefix: String,
    /// TLS to Redis (`rediss*` URLs only): a private CA, a client certificate.
    pub redis_tls: RedisTlsConfig,
    /// Serve `/metrics` on this port instead of the main one.
    pub metrics_port: Option<u16>,
    pub log: LogConfig,
    pub tls: Option<TlsConfig>,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub auth: AuthConfig,
    pub channels: ChannelConfig,
    pub cors: CorsConfig,
    /// WebSocket `Origin` allow-list; entries may contain `*` wildcards.
    /// Empty: only requests without an `Origin` header or whose origin's host
    /// equals the `Host` header are accepted.
    pub allowed_origins: Vec<String>,
    /// Names this gateway answers to (`Host` header, port ignored; `*`
    /// wildcards per label). Empty: on a loopback bind, the loopback names
    /// (`localhost`, `127.0.0.1`, `::1`), which keeps a DNS-rebinding page
    /// out; otherwise any.
    pub allowed_hosts: Vec<String>,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Webhooks accepted on `POST /hooks/{name}`.
    pub hooks: Vec<HookConfig>,
    /// Agent definitions: whether an agent id needs one.
    pub agents: AgentsConfig,
    /// The control UI at `/` and the optional static directories.
    pub ui: UiConfig,
}

/// The control UI (`/`, `/assets/…`) and static directories served as
/// they are (`/canvas/…`, `/a2ui/…`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Serve the control UI. Off: `GET /` answers where to connect.
    pub enabled: bool,
    /// Serve the UI from this directory instead of the copy compiled into
    /// the binary (a custom or development build of `ui/dist`).
    pub dir: Option<std::path::PathBuf>,
    /// Files served under `/canvas/`.
    pub canvas_dir: Option<std::path::PathBuf>,
    /// Files served under `/a2ui/`.
    pub a2ui_dir: Option<std::path::PathBuf>,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            canvas_dir: None,
            a2ui_dir: None,
        }
    }
}

/// One webhook: its body is published on channel `hook:<name>`.
#[derive(Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    pub name: String,
    /// HMAC-SHA256 key: requests must carry `X-Signature-256:
    /// sha256=<hex of HMAC(body)>` (GitHub's `X-Hub-Signature-256` works
    /// too) and then need no API key. Without a secret the hook takes a
    /// bearer token or API key with `operator.write`.
    #[serde(default)]
    pub secret: Option<String>,
}

impl std::fmt::Debug for HookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookConfig")
            .field("name", &self.name)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: BindMode::Loopback,
            port: 18789,
            instance_id: None,
            redis_url: None,
            redis_prefix: "sy".into(),
            redis_tls: RedisTlsConfig::default(),
            metrics_port: None,
            log: LogConfig::default(),
            tls: None,
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            auth: AuthConfig::default(),
            channels: ChannelConfig::default(),
            cors: CorsConfig::default(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            hooks: Vec::new(),
            agents: AgentsConfig::default(),
            ui: UiConfig::default(),
        }
    }
}

/// Where to listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindMode {
    /// 127.0.0.1 only.
    Loopback,
    /// All interfaces (0.0.0.0).
    Lan,
    /// The first address in 100.64.0.0/10 (Tailscale), else an error.
    Tailnet,
    /// Tailnet address when there is one, else loopback.
    Auto,
    /// A literal address.
    #[serde(untagged)]
    Addr(IpAddr),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` env-filter directive, e.g. `info` or `switchyard=debug`.
    pub level: String,
    pub format: LogFormat,
    /// Records kept in memory for `logs.tail`.
    pub ring_size: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
            ring_size: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// TLS settings of the connections to Redis. TLS itself is chosen by the
/// URL scheme (`rediss://`, `rediss-cluster://`, `rediss-sentinel://`);
/// these only widen whom the client trusts and let it prove who it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisTlsConfig {
    /// PEM bundle of CA certificates trusted besides the system roots.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS); needs `key`.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

impl RedisTlsConfig {
    /// Whether any of the settings is given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// Sizes, timeouts and caps. Every one bounds a resource.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted WebSocket message in bytes; larger closes with 1009.
    pub max_payload: usize,
    /// Largest JSON-RPC batch.
    pub max_batch: usize,
    /// Outbound frames queued per connection before it counts as a slow consumer.
    pub outbound_queue: usize,
    pub heartbeat_ms: u64,
    pub client_timeout_ms: u64,
    pub handshake_timeout_ms: u64,
    pub max_sessions_per_client: usize,
    pub max_session_members: usize,
    /// Events kept per session for `session.history` and resume replay.
    pub session_history: usize,
    pub max_subscriptions: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub presence_tick_ms: u64,
    pub drain_deadline_ms: u64,
    pub resume_window_ms: u64,
    /// Default timeout of server → client requests.
    pub request_timeout_ms: u64,
    /// Deepest JSON nesting accepted in a frame.
    pub max_json_depth: usize,
    /// Cluster mode: within this long of an instance falling silent, calls
    /// on it end and it is reaped.
    pub node_ttl_ms: u64,
    /// A new TCP connection must send its first request's headers within
    /// this long (slow-header clients are cut off).
    pub header_timeout_ms: u64,
    /// TCP connections accepted but not yet answered (handshakes in
    /// progress), all peers together; more are closed at accept.
    pub max_pending_handshakes: usize,
    /// How long the backend may be unusable before `/ready` turns 503
    /// (0: at once). See `App::is_ready`.
    pub unready_after_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload: 1 << 20,
            max_batch: 100,
            outbound_queue: 1024,
            heartbeat_ms: 15_000,
            client_timeout_ms: 45_000,
            handshake_timeout_ms: 10_000,
            max_sessions_per_client: 5,
            max_session_members: 100,
            session_history: 1000,
            max_subscriptions: 128,
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            presence_tick_ms: 5_000,
            drain_deadline_ms: 10_000,
            resume_window_ms: 60_000,
            request_timeout_ms: 30_000,
            max_json_depth: 64,
            node_ttl_ms: 10_000,
            header_timeout_ms: 10_000,
            max_pending_handshakes: 4_096,
            unready_after_ms: 0,
        }
    }
}

impl Limits {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
    pub fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.client_timeout_ms)
    }
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn presence_tick(&self) -> Duration {
        Duration::from_millis(self.presence_tick_ms)
    }
    pub fn drain_deadline(&self) -> Duration {
        Duration::from_millis(self.drain_deadline_ms)
    }
    pub fn resume_window(&self) -> Duration {
        Duration::from_millis(self.resume_window_ms)
    }
    pub fn node_ttl(&self) -> Duration {
        Duration::from_millis(self.node_ttl_ms)
    }
    /// How long an instance's record lives without a heartbeat: `node_ttl`
    /// less the time a survivor takes to notice it gone (two
    /// [`Limits::liveness_read`] periods), so calls and runs on a dead
    /// instance end within `node_ttl` of its death.
    pub fn alive_ttl(&self) -> Duration {
        self.node_ttl() - self.notice_margin()
    }
    /// How often an instance with calls waiting on other instances reads
    /// which of them live.
    pub fn liveness_read(&self) -> Duration {
        self.notice_margin() / 2
    }
    fn notice_margin(&self) -> Duration {
        (self.node_ttl() / 6).min(Duration::from_millis(500))
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// A sliding window: at most `limit` events per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub limit: u32,
    pub window_ms: u64,
}

impl Window {
    pub const fn new(limit: u32, window_ms: u64) -> Self {
        Self { limit, window_ms }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// WebSocket upgrade attempts per client IP (exact, shared).
    pub connect_per_ip: Window,
    /// Failed authentications per client IP; over it the IP is locked out
    /// for the rest of the window (exact, shared).
    pub auth_failures_per_ip: Window,
    /// Frames per connection (local).
    pub messages_per_conn: Window,
    /// Frames per identity across all its connections (leased budgets).
    pub messages_per_identity: Window,
    /// HTTP API requests per API key / client IP (exact, shared).
    pub http_per_key: Window,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            connect_per_ip: Window::new(120, 10_000),
            auth_failures_per_ip: Window::new(10, 300_000),
            messages_per_conn: Window::new(500, 1_000),
            messages_per_identity: Window::new(2_000, 1_000),
            http_per_key: Window::new(600, 60_000),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins for HTTP (`*` allows any); empty disables CORS headers.
    pub allowed_origins: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

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
}
