//! Replicated Redis for failover tests: `redis-server`s with files of
//! their own, `redis-cli`, and the scene both failover tests (Sentinel,
//! Redis Cluster) play: two instances, a node, two approvers and a
//! subscribed writer, with approvals requested and entries published.

use super::instance::*;
use super::*;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Credentials: the usual ones, a node and two approvers.
pub fn tokens() -> String {
    format!(
        "{TOKENS},keeper:{NODE}:node,approver:{APPROVER}:operator.approvals,\
         second:second-approver-0123456789abc:operator.approvals"
    )
}
pub const SECOND: &str = "second-approver-0123456789abc";

/// A `redis-server` on `port` keeping its files (a replica's copy of
/// the primary's data) in a directory of its own under `dir`.
pub fn redis_server(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    let dir = dir.join(port.to_string());
    std::fs::create_dir_all(&dir).expect("redis dir");
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(&dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

pub fn cli(port: u16, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-p", &port.to_string()]).args(args);
    let out = output_within(&mut cmd, CLI_LIMIT).expect("redis-cli answers");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Poll until `check` holds (every 50 ms, at most `limit`).
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Poll `history` on `ws` until it names an epoch other than `old`
/// (bounded): the instance reads the new primary. Sentinel demotes an old
/// primary that is still alive only some seconds after the promotion;
/// until then instances may still be connected to it.
pub async fn new_epoch_seen(ws: &mut Ws, old: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = ws
            .request("history", json!({"channel": "audit:trail", "limit": 1}))
            .await;
        let epoch = &read["result"]["epoch"];
        if epoch.is_string() && epoch != old {
            return epoch.clone();
        }
        assert!(Instant::now() < deadline, "no new epoch: {read}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Both instances ready again and reading the same epoch, other than
/// `old` (`on_a` is a connection to a); that epoch. An instance may pass
/// through an epoch of its own while the topology settles (a cluster's
/// routing table is refreshed shard by shard): they must end on one.
pub async fn both_on_a_new_epoch(a: &Instance, b: &Instance, on_a: &mut Ws, old: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    a.ready_again(deadline).await;
    b.ready_again(deadline).await;
    let mut on_b = b.client(WRITER).await;
    loop {
        let epoch = new_epoch_seen(on_a, old).await;
        let other = new_epoch_seen(&mut on_b, old).await;
        if other == epoch {
            return epoch;
        }
        assert!(
            Instant::now() < deadline,
            "a and b stay on different epochs: {epoch} {other}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn request_approval(node: &mut Ws, summary: &str) -> Value {
    node.call(
        "approval.request",
        json!({"tool": "shell", "summary": summary, "timeoutMs": 600_000}),
    )
    .await["approvalId"]
        .clone()
}

pub async fn publish(ws: &mut Ws, i: u64) -> u64 {
    let sent = ws
        .call(
            "publish",
            json!({"channel": "audit:trail", "event": "entry", "data": {"i": i}}),
        )
        .await;
    sent["offset"].as_u64().expect("an offset")
}

/// The cluster of two instances on the replicated Redis at `url`, with a node (on
/// a), two approvers (on b and a) and a writer subscribed on a.
pub struct Scene {
    pub a: Instance,
    pub b: Instance,
    pub node: Ws,
    pub approver: Ws,
    pub second: Ws,
    pub watcher: Ws,
    pub config: std::path::PathBuf,
}

pub async fn scene(url: &str) -> Scene {
    let config = audit_config("failover.toml");
    let tokens = tokens();
    let env = [
        ("SWITCHYARD_TOKENS", tokens.as_str()),
        ("SWITCHYARD_CONFIG", config.to_str().expect("utf-8 path")),
    ];
    let a = Instance::start_url(url, "a", &env).await;
    let b = Instance::start_url(url, "b", &env).await;
    let mut node = a.client(NODE).await;
    node.call("agent.register", json!({"agentId": "keeper"}))
        .await;
    let approver = b.client(APPROVER).await;
    let second = a.client(SECOND).await;
    let mut watcher = a.client(WRITER).await;
    watcher
        .call("subscribe", json!({"channels": ["audit:trail"]}))
        .await;
    Scene {
        a,
        b,
        node,
        approver,
        second,
        watcher,
        config,
    }
}

/// Send `signal` (`-STOP`, `-CONT`, …) to `child`.
pub fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {signal}");
}

/// `cmdstat_<command>` calls on the Redis on `port` so far.
pub fn calls(port: u16, command: &str) -> u64 {
    let stats = cli(port, &["INFO", "commandstats"]);
    let field = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&field))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `approver` and `second` race to decide approval `id`: at most one is
/// acknowledged; the other is refused as decided already (-32007) or, were
/// no replica to confirm it in time, as not acknowledged (-32005). The
/// acknowledged decision, if any.
pub async fn race(approver: &mut Ws, second: &mut Ws, id: &Value) -> Option<Value> {
    let resolve = |decision: &str| json!({"approvalId": id, "decision": decision});
    let (first, other) = tokio::join!(
        approver.request("approval.resolve", resolve("approve")),
        second.request("approval.resolve", resolve("deny")),
    );
    let winners: Vec<&Value> = [&first, &other]
        .into_iter()
        .filter(|r| r["result"]["status"].is_string())
        .collect();
    assert!(winners.len() <= 1, "{first} {other}");
    for reply in [&first, &other] {
        if reply["result"].is_null() {
            let code = &reply["error"]["code"];
            assert!(code == -32007 || code == -32005, "{reply}");
        }
    }
    winners.first().map(|w| w["result"].clone())
}
