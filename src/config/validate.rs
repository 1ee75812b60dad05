//! The last step of loading: [`Config::validate`] rejects values out of
//! range and settings that contradict each other, with an error naming the
//! dotted field (`limits.max_payload`, `auth.tokens[1].secret`).
//!
//! Checks run in a fixed order and the first failure is reported, so a
//! config with several problems always names the same one.

use super::{
    AuthConfig, AuthMode, Config, ConfigError, Limits, RateLimits, RedisTlsConfig,
    StaticCredential, TlsConfig,
};
use std::collections::HashMap;
use std::path::Path;

impl Config {
    /// Rejects inconsistent settings; the error names the dotted field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bind_addr()?;
        validate_limits(&self.limits)?;
        validate_rate_limits(&self.rate_limits)?;
        validate_server(self)?;
        validate_redis_tls(self)?;
        validate_tls(self.tls.as_ref())?;
        validate_jwt(self)?;
        validate_auth_modes(self)?;
        validate_credentials(&self.auth)?;
        self.auth.devices.validate()?;
        validate_none_mode(self)?;
        validate_ui(self)?;
        validate_lists(self)
    }
}

/// Directories the UI serves from must exist when the gateway starts.
fn validate_ui(c: &Config) -> Result<(), ConfigError> {
    let dirs = [
        ("ui.dir", &c.ui.dir),
        ("ui.canvas_dir", &c.ui.canvas_dir),
        ("ui.a2ui_dir", &c.ui.a2ui_dir),
    ];
    for (field, dir) in dirs {
        if let Some(dir) = dir {
            ensure(
                dir.is_dir(),
                field,
                format!("{} is not a directory", dir.display()),
            )?;
        }
    }
    if let Some(dir) = &c.ui.dir {
        ensure(
            dir.join("index.html").is_file(),
            "ui.dir",
            format!("{} holds no index.html", dir.display()),
        )?;
    }
    Ok(())
}

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

/// Where "no upper bound" is meant in [`LIMIT_RANGES`].
const NO_MAX: u64 = u64::MAX;

/// One bounded `[limits]` value: field, how to read it, lowest, highest.
type LimitRange = (&'static str, fn(&Limits) -> u64, u64, u64);

/// Bounds of the `[limits]` values, checked in this order. Sizes are
/// `usize`, and `usize` → `u64` is lossless on every supported target.
#[rustfmt::skip]
const LIMIT_RANGES: &[LimitRange] = &[
    ("limits.max_payload", |l| l.max_payload as u64, 1024, MAX_PAYLOAD_CAP),
    ("limits.max_batch", |l| l.max_batch as u64, 1, 10_000),
    ("limits.outbound_queue", |l| l.outbound_queue as u64, 1, 1_000_000),
    ("limits.max_json_depth", |l| l.max_json_depth as u64, 2, 1024),
    ("limits.max_sessions_per_client", |l| l.max_sessions_per_client as u64, 1, NO_MAX),
    ("limits.max_subscriptions", |l| l.max_subscriptions as u64, 1, NO_MAX),
    ("limits.session_history", |l| l.session_history as u64, 1, 100_000),
    ("limits.max_connections", |l| l.max_connections as u64, 1, NO_MAX),
    ("limits.max_connections_per_ip", |l| l.max_connections_per_ip as u64, 1, NO_MAX),
    ("limits.heartbeat_ms", |l| l.heartbeat_ms, 100, NO_MAX),
    ("limits.handshake_timeout_ms", |l| l.handshake_timeout_ms, 100, NO_MAX),
    ("limits.presence_tick_ms", |l| l.presence_tick_ms, 100, NO_MAX),
    ("limits.node_ttl_ms", |l| l.node_ttl_ms, 300, 600_000),
    ("limits.drain_deadline_ms", |l| l.drain_deadline_ms, 0, 600_000),
    ("limits.header_timeout_ms", |l| l.header_timeout_ms, 100, 600_000),
    ("limits.unready_after_ms", |l| l.unready_after_ms, 0, 600_000),
    ("limits.max_pending_handshakes", |l| l.max_pending_handshakes as u64, 1, NO_MAX),
];

fn validate_limits(l: &Limits) -> Result<(), ConfigError> {
    for &(field, value, lo, hi) in LIMIT_RANGES {
        in_range(value(l), lo, hi, field)?;
    }
    ensure(
        l.client_timeout_ms > l.heartbeat_ms,
        "limits.client_timeout_ms",
        format!(
            "must be greater than limits.heartbeat_ms ({}), got {}",
            l.heartbeat_ms, l.client_timeout_ms
        ),
    )
}

/// `Err` naming `field` unless `lo <= value <= hi`.
fn in_range(value: u64, lo: u64, hi: u64, field: &str) -> Result<(), ConfigError> {
    let message = if hi == NO_MAX {
        format!("must be at least {lo}, got {value}")
    } else {
        format!("must be in {lo}..={hi}, got {value}")
    };
    ensure((lo..=hi).contains(&value), field, message)
}

fn validate_rate_limits(r: &RateLimits) -> Result<(), ConfigError> {
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

/// `redis_tls` configures the TLS of a `rediss*` URL, so it is refused
/// beside any other URL (it would silently not apply) and without one. A
/// client certificate needs its key, and every file named must be
/// readable. Messages name the URL's scheme only: the URL may hold a
/// password.
fn validate_redis_tls(c: &Config) -> Result<(), ConfigError> {
    let tls: &RedisTlsConfig = &c.redis_tls;
    if !tls.is_set() {
        return Ok(());
    }
    const TLS_SCHEMES: &str = "rediss://, rediss-cluster:// or rediss-sentinel://";
    let Some(url) = &c.redis_url else {
        return Err(ConfigError::new(
            "redis_tls",
            format!("applies to a Redis URL, but redis_url is not set; set a {TLS_SCHEMES} URL"),
        ));
    };
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    ensure(
        scheme.starts_with("rediss"),
        "redis_tls",
        format!(
            "applies to {TLS_SCHEMES} URLs only, but redis_url is {scheme}:// (no TLS); \
             use the rediss form of the URL or remove redis_tls"
        ),
    )?;
    match (&tls.cert, &tls.key) {
        (Some(_), None) => {
            return Err(ConfigError::new(
                "redis_tls.key",
                "redis_tls.cert needs redis_tls.key",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "redis_tls.cert",
                "redis_tls.key needs redis_tls.cert",
            ));
        }
        _ => {}
    }
    let files = [
        (&tls.ca, "redis_tls.ca"),
        (&tls.cert, "redis_tls.cert"),
        (&tls.key, "redis_tls.key"),
    ];
    for (path, field) in files {
        if let Some(path) = path {
            ensure_file(path, field)?;
        }
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

fn validate_credentials(auth: &AuthConfig) -> Result<(), ConfigError> {
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
        ("allowed_hosts", &c.allowed_hosts),
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
    use crate::config::test_support::*;

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
    fn ui_directories_must_exist() {
        assert_eq!(
            invalid_field(|c| c.ui.canvas_dir = Some("/nonexistent/canvas".into())),
            "ui.canvas_dir"
        );
        assert_eq!(
            invalid_field(|c| c.ui.a2ui_dir = Some("/nonexistent/a2ui".into())),
            "ui.a2ui_dir"
        );
        // A directory, but no index.html in it.
        assert_eq!(
            invalid_field(|c| c.ui.dir = Some(std::env::temp_dir())),
            "ui.dir"
        );
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
    fn redis_tls_needs_a_tls_url() {
        let ca = temp_file("redis-ca.pem", "ca");
        let with = |url: Option<&str>| {
            Config {
                redis_url: url.map(str::to_owned),
                redis_tls: RedisTlsConfig {
                    ca: Some(ca.clone()),
                    ..RedisTlsConfig::default()
                },
                ..Config::default()
            }
            .validate()
        };
        let err = with(None).unwrap_err();
        assert_eq!(err.field, "redis_tls");
        assert!(err.message.contains("redis_url is not set"), "{err}");
        // A plain URL: refused, naming its scheme and never its password.
        for url in [
            "redis://sy:pw-in-the-url@127.0.0.1:6380",
            "redis-cluster://sy:pw-in-the-url@127.0.0.1:7000",
            "redis-sentinel://sy:pw-in-the-url@127.0.0.1:26379/0?sentinelServiceName=m",
        ] {
            let err = with(Some(url)).unwrap_err();
            assert_eq!(err.field, "redis_tls", "{url}");
            let scheme = url.split("//").next().unwrap();
            assert!(err.message.contains(scheme), "{err}");
            assert!(err.message.contains("rediss://"), "{err}");
            assert!(!err.to_string().contains("pw-in-the-url"), "{err}");
        }
        for url in [
            "rediss://sy:pw@127.0.0.1:6380",
            "rediss-cluster://127.0.0.1:7000?node=127.0.0.1:7001",
            "rediss-sentinel://127.0.0.1:26379/0?sentinelServiceName=m",
        ] {
            with(Some(url)).unwrap();
        }
    }

    #[test]
    fn redis_tls_client_certificate_comes_with_its_key() {
        let cert = temp_file("redis-cert.pem", "cert");
        let key = temp_file("redis-key.pem", "key");
        let tls_url = |c: &mut Config| c.redis_url = Some("rediss://127.0.0.1:6380".into());
        let only_cert = |c: &mut Config| {
            tls_url(c);
            c.redis_tls.cert = Some(cert.clone());
        };
        assert_eq!(invalid_field(only_cert), "redis_tls.key");
        let only_key = |c: &mut Config| {
            tls_url(c);
            c.redis_tls.key = Some(key.clone());
        };
        assert_eq!(invalid_field(only_key), "redis_tls.cert");
        let missing_ca = |c: &mut Config| {
            tls_url(c);
            c.redis_tls.ca = Some("/nonexistent/redis-ca.pem".into());
        };
        assert_eq!(invalid_field(missing_ca), "redis_tls.ca");
        let missing_key = |c: &mut Config| {
            tls_url(c);
            c.redis_tls.cert = Some(cert.clone());
            c.redis_tls.key = Some("/nonexistent/redis-key.pem".into());
        };
        assert_eq!(invalid_field(missing_key), "redis_tls.key");
        let dir = |c: &mut Config| {
            tls_url(c);
            c.redis_tls.ca = Some(std::env::temp_dir());
        };
        assert_eq!(invalid_field(dir), "redis_tls.ca");
        let mut ok = Config::default();
        tls_url(&mut ok);
        ok.redis_tls.cert = Some(cert.clone());
        ok.redis_tls.key = Some(key.clone());
        ok.validate().unwrap();
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
}
