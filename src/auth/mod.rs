//! Authentication and authorisation.
//!
//! # Flow
//!
//! 1. **Extraction.** At the WebSocket upgrade, [`credentials::extract`]
//!    pulls at most one [`Credential`] out of the request (`Authorization:
//!    Bearer`, `X-API-Key`, a `bearer.<token>` subprotocol or `?token=`).
//!    A client that sent nothing may authenticate in-band instead: the
//!    `auth` object of its `connect` (or `auth`) request goes through
//!    [`credentials::from_params`].
//! 2. **Authentication.** The [`Authenticator`], built once from
//!    [`AuthConfig`] and the effective list of [`AuthMode`]s, turns the
//!    credential into an [`Identity`]: JWTs are verified by [`jwt`], static
//!    tokens, API keys and the shared password are compared in constant
//!    time. Without any credential, [`Authenticator::none_identity`] is the
//!    anonymous identity when mode `none` is enabled.
//! 3. **Authorisation.** Every method declares a [`Requirement`]; the
//!    dispatcher checks it with [`Identity::satisfies`]. Channel operations
//!    are checked against the configured [`Access`] with
//!    [`Identity::check_access`].
//!
//! Alongside, [`guard`] holds the request guards applied before any of this:
//! the `Origin` allow-list and the client-IP resolution behind trusted
//! proxies.
//!
//! Errors ([`AuthError`]) are safe to send to clients: they never contain a
//! secret or the presented token.

pub mod credentials;
pub mod guard;
pub mod jwt;
mod scopes;
#[cfg(test)]
mod testkeys;

pub use credentials::{Extracted, extract, from_params};
pub use guard::{ClientIpResolver, HostPolicy, OriginPolicy, wildcard_match};
pub use jwt::{JwtVerifier, MintClaims, mint};
pub use scopes::{Role, Scope, ScopeSet};

use crate::config::{Access, AuthConfig, AuthMode, StaticCredential};
use crate::protocol::names;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a method requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Callable before authentication (e.g. `connect`).
    Any,
    /// Any authenticated identity.
    Authenticated,
    /// An operator holding this scope (or admin).
    Scope(Scope),
    /// A node (admin operators pass too).
    Node,
}

/// How an identity authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Jwt,
    Token,
    ApiKey,
    Password,
    None,
    /// A device token issued by pairing.
    Device,
}

/// Who is on the other end of a connection or HTTP request.
#[derive(Clone, Debug, Serialize)]
pub struct Identity {
    pub sub: String,
    pub role: Role,
    pub scopes: ScopeSet,
    /// Channel patterns from the JWT `channels` claim or the static
    /// credential; may contain `*` wildcards.
    pub channels: Vec<String>,
    pub method: AuthMethod,
    /// Unix seconds (JWT `exp`).
    pub expires_at: Option<u64>,
}

impl Identity {
    /// Whether this identity may call a method requiring `req`.
    pub fn satisfies(&self, req: Requirement) -> bool {
        match req {
            Requirement::Any | Requirement::Authenticated => true,
            Requirement::Scope(scope) => self.has_scope(scope),
            Requirement::Node => self.role == Role::Node || self.is_admin(),
        }
    }

    /// An operator with `operator.admin`.
    pub fn is_admin(&self) -> bool {
        self.has_scope(Scope::Admin)
    }

    /// Whether the `channels` claim lists `channel` or a pattern matching it.
    pub fn may_use_channel_claim(&self, channel: &str) -> bool {
        self.channels
            .iter()
            .any(|pattern| wildcard_match(pattern, channel))
    }

    /// Whether this identity holds the channel right `access` on `channel`.
    /// `conn_id` is the caller's connection id (for `conn:<id>` channels).
    pub fn check_access(&self, access: Access, channel: &str, conn_id: &str) -> bool {
        match access {
            Access::Authenticated => true,
            Access::Read => self.has_scope(Scope::Read),
            Access::Write => self.has_scope(Scope::Write),
            Access::Approvals => self.has_scope(Scope::Approvals),
            Access::Admin => self.is_admin(),
            Access::Owner => self.is_admin() || self.owns(channel, conn_id),
            Access::Claim => self.is_admin() || self.may_use_channel_claim(channel),
            Access::Deny => false,
        }
    }

    /// Scopes only count for operators.
    fn has_scope(&self, scope: Scope) -> bool {
        self.role == Role::Operator && self.scopes.contains(scope)
    }

    fn owns(&self, channel: &str, conn_id: &str) -> bool {
        let suffix_is = |prefix: &str, owner: &str| {
            !owner.is_empty() && channel.strip_prefix(prefix) == Some(owner)
        };
        suffix_is(names::USER_PREFIX, &self.sub) || suffix_is(names::CONN_PREFIX, conn_id)
    }
}

/// A secret presented by a client. `Debug` never prints the secret.
#[derive(Clone)]
pub enum Credential {
    Bearer(String),
    ApiKey(String),
    Password(String),
    /// A device token, with its signature of the connection's challenge
    /// when given in-band (checked by `services::devices`).
    Device {
        token: String,
        signature: Option<String>,
    },
}

impl Credential {
    fn secret(&self) -> &str {
        match self {
            Credential::Bearer(s) | Credential::ApiKey(s) | Credential::Password(s) => s,
            Credential::Device { token, .. } => token,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Credential::Bearer(_) => "Bearer",
            Credential::ApiKey(_) => "ApiKey",
            Credential::Password(_) => "Password",
            Credential::Device { .. } => "Device",
        };
        write!(f, "{kind}(<redacted>)")
    }
}

/// Why authentication failed. Messages are safe to show to clients.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required")]
    Missing,
    #[error("malformed credential")]
    Malformed,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issuer not accepted")]
    WrongIssuer,
    #[error("token audience not accepted")]
    WrongAudience,
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("invalid credentials")]
    UnknownCredential,
    #[error("authentication mode {0} is disabled")]
    ModeDisabled(&'static str),
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    #[error("auth setup: {0}")]
    Setup(String),
    #[error("this device must sign its connection's challenge: authenticate in-band")]
    ProofRequired,
}

impl AuthError {
    /// A stable machine-readable code for error payloads and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "auth_missing",
            AuthError::Malformed => "auth_malformed",
            AuthError::BadSignature => "auth_bad_signature",
            AuthError::Expired => "auth_expired",
            AuthError::NotYetValid => "auth_not_yet_valid",
            AuthError::WrongIssuer => "auth_wrong_issuer",
            AuthError::WrongAudience => "auth_wrong_audience",
            AuthError::AlgorithmNotAllowed => "auth_algorithm_not_allowed",
            AuthError::UnknownCredential => "auth_unknown_credential",
            AuthError::ModeDisabled(_) => "auth_mode_disabled",
            AuthError::InvalidClaims(_) => "auth_invalid_claims",
            AuthError::Setup(_) => "auth_setup",
            AuthError::ProofRequired => "auth_proof_required",
        }
    }
}

/// A configured static token or API key, parsed once.
struct StaticEntry {
    secret: Vec<u8>,
    sub: String,
    role: Role,
    scopes: ScopeSet,
    channels: Vec<String>,
}

impl StaticEntry {
    fn parse(cred: &StaticCredential, field: &str, index: usize) -> Result<Self, AuthError> {
        let setup = |what: &str, e: Option<AuthError>| {
            let detail = e.map(|e| format!(": {e}")).unwrap_or_default();
            AuthError::Setup(format!("{field}[{index}].{what}{detail}"))
        };
        if cred.secret.is_empty() {
            return Err(setup("secret is empty", None));
        }
        if let Err(why) = validate_sub(&cred.sub) {
            return Err(setup(&format!("sub {why}"), None));
        }
        Ok(Self {
            secret: cred.secret.as_bytes().to_vec(),
            sub: cred.sub.clone(),
            role: cred.role.parse().map_err(|e| setup("role", Some(e)))?,
            scopes: ScopeSet::from_names(&cred.scopes).map_err(|e| setup("scopes", Some(e)))?,
            channels: cred.channels.clone(),
        })
    }

    fn identity(&self, method: AuthMethod) -> Identity {
        Identity {
            sub: self.sub.clone(),
            role: self.role,
            scopes: self.scopes,
            channels: self.channels.clone(),
            method,
            expires_at: None,
        }
    }
}

/// Index of the entry whose secret equals `given`, comparing against every
/// entry in constant time per entry and without exiting early.
fn find_constant_time(entries: &[StaticEntry], given: &[u8]) -> Option<usize> {
    let mut found: u32 = 0;
    for (index, entry) in entries.iter().enumerate() {
        let hit = entry.secret.as_slice().ct_eq(given) & found.ct_eq(&0);
        let candidate = u32::try_from(index).map_or(u32::MAX, |i| i.saturating_add(1));
        found.conditional_assign(&candidate, hit);
    }
    usize::try_from(found).ok()?.checked_sub(1)
}

/// The identity of the shared password.
const PASSWORD_SUB: &str = "password";
/// The identity of mode `none`.
const ANONYMOUS_SUB: &str = "anonymous";
/// Device identities are `device:<deviceId>`; no JWT may claim one.
pub const DEVICE_SUB_PREFIX: &str = "device:";

/// Longest identity name (`sub`), in bytes.
pub const MAX_SUB_LEN: usize = 256;

/// An identity name: 1 to [`MAX_SUB_LEN`] bytes, no control characters
/// (they would forge lines in logs and split channel names).
pub fn validate_sub(sub: &str) -> Result<(), &'static str> {
    if sub.is_empty() {
        Err("is empty")
    } else if sub.len() > MAX_SUB_LEN {
        Err("is longer than 256 bytes")
    } else if sub.chars().any(char::is_control) {
        Err("contains control characters")
    } else {
        Ok(())
    }
}

struct Inner {
    modes: Vec<AuthMode>,
    /// Names that belong to configured credentials (static tokens, API
    /// keys) or to the server (`password`, `anonymous`): a JWT may not
    /// claim them, or it would act as that credential (own its sessions,
    /// read its `user:` channel).
    reserved: HashSet<String>,
    jwt: Option<JwtVerifier>,
    tokens: Vec<StaticEntry>,
    api_keys: Vec<StaticEntry>,
    password: Option<Vec<u8>>,
    password_scopes: ScopeSet,
    none_scopes: ScopeSet,
}

/// Turns credentials into identities. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("modes", &self.inner.modes)
            .field("tokens", &self.inner.tokens.len())
            .field("api_keys", &self.inner.api_keys.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the authenticator for the effective `modes` (computed by the
    /// caller). Reads the JWT public key file. Configuration problems are
    /// [`AuthError::Setup`] naming the offending field.
    pub fn new(cfg: &AuthConfig, modes: &[AuthMode]) -> Result<Self, AuthError> {
        let enabled = |mode| modes.contains(&mode);
        let jwt = if enabled(AuthMode::Jwt) {
            Some(JwtVerifier::new(&cfg.jwt)?)
        } else {
            None
        };
        let tokens = parse_statics(&cfg.tokens, "auth.tokens", enabled(AuthMode::Token))?;
        let api_keys = parse_statics(&cfg.api_keys, "auth.api_keys", enabled(AuthMode::ApiKey))?;
        let password = if enabled(AuthMode::Password) {
            Some(parse_password(cfg.password.as_deref())?)
        } else {
            None
        };
        let reserved = tokens
            .iter()
            .chain(&api_keys)
            .map(|e| e.sub.clone())
            .chain([PASSWORD_SUB.to_owned(), ANONYMOUS_SUB.to_owned()])
            .collect();
        let inner = Inner {
            modes: modes.to_vec(),
            reserved,
            jwt,
            tokens,
            api_keys,
            password,
            password_scopes: scopes_or(
                &cfg.password_scopes,
                "auth.password_scopes",
                ScopeSet::empty().with(Scope::Admin),
            )?,
            none_scopes: scopes_or(
                &cfg.none_scopes,
                "auth.none_scopes",
                ScopeSet::empty().with(Scope::Read).with(Scope::Write),
            )?,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Verifies `cred` and returns who it belongs to.
    pub fn authenticate(&self, cred: &Credential) -> Result<Identity, AuthError> {
        if cred.secret().is_empty() {
            return Err(AuthError::Missing);
        }
        match cred {
            Credential::Bearer(token) => self.bearer(token),
            Credential::ApiKey(key) => self.api_key(key),
            Credential::Password(password) => self.password(password),
            // Device tokens live in the backend: `services::devices`.
            Credential::Device { .. } => Err(AuthError::ModeDisabled("device")),
        }
    }

    /// The anonymous identity, when mode `none` is enabled.
    pub fn none_identity(&self) -> Option<Identity> {
        self.enabled(AuthMode::None).then(|| Identity {
            sub: ANONYMOUS_SUB.into(),
            role: Role::Operator,
            scopes: self.inner.none_scopes,
            channels: Vec::new(),
            method: AuthMethod::None,
            expires_at: None,
        })
    }

    /// False only when mode `none` is enabled.
    pub fn auth_required(&self) -> bool {
        !self.enabled(AuthMode::None)
    }

    pub fn modes(&self) -> &[AuthMode] {
        &self.inner.modes
    }

    fn enabled(&self, mode: AuthMode) -> bool {
        self.inner.modes.contains(&mode)
    }

    fn bearer(&self, token: &str) -> Result<Identity, AuthError> {
        if jwt::looks_like_jwt(token)
            && let Some(verifier) = &self.inner.jwt
        {
            let identity = verifier.verify(token)?;
            if self.inner.reserved.contains(&identity.sub)
                || identity.sub.starts_with(DEVICE_SUB_PREFIX)
            {
                return Err(AuthError::InvalidClaims(format!(
                    "sub {:?} is the name of a configured credential",
                    identity.sub
                )));
            }
            return Ok(identity);
        }
        // A static token, or an API key sent as `Authorization: Bearer` (as
        // the OpenAI, MCP and A2A clients send theirs): both lists are
        // searched in constant time, whichever mode holds the credential.
        let (tokens, keys) = (
            self.enabled(AuthMode::Token),
            self.enabled(AuthMode::ApiKey),
        );
        if tokens || keys {
            let as_token = lookup(&self.inner.tokens, token, AuthMethod::Token);
            let as_key = lookup(&self.inner.api_keys, token, AuthMethod::ApiKey);
            return as_token.or(as_key);
        }
        if jwt::looks_like_jwt(token) {
            Err(AuthError::ModeDisabled("jwt"))
        } else {
            Err(AuthError::ModeDisabled("token"))
        }
    }

    fn api_key(&self, key: &str) -> Result<Identity, AuthError> {
        if !self.enabled(AuthMode::ApiKey) {
            return Err(AuthError::ModeDisabled("api_key"));
        }
        lookup(&self.inner.api_keys, key, AuthMethod::ApiKey)
    }

    fn password(&self, given: &str) -> Result<Identity, AuthError> {
        let Some(expected) = &self.inner.password else {
            return Err(AuthError::ModeDisabled("password"));
        };
        if !bool::from(expected.as_slice().ct_eq(given.as_bytes())) {
            return Err(AuthError::UnknownCredential);
        }
        Ok(Identity {
            sub: PASSWORD_SUB.into(),
            role: Role::Operator,
            scopes: self.inner.password_scopes,
            channels: Vec::new(),
            method: AuthMethod::Password,
            expires_at: None,
        })
    }
}

fn lookup(entries: &[StaticEntry], given: &str, method: AuthMethod) -> Result<Identity, AuthError> {
    find_constant_time(entries, given.as_bytes())
        .and_then(|index| entries.get(index))
        .map(|entry| entry.identity(method))
        .ok_or(AuthError::UnknownCredential)
}

fn parse_statics(
    creds: &[StaticCredential],
    field: &str,
    enabled: bool,
) -> Result<Vec<StaticEntry>, AuthError> {
    if !enabled {
        return Ok(Vec::new());
    }
    if creds.is_empty() {
        return Err(AuthError::Setup(format!(
            "{field} is empty but its mode is enabled"
        )));
    }
    creds
        .iter()
        .enumerate()
        .map(|(index, cred)| StaticEntry::parse(cred, field, index))
        .collect()
}

fn parse_password(password: Option<&str>) -> Result<Vec<u8>, AuthError> {
    match password {
        Some(p) if !p.is_empty() => Ok(p.as_bytes().to_vec()),
        _ => Err(AuthError::Setup(
            "auth.password must be set when mode password is enabled".into(),
        )),
    }
}

fn scopes_or(names: &[String], field: &str, default: ScopeSet) -> Result<ScopeSet, AuthError> {
    if names.is_empty() {
        return Ok(default);
    }
    ScopeSet::from_names(names).map_err(|e| AuthError::Setup(format!("{field}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(secret: &str, sub: &str, role: &str, scopes: &[&str]) -> StaticCredential {
        StaticCredential {
            secret: secret.into(),
            sub: sub.into(),
            role: role.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            channels: vec!["private:team-*".into()],
        }
    }

    fn config() -> AuthConfig {
        AuthConfig {
            tokens: vec![
                cred("tok-alice", "alice", "operator", &["operator.read"]),
                cred("tok-bob-longer", "bob", "node", &[]),
            ],
            api_keys: vec![cred("key-1", "svc", "operator", &["operator.admin"])],
            password: Some("hunter2".into()),
            ..AuthConfig::default()
        }
    }

    fn auth(modes: &[AuthMode]) -> Authenticator {
        Authenticator::new(&config(), modes).unwrap()
    }

    fn identity(role: Role, scopes: &[Scope]) -> Identity {
        Identity {
            sub: "alice".into(),
            role,
            scopes: ScopeSet::from_scopes(scopes),
            channels: vec!["private:team-*".into(), "exact".into()],
            method: AuthMethod::Token,
            expires_at: None,
        }
    }

    #[test]
    fn role_and_scope_strings() {
        assert_eq!("node".parse::<Role>().unwrap(), Role::Node);
        assert_eq!(Role::Operator.to_string(), "operator");
        assert!("root".parse::<Role>().is_err());
        for scope in Scope::ALL {
            assert_eq!(scope.to_string().parse::<Scope>().unwrap(), scope);
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{scope}\""));
        }
        assert!("operator.root".parse::<Scope>().is_err());
        assert_eq!(serde_json::to_string(&Role::Node).unwrap(), "\"node\"");
    }

    #[test]
    fn admin_implies_every_scope() {
        let admin = ScopeSet::empty().with(Scope::Admin);
        assert!(Scope::ALL.iter().all(|&s| admin.contains(s)));
        let read = ScopeSet::empty().with(Scope::Read);
        assert!(read.contains(Scope::Read));
        assert!(!read.contains(Scope::Write));
        assert!(!read.contains(Scope::Admin));
        assert_eq!(ScopeSet::all().names().len(), 5);
        assert!(ScopeSet::empty().is_empty());
    }

    #[test]
    fn scope_set_names_round_trip() {
        let names = vec!["operator.write".to_string(), "operator.read".to_string()];
        let set = ScopeSet::from_names(&names).unwrap();
        assert_eq!(set.names(), vec!["operator.read", "operator.write"]);
        assert_eq!(
            serde_json::to_value(set).unwrap(),
            serde_json::json!(["operator.read", "operator.write"])
        );
        let back: ScopeSet = serde_json::from_value(serde_json::json!(["operator.read"])).unwrap();
        assert!(back.contains(Scope::Read));
        assert!(ScopeSet::from_names(&["bogus".into()]).is_err());
    }

    #[test]
    fn requirements() {
        let reader = identity(Role::Operator, &[Scope::Read]);
        assert!(reader.satisfies(Requirement::Any));
        assert!(reader.satisfies(Requirement::Authenticated));
        assert!(reader.satisfies(Requirement::Scope(Scope::Read)));
        assert!(!reader.satisfies(Requirement::Scope(Scope::Write)));
        assert!(!reader.satisfies(Requirement::Node));

        let admin = identity(Role::Operator, &[Scope::Admin]);
        assert!(admin.is_admin());
        assert!(admin.satisfies(Requirement::Scope(Scope::Pairing)));
        assert!(admin.satisfies(Requirement::Node));

        let node = identity(Role::Node, &[Scope::Admin]);
        assert!(node.satisfies(Requirement::Node));
        assert!(node.satisfies(Requirement::Authenticated));
        assert!(!node.is_admin(), "scopes only count for operators");
        assert!(!node.satisfies(Requirement::Scope(Scope::Read)));
    }

    #[test]
    fn check_access_per_variant() {
        let reader = identity(Role::Operator, &[Scope::Read]);
        let admin = identity(Role::Operator, &[Scope::Admin]);
        let writer = identity(Role::Operator, &[Scope::Write, Scope::Approvals]);

        assert!(reader.check_access(Access::Authenticated, "global", "c1"));
        assert!(reader.check_access(Access::Read, "x", "c1"));
        assert!(!reader.check_access(Access::Write, "x", "c1"));
        assert!(writer.check_access(Access::Write, "x", "c1"));
        assert!(writer.check_access(Access::Approvals, "approval", "c1"));
        assert!(!reader.check_access(Access::Approvals, "approval", "c1"));
        assert!(!writer.check_access(Access::Admin, "x", "c1"));
        assert!(admin.check_access(Access::Admin, "x", "c1"));

        assert!(reader.check_access(Access::Owner, "user:alice", "c1"));
        assert!(!reader.check_access(Access::Owner, "user:bob", "c1"));
        assert!(!reader.check_access(Access::Owner, "user:alice2", "c1"));
        assert!(reader.check_access(Access::Owner, "conn:c1", "c1"));
        assert!(!reader.check_access(Access::Owner, "conn:c2", "c1"));
        assert!(!reader.check_access(Access::Owner, "conn:", ""));
        assert!(admin.check_access(Access::Owner, "user:bob", "c1"));

        assert!(reader.check_access(Access::Claim, "private:team-red", "c1"));
        assert!(reader.check_access(Access::Claim, "exact", "c1"));
        assert!(!reader.check_access(Access::Claim, "private:other", "c1"));
        assert!(admin.check_access(Access::Claim, "private:other", "c1"));

        assert!(!admin.check_access(Access::Deny, "x", "c1"));
    }

    #[test]
    fn identity_serializes_scope_names() {
        let v = serde_json::to_value(identity(Role::Node, &[Scope::Read])).unwrap();
        assert_eq!(v["role"], "node");
        assert_eq!(v["scopes"], serde_json::json!(["operator.read"]));
        assert_eq!(v["method"], "token");
    }

    #[test]
    fn credential_debug_is_redacted() {
        let shown = format!("{:?}", Credential::Bearer("s3cret".into()));
        assert_eq!(shown, "Bearer(<redacted>)");
        assert!(!format!("{:?}", Credential::Password("s3cret".into())).contains("s3cret"));
    }

    #[test]
    fn static_tokens() {
        let a = auth(&[AuthMode::Token]);
        let alice = a
            .authenticate(&Credential::Bearer("tok-alice".into()))
            .unwrap();
        assert_eq!(alice.sub, "alice");
        assert_eq!(alice.method, AuthMethod::Token);
        assert!(alice.scopes.contains(Scope::Read));
        let bob = a
            .authenticate(&Credential::Bearer("tok-bob-longer".into()))
            .unwrap();
        assert_eq!(bob.role, Role::Node);
        for wrong in ["tok-alicf", "tok-alice-", "tok", "key-1"] {
            let err = a.authenticate(&Credential::Bearer(wrong.into()));
            assert!(matches!(err, Err(AuthError::UnknownCredential)), "{wrong}");
        }
        assert!(matches!(
            a.authenticate(&Credential::Bearer(String::new())),
            Err(AuthError::Missing)
        ));
    }

    #[test]
    fn api_keys() {
        let a = auth(&[AuthMode::ApiKey]);
        let svc = a.authenticate(&Credential::ApiKey("key-1".into())).unwrap();
        assert_eq!(svc.method, AuthMethod::ApiKey);
        assert!(svc.is_admin());
        assert!(matches!(
            a.authenticate(&Credential::ApiKey("key-2".into())),
            Err(AuthError::UnknownCredential)
        ));
    }

    #[test]
    fn password() {
        let a = auth(&[AuthMode::Password]);
        let id = a
            .authenticate(&Credential::Password("hunter2".into()))
            .unwrap();
        assert_eq!(id.sub, "password");
        assert!(id.is_admin(), "default password scope is admin");
        assert!(matches!(
            a.authenticate(&Credential::Password("hunter3".into())),
            Err(AuthError::UnknownCredential)
        ));

        let mut cfg = config();
        cfg.password_scopes = vec!["operator.read".into()];
        let a = Authenticator::new(&cfg, &[AuthMode::Password]).unwrap();
        let id = a
            .authenticate(&Credential::Password("hunter2".into()))
            .unwrap();
        assert!(!id.is_admin());
        assert!(id.scopes.contains(Scope::Read));
    }

    #[test]
    fn disabled_modes() {
        let a = auth(&[AuthMode::Password]);
        assert!(matches!(
            a.authenticate(&Credential::Bearer("tok-alice".into())),
            Err(AuthError::ModeDisabled("token"))
        ));
        assert!(matches!(
            a.authenticate(&Credential::Bearer("eyJh.eyJi.c2ln".into())),
            Err(AuthError::ModeDisabled("jwt"))
        ));
        assert!(matches!(
            a.authenticate(&Credential::ApiKey("key-1".into())),
            Err(AuthError::ModeDisabled("api_key"))
        ));
        let a = auth(&[AuthMode::Token]);
        assert!(matches!(
            a.authenticate(&Credential::Password("hunter2".into())),
            Err(AuthError::ModeDisabled("password"))
        ));
    }

    #[test]
    fn none_mode() {
        let a = auth(&[AuthMode::Token]);
        assert!(a.auth_required());
        assert!(a.none_identity().is_none());

        let a = auth(&[AuthMode::None, AuthMode::Token]);
        assert!(!a.auth_required());
        let anon = a.none_identity().unwrap();
        assert_eq!(anon.sub, "anonymous");
        assert_eq!(anon.method, AuthMethod::None);
        assert!(anon.scopes.contains(Scope::Read) && anon.scopes.contains(Scope::Write));
        assert!(!anon.is_admin());
        assert_eq!(a.modes(), &[AuthMode::None, AuthMode::Token]);
    }

    #[test]
    fn setup_errors_name_the_field() {
        let mut cfg = config();
        cfg.tokens[1].role = "root".into();
        let err = Authenticator::new(&cfg, &[AuthMode::Token]).unwrap_err();
        assert!(err.to_string().contains("auth.tokens[1].role"), "{err}");
        assert!(!err.to_string().contains("tok-bob"));

        let cfg = AuthConfig::default();
        let err = Authenticator::new(&cfg, &[AuthMode::Password]).unwrap_err();
        assert!(err.to_string().contains("auth.password"), "{err}");
        let err = Authenticator::new(&cfg, &[AuthMode::ApiKey]).unwrap_err();
        assert!(err.to_string().contains("auth.api_keys"), "{err}");
        let err = Authenticator::new(&cfg, &[AuthMode::Jwt]).unwrap_err();
        assert!(err.to_string().contains("auth.jwt"), "{err}");
    }

    #[test]
    fn bearer_routes_jwts_and_static_tokens() {
        let mut cfg = config();
        cfg.jwt.secret = Some("jwt-secret".into());
        let a = Authenticator::new(&cfg, &[AuthMode::Jwt, AuthMode::Token]).unwrap();
        let token = jwt::mint(
            &cfg.jwt,
            &MintClaims {
                sub: "carol".into(),
                role: Role::Node,
                scopes: Vec::new(),
                channels: Vec::new(),
                ttl_secs: 60,
                issuer: None,
                audience: None,
            },
        )
        .unwrap();
        let carol = a.authenticate(&Credential::Bearer(token)).unwrap();
        assert_eq!(
            (carol.sub.as_str(), carol.method),
            ("carol", AuthMethod::Jwt)
        );
        assert_eq!(carol.role, Role::Node);
        let alice = a
            .authenticate(&Credential::Bearer("tok-alice".into()))
            .unwrap();
        assert_eq!(alice.method, AuthMethod::Token);
        assert!(matches!(
            a.authenticate(&Credential::Bearer("eyJh.eyJi.c2ln".into())),
            Err(AuthError::Malformed)
        ));
    }

    #[test]
    fn constant_time_lookup_finds_first_match() {
        let entries: Vec<StaticEntry> = ["a", "bb", "a"]
            .iter()
            .map(|s| StaticEntry::parse(&cred(s, "x", "operator", &[]), "t", 0).unwrap())
            .collect();
        assert_eq!(find_constant_time(&entries, b"a"), Some(0));
        assert_eq!(find_constant_time(&entries, b"bb"), Some(1));
        assert_eq!(find_constant_time(&entries, b"c"), None);
        assert_eq!(find_constant_time(&[], b"a"), None);
    }

    /// A JWT cannot take the name of a configured credential: it would
    /// own that credential's sessions and `user:` channel.
    #[test]
    fn jwts_cannot_claim_a_configured_credentials_name() {
        let mut cfg = config();
        cfg.jwt.secret = Some("jwt-secret".into());
        let a = Authenticator::new(&cfg, &[AuthMode::Jwt, AuthMode::Token]).unwrap();
        let mint = |sub: &str| {
            jwt::mint(
                &cfg.jwt,
                &MintClaims {
                    sub: sub.into(),
                    role: Role::Operator,
                    scopes: vec!["operator.admin".into()],
                    channels: Vec::new(),
                    ttl_secs: 60,
                    issuer: None,
                    audience: None,
                },
            )
            .unwrap()
        };
        let static_name = a
            .authenticate(&Credential::Bearer("tok-alice".into()))
            .unwrap()
            .sub;
        for taken in [static_name.as_str(), "password", "anonymous"] {
            let err = a
                .authenticate(&Credential::Bearer(mint(taken)))
                .unwrap_err();
            assert!(
                matches!(&err, AuthError::InvalidClaims(m) if m.contains("configured credential")),
                "{taken}: {err}"
            );
        }
        assert_eq!(
            a.authenticate(&Credential::Bearer(mint("carol")))
                .unwrap()
                .sub,
            "carol"
        );
    }

    /// Device identities (`device:<id>`) come from pairing only.
    #[test]
    fn jwts_cannot_claim_a_device_identity() {
        let mut cfg = config();
        cfg.jwt.secret = Some("jwt-secret".into());
        let a = Authenticator::new(&cfg, &[AuthMode::Jwt]).unwrap();
        let token = jwt::mint(
            &cfg.jwt,
            &MintClaims {
                sub: "device:tablet-1".into(),
                role: Role::Node,
                scopes: Vec::new(),
                channels: Vec::new(),
                ttl_secs: 60,
                issuer: None,
                audience: None,
            },
        )
        .unwrap();
        let err = a.authenticate(&Credential::Bearer(token)).unwrap_err();
        assert!(matches!(err, AuthError::InvalidClaims(_)), "{err}");
        let device = Credential::Device {
            token: "sydev_x".into(),
            signature: None,
        };
        assert!(!format!("{device:?}").contains("sydev_x"));
        assert!(matches!(
            a.authenticate(&device),
            Err(AuthError::ModeDisabled("device"))
        ));
    }

    #[test]
    fn identity_names_have_no_control_characters() {
        assert!(validate_sub("alice@example.com").is_ok());
        assert!(validate_sub("ünïcødé name").is_ok());
        for bad in ["", "a\nb", "a\rb", "tab\there", "nul\0", "esc\u{1b}[31m"] {
            assert!(validate_sub(bad).is_err(), "{bad:?}");
        }
        assert!(validate_sub(&"x".repeat(256)).is_ok());
        assert!(validate_sub(&"x".repeat(257)).is_err());
        let mut cfg = config();
        cfg.tokens[0].sub = "evil\nline".into();
        let err = Authenticator::new(&cfg, &[AuthMode::Token]).unwrap_err();
        assert!(err.to_string().contains("auth.tokens[0].sub"), "{err}");
    }

    /// API keys are accepted as `Authorization: Bearer` too, whichever of
    /// the two modes is on; a key is still an API key.
    #[test]
    fn api_keys_are_accepted_as_bearer() {
        for modes in [
            vec![AuthMode::ApiKey],
            vec![AuthMode::Token, AuthMode::ApiKey],
        ] {
            let a = auth(&modes);
            let id = a.authenticate(&Credential::Bearer("key-1".into())).unwrap();
            assert_eq!((id.sub.as_str(), id.method), ("svc", AuthMethod::ApiKey));
        }
        let keys_only = auth(&[AuthMode::ApiKey]);
        assert!(matches!(
            keys_only.authenticate(&Credential::Bearer("tok-alice".into())),
            Err(AuthError::UnknownCredential)
        ));
        let tokens_only = auth(&[AuthMode::Token]);
        assert!(matches!(
            tokens_only.authenticate(&Credential::Bearer("key-1".into())),
            Err(AuthError::UnknownCredential)
        ));
    }
}
