//! Authentication settings: the `[auth]` section, the credential entry
//! format shared by `SWITCHYARD_TOKENS` / `SWITCHYARD_API_KEYS` and
//! `--token` / `--api-key`, and the modes a config implies.

use super::{Config, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Authentication modes; several may be enabled together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    Jwt,
    Token,
    ApiKey,
    Password,
    None,
    /// Device tokens issued by pairing (`device.pair.*`).
    Device,
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
    /// Pairing and device tokens (mode `device`).
    pub devices: DeviceSettings,
}

/// `[auth.devices]`: pairing requests and device tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceSettings {
    /// How long a pairing request waits for an operator (default 5 min).
    pub pairing_ttl_ms: u64,
    /// Pairing requests pending at once, cluster-wide (default 100).
    pub max_pending: usize,
    /// How long a rotated-out token keeps working (default 5 min).
    pub rotation_grace_ms: u64,
    /// `device.pair.request` calls per client IP (exact, shared).
    pub requests_per_ip: super::Window,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        Self {
            pairing_ttl_ms: 300_000,
            max_pending: 100,
            rotation_grace_ms: 300_000,
            requests_per_ip: super::Window::new(10, 60_000),
        }
    }
}

impl DeviceSettings {
    /// Values out of range, naming the field.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let checks = [
            (
                (1_000..=86_400_000).contains(&self.pairing_ttl_ms),
                "auth.devices.pairing_ttl_ms",
                "between 1000 and 86400000",
            ),
            (
                (1..=10_000).contains(&self.max_pending),
                "auth.devices.max_pending",
                "between 1 and 10000",
            ),
            (
                self.rotation_grace_ms <= 7 * 86_400_000,
                "auth.devices.rotation_grace_ms",
                "at most 604800000 (7 days)",
            ),
            (
                self.requests_per_ip.limit > 0 && self.requests_per_ip.window_ms > 0,
                "auth.devices.requests_per_ip",
                "limit and window_ms above 0",
            ),
        ];
        for (ok, field, message) in checks {
            if !ok {
                return Err(ConfigError::new(field, message));
            }
        }
        Ok(())
    }
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

/// Spells an auth mode name the way serde expects it: `api-key` and
/// `API_KEY` both mean `api_key`.
pub(super) fn normalize_mode(mode: &str) -> String {
    mode.trim().to_ascii_lowercase().replace('-', "_")
}

/// Parses credential entries (`<secret>`, `<sub>:<secret>` or
/// `<sub>:<secret>:<scope> <scope>…`) shared by env and flags. A bare
/// secret gets `sub` `<stem>-<n>` (1-based); missing scopes mean
/// `operator.admin`, as a key given on the command line is meant to work.
pub(super) fn parse_credentials(
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

impl Config {
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
        // Operators who can sign in can pair devices: derived modes
        // include `device`. With `auth.modes` set it is on only if listed.
        if !modes.is_empty() {
            modes.push(AuthMode::Device);
        }
        modes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

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
    fn effective_auth_modes_are_derived() {
        let mut c = Config::default();
        assert!(c.effective_auth_modes().is_empty());
        c.auth.jwt.secret = Some("s".repeat(32));
        c.auth.password = Some("password1".into());
        c.auth.api_keys = parse_credentials("k", "api-key", &[secret('a')]).unwrap();
        assert_eq!(
            c.effective_auth_modes(),
            [
                AuthMode::Jwt,
                AuthMode::ApiKey,
                AuthMode::Password,
                AuthMode::Device
            ]
        );
        c.auth.tokens = parse_credentials("t", "token", &[secret('t')]).unwrap();
        assert_eq!(c.effective_auth_modes().len(), 5);
        c.auth.modes = vec![AuthMode::Token];
        assert_eq!(c.effective_auth_modes(), [AuthMode::Token]);
    }
}
