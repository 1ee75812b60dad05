//! Typed configuration.
//!
//! Settings come from three layers, each overriding the previous one:
//! a TOML file (`--config` / `SWITCHYARD_CONFIG`), `SWITCHYARD_*` environment
//! variables, then command-line flags. [`load`] merges the layers and
//! [`Config::validate`] rejects anything inconsistent with an error that names
//! the offending field; `main` turns that into exit code 64.
//!
//! Durations are plain integers with an `_ms` suffix so that every layer
//! (TOML, env, flags) spells them the same way.

mod load;

pub use load::{ConfigError, EnvSource, ProcessEnv, ServeArgs, load};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Serve `/metrics` on this port too (it is always on the main port).
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
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Webhooks accepted on `POST /hooks/{name}`.
    pub hooks: Vec<HookConfig>,
}

/// One webhook: its body is published on channel `hook:<name>`.
#[derive(Clone, Serialize, Deserialize)]
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
            metrics_port: None,
            log: LogConfig::default(),
            tls: None,
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            auth: AuthConfig::default(),
            channels: ChannelConfig::default(),
            cors: CorsConfig::default(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            hooks: Vec::new(),
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

/// Sizes, timeouts and caps. Every one bounds a resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Cluster mode: an instance silent this long is dead and reaped.
    pub node_ttl_ms: u64,
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
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// A sliding window: at most `limit` events per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Authentication modes; several may be enabled together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    Jwt,
    Token,
    ApiKey,
    Password,
    None,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Enabled modes. Empty means "derive from what is configured" (a JWT
    /// key enables `jwt`, tokens enable `token`, …); if nothing is
    /// configured at all and the bind is loopback, a random development
    /// token is generated and written to `dev_token_file`.
    pub modes: Vec<AuthMode>,
    /// Allow mode `none` on a non-loopback bind (logged loudly).
    pub allow_insecure_none: bool,
    /// Scopes given to everyone in mode `none`.
    pub none_scopes: Vec<String>,
    pub jwt: JwtConfig,
    /// Static bearer tokens.
    pub tokens: Vec<StaticCredential>,
    /// API keys (`X-API-Key`, `connect.auth.apiKey`, HTTP server API).
    pub api_keys: Vec<StaticCredential>,
    /// One shared secret that authenticates as an operator.
    pub password: Option<String>,
    /// Scopes of a password login.
    pub password_scopes: Vec<String>,
    /// Where the generated development token is written (loopback only).
    pub dev_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HMAC secret (HS256).
    pub secret: Option<String>,
    /// PEM file with an RSA, EC (P-256) or Ed25519 public key.
    pub public_key: Option<PathBuf>,
    /// PEM file with the matching private key; only `switchyard token` uses it.
    pub private_key: Option<PathBuf>,
    /// Accepted algorithms; empty means every algorithm the key supports.
    pub algorithms: Vec<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` / `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: None,
            public_key: None,
            private_key: None,
            algorithms: Vec::new(),
            issuer: None,
            audience: None,
            leeway_secs: 5,
        }
    }
}

/// A static token or API key and the identity it stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticCredential {
    /// The secret itself.
    pub secret: String,
    /// Identity (`sub`).
    pub sub: String,
    /// `operator` or `node`.
    #[serde(default = "default_role")]
    pub role: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra channels this identity may use (like the JWT `channels` claim).
    #[serde(default)]
    pub channels: Vec<String>,
}

fn default_role() -> String {
    "operator".into()
}

/// Who may do what on channels, by name prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// First matching rule wins; channels no rule matches use `default`.
    pub rules: Vec<ChannelRule>,
    pub default: ChannelAccess,
    /// Channels with presence tracking (join/leave events) by default.
    pub presence: bool,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            rules: vec![
                ChannelRule::new("public:", Access::Authenticated, Access::Write, true),
                ChannelRule::new("user:", Access::Owner, Access::Admin, false),
                ChannelRule::new("conn:", Access::Owner, Access::Admin, false),
                ChannelRule::new("private:", Access::Claim, Access::Claim, true),
                ChannelRule::new("global", Access::Authenticated, Access::Admin, false),
                ChannelRule::new("approval", Access::Approvals, Access::Admin, false),
            ],
            default: ChannelAccess {
                subscribe: Access::Authenticated,
                publish: Access::Write,
                presence: true,
                history: 0,
            },
            presence: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRule {
    /// Channel name prefix (`public:`), or an exact name (`global`).
    pub prefix: String,
    #[serde(flatten)]
    pub access: ChannelAccess,
}

impl ChannelRule {
    pub fn new(prefix: &str, subscribe: Access, publish: Access, presence: bool) -> Self {
        Self {
            prefix: prefix.into(),
            access: ChannelAccess {
                subscribe,
                publish,
                presence,
                history: 0,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelAccess {
    pub subscribe: Access,
    pub publish: Access,
    #[serde(default = "yes")]
    pub presence: bool,
    /// Publications kept for `history` and `subscribe` with `recover`
    /// (0: none, and publications carry no offset).
    #[serde(default)]
    pub history: usize,
}

fn yes() -> bool {
    true
}

/// A right on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Any authenticated connection.
    Authenticated,
    /// `operator.read` (or admin).
    Read,
    /// `operator.write` (or admin).
    Write,
    /// `operator.approvals` (or admin).
    Approvals,
    /// `operator.admin` only.
    Admin,
    /// The channel's suffix is the caller's own `sub` (`user:`) or
    /// connection id (`conn:`); admins may use any.
    Owner,
    /// The caller's `channels` claim lists the channel (or a `*` pattern
    /// matching it); admins may use any.
    Claim,
    /// Nobody.
    Deny,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins for HTTP (`*` allows any); empty disables CORS headers.
    pub allowed_origins: Vec<String>,
}
