//! Sentinel failover with real processes: a primary, a replica and a
//! Sentinel of the test's own, two gateway instances reaching Redis through
//! the Sentinel (docs/durability.md).
//!
//! - A planned failover (`SENTINEL FAILOVER`): an acknowledged decision is
//!   on the new primary unchanged and cannot be decided again, a pending
//!   approval is decided exactly once by two racing approvers, the logs
//!   start a new epoch and every connection is told.
//! - Writes the replica never got (it is frozen with SIGSTOP while the
//!   primary acknowledges them, then the primary is SIGKILLed): the loss
//!   is reported (`epoch.changed`, `epochChanged` with `complete: false`),
//!   a pending approval whose creation was lost is written back by the
//!   requester's instance, and a decision no replica confirmed was never
//!   acknowledged.
//!
//! Not a behaviour test: it starts its own Redis processes whatever
//! `SWITCHYARD_TEST_REDIS` says.

mod common;

use common::instance::*;
use common::*;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Credentials: the usual ones, a node and two approvers.
fn tokens() -> String {
    format!(
        "{TOKENS},keeper:{NODE}:node,approver:{APPROVER}:operator.approvals,\
         second:second-approver-0123456789abc:operator.approvals"
    )
}
const SECOND: &str = "second-approver-0123456789abc";

/// A primary, its replica and a Sentinel watching them (quorum 1, a
/// primary silent for 1 s is down). Killed on drop.
struct Replicated {
    primary: Child,
    replica: Child,
    sentinel: Child,
    ports: [u16; 3],
    dir: std::path::PathBuf,
}

/// A `redis-server` on `port` keeping its files (a replica's copy of
/// the primary's data) in a directory of its own under `dir`.
fn redis_server(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
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

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Poll until `check` holds (every 50 ms, at most `limit`).
fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Replicated {
    fn start() -> Self {
        let ports = [free_port(), free_port(), free_port()];
        let [p, r, s] = ports;
        let dir = temp_path("sentinel");
        std::fs::create_dir_all(&dir).expect("dir");
        let primary = redis_server(p, &dir, &[]);
        wait_until(Duration::from_secs(10), "the primary", || {
            cli(p, &["PING"]).contains("PONG")
        });
        let replica = redis_server(r, &dir, &["--replicaof", "127.0.0.1", &p.to_string()]);
        wait_until(Duration::from_secs(10), "the replica's link", || {
            cli(r, &["INFO", "replication"]).contains("master_link_status:up")
        });
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {s}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {p} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 10000\n",
                dir.display()
            ),
        )
        .expect("sentinel.conf");
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        let set = Self {
            primary,
            replica,
            sentinel,
            ports,
            dir,
        };
        wait_until(
            Duration::from_secs(15),
            "the sentinel to see the replica",
            || cli(s, &["SENTINEL", "replicas", "mymaster"]).contains(&r.to_string()),
        );
        set
    }

    fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=mymaster",
            self.ports[2]
        )
    }

    /// The port the Sentinel names as the primary.
    fn primary_port(&self) -> String {
        cli(
            self.ports[2],
            &["SENTINEL", "get-master-addr-by-name", "mymaster"],
        )
    }

    /// Wait (bounded) until the Sentinel names the replica as the primary
    /// and the replica says it is one.
    fn wait_promoted(&self) {
        let r = self.ports[1];
        wait_until(Duration::from_secs(30), "the replica's promotion", || {
            self.primary_port().contains(&r.to_string())
                && cli(r, &["INFO", "replication"]).contains("role:master")
        });
    }

    /// Wait (bounded) until the primary on `port` has a replica online.
    fn wait_replicated(&self, port: u16) {
        wait_until(
            Duration::from_secs(30),
            "a replica of the new primary",
            || cli(port, &["INFO", "replication"]).contains("state=online"),
        );
    }

    fn signal(child: &Child, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal}");
    }

    /// `cmdstat_<command>` calls on the primary so far.
    fn calls(&self, port: u16, command: &str) -> u64 {
        let stats = cli(port, &["INFO", "commandstats"]);
        let field = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&field))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        for child in [&mut self.primary, &mut self.replica, &mut self.sentinel] {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Poll `history` on `ws` until it names an epoch other than `old`
/// (bounded): the instance reads the new primary. Sentinel demotes an old
/// primary that is still alive only some seconds after the promotion;
/// until then instances may still be connected to it.
async fn new_epoch_seen(ws: &mut Ws, old: &Value) -> Value {
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
/// `old` (`on_a` is a connection to a); that epoch.
async fn both_on_a_new_epoch(a: &Instance, b: &Instance, on_a: &mut Ws, old: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    a.ready_again(deadline).await;
    b.ready_again(deadline).await;
    let mut on_b = b.client(WRITER).await;
    let epoch = new_epoch_seen(on_a, old).await;
    assert_eq!(new_epoch_seen(&mut on_b, old).await, epoch, "one new epoch");
    epoch
}

async fn request_approval(node: &mut Ws, summary: &str) -> Value {
    node.call(
        "approval.request",
        json!({"tool": "shell", "summary": summary, "timeoutMs": 600_000}),
    )
    .await["approvalId"]
        .clone()
}

async fn publish(ws: &mut Ws, i: u64) -> u64 {
    let sent = ws
        .call(
            "publish",
            json!({"channel": "audit:trail", "event": "entry", "data": {"i": i}}),
        )
        .await;
    sent["offset"].as_u64().expect("an offset")
}

/// The cluster of two instances on the replicated Redis, with a node (on
/// a), two approvers (on b and a) and a writer subscribed on a.
struct Scene {
    a: Instance,
    b: Instance,
    node: Ws,
    approver: Ws,
    second: Ws,
    watcher: Ws,
    config: std::path::PathBuf,
}

async fn scene(redis: &Replicated) -> Scene {
    let config = audit_config("failover.toml");
    let tokens = tokens();
    let url = redis.url();
    let env = [
        ("SWITCHYARD_TOKENS", tokens.as_str()),
        ("SWITCHYARD_CONFIG", config.to_str().expect("utf-8 path")),
    ];
    let a = Instance::start_url(&url, "a", &env).await;
    let b = Instance::start_url(&url, "b", &env).await;
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

#[tokio::test]
async fn a_planned_failover_keeps_decisions_and_starts_a_new_epoch() {
    let redis = Replicated::start();
    let Scene {
        a,
        b,
        mut node,
        mut approver,
        mut second,
        mut watcher,
        config,
    } = scene(&redis).await;

    for i in 1..=3 {
        publish(&mut watcher, i).await;
    }
    let decided = request_approval(&mut node, "decided").await;
    let raced = request_approval(&mut node, "raced").await;
    let waits = redis.calls(redis.ports[0], "wait");
    let decision = approver
        .call(
            "approval.resolve",
            json!({"approvalId": decided, "decision": "approve", "note": "fine"}),
        )
        .await;
    assert_eq!(decision["status"], "approved", "{decision}");
    // The decision was acknowledged once a replica had it.
    assert_eq!(redis.calls(redis.ports[0], "wait"), waits + 1);
    let before = watcher
        .call("history", json!({"channel": "audit:trail"}))
        .await;
    let old_epoch = before["epoch"].clone();

    let started = Instant::now();
    assert!(cli(redis.ports[2], &["SENTINEL", "FAILOVER", "mymaster"]).contains("OK"));
    redis.wait_promoted();
    both_on_a_new_epoch(&a, &b, &mut watcher, &old_epoch).await;
    // Decisions need the new primary to have a replica again (the old
    // primary, once Sentinel has turned it into one).
    redis.wait_replicated(redis.ports[1]);

    // Every connection is told of the new epoch.
    let told = watcher.expect_push("epoch.changed").await;
    let new_epoch = told["epoch"].clone();
    assert!(new_epoch.is_string() && new_epoch != old_epoch, "{told}");
    assert_eq!(node.expect_push("epoch.changed").await, told);
    eprintln!(
        "failover: new epoch announced {} ms after SENTINEL FAILOVER",
        started.elapsed().as_millis()
    );

    // The acknowledged decision is on the new primary, unchanged, and
    // stays the only one.
    let read = call_when_back(
        &mut approver,
        "approval.wait",
        json!({"approvalId": decided, "timeoutMs": 1000}),
    )
    .await;
    assert_eq!(read["result"], decision, "{read}");
    assert_eq!(
        approver
            .error_code(
                "approval.resolve",
                json!({"approvalId": decided, "decision": "deny"}),
            )
            .await,
        -32007
    );
    // Two approvers on two instances race for the pending one: one wins.
    let resolve = |decision: &str| json!({"approvalId": raced, "decision": decision});
    let (first, other) = tokio::join!(
        approver.request("approval.resolve", resolve("approve")),
        second.request("approval.resolve", resolve("deny")),
    );
    // At most one is acknowledged; the other is refused as decided
    // already (or, were no replica to confirm it in time, as not
    // acknowledged); the stored decision is the acknowledged one.
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
    let stored = node
        .call(
            "approval.wait",
            json!({"approvalId": raced, "timeoutMs": 2000}),
        )
        .await;
    assert!(
        stored["status"] == "approved" || stored["status"] == "denied",
        "{stored}"
    );
    if let Some(winner) = winners.first() {
        assert_eq!(winner["result"], stored, "{stored}");
    }

    // The logs are all there; a reader of the old epoch is told.
    let after = watcher
        .call("history", json!({"channel": "audit:trail"}))
        .await;
    assert_eq!(after["events"], before["events"], "{after}");
    assert_eq!(after["epoch"], new_epoch, "{after}");
    let old = watcher
        .call(
            "history",
            json!({"channel": "audit:trail", "since": 3, "epoch": old_epoch}),
        )
        .await;
    assert_eq!(old["epochChanged"], true, "{old}");
    assert_eq!(old["complete"], false, "{old}");

    // Live delivery goes on, numbered after what the log holds.
    let mut writer = b.client(WRITER).await;
    assert_eq!(publish(&mut writer, 4).await, 4);
    while notify_on(&mut watcher, "audit:trail").await["data"] != json!({"i": 4}) {}
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn writes_the_replica_never_got_are_reported_and_what_live_work_proves_comes_back() {
    let mut redis = Replicated::start();
    let Scene {
        a,
        b,
        mut node,
        mut approver,
        mut second,
        mut watcher,
        config,
    } = scene(&redis).await;

    for i in 1..=2 {
        publish(&mut watcher, i).await;
    }
    let unconfirmed = request_approval(&mut node, "decided while no replica listens").await;
    let before = watcher
        .call("history", json!({"channel": "audit:trail"}))
        .await;
    let old_epoch = before["epoch"].clone();
    wait_until(Duration::from_secs(5), "the replica to catch up", || {
        let p = cli(redis.ports[0], &["INFO", "replication"]);
        let offset = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("master_repl_offset:"))
                .map(|v| v.trim().to_owned())
        };
        offset(&p).is_some() && offset(&p) == offset(&cli(redis.ports[1], &["INFO", "replication"]))
    });

    // The replica freezes and loses its link; the primary acknowledges
    // what it never gets.
    Replicated::signal(&redis.replica, "-STOP");
    assert!(!cli(redis.ports[0], &["CLIENT", "KILL", "TYPE", "replica"]).contains("ERR"));
    for i in 3..=5 {
        assert_eq!(publish(&mut watcher, i).await, i);
    }
    let lost_pending = request_approval(&mut node, "created, then lost with the primary").await;
    // A decision no replica confirms is not acknowledged.
    let refused = approver
        .request(
            "approval.resolve",
            json!({"approvalId": unconfirmed, "decision": "approve"}),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32005, "{refused}");
    let message = refused.to_string();
    assert!(message.contains("no replica confirmed"), "{message}");

    // The primary dies; the replica, back, is promoted without them.
    let started = Instant::now();
    redis.primary.kill().expect("SIGKILL the primary");
    redis.primary.wait().expect("reap");
    Replicated::signal(&redis.replica, "-CONT");
    redis.wait_promoted();
    both_on_a_new_epoch(&a, &b, &mut watcher, &old_epoch).await;

    // The loss is reported, never silent.
    let told = watcher.expect_push("epoch.changed").await;
    assert_ne!(told["epoch"], old_epoch, "{told}");
    eprintln!(
        "lost writes: new epoch announced {} ms after the primary was killed",
        started.elapsed().as_millis()
    );
    let old = call_when_back(
        &mut watcher,
        "history",
        json!({"channel": "audit:trail", "since": 5, "epoch": old_epoch}),
    )
    .await;
    assert_eq!(old["result"]["epochChanged"], true, "{old}");
    assert_eq!(old["result"]["complete"], false, "{old}");
    assert_eq!(
        old["result"]["latest"], 2,
        "the three unreplicated entries are gone: {old}"
    );

    // The approval whose creation was lost is written back by the
    // requester's instance, and approvers hear of it again.
    let restored = call_when_back(&mut approver, "approval.list", json!({})).await;
    let listed = restored["result"]["approvals"]
        .as_array()
        .is_some_and(|l| l.iter().any(|p| p["approvalId"] == lost_pending));
    assert!(listed, "{restored}");
    // Announced when it was created, and again when it was written back
    // (to the approver on the requester's instance at least).
    let mut announced = 0;
    while announced < 2 {
        let push = second.expect_push("approval.requested").await;
        if push["approvalId"] == lost_pending {
            announced += 1;
        }
    }
    // The unacknowledged decision never reached the new primary: it is
    // decided now, once.
    let now = approver
        .call(
            "approval.resolve",
            json!({"approvalId": unconfirmed, "decision": "deny", "note": "after failover"}),
        )
        .await;
    assert_eq!(now["status"], "denied", "{now}");
    assert_eq!(
        second
            .error_code(
                "approval.resolve",
                json!({"approvalId": unconfirmed, "decision": "approve"}),
            )
            .await,
        -32007
    );
    let waited = node
        .call(
            "approval.wait",
            json!({"approvalId": unconfirmed, "timeoutMs": 2000}),
        )
        .await;
    assert_eq!(waited["status"], "denied", "{waited}");

    // A new publication reuses offset 3 and reaches the live subscriber.
    assert_eq!(publish(&mut watcher, 6).await, 3);
    while notify_on(&mut watcher, "audit:trail").await["data"] != json!({"i": 6}) {}
    let _ = std::fs::remove_file(config);
}
