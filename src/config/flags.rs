//! The flag layer: the flags of `switchyard serve` and how they override
//! the config deserialized from the file and the environment.
//!
//! Flags are applied to the typed struct rather than to the TOML table:
//! clap has already parsed and checked their values, and the TLS pair
//! needs a rule of its own (one flag may complete a `[tls]` section, but
//! alone it is an error). A flag is declared and applied in this file only:
//! a field of [`ServeArgs`] and one line in the `apply_*_flags` function of
//! its section. Its help states the default and the environment variable;
//! a test in `env.rs` checks that the variable named is one that is read.

use super::auth::{normalize_mode, parse_credentials};
use super::env::normalize_cidr;
use super::{AuthMode, BindMode, Config, ConfigError, LogFormat, TlsConfig};
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::PathBuf;

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

    /// PEM bundle of CA certificates trusted for TLS to Redis, besides the
    /// system roots (rediss URLs only). Default: none.
    /// Env: SWITCHYARD_REDIS_TLS_CA.
    #[arg(long, value_name = "PATH")]
    pub redis_tls_ca: Option<PathBuf>,

    /// PEM client certificate chain presented to Redis (mutual TLS; rediss
    /// URLs only), with --redis-tls-key. Default: none.
    /// Env: SWITCHYARD_REDIS_TLS_CERT.
    #[arg(long, value_name = "PATH")]
    pub redis_tls_cert: Option<PathBuf>,

    /// PEM private key of --redis-tls-cert. Default: none.
    /// Env: SWITCHYARD_REDIS_TLS_KEY.
    #[arg(long, value_name = "PATH")]
    pub redis_tls_key: Option<PathBuf>,

    /// Serve /metrics on this port instead of the main one (an internal
    /// port: the main port is the public one).
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
    /// password, device, none. Default: derived from the credentials
    /// configured (and device, when any of them is).
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

    /// A name this gateway answers to (Host header), repeatable; `*`
    /// wildcards per label. Replaces the configured list. Default: the
    /// loopback names on a loopback bind, else any.
    /// Env: SWITCHYARD_ALLOWED_HOSTS (comma separated).
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_host: Option<Vec<String>>,

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
    /// Default: $TMPDIR/switchyard-<port>.token. Env: SWITCHYARD_DEV_TOKEN_FILE.
    #[arg(long, value_name = "PATH")]
    pub dev_token_file: Option<PathBuf>,
}

impl ServeArgs {
    /// Overrides `config` with every flag given.
    pub(super) fn apply(&self, config: &mut Config) -> Result<(), ConfigError> {
        apply_server_flags(config, self);
        apply_tls_flags(config, self)?;
        apply_auth_flags(config, self)?;
        apply_limit_flags(config, self);
        Ok(())
    }
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
    set_some(&mut c.redis_tls.ca, &a.redis_tls_ca);
    set_some(&mut c.redis_tls.cert, &a.redis_tls_cert);
    set_some(&mut c.redis_tls.key, &a.redis_tls_key);
    set_some(&mut c.metrics_port, &a.metrics_port);
    set(&mut c.log.level, &a.log);
    set(&mut c.log.format, &a.log_format);
    set(&mut c.allowed_origins, &a.allowed_origin);
    set(&mut c.allowed_hosts, &a.allowed_host);
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

// Value parsers for clap: a bad flag value is a usage error, reported
// before any configuration is read.

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
        "device" => Ok(AuthMode::Device),
        _ => Err(format!(
            "expected jwt, token, api_key, password, device or none, got {s:?}"
        )),
    }
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    normalize_cidr(s.trim())
        .parse::<IpNet>()
        .map_err(|_| format!("expected a CIDR such as 10.0.0.0/8 or an IP address, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use crate::config::test_support::*;

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
    fn redis_tls_flags_override_env() {
        let ca = temp_file("flag-ca.pem", "ca");
        let env_ca = temp_file("env-ca.pem", "ca");
        let cert = temp_file("flag-cert.pem", "cert");
        let key = temp_file("flag-key.pem", "key");
        let args = ServeArgs {
            redis_tls_ca: Some(ca.clone()),
            redis_tls_cert: Some(cert.clone()),
            redis_tls_key: Some(key.clone()),
            ..ServeArgs::default()
        };
        let e = env(&[
            ("SWITCHYARD_REDIS_URL", "rediss://127.0.0.1:6380"),
            ("SWITCHYARD_REDIS_TLS_CA", env_ca.to_str().unwrap()),
        ]);
        let c = load(&args, &e).unwrap();
        assert_eq!(c.redis_tls.ca.as_deref(), Some(ca.as_path()));
        assert_eq!(c.redis_tls.cert.as_deref(), Some(cert.as_path()));
        assert_eq!(c.redis_tls.key.as_deref(), Some(key.as_path()));
        let half = ServeArgs {
            redis_tls_cert: Some(cert),
            ..ServeArgs::default()
        };
        assert_eq!(load(&half, &e).unwrap_err().field, "redis_tls.key");
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
}
