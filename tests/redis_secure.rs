//! Redis behind TLS and ACL users, on real `redis-server` processes that
//! listen on TLS ports only (`--port 0`), so every connection that works
//! is a TLS one: a single server (also with mutual TLS), a three-master
//! Redis Cluster (`rediss-cluster://`) and a Sentinel with its master
//! (`rediss-sentinel://`, TLS to both). The gateway's Redis user has
//! exactly the ACL that docs/security.md recommends, and every test ends
//! by checking that Redis refused it nothing (`ACL LOG`).
//!
//! The certificates (a throwaway CA, a server certificate for 127.0.0.1
//! and localhost, a client certificate) are made per test with the
//! openssl CLI. A wrong password or a server certificate the gateway does
//! not trust stops the start quickly with an error that says so and never
//! holds the password, neither in the error nor in the logs at trace.

mod common;
#[path = "redis_secure/servers.rs"]
mod servers;

use common::*;
use serde_json::json;
use servers::{
    ACL, PASSWORD, Pki, SENTINEL_ACL, SENTINEL_PASSWORD, SENTINEL_USER, SecureRedis, USER,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchyard::config::{Config, RedisTlsConfig};

/// The shared test config on `url` with `tls`, and cluster timers short.
fn secure_config(url: &str, tls: RedisTlsConfig) -> Config {
    let mut c = config();
    c.redis_url = Some(url.to_owned());
    c.redis_tls = tls;
    c.limits.node_ttl_ms = instance::NODE_TTL.as_millis() as u64;
    c.limits.presence_tick_ms = 200;
    c
}

/// Two instances on `config`: a publish on one reaches a subscriber on the
/// other, and a session made on one is read, and sent to, from the other.
/// Then Redis must have refused the gateway's user nothing.
async fn two_instances_work_as_one(redis: &SecureRedis, config: Config) {
    let a = TestServer::start_on(config.clone()).await;
    let b = TestServer::start_on(config).await;
    let mut sub_b = b.client(READER).await;
    let mut writer_a = a.client(WRITER).await;
    sub_b.call("subscribe", json!({"channels": ["news"]})).await;
    let r = writer_a
        .call(
            "publish",
            json!({"channel": "news", "event": "e1", "data": {"n": 1}}),
        )
        .await;
    assert_eq!(r["delivered"], 1, "{r}");
    assert_notify(
        &notify_on(&mut sub_b, "news").await,
        "news",
        "e1",
        &json!({"n": 1}),
    );

    let owner = conn_id(&mut writer_a).await;
    writer_a
        .call(
            "session.create",
            json!({"sessionId": "tls", "meta": {"k": 1}}),
        )
        .await;
    let mut admin_b = b.client(ADMIN).await;
    let g = admin_b
        .call("session.get", json!({"sessionId": "tls"}))
        .await;
    assert_eq!(g["owner"], owner.as_str(), "{g}");
    assert_eq!(g["meta"], json!({"k": 1}), "{g}");
    admin_b
        .call(
            "session.send",
            json!({"sessionId": "tls", "event": "hi", "data": 2}),
        )
        .await;
    let event = push_where(&mut writer_a, "session.event", |p| p["event"] == "hi").await;
    assert_eq!(event["data"], 2, "{event}");

    let refused = redis.refusals();
    assert!(
        refused.is_empty(),
        "redis refused the documented ACL: {refused:?}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn acl_user_over_tls_two_instances_work_as_one() {
    let pki = Pki::new();
    let redis = SecureRedis::single(&pki, false);
    two_instances_work_as_one(&redis, secure_config(&redis.url, pki.gateway(false))).await;
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new();
    let redis = SecureRedis::single(&pki, true);
    two_instances_work_as_one(&redis, secure_config(&redis.url, pki.gateway(true))).await;
    // Without a certificate to present, the server ends the handshake.
    let started = Instant::now();
    let err = TestServer::start_error(secure_config(&redis.url, pki.gateway(false))).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("requires a client certificate"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

#[tokio::test]
async fn tls_redis_cluster_two_instances_work_as_one() {
    let pki = Pki::new();
    let redis = SecureRedis::cluster(&pki);
    assert!(redis.url.starts_with("rediss-cluster://"));
    two_instances_work_as_one(&redis, secure_config(&redis.url, pki.gateway(false))).await;
}

#[tokio::test]
async fn tls_sentinel_and_master_two_instances_work_as_one() {
    let pki = Pki::new();
    let redis = SecureRedis::sentinel(&pki, SENTINEL_PASSWORD);
    two_instances_work_as_one(&redis, secure_config(&redis.url, pki.gateway(false))).await;
    // The sentinel's own credentials are the ones checked there.
    let wrong = redis.url.replace(SENTINEL_PASSWORD, "not-the-sentinel-pw");
    let err = TestServer::start_error(secure_config(&wrong, pki.gateway(false))).await;
    assert!(err.contains("sentinel"), "{err}");
    assert!(err.contains("authentication"), "{err}");
    assert!(
        !err.contains("not-the-sentinel-pw") && !err.contains(PASSWORD),
        "{err}"
    );
    // The sentinel logged the refused login (which also shows that its
    // log, checked above, is read).
    let refused = redis.refusals();
    assert_eq!(
        refused,
        [format!("{SENTINEL_USER}: auth AUTH")],
        "{refused:?}"
    );
}

#[tokio::test]
async fn wrong_password_stops_the_start_and_is_never_shown() {
    let pki = Pki::new();
    let redis = SecureRedis::single(&pki, false);
    let wrong_password = "not-the-redis-pw-31d9";
    let url = redis.url.replace(PASSWORD, wrong_password);
    let started = Instant::now();
    let err = TestServer::start_error(secure_config(&url, pki.gateway(false))).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains(wrong_password), "{err}");
}

#[tokio::test]
async fn untrusted_server_certificate_stops_the_start() {
    let pki = Pki::new();
    let redis = SecureRedis::single(&pki, false);
    let started = Instant::now();
    // No redis_tls.ca: only the system roots, which do not know the test CA.
    let err = TestServer::start_error(secure_config(&redis.url, RedisTlsConfig::default())).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("certificate"), "{err}");
    assert!(err.contains("redis_tls.ca"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

/// The binary, logging at trace: with the right password it serves, with a
/// wrong one it exits 1 naming the failed authentication; neither password
/// appears anywhere in what it prints.
#[tokio::test]
async fn the_process_never_prints_the_password() {
    let pki = Pki::new();
    let redis = SecureRedis::single(&pki, false);
    let wrong_password = "not-the-redis-pw-8b20";
    let run = |url: String, within: Duration| {
        let out = temp_path("switchyard.out");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHYARD_") {
                cmd.env_remove(key);
            }
        }
        let file = std::fs::File::create(&out).expect("output file");
        cmd.env("SWITCHYARD_LOG", "trace")
            .env("SWITCHYARD_PORT", free_port().to_string())
            .env("SWITCHYARD_REDIS_URL", url)
            .env("SWITCHYARD_REDIS_TLS_CA", pki.path("ca.crt"))
            .env("SWITCHYARD_API_KEYS", API_KEY)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone"))
            .stderr(file);
        let mut child = cmd.spawn().expect("spawn switchyard");
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break Some(status);
            }
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if Instant::now() >= deadline || text.contains("listening") {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        (status.and_then(|s| s.code()), text)
    };
    let (code, text) = run(redis.url.clone(), Duration::from_secs(10));
    assert_eq!(code, None, "it serves: {text}");
    assert!(text.contains("listening"), "{text}");
    assert!(!text.contains(PASSWORD), "the password was printed");

    let (code, text) = run(
        redis.url.replace(PASSWORD, wrong_password),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains(wrong_password), "the password was printed");
}

/// The ACL these tests run with is the one docs/security.md gives.
#[test]
fn the_tested_acl_is_the_documented_one() {
    let security =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/security.md"))
            .expect("docs/security.md");
    let line = format!("ACL SETUSER {USER} on >PASSWORD {ACL}");
    assert!(security.contains(&line), "docs/security.md lacks `{line}`");
    assert!(
        security.contains(SENTINEL_ACL),
        "docs/security.md lacks `{SENTINEL_ACL}`"
    );
}
