//! Authentication and authorisation end to end over real sockets: every
//! credential carrier × mode, JWT negatives (signature, time claims,
//! `alg: none`, audience/issuer, HS/RS confusion), asymmetric keys, mode
//! `none`, the scope table, Origin / rate / lock-out guards behind (and
//! without) trusted proxies, the handshake deadline and JWT expiry.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;
use switchyard::config::{AuthMode, Config, Window};

const UNAUTHORIZED: i64 = -32000;
const FORBIDDEN: i64 = -32003;
const RATE_LIMITED: i64 = -32004;
const OTHER_SECRET: &str = "another-secret-0123456789abcdef0123456789";

// ------------------------------------------------------------------ helpers

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture readable")
}

/// The common config with a failed-auth window that negative tests cannot
/// exhaust (every bad attempt from 127.0.0.1 counts).
fn lenient() -> Config {
    let mut c = config();
    c.rate_limits.auth_failures_per_ip = Window::new(100_000, 60_000);
    c
}

fn claims(sub: &str, extra: Value) -> Value {
    let mut base = json!({
        "sub": sub,
        "scopes": ["operator.read"],
        "exp": now_secs() + 600,
    });
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).expect("encode")
}

fn hs256_with(secret: &[u8], claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret), claims)
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// `{"alg":"none"}` header, admin claims, empty signature.
fn alg_none_token() -> String {
    let header = b64(&json!({"alg": "none", "typ": "JWT"}));
    let body = b64(&claims("mallory", json!({"scopes": ["operator.admin"]})));
    format!("{header}.{body}.")
}

async fn upgrade(server: &TestServer, headers: &[(&str, &str)]) -> Result<Ws, ConnectError> {
    Ws::connect_with(&server.url("/ws"), headers).await
}

/// The HTTP status the upgrade was refused with (panics if it succeeded).
fn refused(result: Result<Ws, ConnectError>, what: &str) -> (u16, Option<String>) {
    match result {
        Ok(_) => panic!("{what}: upgrade should have been refused"),
        Err(ConnectError::Http(status, retry)) => (status, retry),
        Err(ConnectError::Other(e)) => panic!("{what}: refused without an HTTP status: {e}"),
    }
}

fn opened(result: Result<Ws, ConnectError>, what: &str) -> Ws {
    match result {
        Ok(ws) => ws,
        Err(e) => panic!("{what}: upgrade should succeed, got {e:?}"),
    }
}

/// Reads `welcome` and returns its `authenticated` flag.
async fn welcome_authenticated(ws: &mut Ws) -> bool {
    let welcome = ws.expect_push("welcome").await;
    welcome["authenticated"]
        .as_bool()
        .unwrap_or_else(|| panic!("welcome.authenticated is a bool: {welcome}"))
}

/// An unauthenticated connection (welcome already read).
async fn anonymous(server: &TestServer) -> Ws {
    let mut ws = opened(upgrade(server, &[]).await, "anonymous");
    assert!(!welcome_authenticated(&mut ws).await);
    ws
}

fn client_info() -> Value {
    json!({"name": "auth-test", "version": "1.0.0", "platform": "test"})
}

/// Asserts `token` is refused at the upgrade (401) and in-band, both with
/// `connect {auth}` and with `auth` (-32000).
async fn assert_token_rejected(server: &TestServer, token: &str, what: &str) {
    let (status, _) = refused(
        upgrade(server, &[("authorization", &bearer(token))]).await,
        what,
    );
    assert_eq!(status, 401, "{what}: bearer at upgrade");
    let mut ws = anonymous(server).await;
    let reply = ws
        .request(
            "connect",
            json!({"client": client_info(), "auth": {"token": token}}),
        )
        .await;
    assert_eq!(
        reply["error"]["code"], UNAUTHORIZED,
        "{what}: connect {{auth}}: {reply}"
    );
    let reply = ws.request("auth", json!({"token": token})).await;
    assert_eq!(
        reply["error"]["code"], UNAUTHORIZED,
        "{what}: auth: {reply}"
    );
    // Still unauthenticated afterwards.
    assert_eq!(
        ws.error_code("status", json!({})).await,
        UNAUTHORIZED,
        "{what}"
    );
}

/// Asserts `token` is accepted at the upgrade and in-band.
async fn assert_token_accepted(server: &TestServer, token: &str, sub: &str, what: &str) {
    let mut ws = opened(
        upgrade(server, &[("authorization", &bearer(token))]).await,
        what,
    );
    assert!(welcome_authenticated(&mut ws).await, "{what}: upgrade");
    let mut ws = anonymous(server).await;
    let result = ws.call("auth", json!({"token": token})).await;
    assert_eq!(result["authenticated"], true, "{what}: {result}");
    assert_eq!(result["sub"], sub, "{what}: {result}");
}

// -------------------------------------------------------------- auth matrix

#[tokio::test]
async fn carriers_at_upgrade_accept_good_and_refuse_bad_credentials() {
    let server = TestServer::start(lenient()).await;
    let good_jwt = jwt(claims("jwt-user", json!({})));
    let bad_jwt = hs256_with(OTHER_SECRET.as_bytes(), &claims("jwt-user", json!({})));
    let bearer_like = [
        (
            "static token",
            ADMIN.to_owned(),
            "wrong-token-0123456789abcdef".to_owned(),
        ),
        ("jwt", good_jwt, bad_jwt),
    ];
    for (mode, good, bad) in &bearer_like {
        // Authorization: Bearer
        let mut ws = opened(
            upgrade(&server, &[("authorization", &bearer(good))]).await,
            mode,
        );
        assert!(
            welcome_authenticated(&mut ws).await,
            "{mode}: bearer header"
        );
        let (status, _) = refused(
            upgrade(&server, &[("authorization", &bearer(bad))]).await,
            mode,
        );
        assert_eq!(status, 401, "{mode}: bad bearer header");

        // ?token=
        let url = server.url(&format!("/ws?token={good}"));
        let mut ws = opened(Ws::connect(&url).await, mode);
        assert!(welcome_authenticated(&mut ws).await, "{mode}: query token");
        let url = server.url(&format!("/ws?token={bad}"));
        let (status, _) = refused(Ws::connect(&url).await, mode);
        assert_eq!(status, 401, "{mode}: bad query token");

        // Sec-WebSocket-Protocol: bearer.<t>, switchyard.v1
        let offer = format!("bearer.{good}, switchyard.v1");
        let mut ws = opened(
            upgrade(&server, &[("sec-websocket-protocol", &offer)]).await,
            mode,
        );
        assert_eq!(
            ws.protocol.as_deref(),
            Some("switchyard.v1"),
            "{mode}: selected protocol"
        );
        assert!(
            welcome_authenticated(&mut ws).await,
            "{mode}: subprotocol token"
        );
        let offer = format!("bearer.{bad}, switchyard.v1");
        let (status, _) = refused(
            upgrade(&server, &[("sec-websocket-protocol", &offer)]).await,
            mode,
        );
        assert_eq!(status, 401, "{mode}: bad subprotocol token");
    }

    // X-API-Key (api key mode only).
    let mut ws = opened(upgrade(&server, &[("x-api-key", API_KEY)]).await, "api key");
    assert!(welcome_authenticated(&mut ws).await, "x-api-key");
    assert_eq!(
        ws.call("clients.list", json!({})).await["count"]
            .as_u64()
            .map(|n| n > 0),
        Some(true)
    );
    let (status, _) = refused(
        upgrade(&server, &[("x-api-key", "wrong-key-0123456789abcdef")]).await,
        "key",
    );
    assert_eq!(status, 401, "bad x-api-key");

    // No credential at all: opens unauthenticated.
    let mut ws = anonymous(&server).await;
    assert_eq!(ws.error_code("status", json!({})).await, UNAUTHORIZED);
}

#[tokio::test]
async fn in_band_connect_and_auth_for_every_mode() {
    let server = TestServer::start(lenient()).await;
    let good_jwt = jwt(claims("jwt-user", json!({})));
    let bad_jwt = hs256_with(OTHER_SECRET.as_bytes(), &claims("jwt-user", json!({})));
    let cases = [
        (
            "static token",
            json!({"token": READER}),
            json!({"token": "wrong-token-0123456789abcd"}),
            "reader",
        ),
        (
            "jwt",
            json!({"token": good_jwt}),
            json!({"token": bad_jwt}),
            "jwt-user",
        ),
        (
            "api key",
            json!({"apiKey": API_KEY}),
            json!({"apiKey": "wrong-key-0123456789abcdef"}),
            "service",
        ),
        (
            "password",
            json!({"password": PASSWORD}),
            json!({"password": "wrong horse battery"}),
            "password",
        ),
    ];
    for (mode, good, bad, sub) in &cases {
        // connect {auth}
        let mut ws = anonymous(&server).await;
        let reply = ws
            .request("connect", json!({"client": client_info(), "auth": bad}))
            .await;
        assert_eq!(
            reply["error"]["code"], UNAUTHORIZED,
            "{mode}: bad connect: {reply}"
        );
        let hello = ws
            .call("connect", json!({"client": client_info(), "auth": good}))
            .await;
        assert_eq!(hello["authenticated"], true, "{mode}: {hello}");
        assert_eq!(hello["role"], "operator", "{mode}: {hello}");
        assert!(
            hello["scopes"].as_array().is_some_and(|s| !s.is_empty()),
            "{mode}: {hello}"
        );
        assert!(
            ws.call("status", json!({})).await["nodeId"].is_string(),
            "{mode}"
        );

        // auth
        let mut ws = anonymous(&server).await;
        let reply = ws.request("auth", bad.clone()).await;
        assert_eq!(
            reply["error"]["code"], UNAUTHORIZED,
            "{mode}: bad auth: {reply}"
        );
        assert_eq!(
            ws.error_code("status", json!({})).await,
            UNAUTHORIZED,
            "{mode}"
        );
        let result = ws.call("auth", good.clone()).await;
        assert_eq!(result["authenticated"], true, "{mode}: {result}");
        assert_eq!(result["sub"], *sub, "{mode}: {result}");
        assert_eq!(result["role"], "operator", "{mode}: {result}");
        assert!(
            ws.call("status", json!({})).await["nodeId"].is_string(),
            "{mode}"
        );
    }
    // The JWT's exp is reported; static credentials have none.
    let mut ws = anonymous(&server).await;
    let result = ws
        .call("auth", json!({"token": jwt(claims("jwt-user", json!({})))}))
        .await;
    assert!(
        result["expiresAt"].as_u64().is_some_and(|e| e > now_secs()),
        "{result}"
    );
    let mut ws = anonymous(&server).await;
    assert_eq!(
        ws.call("auth", json!({"token": ADMIN})).await["expiresAt"],
        Value::Null
    );
}

// ------------------------------------------------------------ JWT negatives

#[tokio::test]
async fn jwt_negatives_are_rejected_at_upgrade_and_in_band() {
    let server = TestServer::start(lenient()).await;
    let now = now_secs();
    let cases = [
        (
            "bad signature",
            hs256_with(OTHER_SECRET.as_bytes(), &claims("eve", json!({}))),
        ),
        ("expired", jwt(claims("eve", json!({"exp": now - 60})))),
        (
            "nbf in the future",
            jwt(claims("eve", json!({"nbf": now + 600}))),
        ),
        ("alg none", alg_none_token()),
        ("tampered payload", {
            let token = jwt(claims("eve", json!({})));
            let parts: Vec<&str> = token.split('.').collect();
            let forged = b64(&claims("eve", json!({"scopes": ["operator.admin"]})));
            format!("{}.{forged}.{}", parts[0], parts[2])
        }),
    ];
    for (what, token) in &cases {
        assert_token_rejected(&server, token, what).await;
    }
    // Control: the same shape, correctly signed and current, is accepted.
    assert_token_accepted(&server, &jwt(claims("eve", json!({}))), "eve", "valid").await;
}

#[tokio::test]
async fn jwt_audience_and_issuer_are_enforced() {
    let mut c = lenient();
    c.auth.jwt.audience = Some("switchyard".into());
    c.auth.jwt.issuer = Some("https://issuer.example".into());
    let server = TestServer::start(c).await;
    let both = json!({"aud": "switchyard", "iss": "https://issuer.example"});
    assert_token_accepted(&server, &jwt(claims("ann", both)), "ann", "aud+iss").await;
    let cases = [
        (
            "wrong audience",
            json!({"aud": "other", "iss": "https://issuer.example"}),
        ),
        (
            "wrong issuer",
            json!({"aud": "switchyard", "iss": "https://evil.example"}),
        ),
        ("missing audience", json!({"iss": "https://issuer.example"})),
        ("missing issuer", json!({"aud": "switchyard"})),
    ];
    for (what, extra) in cases {
        assert_token_rejected(&server, &jwt(claims("ann", extra)), what).await;
    }
}

fn public_key_only(public: &str) -> Config {
    let mut c = lenient();
    c.auth.modes = vec![AuthMode::Jwt];
    c.auth.jwt.secret = None;
    c.auth.jwt.public_key = Some(fixture(public));
    c
}

#[tokio::test]
async fn rsa_key_server_rejects_hs_rs_confusion_and_accepts_rs256() {
    let server = TestServer::start(public_key_only("rsa_public.pem")).await;
    let public_pem = fixture_bytes("rsa_public.pem");
    let confused = hs256_with(
        &public_pem,
        &claims("mallory", json!({"scopes": ["operator.admin"]})),
    );
    assert_token_rejected(&server, &confused, "HS256 signed with the RSA public key").await;
    let hs = jwt(claims("mallory", json!({})));
    assert_token_rejected(&server, &hs, "HS256 with a secret the server does not have").await;
    assert_token_rejected(&server, &alg_none_token(), "alg none").await;
    // A static token is not accepted in a jwt-only configuration.
    let (status, _) = refused(
        upgrade(&server, &[("authorization", &bearer(ADMIN))]).await,
        "token",
    );
    assert_eq!(status, 401);

    let key = EncodingKey::from_rsa_pem(&fixture_bytes("rsa_private.pem")).expect("rsa key");
    let good = sign(Algorithm::RS256, &key, &claims("rs-user", json!({})));
    assert_token_accepted(&server, &good, "rs-user", "RS256").await;
    // RS256 signed by another RSA key is refused.
    let other =
        EncodingKey::from_rsa_pem(&fixture_bytes("rsa_other_private.pem")).expect("rsa key");
    let foreign = sign(Algorithm::RS256, &other, &claims("rs-user", json!({})));
    assert_token_rejected(&server, &foreign, "RS256 signed by another key").await;
    // A token using the server's key but a different RSA algorithm still
    // verifies (same key family), so PS256 is accepted too.
    let ps = sign(Algorithm::PS256, &key, &claims("ps-user", json!({})));
    assert_token_accepted(&server, &ps, "ps-user", "PS256").await;
}

#[tokio::test]
async fn es256_and_eddsa_accepted_with_matching_public_keys() {
    let ec = TestServer::start(public_key_only("ec_public.pem")).await;
    let key = EncodingKey::from_ec_pem(&fixture_bytes("ec_private.pem")).expect("ec key");
    let token = sign(Algorithm::ES256, &key, &claims("ec-user", json!({})));
    assert_token_accepted(&ec, &token, "ec-user", "ES256").await;
    assert_token_rejected(
        &ec,
        &jwt(claims("ec-user", json!({}))),
        "HS256 on an EC server",
    )
    .await;

    let ed = TestServer::start(public_key_only("ed_public.pem")).await;
    let key = EncodingKey::from_ed_pem(&fixture_bytes("ed_private.pem")).expect("ed key");
    let token = sign(Algorithm::EdDSA, &key, &claims("ed-user", json!({})));
    assert_token_accepted(&ed, &token, "ed-user", "EdDSA").await;
    // An ES256 token is not accepted by the Ed25519 server.
    let ec_key = EncodingKey::from_ec_pem(&fixture_bytes("ec_private.pem")).expect("ec key");
    let other = sign(Algorithm::ES256, &ec_key, &claims("ed-user", json!({})));
    assert_token_rejected(&ed, &other, "ES256 on an EdDSA server").await;
}

// ---------------------------------------------------------------- mode none

#[tokio::test]
async fn mode_none_connects_authenticated_with_none_scopes() {
    let mut c = config();
    c.auth.modes = vec![AuthMode::None];
    let server = TestServer::start(c).await;
    let mut ws = opened(upgrade(&server, &[]).await, "none");
    let welcome = ws.expect_push("welcome").await;
    assert_eq!(welcome["authenticated"], true, "{welcome}");
    assert_eq!(welcome["authRequired"], false, "{welcome}");
    assert!(ws.call("status", json!({})).await["nodeId"].is_string());
    let delivered = ws
        .call(
            "publish",
            json!({"channel": "public:none", "event": "e", "data": {}}),
        )
        .await;
    assert!(delivered["delivered"].is_u64(), "{delivered}");
    for method in ["clients.list", "logs.tail"] {
        assert_eq!(
            ws.error_code(method, json!({})).await,
            FORBIDDEN,
            "{method}"
        );
    }
    let kick = json!({"connId": "nobody"});
    assert_eq!(ws.error_code("client.kick", kick).await, FORBIDDEN);

    // Narrower none_scopes are honoured.
    let mut c = config();
    c.auth.modes = vec![AuthMode::None];
    c.auth.none_scopes = vec!["operator.read".into()];
    let server = TestServer::start(c).await;
    let mut ws = opened(upgrade(&server, &[]).await, "none read-only");
    assert!(welcome_authenticated(&mut ws).await);
    assert!(ws.call("status", json!({})).await["nodeId"].is_string());
    let publish = json!({"channel": "public:none", "event": "e", "data": {}});
    assert_eq!(ws.error_code("publish", publish).await, FORBIDDEN);

    // none_scopes without operator.read: status is refused.
    let mut c = config();
    c.auth.modes = vec![AuthMode::None];
    c.auth.none_scopes = vec!["operator.approvals".into()];
    let server = TestServer::start(c).await;
    let mut ws = opened(upgrade(&server, &[]).await, "none approvals-only");
    assert!(welcome_authenticated(&mut ws).await);
    assert_eq!(ws.error_code("status", json!({})).await, FORBIDDEN);
    assert_eq!(ws.call("ping", json!({})).await["pong"], true);
}

// ---------------------------------------------------------- scope matrix

#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    Any,
    Authenticated,
    Read,
    Write,
    Admin,
}

/// Every method (and alias) with valid params, in an order that succeeds
/// for an admin. `token` is the caller's own credential for `auth`.
fn method_table(token: &str) -> Vec<(&'static str, Value, Need)> {
    use Need::*;
    let shared = json!({"sessionId": "s-shared"});
    let alias = json!({"sessionId": "s-alias"});
    vec![
        ("ping", json!({}), Any),
        ("system.ping", json!({}), Any),
        ("connect", json!({"client": client_info()}), Any),
        ("health", json!({}), Read),
        ("status", json!({}), Read),
        ("system.presence", json!({}), Read),
        ("clients.list", json!({}), Admin),
        ("logs.tail", json!({"limit": 5}), Admin),
        (
            "client.kick",
            json!({"connId": "no-such-conn", "reason": "test"}),
            Admin,
        ),
        (
            "subscribe",
            json!({"channels": ["public:auth"]}),
            Authenticated,
        ),
        (
            "notify.subscribe",
            json!({"channels": ["public:auth2"]}),
            Authenticated,
        ),
        (
            "presence.get",
            json!({"channel": "public:auth"}),
            Authenticated,
        ),
        (
            "unsubscribe",
            json!({"channels": ["public:auth"]}),
            Authenticated,
        ),
        (
            "notify.unsubscribe",
            json!({"channels": ["public:auth2"]}),
            Authenticated,
        ),
        (
            "publish",
            json!({"channel": "public:auth", "event": "e", "data": {}}),
            Write,
        ),
        ("session.create", json!({"sessionId": "s-own"}), Write),
        ("session.join", shared.clone(), Write),
        ("session.get", shared.clone(), Read),
        (
            "session.patch",
            json!({"sessionId": "s-shared", "meta": {"k": 1}}),
            Write,
        ),
        ("session.list", json!({}), Read),
        (
            "session.send",
            json!({"sessionId": "s-shared", "event": "e", "data": {}}),
            Write,
        ),
        ("session.leave", shared.clone(), Write),
        ("session.close", shared, Write),
        ("sessions.create", json!({"sessionId": "s-own2"}), Write),
        ("sessions.join", alias.clone(), Write),
        ("sessions.get", alias.clone(), Read),
        (
            "sessions.patch",
            json!({"sessionId": "s-alias", "meta": {"k": 2}}),
            Write,
        ),
        ("sessions.list", json!({}), Read),
        (
            "sessions.send",
            json!({"sessionId": "s-alias", "event": "e", "data": {}}),
            Write,
        ),
        ("sessions.leave", alias.clone(), Write),
        ("sessions.close", alias, Write),
        (
            "node.invoke",
            json!({"nodeId": "no-such-node", "command": "echo", "params": {}, "timeoutMs": 200}),
            Write,
        ),
        ("auth", json!({"token": token}), Any),
    ]
}

/// Runs the table on `ws`; returns the mismatches.
async fn run_table(
    ws: &mut Ws,
    who: &str,
    token: &str,
    expect: impl Fn(Need) -> Option<i64>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for (method, params, need) in method_table(token) {
        let reply = ws.request(method, params).await;
        let code = reply["error"]["code"].as_i64();
        let ok = match expect(need) {
            Some(denied) => code == Some(denied),
            None => !matches!(code, Some(UNAUTHORIZED | FORBIDDEN)),
        };
        if !ok {
            wrong.push(format!(
                "{who} {method} ({need:?}): expected {:?}, got {reply}",
                expect(need)
            ));
        }
    }
    wrong
}

#[tokio::test]
async fn scope_table_is_enforced_for_every_method() {
    let server = TestServer::default().await;
    // Sessions the non-admin callers act on; created by a writer.
    let mut writer = server.client(WRITER).await;
    writer
        .call("session.create", json!({"sessionId": "s-shared"}))
        .await;
    writer
        .call("session.create", json!({"sessionId": "s-alias"}))
        .await;

    let mut anon = anonymous(&server).await;
    let mut wrong = run_table(&mut anon, "unauthenticated", READER, |need| {
        (need != Need::Any).then_some(UNAUTHORIZED)
    })
    .await;

    let mut reader = server.client(READER).await;
    wrong.extend(
        run_table(&mut reader, "reader", READER, |need| {
            matches!(need, Need::Write | Need::Admin).then_some(FORBIDDEN)
        })
        .await,
    );

    let mut node = server.client(NODE).await;
    wrong.extend(
        run_table(&mut node, "node", NODE, |need| {
            matches!(need, Need::Read | Need::Write | Need::Admin).then_some(FORBIDDEN)
        })
        .await,
    );

    let mut approver = server.client(APPROVER).await;
    wrong.extend(
        run_table(&mut approver, "approver", APPROVER, |need| {
            matches!(need, Need::Read | Need::Write | Need::Admin).then_some(FORBIDDEN)
        })
        .await,
    );

    let mut admin = server.client(ADMIN).await;
    wrong.extend(run_table(&mut admin, "admin", ADMIN, |_| None).await);

    assert!(
        wrong.is_empty(),
        "scope decisions wrong:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn writer_may_write_but_not_administer() {
    let server = TestServer::default().await;
    let mut ws = server.client(WRITER).await;
    let publish = json!({"channel": "public:w", "event": "e", "data": {}});
    assert!(ws.call("publish", publish).await["delivered"].is_u64());
    ws.call("session.create", json!({"sessionId": "w1"})).await;
    for method in ["clients.list", "logs.tail"] {
        assert_eq!(
            ws.error_code(method, json!({})).await,
            FORBIDDEN,
            "{method}"
        );
    }
    assert_eq!(
        ws.error_code("client.kick", json!({"connId": "x"})).await,
        FORBIDDEN
    );
}

// ------------------------------------------------------------------- guards

#[tokio::test]
async fn origin_allow_list_with_wildcard() {
    let mut c = config();
    c.allowed_origins = vec!["https://*.example.com".into()];
    let server = TestServer::start(c).await;
    let auth = bearer(READER);
    let mut ws = opened(
        upgrade(
            &server,
            &[
                ("authorization", &auth),
                ("origin", "https://app.example.com"),
            ],
        )
        .await,
        "matching origin",
    );
    assert!(welcome_authenticated(&mut ws).await);
    for origin in [
        "https://evil.com",
        "https://example.com.evil.net",
        "http://app.example.com",
    ] {
        let (status, _) = refused(
            upgrade(&server, &[("authorization", &auth), ("origin", origin)]).await,
            origin,
        );
        assert_eq!(status, 403, "{origin}");
    }
    opened(
        upgrade(&server, &[("authorization", &auth)]).await,
        "no origin",
    );
}

#[tokio::test]
async fn origin_default_is_same_host_only() {
    let server = TestServer::default().await;
    let auth = bearer(READER);
    let same = format!("http://{}", server.addr);
    let mut ws = opened(
        upgrade(&server, &[("authorization", &auth), ("origin", &same)]).await,
        "same-host origin",
    );
    assert!(welcome_authenticated(&mut ws).await);
    let (status, _) = refused(
        upgrade(
            &server,
            &[("authorization", &auth), ("origin", "https://evil.example")],
        )
        .await,
        "foreign origin",
    );
    assert_eq!(status, 403);
    // Same host, different port is another origin.
    let other_port = format!("http://127.0.0.1:{}", server.addr.port().wrapping_add(1));
    let (status, _) = refused(
        upgrade(
            &server,
            &[("authorization", &auth), ("origin", &other_port)],
        )
        .await,
        "other port",
    );
    assert_eq!(status, 403);
    opened(
        upgrade(&server, &[("authorization", &auth)]).await,
        "no origin",
    );
}

#[tokio::test]
async fn failed_upgrades_lock_the_ip_out() {
    let mut c = config();
    c.rate_limits.auth_failures_per_ip = Window::new(3, 60_000);
    let server = TestServer::start(c).await;
    for i in 0..3 {
        let (status, _) = refused(
            upgrade(&server, &[("authorization", &bearer("wrong-token"))]).await,
            "bad",
        );
        assert_eq!(status, 401, "bad attempt {i}");
    }
    let (status, retry) = refused(
        upgrade(&server, &[("authorization", &bearer(ADMIN))]).await,
        "locked out",
    );
    assert_eq!(status, 429, "a good token is refused while locked out");
    let retry: u64 = retry
        .expect("Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry > 0 && retry <= 60, "Retry-After {retry}");
    // In-band authentication from the same IP is locked out too.
    let mut ws = anonymous(&server).await;
    let reply = ws.request("auth", json!({"token": ADMIN})).await;
    assert_eq!(reply["error"]["code"], RATE_LIMITED, "{reply}");
}

/// The lock-out must bound guesses even when they arrive together: of 20
/// concurrent bad upgrades with a limit of 3, at most 3 may be evaluated
/// (401); the rest must be refused with 429.
#[tokio::test]
async fn concurrent_bad_upgrades_cannot_exceed_the_lockout() {
    let mut c = config();
    c.rate_limits.auth_failures_per_ip = Window::new(3, 60_000);
    let server = TestServer::start(c).await;
    let url = server.url("/ws");
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                match Ws::connect_with(&url, &[("authorization", "Bearer wrong-token")]).await {
                    Err(ConnectError::Http(status, _)) => status,
                    Ok(_) => 101,
                    Err(ConnectError::Other(_)) => 0,
                }
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.expect("attempt task"));
    }
    let unauthorized = statuses.iter().filter(|&&s| s == 401).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(unauthorized + limited, 20, "{statuses:?}");
    assert!(
        unauthorized <= 3,
        "{unauthorized} bad credentials were evaluated: {statuses:?}"
    );
}

/// Many good clients behind one address connecting at once: each check
/// holds a slot only while it runs, so one refused because the others are
/// mid-check hears "retry in a second", not the window's length, and the
/// burst leaves no trace: afterwards the address still has its whole
/// allowance of failures.
#[tokio::test]
async fn concurrent_good_upgrades_are_refused_only_for_a_moment() {
    let mut c = config();
    c.rate_limits.auth_failures_per_ip = Window::new(2, 60_000);
    let server = TestServer::start(c).await;
    let url = server.url("/ws");
    let auth = bearer(ADMIN);
    let attempts: Vec<_> = (0..40)
        .map(|_| {
            let (url, auth) = (url.clone(), auth.clone());
            tokio::spawn(async move {
                match Ws::connect_with(&url, &[("authorization", &auth)]).await {
                    Ok(ws) => (101, None, Some(ws)),
                    Err(ConnectError::Http(status, retry)) => (status, retry, None),
                    Err(ConnectError::Other(e)) => panic!("upgrade failed: {e}"),
                }
            })
        })
        .collect();
    let mut opened = Vec::new();
    for attempt in attempts {
        let (status, retry, ws) = attempt.await.expect("attempt task");
        match status {
            101 => opened.extend(ws),
            429 => assert_eq!(
                retry.as_deref(),
                Some("1"),
                "refused while good checks ran: retry in a second"
            ),
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(!opened.is_empty(), "some of the burst got through");
    // Both failures of the allowance are still there, then the lock-out.
    for i in 0..2 {
        let (status, _) = refused(
            upgrade(&server, &[("authorization", &bearer("wrong-token"))]).await,
            "bad",
        );
        assert_eq!(status, 401, "bad attempt {i} is evaluated");
    }
    let (status, retry) = refused(
        upgrade(&server, &[("authorization", &auth)]).await,
        "locked",
    );
    assert_eq!(status, 429);
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!(retry > 50, "locked out by failures: Retry-After {retry}");
}

#[tokio::test]
async fn failed_in_band_auth_locks_the_ip_out() {
    let mut c = config();
    c.rate_limits.auth_failures_per_ip = Window::new(3, 60_000);
    let server = TestServer::start(c).await;
    let mut ws = anonymous(&server).await;
    for i in 0..3 {
        let reply = ws.request("auth", json!({"token": "wrong-token"})).await;
        assert_eq!(
            reply["error"]["code"], UNAUTHORIZED,
            "bad attempt {i}: {reply}"
        );
    }
    let reply = ws.request("auth", json!({"token": ADMIN})).await;
    assert_eq!(reply["error"]["code"], RATE_LIMITED, "{reply}");
    let retry = reply["error"]["data"]["retryAfterMs"].as_u64();
    assert!(retry.is_some_and(|ms| ms > 0 && ms <= 60_000), "{reply}");
    let reply = ws
        .request(
            "connect",
            json!({"client": client_info(), "auth": {"token": ADMIN}}),
        )
        .await;
    assert_eq!(reply["error"]["code"], RATE_LIMITED, "{reply}");
    // The upgrade shares the lock-out.
    let (status, retry) = refused(
        upgrade(&server, &[("authorization", &bearer(ADMIN))]).await,
        "ws",
    );
    assert_eq!(status, 429);
    assert!(retry.is_some(), "Retry-After header");
}

#[tokio::test]
async fn connection_attempts_per_ip_are_rate_limited() {
    let mut c = config();
    c.rate_limits.connect_per_ip = Window::new(2, 60_000);
    let server = TestServer::start(c).await;
    let _a = opened(
        upgrade(&server, &[("authorization", &bearer(READER))]).await,
        "first",
    );
    let _b = opened(upgrade(&server, &[]).await, "second");
    let (status, retry) = refused(
        upgrade(&server, &[("authorization", &bearer(ADMIN))]).await,
        "third",
    );
    assert_eq!(status, 429);
    assert!(retry.is_some(), "Retry-After header");
}

#[tokio::test]
async fn concurrent_connections_per_ip_are_capped() {
    let mut c = config();
    c.limits.max_connections_per_ip = 2;
    c.rate_limits.connect_per_ip = Window::new(100_000, 10_000);
    let server = TestServer::start(c).await;
    let auth = bearer(READER);
    let a = opened(upgrade(&server, &[("authorization", &auth)]).await, "first");
    let mut b = opened(
        upgrade(&server, &[("authorization", &auth)]).await,
        "second",
    );
    let (status, _) = refused(upgrade(&server, &[("authorization", &auth)]).await, "third");
    assert_eq!(status, 429);
    a.close().await;
    let slot: RefCell<Option<Ws>> = RefCell::new(None);
    let (slot_ref, auth_ref, server_ref) = (&slot, &auth, &server);
    let reconnected = eventually(move || async move {
        match upgrade(server_ref, &[("authorization", auth_ref)]).await {
            Ok(ws) => {
                *slot_ref.borrow_mut() = Some(ws);
                true
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(reconnected, "a slot frees up after a connection closed");
    let mut c = slot.into_inner().expect("connected");
    assert!(welcome_authenticated(&mut c).await);
    // The cap holds again with two open.
    let (status, _) = refused(upgrade(&server, &[("authorization", &auth)]).await, "again");
    assert_eq!(status, 429);
    assert_eq!(b.call("ping", json!({})).await["pong"], true);
}

#[tokio::test]
async fn lockout_is_per_forwarded_address_behind_a_trusted_proxy() {
    let mut c = config();
    c.rate_limits.auth_failures_per_ip = Window::new(3, 60_000);
    c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("cidr")];
    let server = TestServer::start(c).await;
    for _ in 0..3 {
        let headers = [
            ("authorization", "Bearer wrong-token"),
            ("x-forwarded-for", "10.0.0.1"),
        ];
        assert_eq!(refused(upgrade(&server, &headers).await, "bad").0, 401);
    }
    let good = bearer(ADMIN);
    let locked = [
        ("authorization", good.as_str()),
        ("x-forwarded-for", "10.0.0.1"),
    ];
    assert_eq!(refused(upgrade(&server, &locked).await, "10.0.0.1").0, 429);
    let other = [
        ("authorization", good.as_str()),
        ("x-forwarded-for", "10.0.0.2"),
    ];
    let mut ws = opened(upgrade(&server, &other).await, "10.0.0.2 is not locked");
    assert!(welcome_authenticated(&mut ws).await);
    // The proxy itself (no header) is not locked either.
    opened(
        upgrade(&server, &[("authorization", &good)]).await,
        "the proxy",
    );
    // In-band auth on a connection forwarded for 10.0.0.1 is locked out.
    let mut ws = opened(
        upgrade(&server, &[("x-forwarded-for", "10.0.0.1")]).await,
        "anon",
    );
    let reply = ws.request("auth", json!({"token": ADMIN})).await;
    assert_eq!(reply["error"]["code"], RATE_LIMITED, "{reply}");
}

#[tokio::test]
async fn forwarded_for_is_ignored_without_trusted_proxies() {
    let mut c = config();
    c.rate_limits.auth_failures_per_ip = Window::new(3, 60_000);
    let server = TestServer::start(c).await;
    for _ in 0..3 {
        let headers = [
            ("authorization", "Bearer wrong-token"),
            ("x-forwarded-for", "10.0.0.1"),
        ];
        assert_eq!(refused(upgrade(&server, &headers).await, "bad").0, 401);
    }
    let good = bearer(ADMIN);
    let other = [
        ("authorization", good.as_str()),
        ("x-forwarded-for", "10.0.0.2"),
    ];
    let (status, retry) = refused(upgrade(&server, &other).await, "same peer 127.0.0.1");
    assert_eq!(status, 429);
    assert!(retry.is_some());
}

// ------------------------------------------------------ handshake deadline

#[tokio::test]
async fn unauthenticated_connections_are_closed_after_the_handshake_timeout() {
    let mut c = config();
    c.limits.handshake_timeout_ms = 300;
    let server = TestServer::start(c).await;
    let mut idle = opened(upgrade(&server, &[]).await, "idle");
    let mut authed = anonymous(&server).await;
    assert_eq!(
        authed.call("auth", json!({"token": READER})).await["authenticated"],
        true
    );
    let mut connected = anonymous(&server).await;
    let hello = connected
        .call(
            "connect",
            json!({"client": client_info(), "auth": {"password": PASSWORD}}),
        )
        .await;
    assert_eq!(hello["authenticated"], true);
    let started = tokio::time::Instant::now();
    assert_eq!(idle.expect_close_code().await, 4001);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed near the deadline"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(authed.call("ping", json!({})).await["pong"], true);
    assert!(connected.call("status", json!({})).await["nodeId"].is_string());
    // A `connect` without credentials does not stop the clock.
    let mut hello_only = anonymous(&server).await;
    hello_only
        .call("connect", json!({"client": client_info()}))
        .await;
    assert_eq!(hello_only.expect_close_code().await, 4001);
}

// --------------------------------------------------------------- JWT expiry

#[tokio::test]
async fn jwt_expiry_closes_unless_refreshed() {
    let server = TestServer::default().await;
    let exp = now_secs() + 2;
    let short = jwt(claims("exp-user", json!({"exp": exp})));
    let mut expiring = server.client(&short).await;
    assert!(welcome_authenticated(&mut expiring).await);
    assert_eq!(expiring.call("ping", json!({})).await["pong"], true);

    let mut refreshed = server.client(&short).await;
    let longer = jwt(claims("exp-user", json!({"exp": now_secs() + 60})));
    let result = refreshed.call("auth", json!({"token": longer})).await;
    assert!(
        result["expiresAt"].as_u64().is_some_and(|e| e > exp + 30),
        "{result}"
    );

    let started = tokio::time::Instant::now();
    assert_eq!(expiring.expect_close_code().await, 4001);
    assert!(started.elapsed() <= Duration::from_secs(3), "closed at exp");
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    assert!(now_secs() > exp, "past the first token's exp");
    assert_eq!(refreshed.call("ping", json!({})).await["pong"], true);
    assert!(refreshed.call("status", json!({})).await["nodeId"].is_string());
}

/// A refresh to a token that expires sooner moves the connection's
/// deadline forward: it closes at the new `exp`, not the old one.
#[tokio::test]
async fn refresh_to_a_shorter_token_closes_at_its_expiry() {
    let server = TestServer::default().await;
    let long = jwt(claims("short-after", json!({"exp": now_secs() + 600})));
    let mut ws = server.client(&long).await;
    assert!(welcome_authenticated(&mut ws).await);
    let exp = now_secs() + 2;
    let short = jwt(claims("short-after", json!({"exp": exp})));
    let result = ws.call("auth", json!({"token": short})).await;
    assert_eq!(result["expiresAt"].as_u64(), Some(exp), "{result}");
    let started = tokio::time::Instant::now();
    assert_eq!(ws.expect_close_code().await, 4001);
    assert!(
        started.elapsed() <= Duration::from_secs(4),
        "closed at the shorter exp, after {:?}",
        started.elapsed()
    );
}

/// A validly signed JWT with a far-future `exp` (beyond u64 milliseconds)
/// must not break the connection.
#[tokio::test]
async fn jwt_with_far_future_exp_keeps_working() {
    let server = TestServer::default().await;
    let far = jwt(claims("far", json!({"exp": 100_000_000_000_000_000u64})));
    let bounded = Duration::from_secs(2);
    let mut ws = server.client(&far).await;
    assert!(welcome_authenticated(&mut ws).await);
    let reply = tokio::time::timeout(bounded, ws.request("ping", json!({})))
        .await
        .expect("ping answered on a connection authenticated with a far-future exp");
    assert_eq!(reply["result"]["pong"], true, "{reply}");

    let mut ws = anonymous(&server).await;
    let result = ws.call("auth", json!({"token": far})).await;
    assert_eq!(result["sub"], "far", "{result}");
    let reply = tokio::time::timeout(bounded, ws.request("status", json!({})))
        .await
        .expect("status answered after in-band auth with a far-future exp");
    assert!(reply["result"]["nodeId"].is_string(), "{reply}");
}

#[tokio::test]
async fn a_connection_cannot_switch_identity() {
    let server = TestServer::default().await;
    let mut ws = server.client(ADMIN).await;
    assert_eq!(
        ws.error_code("auth", json!({"token": READER})).await,
        FORBIDDEN
    );
    let reply = ws
        .request(
            "connect",
            json!({"client": client_info(), "auth": {"token": READER}}),
        )
        .await;
    assert_eq!(reply["error"]["code"], FORBIDDEN, "{reply}");
    // Still the admin.
    assert!(ws.call("clients.list", json!({})).await["count"].is_u64());
    // Re-presenting the same identity is fine.
    assert_eq!(
        ws.call("auth", json!({"token": ADMIN})).await["sub"],
        "admin"
    );
    // In-band: first auth as reader, then admin is refused; still a reader.
    let mut ws = anonymous(&server).await;
    ws.call("auth", json!({"token": READER})).await;
    assert_eq!(
        ws.error_code("auth", json!({"token": ADMIN})).await,
        FORBIDDEN
    );
    assert_eq!(ws.error_code("clients.list", json!({})).await, FORBIDDEN);
}

/// Identities have one name space: a JWT that names a configured
/// credential (`sub: "writer"`, the static token's name) is refused rather
/// than acting as it, and so is a `sub` with control characters; the
/// credential's own sessions stay its own.
#[tokio::test]
async fn jwts_cannot_take_a_configured_credentials_name() {
    let server = TestServer::start(lenient()).await;
    let mut owner = server.client(WRITER).await;
    owner
        .call("session.create", json!({"sessionId": "writers-own"}))
        .await;
    for sub in ["writer", "admin", "service", "password"] {
        assert_token_rejected(&server, &writer_jwt(sub), &format!("jwt sub {sub}")).await;
    }
    for sub in ["alice\nwriter", "alice\u{0}", "\u{1b}[31mred"] {
        assert_token_rejected(&server, &writer_jwt(sub), &format!("jwt sub {sub:?}")).await;
    }
    // An honest JWT user is still welcome, and sees nothing of the writer's.
    let mut alice = as_user(&server, "alice").await;
    assert_eq!(
        alice
            .error_code("session.get", json!({"sessionId": "writers-own"}))
            .await,
        -32001
    );
}

/// Admins may act as nodes: an admin connection that asks for role `node`
/// (credentials at the upgrade or in `connect`) is one, scopes unchanged,
/// and may register agents; other operators may not, nor may a node pass
/// as an operator.
#[tokio::test]
async fn admins_may_connect_as_nodes_and_others_keep_their_role() {
    let server = TestServer::default().await;
    let mut upgraded = server.client(ADMIN).await;
    let hello = upgraded
        .call("connect", json!({"client": client_info(), "role": "node"}))
        .await;
    assert_eq!(hello["role"], "node", "{hello}");
    assert!(
        hello["scopes"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("operator.admin"))),
        "{hello}"
    );
    let registered = upgraded
        .call("agent.register", json!({"agentId": "admin-echo"}))
        .await;
    assert!(registered.is_object(), "{registered}");

    let mut in_band = anonymous(&server).await;
    let hello = in_band
        .call(
            "connect",
            json!({"client": client_info(), "role": "node", "auth": {"token": ADMIN}}),
        )
        .await;
    assert_eq!(hello["role"], "node", "{hello}");

    let mut writer = server.client(WRITER).await;
    let reply = writer
        .request("connect", json!({"client": client_info(), "role": "node"}))
        .await;
    assert_eq!(reply["error"]["code"], -32003, "{reply}");
    assert_eq!(
        writer
            .error_code("agent.register", json!({"agentId": "w"}))
            .await,
        -32003
    );
    let mut node = server.client(NODE).await;
    let reply = node
        .request(
            "connect",
            json!({"client": client_info(), "role": "operator"}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32003, "{reply}");
}
