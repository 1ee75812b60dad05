//! JWT verification and minting (`jsonwebtoken` with the RustCrypto backend).
//!
//! Keys: an HMAC secret (`auth.jwt.secret`) and/or one public key PEM
//! (`auth.jwt.public_key`: RSA, EC P-256/P-384 or Ed25519, detected from the
//! PEM). The accepted algorithms are `auth.jwt.algorithms`, or every
//! algorithm the configured keys support.
//!
//! The key is chosen by the algorithm *family* of the token header: HMAC
//! tokens are only ever checked against the secret, RSA tokens against the
//! RSA key and so on. That rules out the RS/HS confusion attack (an HS256
//! token "signed" with the RSA public key bytes). `alg: none` is not an
//! algorithm `jsonwebtoken` knows, so it is always rejected.
//!
//! Claims: `sub` (required), `exp` (required), `nbf` (checked when present),
//! `iss`/`aud` (checked when configured), `role` (`operator` by default or
//! `node`), `scopes` (array) and/or `scope` (space-separated string), and
//! `channels` (array of channel patterns). Scope names this gateway does not
//! know (e.g. `openid`) are ignored so that tokens from general-purpose
//! identity providers work.

use super::{AuthError, AuthMethod, Identity, Role, Scope, ScopeSet};
use crate::config::JwtConfig;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation, decode, encode,
};
use serde_json::{Map, Value};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether `token` has the shape of a compact JWS: three non-empty
/// base64url segments separated by dots.
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Verifies JWTs against the configured keys and claims policy.
pub struct JwtVerifier {
    secret: Option<DecodingKey>,
    public: Option<DecodingKey>,
    allowed: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("secret", &self.secret.is_some())
            .field("public", &self.public.as_ref().map(DecodingKey::family))
            .field("allowed", &self.allowed)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl JwtVerifier {
    /// Loads the keys named by `cfg` and works out the accepted algorithms.
    pub fn new(cfg: &JwtConfig) -> Result<Self, AuthError> {
        let secret = match cfg.secret.as_deref() {
            Some("") => return Err(setup("auth.jwt.secret is empty")),
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let public = cfg.public_key.as_deref().map(load_public_key).transpose()?;
        if secret.is_none() && public.is_none() {
            return Err(setup(
                "mode jwt needs auth.jwt.secret or auth.jwt.public_key",
            ));
        }
        let families: Vec<AlgorithmFamily> = secret
            .iter()
            .chain(public.iter())
            .map(DecodingKey::family)
            .collect();
        Ok(Self {
            allowed: allowed_algorithms(&cfg.algorithms, &families)?,
            secret,
            public,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway_secs,
        })
    }

    /// The algorithms this verifier accepts.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.allowed
    }

    /// Verifies signature and claims and returns the identity.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let alg = header_algorithm(token)?;
        if !self.allowed.contains(&alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let key = self.key_for(alg).ok_or(AuthError::AlgorithmNotAllowed)?;
        let data = decode::<Map<String, Value>>(token, key, &self.validation(alg))
            .map_err(|e| map_error(e.kind()))?;
        identity_from_claims(&data.claims)
    }

    /// The key of the algorithm's family, and only that one.
    fn key_for(&self, alg: Algorithm) -> Option<&DecodingKey> {
        match alg.family() {
            AlgorithmFamily::Hmac => self.secret.as_ref(),
            family => self.public.as_ref().filter(|key| key.family() == family),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }
}

fn setup(message: &str) -> AuthError {
    AuthError::Setup(message.to_string())
}

fn load_public_key(path: &Path) -> Result<DecodingKey, AuthError> {
    let pem = read_key_file(path, "auth.jwt.public_key")?;
    if String::from_utf8_lossy(&pem).contains("PRIVATE KEY") {
        return Err(AuthError::Setup(format!(
            "auth.jwt.public_key: {} holds a private key; configure the public key",
            path.display()
        )));
    }
    DecodingKey::from_rsa_pem(&pem)
        .or_else(|_| DecodingKey::from_ec_pem(&pem))
        .or_else(|_| DecodingKey::from_ed_pem(&pem))
        .map_err(|_| {
            AuthError::Setup(format!(
                "auth.jwt.public_key: {} is not an RSA, EC or Ed25519 public key in PEM format",
                path.display()
            ))
        })
}

fn read_key_file(path: &Path, field: &str) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path)
        .map_err(|e| AuthError::Setup(format!("{field}: cannot read {}: {e}", path.display())))
}

/// `configured` parsed and checked against the available key families, or
/// every algorithm of those families when `configured` is empty.
fn allowed_algorithms(
    configured: &[String],
    families: &[AlgorithmFamily],
) -> Result<Vec<Algorithm>, AuthError> {
    if configured.is_empty() {
        return Ok(families
            .iter()
            .flat_map(|family| family.algorithms().iter().copied())
            .collect());
    }
    configured
        .iter()
        .map(|name| {
            let alg = Algorithm::from_str(name.trim()).map_err(|_| {
                AuthError::Setup(format!("auth.jwt.algorithms: unknown algorithm {name:?}"))
            })?;
            if !families.contains(&alg.family()) {
                return Err(AuthError::Setup(format!(
                    "auth.jwt.algorithms: {name} needs a matching key ({})",
                    key_field(alg.family())
                )));
            }
            Ok(alg)
        })
        .collect()
}

fn key_field(family: AlgorithmFamily) -> &'static str {
    match family {
        AlgorithmFamily::Hmac => "auth.jwt.secret",
        AlgorithmFamily::Rsa => "an RSA auth.jwt.public_key",
        AlgorithmFamily::Ec => "an EC auth.jwt.public_key",
        AlgorithmFamily::Ed => "an Ed25519 auth.jwt.public_key",
    }
}

/// The header's `alg`, parsed by hand so that `none` and unknown names map
/// to [`AuthError::AlgorithmNotAllowed`] rather than a parse error.
fn header_algorithm(token: &str) -> Result<Algorithm, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AuthError::Malformed)?;
    Algorithm::from_str(alg).map_err(|_| AuthError::AlgorithmNotAllowed)
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => AuthError::WrongIssuer,
            "aud" => AuthError::WrongAudience,
            other => AuthError::InvalidClaims(format!("missing {other}")),
        },
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::InvalidClaims(format!("{claim} has the wrong type"))
        }
        _ => AuthError::Malformed,
    }
}

fn claims_error(message: &str) -> AuthError {
    AuthError::InvalidClaims(message.to_string())
}

fn identity_from_claims(claims: &Map<String, Value>) -> Result<Identity, AuthError> {
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(claims_error("sub must be a non-empty string")),
    };
    if let Err(why) = super::validate_sub(&sub) {
        return Err(claims_error(&format!("sub {why}")));
    }
    let role = match claims.get("role") {
        None | Some(Value::Null) => Role::Operator,
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| claims_error("role must be \"operator\" or \"node\""))?,
        Some(_) => return Err(claims_error("role must be a string")),
    };
    Ok(Identity {
        sub,
        role,
        scopes: scopes_claim(claims)?,
        channels: string_array(claims.get("channels"), "channels")?,
        method: AuthMethod::Jwt,
        expires_at: claims.get("exp").and_then(numeric_date),
    })
}

/// `scopes` (array) and `scope` (space-separated string) combined; unknown
/// names are ignored.
fn scopes_claim(claims: &Map<String, Value>) -> Result<ScopeSet, AuthError> {
    let mut names = string_array(claims.get("scopes"), "scopes")?;
    match claims.get("scope") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => names.extend(s.split_whitespace().map(str::to_string)),
        Some(_) => return Err(claims_error("scope must be a space-separated string")),
    }
    let mut set = ScopeSet::empty();
    for scope in names.iter().filter_map(|n| n.parse::<Scope>().ok()) {
        set.insert(scope);
    }
    Ok(set)
}

fn string_array(value: Option<&Value>, name: &str) -> Result<Vec<String>, AuthError> {
    let invalid = || AuthError::InvalidClaims(format!("{name} must be an array of strings"));
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or_else(invalid))
            .collect(),
        Some(_) => Err(invalid()),
    }
}

fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// What `switchyard token` puts into a minted JWT.
#[derive(Debug, Clone)]
pub struct MintClaims {
    pub sub: String,
    pub role: Role,
    pub scopes: Vec<String>,
    pub channels: Vec<String>,
    pub ttl_secs: u64,
    /// Overrides `auth.jwt.issuer`.
    pub issuer: Option<String>,
    /// Overrides `auth.jwt.audience`.
    pub audience: Option<String>,
}

/// Signs a token: HS256 (or the first allowed HMAC algorithm) with
/// `auth.jwt.secret` when set, else with the `auth.jwt.private_key` PEM
/// (RS256 for RSA, ES256/ES384 for EC, EdDSA for Ed25519).
pub fn mint(cfg: &JwtConfig, claims: &MintClaims) -> Result<String, AuthError> {
    if claims.sub.is_empty() {
        return Err(claims_error("sub must not be empty"));
    }
    if let Err(why) = super::validate_sub(&claims.sub) {
        return Err(claims_error(&format!("sub {why}")));
    }
    ScopeSet::from_names(&claims.scopes)?;
    let payload = mint_payload(cfg, claims, unix_now());
    let (key, candidates) = signing_key(cfg)?;
    let algorithms = mint_algorithms(cfg, &candidates)?;
    let mut last_error = None;
    for alg in algorithms {
        match encode(&Header::new(alg), &payload, &key) {
            Ok(token) => return Ok(token),
            Err(e) => last_error = Some(e),
        }
    }
    let detail = last_error.map(|e| e.to_string()).unwrap_or_default();
    Err(AuthError::Setup(format!(
        "auth.jwt: cannot sign with the configured key: {detail}"
    )))
}

fn mint_payload(cfg: &JwtConfig, claims: &MintClaims, now: u64) -> Value {
    let mut map = Map::new();
    map.insert("sub".into(), claims.sub.clone().into());
    map.insert("role".into(), claims.role.as_str().into());
    if !claims.scopes.is_empty() {
        map.insert("scopes".into(), claims.scopes.clone().into());
    }
    if !claims.channels.is_empty() {
        map.insert("channels".into(), claims.channels.clone().into());
    }
    map.insert("iat".into(), now.into());
    map.insert("exp".into(), now.saturating_add(claims.ttl_secs).into());
    if let Some(iss) = claims.issuer.as_ref().or(cfg.issuer.as_ref()) {
        map.insert("iss".into(), iss.clone().into());
    }
    if let Some(aud) = claims.audience.as_ref().or(cfg.audience.as_ref()) {
        map.insert("aud".into(), aud.clone().into());
    }
    Value::Object(map)
}

/// The signing key and the algorithms to try with it, most preferred first.
fn signing_key(cfg: &JwtConfig) -> Result<(EncodingKey, Vec<Algorithm>), AuthError> {
    if let Some(secret) = cfg.secret.as_deref().filter(|s| !s.is_empty()) {
        let key = EncodingKey::from_secret(secret.as_bytes());
        return Ok((
            key,
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        ));
    }
    let Some(path) = cfg.private_key.as_deref() else {
        return Err(setup(
            "minting needs auth.jwt.secret or auth.jwt.private_key",
        ));
    };
    let pem = read_key_file(path, "auth.jwt.private_key")?;
    let not_a_key = || {
        AuthError::Setup(format!(
            "auth.jwt.private_key: {} is not a PKCS#8 (or PKCS#1 RSA) RSA, EC or Ed25519 private key",
            path.display()
        ))
    };
    if let Ok(key) = EncodingKey::from_rsa_pem(&pem) {
        let algs = vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
        let algs = [
            algs,
            vec![Algorithm::PS256, Algorithm::PS384, Algorithm::PS512],
        ]
        .concat();
        return Ok((key, algs));
    }
    if let Ok(key) = EncodingKey::from_ec_pem(&pem) {
        return Ok((key, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    EncodingKey::from_ed_pem(&pem)
        .map(|key| (key, vec![Algorithm::EdDSA]))
        .map_err(|_| not_a_key())
}

/// The candidates restricted to `auth.jwt.algorithms` when that is set (so
/// the server accepts what is minted). Without it, all candidates of the
/// family are tried in order (the EC curve decides between ES256 and ES384);
/// for RSA and HMAC only the first is used.
fn mint_algorithms(cfg: &JwtConfig, candidates: &[Algorithm]) -> Result<Vec<Algorithm>, AuthError> {
    if cfg.algorithms.is_empty() {
        return Ok(match candidates.first() {
            Some(Algorithm::ES256) => candidates.to_vec(),
            Some(first) => vec![*first],
            None => Vec::new(),
        });
    }
    let allowed: Vec<Algorithm> = candidates
        .iter()
        .copied()
        .filter(|alg| {
            cfg.algorithms
                .iter()
                .any(|name| Algorithm::from_str(name.trim()).ok() == Some(*alg))
        })
        .collect();
    if allowed.is_empty() {
        return Err(setup(
            "auth.jwt.algorithms allows no algorithm usable with the signing key",
        ));
    }
    Ok(allowed)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::testkeys;
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

    /// Writes `pem` to a unique temp file and returns its path.
    fn key_file(name: &str, pem: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }

    fn hs_config() -> JwtConfig {
        JwtConfig {
            secret: Some(SECRET.into()),
            ..JwtConfig::default()
        }
    }

    fn pub_config(name: &str, public: &str) -> JwtConfig {
        JwtConfig {
            public_key: Some(key_file(name, public)),
            ..JwtConfig::default()
        }
    }

    fn claims(extra: Value) -> Value {
        let mut base = json!({
            "sub": "alice",
            "exp": unix_now() + 600,
            "scopes": ["operator.read"],
        });
        if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
            base.extend(extra);
        }
        base
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        encode(&Header::new(alg), claims, key).unwrap()
    }

    fn hs(claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            claims,
        )
    }

    fn verify(cfg: &JwtConfig, token: &str) -> Result<Identity, AuthError> {
        JwtVerifier::new(cfg).unwrap().verify(token)
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn hs256_ok() {
        let id = verify(&hs_config(), &hs(&claims(json!({})))).unwrap();
        assert_eq!(id.sub, "alice");
        assert_eq!(id.role, Role::Operator);
        assert_eq!(id.method, AuthMethod::Jwt);
        assert!(id.scopes.contains(Scope::Read));
        assert!(id.expires_at.is_some());
    }

    #[test]
    fn rs256_ok() {
        let cfg = pub_config("rsa.pub", testkeys::RSA_PUBLIC);
        let key = EncodingKey::from_rsa_pem(testkeys::RSA_PRIVATE.as_bytes()).unwrap();
        for alg in [Algorithm::RS256, Algorithm::PS512] {
            let id = verify(&cfg, &sign(alg, &key, &claims(json!({})))).unwrap();
            assert_eq!(id.sub, "alice");
        }
    }

    #[test]
    fn es256_ok() {
        let cfg = pub_config("ec.pub", testkeys::EC_PUBLIC);
        let key = EncodingKey::from_ec_pem(testkeys::EC_PRIVATE.as_bytes()).unwrap();
        let token = sign(Algorithm::ES256, &key, &claims(json!({})));
        assert_eq!(verify(&cfg, &token).unwrap().sub, "alice");
    }

    #[test]
    fn eddsa_ok() {
        let cfg = pub_config("ed.pub", testkeys::ED_PUBLIC);
        let key = EncodingKey::from_ed_pem(testkeys::ED_PRIVATE.as_bytes()).unwrap();
        let token = sign(Algorithm::EdDSA, &key, &claims(json!({})));
        assert_eq!(verify(&cfg, &token).unwrap().sub, "alice");
    }

    #[test]
    fn secret_and_public_key_together() {
        let mut cfg = pub_config("ed-both.pub", testkeys::ED_PUBLIC);
        cfg.secret = Some(SECRET.into());
        let key = EncodingKey::from_ed_pem(testkeys::ED_PRIVATE.as_bytes()).unwrap();
        let ed = sign(Algorithm::EdDSA, &key, &claims(json!({})));
        assert!(verify(&cfg, &ed).is_ok());
        assert!(verify(&cfg, &hs(&claims(json!({})))).is_ok());
    }

    #[test]
    fn bad_signature() {
        let other = EncodingKey::from_secret(b"another-secret");
        let token = sign(Algorithm::HS256, &other, &claims(json!({})));
        assert!(matches!(
            verify(&hs_config(), &token),
            Err(AuthError::BadSignature)
        ));

        // Tampered payload, original signature.
        let token = hs(&claims(json!({})));
        let parts: Vec<&str> = token.split('.').collect();
        let forged = b64(&claims(json!({"scopes": ["operator.admin"]})));
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert!(matches!(
            verify(&hs_config(), &tampered),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn expired() {
        let token = hs(&claims(json!({"exp": unix_now() - 60})));
        assert!(matches!(
            verify(&hs_config(), &token),
            Err(AuthError::Expired)
        ));
        // Within the leeway (5 s by default).
        let token = hs(&claims(json!({"exp": unix_now() - 2})));
        assert!(verify(&hs_config(), &token).is_ok());
    }

    #[test]
    fn exp_is_required() {
        let token = hs(&json!({"sub": "alice"}));
        assert!(matches!(
            verify(&hs_config(), &token),
            Err(AuthError::InvalidClaims(_))
        ));
    }

    #[test]
    fn nbf_in_future() {
        let token = hs(&claims(json!({"nbf": unix_now() + 600})));
        assert!(matches!(
            verify(&hs_config(), &token),
            Err(AuthError::NotYetValid)
        ));
        let token = hs(&claims(json!({"nbf": unix_now() - 1})));
        assert!(verify(&hs_config(), &token).is_ok());
    }

    #[test]
    fn issuer() {
        let mut cfg = hs_config();
        cfg.issuer = Some("https://issuer.example".into());
        let ok = hs(&claims(json!({"iss": "https://issuer.example"})));
        assert!(verify(&cfg, &ok).is_ok());
        let wrong = hs(&claims(json!({"iss": "https://evil.example"})));
        assert!(matches!(verify(&cfg, &wrong), Err(AuthError::WrongIssuer)));
        let missing = hs(&claims(json!({})));
        assert!(matches!(
            verify(&cfg, &missing),
            Err(AuthError::WrongIssuer)
        ));
    }

    #[test]
    fn audience() {
        let mut cfg = hs_config();
        cfg.audience = Some("switchyard".into());
        assert!(verify(&cfg, &hs(&claims(json!({"aud": "switchyard"})))).is_ok());
        let array = hs(&claims(json!({"aud": ["other", "switchyard"]})));
        assert!(verify(&cfg, &array).is_ok());
        let wrong = hs(&claims(json!({"aud": "other"})));
        assert!(matches!(
            verify(&cfg, &wrong),
            Err(AuthError::WrongAudience)
        ));
        let missing = hs(&claims(json!({})));
        assert!(matches!(
            verify(&cfg, &missing),
            Err(AuthError::WrongAudience)
        ));
    }

    #[test]
    fn audience_not_configured_but_present() {
        let token = hs(&claims(json!({"aud": "someone-else"})));
        assert!(verify(&hs_config(), &token).is_ok());
        let token = hs(&claims(json!({"aud": ["a", "b"]})));
        assert!(verify(&hs_config(), &token).is_ok());
    }

    #[test]
    fn alg_none_rejected() {
        let body = b64(&claims(json!({"scopes": ["operator.admin"]})));
        for alg in ["none", "None", "NONE"] {
            let header = b64(&json!({"alg": alg, "typ": "JWT"}));
            for sig in ["", "c2ln"] {
                let token = format!("{header}.{body}.{sig}");
                let err = verify(&hs_config(), &token).unwrap_err();
                assert!(
                    matches!(err, AuthError::AlgorithmNotAllowed | AuthError::Malformed),
                    "{alg}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn hs256_with_rsa_public_key_as_secret_rejected() {
        let cfg = pub_config("rsa-confusion.pub", testkeys::RSA_PUBLIC);
        let key = EncodingKey::from_secret(testkeys::RSA_PUBLIC.as_bytes());
        let token = sign(Algorithm::HS256, &key, &claims(json!({})));
        assert!(matches!(
            verify(&cfg, &token),
            Err(AuthError::AlgorithmNotAllowed)
        ));
        // Even when HS256 is explicitly listed the RSA key is never used as
        // an HMAC secret: listing it without a secret is a setup error ...
        let mut cfg = cfg;
        cfg.algorithms = vec!["HS256".into(), "RS256".into()];
        assert!(matches!(JwtVerifier::new(&cfg), Err(AuthError::Setup(_))));
        // ... and with a secret too, HS256 is checked against the secret only.
        cfg.secret = Some(SECRET.into());
        assert!(matches!(verify(&cfg, &token), Err(AuthError::BadSignature)));
    }

    #[test]
    fn algorithm_not_in_allow_list() {
        let mut cfg = hs_config();
        cfg.algorithms = vec!["HS512".into()];
        assert!(matches!(
            verify(&cfg, &hs(&claims(json!({})))),
            Err(AuthError::AlgorithmNotAllowed)
        ));
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let token = sign(Algorithm::HS512, &key, &claims(json!({})));
        assert!(verify(&cfg, &token).is_ok());

        // An RS256 token against an HMAC-only configuration.
        let rsa = EncodingKey::from_rsa_pem(testkeys::RSA_PRIVATE.as_bytes()).unwrap();
        let token = sign(Algorithm::RS256, &rsa, &claims(json!({})));
        assert!(matches!(
            verify(&hs_config(), &token),
            Err(AuthError::AlgorithmNotAllowed)
        ));
    }

    #[test]
    fn unknown_algorithm_in_config_is_setup_error() {
        let mut cfg = hs_config();
        cfg.algorithms = vec!["HS1024".into()];
        let err = JwtVerifier::new(&cfg).unwrap_err();
        assert!(err.to_string().contains("auth.jwt.algorithms"));
    }

    #[test]
    fn scope_string_and_scopes_array() {
        let token = hs(&claims(json!({
            "scopes": null,
            "scope": "openid operator.write operator.approvals",
        })));
        let id = verify(&hs_config(), &token).unwrap();
        assert!(id.scopes.contains(Scope::Write));
        assert!(id.scopes.contains(Scope::Approvals));
        assert!(!id.scopes.contains(Scope::Read));

        let token = hs(&claims(json!({"scopes": ["operator.admin"]})));
        assert!(verify(&hs_config(), &token).unwrap().is_admin());

        let token = hs(&claims(json!({"scopes": "operator.admin"})));
        assert!(matches!(
            verify(&hs_config(), &token),
            Err(AuthError::InvalidClaims(_))
        ));
    }

    #[test]
    fn role_node_and_channels() {
        let token = hs(&claims(json!({"role": "node", "channels": ["private:a*"]})));
        let id = verify(&hs_config(), &token).unwrap();
        assert_eq!(id.role, Role::Node);
        assert!(id.may_use_channel_claim("private:abc"));
        assert!(!id.may_use_channel_claim("private:b"));

        let token = hs(&claims(json!({"role": "root"})));
        assert!(matches!(
            verify(&hs_config(), &token),
            Err(AuthError::InvalidClaims(_))
        ));
    }

    #[test]
    fn sub_required() {
        let long = "x".repeat(257);
        for bad in [
            json!({"sub": ""}),
            json!({"sub": 7}),
            json!({"sub": "alice\nadmin"}),
            json!({"sub": "a\u{0}b"}),
            json!({"sub": "bell\u{7}"}),
            json!({"sub": long}),
        ] {
            let token = hs(&claims(bad));
            assert!(matches!(
                verify(&hs_config(), &token),
                Err(AuthError::InvalidClaims(_))
            ));
        }
        let token = hs(&json!({"exp": unix_now() + 60}));
        assert!(matches!(
            verify(&hs_config(), &token),
            Err(AuthError::InvalidClaims(_))
        ));
    }

    #[test]
    fn malformed_tokens() {
        for token in ["a.b", "a.b.c.d", "!!!.e30.c2ln", "e30.e30.c2ln"] {
            let err = verify(&hs_config(), token).unwrap_err();
            assert!(matches!(err, AuthError::Malformed), "{token}: {err:?}");
        }
    }

    #[test]
    fn looks_like_jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJi.c2ln"));
        assert!(!looks_like_jwt("plain-token"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a+b.c.d"));
    }

    #[test]
    fn setup_errors() {
        let cfg = JwtConfig::default();
        assert!(matches!(JwtVerifier::new(&cfg), Err(AuthError::Setup(_))));
        let cfg = JwtConfig {
            secret: Some(String::new()),
            ..JwtConfig::default()
        };
        assert!(matches!(JwtVerifier::new(&cfg), Err(AuthError::Setup(_))));
        let cfg = pub_config("garbage.pub", "not a pem");
        let err = JwtVerifier::new(&cfg).unwrap_err();
        assert!(err.to_string().contains("auth.jwt.public_key"), "{err}");
        let cfg = pub_config("private-as-public.pem", testkeys::RSA_PRIVATE);
        let err = JwtVerifier::new(&cfg).unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        let cfg = JwtConfig {
            public_key: Some(PathBuf::from("/nonexistent/switchyard.pub")),
            ..JwtConfig::default()
        };
        let err = JwtVerifier::new(&cfg).unwrap_err();
        assert!(err.to_string().contains("auth.jwt.public_key"), "{err}");
    }

    fn mint_claims() -> MintClaims {
        MintClaims {
            sub: "cli".into(),
            role: Role::Operator,
            scopes: vec!["operator.admin".into()],
            channels: vec!["private:*".into()],
            ttl_secs: 300,
            issuer: None,
            audience: Some("switchyard".into()),
        }
    }

    fn round_trip(mut cfg: JwtConfig, expected_alg: &str) {
        cfg.issuer = Some("switchyard-cli".into());
        cfg.audience = Some("switchyard".into());
        let token = mint(&cfg, &mint_claims()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(format!("{:?}", header.alg), expected_alg);
        let id = verify(&cfg, &token).unwrap();
        assert_eq!(id.sub, "cli");
        assert!(id.is_admin());
        assert_eq!(id.channels, vec!["private:*".to_string()]);
        let exp = id.expires_at.unwrap();
        assert!(exp > unix_now() + 200 && exp <= unix_now() + 300);
    }

    #[test]
    fn mint_round_trip_hs256() {
        round_trip(hs_config(), "HS256");
    }

    #[test]
    fn mint_round_trip_rs256() {
        let mut cfg = pub_config("rsa-mint.pub", testkeys::RSA_PUBLIC);
        cfg.private_key = Some(key_file("rsa-mint.pem", testkeys::RSA_PRIVATE));
        round_trip(cfg, "RS256");
    }

    #[test]
    fn mint_round_trip_es256() {
        let mut cfg = pub_config("ec-mint.pub", testkeys::EC_PUBLIC);
        cfg.private_key = Some(key_file("ec-mint.pem", testkeys::EC_PRIVATE));
        round_trip(cfg, "ES256");
    }

    #[test]
    fn mint_round_trip_eddsa() {
        let mut cfg = pub_config("ed-mint.pub", testkeys::ED_PUBLIC);
        cfg.private_key = Some(key_file("ed-mint.pem", testkeys::ED_PRIVATE));
        round_trip(cfg, "EdDSA");
    }

    #[test]
    fn mint_respects_allow_list() {
        let mut cfg = hs_config();
        cfg.algorithms = vec!["HS512".into()];
        round_trip(cfg, "HS512");
    }

    #[test]
    fn mint_errors() {
        let err = mint(&JwtConfig::default(), &mint_claims()).unwrap_err();
        assert!(matches!(err, AuthError::Setup(_)));
        let mut bad = mint_claims();
        bad.scopes = vec!["operator.root".into()];
        assert!(matches!(
            mint(&hs_config(), &bad),
            Err(AuthError::InvalidClaims(_))
        ));
        let cfg = JwtConfig {
            private_key: Some(key_file("pub-as-private.pem", testkeys::ED_PUBLIC)),
            ..JwtConfig::default()
        };
        assert!(matches!(
            mint(&cfg, &mint_claims()),
            Err(AuthError::Setup(_))
        ));
    }
}
